//! Consul HTTP API client: catalog, health, service-resolver / service-splitter config
//! entries, and CAS writes of the splitter with the entry's `ModifyIndex`.
//!
//! The I/O half ([`ConsulClient`]) is thin: it fetches bytes and hands them to the pure
//! parse functions beside it ([`parse_catalog_services`], [`parse_health_service`],
//! [`parse_resolver_subsets`], [`parse_splitter`], [`parse_connect_metrics`]) and maps
//! error statuses with [`error_from_response`]. Every parser is lenient about missing or
//! `null` fields and never panics on any body.
//!
//! Choices worth knowing (see `API_BRIEF.md` §1.2–1.6):
//! - A split entry without `ServiceSubset` is kept with the empty subset `""`, meaning
//!   "the resolver's `DefaultSubset` (or every instance when there is none)". Writing it
//!   back omits `ServiceSubset` again, so the round trip is exact.
//! - A split entry whose `Service` names another service is kept, not dropped, as the
//!   subset `"<service>/<subset>"` (`"<service>/"` for that service's default subset).
//!   Consul service and subset names cannot contain `/`, so this is unambiguous, and
//!   [`ConsulClient::write_split`] turns it back into `Service` + `ServiceSubset`: moving a
//!   slider never silently deletes a colleague's cross-service split.
//! - Per-split `RequestHeaders` / `ResponseHeaders`, Enterprise `Namespace` / `Partition`
//!   and the entry's `Meta` are not represented in [`Split`]; [`ConsulClient::write_split`]
//!   reads the stored entry first and changes only the weights and destinations, so every
//!   field it does not own is written back as it was (read-modify-write, then CAS).
//! - The token travels only in the `X-Consul-Token` header (never in a URL), is marked
//!   sensitive, and is never part of `Debug` output or an error text. Redirects are not
//!   followed, so the header cannot leak to another host.
//! - Every read and write carries `?dc=` once a datacenter is chosen
//!   ([`ConsulClient::set_datacenter`], the header's picker).
//! - Each service's effective protocol ([`ServiceEntry::protocol`]) comes from the
//!   `service-defaults` entries (`GET /v1/config/service-defaults`, every entry at once),
//!   else `proxy-defaults` `global`'s `Config.protocol` (404 = none), else `tcp`
//!   ([`effective_protocol`]). An agent that answers the list with 404 (no config
//!   entries) gives `None`: unknown, Consul itself judges a split.
//! - A CAS write that loses ([`WriteOutcome::Conflict`]) carries the entry as stored
//!   ("theirs", with its `ModifyIndex`): the one the read-before-write found, or one more
//!   `GET` after a `false`; `None` when no splitter is stored.
//! - Advisory driver markers (who runs a rollout plan on a service) live in KV under a
//!   session ([`drivers`]), in both modes.
//! - [`Registry::follow`] uses blocking queries on bulk endpoints ([`blocking`]); the
//!   KV mode lives in [`kv`], the design's SDK calls in [`sdk`].

pub mod blocking;
pub mod drivers;
pub mod kv;
pub mod sdk;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{
    Datacenters, DriverClaim, DriverLease, FollowContext, Registry, RegistryError, WriteFailure,
    WriteOutcome,
};
use crate::config::consul::{ConsulSettings, MAX_BLOCKING_WAIT, Secret};
use crate::model::types::{
    DEFAULT_VERSION, DRIVER_PREFIX, DriverMarker, Health, Instance, RegistrySnapshot, ServiceEntry,
    Split, SplitConfig, SplitEntry,
};
use crate::net::limits::{self, format_duration};
use crate::net::{self, BodyError, redact_url};

/// Default time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = limits::REGISTRY_CONNECT_TIMEOUT;

/// Default time allowed for a whole request, body included. A blocking query gets
/// `wait + wait/16` on top (API brief, gotcha 1; see [`blocking_deadline`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = limits::CONSUL_REQUEST_TIMEOUT;

/// Default largest response body accepted (read in chunks, cut off beyond it).
pub const DEFAULT_MAX_BODY_BYTES: usize = limits::CONSUL_MAX_BODY_BYTES;

/// How many HTTP requests a [`ConsulClient::snapshot`] keeps in flight at most.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// Error bodies are read up to this size (they are short text in Consul).
const MAX_ERROR_BODY_BYTES: usize = limits::MAX_ERROR_BODY_BYTES;

/// Error bodies are shown truncated to this many characters.
pub const MAX_ERROR_BODY_CHARS: usize = 500;

/// Suffix of the sidecar registrations (`identity-sidecar-proxy`).
const PROXY_SUFFIX: &str = "-sidecar-proxy";

/// Header Consul reads the ACL token from.
const TOKEN_HEADER: &str = "X-Consul-Token";

/// Header carrying a blocking-capable read's index.
const INDEX_HEADER: &str = "X-Consul-Index";

/// One answer: status, `X-Consul-Index` (when present and numeric) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `X-Consul-Index`.
    pub index: Option<u64>,
    /// Body (bounded).
    pub body: Vec<u8>,
}

/// A Consul agent reached over HTTP(S).
///
/// Cheap to clone (the connection pool is shared). `Debug` shows whether a token is set,
/// never the token.
#[derive(Clone)]
pub struct ConsulClient {
    base_url: String,
    base: Url,
    http: reqwest::Client,
    token: Option<Secret>,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_body_bytes: usize,
    /// The datacenter every request names (`None` = the agent's own); follow loops
    /// subscribe to restart on a change.
    dc: Arc<watch::Sender<Option<String>>>,
    blocking_wait: Duration,
    tls: TlsSetup,
}

/// How the client reaches a TLS agent: the CA it trusts, its client certificate, and the
/// server name to check (when `CONSUL_TLS_SERVER_NAME` differs from the address's host,
/// requests go to `https://<server name>:<port>` with that name resolved to the
/// address's IPs, so the name is both sent (SNI) and verified).
#[derive(Clone, Default)]
struct TlsSetup {
    ca: Option<Vec<reqwest::Certificate>>,
    identity: Option<reqwest::Identity>,
    verify: bool,
    server_name: Option<(String, Vec<std::net::SocketAddr>)>,
    request_base: Option<Url>,
    /// What the operator configured, for hints.
    has_ca: bool,
    has_identity: bool,
}

impl TlsSetup {
    fn from_settings(settings: &ConsulSettings, shown: &Url) -> Result<Self, RegistryError> {
        let mut tls = Self {
            verify: settings.verify_tls,
            ..Self::default()
        };
        let https = shown.scheme() == "https";
        let needs_https = settings.ca_pem.is_some()
            || settings.client_identity.is_some()
            || settings.tls_server_name.is_some();
        if needs_https && !https {
            return Err(RegistryError::Invalid(format!(
                "TLS settings (CONSUL_CACERT / CONSUL_CLIENT_CERT / CONSUL_TLS_SERVER_NAME) need an https address, not {}",
                redact_url(shown)
            )));
        }
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                RegistryError::Invalid(format!(
                    "CONSUL_CACERT: not a PEM certificate bundle: {}",
                    net::innermost_message(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(RegistryError::Invalid(
                    "CONSUL_CACERT: the file holds no certificate".into(),
                ));
            }
            tls.ca = Some(certs);
            tls.has_ca = true;
        }
        if let Some(id) = &settings.client_identity {
            let mut pem = id.cert_pem.clone();
            pem.push(b'\n');
            pem.extend_from_slice(&id.key_pem);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                RegistryError::Invalid(format!(
                    "CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY: not a usable certificate and key: {} ({})",
                    net::innermost_message(&e),
                    id.cert_path.display()
                ))
            })?;
            tls.identity = Some(identity);
            tls.has_identity = true;
        }
        if let Some(name) = settings.tls_server_name.as_deref().map(str::trim)
            && !name.is_empty()
            && Some(name) != shown.host_str()
        {
            let port = shown.port_or_known_default().unwrap_or(443);
            let host = shown.host_str().unwrap_or_default();
            let literal = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>();
            let addrs: Vec<std::net::SocketAddr> = match literal {
                Ok(ip) => vec![(ip, port).into()],
                Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                    .map_err(|e| {
                        RegistryError::Invalid(format!(
                            "cannot resolve the Consul host {host:?} (needed for CONSUL_TLS_SERVER_NAME): {e}"
                        ))
                    })?
                    .collect(),
            };
            let mut base = shown.clone();
            base.set_host(Some(name)).map_err(|e| {
                RegistryError::Invalid(format!(
                    "CONSUL_TLS_SERVER_NAME {name:?} is not a host name: {e}"
                ))
            })?;
            tls.server_name = Some((name.to_ascii_lowercase(), addrs));
            tls.request_base = Some(base);
        }
        Ok(tls)
    }

    fn apply(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if let Some(ca) = &self.ca {
            builder = builder.tls_certs_only(ca.iter().cloned());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        if !self.verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some((name, addrs)) = &self.server_name {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder
    }

    /// A hint for a failed TLS handshake, from the error text.
    fn hint_for(&self, message: &str) -> Option<String> {
        let lower = message.to_ascii_lowercase();
        if lower.contains("unknownissuer")
            || lower.contains("unknown issuer")
            || lower.contains("badsignature")
        {
            Some(if self.has_ca {
                "the agent's certificate is not signed by the CA in CONSUL_CACERT".into()
            } else {
                "the agent's certificate is not trusted: set CONSUL_CACERT to the Consul CA".into()
            })
        } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            Some("the agent's certificate does not carry this host name: set CONSUL_TLS_SERVER_NAME (e.g. server.dc1.consul)".into())
        } else if lower.contains("certificate required")
            || lower.contains("certificaterequired")
            || lower.contains("bad certificate")
            || lower.contains("badcertificate")
            || lower.contains("handshake")
        {
            Some(if self.has_identity {
                "the agent refused the TLS handshake: check that CONSUL_CLIENT_CERT is signed by the agent's CA".into()
            } else {
                "the agent refused the TLS handshake: it may require a client certificate (CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY)".into()
            })
        } else {
            None
        }
    }
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("base_url", &redact_url(&self.base))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("datacenter", &*self.dc.borrow())
            .field("blocking_wait", &self.blocking_wait)
            .finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8500`), with the default timeouts
    /// ([`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`]) and body limit
    /// ([`DEFAULT_MAX_BODY_BYTES`]). Only `http` and `https` URLs with a host are accepted.
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        Self::from_settings(&ConsulSettings::new(base_url))
    }

    /// A client for `settings`: address, token, TLS (CA, client certificate, server
    /// name), datacenter and blocking-query wait.
    pub fn from_settings(settings: &ConsulSettings) -> Result<Self, RegistryError> {
        let shown = parse_base_url(&settings.address)?;
        net::secrets::remember_url_secrets(shown.as_str());
        let tls = TlsSetup::from_settings(settings, &shown)?;
        let base = tls.request_base.clone().unwrap_or_else(|| shown.clone());
        let http = build_http(DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, &tls)?;
        let wait = settings
            .blocking_wait
            .clamp(Duration::from_secs(1), MAX_BLOCKING_WAIT);
        Ok(Self {
            base_url: redact_url(&shown).trim_end_matches('/').to_owned(),
            base,
            http,
            token: settings.token.clone().filter(|t| !t.expose().is_empty()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            dc: Arc::new(watch::Sender::new(settings.datacenter.clone())),
            blocking_wait: wait,
            tls,
        })
    }

    /// Sends `token` as `X-Consul-Token` on every request (`None` or an empty string: no
    /// header, so the agent's default token applies).
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty()).map(Secret::new);
        self
    }

    /// Replaces the connect and whole-request timeouts (a blocking query gets its own
    /// deadline: `wait + wait/16` plus the request timeout).
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, RegistryError> {
        self.http = build_http(connect, request, &self.tls)?;
        self.connect_timeout = connect;
        self.request_timeout = request;
        Ok(self)
    }

    /// Replaces the `wait` of blocking queries (clamped to 1 s ..= 10 min).
    #[must_use]
    pub fn with_blocking_wait(mut self, wait: Duration) -> Self {
        self.blocking_wait = wait.clamp(Duration::from_millis(100), MAX_BLOCKING_WAIT);
        self
    }

    /// The `wait` of blocking queries.
    #[must_use]
    pub fn blocking_wait(&self) -> Duration {
        self.blocking_wait
    }

    /// The datacenter requests name (`None`: the agent's own).
    #[must_use]
    pub fn datacenter(&self) -> Option<String> {
        self.dc.borrow().clone()
    }

    /// Switches every following request (and running follow loops, which start over with
    /// index 0) to `dc`; `None` or empty = the agent's own datacenter. Clones share it.
    pub fn set_datacenter(&self, dc: Option<String>) {
        let dc = dc.filter(|d| !d.trim().is_empty());
        self.dc.send_if_modified(|cur| {
            if *cur == dc {
                false
            } else {
                *cur = dc;
                true
            }
        });
    }

    /// Notified when the datacenter changes.
    pub(crate) fn datacenter_changes(&self) -> watch::Receiver<Option<String>> {
        self.dc.subscribe()
    }

    /// `GET /v1/catalog/datacenters`: every known datacenter, nearest first (the agent's
    /// own comes first: Consul sorts them by round-trip time).
    pub async fn datacenters(&self) -> Result<Vec<String>, RegistryError> {
        let url = self.base_endpoint(&["v1", "catalog", "datacenters"]);
        let answer = self.request(Method::GET, &url, None, None).await?;
        if !answer.status.is_success() {
            return Err(error_from_response(answer.status.as_u16(), &answer.body));
        }
        let list: Option<Vec<String>> = decode("catalog/datacenters", &answer.body)?;
        Ok(list.unwrap_or_default())
    }

    /// Replaces the largest response body accepted.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The base URL as shown to the operator: no user-info, no trailing `/`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether a token is configured (the token itself is never handed out).
    #[must_use]
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `base` + the given path segments (each percent-encoded as one segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// [`Self::url`] plus `query` pairs and `dc=<datacenter>` when one is chosen: the URL
    /// of every request to the agent's API.
    pub(crate) fn endpoint(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.url(segments);
        let dc = self.dc.borrow().clone();
        if !query.is_empty() || dc.is_some() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                if v.is_empty() {
                    pairs.append_key_only(k);
                } else {
                    pairs.append_pair(k, v);
                }
            }
            if let Some(dc) = &dc {
                pairs.append_pair("dc", dc);
            }
        }
        url
    }

    /// [`Self::url`] without `dc` (for endpoints about the agent itself).
    fn base_endpoint(&self, segments: &[&str]) -> Url {
        self.url(segments)
    }

    /// Sends one request and reads the body (bounded). `timeout` replaces the client's
    /// request timeout (blocking queries).
    pub(crate) async fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Answer, RegistryError> {
        self.send(method, url, body, timeout)
            .await
            .map_err(|(e, _)| e)
    }

    /// A write request: a transport failure after the request may have reached the agent
    /// (by the error's kind, see [`net::may_have_been_sent`]) is an
    /// [`WriteFailure::AnswerLost`]; everything else, error statuses included, is
    /// returned as the agent answered or as [`WriteFailure::NotApplied`].
    pub(crate) async fn write_request(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, WriteFailure> {
        self.send(method, url, body, None)
            .await
            .map_err(|(e, sent)| {
                if sent {
                    WriteFailure::AnswerLost(e)
                } else {
                    WriteFailure::NotApplied(e)
                }
            })
    }

    /// [`Self::request`], the error with whether the request may have been sent.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Answer, (RegistryError, bool)> {
        let mut req = self.http.request(method, url.clone());
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                (
                    RegistryError::Invalid(
                        "the Consul token contains characters not allowed in an HTTP header".into(),
                    ),
                    false,
                )
            })?;
            value.set_sensitive(true);
            req = req.header(TOKEN_HEADER, value);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let failed = |e: &reqwest::Error| {
            (
                self.transport_error(e, url, timeout),
                net::may_have_been_sent(e),
            )
        };
        let mut resp = req.send().await.map_err(|e| failed(&e))?;
        let status = resp.status();
        let index = resp
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // An error text is kept truncated; a success body must fit whole.
        let (limit, truncate) = if status.is_success() {
            (self.max_body_bytes, false)
        } else {
            (MAX_ERROR_BODY_BYTES, true)
        };
        let buf = match net::read_body(&mut resp, limit, truncate).await {
            Ok(buf) => buf,
            // The agent answered: whatever it did, it did.
            Err(BodyError::TooLarge) => return Err((body_too_large(limit, url), true)),
            Err(BodyError::Transport(e)) => return Err(failed(&e)),
        };
        Ok(Answer {
            status,
            index,
            body: buf,
        })
    }

    /// GET `segments` (with `dc`); `Ok(None)` on 404 when `allow_404`, error statuses mapped.
    pub(crate) async fn get(
        &self,
        segments: &[&str],
        allow_404: bool,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.endpoint(segments, &[]);
        let answer = self.request(Method::GET, &url, None, None).await?;
        if answer.status.is_success() {
            Ok(Some(answer.body))
        } else if allow_404 && answer.status == StatusCode::NOT_FOUND {
            Ok(None)
        } else {
            Err(error_from_response(answer.status.as_u16(), &answer.body))
        }
    }

    /// A blocking GET: `?index=<index>&wait=<wait>` when `index > 0` (never a blocking
    /// query on index 0, which would not block), with a deadline of `wait + wait/16`
    /// plus the request timeout. Returns the answer whatever its status.
    pub(crate) async fn get_blocking(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        index: u64,
    ) -> Result<Answer, RegistryError> {
        let mut pairs: Vec<(&str, &str)> = query.to_vec();
        let index_text = index.to_string();
        let wait_text = go_wait(self.blocking_wait);
        let timeout = if index > 0 {
            pairs.push(("index", &index_text));
            pairs.push(("wait", &wait_text));
            Some(blocking_deadline(self.blocking_wait, self.request_timeout))
        } else {
            None
        };
        let url = self.endpoint(segments, &pairs);
        self.request(Method::GET, &url, None, timeout).await
    }

    /// PUT `url` with `body`; the answer must be 2xx (else the mapped error).
    pub(crate) async fn put_ok(
        &self,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RegistryError> {
        let answer = self.request(Method::PUT, url, body, None).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(error_from_response(answer.status.as_u16(), &answer.body))
        }
    }

    /// DELETE `url`; the answer must be 2xx.
    pub(crate) async fn delete_ok(&self, url: &Url) -> Result<Vec<u8>, RegistryError> {
        let answer = self.request(Method::DELETE, url, None, None).await?;
        if answer.status.is_success() {
            Ok(answer.body)
        } else {
            Err(error_from_response(answer.status.as_u16(), &answer.body))
        }
    }

    /// Reads one service: instances, resolver subsets, splitter, and (when an instance
    /// has no `metrics_url`) the sidecars' stats addresses.
    async fn read_service(
        &self,
        name: String,
        limit: &Semaphore,
    ) -> Result<ServiceEntry, RegistryError> {
        let health = async {
            let _permit = acquire(limit).await?;
            let body = self.get(&["v1", "health", "service", &name], false).await?;
            parse_health_service(&body.unwrap_or_default())
        };
        let resolver = async {
            let _permit = acquire(limit).await?;
            match self
                .get(&["v1", "config", "service-resolver", &name], true)
                .await?
            {
                Some(body) => parse_resolver_subsets(&body),
                None => Ok(Vec::new()),
            }
        };
        let splitter = async {
            let _permit = acquire(limit).await?;
            match self
                .get(&["v1", "config", "service-splitter", &name], true)
                .await?
            {
                Some(body) => parse_splitter(&body).map(Some),
                None => Ok(None),
            }
        };
        let (mut instances, subsets, split) = tokio::try_join!(health, resolver, splitter)?;
        if instances.iter().any(|i| i.metrics_url.is_none()) {
            let _permit = acquire(limit).await?;
            if let Some(body) = self.get(&["v1", "health", "connect", &name], true).await? {
                apply_metrics_fallback(&mut instances, &parse_connect_metrics(&body)?);
            }
        }
        Ok(ServiceEntry {
            protocol: None,
            name,
            instances,
            subsets,
            split,
        })
    }

    /// `GET /v1/config/service-defaults` (every entry) and
    /// `GET /v1/config/proxy-defaults/global` (404: none).
    async fn protocols(&self) -> Result<Protocols, RegistryError> {
        let defaults = match self
            .get(&["v1", "config", "service-defaults"], true)
            .await?
        {
            Some(body) => Some(parse_service_defaults_list(&body)?),
            None => None,
        };
        let global = match self
            .get(&["v1", "config", "proxy-defaults", "global"], true)
            .await?
        {
            Some(body) => parse_proxy_defaults_protocol(&body)?,
            None => None,
        };
        Ok(Protocols { defaults, global })
    }

    /// The stored splitter of `service` as "theirs" after a lost CAS (`None`: none stored,
    /// or it could not be read back — the next snapshot shows it).
    async fn read_back_splitter(&self, service: &str) -> Option<SplitConfig> {
        match self
            .get(&["v1", "config", "service-splitter", service], true)
            .await
        {
            Ok(Some(body)) => parse_splitter(&body)
                .map_err(|e| tracing::warn!("consul: {service}: {e}"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "consul: {service}: could not read the splitter back after a conflict: {e}"
                );
                None
            }
        }
    }

    /// A concise transport error: what failed (with a TLS hint when the handshake
    /// failed), then the URL (without secrets).
    fn transport_error(
        &self,
        err: &reqwest::Error,
        url: &Url,
        timeout: Option<Duration>,
    ) -> RegistryError {
        let mut message = if err.is_timeout() {
            if err.is_connect() {
                format!(
                    "connect timed out after {}",
                    format_duration(self.connect_timeout)
                )
            } else {
                limits::timeout_text(timeout.unwrap_or(self.request_timeout))
            }
        } else {
            net::describe_transport(err)
        };
        if let Some(hint) = self.tls.hint_for(&message) {
            message = format!("{message} — {hint}");
        }
        RegistryError::Transport {
            message,
            url: redact_url(url),
        }
    }
}

impl Registry for ConsulClient {
    /// `GET /v1/catalog/services`, then per service (at most [`MAX_CONCURRENT_REQUESTS`]
    /// requests in flight) its health, resolver (404: no subsets) and splitter (404: no
    /// split). The first error fails the whole snapshot; the caller keeps its last good one.
    async fn snapshot(&self) -> Result<RegistrySnapshot, RegistryError> {
        let body = self.get(&["v1", "catalog", "services"], false).await?;
        let names = parse_catalog_services(&body.unwrap_or_default())?;
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let mut tasks = JoinSet::new();
        for name in names {
            let client = self.clone();
            let limit = Arc::clone(&limit);
            tasks.spawn(async move { client.read_service(name, &limit).await });
        }
        let protocols = async {
            let _permit = acquire(&limit).await?;
            self.protocols().await
        };
        let drivers = async {
            let _permit = acquire(&limit).await?;
            self.kv_list(DRIVER_PREFIX).await
        };
        let (protocols, drivers) = tokio::try_join!(protocols, drivers)?;
        let mut services = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            // Returning early drops `tasks`, which aborts the requests still running.
            let mut entry = joined
                .map_err(|e| RegistryError::Decode(format!("snapshot task failed: {e}")))??;
            entry.protocol = protocols.protocol_of(&entry.name);
            services.push(entry);
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let (drivers, warnings) = drivers::markers_from_kv(&drivers);
        for w in warnings {
            tracing::warn!("consul: {w}");
        }
        Ok(RegistrySnapshot { services, drivers })
    }

    /// `GET /v1/catalog/datacenters`; the current one is the chosen one, else the
    /// agent's own (the first of the list: Consul sorts by round-trip time).
    async fn datacenters(&self) -> Result<Datacenters, RegistryError> {
        let known = ConsulClient::datacenters(self).await?;
        let current = self.datacenter().or_else(|| known.first().cloned());
        Ok(Datacenters { current, known })
    }

    fn set_datacenter(&self, dc: &str) -> Result<(), RegistryError> {
        if dc.is_empty()
            || !dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(RegistryError::Invalid(format!("invalid datacenter {dc:?}")));
        }
        ConsulClient::set_datacenter(self, Some(dc.to_owned()));
        Ok(())
    }

    /// Blocking queries on bulk endpoints (see [`blocking`]).
    async fn follow(&self, ctx: FollowContext) {
        blocking::follow_catalog(self, ctx).await;
    }

    /// Read-modify-write of the `service-splitter` entry: `GET` it, keep every field it
    /// does not own (entry `Meta`, `Namespace`, `Partition`, per-split `RequestHeaders`,
    /// `ResponseHeaders`, `Namespace`, `Partition`, unknown future fields), replace the
    /// weights and destinations, then `PUT /v1/config?cas=<expected_index>`.
    ///
    /// The split is validated locally first (nothing is sent when it is invalid). When the
    /// stored entry's `ModifyIndex` is not `expected_index` (or it exists while `0` asked
    /// for create-only, or is gone), Consul would answer the CAS with `false`: this is a
    /// `Conflict` without a write, carrying the entry read. Otherwise `true` → `Applied`,
    /// `false` → `Conflict` with the entry read again.
    async fn write_split(
        &self,
        service: &str,
        split: &Split,
        expected_index: u64,
    ) -> Result<WriteOutcome, RegistryError> {
        split
            .validate()
            .map_err(|e| RegistryError::Invalid(format!("split for {service:?} not sent: {e}")))?;
        if service.is_empty() {
            return Err(RegistryError::Invalid(
                "split not sent: empty service name".into(),
            ));
        }
        let stored = self
            .get(&["v1", "config", "service-splitter", service], true)
            .await?;
        let body = match stored {
            Some(bytes) => {
                let entry: serde_json::Value = decode("service-splitter", &bytes)?;
                let modify_index = entry.get("ModifyIndex").and_then(serde_json::Value::as_u64);
                if modify_index != Some(expected_index) {
                    return Ok(WriteOutcome::Conflict {
                        theirs: Some(parse_splitter(&bytes)?),
                    });
                }
                merge_splitter_body(service, &entry, split)?
            }
            // Deleted since it was read: nothing to compare against, nothing stored.
            None if expected_index != 0 => return Ok(WriteOutcome::Conflict { theirs: None }),
            None => splitter_request_body(service, split)?,
        };
        let cas = expected_index.to_string();
        let url = self.endpoint(&["v1", "config"], &[("cas", &cas)]);
        let answer = match self.write_request(Method::PUT, &url, Some(body)).await {
            Ok(answer) => answer,
            Err(failure) => return failure.into_outcome(),
        };
        let (status, resp) = (answer.status, answer.body);
        if !status.is_success() {
            return Err(error_from_response(status.as_u16(), &resp));
        }
        match serde_json::from_slice::<bool>(&resp) {
            Ok(true) => Ok(WriteOutcome::Applied),
            // Someone wrote between our read and our write: read theirs back.
            Ok(false) => Ok(WriteOutcome::Conflict {
                theirs: self.read_back_splitter(service).await,
            }),
            Err(_) => Err(RegistryError::Decode(format!(
                "expected `true` or `false` from a config write, got {:?} ({})",
                excerpt(&resp, 80),
                redact_url(&url)
            ))),
        }
    }

    /// Session + `?acquire=` on `spine-dash/drivers/<service>` (see [`drivers`]).
    async fn claim_driver(
        &self,
        marker: &DriverMarker,
        ttl: Duration,
    ) -> Result<DriverClaim, RegistryError> {
        drivers::claim(self, marker, ttl).await
    }

    /// `PUT /v1/session/renew/<id>` (404 → `Ok(false)`).
    async fn renew_driver(&self, lease: &DriverLease) -> Result<bool, RegistryError> {
        drivers::renew(self, lease).await
    }

    /// `PUT /v1/session/destroy/<id>` (the marker goes with it).
    async fn release_driver(&self, lease: &DriverLease) -> Result<(), RegistryError> {
        drivers::release(self, lease).await
    }
}

/// Validates a base URL: absolute, `http`/`https`, with a host.
fn parse_base_url(base_url: &str) -> Result<Url, RegistryError> {
    let trimmed = base_url.trim();
    let url = Url::parse(trimmed).map_err(|e| {
        RegistryError::Invalid(format!(
            "invalid Consul address: {e} (expected e.g. http://127.0.0.1:8500)"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RegistryError::Invalid(format!(
            "invalid Consul address: scheme {:?} is not http or https (expected e.g. http://127.0.0.1:8500)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(RegistryError::Invalid(
            "invalid Consul address: no host (expected e.g. http://127.0.0.1:8500)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(RegistryError::Invalid(
            "invalid Consul address: remove the query or fragment (pass the token separately)"
                .into(),
        ));
    }
    Ok(url)
}

/// The deadline of a blocking query: Consul answers within `wait + wait/16` (its jitter);
/// the request timeout on top covers the transfer.
#[must_use]
pub fn blocking_deadline(wait: Duration, request_timeout: Duration) -> Duration {
    wait + wait / 16 + request_timeout
}

/// A `wait` in Go duration syntax: `30s`, `250ms`.
fn go_wait(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The reqwest client: timeouts, TLS, no redirects (the token header must not follow one).
fn build_http(
    connect: Duration,
    request: Duration,
    tls: &TlsSetup,
) -> Result<reqwest::Client, RegistryError> {
    tls.apply(reqwest::Client::builder())
        .connect_timeout(connect)
        .timeout(request)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("spine-dash/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            RegistryError::Invalid(format!(
                "cannot set up the HTTP client: {}",
                net::innermost_message(&e)
            ))
        })
}

/// One permit of the snapshot's request budget.
async fn acquire(limit: &Semaphore) -> Result<tokio::sync::SemaphorePermit<'_>, RegistryError> {
    limit
        .acquire()
        .await
        .map_err(|_| RegistryError::Decode("snapshot cancelled".into()))
}

fn body_too_large(limit: usize, url: &Url) -> RegistryError {
    RegistryError::Decode(format!(
        "{} ({})",
        limits::too_large_text(limit),
        redact_url(url)
    ))
}

/// An answer's body for a message: text, trimmed, secrets cut out, at most `max`
/// characters.
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    truncate_chars(
        net::scrub_known(String::from_utf8_lossy(body).trim()).as_str(),
        max,
    )
}

/// At most `max` characters of `s`, with `…` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Error statuses.

/// Maps a non-2xx Consul answer to [`RegistryError::Http`]: the text body (trimmed,
/// truncated to [`MAX_ERROR_BODY_CHARS`], secrets the agent may echo cut out by
/// [`net::scrub_known`]) plus an operator hint where one helps (ACL, rate limit, no
/// leader, protocol, unknown subset). Usable on fixtures.
#[must_use]
pub fn error_from_response(status: u16, body: &[u8]) -> RegistryError {
    let text = net::scrub_known(&String::from_utf8_lossy(body));
    let text = text.trim();
    RegistryError::Http {
        status,
        body: truncate_chars(text, MAX_ERROR_BODY_CHARS),
        hint: hint_for(status, text),
    }
}

/// The operator hint for a Consul error status and body, if any.
fn hint_for(status: u16, body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    match status {
        403 if lower.contains("acl not found") => Some(
            "the ACL token is unknown to Consul: check the configured token (CONSUL_HTTP_TOKEN)"
                .into(),
        ),
        403 if lower.contains("permission denied") => Some(match permission_denied_detail(body) {
            Some((permission, resource)) => format!(
                "the token lacks permission '{permission}' on \"{resource}\": its policy needs {}",
                policy_rule_for(&permission, &resource)
            ),
            None => "the token lacks an ACL permission: reading needs service:read and node:read, \
                     writing splits needs service:write on the service"
                .into(),
        }),
        403 => Some(
            "access denied by Consul ACLs: check the configured token (CONSUL_HTTP_TOKEN)".into(),
        ),
        429 | 503 if lower.contains("rate limit") => {
            Some("Consul is rate limiting requests: retry later (or against another server)".into())
        }
        429 => Some("too many requests: Consul asks to back off and retry later".into()),
        503 => Some("Consul is unavailable: retry later".into()),
        400 if lower.contains("invalid wait") => Some(
            "a blocking query's wait must be a Go duration such as 30s, at most 10m".into(),
        ),
        400 if lower.contains("invalid index") => Some(
            "a blocking query's index must be a number from X-Consul-Index: the dashboard starts over from index 0"
                .into(),
        ),
        400 if lower.contains("request decoding failed") => Some(
            "Consul could not decode the entry sent: check its field names and types".into(),
        ),
        404 if text_is_empty(body) => Some("the key does not exist".into()),
        404 if lower.contains("config entry not found") => Some(
            "the config entry does not exist (for a service-splitter: no split yet, all traffic \
             goes to the resolver's default subset)"
                .into(),
        ),
        500 if lower.contains("sum of all split weights") => Some(
            "the weights must add up to exactly 100 (100.00 %; 99.99 and 100.01 both fail)".into(),
        ),
        500 if lower.contains("no cluster leader") => {
            Some("the Consul cluster has no leader: wait for an election, check the servers".into())
        }
        500 if lower.contains("does not permit advanced routing or splitting") => Some(
            "splitting needs an L7 protocol: set Protocol = \"http\" in the service-defaults \
             (or proxy-defaults) entry"
                .into(),
        ),
        500 if lower.contains("does not have a subset named") => {
            Some("every split subset must be defined in the service-resolver's Subsets".into())
        }
        _ => None,
    }
}

fn text_is_empty(body: &str) -> bool {
    body.trim().is_empty()
}

/// `lacks permission 'service:write' on "identity"` → `("service:write", "identity")`.
fn permission_denied_detail(body: &str) -> Option<(String, String)> {
    let (_, rest) = body.split_once("lacks permission '")?;
    let (permission, rest) = rest.split_once('\'')?;
    let (_, rest) = rest.split_once(" on \"")?;
    let (resource, _) = rest.split_once('"')?;
    Some((permission.to_owned(), resource.to_owned()))
}

/// The ACL rule that grants `permission` (`service:write`) on `resource`.
fn policy_rule_for(permission: &str, resource: &str) -> String {
    match permission.split_once(':') {
        Some((kind, level)) => format!("{kind} \"{resource}\" {{ policy = \"{level}\" }}"),
        None => format!("'{permission}' on \"{resource}\""),
    }
}

// ---------------------------------------------------------------------------------------
// Pure parsers. Every field is optional so that `null` or a missing key never fails a
// whole answer; only a wrong JSON shape does.

fn decode<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|e| RegistryError::Decode(format!("{what}: {e}")))
}

/// Parses `GET /v1/catalog/services`: names without `-sidecar-proxy` registrations and
/// without Consul's own `consul` service, sorted.
pub fn parse_catalog_services(body: &[u8]) -> Result<Vec<String>, RegistryError> {
    let map: BTreeMap<String, serde_json::Value> = decode("catalog/services", body)?;
    Ok(map
        .into_keys()
        .filter(|name| name != "consul" && !name.ends_with(PROXY_SUFFIX))
        .collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntryJson {
    #[serde(default)]
    node: Option<NodeJson>,
    #[serde(default)]
    service: Option<ServiceJson>,
    #[serde(default)]
    checks: Option<Vec<CheckJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceJson {
    #[serde(default, rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    meta: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    proxy: Option<ProxyJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyJson {
    #[serde(default, rename = "DestinationServiceID")]
    destination_service_id: Option<String>,
    #[serde(default)]
    config: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckJson {
    #[serde(default)]
    node: Option<String>,
    #[serde(default, rename = "CheckID")]
    check_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default, rename = "ServiceID")]
    service_id: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    create_index: Option<u64>,
}

impl ServiceJson {
    /// A non-empty string value of `Meta[key]`.
    fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta
            .as_ref()?
            .get(key)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// `Service.Address`, else `Node.Address`.
    fn display_address(&self, node: Option<&NodeJson>) -> String {
        match self.address.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => a.to_owned(),
            _ => node
                .and_then(|n| n.address.as_deref())
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// Version of an instance: `Meta.version`, else the first tag matching `^v\d+`, else
/// [`DEFAULT_VERSION`].
fn version_of(service: &ServiceJson) -> String {
    if let Some(v) = service.meta_str("version") {
        return v.to_owned();
    }
    service
        .tags
        .iter()
        .flatten()
        .find(|t| is_version_tag(t))
        .cloned()
        .unwrap_or_else(|| DEFAULT_VERSION.to_owned())
}

/// `^v\d+`: a `v` followed by at least one ASCII digit (e.g. `v1`, `v2-canary`).
fn is_version_tag(tag: &str) -> bool {
    tag.strip_prefix('v')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Parses `GET /v1/health/service/:name` into instances sorted by id.
///
/// - health: the worst status over every check of the entry, node checks included
///   (no checks at all: passing, as Consul treats it);
/// - `check_output`: one line per non-passing check, its `Output` (or, when that is
///   empty as for maintenance checks, its `Notes`, else its `Name`); empty when all pass;
/// - `metrics_url`: `Service.Meta.metrics_url` when non-empty. The Connect fallback
///   (`Proxy.Config.envoy_prometheus_bind_addr`) lives on the sidecar's registration: see
///   [`parse_connect_metrics`].
pub fn parse_health_service(body: &[u8]) -> Result<Vec<Instance>, RegistryError> {
    Ok(parse_health_service_nodes(body)?
        .into_iter()
        .map(|n| n.instance)
        .collect())
}

/// An instance with the node it runs on (the key of its checks in `/v1/health/state/any`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInstance {
    /// `Node.Node`.
    pub node: String,
    /// The instance.
    pub instance: Instance,
}

/// [`parse_health_service`] keeping each instance's node name.
pub fn parse_health_service_nodes(body: &[u8]) -> Result<Vec<NodeInstance>, RegistryError> {
    let entries: Option<Vec<HealthEntryJson>> = decode("health/service", body)?;
    let mut instances: Vec<NodeInstance> = entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let service = entry.service?;
            let node = entry
                .node
                .as_ref()
                .and_then(|n| n.node.clone())
                .unwrap_or_default();
            let checks = entry.checks.unwrap_or_default();
            let health = checks
                .iter()
                .map(|c| Health::from_consul_status(c.status.as_deref().unwrap_or_default()))
                .max()
                .unwrap_or(Health::Passing);
            let check_output = checks
                .iter()
                .filter(|c| c.status.as_deref() != Some("passing"))
                .map(check_text)
                .collect::<Vec<_>>()
                .join("\n");
            Some(NodeInstance {
                node,
                instance: Instance {
                    id: service.id.clone().unwrap_or_default(),
                    service: service.service.clone().unwrap_or_default(),
                    version: version_of(&service),
                    address: service.display_address(entry.node.as_ref()),
                    port: service.port.unwrap_or(0),
                    health,
                    check_output,
                    metrics_url: service.meta_str("metrics_url").map(str::to_owned),
                },
            })
        })
        .collect();
    instances.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    Ok(instances)
}

/// One health check as `/v1/health/state/any` lists them (the whole mesh's checks in one
/// answer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CheckRow {
    /// `Node`.
    pub node: String,
    /// `ServiceID`, empty for a node check (e.g. `serfHealth`).
    pub service_id: String,
    /// `CheckID`.
    pub check_id: String,
    /// `ServiceName`, empty for a node check.
    pub service_name: String,
    /// Health of this check.
    pub health: Health,
    /// What to show when it is not passing (`Output`, else `Notes`, else `Name`).
    pub text: String,
    /// `CreateIndex`: moves when the check (or its instance) is registered again.
    pub create_index: u64,
}

/// Parses `GET /v1/health/state/any`, sorted by node, service id, check id.
pub fn parse_checks(body: &[u8]) -> Result<Vec<CheckRow>, RegistryError> {
    let checks: Option<Vec<CheckJson>> = decode("health/state", body)?;
    let mut rows: Vec<CheckRow> = checks
        .unwrap_or_default()
        .into_iter()
        .map(|c| CheckRow {
            text: check_text(&c),
            health: Health::from_consul_status(c.status.as_deref().unwrap_or_default()),
            node: c.node.unwrap_or_default(),
            service_id: c.service_id.unwrap_or_default(),
            check_id: c.check_id.unwrap_or_default(),
            service_name: c.service_name.unwrap_or_default(),
            create_index: c.create_index.unwrap_or(0),
        })
        .collect();
    rows.sort();
    Ok(rows)
}

/// Health and check output of an instance on `node` with `service_id`, from the mesh's
/// checks (node checks first, then the instance's own, as `/v1/health/service` lists
/// them): the worst status, one line per non-passing check. `None` when no check names
/// the node or the instance (the caller keeps what the per-service read said).
#[must_use]
pub fn health_from_checks(
    checks: &[CheckRow],
    node: &str,
    service_id: &str,
) -> Option<(Health, String)> {
    let mine: Vec<&CheckRow> = checks
        .iter()
        .filter(|c| c.node == node && (c.service_id.is_empty() || c.service_id == service_id))
        .collect();
    if !mine.iter().any(|c| c.service_id == service_id) {
        return None;
    }
    let health = mine
        .iter()
        .map(|c| c.health)
        .max()
        .unwrap_or(Health::Passing);
    let text = mine
        .iter()
        .filter(|c| c.health != Health::Passing)
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Some((health, text))
}

/// What to show for a non-passing check.
fn check_text(check: &CheckJson) -> String {
    [&check.output, &check.notes, &check.name]
        .into_iter()
        .filter_map(|s| s.as_deref().map(str::trim))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Parses `GET /v1/health/connect/:name` (the service's sidecar proxies) into the stats
/// URL of each sidecar, keyed by the instance id it fronts (`Proxy.DestinationServiceID`).
///
/// A sidecar's `Meta.metrics_url` wins; else `Proxy.Config.envoy_prometheus_bind_addr`'s
/// port on the proxy's address (`Service.Address`, else `Node.Address`), path `/metrics`.
pub fn parse_connect_metrics(body: &[u8]) -> Result<BTreeMap<String, String>, RegistryError> {
    let entries: Option<Vec<HealthEntryJson>> = decode("health/connect", body)?;
    let mut urls = BTreeMap::new();
    for entry in entries.unwrap_or_default() {
        let Some(service) = entry.service else {
            continue;
        };
        let Some(proxy) = &service.proxy else {
            continue;
        };
        let Some(dest) = proxy
            .destination_service_id
            .as_deref()
            .filter(|d| !d.is_empty())
        else {
            continue;
        };
        let url = if let Some(url) = service.meta_str("metrics_url") {
            url.to_owned()
        } else {
            let bind = proxy
                .config
                .as_ref()
                .and_then(|c| c.get("envoy_prometheus_bind_addr"))
                .and_then(serde_json::Value::as_str);
            let Some(port) = bind.and_then(bind_port) else {
                continue;
            };
            let host = service.display_address(entry.node.as_ref());
            if host.is_empty() {
                continue;
            }
            if host.contains(':') && !host.starts_with('[') {
                format!("http://[{host}]:{port}/metrics")
            } else {
                format!("http://{host}:{port}/metrics")
            }
        };
        urls.entry(dest.to_owned()).or_insert(url);
    }
    Ok(urls)
}

/// The port of a bind address such as `0.0.0.0:9102` or `[::]:9102`.
fn bind_port(bind: &str) -> Option<u16> {
    let (_, port) = bind.trim().rsplit_once(':')?;
    port.parse().ok().filter(|p| *p != 0)
}

/// Fills the `metrics_url` of instances that have none from `by_instance_id`.
pub fn apply_metrics_fallback(
    instances: &mut [Instance],
    by_instance_id: &BTreeMap<String, String>,
) {
    for instance in instances.iter_mut().filter(|i| i.metrics_url.is_none()) {
        instance.metrics_url = by_instance_id.get(&instance.id).cloned();
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResolverJson {
    #[serde(default)]
    subsets: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses a `service-resolver` entry into its sorted subset names (none: empty).
pub fn parse_resolver_subsets(body: &[u8]) -> Result<Vec<String>, RegistryError> {
    let resolver: ResolverJson = decode("service-resolver", body)?;
    Ok(resolver.subsets.unwrap_or_default().into_keys().collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamedResolverJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subsets: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses `GET /v1/config/service-resolver` (every resolver): service → sorted subsets.
pub fn parse_resolver_list(body: &[u8]) -> Result<BTreeMap<String, Vec<String>>, RegistryError> {
    let list: Option<Vec<NamedResolverJson>> = decode("service-resolver list", body)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let name = r.name.filter(|n| !n.is_empty())?;
            Some((name, r.subsets.unwrap_or_default().into_keys().collect()))
        })
        .collect())
}

/// Parses `GET /v1/config/service-splitter` (every splitter): service → split with its
/// `ModifyIndex`, each as [`parse_splitter`] reads one entry.
pub fn parse_splitter_list(body: &[u8]) -> Result<BTreeMap<String, SplitConfig>, RegistryError> {
    let list: Option<Vec<SplitterJson>> = decode("service-splitter list", body)?;
    let mut out = BTreeMap::new();
    for entry in list.unwrap_or_default() {
        let Some(name) = entry.name.clone().filter(|n| !n.is_empty()) else {
            continue;
        };
        out.insert(name, splitter_config(entry)?);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceDefaultsJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

/// Parses `GET /v1/config/service-defaults` (every entry): service → its `Protocol`,
/// lowercased (as Consul normalizes it); an entry without one maps to `""` (it inherits
/// proxy-defaults).
pub fn parse_service_defaults_list(body: &[u8]) -> Result<BTreeMap<String, String>, RegistryError> {
    let list: Option<Vec<ServiceDefaultsJson>> = decode("service-defaults list", body)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let name = e.name.filter(|n| !n.is_empty())?;
            Some((
                name,
                e.protocol.unwrap_or_default().trim().to_ascii_lowercase(),
            ))
        })
        .collect())
}

/// Parses one `service-defaults` entry (`GET /v1/config/service-defaults/<name>`): its
/// `Protocol`, lowercased (`None` when it sets none).
pub fn parse_service_defaults_protocol(body: &[u8]) -> Result<Option<String>, RegistryError> {
    let entry: Option<ServiceDefaultsJson> = decode("service-defaults", body)?;
    Ok(entry
        .and_then(|e| e.protocol)
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyDefaultsJson {
    #[serde(default)]
    config: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses `GET /v1/config/proxy-defaults/global`: `Config.protocol`, lowercased (`None`
/// when the entry sets none).
pub fn parse_proxy_defaults_protocol(body: &[u8]) -> Result<Option<String>, RegistryError> {
    let entry: Option<ProxyDefaultsJson> = decode("proxy-defaults", body)?;
    Ok(entry.and_then(protocol_of))
}

/// Parses `GET /v1/config/proxy-defaults` (every entry; only `global` exists in Consul):
/// `global`'s `Config.protocol`, lowercased (`None` without that entry or protocol). The
/// follower watches this list rather than `/proxy-defaults/global`: a missing entry's 404
/// carries no `X-Consul-Index` (fixture `error_config_404_not_found.txt`), so it could not
/// block, while the list answers `[]` with an index.
pub fn parse_proxy_defaults_list(body: &[u8]) -> Result<Option<String>, RegistryError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Named {
        #[serde(default)]
        name: Option<String>,
        #[serde(flatten)]
        entry: ProxyDefaultsJson,
    }
    let list: Option<Vec<Named>> = decode("proxy-defaults list", body)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name.as_deref() == Some("global"))
        .and_then(|e| protocol_of(e.entry)))
}

fn protocol_of(entry: ProxyDefaultsJson) -> Option<String> {
    entry
        .config
        .and_then(|c| {
            c.into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("protocol"))
                .and_then(|(_, v)| v.as_str().map(|p| p.trim().to_ascii_lowercase()))
        })
        .filter(|p| !p.is_empty())
}

/// The protocol Consul compiles `service`'s discovery chain with: its `service-defaults`
/// `Protocol`, else `proxy-defaults` `global`'s `Config.protocol`, else `tcp` (API brief
/// §1.6). `defaults` is [`parse_service_defaults_list`]'s map.
#[must_use]
pub fn effective_protocol(
    service: &str,
    defaults: &BTreeMap<String, String>,
    global: Option<&str>,
) -> String {
    defaults
        .get(service)
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .or(global.filter(|p| !p.is_empty()))
        .unwrap_or("tcp")
        .to_owned()
}

/// What decides the protocols of a mesh: every `service-defaults` entry's protocol
/// (`None`: the agent has no config entries — protocols unknown) and `proxy-defaults`
/// `global`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protocols {
    /// Service → `Protocol` of its `service-defaults` (`""`: not set).
    pub defaults: Option<BTreeMap<String, String>>,
    /// `proxy-defaults` `global` `Config.protocol`.
    pub global: Option<String>,
}

impl Protocols {
    /// `service`'s effective protocol, `None` when unknown (see [`effective_protocol`]).
    #[must_use]
    pub fn protocol_of(&self, service: &str) -> Option<String> {
        self.defaults
            .as_ref()
            .map(|d| effective_protocol(service, d, self.global.as_deref()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SplitterJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    splits: Option<Vec<SplitJson>>,
    #[serde(default)]
    modify_index: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SplitJson {
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    service_subset: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

/// Parses a `service-splitter` entry: weights (floats with 0.01 steps) become hundredths
/// by `round(w * 100)`, and `ModifyIndex` is kept for compare-and-set.
///
/// A missing `ServiceSubset` gives the subset `""` (the default subset); a `Service`
/// other than the entry's own name gives `"<service>/<subset>"` (see the module docs).
pub fn parse_splitter(body: &[u8]) -> Result<SplitConfig, RegistryError> {
    splitter_config(decode("service-splitter", body)?)
}

fn splitter_config(splitter: SplitterJson) -> Result<SplitConfig, RegistryError> {
    let Some(modify_index) = splitter.modify_index else {
        return Err(RegistryError::Decode(
            "service-splitter: the entry has no ModifyIndex".into(),
        ));
    };
    let own = splitter.name.unwrap_or_default();
    let entries = splitter
        .splits
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let subset = s.service_subset.unwrap_or_default();
            let subset = match s.service.filter(|svc| !svc.is_empty() && *svc != own) {
                Some(other) => format!("{other}/{subset}"),
                None => subset,
            };
            SplitEntry {
                subset,
                weight: weight_to_hundredths(s.weight.unwrap_or(0.0)),
            }
        })
        .collect();
    Ok(SplitConfig {
        split: Split { entries },
        modify_index,
    })
}

/// `80.0` → `8000`, `33.33` → `3333` (negative → 0).
fn weight_to_hundredths(weight: f64) -> u32 {
    (weight * 100.0).round().max(0.0) as u32
}

/// Hundredths → a JSON number: `8000` → `80`, `3333` → `33.33`.
fn hundredths_to_json(weight: u32) -> serde_json::Number {
    if weight.is_multiple_of(100) {
        serde_json::Number::from(weight / 100)
    } else {
        // Exact integer division by 100 rounds to the double nearest to the decimal, which
        // serde_json prints back as that decimal (3333 → 33.33).
        serde_json::Number::from_f64(f64::from(weight) / 100.0)
            .unwrap_or_else(|| serde_json::Number::from(weight / 100))
    }
}

/// The `PUT /v1/config` body that changes `stored` (a `service-splitter` entry as read)
/// to `split`: every field other than `CreateIndex` / `ModifyIndex` (the index goes in
/// `?cas=`) and the splits' `Weight` / `Service` / `ServiceSubset` is kept as stored. A
/// split whose destination (service, subset) was already there keeps its other fields
/// (`RequestHeaders`, `ResponseHeaders`, `Namespace`, `Partition`…); new destinations get
/// the plain shape of [`splitter_request_body`].
pub fn merge_splitter_body(
    service: &str,
    stored: &serde_json::Value,
    split: &Split,
) -> Result<Vec<u8>, RegistryError> {
    use serde_json::Value;
    let Value::Object(stored) = stored else {
        return Err(RegistryError::Decode(
            "service-splitter: the stored entry is not a JSON object".into(),
        ));
    };
    let mut entry = stored.clone();
    entry.remove("CreateIndex");
    entry.remove("ModifyIndex");
    entry.insert("Kind".into(), Value::from("service-splitter"));
    entry.insert("Name".into(), Value::from(service));
    let old_splits: Vec<&serde_json::Map<String, Value>> = stored
        .get("Splits")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let destination = |obj: &serde_json::Map<String, Value>| {
        let svc = obj
            .get("Service")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && *s != service)
            .unwrap_or(service)
            .to_owned();
        let subset = obj
            .get("ServiceSubset")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (svc, subset)
    };
    let splits: Vec<Value> = split
        .entries
        .iter()
        .map(|e| {
            let (other, subset) = match e.subset.split_once('/') {
                Some((other, subset)) => (Some(other).filter(|o| !o.is_empty()), subset),
                None => (None, e.subset.as_str()),
            };
            let want = (other.unwrap_or(service).to_owned(), subset.to_owned());
            let mut obj = old_splits
                .iter()
                .find(|o| destination(o) == want)
                .map_or_else(
                    || {
                        let mut fresh = serde_json::Map::new();
                        if let Some(other) = other {
                            fresh.insert("Service".into(), Value::from(other));
                        }
                        if !subset.is_empty() {
                            fresh.insert("ServiceSubset".into(), Value::from(subset));
                        }
                        fresh
                    },
                    |o| (*o).clone(),
                );
            obj.insert("Weight".into(), Value::Number(hundredths_to_json(e.weight)));
            Value::Object(obj)
        })
        .collect();
    entry.insert("Splits".into(), Value::Array(splits));
    serde_json::to_vec(&Value::Object(entry))
        .map_err(|e| RegistryError::Invalid(format!("cannot encode the splitter entry: {e}")))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SplitterWrite<'a> {
    kind: &'static str,
    name: &'a str,
    splits: Vec<SplitWrite<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SplitWrite<'a> {
    weight: serde_json::Number,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_subset: Option<&'a str>,
}

/// The `PUT /v1/config` body for `split` on `service`:
/// `{"Kind":"service-splitter","Name":…,"Splits":[{"Weight":80,"ServiceSubset":"v1"},…]}`
/// (no `CreateIndex` / `ModifyIndex`: the index goes in `?cas=`). The subset `""` omits
/// `ServiceSubset`; `"<service>/<subset>"` sets `Service` too.
pub fn splitter_request_body(service: &str, split: &Split) -> Result<Vec<u8>, RegistryError> {
    let splits = split
        .entries
        .iter()
        .map(|e| {
            let (other, subset) = match e.subset.split_once('/') {
                Some((other, subset)) => (Some(other), subset),
                None => (None, e.subset.as_str()),
            };
            SplitWrite {
                weight: hundredths_to_json(e.weight),
                service: other.filter(|o| !o.is_empty()),
                service_subset: Some(subset).filter(|s| !s.is_empty()),
            }
        })
        .collect();
    serde_json::to_vec(&SplitterWrite {
        kind: "service-splitter",
        name: service,
        splits,
    })
    .map_err(|e| RegistryError::Invalid(format!("cannot encode the splitter entry: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_defaults_list_gives_globals_protocol() {
        let list = br#"[{"Kind":"proxy-defaults","Name":"global","Config":{"Protocol":" HTTP "},"ModifyIndex":7}]"#;
        assert_eq!(
            parse_proxy_defaults_list(list).unwrap(),
            Some("http".into())
        );
        assert_eq!(parse_proxy_defaults_list(b"[]").unwrap(), None);
        let other = br#"[{"Kind":"proxy-defaults","Name":"other","Config":{"protocol":"http"}}]"#;
        assert_eq!(parse_proxy_defaults_list(other).unwrap(), None);
        assert!(parse_proxy_defaults_list(b"{not json").is_err());
    }

    #[test]
    fn version_tags() {
        assert!(is_version_tag("v1"));
        assert!(is_version_tag("v12-canary"));
        assert!(!is_version_tag("v"));
        assert!(!is_version_tag("vx1"));
        assert!(!is_version_tag("primary"));
        assert!(!is_version_tag("1"));
    }

    #[test]
    fn weights_round_trip_through_json_numbers() {
        assert_eq!(weight_to_hundredths(80.0), 8000);
        assert_eq!(weight_to_hundredths(33.33), 3333);
        assert_eq!(weight_to_hundredths(0.01), 1);
        assert_eq!(weight_to_hundredths(-1.0), 0);
        assert_eq!(hundredths_to_json(8000).to_string(), "80");
        assert_eq!(hundredths_to_json(3333).to_string(), "33.33");
        assert_eq!(hundredths_to_json(1).to_string(), "0.01");
        assert_eq!(hundredths_to_json(0).to_string(), "0");
        for w in 0..=10_000 {
            let n = hundredths_to_json(w).as_f64().unwrap_or(-1.0);
            assert_eq!(weight_to_hundredths(n), w, "weight {w}");
        }
    }

    #[test]
    fn request_body_shapes() {
        let split = Split::from_pairs([("v1", 3334), ("", 3333), ("payment/v2", 3333)]);
        let body = splitter_request_body("identity", &split).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":33.34,"ServiceSubset":"v1"},{"Weight":33.33},{"Weight":33.33,"Service":"payment","ServiceSubset":"v2"}]}"#
        );
    }

    #[test]
    fn base_url_validation() {
        assert!(parse_base_url("http://127.0.0.1:8500").is_ok());
        assert!(parse_base_url(" https://consul.example:8501/ ").is_ok());
        for bad in [
            "ftp://x",
            "127.0.0.1:8500",
            "",
            "http://",
            "http://h/?token=x",
        ] {
            let Err(RegistryError::Invalid(msg)) = parse_base_url(bad) else {
                panic!("{bad:?} accepted");
            };
            assert!(msg.starts_with("invalid Consul address"), "{msg}");
            assert!(!msg.contains("token=x"), "{msg}");
        }
    }

    #[test]
    fn urls_are_shown_without_user_info() {
        let url = Url::parse("http://user:pw@127.0.0.1:8500/v1/x").unwrap();
        assert_eq!(redact_url(&url), "http://127.0.0.1:8500/v1/x");
    }

    #[test]
    fn path_segments_are_encoded_and_base_paths_kept() {
        let client = ConsulClient::new("http://127.0.0.1:8500/consul/").unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:8500/consul");
        let plain = ConsulClient::new("http://u:p@127.0.0.1:8500").unwrap();
        assert_eq!(plain.base_url(), "http://127.0.0.1:8500");
        assert_eq!(
            plain.url(&["v1", "x"]).as_str(),
            "http://u:p@127.0.0.1:8500/v1/x"
        );
        assert_eq!(
            client.url(&["v1", "health", "service", "a b/c"]).as_str(),
            "http://127.0.0.1:8500/consul/v1/health/service/a%20b%2Fc"
        );
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }

    #[test]
    fn hints() {
        assert!(
            hint_for(404, "Config entry not found")
                .unwrap()
                .contains("does not exist")
        );
        assert_eq!(hint_for(404, "page not found"), None);
        assert!(
            hint_for(403, "Permission denied")
                .unwrap()
                .contains("service:write")
        );
        assert!(hint_for(503, "oops").unwrap().contains("retry later"));
        assert!(
            hint_for(500, "rpc error making call: No cluster leader")
                .unwrap()
                .contains("leader")
        );
        assert_eq!(
            permission_denied_detail(
                "Permission denied: token with AccessorID 'x' lacks permission 'key:read' on \"mesh/\""
            ),
            Some(("key:read".into(), "mesh/".into()))
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let client = ConsulClient::new("http://127.0.0.1:8500")
            .unwrap()
            .with_token(Some("SECRET-TOKEN-123".into()));
        let shown = format!("{client:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(client.has_token());
        assert!(!client.with_token(Some(String::new())).has_token());
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            &b""[..],
            b"null",
            b"{}",
            b"[]",
            b"[null]",
            b"\xff\xfe",
            b"[{\"Service\":null}]",
            b"{\"Splits\":null}",
        ] {
            let _ = parse_catalog_services(body);
            let _ = parse_health_service(body);
            let _ = parse_resolver_subsets(body);
            let _ = parse_splitter(body);
            let _ = parse_connect_metrics(body);
            let _ = error_from_response(500, body);
        }
    }
}

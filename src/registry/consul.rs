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
//! - Per-split `RequestHeaders` / `ResponseHeaders` and Enterprise `Namespace` /
//!   `Partition` are not represented in [`Split`] and are not written back.
//! - The token travels only in the `X-Consul-Token` header (never in a URL), is marked
//!   sensitive, and is never part of `Debug` output or an error text. Redirects are not
//!   followed, so the header cannot leak to another host.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Registry, RegistryError, WriteOutcome};
use crate::model::types::{
    DEFAULT_VERSION, Health, Instance, RegistrySnapshot, ServiceEntry, Split, SplitConfig,
    SplitEntry,
};
use crate::net::{self, BodyError};

/// Default time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default time allowed for a whole request, body included. Blocking queries would need
/// more than `wait + wait/16` (API brief, gotcha 1); this client issues none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default largest response body accepted (read in chunks, cut off beyond it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How many HTTP requests a [`ConsulClient::snapshot`] keeps in flight at most.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// Error bodies are read up to this size (they are short text in Consul).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Error bodies are shown truncated to this many characters.
pub const MAX_ERROR_BODY_CHARS: usize = 500;

/// Header Consul reads the ACL token from.
const TOKEN_HEADER: &str = "X-Consul-Token";

/// An ACL token secret. Its `Debug` never shows the value.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
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
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("base_url", &redact_url(&self.base))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8500`), with the default timeouts
    /// ([`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`]) and body limit
    /// ([`DEFAULT_MAX_BODY_BYTES`]). Only `http` and `https` URLs with a host are accepted.
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        let base = parse_base_url(base_url)?;
        let http = build_http(DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)?;
        Ok(Self {
            base_url: redact_url(&base).trim_end_matches('/').to_owned(),
            base,
            http,
            token: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// Sends `token` as `X-Consul-Token` on every request (`None` or an empty string: no
    /// header, so the agent's default token applies).
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty()).map(Secret);
        self
    }

    /// Replaces the connect and whole-request timeouts.
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, RegistryError> {
        self.http = build_http(connect, request)?;
        self.connect_timeout = connect;
        self.request_timeout = request;
        Ok(self)
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

    /// Sends one request and reads the body (bounded). Returns the status and the body.
    async fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), RegistryError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&token.0).map_err(|_| {
                RegistryError::Invalid(
                    "the Consul token contains characters not allowed in an HTTP header".into(),
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
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let status = resp.status();
        // An error text is kept truncated; a success body must fit whole.
        let (limit, truncate) = if status.is_success() {
            (self.max_body_bytes, false)
        } else {
            (MAX_ERROR_BODY_BYTES, true)
        };
        let buf = match net::read_body(&mut resp, limit, truncate).await {
            Ok(buf) => buf,
            Err(BodyError::TooLarge) => return Err(body_too_large(limit, url)),
            Err(BodyError::Transport(e)) => return Err(self.transport_error(&e, url)),
        };
        Ok((status, buf))
    }

    /// GET `segments`; `Ok(None)` on 404 when `allow_404`, error statuses mapped.
    async fn get(
        &self,
        segments: &[&str],
        allow_404: bool,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(segments);
        let (status, body) = self.request(Method::GET, &url, None).await?;
        if status.is_success() {
            Ok(Some(body))
        } else if allow_404 && status == StatusCode::NOT_FOUND {
            Ok(None)
        } else {
            Err(error_from_response(status.as_u16(), &body))
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
            name,
            instances,
            subsets,
            split,
        })
    }

    /// A concise transport error: what failed, then the URL (without secrets).
    fn transport_error(&self, err: &reqwest::Error, url: &Url) -> RegistryError {
        let message = if err.is_timeout() {
            if err.is_connect() {
                format!(
                    "connect timed out after {}",
                    format_duration(self.connect_timeout)
                )
            } else {
                format!("no answer within {}", format_duration(self.request_timeout))
            }
        } else {
            net::describe_transport(err)
        };
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
        let mut services = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            // Returning early drops `tasks`, which aborts the requests still running.
            let entry = joined
                .map_err(|e| RegistryError::Decode(format!("snapshot task failed: {e}")))??;
            services.push(entry);
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(RegistrySnapshot { services })
    }

    /// `PUT /v1/config?cas=<expected_index>` with the splitter entry. The split is
    /// validated locally first (nothing is sent when it is invalid). `true` → `Applied`,
    /// `false` → `Conflict` (Consul answers a CAS mismatch with 200 `false`).
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
        let body = splitter_request_body(service, split)?;
        let mut url = self.url(&["v1", "config"]);
        url.query_pairs_mut()
            .append_pair("cas", &expected_index.to_string());
        let (status, resp) = self.request(Method::PUT, &url, Some(body)).await?;
        if !status.is_success() {
            return Err(error_from_response(status.as_u16(), &resp));
        }
        match serde_json::from_slice::<bool>(&resp) {
            Ok(true) => Ok(WriteOutcome::Applied),
            Ok(false) => Ok(WriteOutcome::Conflict),
            Err(_) => Err(RegistryError::Decode(format!(
                "expected `true` or `false` from a config write, got {:?} ({})",
                truncate_chars(String::from_utf8_lossy(&resp).trim(), 80),
                redact_url(&url)
            ))),
        }
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

/// The reqwest client: timeouts, no redirects (the token header must not follow one).
fn build_http(connect: Duration, request: Duration) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
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
        "response body larger than {} ({})",
        format_bytes(limit),
        redact_url(url)
    ))
}

/// A URL for messages: user-info removed.
fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        // Cannot fail for http(s) URLs, which are the only ones accepted.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
    }
    shown.to_string()
}

/// `3 s`, `250 ms`.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// `32 MiB`, `100 KiB`, `12 bytes`.
fn format_bytes(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
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
/// truncated to [`MAX_ERROR_BODY_CHARS`]) plus an operator hint where one helps (ACL,
/// rate limit, no leader, protocol, unknown subset). Pure: usable on fixtures.
#[must_use]
pub fn error_from_response(status: u16, body: &[u8]) -> RegistryError {
    let text = String::from_utf8_lossy(body);
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
        503 => Some("Consul is unavailable: retry later".into()),
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
        .filter(|name| name != "consul" && !name.ends_with("-sidecar-proxy"))
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
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    output: Option<String>,
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
    let entries: Option<Vec<HealthEntryJson>> = decode("health/service", body)?;
    let mut instances: Vec<Instance> = entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let service = entry.service?;
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
            Some(Instance {
                id: service.id.clone().unwrap_or_default(),
                service: service.service.clone().unwrap_or_default(),
                version: version_of(&service),
                address: service.display_address(entry.node.as_ref()),
                port: service.port.unwrap_or(0),
                health,
                check_output,
                metrics_url: service.meta_str("metrics_url").map(str::to_owned),
            })
        })
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(instances)
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
    let splitter: SplitterJson = decode("service-splitter", body)?;
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
        assert_eq!(hint_for(404, "Config entry not found"), None);
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

//! etcd v3 registry over the JSON gateway (reqwest, rustls): reads the layout of
//! [`layout`] into a [`RegistrySnapshot`], follows it with a watch (push, no polling),
//! writes splits with a compare-and-set txn on `mod_revision`, and offers the design's SDK
//! calls (`register` with a lease, `lookup`, `deregister`).
//!
//! - Read: one txn ranges `/services/`, `/mesh/splits/` and `/spine-dash/drivers/` at one
//!   revision R; `follow` then watches the prefixes from R+1 (see [`watch`]). A user whose
//!   role may not read the markers' prefix (403 permission denied on that txn) still gets
//!   the first two: the markers are then left out (one warning), not the whole registry.
//! - Writes: a split is a txn comparing the key's `mod_revision` (0 = must not exist);
//!   when it fails, the same txn ranged the key, so the conflict carries "theirs" (the
//!   stored split and its `mod_revision`, `None` when the key is gone) without another
//!   round trip.
//! - Driver markers ([`Registry::claim_driver`]): a lease of the TTL, then a txn "if
//!   `/spine-dash/drivers/<service>`'s `create_revision` is 0, put the marker with the
//!   lease, else range it" ([`DriverClaim::HeldBy`] theirs, and the unused lease is
//!   revoked); renew = `/v3/lease/keepalive` (no `TTL` in the answer: gone), release =
//!   revoke (which deletes the key).
//! - Auth: user/password → token (`/v3/auth/authenticate`), sent raw as `Authorization`;
//!   on 401 (invalid or expired token) the client authenticates again once and retries.
//! - Several endpoints: a request that cannot reach one (connection refused, timeout, TLS,
//!   503/504) tries the next; the one that answered is used from then on, and a switch is
//!   logged (`etcd: now using …`). [`EtcdClient::target`] names the one in use.
//! - Secrets (password, token, key) are never in `Debug`, logs or error texts.

pub mod layout;
pub mod lines;
pub mod settings;
mod watch;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use self::layout::{
    PREFIXES, SERVICES_PREFIX, check_service_name, driver_key, encode_registration, encode_split,
    instance_id_for, instance_key, simple_key, split_key,
};
pub use self::settings::{Credentials, EtcdSettings, PasswordSources, parse_endpoints};
use self::wire::{
    AuthenticateResponse, CODE_UNAUTHENTICATED, DeleteRangeResponse, ErrorBody, KeyValue,
    LeaseGrantResponse, LeaseKeepAliveResponse, Secret, StatusResponse, StreamLine, TxnResponse,
    b64, decode, error_from_response, prefix_range, txn_cas_put, txn_read_prefixes,
};
use super::sdk::{Candidate, Registered, Registration, ServiceSdk};
use super::{
    DriverClaim, DriverLease, FollowContext, Registry, RegistryError, RegistryTarget, WriteFailure,
    WriteOutcome, marker_from_value, renew_interval,
};
use crate::model::types::{
    DEFAULT_VERSION, DriverMarker, RegistryKind, RegistrySnapshot, Split, SplitConfig,
};
use crate::net::limits::{self, format_duration as fmt_duration};
use crate::net::{self, BodyError};

/// Largest response body accepted (a whole snapshot).
pub const MAX_BODY_BYTES: usize = limits::ETCD_MAX_BODY_BYTES;
/// Error bodies are read up to this size.
const MAX_ERROR_BODY_BYTES: usize = limits::MAX_ERROR_BODY_BYTES;
/// An idle watch still reports this often (a status call to the member in use): the
/// freshness promise (`next_within`) of [`Registry::follow`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// A client of one etcd cluster. Cheap to clone (shared connection pool and token).
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Url>,
    shown: Vec<String>,
    current: AtomicUsize,
    http: reqwest::Client,
    connect_timeout: Duration,
    request_timeout: Duration,
    heartbeat: Duration,
    credentials: Option<Credentials>,
    token: Mutex<Option<Secret>>,
    auth_lock: tokio::sync::Mutex<()>,
    /// Values read by failed compare-and-sets, by key: (txn revision, value or absent).
    /// The next snapshot of `follow` shows them even if the watch has not delivered the
    /// change yet, so the operator sees theirs next to mine.
    conflicts: Mutex<Conflicts>,
    /// Whether the markers' prefix is read and watched (cleared, once, when the user may
    /// not read it).
    drivers_readable: std::sync::atomic::AtomicBool,
}

/// Per key: the revision of the failed txn, and the value it read (`None` = absent).
type Conflicts = BTreeMap<Vec<u8>, (i64, Option<KeyValue>)>;

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.shown)
            .field("current", &self.current_endpoint())
            .field(
                "user",
                &self.inner.credentials.as_ref().map(|c| c.user.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// Why one attempt at one endpoint failed.
enum SendError {
    /// Could not reach it (or it is not serving): try the next endpoint.
    Unreachable(RegistryError),
    /// The request may have reached it, the answer was lost (reset after sending, no
    /// answer in time, body broken; by the error's kind): handled as `Unreachable`, but a
    /// write's outcome is unknown.
    Lost(RegistryError),
    /// It answered with an error status.
    Status(u16, Vec<u8>),
}

impl EtcdClient {
    /// A client for `settings` (reads the TLS files now: an unreadable file is an error).
    pub fn new(settings: &EtcdSettings) -> Result<Self, RegistryError> {
        if settings.endpoints.is_empty() {
            return Err(RegistryError::Invalid(
                "no etcd endpoint given; e.g. etcd://127.0.0.1:2379".into(),
            ));
        }
        let endpoints = settings
            .endpoints
            .iter()
            .map(|e| {
                Url::parse(e).map_err(|err| {
                    RegistryError::Invalid(format!("not an etcd endpoint: {err} ({e})"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = settings.load_tls().map_err(RegistryError::Invalid)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_keepalive(Some(Duration::from_secs(10)))
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("spine-dash/", env!("CARGO_PKG_VERSION")));
        if !tls.ca.is_empty() {
            builder = builder.tls_certs_only(tls.ca);
        }
        if let Some(identity) = tls.identity {
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| {
            RegistryError::Invalid(format!(
                "cannot set up the HTTP client for etcd: {}",
                net::innermost_message(&e)
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                shown: endpoints
                    .iter()
                    .map(|u| u.as_str().trim_end_matches('/').to_owned())
                    .collect(),
                endpoints,
                current: AtomicUsize::new(0),
                http,
                connect_timeout: settings.connect_timeout,
                request_timeout: settings.request_timeout,
                heartbeat: DEFAULT_HEARTBEAT,
                credentials: settings.credentials.clone(),
                token: Mutex::new(None),
                auth_lock: tokio::sync::Mutex::new(()),
                conflicts: Mutex::new(BTreeMap::new()),
                drivers_readable: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// Replaces how often an idle watch reports (tests use a short one). Call before
    /// cloning the client.
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.heartbeat = heartbeat;
        }
        self
    }

    /// The configured endpoints, as shown to the operator.
    #[must_use]
    pub fn endpoints(&self) -> &[String] {
        &self.inner.shown
    }

    /// The endpoint in use (the last one that answered).
    #[must_use]
    pub fn current_endpoint(&self) -> String {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.shown.len();
        self.inner.shown[i].clone()
    }

    /// Kind and the endpoint in use, for the header and `snapshot --json`.
    #[must_use]
    pub fn target(&self) -> RegistryTarget {
        RegistryTarget {
            kind: RegistryKind::Etcd,
            address: self.current_endpoint(),
        }
    }

    fn url(&self, index: usize, path: &str) -> Url {
        let mut url = self.inner.endpoints[index].clone();
        url.set_path(path);
        url
    }

    fn shown(&self, index: usize, path: &str) -> String {
        format!("{}{path}", self.inner.shown[index])
    }

    fn use_endpoint(&self, index: usize) {
        let before = self.inner.current.swap(index, Ordering::Relaxed);
        if before != index {
            tracing::info!("etcd: now using {}", self.inner.shown[index]);
        }
    }

    /// Moves away from `index` after it failed (the next request starts at the next one).
    fn skip_endpoint(&self, index: usize) {
        let n = self.inner.endpoints.len();
        if n > 1 {
            let _ = self.inner.current.compare_exchange(
                index,
                (index + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn cached_token(&self) -> Option<Secret> {
        self.inner.token.lock().ok().and_then(|t| t.clone())
    }

    fn set_token(&self, token: Option<Secret>) {
        if let Ok(mut t) = self.inner.token.lock() {
            *t = token;
        }
    }

    /// Forgets the token (it was refused); the next request authenticates again.
    fn forget_token(&self, refused: &Secret) {
        if let Ok(mut t) = self.inner.token.lock()
            && t.as_ref() == Some(refused)
        {
            *t = None;
        }
    }

    /// The token to send to endpoint `index`, authenticating there first if needed.
    async fn token_for(&self, index: usize) -> Result<Option<Secret>, SendError> {
        let Some(creds) = &self.inner.credentials else {
            return Ok(None);
        };
        if let Some(t) = self.cached_token() {
            return Ok(Some(t));
        }
        let _one_at_a_time = self.inner.auth_lock.lock().await;
        if let Some(t) = self.cached_token() {
            return Ok(Some(t));
        }
        let body = json!({"name": creds.user, "password": creds.password.expose()});
        let path = "/v3/auth/authenticate";
        let resp = self.send_once(index, path, &body, None, false).await?;
        let bytes = self.read_unary(index, path, resp).await?;
        let auth: AuthenticateResponse =
            decode("authenticate", &bytes).map_err(SendError::Unreachable)?;
        if auth.token.is_empty() {
            return Err(SendError::Unreachable(RegistryError::Decode(format!(
                "authenticate answered without a token ({})",
                self.shown(index, path)
            ))));
        }
        tracing::debug!("etcd: authenticated as {:?}", creds.user);
        self.set_token(Some(auth.token.clone()));
        Ok(Some(auth.token))
    }

    /// One POST to one endpoint. Statuses other than 200 are `Status` (503/504, which the
    /// gateway uses for "unavailable" / "no leader", are `Unreachable`).
    async fn send_once(
        &self,
        index: usize,
        path: &str,
        body: &Value,
        token: Option<&Secret>,
        stream: bool,
    ) -> Result<reqwest::Response, SendError> {
        let url = self.url(index, path);
        let mut req = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                SendError::Unreachable(RegistryError::Decode(
                    "the etcd token is not a valid header value".into(),
                ))
            })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let sent = if stream {
            // A watch never ends: only the answer's head is bounded; gRPC metadata asks
            // the member to cancel the watch when it loses its leader.
            req = req.header("Grpc-Metadata-hasleader", "true");
            tokio::time::timeout(self.inner.request_timeout, req.send())
                .await
                .map_err(|_| {
                    SendError::Unreachable(RegistryError::Transport {
                        message: limits::timeout_text(self.inner.request_timeout),
                        url: self.shown(index, path),
                    })
                })?
        } else {
            req.timeout(self.inner.request_timeout).send().await
        };
        let mut resp = sent.map_err(|e| {
            let error = self.transport_error(&e, index, path);
            if net::may_have_been_sent(&e) {
                SendError::Lost(error)
            } else {
                SendError::Unreachable(error)
            }
        })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(resp);
        }
        let body = net::read_body(&mut resp, MAX_ERROR_BODY_BYTES, true)
            .await
            .unwrap_or_default();
        if matches!(status, 502..=504) {
            return Err(SendError::Unreachable(error_from_response(status, &body)));
        }
        Err(SendError::Status(status, body))
    }

    /// Reads a unary answer's body (bounded, within the request timeout).
    async fn read_unary(
        &self,
        index: usize,
        path: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, SendError> {
        match net::read_body(&mut resp, MAX_BODY_BYTES, false).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => {
                Err(SendError::Unreachable(RegistryError::Decode(format!(
                    "{} ({})",
                    limits::too_large_text(MAX_BODY_BYTES),
                    self.shown(index, path)
                ))))
            }
            // The member answered 200: the request was processed, the answer is lost.
            Err(BodyError::Transport(e)) => {
                Err(SendError::Lost(self.transport_error(&e, index, path)))
            }
        }
    }

    /// POSTs `body` to `path`, trying each endpoint from the one in use, authenticating
    /// as needed and once more on 401. Returns the endpoint that answered and its answer.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<(usize, reqwest::Response), RegistryError> {
        self.post_tracked(path, body, stream)
            .await
            .map_err(|(e, _)| e)
    }

    /// [`Self::post`]; the error comes with whether the request may have reached a member
    /// (then a write's outcome is unknown).
    async fn post_tracked(
        &self,
        path: &str,
        body: &Value,
        stream: bool,
    ) -> Result<(usize, reqwest::Response), (RegistryError, bool)> {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed) % n;
        let mut last: Option<RegistryError> = None;
        let mut maybe_sent = false;
        for step in 0..n {
            let index = (start + step) % n;
            let mut reauthenticated = false;
            loop {
                let token = match self.token_for(index).await {
                    Ok(t) => t,
                    Err(SendError::Unreachable(e) | SendError::Lost(e)) => {
                        last = Some(e);
                        break;
                    }
                    Err(SendError::Status(status, body)) => {
                        return Err((self.auth_error(status, &body), maybe_sent));
                    }
                };
                match self
                    .send_once(index, path, body, token.as_ref(), stream)
                    .await
                {
                    Ok(resp) => {
                        self.use_endpoint(index);
                        return Ok((index, resp));
                    }
                    Err(SendError::Unreachable(e)) => {
                        tracing::debug!("etcd: {e}");
                        last = Some(e);
                        break;
                    }
                    Err(SendError::Lost(e)) => {
                        tracing::debug!("etcd: {e}");
                        maybe_sent = true;
                        last = Some(e);
                        break;
                    }
                    Err(SendError::Status(status, resp_body)) => {
                        let invalid_token = status == 401
                            || serde_json::from_slice::<ErrorBody>(&resp_body)
                                .is_ok_and(|e| e.code == CODE_UNAUTHENTICATED);
                        if let (true, false, Some(t)) = (invalid_token, reauthenticated, &token) {
                            tracing::debug!("etcd: token refused, authenticating again");
                            self.forget_token(t);
                            reauthenticated = true;
                            continue;
                        }
                        self.use_endpoint(index);
                        return Err((error_from_response(status, &resp_body), maybe_sent));
                    }
                }
            }
        }
        let last = last.unwrap_or_else(|| RegistryError::Invalid("no etcd endpoint".into()));
        let error = match last {
            RegistryError::Transport { message, url } if n > 1 => RegistryError::Transport {
                message: format!("none of the {n} etcd endpoints answers; last: {message}"),
                url,
            },
            other => other,
        };
        Err((error, maybe_sent))
    }

    /// A failed authenticate: the server's text, and a hint naming the user (never the
    /// password).
    fn auth_error(&self, status: u16, body: &[u8]) -> RegistryError {
        let user = self
            .inner
            .credentials
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_default();
        match error_from_response(status, body) {
            RegistryError::Http { status, body, .. } if body.contains("authentication failed") => {
                RegistryError::Http {
                    status,
                    body,
                    hint: Some(format!(
                        "wrong password for etcd user {user:?}? check ETCDCTL_USER / ETCDCTL_PASSWORD / --password-file"
                    )),
                }
            }
            other => other,
        }
    }

    /// A unary call: POST, read, decode.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, RegistryError> {
        self.call_tracked(path, body, what)
            .await
            .map_err(WriteFailure::into_error)
    }

    /// [`Self::call`] for a write: a request that may have reached a member without an
    /// answer is [`WriteFailure::AnswerLost`].
    async fn call_tracked<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, WriteFailure> {
        let (index, resp) = self
            .post_tracked(path, body, false)
            .await
            .map_err(|(e, lost)| {
                if lost {
                    WriteFailure::AnswerLost(e)
                } else {
                    WriteFailure::NotApplied(e)
                }
            })?;
        let bytes = self
            .read_unary(index, path, resp)
            .await
            .map_err(|e| match e {
                SendError::Unreachable(e) => WriteFailure::NotApplied(e),
                SendError::Lost(e) => WriteFailure::AnswerLost(e),
                SendError::Status(s, b) => WriteFailure::NotApplied(error_from_response(s, &b)),
            })?;
        // Answered: a body that does not decode is not a lost answer.
        decode(what, &bytes).map_err(WriteFailure::NotApplied)
    }

    /// The prefixes read and watched: [`PREFIXES`], without the markers' when the user
    /// may not read them.
    fn prefixes(&self) -> &'static [&'static str] {
        if self.inner.drivers_readable.load(Ordering::Relaxed) {
            &PREFIXES
        } else {
            &PREFIXES[..PREFIXES.len() - 1]
        }
    }

    /// Everything under [`Self::prefixes`] at one revision: the keys, that revision and
    /// the prefixes read. A permission denied (403) that only the markers' prefix can
    /// explain drops that prefix (one warning) and reads the others.
    async fn read_all(
        &self,
    ) -> Result<(Vec<KeyValue>, i64, &'static [&'static str]), RegistryError> {
        let prefixes = self.prefixes();
        let txn: TxnResponse = match self
            .call("/v3/kv/txn", &txn_read_prefixes(prefixes), "txn")
            .await
        {
            Err(RegistryError::Http { status: 403, .. }) if prefixes.len() == PREFIXES.len() => {
                tracing::warn!(
                    "etcd: the user may not read {} (permission denied): driver markers are not shown; grant READ on that prefix to see them",
                    layout::DRIVERS_PREFIX
                );
                self.inner.drivers_readable.store(false, Ordering::Relaxed);
                return Box::pin(self.read_all()).await;
            }
            other => other?,
        };
        let kvs = txn
            .responses
            .into_iter()
            .filter_map(|r| r.response_range)
            .flat_map(|r| r.kvs)
            .collect();
        Ok((kvs, txn.header.revision, prefixes))
    }

    /// `/v3/maintenance/status` at one endpoint (no failover): is the member alive and
    /// does it know a leader?
    async fn status_at(&self, index: usize) -> Result<StatusResponse, RegistryError> {
        let path = "/v3/maintenance/status";
        let unwrap = |e: SendError| match e {
            SendError::Unreachable(e) | SendError::Lost(e) => e,
            SendError::Status(s, b) => error_from_response(s, &b),
        };
        let resp = self
            .send_once(index, path, &json!({}), None, false)
            .await
            .map_err(unwrap)?;
        let bytes = self.read_unary(index, path, resp).await.map_err(unwrap)?;
        let status: StatusResponse = decode("status", &bytes)?;
        if status.leader == 0 {
            return Err(RegistryError::Transport {
                message: "this etcd member has no leader".into(),
                url: self.shown(index, path),
            });
        }
        Ok(status)
    }

    fn take_conflicts(&self) -> Conflicts {
        self.inner
            .conflicts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    fn drop_conflicts_up_to(&self, revision: i64) {
        if let Ok(mut c) = self.inner.conflicts.lock() {
            c.retain(|_, (rev, _)| *rev > revision);
        }
    }

    /// A concise transport error with a TLS hint where one helps; the URL last.
    fn transport_error(&self, err: &reqwest::Error, index: usize, path: &str) -> RegistryError {
        let mut message = if err.is_timeout() {
            if err.is_connect() {
                format!(
                    "connect timed out after {}",
                    fmt_duration(self.inner.connect_timeout)
                )
            } else {
                limits::timeout_text(self.inner.request_timeout)
            }
        } else {
            net::describe_transport(err)
        };
        if let Some(hint) = tls_hint(&message) {
            message = format!("{message} — {hint}");
        }
        RegistryError::Transport {
            message,
            url: self.shown(index, path),
        }
    }

    async fn txn(&self, body: &Value) -> Result<TxnResponse, RegistryError> {
        self.call("/v3/kv/txn", body, "txn").await
    }
}

/// What to tell about a TLS failure.
fn tls_hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("unknownissuer")
        || m.contains("unknown issuer")
        || m.contains("invalid peer certificate")
    {
        Some(
            "the server's certificate is not signed by the CA in ETCDCTL_CACERT (or the system's roots)",
        )
    } else if m.contains("certificaterequired")
        || m.contains("bad certificate")
        || m.contains("badcertificate")
    {
        Some("the server wants a client certificate it trusts: set ETCDCTL_CERT and ETCDCTL_KEY")
    } else if m.contains("invalidcontenttype") || m.contains("corrupt message") {
        Some("is this endpoint plain http? use etcd:// instead of etcd+https://")
    } else {
        None
    }
}

impl Registry for EtcdClient {
    /// Ranges the prefixes at revision R, then watches them from R+1 (see [`watch`]).
    fn follow(&self, ctx: FollowContext) -> impl std::future::Future<Output = ()> + Send {
        watch::follow(self.clone(), ctx)
    }

    /// One txn ranging the prefixes at one revision.
    async fn snapshot(&self) -> Result<RegistrySnapshot, RegistryError> {
        let (kvs, _, _) = self.read_all().await?;
        let (snapshot, warnings) = layout::snapshot_from_kvs(&kvs);
        for w in warnings {
            tracing::warn!("etcd: {w}");
        }
        Ok(snapshot)
    }

    /// Txn: if `/mesh/splits/<service>`'s `mod_revision` is still `expected_index`
    /// (0 = the key must not exist), put the split; else read its current value: the
    /// conflict's "theirs" (`None` when the key does not exist), which the next snapshot
    /// of `follow` shows too.
    async fn write_split(
        &self,
        service: &str,
        split: &Split,
        expected_index: u64,
    ) -> Result<WriteOutcome, RegistryError> {
        split
            .validate()
            .map_err(|e| RegistryError::Invalid(format!("split for {service:?} not sent: {e}")))?;
        check_service_name(service).map_err(RegistryError::Invalid)?;
        let key = split_key(service);
        let value = encode_split(service, split).map_err(RegistryError::Invalid)?;
        let txn: TxnResponse = match self
            .call_tracked(
                "/v3/kv/txn",
                &txn_cas_put(&key, &value, expected_index),
                "txn",
            )
            .await
        {
            Ok(txn) => txn,
            Err(failure) => return failure.into_outcome(),
        };
        if txn.succeeded {
            return Ok(WriteOutcome::Applied);
        }
        let current = txn
            .responses
            .into_iter()
            .find_map(|r| r.response_range)
            .and_then(|r| r.kvs.into_iter().next());
        let theirs = current
            .as_ref()
            .and_then(|kv| match layout::parse_split(&kv.value) {
                Ok(split) => Some(SplitConfig {
                    split,
                    modify_index: u64::try_from(kv.mod_revision).unwrap_or(0),
                }),
                Err(e) => {
                    tracing::warn!("etcd: the split stored at {key} is not readable: {e}");
                    None
                }
            });
        if let Ok(mut c) = self.inner.conflicts.lock() {
            c.insert(key.into_bytes(), (txn.header.revision, current));
        }
        Ok(WriteOutcome::Conflict { theirs })
    }

    /// Lease grant, then a txn: create `/spine-dash/drivers/<service>` with the lease if it
    /// does not exist, else range it (theirs; our lease is revoked).
    async fn claim_driver(
        &self,
        marker: &DriverMarker,
        ttl: Duration,
    ) -> Result<DriverClaim, RegistryError> {
        let service = marker.service.as_str();
        check_service_name(service).map_err(RegistryError::Invalid)?;
        let key = driver_key(service);
        let value = serde_json::to_vec(marker)
            .map_err(|e| RegistryError::Invalid(format!("cannot encode the driver marker: {e}")))?;
        let lease = self.grant(ttl).await?;
        let id = lease.id.to_string();
        let txn = self
            .txn(&json!({
                "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(&key), "value": b64(&value), "lease": id}}],
                "failure": [{"request_range": {"key": b64(&key)}}],
            }))
            .await;
        let txn = match txn {
            Ok(t) => t,
            Err(e) => {
                self.revoke_quietly(&id).await;
                return Err(e);
            }
        };
        if txn.succeeded {
            let granted = Duration::from_secs(u64::try_from(lease.ttl).unwrap_or(1).max(1));
            return Ok(DriverClaim::Claimed(DriverLease {
                service: service.to_owned(),
                key,
                lease: id,
                renew_every: renew_interval(granted),
            }));
        }
        self.revoke_quietly(&id).await;
        let Some(kv) = txn
            .responses
            .into_iter()
            .find_map(|r| r.response_range)
            .and_then(|r| r.kvs.into_iter().next())
        else {
            return Err(RegistryError::Decode(format!(
                "the claim of {key} failed but the key was not read back"
            )));
        };
        let (theirs, warning) = marker_from_value(service, &key, &kv.value);
        if let Some(w) = warning {
            tracing::warn!("etcd: {w}");
        }
        Ok(DriverClaim::HeldBy(theirs))
    }

    /// `/v3/lease/keepalive` once: `Ok(false)` when the lease is gone (no `TTL`).
    async fn renew_driver(&self, lease: &DriverLease) -> Result<bool, RegistryError> {
        self.keep_lease_alive(&lease.lease).await
    }

    /// Revokes the lease, which deletes the marker (an unknown lease: already gone).
    async fn release_driver(&self, lease: &DriverLease) -> Result<(), RegistryError> {
        self.revoke(&lease.lease).await
    }
}

impl EtcdClient {
    /// `/v3/lease/grant` for `ttl` (whole seconds, rounded up, at least 1; etcd may grant
    /// more: its minimum).
    async fn grant(&self, ttl: Duration) -> Result<LeaseGrantResponse, RegistryError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let grant: LeaseGrantResponse = self
            .call(
                "/v3/lease/grant",
                &json!({"TTL": secs.max(1)}),
                "lease grant",
            )
            .await?;
        if grant.id == 0 || !grant.error.is_empty() {
            return Err(RegistryError::Decode(format!(
                "lease grant refused: {}",
                grant.error
            )));
        }
        Ok(grant)
    }

    /// `/v3/lease/keepalive` once: `Ok(true)` alive, `Ok(false)` expired or unknown.
    async fn keep_lease_alive(&self, lease: &str) -> Result<bool, RegistryError> {
        let path = "/v3/lease/keepalive";
        let (index, resp) = self.post(path, &json!({"ID": lease}), true).await?;
        let line = watch::first_line(resp, self.inner.request_timeout)
            .await
            .map_err(|message| RegistryError::Transport {
                message,
                url: self.shown(index, path),
            })?;
        let line: StreamLine<LeaseKeepAliveResponse> = decode("lease keepalive", &line)?;
        if let Some(e) = line.error {
            return Err(RegistryError::Http {
                status: e.http_code,
                body: e.message,
                hint: None,
            });
        }
        Ok(line.result.is_some_and(|r| r.ttl > 0))
    }

    /// `/v3/lease/revoke` (404, an unknown lease, is fine: already gone).
    async fn revoke(&self, lease: &str) -> Result<(), RegistryError> {
        match self
            .call::<Value>("/v3/lease/revoke", &json!({"ID": lease}), "lease revoke")
            .await
        {
            Ok(_) | Err(RegistryError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn revoke_quietly(&self, lease: &str) {
        if let Err(e) = self.revoke(lease).await {
            tracing::debug!("etcd: could not revoke an unused lease: {e}");
        }
    }
}

impl ServiceSdk for EtcdClient {
    /// Puts the instance JSON at `/services/<name>/<name>-<version>-<hash of url>`; with a
    /// TTL, under a fresh lease (keep it alive with `keep_alive`).
    async fn register(&self, registration: &Registration) -> Result<Registered, RegistryError> {
        let service = registration.service.as_str();
        check_service_name(service).map_err(RegistryError::Invalid)?;
        let version = registration.version.as_deref().unwrap_or(DEFAULT_VERSION);
        check_service_name(version).map_err(|e| RegistryError::Invalid(format!("version: {e}")))?;
        let id = instance_id_for(service, version, &registration.url);
        let value = encode_registration(service, &id, version, &registration.url)
            .map_err(RegistryError::Invalid)?;
        let key = instance_key(service, &id);
        let mut put = json!({"key": b64(&key), "value": b64(&value)});
        let lease = match registration.ttl {
            Some(ttl) => {
                let grant = self.grant(ttl).await?;
                put["lease"] = Value::from(grant.id.to_string());
                Some(grant.id.to_string())
            }
            None => None,
        };
        let _: Value = self.call("/v3/kv/put", &put, "put").await?;
        Ok(Registered {
            service: service.to_owned(),
            instance_id: id,
            lease,
        })
    }

    /// `/v3/lease/keepalive` once; a lease that is gone (no `TTL` in the answer) is an
    /// error: register again.
    async fn keep_alive(&self, registered: &Registered) -> Result<(), RegistryError> {
        let Some(lease) = &registered.lease else {
            return Ok(());
        };
        if self.keep_lease_alive(lease).await? {
            Ok(())
        } else {
            Err(RegistryError::Http {
                status: 404,
                body: format!("lease {lease} expired or unknown"),
                hint: Some("the registration is gone: register again".into()),
            })
        }
    }

    /// Revokes the lease (which deletes its keys) and deletes the key.
    async fn deregister(&self, registered: &Registered) -> Result<(), RegistryError> {
        if let Some(lease) = &registered.lease {
            // 404: the lease already expired.
            self.revoke(lease).await?;
        }
        let key = instance_key(&registered.service, &registered.instance_id);
        let _: DeleteRangeResponse = self
            .call(
                "/v3/kv/deleterange",
                &json!({"key": b64(&key)}),
                "deleterange",
            )
            .await?;
        Ok(())
    }

    /// Deletes `/services/<name>/…` and `/services/<name>` in one txn.
    async fn deregister_service(&self, service: &str) -> Result<usize, RegistryError> {
        check_service_name(service).map_err(RegistryError::Invalid)?;
        let prefix = format!("{SERVICES_PREFIX}{service}/");
        let txn = self
            .txn(&json!({"success": [
                {"request_delete_range": prefix_range(&prefix)},
                {"request_delete_range": {"key": b64(simple_key(service))}},
            ]}))
            .await?;
        let deleted: i64 = txn
            .responses
            .iter()
            .filter_map(|r| r.response_delete_range.as_ref())
            .map(|d| d.deleted)
            .sum();
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    /// One txn: the service's instances (both forms) and its split.
    async fn candidates(
        &self,
        service: &str,
    ) -> Result<(Vec<Candidate>, Option<Split>), RegistryError> {
        check_service_name(service).map_err(RegistryError::Invalid)?;
        let prefix = format!("{SERVICES_PREFIX}{service}/");
        let txn = self
            .txn(&json!({"success": [
                {"request_range": prefix_range(&prefix)},
                {"request_range": {"key": b64(simple_key(service))}},
                {"request_range": {"key": b64(split_key(service))}},
            ]}))
            .await?;
        let kvs: Vec<KeyValue> = txn
            .responses
            .into_iter()
            .filter_map(|r| r.response_range)
            .flat_map(|r| r.kvs)
            .collect();
        Ok(layout::candidates_from_kvs(service, &kvs))
    }
}

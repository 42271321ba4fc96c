//! The etcd v3 JSON gateway's wire format (API brief §3.2–3.7), as plain data: response
//! types that decode the gateway's quirks (int64 as strings, keys and values base64, zero
//! values and `false` omitted, PUT events without `type`), request bodies, and the error
//! body mapped to a [`RegistryError`] with a hint. No I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::registry::RegistryError;

/// Error bodies are shown truncated to this many characters.
pub const MAX_ERROR_CHARS: usize = 300;

/// Encodes bytes as the gateway expects (standard alphabet, padded).
#[must_use]
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    STANDARD.encode(bytes)
}

/// The `range_end` that makes `prefix` a prefix range: its last byte below `0xff`
/// incremented, the bytes after it dropped (`/services/` → `/services0`). An empty or
/// all-`0xff` prefix gives `"\0"` (every key from `prefix` on).
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A token or password: one type for every secret, see [`crate::net::secrets`].
pub use crate::net::Secret;

/// int64 / uint64 fields come back as strings (and are accepted as numbers); absent = 0.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        I(i64),
        U(u64),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(0),
        Some(Num::I(i)) => Ok(i),
        Some(Num::U(u)) => i64::try_from(u).map_err(serde::de::Error::custom),
        Some(Num::S(s)) => s
            .parse::<i64>()
            .or_else(|_| s.parse::<u64>().map(|u| u as i64))
            .map_err(|_| serde::de::Error::custom(format!("not an integer: {s:?}"))),
    }
}

/// Base64 bytes; absent or `null` = empty.
fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    STANDARD
        .decode(s.as_bytes())
        .map_err(|e| serde::de::Error::custom(format!("bad base64: {e}")))
}

/// `header` of every unary response (and of each watch message).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Header {
    /// Cluster id (a uint64, kept as the gateway's string).
    pub cluster_id: String,
    /// Id of the member that answered.
    pub member_id: String,
    /// Store revision after the operation (absent in a cancel message = 0).
    #[serde(deserialize_with = "de_i64")]
    pub revision: i64,
    /// Raft term.
    #[serde(deserialize_with = "de_i64")]
    pub raft_term: i64,
}

/// One key with its value and revisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    /// The key (decoded).
    #[serde(deserialize_with = "de_b64")]
    pub key: Vec<u8>,
    /// The value (decoded; empty in `keys_only` answers and DELETE events).
    #[serde(deserialize_with = "de_b64")]
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    #[serde(deserialize_with = "de_i64")]
    pub create_revision: i64,
    /// Revision of the last change: the compare-and-set index of a split.
    #[serde(deserialize_with = "de_i64")]
    pub mod_revision: i64,
    /// Number of changes since creation.
    #[serde(deserialize_with = "de_i64")]
    pub version: i64,
    /// Lease attached (0 = none).
    #[serde(deserialize_with = "de_i64")]
    pub lease: i64,
}

/// `POST /v3/kv/range` (also inside a txn's `response_range`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    /// Header.
    pub header: Header,
    /// The keys found (absent when none).
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range (all of them, even with a limit).
    #[serde(deserialize_with = "de_i64")]
    pub count: i64,
    /// More keys than `limit` returned.
    pub more: bool,
}

/// `POST /v3/kv/put` (also a txn's `response_put`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    /// Header.
    pub header: Header,
    /// The previous value, when asked for with `prev_kv`.
    pub prev_kv: Option<KeyValue>,
}

/// `POST /v3/kv/deleterange` (also a txn's `response_delete_range`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeleteRangeResponse {
    /// Header.
    pub header: Header,
    /// How many keys were deleted (absent = 0).
    #[serde(deserialize_with = "de_i64")]
    pub deleted: i64,
    /// The deleted keys, when asked for with `prev_kv`.
    pub prev_kvs: Vec<KeyValue>,
}

/// One result of a txn branch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    /// A range's result.
    pub response_range: Option<RangeResponse>,
    /// A put's result.
    pub response_put: Option<PutResponse>,
    /// A delete's result.
    pub response_delete_range: Option<DeleteRangeResponse>,
}

/// `POST /v3/kv/txn`. A failed compare has **no** `succeeded` field (gotcha 9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    /// Header.
    pub header: Header,
    /// Whether the compare held (the success branch ran).
    pub succeeded: bool,
    /// Results of the branch that ran, in order.
    pub responses: Vec<ResponseOp>,
}

/// PUT or DELETE. PUT events carry no `type` (zero value omitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum EventType {
    /// A key was created or changed.
    #[default]
    #[serde(rename = "PUT")]
    Put,
    /// A key was deleted (its `kv` has only `key` and `mod_revision`).
    #[serde(rename = "DELETE")]
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Event {
    /// PUT or DELETE.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The key after the change.
    pub kv: KeyValue,
    /// The key before, when the watch asked for `prev_kv`.
    pub prev_kv: Option<KeyValue>,
}

/// The `result` of one watch stream line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    /// Header: `revision` is the store revision this message brings the watcher to.
    pub header: Header,
    /// Watch id (0 omitted).
    #[serde(deserialize_with = "de_i64")]
    pub watch_id: i64,
    /// The first message of a stream.
    pub created: bool,
    /// The watch ended (compaction, auth…): the stream stays open, close it.
    pub canceled: bool,
    /// Set when the start revision was compacted: re-range, then watch again.
    #[serde(deserialize_with = "de_i64")]
    pub compact_revision: i64,
    /// Why the server canceled the watch (e.g. `… user name is empty`).
    pub cancel_reason: String,
    /// Changes, in revision order (empty for progress notifications).
    pub events: Vec<Event>,
}

/// An error the gateway writes into a stream (grpc-gateway's stream error shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamError {
    /// gRPC status code.
    pub grpc_code: i32,
    /// The HTTP status it maps to.
    pub http_code: u16,
    /// The message.
    pub message: String,
}

/// One line of a streamed answer (watch, lease keepalive): `{"result":…}` or `{"error":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de> + Default"))]
pub struct StreamLine<T> {
    /// The message.
    #[serde(default)]
    pub result: Option<T>,
    /// A stream-level error.
    #[serde(default)]
    pub error: Option<StreamError>,
}

/// `POST /v3/lease/grant`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseGrantResponse {
    /// Header.
    pub header: Header,
    /// Lease id (exceeds 2^53: never through an f64).
    #[serde(rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    /// Granted TTL in seconds.
    #[serde(rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
    /// Error text, if the server refused.
    pub error: String,
}

/// The `result` of `POST /v3/lease/keepalive`. An unknown or expired lease has no `TTL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseKeepAliveResponse {
    /// Header.
    pub header: Header,
    /// Lease id.
    #[serde(rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    /// Remaining TTL in seconds; 0 = the lease is gone, register again.
    #[serde(rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
}

/// `POST /v3/auth/authenticate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AuthenticateResponse {
    /// Header.
    pub header: Header,
    /// The simple token, sent raw as `Authorization` (no `Bearer`).
    pub token: Secret,
}

/// `POST /v3/maintenance/status` (no token needed): the heartbeat of an idle watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StatusResponse {
    /// Header.
    pub header: Header,
    /// Server version.
    pub version: String,
    /// Member id of the leader this member knows (0 / absent = no leader).
    #[serde(deserialize_with = "de_i64")]
    pub leader: i64,
}

/// The gateway's error body: `{"error","message","code"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// Error text.
    pub error: String,
    /// Same text.
    pub message: String,
    /// gRPC status code.
    pub code: i32,
}

/// gRPC code of an invalid / expired auth token (HTTP 401).
pub const CODE_UNAUTHENTICATED: i32 = 16;

/// Decodes a JSON answer; the error names what was expected.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|e| {
        RegistryError::Decode(format!(
            "{what}: {e}: {}",
            truncate(
                &crate::net::scrub_known(String::from_utf8_lossy(body).trim()),
                120
            )
        ))
    })
}

/// Decodes one line of a watch stream: a watch message, or the gateway's stream error.
pub fn parse_watch_line(line: &[u8]) -> Result<WatchResponse, RegistryError> {
    let parsed: StreamLine<WatchResponse> = decode("watch", line)?;
    if let Some(e) = parsed.error {
        return Err(RegistryError::Http {
            status: e.http_code,
            body: e.message,
            hint: None,
        });
    }
    parsed
        .result
        .ok_or_else(|| RegistryError::Decode("watch line without result".into()))
}

/// Turns an error answer into a [`RegistryError::Http`]: the server's message (or its raw
/// body when it is not the JSON error shape) and a hint where one helps. Secrets the
/// server may echo are cut out ([`crate::net::scrub_known`]).
#[must_use]
pub fn error_from_response(status: u16, body: &[u8]) -> RegistryError {
    let text = crate::net::scrub_known(&String::from_utf8_lossy(body));
    let parsed: Option<ErrorBody> = serde_json::from_str(&text).ok();
    // A streaming call (watch, keepalive) answers `{"error":{"message",…}}` instead.
    let streamed: Option<StreamLine<ErrorBody>> = serde_json::from_str(&text).ok();
    let message = match (&parsed, streamed.and_then(|l| l.error)) {
        (Some(e), _) if !e.message.is_empty() => e.message.clone(),
        (Some(e), _) if !e.error.is_empty() => e.error.clone(),
        (_, Some(e)) if !e.message.is_empty() => e.message,
        _ => text.trim().to_owned(),
    };
    let hint = hint_for(status, &message);
    RegistryError::Http {
        status,
        body: truncate(&message, MAX_ERROR_CHARS),
        hint,
    }
}

/// A hint for the operator for the errors etcd commonly answers.
fn hint_for(status: u16, message: &str) -> Option<String> {
    let hint = if message.contains("authentication failed") {
        "check the user and password (ETCDCTL_USER=user:password, ETCDCTL_PASSWORD or --password-file)"
    } else if message.contains("user name is empty") {
        "auth is enabled on this etcd: set ETCDCTL_USER (user:password, or user plus ETCDCTL_PASSWORD / --password-file)"
    } else if message.contains("invalid auth token") {
        "the token expired or the member restarted: authenticate again"
    } else if message.contains("permission denied") {
        "the user's role needs READ on /services/ and /mesh/splits/ (READWRITE to move weights or register)"
    } else if message.contains("requested lease not found") {
        "the lease expired: register again"
    } else if message.contains("compacted") {
        "the revision was compacted: read everything again"
    } else if status == 404 {
        "not an etcd v3 JSON gateway at this address (etcd 3.4+ serves /v3/…)"
    } else if status == 405 {
        "the etcd gateway takes POST only"
    } else {
        return None;
    };
    Some(hint.to_owned())
}

/// At most `max` characters, with `…` when cut.
#[must_use]
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// `{"key","range_end"}` for a prefix range.
#[must_use]
pub fn prefix_range(prefix: &str) -> Value {
    json!({
        "key": b64(prefix),
        "range_end": b64(prefix_end(prefix.as_bytes())),
    })
}

/// One txn reading several prefixes at one revision: a single request gives a consistent
/// view of all of them, and the revision to watch from.
#[must_use]
pub fn txn_read_prefixes(prefixes: &[&str]) -> Value {
    let ops: Vec<Value> = prefixes
        .iter()
        .map(|p| json!({ "request_range": prefix_range(p) }))
        .collect();
    json!({ "success": ops })
}

/// Compare-and-set of one key (API brief §3.4): put `value` if the key's `mod_revision` is
/// still `expected` (`0`: only if the key does not exist), else read its current value.
#[must_use]
pub fn txn_cas_put(key: &str, value: &[u8], expected: u64) -> Value {
    let compare = if expected == 0 {
        json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
    } else {
        json!({"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string()})
    };
    json!({
        "compare": [compare],
        "success": [{ "request_put": { "key": b64(key), "value": b64(value) } }],
        "failure": [{ "request_range": { "key": b64(key) } }],
    })
}

/// A watch on a prefix from `start_revision`, with progress notifications.
#[must_use]
pub fn watch_create(prefix: &str, start_revision: i64) -> Value {
    json!({
        "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/services/"), b"/services0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn int64_fields_accept_strings_numbers_and_absence() {
        let h: Header = serde_json::from_str(r#"{"revision":"11","raft_term":2}"#).unwrap();
        assert_eq!((h.revision, h.raft_term), (11, 2));
        let h: Header = serde_json::from_str(r#"{"cluster_id":"1"}"#).unwrap();
        assert_eq!(h.revision, 0);
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
        // Lease ids beyond 2^53 survive.
        let l: LeaseGrantResponse =
            serde_json::from_str(r#"{"ID":"2324035658197469470","TTL":"15"}"#).unwrap();
        assert_eq!(l.id, 2_324_035_658_197_469_470);
    }

    #[test]
    fn secrets_never_show() {
        let a: AuthenticateResponse = serde_json::from_str(r#"{"token":"abc.42"}"#).unwrap();
        assert_eq!(a.token.expose(), "abc.42");
        assert!(!format!("{a:?}").contains("abc"));
    }

    #[test]
    fn error_bodies_keep_the_text_and_add_a_hint() {
        let e = error_from_response(
            400,
            br#"{"error":"etcdserver: authentication failed, invalid user ID or password","message":"etcdserver: authentication failed, invalid user ID or password","code":3}"#,
        );
        let text = e.to_string();
        assert!(
            text.starts_with("HTTP 400: etcdserver: authentication failed"),
            "{text}"
        );
        assert!(text.contains("ETCDCTL_USER"), "{text}");
        let e = error_from_response(404, b"Not Found\n");
        assert!(
            e.to_string()
                .contains("HTTP 404: Not Found — not an etcd v3"),
            "{e}"
        );
        let e = error_from_response(500, b"");
        assert_eq!(e.to_string(), "HTTP 500: ");
        let e = error_from_response(
            503,
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        );
        assert_eq!(e.to_string(), "HTTP 503: etcdserver: no leader");
    }

    #[test]
    fn cas_bodies() {
        let v = txn_cas_put("/mesh/splits/identity", b"{}", 10);
        assert_eq!(v["compare"][0]["target"], "MOD");
        assert_eq!(v["compare"][0]["mod_revision"], "10");
        assert_eq!(v["compare"][0]["key"], "L21lc2gvc3BsaXRzL2lkZW50aXR5");
        let v = txn_cas_put("/mesh/splits/photo", b"{}", 0);
        assert_eq!(v["compare"][0]["target"], "CREATE");
        assert_eq!(v["compare"][0]["create_revision"], "0");
        assert!(v["failure"][0]["request_range"].is_object());
    }
}

//! Advisory "who is driving" markers on Consul (both the catalog and the KV mode): the
//! KV key `spine-dash/drivers/<service>` ([`DRIVER_PREFIX`]) holding the
//! [`DriverMarker`]'s JSON, locked by a session of the claiming dashboard.
//!
//! - Claim: `PUT /v1/session/create` with
//!   `{"Name":"spine-dash driver <service>","TTL":"15s","Behavior":"delete","LockDelay":"0s"}`,
//!   then `PUT /v1/kv/spine-dash/drivers/<service>?acquire=<session>` with the marker.
//!   `true`: ours. `false`: someone else's session holds it — `GET` the key, answer
//!   [`DriverClaim::HeldBy`] with their marker, and destroy the session we made.
//! - Renew: `PUT /v1/session/renew/<session>`; 404 = the session is gone (expired or
//!   destroyed, and with it the marker): `Ok(false)`.
//! - Release: `PUT /v1/session/destroy/<session>`; `Behavior: delete` removes the key.
//! - A dashboard that dies stops renewing: Consul ends the session after its TTL (Consul
//!   allows up to twice the TTL) and deletes the marker. `LockDelay: 0s` lets the next
//!   claimant acquire at once instead of Consul's default 15 s.
//! - Consul takes session TTLs from 10 s to 24 h: a TTL outside is clamped into that range
//!   and the lease's `renew_every` follows the TTL actually used.
//! - Followed with a blocking query on `/v1/kv/spine-dash/drivers/?recurse` (404 = none);
//!   a value that is not a marker's JSON is shown as a marker held by `"?"`, with a warning.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::kv::KvPair;
use super::{ConsulClient, decode, error_from_response};
use crate::model::types::{DRIVER_PREFIX, DriverMarker};
use crate::registry::{DriverClaim, DriverLease, RegistryError, marker_from_value, renew_interval};

/// Shortest session TTL Consul accepts.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// Longest session TTL Consul accepts.
pub const MAX_SESSION_TTL: Duration = Duration::from_hours(24);

/// How many times a claim tries to acquire a key that is refused but then not found (its
/// holder let go in between, or Consul's lock-delay of a foreign session still runs).
const ACQUIRE_ATTEMPTS: usize = 3;

/// The marker key of `service`: `spine-dash/drivers/<service>`.
pub fn marker_key(service: &str) -> Result<String, RegistryError> {
    if service.is_empty()
        || service
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(RegistryError::Invalid(format!(
            "no driver marker for the service name {service:?}"
        )));
    }
    Ok(format!("{DRIVER_PREFIX}{service}"))
}

/// The session TTL used for `ttl`: clamped into Consul's 10 s ..= 24 h.
#[must_use]
pub fn session_ttl(ttl: Duration) -> Duration {
    ttl.clamp(MIN_SESSION_TTL, MAX_SESSION_TTL)
}

/// `15s` as Consul reads a TTL.
fn ttl_text(ttl: Duration) -> String {
    if ttl.subsec_millis() == 0 {
        format!("{}s", ttl.as_secs())
    } else {
        format!("{}ms", ttl.as_millis())
    }
}

/// The markers under [`DRIVER_PREFIX`], sorted by service, and a warning per value that is
/// not a marker's JSON (kept as held by `"?"`). Keys deeper than one segment are skipped.
#[must_use]
pub fn markers_from_kv(pairs: &[KvPair]) -> (Vec<DriverMarker>, Vec<String>) {
    let mut markers = Vec::new();
    let mut warnings = Vec::new();
    for pair in pairs {
        let Some(service) = pair
            .key
            .strip_prefix(DRIVER_PREFIX)
            .filter(|s| !s.is_empty() && !s.contains('/'))
        else {
            continue;
        };
        let (marker, warning) = marker_from_value(service, &pair.key, &pair.value);
        markers.push(marker);
        warnings.extend(warning);
    }
    markers.sort_by(|a, b| a.service.cmp(&b.service));
    (markers, warnings)
}

#[derive(Deserialize)]
struct SessionCreatedJson {
    #[serde(default, rename = "ID")]
    id: Option<String>,
}

fn expect_bool(body: &[u8], what: &str) -> Result<bool, RegistryError> {
    serde_json::from_slice::<bool>(body).map_err(|_| {
        RegistryError::Decode(format!(
            "expected `true` or `false` from {what}, got {:?}",
            super::excerpt(body, 80)
        ))
    })
}

/// `PUT /v1/session/destroy/<id>`, best effort (the session would expire anyway).
async fn destroy_quietly(consul: &ConsulClient, id: &str) {
    if let Err(e) = destroy(consul, id).await {
        tracing::debug!("consul: could not destroy an unused session: {e}");
    }
}

async fn destroy(consul: &ConsulClient, id: &str) -> Result<(), RegistryError> {
    let url = consul.endpoint(&["v1", "session", "destroy", id], &[]);
    consul.put_ok(&url, None).await.map(|_| ())
}

/// Claims the marker of `marker.service` (see the module docs).
pub(crate) async fn claim(
    consul: &ConsulClient,
    marker: &DriverMarker,
    ttl: Duration,
) -> Result<DriverClaim, RegistryError> {
    let service = marker.service.as_str();
    let key = marker_key(service)?;
    let ttl = session_ttl(ttl);
    let body = serde_json::json!({
        "Name": format!("spine-dash driver {service}"),
        "TTL": ttl_text(ttl),
        "Behavior": "delete",
        "LockDelay": "0s",
    });
    let url = consul.endpoint(&["v1", "session", "create"], &[]);
    let resp = consul
        .put_ok(&url, Some(body.to_string().into_bytes()))
        .await?;
    let created: SessionCreatedJson = decode("session/create", &resp)?;
    let Some(id) = created.id.filter(|i| !i.is_empty()) else {
        return Err(RegistryError::Decode(
            "session/create: no ID in the answer".into(),
        ));
    };
    let value = serde_json::to_vec(marker)
        .map_err(|e| RegistryError::Invalid(format!("cannot encode the driver marker: {e}")))?;
    for _ in 0..ACQUIRE_ATTEMPTS {
        let url = consul.kv_url(&key, &[("acquire", &id)]);
        let acquired = match consul.put_ok(&url, Some(value.clone())).await {
            Ok(body) => expect_bool(&body, "a KV acquire"),
            Err(e) => Err(e),
        };
        match acquired {
            Ok(true) => {
                return Ok(DriverClaim::Claimed(DriverLease {
                    service: service.to_owned(),
                    key,
                    lease: id,
                    renew_every: renew_interval(ttl),
                }));
            }
            Ok(false) => match consul.kv_get(&key).await {
                Ok(Some(pair)) => {
                    destroy_quietly(consul, &id).await;
                    let (theirs, warning) = marker_from_value(service, &key, &pair.value);
                    if let Some(w) = warning {
                        tracing::warn!("consul: {w}");
                    }
                    return Ok(DriverClaim::HeldBy(theirs));
                }
                // Let go in between (or a lock-delay runs): try again.
                Ok(None) => {}
                Err(e) => {
                    destroy_quietly(consul, &id).await;
                    return Err(e);
                }
            },
            Err(e) => {
                destroy_quietly(consul, &id).await;
                return Err(e);
            }
        }
    }
    destroy_quietly(consul, &id).await;
    Err(RegistryError::Invalid(format!(
        "the driver marker of {service} was refused {ACQUIRE_ATTEMPTS} times without a holder (a lock-delay of its last holder?): try again shortly"
    )))
}

/// Renews the marker's session: `Ok(false)` when Consul no longer knows it (404).
pub(crate) async fn renew(
    consul: &ConsulClient,
    lease: &DriverLease,
) -> Result<bool, RegistryError> {
    let url = consul.endpoint(&["v1", "session", "renew", &lease.lease], &[]);
    let answer = consul.request(Method::PUT, &url, None, None).await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(false);
    }
    if !answer.status.is_success() {
        return Err(error_from_response(answer.status.as_u16(), &answer.body));
    }
    Ok(true)
}

/// Destroys the marker's session (`Behavior: delete` removes the key with it).
pub(crate) async fn release(
    consul: &ConsulClient,
    lease: &DriverLease,
) -> Result<(), RegistryError> {
    destroy(consul, &lease.lease).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value: &str) -> KvPair {
        KvPair {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            modify_index: 7,
            session: Some("s".into()),
        }
    }

    #[test]
    fn markers_are_read_and_a_bad_one_is_kept_as_unknown() {
        let good = r#"{"service":"wrong","user":"ana","host":"ws1","pid":42,"since":"2026-11-28T10:00:00Z","what":"plan 95/5 → 0/100"}"#;
        let (markers, warnings) = markers_from_kv(&[
            pair("spine-dash/drivers/photo", "{not json"),
            pair("spine-dash/drivers/identity", good),
            pair("spine-dash/drivers/a/b", good),
            pair("spine-dash/drivers/", good),
        ]);
        assert_eq!(
            markers,
            vec![
                DriverMarker {
                    service: "identity".into(),
                    user: "ana".into(),
                    host: "ws1".into(),
                    pid: 42,
                    since: "2026-11-28T10:00:00Z".into(),
                    what: "plan 95/5 → 0/100".into(),
                },
                DriverMarker {
                    service: "photo".into(),
                    user: "?".into(),
                    ..DriverMarker::default()
                },
            ]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("spine-dash/drivers/photo"),
            "{warnings:?}"
        );
    }

    #[test]
    fn keys_and_ttls() {
        assert_eq!(
            marker_key("identity").unwrap(),
            "spine-dash/drivers/identity"
        );
        assert!(marker_key("").is_err());
        assert!(marker_key("a/b").is_err());
        assert_eq!(session_ttl(Duration::from_secs(2)), MIN_SESSION_TTL);
        assert_eq!(
            session_ttl(Duration::from_secs(15)),
            Duration::from_secs(15)
        );
        assert_eq!(ttl_text(Duration::from_secs(15)), "15s");
        assert_eq!(ttl_text(Duration::from_millis(10_500)), "10500ms");
    }
}

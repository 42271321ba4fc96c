//! The design's SDK calls ([`ServiceSdk`]) on Consul, in both forms:
//!
//! - **Catalog form** ([`ConsulClient`]): `register` is `PUT /v1/agent/service/register`
//!   (address and port from the URL, the URL itself in `Meta.url`, the version as tag and
//!   `Meta.version`); with a TTL it carries a TTL check (`service:<id>`, starting
//!   `passing`, `DeregisterCriticalServiceAfter` = 10 × TTL but at least 1 m) that
//!   `keep_alive` passes (`PUT /v1/agent/check/pass/<check>`). `deregister` is
//!   `PUT /v1/agent/service/deregister/<id>`; `deregister <name>` removes every agent
//!   service of that name (`GET /v1/agent/services`). Agent endpoints act on the agent
//!   reached, so they carry no `?dc=`. `lookup` reads `/v1/health/service/<name>`
//!   (passing instances are healthy) and the service's splitter.
//! - **KV form** ([`ConsulKvClient`]): the design's key `services/<name>` holding the URL
//!   as hex (with `--version`, `services/<name>/<version>/<host>-<port>`); with a TTL the
//!   key is written with `?acquire=<session>` of a session with that TTL and
//!   `Behavior=delete`, which `keep_alive` renews (`PUT /v1/session/renew/<id>`): when the
//!   registering process dies, Consul deletes the key. Consul accepts session TTLs from
//!   10 s to 24 h (it may take up to twice the TTL to act). `lookup` treats every key as a
//!   healthy instance and reads the split from `mesh/splits/<name>`.

use reqwest::StatusCode;
use serde::Deserialize;

use super::kv::{ConsulKvClient, SERVICES_PREFIX, SPLITS_PREFIX, encode_service_url, key_parts};
use super::{ConsulClient, HealthEntryJson, decode, error_from_response, parse_splitter};
use crate::model::types::{Health, Split};
use crate::registry::RegistryError;
use crate::registry::sdk::{Candidate, Registered, Registration, ServiceSdk};
use std::collections::BTreeMap;
use std::time::Duration;

/// Host and port of an instance URL (the scheme's default port when none is given).
fn host_port(url: &str) -> Result<(String, u16), RegistryError> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| RegistryError::Invalid(format!("not a URL: {e} ({url})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RegistryError::Invalid(format!(
            "the instance URL must be http:// or https:// ({url})"
        )));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| RegistryError::Invalid(format!("the instance URL has no host ({url})")))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| RegistryError::Invalid(format!("the instance URL has no port ({url})")))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// Characters Consul takes in ids and key segments; others become `-`.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn check_name(service: &str) -> Result<(), RegistryError> {
    if service.is_empty() || service.contains('/') || service.chars().any(char::is_whitespace) {
        return Err(RegistryError::Invalid(format!(
            "invalid service name {service:?}"
        )));
    }
    Ok(())
}

/// `15s` as Consul reads a TTL.
fn ttl_text(ttl: Duration) -> String {
    if ttl.subsec_millis() == 0 {
        format!("{}s", ttl.as_secs())
    } else {
        format!("{}ms", ttl.as_millis())
    }
}

fn expect_true(body: &[u8], what: &str) -> Result<bool, RegistryError> {
    serde_json::from_slice::<bool>(body).map_err(|_| {
        RegistryError::Decode(format!(
            "expected `true` or `false` from {what}, got {:?}",
            super::excerpt(body, 80)
        ))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceJson {
    #[serde(default, rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

impl ServiceSdk for ConsulClient {
    async fn register(&self, registration: &Registration) -> Result<Registered, RegistryError> {
        check_name(&registration.service)?;
        let (host, port) = host_port(&registration.url)?;
        let version = registration.version.as_deref().filter(|v| !v.is_empty());
        let id = match version {
            Some(v) => format!(
                "{}-{}-{}-{port}",
                registration.service,
                id_part(v),
                id_part(&host)
            ),
            None => format!("{}-{}-{port}", registration.service, id_part(&host)),
        };
        let mut meta = BTreeMap::from([("url".to_owned(), registration.url.trim().to_owned())]);
        if let Some(v) = version {
            meta.insert("version".into(), v.to_owned());
        }
        let check_id = format!("service:{id}");
        let mut body = serde_json::json!({
            "ID": id,
            "Name": registration.service,
            "Address": host,
            "Port": port,
            "Tags": version.map(|v| vec![v.to_owned()]).unwrap_or_default(),
            "Meta": meta,
        });
        if let Some(ttl) = registration.ttl {
            if ttl.is_zero() {
                return Err(RegistryError::Invalid("the TTL must be more than 0".into()));
            }
            let deregister_after = (ttl * 10).max(Duration::from_mins(1));
            body["Check"] = serde_json::json!({
                "CheckID": check_id,
                "Name": format!("spine-dash TTL {}", ttl_text(ttl)),
                "TTL": ttl_text(ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": ttl_text(deregister_after),
            });
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| RegistryError::Invalid(format!("cannot encode the registration: {e}")))?;
        let url = self.url(&["v1", "agent", "service", "register"]);
        self.put_ok(&url, Some(body)).await?;
        Ok(Registered {
            service: registration.service.clone(),
            instance_id: id,
            lease: registration.ttl.map(|_| check_id),
        })
    }

    async fn keep_alive(&self, registered: &Registered) -> Result<(), RegistryError> {
        let Some(check) = &registered.lease else {
            return Ok(());
        };
        let url = self.url(&["v1", "agent", "check", "pass", check]);
        self.put_ok(&url, None).await.map(|_| ())
    }

    async fn deregister(&self, registered: &Registered) -> Result<(), RegistryError> {
        let url = self.url(&[
            "v1",
            "agent",
            "service",
            "deregister",
            &registered.instance_id,
        ]);
        self.put_ok(&url, None).await.map(|_| ())
    }

    async fn deregister_service(&self, service: &str) -> Result<usize, RegistryError> {
        check_name(service)?;
        let url = self.url(&["v1", "agent", "services"]);
        let answer = self.request(reqwest::Method::GET, &url, None, None).await?;
        if !answer.status.is_success() {
            return Err(error_from_response(answer.status.as_u16(), &answer.body));
        }
        let map: Option<BTreeMap<String, AgentServiceJson>> =
            decode("agent/services", &answer.body)?;
        let ids: Vec<String> = map
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s)| s.service.as_deref() == Some(service))
            .map(|(key, s)| s.id.unwrap_or(key))
            .collect();
        for id in &ids {
            let url = self.url(&["v1", "agent", "service", "deregister", id]);
            self.put_ok(&url, None).await?;
        }
        Ok(ids.len())
    }

    async fn candidates(
        &self,
        service: &str,
    ) -> Result<(Vec<Candidate>, Option<Split>), RegistryError> {
        check_name(service)?;
        let body = self
            .get(&["v1", "health", "service", service], false)
            .await?
            .unwrap_or_default();
        let entries: Option<Vec<HealthEntryJson>> = decode("health/service", &body)?;
        let candidates = entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let svc = entry.service?;
                let health = entry
                    .checks
                    .unwrap_or_default()
                    .iter()
                    .map(|c| Health::from_consul_status(c.status.as_deref().unwrap_or_default()))
                    .max()
                    .unwrap_or(Health::Passing);
                let url = if let Some(url) = svc.meta_str("url") {
                    url.to_owned()
                } else {
                    let host = svc.display_address(entry.node.as_ref());
                    let port = svc.port.unwrap_or(0);
                    if host.contains(':') {
                        format!("http://[{host}]:{port}")
                    } else {
                        format!("http://{host}:{port}")
                    }
                };
                Some(Candidate {
                    version: super::version_of(&svc),
                    url,
                    healthy: health == Health::Passing,
                })
            })
            .collect();
        let split = self
            .get(&["v1", "config", "service-splitter", service], true)
            .await?
            .map(|b| parse_splitter(&b).map(|c| c.split))
            .transpose()?;
        Ok((candidates, split))
    }
}

/// Session TTLs Consul accepts.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
const MAX_SESSION_TTL: Duration = Duration::from_hours(24);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionCreatedJson {
    #[serde(default, rename = "ID")]
    id: Option<String>,
}

impl ConsulKvClient {
    /// Keys under `services/` that belong to `service` (the design's key and its children).
    async fn service_keys(&self, service: &str) -> Result<Vec<super::kv::KvPair>, RegistryError> {
        let prefix = format!("{SERVICES_PREFIX}{service}");
        Ok(self
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|p| key_parts(&p.key).is_some_and(|(s, _, _)| s == service))
            .collect())
    }
}

impl ServiceSdk for ConsulKvClient {
    async fn register(&self, registration: &Registration) -> Result<Registered, RegistryError> {
        check_name(&registration.service)?;
        let (host, port) = host_port(&registration.url)?;
        let key = match registration.version.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!(
                "{SERVICES_PREFIX}{}/{}/{}-{port}",
                registration.service,
                id_part(v),
                id_part(&host)
            ),
            None => format!("{SERVICES_PREFIX}{}", registration.service),
        };
        let value = encode_service_url(registration.url.trim()).into_bytes();
        let session = match registration.ttl {
            None => None,
            Some(ttl) => {
                if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
                    return Err(RegistryError::Invalid(format!(
                        "the KV form keeps a registration alive with a Consul session, whose TTL must be between 10s and 24h (not {})",
                        ttl_text(ttl)
                    )));
                }
                let body = serde_json::json!({
                    "Name": format!("spine-dash register {}", registration.service),
                    "TTL": ttl_text(ttl),
                    "Behavior": "delete",
                    "LockDelay": "0s",
                });
                let url = self.consul().endpoint(&["v1", "session", "create"], &[]);
                let resp = self
                    .consul()
                    .put_ok(&url, Some(body.to_string().into_bytes()))
                    .await?;
                let created: SessionCreatedJson = decode("session/create", &resp)?;
                Some(created.id.filter(|i| !i.is_empty()).ok_or_else(|| {
                    RegistryError::Decode("session/create: no ID in the answer".into())
                })?)
            }
        };
        let url = match &session {
            Some(id) => self.key_url(&key, &[("acquire", id)]),
            None => self.key_url(&key, &[]),
        };
        let resp = self.consul().put_ok(&url, Some(value)).await?;
        if !expect_true(&resp, "a KV write")? {
            if let Some(id) = &session {
                let url = self
                    .consul()
                    .endpoint(&["v1", "session", "destroy", id], &[]);
                let _ = self.consul().put_ok(&url, None).await;
            }
            return Err(RegistryError::Invalid(format!(
                "{key} is held by another live registration (a session); deregister it first"
            )));
        }
        Ok(Registered {
            service: registration.service.clone(),
            instance_id: key,
            lease: session,
        })
    }

    async fn keep_alive(&self, registered: &Registered) -> Result<(), RegistryError> {
        let Some(id) = &registered.lease else {
            return Ok(());
        };
        let url = self.consul().endpoint(&["v1", "session", "renew", id], &[]);
        let answer = self
            .consul()
            .request(reqwest::Method::PUT, &url, None, None)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::Invalid(format!(
                "the registration of {} expired (its session is gone): register again",
                registered.service
            )));
        }
        if !answer.status.is_success() {
            return Err(error_from_response(answer.status.as_u16(), &answer.body));
        }
        Ok(())
    }

    async fn deregister(&self, registered: &Registered) -> Result<(), RegistryError> {
        let url = self.key_url(&registered.instance_id, &[]);
        self.consul().delete_ok(&url).await?;
        if let Some(id) = &registered.lease {
            let url = self
                .consul()
                .endpoint(&["v1", "session", "destroy", id], &[]);
            self.consul().put_ok(&url, None).await?;
        }
        Ok(())
    }

    async fn deregister_service(&self, service: &str) -> Result<usize, RegistryError> {
        check_name(service)?;
        let keys = self.service_keys(service).await?;
        for pair in &keys {
            let url = self.key_url(&pair.key, &[]);
            self.consul().delete_ok(&url).await?;
        }
        Ok(keys.len())
    }

    async fn candidates(
        &self,
        service: &str,
    ) -> Result<(Vec<Candidate>, Option<Split>), RegistryError> {
        check_name(service)?;
        let pairs = self.service_keys(service).await?;
        let candidates = pairs
            .iter()
            .filter_map(|p| {
                let (_, version, _) = key_parts(&p.key)?;
                Some(Candidate {
                    version,
                    url: super::kv::decode_service_url(&p.value).ok()?,
                    healthy: true,
                })
            })
            .collect();
        let key = format!("{SPLITS_PREFIX}{service}");
        let split = self
            .list(&key)
            .await?
            .into_iter()
            .find(|p| p.key == key)
            .map(|p| super::kv::parse_kv_split(&p.value))
            .transpose()?;
        Ok((candidates, split))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("http://127.0.0.1:8001").unwrap(),
            ("127.0.0.1".into(), 8001)
        );
        assert_eq!(
            host_port("https://photo.internal").unwrap(),
            ("photo.internal".into(), 443)
        );
        assert_eq!(host_port("http://[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(host_port("ftp://x").is_err());
        assert!(host_port("nope").is_err());
        assert_eq!(id_part("10.0.0.1"), "10.0.0.1");
        assert_eq!(id_part("::1"), "--1");
        assert_eq!(ttl_text(Duration::from_secs(15)), "15s");
        assert_eq!(ttl_text(Duration::from_millis(1500)), "1500ms");
    }
}

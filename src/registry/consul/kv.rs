//! KV mode, for setups without Connect (`--registry consul+kv://host:8500`): the design's
//! SDK layout in Consul's KV store (API brief §1.7).
//!
//! - `services/<name>` → the instance URL as hex text (the design's `register`), read as
//!   version `default`, instance id `<name>`. The KV form of `spine-dash register --version
//!   v2` writes `services/<name>/<version>/<host>-<port>` (one key per instance), read as
//!   that version; `services/<name>/<id>` is version `default`. A value that is not hex
//!   but a plain `http(s)://` URL is accepted too (the `?raw`-style form some scripts write).
//! - `mesh/splits/<service>` → `{"service":…,"splits":[{"subset":"v1","weight":80},…]}`,
//!   written with `?cas=<ModifyIndex>` (weights as numbers with up to two decimals).
//! - A key present is an instance that is up (with a TTL it lives in a session with
//!   `Behavior=delete`, so a dead instance disappears); there are no health checks and no
//!   sidecar stats addresses in this layout.
//!
//! [`ConsulKvClient`] follows both prefixes, and the driver markers'
//! `spine-dash/drivers/` (see [`super::drivers`]), with blocking queries (`?recurse`,
//! index = the largest `ModifyIndex` under the prefix): three open requests whatever the
//! number of services. There is no notion of protocol here (`ServiceEntry::protocol` is
//! `None`). A lost CAS write returns the stored split with its `ModifyIndex` ("theirs").

use std::collections::BTreeMap;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::blocking::{MeshView, WatchSpec, drivers_watch, follow_with, markers};
use super::{
    ConsulClient, decode, drivers, error_from_response, hundredths_to_json, weight_to_hundredths,
};
use crate::config::consul::ConsulSettings;
use crate::model::types::{
    DEFAULT_VERSION, DRIVER_PREFIX, DriverMarker, Health, Instance, RegistrySnapshot, ServiceEntry,
    Split, SplitConfig, SplitEntry,
};
use crate::registry::{
    DriverClaim, DriverLease, FollowContext, Registry, RegistryError, WriteOutcome,
};

/// Prefix of the instance keys.
pub const SERVICES_PREFIX: &str = "services/";
/// Prefix of the split keys.
pub const SPLITS_PREFIX: &str = "mesh/splits/";

/// A Consul agent used in KV mode. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsulKvClient {
    consul: ConsulClient,
}

impl ConsulKvClient {
    /// KV mode on top of a Consul client (token, TLS, datacenter are the client's).
    #[must_use]
    pub fn new(consul: ConsulClient) -> Self {
        Self { consul }
    }

    /// A KV-mode client for `settings`.
    pub fn from_settings(settings: &ConsulSettings) -> Result<Self, RegistryError> {
        ConsulClient::from_settings(settings).map(Self::new)
    }

    /// The underlying Consul client.
    #[must_use]
    pub fn consul(&self) -> &ConsulClient {
        &self.consul
    }

    /// `GET /v1/kv/<prefix>?recurse` (404: no keys).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<KvPair>, RegistryError> {
        self.consul.kv_list(prefix).await
    }

    /// The URL of a key (`services/identity` → `/v1/kv/services/identity`).
    pub(crate) fn key_url(&self, key: &str, query: &[(&str, &str)]) -> reqwest::Url {
        self.consul.kv_url(key, query)
    }
}

impl ConsulClient {
    /// `GET /v1/kv/<prefix>?recurse` (404: no keys).
    pub(crate) async fn kv_list(&self, prefix: &str) -> Result<Vec<KvPair>, RegistryError> {
        let url = self.kv_url(prefix, &[("recurse", "")]);
        let answer = self.request(Method::GET, &url, None, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !answer.status.is_success() {
            return Err(error_from_response(answer.status.as_u16(), &answer.body));
        }
        parse_kv_list(&answer.body)
    }

    /// `GET /v1/kv/<key>` (exactly that key; `None` when absent).
    pub(crate) async fn kv_get(&self, key: &str) -> Result<Option<KvPair>, RegistryError> {
        let url = self.kv_url(key, &[]);
        let answer = self.request(Method::GET, &url, None, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(error_from_response(answer.status.as_u16(), &answer.body));
        }
        Ok(parse_kv_list(&answer.body)?
            .into_iter()
            .find(|p| p.key == key))
    }

    /// The URL of a key (`services/identity` → `/v1/kv/services/identity`).
    pub(crate) fn kv_url(&self, key: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut segments = vec!["v1", "kv"];
        segments.extend(key.split('/'));
        self.endpoint(&segments, query)
    }
}

/// One KV entry, its value decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// The key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// `ModifyIndex` (for `?cas=`).
    pub modify_index: u64,
    /// The session holding the key, if any.
    pub session: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvJson {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    modify_index: Option<u64>,
    #[serde(default)]
    session: Option<String>,
}

/// Parses a `GET /v1/kv/…` answer (an empty body is no keys).
pub fn parse_kv_list(body: &[u8]) -> Result<Vec<KvPair>, RegistryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let list: Option<Vec<KvJson>> = decode("kv", body)?;
    list.unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.key?, e.value, e.modify_index, e.session)))
        .map(|(key, value, modify_index, session)| {
            let value = match value {
                None => Vec::new(),
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|e| {
                        RegistryError::Decode(format!("kv {key:?}: value is not base64: {e}"))
                    })?,
            };
            Ok(KvPair {
                key,
                value,
                modify_index: modify_index.unwrap_or(0),
                session,
            })
        })
        .collect()
}

/// `"687474…"` → `http://…`: the design's hex-encoded URL (a plain URL is accepted too).
pub fn decode_service_url(value: &[u8]) -> Result<String, RegistryError> {
    let text = std::str::from_utf8(value)
        .map_err(|_| RegistryError::Decode("service URL: not UTF-8".into()))?
        .trim();
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(text.to_owned());
    }
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RegistryError::Decode(format!(
            "service URL: neither hex nor a URL: {:?}",
            super::truncate_chars(text, 60)
        )));
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes)
        .map_err(|_| RegistryError::Decode("service URL: hex is not UTF-8".into()))
}

/// `http://…` → lowercase hex, as the design's SDK stores it.
#[must_use]
pub fn encode_service_url(url: &str) -> String {
    use std::fmt::Write as _;
    url.bytes()
        .fold(String::with_capacity(url.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The service, version and instance id a key under `services/` stands for.
#[must_use]
pub fn key_parts(key: &str) -> Option<(String, String, String)> {
    let rest = key.strip_prefix(SERVICES_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] if !name.is_empty() => Some(((*name).into(), DEFAULT_VERSION.into(), rest.into())),
        [name, id] if !name.is_empty() && !id.is_empty() => {
            Some(((*name).into(), DEFAULT_VERSION.into(), rest.into()))
        }
        [name, version, id] if !name.is_empty() && !version.is_empty() && !id.is_empty() => {
            Some(((*name).into(), (*version).into(), rest.into()))
        }
        _ => None,
    }
}

/// Instances by service from the `services/` keys (keys that fit no form are skipped;
/// a value that cannot be decoded fails the read, with the key in the text).
pub fn instances_from_kv(
    pairs: &[KvPair],
) -> Result<BTreeMap<String, Vec<Instance>>, RegistryError> {
    let mut out: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for pair in pairs {
        let Some((service, version, id)) = key_parts(&pair.key) else {
            continue;
        };
        let url = decode_service_url(&pair.value)
            .map_err(|e| RegistryError::Decode(format!("{e} (key {:?})", pair.key)))?;
        let parsed = reqwest::Url::parse(&url).ok();
        out.entry(service.clone()).or_default().push(Instance {
            id,
            service,
            version,
            address: parsed
                .as_ref()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            port: parsed
                .as_ref()
                .and_then(reqwest::Url::port_or_known_default)
                .unwrap_or(0),
            health: Health::Passing,
            check_output: String::new(),
            metrics_url: None,
        });
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct KvSplitJson {
    #[serde(default)]
    splits: Option<Vec<KvSplitEntryJson>>,
}

#[derive(Deserialize)]
struct KvSplitEntryJson {
    #[serde(default)]
    subset: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
}

/// Parses a `mesh/splits/<service>` value.
pub fn parse_kv_split(value: &[u8]) -> Result<Split, RegistryError> {
    let json: KvSplitJson = decode("mesh/splits", value)?;
    Ok(Split {
        entries: json
            .splits
            .unwrap_or_default()
            .into_iter()
            .map(|e| SplitEntry {
                subset: e.subset.unwrap_or_default(),
                weight: weight_to_hundredths(e.weight.unwrap_or(0.0)),
            })
            .collect(),
    })
}

/// Splits by service from the `mesh/splits/` keys.
pub fn splits_from_kv(pairs: &[KvPair]) -> Result<BTreeMap<String, SplitConfig>, RegistryError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some(service) = pair
            .key
            .strip_prefix(SPLITS_PREFIX)
            .filter(|s| !s.is_empty() && !s.contains('/'))
        else {
            continue;
        };
        let split = parse_kv_split(&pair.value)
            .map_err(|e| RegistryError::Decode(format!("{e} (key {:?})", pair.key)))?;
        out.insert(
            service.to_owned(),
            SplitConfig {
                split,
                modify_index: pair.modify_index,
            },
        );
    }
    Ok(out)
}

/// The `mesh/splits/<service>` value for `split`; fields of `stored` other than
/// `service` and `splits` are kept.
pub fn kv_split_body(
    service: &str,
    split: &Split,
    stored: Option<&serde_json::Value>,
) -> Result<Vec<u8>, RegistryError> {
    use serde_json::Value;
    let mut obj = stored
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    obj.insert("service".into(), Value::from(service));
    obj.insert(
        "splits".into(),
        Value::Array(
            split
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({"subset": e.subset, "weight": Value::Number(hundredths_to_json(e.weight))})
                })
                .collect(),
        ),
    );
    serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| RegistryError::Invalid(format!("cannot encode the split: {e}")))
}

fn assemble(
    instances: BTreeMap<String, Vec<Instance>>,
    splits: &BTreeMap<String, SplitConfig>,
    drivers: Vec<DriverMarker>,
) -> RegistrySnapshot {
    RegistrySnapshot {
        drivers,
        services: instances
            .into_iter()
            .map(|(name, instances)| ServiceEntry {
                protocol: None,
                split: splits.get(&name).cloned(),
                name,
                instances,
                subsets: Vec::new(),
            })
            .collect(),
    }
}

/// The KV layout's view for the follow engine: two prefixes and the driver markers.
#[derive(Debug, Default)]
struct KvView {
    services: Vec<KvPair>,
    splits: Vec<KvPair>,
    drivers: Vec<DriverMarker>,
}

impl MeshView for KvView {
    fn watches(&self) -> Vec<WatchSpec> {
        let spec = |prefix: &str| {
            let mut segments = vec!["v1".to_owned(), "kv".to_owned()];
            segments.extend(prefix.split('/').map(str::to_owned));
            WatchSpec {
                segments,
                query: vec![("recurse".into(), String::new())],
                empty_on_404: true,
            }
        };
        vec![spec(SERVICES_PREFIX), spec(SPLITS_PREFIX), drivers_watch()]
    }

    fn update(
        &mut self,
        watch: usize,
        _index: Option<u64>,
        body: &[u8],
    ) -> Result<(), RegistryError> {
        let pairs = parse_kv_list(body)?;
        match watch {
            0 => self.services = pairs,
            1 => self.splits = pairs,
            _ => self.drivers = markers(&pairs),
        }
        Ok(())
    }

    async fn build(&mut self, _client: &ConsulClient) -> Result<RegistrySnapshot, RegistryError> {
        Ok(assemble(
            instances_from_kv(&self.services)?,
            &splits_from_kv(&self.splits)?,
            self.drivers.clone(),
        ))
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

impl Registry for ConsulKvClient {
    async fn datacenters(&self) -> Result<crate::registry::Datacenters, RegistryError> {
        Registry::datacenters(&self.consul).await
    }

    fn set_datacenter(&self, dc: &str) -> Result<(), RegistryError> {
        Registry::set_datacenter(&self.consul, dc)
    }

    /// Blocking queries on `services/` and `mesh/splits/` (`?recurse`).
    async fn follow(&self, ctx: FollowContext) {
        follow_with(&self.consul, KvView::default(), ctx).await;
    }

    /// `GET /v1/kv/services/?recurse`, `GET /v1/kv/mesh/splits/?recurse` and
    /// `GET /v1/kv/spine-dash/drivers/?recurse`.
    async fn snapshot(&self) -> Result<RegistrySnapshot, RegistryError> {
        let services = self.list(SERVICES_PREFIX).await?;
        let splits = self.list(SPLITS_PREFIX).await?;
        let drivers = self.list(DRIVER_PREFIX).await?;
        Ok(assemble(
            instances_from_kv(&services)?,
            &splits_from_kv(&splits)?,
            markers(&drivers),
        ))
    }

    /// Read-modify-write of `mesh/splits/<service>` with `?cas=<expected_index>`.
    async fn write_split(
        &self,
        service: &str,
        split: &Split,
        expected_index: u64,
    ) -> Result<WriteOutcome, RegistryError> {
        split
            .validate()
            .map_err(|e| RegistryError::Invalid(format!("split for {service:?} not sent: {e}")))?;
        if service.is_empty() || service.contains('/') {
            return Err(RegistryError::Invalid(format!(
                "split not sent: invalid service name {service:?}"
            )));
        }
        let key = format!("{SPLITS_PREFIX}{service}");
        let stored = self.list(&key).await?.into_iter().find(|p| p.key == key);
        let stored_json = match &stored {
            Some(pair) if pair.modify_index != expected_index => {
                return Ok(WriteOutcome::Conflict {
                    theirs: theirs_of(pair),
                });
            }
            // Deleted since it was read: nothing stored.
            None if expected_index != 0 => return Ok(WriteOutcome::Conflict { theirs: None }),
            Some(pair) => serde_json::from_slice::<serde_json::Value>(&pair.value).ok(),
            None => None,
        };
        let body = kv_split_body(service, split, stored_json.as_ref())?;
        let cas = expected_index.to_string();
        let url = self.key_url(&key, &[("cas", &cas)]);
        let answer = match self
            .consul
            .write_request(Method::PUT, &url, Some(body))
            .await
        {
            Ok(answer) => answer,
            Err(failure) => return failure.into_outcome(),
        };
        if !answer.status.is_success() {
            return Err(super::error_from_response(
                answer.status.as_u16(),
                &answer.body,
            ));
        }
        let resp = answer.body;
        match serde_json::from_slice::<bool>(&resp) {
            Ok(true) => Ok(WriteOutcome::Applied),
            // Someone wrote between our read and our write: read theirs back.
            Ok(false) => {
                let theirs = match self.consul.kv_get(&key).await {
                    Ok(pair) => pair.as_ref().and_then(theirs_of),
                    Err(e) => {
                        tracing::warn!(
                            "consul: {key}: could not read the split back after a conflict: {e}"
                        );
                        None
                    }
                };
                Ok(WriteOutcome::Conflict { theirs })
            }
            Err(_) => Err(RegistryError::Decode(format!(
                "expected `true` or `false` from a KV write, got {:?}",
                super::excerpt(&resp, 80)
            ))),
        }
    }

    /// Session + `?acquire=` on `spine-dash/drivers/<service>` (see [`super::drivers`]).
    async fn claim_driver(
        &self,
        marker: &DriverMarker,
        ttl: std::time::Duration,
    ) -> Result<DriverClaim, RegistryError> {
        drivers::claim(&self.consul, marker, ttl).await
    }

    /// `PUT /v1/session/renew/<id>` (404 → `Ok(false)`).
    async fn renew_driver(&self, lease: &DriverLease) -> Result<bool, RegistryError> {
        drivers::renew(&self.consul, lease).await
    }

    /// `PUT /v1/session/destroy/<id>` (the marker goes with it).
    async fn release_driver(&self, lease: &DriverLease) -> Result<(), RegistryError> {
        drivers::release(&self.consul, lease).await
    }
}

/// A stored `mesh/splits/<service>` as "theirs" (`None`, logged, when its value is not a
/// split; the follow loop reports that value as an error).
fn theirs_of(pair: &KvPair) -> Option<SplitConfig> {
    match parse_kv_split(&pair.value) {
        Ok(split) => Some(SplitConfig {
            split,
            modify_index: pair.modify_index,
        }),
        Err(e) => {
            tracing::warn!("consul: {}: {e}", pair.key);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_urls_round_trip() {
        assert_eq!(
            decode_service_url(b"687474703a2f2f31302e302e312e31313a38303830").unwrap(),
            "http://10.0.1.11:8080"
        );
        assert_eq!(
            encode_service_url("http://10.0.1.11:8080"),
            "687474703a2f2f31302e302e312e31313a38303830"
        );
        assert_eq!(decode_service_url(b"http://h:1").unwrap(), "http://h:1");
        assert!(decode_service_url(b"zz").is_err());
        assert!(decode_service_url(b"abc").is_err());
    }

    #[test]
    fn key_forms() {
        assert_eq!(
            key_parts("services/identity"),
            Some(("identity".into(), "default".into(), "identity".into()))
        );
        assert_eq!(
            key_parts("services/identity/v2/127.0.0.1-8003"),
            Some((
                "identity".into(),
                "v2".into(),
                "identity/v2/127.0.0.1-8003".into()
            ))
        );
        assert_eq!(key_parts("services/"), None);
        assert_eq!(key_parts("services/a/b/c/d"), None);
        assert_eq!(key_parts("mesh/splits/identity"), None);
    }
}

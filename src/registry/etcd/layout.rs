//! Our key layout in etcd (API brief §3.8) and its mapping to the model:
//!
//! - `/services/<service>/<instance-id>` → instance JSON
//!   `{"id","service","version","address","port","tags","meta":{"version","metrics_url","url",…}}`,
//!   put with a lease that its owner keeps alive, so a dead instance disappears;
//! - `/services/<service>` → the design's simple form: the instance's URL as plain text;
//! - `/mesh/splits/<service>` → `{"service","splits":[{"subset","weight"}…]}`, weights in
//!   percent with up to two decimals (our hundredths: 80 → 8000, 33.33 → 3333);
//! - `/spine-dash/drivers/<service>` → a [`DriverMarker`]'s JSON, put under the lease of
//!   the dashboard driving that service (a value that is not one is shown as held by
//!   `"?"`, with a warning).
//!
//! A key that is present is alive (its lease, if any, has not expired), so its instance is
//! `passing` unless its JSON says otherwise: `"health"` (or `"status"`) `passing` /
//! `warning` / `critical`, or `meta.draining = "true"` (a warning: no new traffic).
//! Pure functions; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::KeyValue;
use crate::model::types::{
    DEFAULT_VERSION, DRIVER_PREFIX, DriverMarker, Health, Instance, RegistrySnapshot, ServiceEntry,
    Split, SplitConfig, SplitEntry, WeightHundredths,
};
use crate::registry::sdk::Candidate;

/// Prefix of service registrations.
pub const SERVICES_PREFIX: &str = "/services/";
/// Prefix of traffic splits.
pub const SPLITS_PREFIX: &str = "/mesh/splits/";
/// Prefix of the driver markers (`/` + [`DRIVER_PREFIX`]).
pub const DRIVERS_PREFIX: &str = "/spine-dash/drivers/";
/// The prefixes the dashboard reads and watches. The markers' comes last: a user without
/// read permission there still gets the first two (see `EtcdClient`'s follow).
pub const PREFIXES: [&str; 3] = [SERVICES_PREFIX, SPLITS_PREFIX, DRIVERS_PREFIX];

/// What a key means in our layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// `/services/<service>/<id>`.
    Instance {
        /// Service name.
        service: String,
        /// Instance id.
        id: String,
    },
    /// `/services/<service>`: the URL as plain text.
    Simple {
        /// Service name.
        service: String,
    },
    /// `/mesh/splits/<service>`.
    Split {
        /// Service name.
        service: String,
    },
    /// `/spine-dash/drivers/<service>`.
    Driver {
        /// Service name.
        service: String,
    },
    /// Anything else under the prefixes (deeper paths, empty names, non-UTF-8).
    Other,
}

/// Classifies a key.
#[must_use]
pub fn classify(key: &[u8]) -> KeyKind {
    let Ok(key) = std::str::from_utf8(key) else {
        return KeyKind::Other;
    };
    if let Some(rest) = key.strip_prefix(SERVICES_PREFIX) {
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(s), None, None) if !s.is_empty() => KeyKind::Simple {
                service: s.to_owned(),
            },
            (Some(s), Some(id), None) if !s.is_empty() && !id.is_empty() => KeyKind::Instance {
                service: s.to_owned(),
                id: id.to_owned(),
            },
            _ => KeyKind::Other,
        }
    } else if let Some(service) = key.strip_prefix(SPLITS_PREFIX) {
        if service.is_empty() || service.contains('/') {
            KeyKind::Other
        } else {
            KeyKind::Split {
                service: service.to_owned(),
            }
        }
    } else if let Some(service) = key.strip_prefix(DRIVERS_PREFIX) {
        if service.is_empty() || service.contains('/') {
            KeyKind::Other
        } else {
            KeyKind::Driver {
                service: service.to_owned(),
            }
        }
    } else {
        KeyKind::Other
    }
}

/// Key of one instance.
#[must_use]
pub fn instance_key(service: &str, id: &str) -> String {
    format!("{SERVICES_PREFIX}{service}/{id}")
}

/// Key of the simple (URL-only) registration of a service.
#[must_use]
pub fn simple_key(service: &str) -> String {
    format!("{SERVICES_PREFIX}{service}")
}

/// Key of a service's split.
#[must_use]
pub fn split_key(service: &str) -> String {
    format!("{SPLITS_PREFIX}{service}")
}

/// Key of a service's driver marker.
#[must_use]
pub fn driver_key(service: &str) -> String {
    debug_assert!(DRIVERS_PREFIX.ends_with(DRIVER_PREFIX));
    format!("{DRIVERS_PREFIX}{service}")
}

/// A service name we can put into a key: non-empty, no `/`, no whitespace or control
/// characters.
pub fn check_service_name(service: &str) -> Result<(), String> {
    if service.is_empty()
        || service
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "invalid service name {service:?}: use letters, digits, '-', '_' or '.'"
        ))
    } else {
        Ok(())
    }
}

/// The instance JSON as we write it (and read it, leniently).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceDoc {
    /// Instance id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Service name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Version (subset).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Host or IP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port.
    pub port: u16,
    /// Tags (`v1`…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Free-form metadata: `version`, `metrics_url`, `url`, `draining`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, Value>,
    /// Health the owner reports (`passing` / `warning` / `critical`); absent = passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Same as `health` (some writers call it `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The instance's URL, when it is more than `http://address:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl InstanceDoc {
    fn meta_str(&self, name: &str) -> Option<&str> {
        self.meta
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// One instance as read from etcd, with the URL `lookup` hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The model's view.
    pub instance: Instance,
    /// `url`, `meta.url`, else `http://address:port`.
    pub url: String,
}

/// Reads `/services/<service>/<id>`'s value. An unreadable value is kept as a critical
/// instance that says why, so the operator sees it rather than nothing.
#[must_use]
pub fn parse_instance(service: &str, id: &str, value: &[u8]) -> InstanceRecord {
    let doc: InstanceDoc = match serde_json::from_slice(value) {
        Ok(doc) => doc,
        Err(e) => {
            return InstanceRecord {
                instance: Instance {
                    id: id.to_owned(),
                    service: service.to_owned(),
                    version: DEFAULT_VERSION.to_owned(),
                    address: String::new(),
                    port: 0,
                    health: Health::Critical,
                    check_output: format!("unreadable registration (not instance JSON: {e})"),
                    metrics_url: None,
                },
                url: String::new(),
            };
        }
    };
    let version = [doc.version.as_str(), doc.meta_str("version").unwrap_or("")]
        .into_iter()
        .find(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| doc.tags.iter().find(|t| is_version_tag(t)).cloned())
        .unwrap_or_else(|| DEFAULT_VERSION.to_owned());
    let (health, check_output) = doc_health(&doc);
    let url = doc
        .url
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| doc.meta_str("url").map(str::to_owned))
        .unwrap_or_else(|| format!("http://{}:{}", host_for_url(&doc.address), doc.port));
    InstanceRecord {
        instance: Instance {
            id: if doc.id.is_empty() {
                id.to_owned()
            } else {
                doc.id.clone()
            },
            service: service.to_owned(),
            version,
            address: doc.address.clone(),
            port: doc.port,
            health,
            check_output,
            metrics_url: doc.meta_str("metrics_url").map(str::to_owned),
        },
        url,
    }
}

/// `[::1]` for IPv6 literals in URLs.
fn host_for_url(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_owned()
    }
}

fn is_version_tag(tag: &str) -> bool {
    tag.len() > 1 && tag.starts_with('v') && tag[1..].chars().all(|c| c.is_ascii_digit())
}

fn doc_health(doc: &InstanceDoc) -> (Health, String) {
    let stated = doc.health.as_deref().or(doc.status.as_deref());
    if let Some(stated) = stated.filter(|s| !s.is_empty()) {
        let health = Health::from_consul_status(&stated.to_ascii_lowercase());
        if health != Health::Passing {
            return (health, format!("registration says {stated}"));
        }
    }
    if doc.meta_str("draining") == Some("true") {
        return (
            Health::Warning,
            "draining (meta.draining = true): no new traffic".to_owned(),
        );
    }
    (Health::Passing, String::new())
}

/// Reads the simple form `/services/<service>` → URL text. A JSON object there is read as
/// instance JSON instead.
#[must_use]
pub fn parse_simple(service: &str, value: &[u8]) -> InstanceRecord {
    let text = String::from_utf8_lossy(value).trim().to_owned();
    if text.starts_with('{') {
        return parse_instance(service, service, value);
    }
    let (address, port, health, check_output) = match reqwest::Url::parse(&text) {
        Ok(url) if url.host_str().is_some() => (
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default().unwrap_or(0),
            Health::Passing,
            String::new(),
        ),
        _ => (
            String::new(),
            0,
            Health::Critical,
            format!("not a URL: {:?}", super::wire::truncate(&text, 80)),
        ),
    };
    InstanceRecord {
        instance: Instance {
            id: service.to_owned(),
            service: service.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            address,
            port,
            health,
            check_output,
            metrics_url: None,
        },
        url: text,
    }
}

/// The split JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitDoc {
    /// Service name.
    #[serde(default)]
    pub service: String,
    /// Entries.
    #[serde(default)]
    pub splits: Vec<SplitDocEntry>,
}

/// One entry of the split JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitDocEntry {
    /// Subset (version).
    pub subset: String,
    /// Percent, up to two decimals.
    pub weight: serde_json::Number,
}

/// Percent (up to two decimals) → hundredths. More decimals are rounded; negative, above
/// 100 or not finite is refused.
pub fn percent_to_hundredths(percent: f64) -> Result<WeightHundredths, String> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(format!("weight {percent} is not between 0 and 100"));
    }
    Ok((percent * 100.0).round() as WeightHundredths)
}

/// Hundredths → the JSON number we write: `80` or `33.33`.
#[must_use]
pub fn hundredths_to_number(w: WeightHundredths) -> serde_json::Number {
    if w.is_multiple_of(100) {
        serde_json::Number::from(w / 100)
    } else {
        serde_json::Number::from_f64(f64::from(w) / 100.0).unwrap_or_else(|| 0.into())
    }
}

/// Reads `/mesh/splits/<service>`'s value.
pub fn parse_split(value: &[u8]) -> Result<Split, String> {
    let doc: SplitDoc =
        serde_json::from_slice(value).map_err(|e| format!("not split JSON: {e}"))?;
    let entries = doc
        .splits
        .iter()
        .map(|e| {
            let pct = e
                .weight
                .as_f64()
                .ok_or_else(|| format!("weight {} is not a number", e.weight))?;
            Ok(SplitEntry {
                subset: e.subset.clone(),
                weight: percent_to_hundredths(pct)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Split { entries })
}

/// The split JSON we write for `service`.
pub fn encode_split(service: &str, split: &Split) -> Result<Vec<u8>, String> {
    let doc = SplitDoc {
        service: service.to_owned(),
        splits: split
            .entries
            .iter()
            .map(|e| SplitDocEntry {
                subset: e.subset.clone(),
                weight: hundredths_to_number(e.weight),
            })
            .collect(),
    };
    serde_json::to_vec(&doc).map_err(|e| format!("cannot encode the split: {e}"))
}

/// A stable instance id for `register`: `<service>-<version>-<5 hex digits of the URL>`
/// (the fixtures' shape), so registering the same URL again replaces the entry.
#[must_use]
pub fn instance_id_for(service: &str, version: &str, url: &str) -> String {
    // FNV-1a: stable across runs and Rust versions (the std hasher is not promised to be).
    let mut hash: u32 = 0x811c_9dc5;
    for b in url.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{service}-{version}-{:05x}", hash & 0xf_ffff)
}

/// The instance JSON `register` writes for `url` (address and port taken from it; the URL
/// itself kept in `meta.url` for `lookup`).
pub fn encode_registration(
    service: &str,
    id: &str,
    version: &str,
    url: &str,
) -> Result<Vec<u8>, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("not a URL: {url:?} ({e}); e.g. http://127.0.0.1:8001"))?;
    let address = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("no host in {url:?}; e.g. http://127.0.0.1:8001"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let doc = InstanceDoc {
        id: id.to_owned(),
        service: service.to_owned(),
        version: version.to_owned(),
        address,
        port: parsed.port_or_known_default().unwrap_or(0),
        tags: vec![version.to_owned()],
        meta: BTreeMap::from([
            ("version".to_owned(), Value::from(version)),
            ("url".to_owned(), Value::from(url)),
        ]),
        ..InstanceDoc::default()
    };
    serde_json::to_vec(&doc).map_err(|e| format!("cannot encode the registration: {e}"))
}

/// What a set of keys says, service by service.
#[derive(Debug, Default)]
struct Gathered {
    instances: BTreeMap<String, Vec<InstanceRecord>>,
    splits: BTreeMap<String, SplitConfig>,
    drivers: Vec<DriverMarker>,
    warnings: Vec<String>,
}

fn gather<'a>(kvs: impl IntoIterator<Item = &'a KeyValue>) -> Gathered {
    let mut g = Gathered::default();
    for kv in kvs {
        match classify(&kv.key) {
            KeyKind::Instance { service, id } => {
                let rec = parse_instance(&service, &id, &kv.value);
                g.instances.entry(service).or_default().push(rec);
            }
            KeyKind::Simple { service } => {
                let rec = parse_simple(&service, &kv.value);
                g.instances.entry(service).or_default().push(rec);
            }
            KeyKind::Split { service } => match parse_split(&kv.value) {
                Ok(split) => {
                    g.splits.insert(
                        service,
                        SplitConfig {
                            split,
                            modify_index: u64::try_from(kv.mod_revision).unwrap_or(0),
                        },
                    );
                }
                Err(e) => g.warnings.push(format!(
                    "split of {service} ignored: {e} ({})",
                    split_key(&service)
                )),
            },
            KeyKind::Driver { service } => {
                let key = driver_key(&service);
                let (marker, warning) =
                    crate::registry::marker_from_value(&service, &key, &kv.value);
                g.drivers.push(marker);
                g.warnings.extend(warning);
            }
            KeyKind::Other => {}
        }
    }
    g.drivers.sort_by(|a, b| a.service.cmp(&b.service));
    g
}

/// Builds the snapshot from the keys under [`PREFIXES`] (any order). Services with
/// instances or a split are listed, sorted; instances sorted by id; a service's subsets
/// are the versions its split names (etcd has no resolver). Also returns a warning per
/// value that could not be read (a bad split is left out; a bad instance is kept as
/// critical).
#[must_use]
pub fn snapshot_from_kvs<'a>(
    kvs: impl IntoIterator<Item = &'a KeyValue>,
) -> (RegistrySnapshot, Vec<String>) {
    let mut g = gather(kvs);
    let mut names: Vec<String> = g.instances.keys().chain(g.splits.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let services = names
        .into_iter()
        .map(|name| {
            let mut instances: Vec<Instance> = g
                .instances
                .remove(&name)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.instance)
                .collect();
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            let split = g.splits.remove(&name);
            let mut subsets: Vec<String> = split
                .iter()
                .flat_map(|s| s.split.entries.iter().map(|e| e.subset.clone()))
                .collect();
            subsets.sort();
            subsets.dedup();
            ServiceEntry {
                protocol: None,
                name,
                instances,
                subsets,
                split,
            }
        })
        .collect();
    (
        RegistrySnapshot {
            drivers: g.drivers,
            services,
        },
        g.warnings,
    )
}

/// `lookup`'s view of one service from its keys: every instance with its URL, version and
/// health (only `passing` may take traffic), and its split.
#[must_use]
pub fn candidates_from_kvs<'a>(
    service: &str,
    kvs: impl IntoIterator<Item = &'a KeyValue>,
) -> (Vec<Candidate>, Option<Split>) {
    let mut g = gather(kvs);
    let mut records = g.instances.remove(service).unwrap_or_default();
    records.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    let candidates = records
        .into_iter()
        .map(|r| Candidate {
            healthy: r.instance.health == Health::Passing && !r.url.is_empty(),
            version: r.instance.version,
            url: r.url,
        })
        .collect();
    (candidates, g.splits.remove(service).map(|s| s.split))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified() {
        assert_eq!(
            classify(b"/services/identity/identity-v1-7f9c4"),
            KeyKind::Instance {
                service: "identity".into(),
                id: "identity-v1-7f9c4".into()
            }
        );
        assert_eq!(
            classify(b"/services/photo"),
            KeyKind::Simple {
                service: "photo".into()
            }
        );
        assert_eq!(
            classify(b"/mesh/splits/identity"),
            KeyKind::Split {
                service: "identity".into()
            }
        );
        assert_eq!(
            classify(b"/spine-dash/drivers/identity"),
            KeyKind::Driver {
                service: "identity".into()
            }
        );
        for other in [
            &b"/services/"[..],
            b"/services/a/b/c",
            b"/services//x",
            b"/mesh/splits/",
            b"/mesh/splits/a/b",
            b"/spine-dash/drivers/",
            b"/spine-dash/drivers/a/b",
            b"/other",
            b"/services/\xff",
        ] {
            assert_eq!(classify(other), KeyKind::Other, "{other:?}");
        }
    }

    #[test]
    fn driver_markers_are_read_and_a_bad_one_is_held_by_unknown() {
        let kv = |key: &str, value: &str| KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..KeyValue::default()
        };
        let kvs = [
            kv("/spine-dash/drivers/photo", "garbage"),
            kv(
                "/spine-dash/drivers/identity",
                r#"{"service":"identity","user":"ana","host":"ws1","pid":7,"since":"2026-11-28T10:00:00Z","what":"plan"}"#,
            ),
        ];
        let (snap, warnings) = snapshot_from_kvs(&kvs);
        assert!(snap.services.is_empty(), "markers are not services");
        assert_eq!(
            snap.drivers,
            vec![
                DriverMarker {
                    service: "identity".into(),
                    user: "ana".into(),
                    host: "ws1".into(),
                    pid: 7,
                    since: "2026-11-28T10:00:00Z".into(),
                    what: "plan".into(),
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
            warnings[0].contains("/spine-dash/drivers/photo"),
            "{warnings:?}"
        );
    }

    #[test]
    fn weights_round_trip_in_hundredths() {
        assert_eq!(percent_to_hundredths(80.0), Ok(8000));
        assert_eq!(percent_to_hundredths(33.33), Ok(3333));
        assert_eq!(percent_to_hundredths(0.015), Ok(2));
        assert!(percent_to_hundredths(-1.0).is_err());
        assert!(percent_to_hundredths(100.5).is_err());
        let split = Split::from_pairs([("v1", 3333), ("v2", 6667)]);
        let bytes = encode_split("identity", &split).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"service":"identity","splits":[{"subset":"v1","weight":33.33},{"subset":"v2","weight":66.67}]}"#
        );
        assert_eq!(parse_split(&bytes), Ok(split));
        let whole = encode_split("x", &Split::from_pairs([("v1", 10000)])).unwrap();
        assert!(
            String::from_utf8(whole)
                .unwrap()
                .contains(r#""weight":100}"#)
        );
        assert!(parse_split(b"[1]").is_err());
        assert!(parse_split(br#"{"splits":[{"subset":"v1","weight":"80"}]}"#).is_err());
    }

    #[test]
    fn instance_health_and_url() {
        let rec = parse_instance(
            "photo",
            "k",
            br#"{"address":"10.0.0.1","port":8080,"tags":["x","v3"],"meta":{"draining":"true","metrics_url":"http://m/stats/prometheus"}}"#,
        );
        assert_eq!(rec.instance.id, "k");
        assert_eq!(rec.instance.version, "v3");
        assert_eq!(rec.instance.health, Health::Warning);
        assert_eq!(
            rec.instance.metrics_url.as_deref(),
            Some("http://m/stats/prometheus")
        );
        assert_eq!(rec.url, "http://10.0.0.1:8080");
        let rec = parse_instance("photo", "k", br#"{"health":"critical","address":"::1"}"#);
        assert_eq!(rec.instance.health, Health::Critical);
        assert_eq!(rec.instance.check_output, "registration says critical");
        assert_eq!(rec.url, "http://[::1]:0");
        let rec = parse_instance("photo", "k", b"http://x:1");
        assert_eq!(rec.instance.health, Health::Critical);
        assert!(
            rec.instance
                .check_output
                .starts_with("unreadable registration")
        );
    }

    #[test]
    fn simple_form_is_a_url() {
        let rec = parse_simple("identity", b"http://localhost:8001\n");
        assert_eq!(rec.url, "http://localhost:8001");
        assert_eq!(
            (rec.instance.address.as_str(), rec.instance.port),
            ("localhost", 8001)
        );
        assert_eq!(rec.instance.health, Health::Passing);
        assert_eq!(
            parse_simple("x", b"nonsense").instance.health,
            Health::Critical
        );
    }

    #[test]
    fn registration_round_trip() {
        let id = instance_id_for("identity", "v2", "http://127.0.0.1:8003");
        assert!(id.starts_with("identity-v2-") && id.len() == "identity-v2-".len() + 5);
        assert_eq!(
            id,
            instance_id_for("identity", "v2", "http://127.0.0.1:8003")
        );
        let bytes =
            encode_registration("identity", &id, "v2", "http://127.0.0.1:8003/api").unwrap();
        let rec = parse_instance("identity", &id, &bytes);
        assert_eq!(rec.url, "http://127.0.0.1:8003/api");
        assert_eq!(rec.instance.version, "v2");
        assert_eq!(rec.instance.port, 8003);
        assert_eq!(rec.instance.health, Health::Passing);
        assert!(encode_registration("x", "i", "v1", "not a url").is_err());
        assert!(check_service_name("a/b").is_err());
        assert!(check_service_name("").is_err());
        assert!(check_service_name("identity").is_ok());
    }
}

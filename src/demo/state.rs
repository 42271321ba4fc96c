//! The demo registry's state: instances with their health checks, config entries
//! (`service-defaults`, `service-resolver`, `service-splitter`) with Consul's validation and
//! compare-and-set rules, and a raft-like index bumped on every change. Pure data: the HTTP
//! layer (`consul_api`) renders it, the sidecars read routes and members from it (the
//! demo's stand-in for Envoy's xDS). No I/O here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::filter::{Field, Filter};
use crate::model::types::Health;

mod agent;
mod kv;

pub(crate) use agent::AgentService;
pub(crate) use kv::{KvPut, KvStore};

/// Name of the demo's single Consul node.
pub(crate) const NODE_NAME: &str = "spine-demo";
const NODE_ID: &str = "5d3e7a10-0c4b-4f2e-9a61-7c2b8e4d9f01";
/// Every demo server listens here.
pub(crate) const LOOPBACK: &str = "127.0.0.1";
/// Suffix of the sidecar registrations.
pub(crate) const PROXY_SUFFIX: &str = "-sidecar-proxy";
/// Protocols that allow splitting (L7).
const L7_PROTOCOLS: [&str; 3] = ["http", "http2", "grpc"];

/// An error answer of the registry API: status and text/plain body, as Consul sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub message: String,
}

impl ApiError {
    /// 400 `Request decoding failed: …`.
    fn decoding(msg: impl std::fmt::Display) -> Self {
        Self {
            status: 400,
            message: format!("Request decoding failed: {msg}"),
        }
    }

    /// 500 with Consul's validation text.
    fn invalid(msg: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: msg.into(),
        }
    }

    /// 404 `Config entry not found for "<kind>" / "<name>"`.
    fn not_found(kind: &str, name: &str) -> Self {
        Self {
            status: 404,
            message: format!("Config entry not found for {kind:?} / {name:?}"),
        }
    }
}

/// Config entry kinds the demo registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `service-defaults` (seeded with `Protocol: http`; only `Protocol` is kept).
    Defaults,
    /// `service-resolver`.
    Resolver,
    /// `service-splitter`.
    Splitter,
}

impl Kind {
    /// Parses a kind name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "service-defaults" => Some(Self::Defaults),
            "service-resolver" => Some(Self::Resolver),
            "service-splitter" => Some(Self::Splitter),
            _ => None,
        }
    }
}

/// A registered instance as the demo spine sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceSpec {
    /// Service ID, e.g. `identity-v2-1`.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Version (`Meta.version` and the only tag).
    pub version: String,
    /// Port of the app.
    pub port: u16,
    /// Port of its sidecar (Envoy admin / stats, outbound proxy).
    pub sidecar_port: u16,
    /// Path prefix of its sidecar's admin endpoints on that port: empty for a sidecar of
    /// its own, `/s/<id>` for the synthetic spine's shared listener.
    pub sidecar_path: String,
}

impl InstanceSpec {
    /// The sidecar's stats URL (`Meta.metrics_url`).
    pub(crate) fn metrics_url(&self) -> String {
        format!(
            "http://{LOOPBACK}:{}{}/stats/prometheus",
            self.sidecar_port, self.sidecar_path
        )
    }
}

#[derive(Debug, Clone)]
struct InstanceRecord {
    spec: InstanceSpec,
    create_index: u64,
    status: Health,
    output: String,
    check_modify_index: u64,
}

/// A stored entry with its raft indexes.
#[derive(Debug, Clone)]
struct Stored<T> {
    entry: T,
    create_index: u64,
    modify_index: u64,
}

/// One split of a `service-splitter`; `weight` in hundredths of a percent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitDef {
    /// Weight, 0..=10000.
    pub weight: u32,
    /// Target service, empty = the entry's name.
    pub service: String,
    /// Target subset, empty = the whole service.
    pub subset: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Splitter {
    name: String,
    splits: Vec<SplitDef>,
}

#[derive(Debug, Clone)]
struct Subset {
    filter: String,
    parsed: Option<Filter>,
    only_passing: bool,
}

#[derive(Debug, Clone)]
struct Resolver {
    name: String,
    default_subset: String,
    subsets: BTreeMap<String, Subset>,
    connect_timeout: String,
}

#[derive(Debug, Clone)]
enum Entry {
    /// `service-defaults`: the service name and its (lowercased) protocol.
    Defaults(String, String),
    Resolver(Resolver),
    Splitter(Splitter),
}

/// An Envoy cluster: a service, or one subset of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClusterKey {
    /// Destination service.
    pub service: String,
    /// Subset, empty when the cluster is the whole service.
    pub subset: String,
}

/// One weighted destination of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The cluster.
    pub key: ClusterKey,
    /// Weight in hundredths of a percent.
    pub weight: u32,
}

/// One host of a cluster, as Envoy's EDS would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Instance id.
    pub id: String,
    /// App port.
    pub port: u16,
    /// Health allows traffic: not critical (and passing when the subset says `OnlyPassing`).
    pub healthy: bool,
}

/// The whole registry.
///
/// Besides the raft-like `index`, each answer has its own index that moves only when its
/// data changes (what blocking queries wait on): the catalog (registrations), the checks,
/// each service, each config entry kind, the KV store. Every change is announced on a
/// watch channel ([`RegistryState::subscribe`]) so blocked readers wake up.
#[derive(Debug)]
pub(crate) struct RegistryState {
    index: u64,
    catalog_index: u64,
    checks_index: u64,
    service_index: BTreeMap<String, u64>,
    config_index: BTreeMap<&'static str, u64>,
    changes: tokio::sync::watch::Sender<u64>,
    agent: BTreeMap<String, AgentService>,
    kv: KvStore,
    datacenter: String,
    node_index: u64,
    check_interval: String,
    check_timeout: String,
    instances: BTreeMap<String, InstanceRecord>,
    defaults: BTreeMap<String, Stored<String>>,
    resolvers: BTreeMap<String, Stored<Resolver>>,
    splitters: BTreeMap<String, Stored<Splitter>>,
}

impl RegistryState {
    /// Registers the node and `instances` (checks start `critical` until the first run,
    /// as in Consul).
    pub(crate) fn new(
        datacenter: &str,
        instances: Vec<InstanceSpec>,
        check_interval: Duration,
        check_timeout: Duration,
    ) -> Self {
        let mut st = Self {
            index: 1,
            catalog_index: 1,
            checks_index: 1,
            service_index: BTreeMap::new(),
            config_index: BTreeMap::new(),
            changes: tokio::sync::watch::Sender::new(1),
            agent: BTreeMap::new(),
            kv: KvStore::default(),
            datacenter: datacenter.to_owned(),
            node_index: 1,
            check_interval: go_duration(check_interval),
            check_timeout: go_duration(check_timeout),
            instances: BTreeMap::new(),
            defaults: BTreeMap::new(),
            resolvers: BTreeMap::new(),
            splitters: BTreeMap::new(),
        };
        for spec in instances {
            st.index += 1;
            st.catalog_index = st.index;
            st.checks_index = st.index;
            st.service_index.insert(spec.service.clone(), st.index);
            let rec = InstanceRecord {
                create_index: st.index,
                status: Health::Critical,
                output: String::new(),
                check_modify_index: st.index,
                spec,
            };
            st.instances.insert(rec.spec.id.clone(), rec);
        }
        st
    }

    /// The current raft-like index.
    #[cfg(test)]
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// Index of `/v1/catalog/services`: moves on registrations only.
    pub(crate) fn catalog_index(&self) -> u64 {
        self.catalog_index
    }

    /// Index of `/v1/health/state/*`: moves when any check changes.
    pub(crate) fn checks_index(&self) -> u64 {
        self.checks_index
    }

    /// Index of `/v1/health/service/<name>`: moves when that service changes (1 for a
    /// service never seen, as Consul answers).
    pub(crate) fn service_index(&self, name: &str) -> u64 {
        self.service_index.get(name).copied().unwrap_or(1)
    }

    /// Index of `/v1/config/<kind>[/<name>]`: moves when an entry of that kind changes.
    pub(crate) fn config_index(&self, kind: &str) -> u64 {
        self.config_index
            .iter()
            .find(|(k, _)| **k == kind)
            .map_or(1, |(_, v)| *v)
    }

    /// The datacenter this registry answers for.
    pub(crate) fn datacenter(&self) -> &str {
        &self.datacenter
    }

    /// A receiver that sees every change (blocking queries wait on it).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Announces a change to blocked readers.
    fn announce(&self) {
        self.changes.send_replace(self.index);
    }

    /// Records that `service`'s instances or checks changed at the current index.
    fn touch_service(&mut self, service: &str, registration: bool) {
        self.service_index.insert(service.to_owned(), self.index);
        self.checks_index = self.index;
        if registration {
            self.catalog_index = self.index;
        }
        self.announce();
    }

    /// Records that config entries of `kind` changed at the current index.
    fn touch_config(&mut self, kind: Kind) {
        let name = match kind {
            Kind::Defaults => "service-defaults",
            Kind::Resolver => "service-resolver",
            Kind::Splitter => "service-splitter",
        };
        self.config_index.insert(name, self.index);
        self.announce();
    }

    /// Stores `service-defaults` for `service` (seeding only; the API does not write them).
    pub(crate) fn seed_service_defaults(&mut self, service: &str, protocol: &str) {
        self.index += 1;
        self.defaults.insert(
            service.to_owned(),
            Stored {
                entry: protocol.to_owned(),
                create_index: self.index,
                modify_index: self.index,
            },
        );
        self.touch_config(Kind::Defaults);
    }

    /// Records a health check result; bumps the index when status or output changed.
    pub(crate) fn set_check(&mut self, id: &str, status: Health, output: String) -> bool {
        let Some(rec) = self.instances.get_mut(id) else {
            return false;
        };
        if rec.status == status && rec.output == output {
            return false;
        }
        self.index += 1;
        rec.status = status;
        rec.output = output;
        rec.check_modify_index = self.index;
        let service = rec.spec.service.clone();
        self.touch_service(&service, false);
        true
    }

    // ---------------------------------------------------------------- catalog / health

    /// `GET /v1/catalog/services`: name → sorted tags, sidecar registrations included.
    pub(crate) fn catalog_services(
        &self,
        filter: Option<&Filter>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for rec in self.instances.values() {
            for proxy in [false, true] {
                if filter.is_some_and(|f| !f.matches(|sel| catalog_field(&rec.spec, proxy, sel))) {
                    continue;
                }
                let name = if proxy {
                    format!("{}{PROXY_SUFFIX}", rec.spec.service)
                } else {
                    rec.spec.service.clone()
                };
                out.entry(name)
                    .or_default()
                    .insert(rec.spec.version.clone());
            }
        }
        self.agent_catalog(filter, &mut out);
        out
    }

    /// `GET /v1/health/service/:name` (a `…-sidecar-proxy` name lists the sidecars):
    /// entries sorted by `Service.ID`, serialized.
    pub(crate) fn health_service_json(
        &self,
        name: &str,
        passing_only: bool,
        filter: Option<&Filter>,
    ) -> Result<Vec<u8>, ApiError> {
        let (service, proxy) = match name.strip_suffix(PROXY_SUFFIX) {
            Some(s) => (s, true),
            None => (name, false),
        };
        let mut entries: Vec<Value> = self
            .instances
            .values()
            .filter(|r| r.spec.service == service)
            .filter(|r| !passing_only || r.status == Health::Passing)
            .filter(|r| filter.is_none_or(|f| f.matches(|sel| health_field(self, r, proxy, sel))))
            .map(|r| serde_json::to_value(self.health_entry(r, proxy)))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if !proxy {
            entries.extend(self.agent_health_entries(name, passing_only, filter));
        }
        serde_json::to_vec(&entries).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `GET /v1/health/state/<state>` (`any`, `passing`, `warning`, `critical`): every
    /// check of the node, the instances, their sidecars and the agent's services.
    pub(crate) fn health_state_json(&self, state: &str) -> Result<Vec<u8>, ApiError> {
        let wanted = match state {
            "any" => None,
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            other => {
                return Err(ApiError {
                    status: 400,
                    message: format!("Invalid state: {other}"),
                });
            }
        };
        let mut checks: Vec<Value> = Vec::new();
        let mut node_check_done = false;
        for rec in self.instances.values() {
            for proxy in [false, true] {
                let entry = self.health_entry(rec, proxy);
                for (i, check) in entry.checks.iter().enumerate() {
                    if i == 0 {
                        if node_check_done {
                            continue;
                        }
                        node_check_done = true;
                    }
                    checks.push(
                        serde_json::to_value(check)
                            .map_err(|e| ApiError::invalid(e.to_string()))?,
                    );
                }
            }
        }
        checks.extend(self.agent_checks());
        if let Some(wanted) = wanted {
            checks.retain(|c| {
                Health::from_consul_status(c["Status"].as_str().unwrap_or_default()) == wanted
                    && c["Status"] != "maintenance"
            });
        }
        serde_json::to_vec(&checks).map_err(|e| ApiError::invalid(e.to_string()))
    }

    fn health_entry<'a>(&'a self, rec: &'a InstanceRecord, proxy: bool) -> HealthEntry<'a> {
        let spec = &rec.spec;
        let node = NodeJson {
            id: NODE_ID,
            node: NODE_NAME,
            address: LOOPBACK,
            datacenter: &self.datacenter,
            tagged_addresses: TaggedAddresses {
                lan: LOOPBACK,
                lan_ipv4: LOOPBACK,
                wan: LOOPBACK,
                wan_ipv4: LOOPBACK,
            },
            meta: BTreeMap::from([("consul-network-segment", ""), ("spine-demo", "true")]),
            create_index: self.node_index,
            modify_index: self.node_index,
        };
        let node_check = CheckJson {
            node: NODE_NAME,
            check_id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            status: "passing",
            notes: "",
            output: "Agent alive and reachable".into(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: vec![],
            check_type: "",
            interval: String::new(),
            timeout: String::new(),
            exposed_port: 0,
            definition: Empty {},
            create_index: self.node_index,
            modify_index: self.node_index,
        };
        let meta = BTreeMap::from([
            ("metrics_url", spec.metrics_url()),
            ("version", spec.version.clone()),
        ]);
        let tags = vec![spec.version.as_str()];
        if proxy {
            let proxy_id = format!("{}{PROXY_SUFFIX}", spec.id);
            let proxy_name = format!("{}{PROXY_SUFFIX}", spec.service);
            let check =
                |n: u32, name: String, status, output: String, kind, interval: &str| CheckJson {
                    node: NODE_NAME,
                    check_id: format!("service:{proxy_id}:{n}"),
                    name,
                    status,
                    notes: "",
                    output,
                    service_id: proxy_id.clone(),
                    service_name: proxy_name.clone(),
                    service_tags: tags.clone(),
                    check_type: kind,
                    interval: interval.to_owned(),
                    timeout: String::new(),
                    exposed_port: 0,
                    definition: Empty {},
                    create_index: rec.create_index,
                    modify_index: if n == 2 {
                        rec.check_modify_index
                    } else {
                        rec.create_index
                    },
                };
            let alias_output = if rec.status == Health::Passing {
                "All checks passing.".to_owned()
            } else {
                format!(
                    "Aliased service {:?} has {} checks",
                    spec.id,
                    rec.status.as_str()
                )
            };
            let checks = vec![
                node_check,
                check(
                    1,
                    "Connect Sidecar Listening".into(),
                    "passing",
                    format!("TCP connect {LOOPBACK}:{}: Success", spec.sidecar_port),
                    "tcp",
                    &self.check_interval,
                ),
                check(
                    2,
                    format!("Connect Sidecar Aliasing {}", spec.id),
                    rec.status.as_str(),
                    alias_output,
                    "alias",
                    "",
                ),
            ];
            HealthEntry {
                node,
                service: ServiceJson {
                    kind: "connect-proxy",
                    id: proxy_id.clone(),
                    service: proxy_name.clone(),
                    tags: tags.clone(),
                    address: LOOPBACK,
                    meta,
                    port: spec.sidecar_port,
                    weights: Weights::default(),
                    enable_tag_override: false,
                    proxy: ProxyJson {
                        destination_service_name: &spec.service,
                        destination_service_id: &spec.id,
                        local_service_address: LOOPBACK,
                        local_service_port: spec.port,
                        mode: "",
                        mesh_gateway: Empty {},
                        expose: Empty {},
                    },
                    connect: Empty {},
                    create_index: rec.create_index,
                    modify_index: rec.create_index,
                },
                checks,
            }
        } else {
            let service_check = CheckJson {
                node: NODE_NAME,
                check_id: format!("service:{}", spec.id),
                name: format!("Service '{}' check", spec.service),
                status: rec.status.as_str(),
                notes: "",
                output: rec.output.clone(),
                service_id: spec.id.clone(),
                service_name: spec.service.clone(),
                service_tags: tags.clone(),
                check_type: "http",
                interval: self.check_interval.clone(),
                timeout: self.check_timeout.clone(),
                exposed_port: 0,
                definition: Empty {},
                create_index: rec.create_index,
                modify_index: rec.check_modify_index,
            };
            HealthEntry {
                node,
                service: ServiceJson {
                    kind: "",
                    id: spec.id.clone(),
                    service: spec.service.clone(),
                    tags,
                    address: LOOPBACK,
                    meta,
                    port: spec.port,
                    weights: Weights::default(),
                    enable_tag_override: false,
                    proxy: ProxyJson {
                        destination_service_name: "",
                        destination_service_id: "",
                        local_service_address: "",
                        local_service_port: 0,
                        mode: "",
                        mesh_gateway: Empty {},
                        expose: Empty {},
                    },
                    connect: Empty {},
                    create_index: rec.create_index,
                    modify_index: rec.create_index,
                },
                checks: vec![node_check, service_check],
            }
        }
    }

    // ---------------------------------------------------------------- config entries

    /// `GET /v1/config/:kind/:name`, serialized.
    pub(crate) fn config_get_json(&self, kind: &str, name: &str) -> Result<Vec<u8>, ApiError> {
        let json = match Kind::parse(kind) {
            Some(Kind::Defaults) => self.defaults.get(name).map(|s| defaults_json(name, s)),
            Some(Kind::Resolver) => self.resolvers.get(name).map(resolver_json),
            Some(Kind::Splitter) => self.splitters.get(name).map(splitter_json),
            None => None,
        };
        let Some(json) = json else {
            return Err(ApiError::not_found(kind, name));
        };
        serde_json::to_vec(&json).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `GET /v1/config/:kind`: every entry of that kind (`[]` when none), serialized.
    pub(crate) fn config_list_json(&self, kind: &str) -> Result<Vec<u8>, ApiError> {
        let list: Vec<EntryJson<'_>> = match Kind::parse(kind) {
            Some(Kind::Defaults) => self
                .defaults
                .iter()
                .map(|(n, s)| defaults_json(n, s))
                .collect(),
            Some(Kind::Resolver) => self.resolvers.values().map(resolver_json).collect(),
            Some(Kind::Splitter) => self.splitters.values().map(splitter_json).collect(),
            None => Vec::new(),
        };
        serde_json::to_vec(&list).map_err(|e| ApiError::invalid(e.to_string()))
    }

    /// `PUT /v1/config[?cas=N]`: `Ok(true)` written, `Ok(false)` CAS conflict (nothing
    /// changed), `Err` 400 on decoding problems and 500 on validation failures.
    pub(crate) fn config_put(&mut self, body: &[u8], cas: Option<u64>) -> Result<bool, ApiError> {
        let entry = decode_entry(body)?;
        let (kind, written) = match entry {
            Entry::Defaults(name, protocol) => {
                self.check_protocol_change(&name, &protocol)?;
                let ok = put_cas(&mut self.index, &mut self.defaults, name, protocol, cas);
                (Kind::Defaults, ok)
            }
            Entry::Splitter(sp) => {
                self.validate_splitter(&sp)?;
                let name = sp.name.clone();
                let ok = put_cas(&mut self.index, &mut self.splitters, name, sp, cas);
                (Kind::Splitter, ok)
            }
            Entry::Resolver(r) => {
                self.check_splitters_against(&r.name, Some(&r))?;
                let name = r.name.clone();
                let ok = put_cas(&mut self.index, &mut self.resolvers, name, r, cas);
                (Kind::Resolver, ok)
            }
        };
        if written {
            self.touch_config(kind);
        }
        Ok(written)
    }

    /// `DELETE /v1/config/:kind/:name[?cas=N]`: `Ok(None)` deleted without CAS (Consul
    /// answers `{}`), `Ok(Some(b))` the CAS outcome.
    pub(crate) fn config_delete(
        &mut self,
        kind: &str,
        name: &str,
        cas: Option<u64>,
    ) -> Result<Option<bool>, ApiError> {
        let matches_cas = |modify_index: Option<u64>| match cas {
            None => true,
            Some(n) => modify_index == Some(n) && n > 0,
        };
        let ok = match Kind::parse(kind) {
            Some(Kind::Defaults) => {
                let ok = matches_cas(self.defaults.get(name).map(|s| s.modify_index));
                if ok && self.defaults.contains_key(name) {
                    // Without its entry the service is `tcp` (the demo has no proxy-defaults).
                    self.check_protocol_change(name, "tcp")?;
                    self.defaults.remove(name);
                    self.index += 1;
                    self.touch_config(Kind::Defaults);
                }
                ok
            }
            Some(Kind::Splitter) => {
                let ok = matches_cas(self.splitters.get(name).map(|s| s.modify_index));
                if ok && self.splitters.remove(name).is_some() {
                    self.index += 1;
                    self.touch_config(Kind::Splitter);
                }
                ok
            }
            Some(Kind::Resolver) => {
                let ok = matches_cas(self.resolvers.get(name).map(|s| s.modify_index));
                if ok && self.resolvers.contains_key(name) {
                    self.check_splitters_against(name, None)?;
                    self.resolvers.remove(name);
                    self.index += 1;
                    self.touch_config(Kind::Resolver);
                }
                ok
            }
            None => return Err(unsupported_kind(kind)),
        };
        Ok(cas.map(|_| ok))
    }

    fn protocol_of(&self, service: &str) -> &str {
        self.defaults
            .get(service)
            .map_or("tcp", |s| s.entry.as_str())
    }

    /// Consul compiles every discovery chain a config change touches: a service whose
    /// splitter needs L7 cannot become `tcp` (the same 500 as a splitter on a tcp service).
    fn check_protocol_change(&self, service: &str, protocol: &str) -> Result<(), ApiError> {
        if !L7_PROTOCOLS.contains(&protocol) && self.splitters.contains_key(service) {
            return Err(protocol_error(service, protocol));
        }
        Ok(())
    }

    fn validate_splitter(&self, sp: &Splitter) -> Result<(), ApiError> {
        if sp.splits.is_empty() {
            return Err(ApiError::invalid("no splits configured"));
        }
        for (i, s) in sp.splits.iter().enumerate() {
            let service = target_service(sp, s);
            if sp.splits[..i]
                .iter()
                .any(|o| target_service(sp, o) == service && o.subset == s.subset)
            {
                return Err(ApiError::invalid(format!(
                    "split destination occurs more than once: service={service:?}, \
                     subset={:?}, namespace=\"\", partition=\"\"",
                    s.subset
                )));
            }
        }
        let sum: u64 = sp.splits.iter().map(|s| u64::from(s.weight)).sum();
        if sum != 10_000 {
            return Err(ApiError::invalid(format!(
                "the sum of all split weights must be 100, not {:.6}",
                sum as f64 / 100.0
            )));
        }
        let protocol = self.protocol_of(&sp.name);
        if !L7_PROTOCOLS.contains(&protocol) {
            return Err(protocol_error(&sp.name, protocol));
        }
        for s in &sp.splits {
            let service = target_service(sp, s);
            check_subset(
                service,
                &s.subset,
                self.resolvers.get(service).map(|r| &r.entry),
            )?;
        }
        Ok(())
    }

    /// Every stored splitter that targets `service` must still find its subsets when the
    /// resolver of `service` becomes `resolver`.
    fn check_splitters_against(
        &self,
        service: &str,
        resolver: Option<&Resolver>,
    ) -> Result<(), ApiError> {
        for sp in self.splitters.values().map(|s| &s.entry) {
            for s in &sp.splits {
                if target_service(sp, s) == service {
                    check_subset(service, &s.subset, resolver)?;
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- routing (xDS stand-in)

    /// Where a call to `service` goes: the splitter's splits, else the resolver's default
    /// subset, else the whole service.
    pub(crate) fn route(&self, service: &str) -> Vec<Target> {
        if let Some(sp) = self.splitters.get(service) {
            return sp
                .entry
                .splits
                .iter()
                .map(|s| Target {
                    key: ClusterKey {
                        service: target_service(&sp.entry, s).to_owned(),
                        subset: s.subset.clone(),
                    },
                    weight: s.weight,
                })
                .collect();
        }
        let subset = self
            .resolvers
            .get(service)
            .map(|r| r.entry.default_subset.clone())
            .unwrap_or_default();
        vec![Target {
            key: ClusterKey {
                service: service.to_owned(),
                subset,
            },
            weight: 10_000,
        }]
    }

    /// Hosts of a cluster (instances of the service matching the subset filter).
    pub(crate) fn members(&self, key: &ClusterKey) -> Vec<Member> {
        let subset = if key.subset.is_empty() {
            None
        } else {
            let Some(sub) = self
                .resolvers
                .get(&key.service)
                .and_then(|r| r.entry.subsets.get(&key.subset))
            else {
                return Vec::new();
            };
            Some(sub)
        };
        self.instances
            .values()
            .filter(|r| r.spec.service == key.service)
            .filter(|r| {
                subset.is_none_or(|s| {
                    s.parsed
                        .as_ref()
                        .is_none_or(|f| f.matches(|sel| health_field(self, r, false, sel)))
                })
            })
            .map(|r| Member {
                id: r.spec.id.clone(),
                port: r.spec.port,
                healthy: match r.status {
                    Health::Passing => true,
                    Health::Warning => !subset.is_some_and(|s| s.only_passing),
                    Health::Critical => false,
                },
            })
            .collect()
    }
}

/// Consul's 500 for a discovery chain that needs L7 on a service that is not.
fn protocol_error(service: &str, protocol: &str) -> ApiError {
    ApiError::invalid(format!(
        "discovery chain {service:?} uses a protocol {protocol:?} that does not permit \
         advanced routing or splitting behavior"
    ))
}

fn target_service<'a>(sp: &'a Splitter, s: &'a SplitDef) -> &'a str {
    if s.service.is_empty() {
        &sp.name
    } else {
        &s.service
    }
}

fn check_subset(service: &str, subset: &str, resolver: Option<&Resolver>) -> Result<(), ApiError> {
    if subset.is_empty() || resolver.is_some_and(|r| r.subsets.contains_key(subset)) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "service {service:?} does not have a subset named {subset:?}"
        )))
    }
}

fn put_cas<T>(
    index: &mut u64,
    map: &mut BTreeMap<String, Stored<T>>,
    name: String,
    entry: T,
    cas: Option<u64>,
) -> bool {
    let existing = map.get(&name);
    let allowed = match cas {
        None => true,
        Some(0) => existing.is_none(),
        Some(n) => existing.is_some_and(|e| e.modify_index == n),
    };
    if !allowed {
        return false;
    }
    *index += 1;
    let create_index = existing.map_or(*index, |e| e.create_index);
    map.insert(
        name,
        Stored {
            entry,
            create_index,
            modify_index: *index,
        },
    );
    true
}

fn unsupported_kind(kind: &str) -> ApiError {
    ApiError::decoding(format!(
        "the demo registry writes only \"service-splitter\", \"service-resolver\" and \
         \"service-defaults\" config entries, not {kind:?}"
    ))
}

// -------------------------------------------------------------------- filter selectors

/// Whether `sel` is a selector of a health entry the demo understands.
pub(crate) fn is_health_selector(sel: &str) -> bool {
    sel.starts_with("Service.Meta.")
        || matches!(
            sel,
            "Service.ID"
                | "Service.Service"
                | "Service.Tags"
                | "Service.Address"
                | "Service.Port"
                | "Service.Kind"
                | "Node.Node"
                | "Node.Address"
                | "Node.Datacenter"
        )
}

fn health_field(st: &RegistryState, rec: &InstanceRecord, proxy: bool, sel: &str) -> Option<Field> {
    let spec = &rec.spec;
    let s = |v: &str| Some(Field::Str(v.to_owned()));
    if let Some(key) = sel.strip_prefix("Service.Meta.") {
        return match key {
            "version" => s(&spec.version),
            "metrics_url" => Some(Field::Str(spec.metrics_url())),
            _ => s(""),
        };
    }
    match sel {
        "Service.ID" if proxy => Some(Field::Str(format!("{}{PROXY_SUFFIX}", spec.id))),
        "Service.ID" => s(&spec.id),
        "Service.Service" if proxy => Some(Field::Str(format!("{}{PROXY_SUFFIX}", spec.service))),
        "Service.Service" => s(&spec.service),
        "Service.Tags" => Some(Field::List(vec![spec.version.clone()])),
        "Service.Address" | "Node.Address" => s(LOOPBACK),
        "Service.Port" if proxy => Some(Field::Str(spec.sidecar_port.to_string())),
        "Service.Port" => Some(Field::Str(spec.port.to_string())),
        "Service.Kind" => s(if proxy { "connect-proxy" } else { "" }),
        "Node.Node" => s(NODE_NAME),
        "Node.Datacenter" => s(&st.datacenter),
        _ => None,
    }
}

/// Whether `sel` is a selector of a catalog service node the demo understands.
pub(crate) fn is_catalog_selector(sel: &str) -> bool {
    sel.starts_with("ServiceMeta.")
        || matches!(
            sel,
            "ServiceName"
                | "ServiceID"
                | "ServiceKind"
                | "ServiceTags"
                | "ServiceAddress"
                | "ServicePort"
                | "Node"
                | "Address"
        )
}

fn catalog_field(spec: &InstanceSpec, proxy: bool, sel: &str) -> Option<Field> {
    let s = |v: &str| Some(Field::Str(v.to_owned()));
    if let Some(key) = sel.strip_prefix("ServiceMeta.") {
        return match key {
            "version" => s(&spec.version),
            "metrics_url" => Some(Field::Str(spec.metrics_url())),
            _ => s(""),
        };
    }
    match sel {
        "ServiceName" if proxy => Some(Field::Str(format!("{}{PROXY_SUFFIX}", spec.service))),
        "ServiceName" => s(&spec.service),
        "ServiceID" if proxy => Some(Field::Str(format!("{}{PROXY_SUFFIX}", spec.id))),
        "ServiceID" => s(&spec.id),
        "ServiceKind" => s(if proxy { "connect-proxy" } else { "" }),
        "ServiceTags" => Some(Field::List(vec![spec.version.clone()])),
        "ServiceAddress" | "Address" => s(LOOPBACK),
        "ServicePort" if proxy => Some(Field::Str(spec.sidecar_port.to_string())),
        "ServicePort" => Some(Field::Str(spec.port.to_string())),
        "Node" => s(NODE_NAME),
        _ => None,
    }
}

// -------------------------------------------------------------------- decoding

/// Key lookup the way Consul decodes config entries: `CamelCase` or `snake_case`, any case.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| normalize_key(k) == key)
        .map(|(_, v)| v)
}

fn normalize_key(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match obj
        .keys()
        .find(|k| !allowed.contains(&normalize_key(k).as_str()))
    {
        Some(k) => Err(ApiError::decoding(format!(
            "invalid config key {k:?} (not supported by the demo registry)"
        ))),
        None => Ok(()),
    }
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::decoding(format!(
            "'{key}' expected type 'string', got {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn decode_entry(body: &[u8]) -> Result<Entry, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::decoding)?;
    let Value::Object(obj) = &value else {
        return Err(ApiError::decoding("the config entry must be a JSON object"));
    };
    let kind = get_str(obj, "kind")?;
    if kind.is_empty() {
        return Err(ApiError::decoding(
            "Payload does not contain a Kind/kind key at the top level",
        ));
    }
    let entry = match Kind::parse(kind) {
        Some(Kind::Splitter) => Entry::Splitter(decode_splitter(obj)?),
        Some(Kind::Resolver) => Entry::Resolver(decode_resolver(obj)?),
        Some(Kind::Defaults) => decode_defaults(obj)?,
        None => return Err(unsupported_kind(kind)),
    };
    Ok(entry)
}

const COMMON_KEYS: [&str; 7] = [
    "kind",
    "name",
    "meta",
    "namespace",
    "partition",
    "createindex",
    "modifyindex",
];

fn decode_name(obj: &Map<String, Value>) -> Result<String, ApiError> {
    let name = get_str(obj, "name")?;
    if name.is_empty() {
        return Err(ApiError::invalid("Name is required"));
    }
    Ok(name.to_owned())
}

/// A `service-defaults` entry: only `Protocol` is kept; the empty objects Consul prints
/// (`TransparentProxy`, `MeshGateway`, `Expose`) are accepted so a read entry can be
/// written back. An empty protocol is `tcp`, Consul's default.
fn decode_defaults(obj: &Map<String, Value>) -> Result<Entry, ApiError> {
    let mut allowed = COMMON_KEYS.to_vec();
    allowed.extend(["protocol", "transparentproxy", "meshgateway", "expose"]);
    check_keys(obj, &allowed)?;
    let name = decode_name(obj)?;
    let protocol = get_str(obj, "protocol")?.trim().to_ascii_lowercase();
    let protocol = if protocol.is_empty() {
        "tcp".to_owned()
    } else {
        protocol
    };
    if !matches!(protocol.as_str(), "tcp" | "http" | "http2" | "grpc") {
        return Err(ApiError::invalid(format!(
            "Protocol {protocol:?} is not one the demo registry knows (tcp, http, http2, grpc)"
        )));
    }
    Ok(Entry::Defaults(name, protocol))
}

fn decode_splitter(obj: &Map<String, Value>) -> Result<Splitter, ApiError> {
    let mut allowed = COMMON_KEYS.to_vec();
    allowed.push("splits");
    check_keys(obj, &allowed)?;
    let name = decode_name(obj)?;
    let splits = match field(obj, "splits") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(decode_split)
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(ApiError::decoding(format!(
                "'Splits' expected type 'array', got {}",
                type_name(other)
            )));
        }
    };
    Ok(Splitter { name, splits })
}

fn decode_split(v: &Value) -> Result<SplitDef, ApiError> {
    let Value::Object(obj) = v else {
        return Err(ApiError::decoding("each split must be a JSON object"));
    };
    check_keys(
        obj,
        &[
            "weight",
            "service",
            "servicesubset",
            "namespace",
            "partition",
        ],
    )?;
    let weight = match field(obj, "weight") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => {
            return Err(ApiError::decoding(format!(
                "'Weight' expected type 'float32', got {}",
                type_name(other)
            )));
        }
    };
    // Consul keeps float32 and scales with round(w * 100).
    let scaled = f64::from((weight as f32) * 100.0).round();
    if !(0.0..=10_000.0).contains(&scaled) {
        return Err(ApiError::invalid(format!(
            "split weight must be between 0 and 100, not {weight}"
        )));
    }
    Ok(SplitDef {
        weight: scaled as u32,
        service: get_str(obj, "service")?.to_owned(),
        subset: get_str(obj, "servicesubset")?.to_owned(),
    })
}

fn valid_subset_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !bytes.is_empty()
        && bytes.iter().all(ok_char)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

fn decode_resolver(obj: &Map<String, Value>) -> Result<Resolver, ApiError> {
    let mut allowed = COMMON_KEYS.to_vec();
    allowed.extend(["defaultsubset", "subsets", "connecttimeout"]);
    check_keys(obj, &allowed)?;
    let name = decode_name(obj)?;
    let mut subsets = BTreeMap::new();
    match field(obj, "subsets") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (sub_name, def) in map {
                let Value::Object(def) = def else {
                    return Err(ApiError::decoding(format!(
                        "subset {sub_name:?} must be a JSON object"
                    )));
                };
                check_keys(def, &["filter", "onlypassing"])?;
                if !valid_subset_name(sub_name) {
                    return Err(ApiError::invalid(format!(
                        "Subset defined with invalid name {sub_name:?}"
                    )));
                }
                let filter = get_str(def, "filter")?.to_owned();
                let parsed = if filter.is_empty() {
                    None
                } else {
                    let f = Filter::parse(&filter)
                        .and_then(|f| f.check_selectors(is_health_selector).map(|()| f))
                        .map_err(|e| {
                            ApiError::invalid(format!(
                                "Filter for subset {sub_name:?} is not a valid expression: {e}"
                            ))
                        })?;
                    Some(f)
                };
                let only_passing = match field(def, "onlypassing") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(ApiError::decoding(format!(
                            "'OnlyPassing' expected type 'bool', got {}",
                            type_name(other)
                        )));
                    }
                };
                subsets.insert(
                    sub_name.clone(),
                    Subset {
                        filter,
                        parsed,
                        only_passing,
                    },
                );
            }
        }
        Some(other) => {
            return Err(ApiError::decoding(format!(
                "'Subsets' expected a map, got {}",
                type_name(other)
            )));
        }
    }
    let default_subset = get_str(obj, "defaultsubset")?.to_owned();
    if !default_subset.is_empty() && !subsets.contains_key(&default_subset) {
        return Err(ApiError::invalid(format!(
            "DefaultSubset {default_subset:?} is not a valid subset"
        )));
    }
    Ok(Resolver {
        name,
        default_subset,
        subsets,
        connect_timeout: get_str(obj, "connecttimeout")?.to_owned(),
    })
}

// -------------------------------------------------------------------- JSON shapes

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry<'a> {
    node: NodeJson<'a>,
    service: ServiceJson<'a>,
    checks: Vec<CheckJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: TaggedAddresses<'a>,
    meta: BTreeMap<&'static str, &'static str>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
struct TaggedAddresses<'a> {
    lan: &'a str,
    lan_ipv4: &'a str,
    wan: &'a str,
    wan_ipv4: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Vec<&'a str>,
    address: &'a str,
    meta: BTreeMap<&'static str, String>,
    port: u16,
    weights: Weights,
    enable_tag_override: bool,
    proxy: ProxyJson<'a>,
    connect: Empty,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
    warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u16) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_service_name: &'a str,
    #[serde(rename = "DestinationServiceID", skip_serializing_if = "str::is_empty")]
    destination_service_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    local_service_address: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    local_service_port: u16,
    mode: &'a str,
    mesh_gateway: Empty,
    expose: Empty,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckJson<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    status: &'a str,
    notes: &'a str,
    output: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    service_name: String,
    service_tags: Vec<&'a str>,
    #[serde(rename = "Type")]
    check_type: &'a str,
    interval: String,
    timeout: String,
    exposed_port: u16,
    definition: Empty,
    create_index: u64,
    modify_index: u64,
}

/// A weight in hundredths as Consul prints a float32: `80`, `33.33`.
fn weight_json(hundredths: u32) -> Value {
    if hundredths.is_multiple_of(100) {
        Value::from(hundredths / 100)
    } else {
        Value::from(f64::from(hundredths) / 100.0)
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(v: &bool) -> bool {
    !*v
}

/// A config entry as Consul prints it (fields in Consul's order, empty ones omitted).
#[derive(Serialize)]
#[serde(untagged)]
enum EntryJson<'a> {
    Defaults(DefaultsJson<'a>),
    Resolver(ResolverJson<'a>),
    Splitter(SplitterJson<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DefaultsJson<'a> {
    kind: &'static str,
    name: &'a str,
    protocol: &'a str,
    transparent_proxy: Empty,
    mesh_gateway: Empty,
    expose: Empty,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ResolverJson<'a> {
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    default_subset: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    subsets: BTreeMap<&'a str, SubsetJson<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    connect_timeout: &'a str,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SubsetJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    filter: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    only_passing: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SplitterJson<'a> {
    kind: &'static str,
    name: &'a str,
    splits: Vec<SplitJson<'a>>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SplitJson<'a> {
    weight: Value,
    #[serde(skip_serializing_if = "str::is_empty")]
    service: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    service_subset: &'a str,
}

fn defaults_json<'a>(name: &'a str, s: &'a Stored<String>) -> EntryJson<'a> {
    EntryJson::Defaults(DefaultsJson {
        kind: "service-defaults",
        name,
        protocol: &s.entry,
        transparent_proxy: Empty {},
        mesh_gateway: Empty {},
        expose: Empty {},
        create_index: s.create_index,
        modify_index: s.modify_index,
    })
}

fn resolver_json(s: &Stored<Resolver>) -> EntryJson<'_> {
    let r = &s.entry;
    EntryJson::Resolver(ResolverJson {
        kind: "service-resolver",
        name: &r.name,
        default_subset: &r.default_subset,
        subsets: r
            .subsets
            .iter()
            .map(|(n, sub)| {
                (
                    n.as_str(),
                    SubsetJson {
                        filter: &sub.filter,
                        only_passing: sub.only_passing,
                    },
                )
            })
            .collect(),
        connect_timeout: &r.connect_timeout,
        create_index: s.create_index,
        modify_index: s.modify_index,
    })
}

fn splitter_json(s: &Stored<Splitter>) -> EntryJson<'_> {
    EntryJson::Splitter(SplitterJson {
        kind: "service-splitter",
        name: &s.entry.name,
        splits: s
            .entry
            .splits
            .iter()
            .map(|sp| SplitJson {
                weight: weight_json(sp.weight),
                service: &sp.service,
                service_subset: &sp.subset,
            })
            .collect(),
        create_index: s.create_index,
        modify_index: s.modify_index,
    })
}

/// Parses a Go duration (`30s`, `1m30s`, `250ms`, `1.5h`); `None` when it is not one.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * secs;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Formats a duration the way Go prints one: `2s`, `500ms`, `1.5s`, `1m30s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let frac = ms % 1000;
    let (mins, secs) = (secs / 60, secs % 60);
    let sec_text = if frac == 0 {
        format!("{secs}s")
    } else {
        let f = format!("{frac:03}");
        format!("{secs}.{}s", f.trim_end_matches('0'))
    };
    if mins > 0 {
        format!("{mins}m{sec_text}")
    } else {
        sec_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVER: &str = r#"{"Kind":"service-resolver","Name":"identity","DefaultSubset":"v1",
        "Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},
                   "v2":{"Filter":"\"v2\" in Service.Tags","OnlyPassing":true}}}"#;
    const SPLIT_80_20: &str = r#"{"Kind":"service-splitter","Name":"identity",
        "Splits":[{"Weight":80,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}]}"#;

    fn spec(id: &str, service: &str, version: &str, port: u16) -> InstanceSpec {
        InstanceSpec {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            port,
            sidecar_port: port + 1000,
            sidecar_path: String::new(),
        }
    }

    fn registry() -> RegistryState {
        let mut st = RegistryState::new(
            "dc1",
            vec![
                spec("identity-v1-1", "identity", "v1", 1),
                spec("identity-v1-2", "identity", "v1", 2),
                spec("identity-v2-1", "identity", "v2", 3),
                spec("photo-1", "photo", "v1", 4),
            ],
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        st.seed_service_defaults("identity", "http");
        for id in ["identity-v1-1", "identity-v1-2", "identity-v2-1", "photo-1"] {
            st.set_check(id, Health::Passing, "ok".into());
        }
        assert_eq!(st.config_put(RESOLVER.as_bytes(), None), Ok(true));
        assert_eq!(st.config_put(SPLIT_80_20.as_bytes(), None), Ok(true));
        st
    }

    fn splitter(st: &RegistryState) -> Value {
        serde_json::from_slice(&st.config_get_json("service-splitter", "identity").unwrap())
            .unwrap()
    }

    #[test]
    fn splitter_reads_back_like_consul_prints_it() {
        let st = registry();
        let text =
            String::from_utf8(st.config_get_json("service-splitter", "identity").unwrap()).unwrap();
        let idx = st.index();
        assert_eq!(
            text,
            format!(
                "{{\"Kind\":\"service-splitter\",\"Name\":\"identity\",\"Splits\":[{{\"Weight\":80,\
                 \"ServiceSubset\":\"v1\"}},{{\"Weight\":20,\"ServiceSubset\":\"v2\"}}],\
                 \"CreateIndex\":{idx},\"ModifyIndex\":{idx}}}"
            )
        );
        let missing = st
            .config_get_json("service-splitter", "notification")
            .unwrap_err();
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.message,
            "Config entry not found for \"service-splitter\" / \"notification\""
        );
    }

    #[test]
    fn cas_rules() {
        let mut st = registry();
        let before = splitter(&st);
        let modify = before["ModifyIndex"].as_u64().unwrap();
        let body = br#"{"kind":"service-splitter","name":"identity",
            "splits":[{"weight":70,"service_subset":"v1"},{"weight":30,"service_subset":"v2"}]}"#;
        assert_eq!(st.config_put(body, Some(modify + 7)), Ok(false));
        assert_eq!(
            st.config_put(body, Some(0)),
            Ok(false),
            "cas=0 only creates"
        );
        assert_eq!(splitter(&st), before, "a refused CAS changes nothing");
        assert_eq!(st.config_put(body, Some(modify)), Ok(true));
        let after = splitter(&st);
        assert_eq!(after["Splits"][0]["Weight"], 70);
        assert_eq!(after["CreateIndex"], before["CreateIndex"]);
        assert!(after["ModifyIndex"].as_u64().unwrap() > modify);
        assert_eq!(after["ModifyIndex"].as_u64(), Some(st.index()));
    }

    #[test]
    fn validation_texts_match_consul() {
        let mut st = registry();
        let put = |st: &mut RegistryState, body: &str| st.config_put(body.as_bytes(), None);
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":70,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                500,
                "the sum of all split weights must be 100, not 90.000000"
            )
        );
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":50,"ServiceSubset":"v1"},{"Weight":50,"ServiceSubset":"v3"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                500,
                "service \"identity\" does not have a subset named \"v3\""
            )
        );
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"photo","Splits":[{"Weight":100}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("uses a protocol \"tcp\""), "{e:?}");
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"identity","Splits":[]}"#,
        )
        .unwrap_err();
        assert_eq!(e.message, "no splits configured");
        let e = put(&mut st, r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":50,"ServiceSubset":"v1"},{"Weight":50,"ServiceSubset":"v1"}]}"#).unwrap_err();
        assert!(
            e.message
                .starts_with("split destination occurs more than once")
        );
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":80"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("Request decoding failed: "), "{e:?}");
        let e = put(&mut st, r#"{"Kind":"service-router","Name":"identity"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("service-router"));
        let e = put(&mut st, r#"{"Name":"identity"}"#).unwrap_err();
        assert!(e.message.contains("Kind/kind"));
        // 33.33 + 33.33 + 33.34 sums to exactly 100.00 in hundredths.
        let mut st2 = registry();
        let ok =
            r#"{"Kind":"service-resolver","Name":"identity","Subsets":{"a":{},"b":{},"c":{}}}"#;
        assert_eq!(
            put(&mut st2, ok).map_err(|e| e.message),
            Err("service \"identity\" does not have a subset named \"v1\"".into()),
            "resolver may not drop subsets a splitter uses"
        );
    }

    #[test]
    fn service_defaults_are_written_with_cas_and_guard_splitters() {
        let mut st = registry();
        let put = |st: &mut RegistryState, body: &str, cas| st.config_put(body.as_bytes(), cas);
        // Shaped like config_put_service_defaults_identity_request.json; create-only.
        let photo_http = r#"{"Kind":"service-defaults","Name":"photo","Protocol":"HTTP"}"#;
        assert_eq!(put(&mut st, photo_http, Some(0)), Ok(true));
        assert_eq!(
            put(&mut st, photo_http, Some(0)),
            Ok(false),
            "cas=0 only creates"
        );
        let read: Value =
            serde_json::from_slice(&st.config_get_json("service-defaults", "photo").unwrap())
                .unwrap();
        assert_eq!(read["Protocol"], "http", "lowercased as Consul does");
        // A read entry can be written back as it was printed.
        let mut back = read.clone();
        back["Protocol"] = Value::from("grpc");
        let modify = read["ModifyIndex"].as_u64().unwrap();
        assert_eq!(put(&mut st, &back.to_string(), Some(modify)), Ok(true));
        // identity has a splitter: it may not become tcp, nor lose its service-defaults.
        let e = put(
            &mut st,
            r#"{"Kind":"service-defaults","Name":"identity","Protocol":"tcp"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                500,
                "discovery chain \"identity\" uses a protocol \"tcp\" that does not permit advanced routing or splitting behavior"
            )
        );
        let e = st
            .config_delete("service-defaults", "identity", None)
            .unwrap_err();
        assert_eq!(e.status, 500);
        // A tcp service refuses a splitter with the same text.
        assert_eq!(
            put(
                &mut st,
                r#"{"Kind":"service-defaults","Name":"photo","Protocol":"tcp"}"#,
                None
            ),
            Ok(true)
        );
        let e = put(
            &mut st,
            r#"{"Kind":"service-splitter","Name":"photo","Splits":[{"Weight":100}]}"#,
            None,
        )
        .unwrap_err();
        assert!(
            e.message.contains("\"photo\" uses a protocol \"tcp\""),
            "{e:?}"
        );
        assert_eq!(
            st.config_delete("service-defaults", "photo", None),
            Ok(None)
        );
        assert_eq!(
            st.config_get_json("service-defaults", "photo")
                .unwrap_err()
                .status,
            404
        );
        let e = put(
            &mut st,
            r#"{"Kind":"service-defaults","Name":"photo","Protocol":"udp"}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, 500);
    }

    #[test]
    fn fractional_weights_round_trip_in_hundredths() {
        let mut st = registry();
        let body = r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":66.67,"ServiceSubset":"v1"},{"Weight":33.33,"ServiceSubset":"v2"}]}"#;
        assert_eq!(st.config_put(body.as_bytes(), None), Ok(true));
        assert_eq!(splitter(&st)["Splits"][1]["Weight"], 33.33);
        let route = st.route("identity");
        assert_eq!(
            route.iter().map(|t| t.weight).collect::<Vec<_>>(),
            vec![6667, 3333]
        );
    }

    #[test]
    fn routes_and_members_follow_config_and_health() {
        let mut st = registry();
        let route = st.route("identity");
        assert_eq!(route.len(), 2);
        assert_eq!(
            (route[1].key.subset.as_str(), route[1].weight),
            ("v2", 2000)
        );
        assert_eq!(
            st.route("photo")[0].key.subset,
            "",
            "no resolver: whole service"
        );
        let v1 = st.members(&route[0].key);
        assert_eq!(
            v1.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["identity-v1-1", "identity-v1-2"]
        );
        // OnlyPassing: a warning v2 host takes no traffic, a warning v1 host does.
        st.set_check("identity-v2-1", Health::Warning, "429".into());
        st.set_check("identity-v1-1", Health::Warning, "429".into());
        assert!(!st.members(&route[1].key)[0].healthy);
        assert!(st.members(&route[0].key)[0].healthy);
        st.set_check("identity-v1-1", Health::Critical, "refused".into());
        assert!(!st.members(&route[0].key)[0].healthy);
        // Without the splitter the resolver's default subset takes everything.
        assert_eq!(
            st.config_delete("service-splitter", "identity", None),
            Ok(None)
        );
        let route = st.route("identity");
        assert_eq!(
            (route[0].key.subset.as_str(), route[0].weight),
            ("v1", 10_000)
        );
    }

    #[test]
    fn health_json_has_consul_shape_and_passing_filter() {
        let mut st = registry();
        st.set_check(
            "identity-v2-1",
            Health::Critical,
            "Get \"x\": refused".into(),
        );
        let all: Value =
            serde_json::from_slice(&st.health_service_json("identity", false, None).unwrap())
                .unwrap();
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 3);
        let e = &all[2];
        assert_eq!(e["Service"]["ID"], "identity-v2-1");
        assert_eq!(e["Service"]["Tags"][0], "v2");
        assert_eq!(e["Service"]["Meta"]["version"], "v2");
        assert_eq!(
            e["Service"]["Meta"]["metrics_url"],
            "http://127.0.0.1:1003/stats/prometheus"
        );
        assert_eq!(e["Checks"][0]["CheckID"], "serfHealth");
        assert_eq!(e["Checks"][1]["CheckID"], "service:identity-v2-1");
        assert_eq!(e["Checks"][1]["Status"], "critical");
        assert_eq!(e["Checks"][1]["Interval"], "2s");
        assert!(e["Service"].get("Kind").is_none());
        let passing: Value =
            serde_json::from_slice(&st.health_service_json("identity", true, None).unwrap())
                .unwrap();
        assert_eq!(passing.as_array().unwrap().len(), 2);
        let f = Filter::parse("Service.Meta.version == v2").unwrap();
        let v2: Value =
            serde_json::from_slice(&st.health_service_json("identity", false, Some(&f)).unwrap())
                .unwrap();
        assert_eq!(v2.as_array().unwrap().len(), 1);
        let proxies: Value = serde_json::from_slice(
            &st.health_service_json("identity-sidecar-proxy", false, None)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(proxies[0]["Service"]["Kind"], "connect-proxy");
        assert_eq!(proxies[0]["Service"]["Port"], 1001);
        assert_eq!(
            proxies[0]["Service"]["Proxy"]["DestinationServiceID"],
            "identity-v1-1"
        );
        assert_eq!(st.health_service_json("nope", false, None).unwrap(), b"[]");
    }

    #[test]
    fn catalog_lists_services_and_sidecars_with_tags() {
        let st = registry();
        let cat = st.catalog_services(None);
        assert_eq!(
            cat.keys().collect::<Vec<_>>(),
            [
                "identity",
                "identity-sidecar-proxy",
                "photo",
                "photo-sidecar-proxy"
            ]
        );
        assert_eq!(cat["identity"].iter().collect::<Vec<_>>(), ["v1", "v2"]);
        let f = Filter::parse("ServiceKind != \"connect-proxy\"").unwrap();
        assert_eq!(st.catalog_services(Some(&f)).len(), 2);
    }

    #[test]
    fn index_moves_only_on_change() {
        let mut st = registry();
        let i = st.index();
        assert!(!st.set_check("photo-1", Health::Passing, "ok".into()));
        assert_eq!(st.index(), i);
        assert!(st.set_check("photo-1", Health::Critical, "down".into()));
        assert_eq!(st.index(), i + 1);
    }

    #[test]
    fn go_duration_parsing() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "3x", "-1s", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn indexes_move_only_with_their_data() {
        let mut st = registry();
        let (cat, checks, split) = (
            st.catalog_index(),
            st.checks_index(),
            st.config_index("service-splitter"),
        );
        let photo = st.service_index("photo");
        let identity = st.service_index("identity");
        let mut rx = st.subscribe();
        assert!(st.set_check("identity-v2-1", Health::Critical, "down".into()));
        assert!(rx.has_changed().unwrap(), "waiters are woken");
        rx.mark_unchanged();
        assert_eq!(st.catalog_index(), cat, "a check is not a registration");
        assert!(st.checks_index() > checks);
        assert!(st.service_index("identity") > identity);
        assert_eq!(st.service_index("photo"), photo);
        assert_eq!(st.config_index("service-splitter"), split);
        assert_eq!(st.service_index("never-seen"), 1);
        let body = br#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":50,"ServiceSubset":"v1"},{"Weight":50,"ServiceSubset":"v2"}]}"#;
        assert_eq!(st.config_put(body, None), Ok(true));
        assert!(st.config_index("service-splitter") > split);
        assert!(rx.has_changed().unwrap());
        let any: Value = serde_json::from_slice(&st.health_state_json("any").unwrap()).unwrap();
        // One node check, then per instance its service check and two sidecar checks.
        assert_eq!(any.as_array().unwrap().len(), 1 + 4 * 3);
        let critical: Value =
            serde_json::from_slice(&st.health_state_json("critical").unwrap()).unwrap();
        assert_eq!(
            critical.as_array().unwrap().len(),
            2,
            "the check and its alias"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    }
}

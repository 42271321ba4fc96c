//! The document `spine-dash snapshot --json` prints: exactly what the map shows.

use serde::Serialize;

use super::Model;
use super::types::HealthCounts;

/// Top-level document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotDoc {
    /// Which registry, and whether its last poll succeeded.
    pub registry: RegistryDoc,
    /// Services with their versions and instances.
    pub services: Vec<ServiceDoc>,
    /// Every lane with its window stats.
    pub lanes: Vec<LaneDoc>,
}

/// The registry part.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegistryDoc {
    /// `demo`, `consul` or `etcd`.
    pub kind: &'static str,
    /// Base URL.
    pub address: String,
    /// Last poll succeeded.
    pub ok: bool,
    /// Last error text, `null` when ok.
    pub error: Option<String>,
    /// The config file's context in use, `null` without one.
    pub context: Option<String>,
}

/// One service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceDoc {
    /// Name.
    pub name: String,
    /// Versions, sorted.
    pub versions: Vec<VersionDoc>,
}

/// One version of a service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionDoc {
    /// `v1`, `v2`, or `default`.
    pub version: String,
    /// Configured weight in percent (0–100), `null` when unknown.
    pub configured_weight_pct: Option<f64>,
    /// Health counts of its instances.
    pub health: HealthCounts,
    /// Its instances.
    pub instances: Vec<InstanceDoc>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceDoc {
    /// Registry id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `passing`, `warning`, `critical`.
    pub health: &'static str,
}

/// One lane.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaneDoc {
    /// Calling service.
    pub caller: String,
    /// Called service.
    pub service: String,
    /// Version of the called service.
    pub version: String,
    /// Requests per second, `null` without data.
    pub rps: Option<f64>,
    /// 5xx share in percent (0–100), `null` without requests.
    pub err5xx_pct: Option<f64>,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// `closed`, `saturated`, `ejecting n of m`, `open`; `null` without data.
    pub breaker: Option<String>,
    /// Configured weight of this version in percent.
    pub configured_weight_pct: Option<f64>,
    /// Health of this version's instances.
    pub health: HealthCounts,
}

fn pct(hundredths: Option<u32>) -> Option<f64> {
    hundredths.map(|w| f64::from(w) / 100.0)
}

impl SnapshotDoc {
    /// Builds the document from the model.
    #[must_use]
    pub fn from_model(model: &Model) -> Self {
        let registry = RegistryDoc {
            kind: model.registry.kind.as_str(),
            address: model.registry.address.clone(),
            ok: model.registry_status.last_ok.is_some()
                && model.registry_status.last_error.is_none(),
            error: model.registry_status.last_error.clone(),
            context: model.context.clone(),
        };
        let services = model
            .services
            .values()
            .map(|svc| ServiceDoc {
                name: svc.name.clone(),
                versions: svc
                    .versions()
                    .into_iter()
                    .map(|version| VersionDoc {
                        configured_weight_pct: pct(model.configured_weight(&svc.name, &version)),
                        health: model.version_health(&svc.name, &version),
                        instances: svc
                            .instances
                            .iter()
                            .filter(|i| i.version == version)
                            .map(|i| InstanceDoc {
                                id: i.id.clone(),
                                address: i.address.clone(),
                                port: i.port,
                                health: i.health.as_str(),
                            })
                            .collect(),
                        version,
                    })
                    .collect(),
            })
            .collect();
        let lanes = model
            .lanes
            .values()
            .map(|lane| {
                let s = lane.stats.as_ref();
                LaneDoc {
                    caller: lane.key.caller.clone(),
                    service: lane.key.service.clone(),
                    version: lane.key.version.clone(),
                    rps: s.map(|s| s.rps),
                    err5xx_pct: s.and_then(|s| s.err5xx_ratio).map(|r| r * 100.0),
                    p50_ms: s.and_then(|s| s.p50_ms),
                    p95_ms: s.and_then(|s| s.p95_ms),
                    p99_ms: s.and_then(|s| s.p99_ms),
                    breaker: s.map(|s| s.breaker.label()),
                    configured_weight_pct: pct(
                        model.configured_weight(&lane.key.service, &lane.key.version)
                    ),
                    health: model.version_health(&lane.key.service, &lane.key.version),
                }
            })
            .collect();
        Self {
            registry,
            services,
            lanes,
        }
    }
}

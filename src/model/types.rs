//! Shared vocabulary of the spine (see GUIDE.md §2): instances, health, splits, breaker
//! states, lanes. Pure data: no I/O, no egui. Every layer speaks these types.

use serde::{Deserialize, Serialize};

/// Weights are integer hundredths of a percent: 0..=10000, a full split sums to 10000.
pub type WeightHundredths = u32;

/// The total a split must reach: 100.00 %.
pub const FULL_WEIGHT: WeightHundredths = 10_000;

/// Health of one instance: the worst over all its checks (critical > warning > passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every check passes.
    Passing,
    /// At least one check warns (e.g. HTTP 429), none is critical.
    Warning,
    /// At least one check is critical (or in maintenance).
    Critical,
}

impl Health {
    /// Parses a Consul check status; `maintenance` and unknown values count as critical.
    #[must_use]
    pub fn from_consul_status(status: &str) -> Self {
        match status {
            "passing" => Self::Passing,
            "warning" => Self::Warning,
            _ => Self::Critical,
        }
    }

    /// The lowercase name used in the UI and in `snapshot --json`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Counts of instances per health state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounts {
    /// Instances whose checks all pass.
    pub passing: u32,
    /// Instances with a warning check.
    pub warning: u32,
    /// Instances with a critical check.
    pub critical: u32,
}

impl HealthCounts {
    /// Adds one instance of the given health.
    pub fn add(&mut self, health: Health) {
        match health {
            Health::Passing => self.passing += 1,
            Health::Warning => self.warning += 1,
            Health::Critical => self.critical += 1,
        }
    }

    /// Total number of instances counted.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.passing + self.warning + self.critical
    }

    /// The worst state present, `None` when there are no instances.
    #[must_use]
    pub fn worst(&self) -> Option<Health> {
        if self.critical > 0 {
            Some(Health::Critical)
        } else if self.warning > 0 {
            Some(Health::Warning)
        } else if self.passing > 0 {
            Some(Health::Passing)
        } else {
            None
        }
    }
}

/// One registered service instance, as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Registry id of the instance (Consul `Service.ID`).
    pub id: String,
    /// Service name.
    pub service: String,
    /// Version: `Meta.version`, else a `vN` tag, else `default`.
    pub version: String,
    /// Address to show: `Service.Address`, else `Node.Address`.
    pub address: String,
    /// Service port.
    pub port: u16,
    /// Worst health over the instance's checks (node and service).
    pub health: Health,
    /// Output of the non-passing checks (empty when all pass), for the operator.
    pub check_output: String,
    /// Full URL of the instance's sidecar Envoy Prometheus stats, if known.
    pub metrics_url: Option<String>,
}

/// Version to use when an instance carries none.
pub const DEFAULT_VERSION: &str = "default";

/// One entry of a traffic split: a subset (version) and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitEntry {
    /// Subset name, equal to the version (`v1`, `v2`).
    pub subset: String,
    /// Weight in hundredths of a percent.
    pub weight: WeightHundredths,
}

/// A traffic split over the versions of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Split {
    /// Entries in registry order.
    pub entries: Vec<SplitEntry>,
}

impl Split {
    /// Builds a split from `(subset, hundredths)` pairs.
    #[must_use]
    pub fn from_pairs<S: Into<String>>(
        pairs: impl IntoIterator<Item = (S, WeightHundredths)>,
    ) -> Self {
        Self {
            entries: pairs
                .into_iter()
                .map(|(subset, weight)| SplitEntry {
                    subset: subset.into(),
                    weight,
                })
                .collect(),
        }
    }

    /// Sum of the weights in hundredths (saturating: a registry can hold any number).
    #[must_use]
    pub fn total(&self) -> WeightHundredths {
        self.entries
            .iter()
            .fold(0, |sum: WeightHundredths, e| sum.saturating_add(e.weight))
    }

    /// Weight of one subset, `None` if the split does not name it.
    #[must_use]
    pub fn weight_of(&self, subset: &str) -> Option<WeightHundredths> {
        self.entries
            .iter()
            .find(|e| e.subset == subset)
            .map(|e| e.weight)
    }

    /// Checks the rules every registry enforces: non-empty, no duplicate subset, sum = 100.00 %.
    pub fn validate(&self) -> Result<(), SplitError> {
        if self.entries.is_empty() {
            return Err(SplitError::Empty);
        }
        for (i, e) in self.entries.iter().enumerate() {
            if self.entries[..i].iter().any(|o| o.subset == e.subset) {
                return Err(SplitError::Duplicate(e.subset.clone()));
            }
        }
        let total = self.total();
        if total != FULL_WEIGHT {
            return Err(SplitError::BadSum(total));
        }
        Ok(())
    }
}

/// Why a split is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No entries at all.
    #[error("no splits configured")]
    Empty,
    /// The same subset appears twice.
    #[error("split destination occurs more than once: {0}")]
    Duplicate(String),
    /// Weights do not sum to 100.00 %.
    #[error("the sum of all split weights must be 100, not {}", format_pct(*.0))]
    BadSum(WeightHundredths),
}

/// Formats hundredths of a percent as `80` or `33.33`.
#[must_use]
pub fn format_pct(w: WeightHundredths) -> String {
    if w.is_multiple_of(100) {
        format!("{}", w / 100)
    } else {
        format!("{}.{:02}", w / 100, w % 100)
    }
}

/// The split stored in the registry plus the index needed for compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// The configured weights.
    pub split: Split,
    /// Consul: the entry's `ModifyIndex`; etcd: the key's `mod_revision`.
    pub modify_index: u64,
}

/// Everything the registry says about one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Service name.
    pub name: String,
    /// Instances, sorted by id.
    pub instances: Vec<Instance>,
    /// Subsets the resolver defines (sorted); empty when there is no resolver.
    pub subsets: Vec<String>,
    /// The configured split, `None` when no splitter entry exists.
    pub split: Option<SplitConfig>,
    /// Consul: the effective protocol (service-defaults `Protocol`, else proxy-defaults
    /// `global` `Config.protocol`, else `tcp`); only `http`, `http2` and `grpc` allow a
    /// split. `None`: the registry has no such notion (etcd, Consul KV mode).
    #[serde(default)]
    pub protocol: Option<String>,
}

impl ServiceEntry {
    /// Distinct versions: those of the instances plus the resolver's subsets, sorted.
    #[must_use]
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .instances
            .iter()
            .map(|i| i.version.clone())
            .chain(self.subsets.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// One full read of the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Services sorted by name (sidecar-proxy registrations excluded).
    pub services: Vec<ServiceEntry>,
    /// Advisory "who is driving" markers other dashboards (or this one) hold, by service.
    #[serde(default)]
    pub drivers: Vec<DriverMarker>,
}

/// The advisory marker a dashboard keeps in the registry while a rollout plan drives a
/// service's weights (Consul: KV `spine-dash/drivers/<service>` under a session; etcd:
/// `/spine-dash/drivers/<service>` under a lease). Stored as this struct's JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverMarker {
    /// Service whose weights are being driven.
    pub service: String,
    /// OS user of the driving dashboard.
    pub user: String,
    /// Host name of the driving dashboard.
    pub host: String,
    /// Process id, to tell two dashboards of one user apart.
    #[serde(default)]
    pub pid: u32,
    /// When the plan started (RFC 3339, UTC).
    #[serde(default)]
    pub since: String,
    /// What drives it, e.g. "plan 95/5 → 80/20 → 50/50 → 0/100".
    #[serde(default)]
    pub what: String,
}

/// Key prefix of the driver markers (Consul KV; etcd adds a leading `/`).
pub const DRIVER_PREFIX: &str = "spine-dash/drivers/";

/// Protocols that allow an L7 split (Consul).
pub const SPLITTABLE_PROTOCOLS: [&str; 3] = ["http", "http2", "grpc"];

/// Which kind of registry the dashboard talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    /// The embedded demo spine (speaks the Consul API).
    Demo,
    /// A Consul agent.
    Consul,
    /// An etcd cluster.
    Etcd,
}

impl RegistryKind {
    /// Lowercase name used in the UI and `snapshot --json`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Demo => "demo",
            Self::Consul => "consul",
            Self::Etcd => "etcd",
        }
    }
}

/// Breaker state of a lane (GUIDE.md, shared vocabulary). Ordered from best to worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BreakerState {
    /// All breaker gauges 0, no overflow rose, no host ejected.
    #[default]
    Closed,
    /// Outlier detection ejected `ejected` of `total` hosts (0 < n < m).
    Ejecting {
        /// Hosts ejected now.
        ejected: u32,
        /// Hosts in the cluster.
        total: u32,
    },
    /// An Envoy `*_open` gauge is 1 or an overflow counter rose.
    Saturated,
    /// No host can take traffic (`membership_healthy` = 0).
    Open,
}

impl BreakerState {
    /// Severity rank, higher is worse (for "worst wins").
    #[must_use]
    pub fn severity(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Ejecting { .. } => 1,
            Self::Saturated => 2,
            Self::Open => 3,
        }
    }

    /// The worse of two states.
    #[must_use]
    pub fn worst(self, other: Self) -> Self {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// Name as used in the UI and `snapshot --json`: `closed`, `saturated`, `ejecting 1 of 3`, `open`.
    #[must_use]
    pub fn label(self) -> String {
        match self {
            Self::Closed => "closed".into(),
            Self::Saturated => "saturated".into(),
            Self::Ejecting { ejected, total } => format!("ejecting {ejected} of {total}"),
            Self::Open => "open".into(),
        }
    }
}

/// A lane: one version of a callee on the road from a caller service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LaneKey {
    /// Calling service (`consul_source_service`).
    pub caller: String,
    /// Called service (`consul_destination_service`).
    pub service: String,
    /// Version of the called service (subset; see GUIDE.md for the empty-subset rule).
    pub version: String,
}

/// Running state of one demo instance, for the stop / start buttons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoInstanceState {
    /// Registry id.
    pub id: String,
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Whether its HTTP server is up.
    pub running: bool,
    /// Faults injected into it now (all zero / `None` when none).
    pub fault: DemoFault,
}

/// Faults injected into one demo instance (demo mode only), from the side panel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DemoFault {
    /// Added to every work request, in milliseconds.
    pub latency_ms: u32,
    /// Share of work requests answered 500, in percent (0–100), spread evenly over requests.
    pub error_pct: u8,
    /// What the instance's `/health` reports instead of the truth (`None`: no override):
    /// passing answers 200, warning 429, critical 503, as Consul's HTTP checks read them.
    pub health: Option<Health>,
}

impl DemoFault {
    /// No fault at all.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        *self == Self::default()
    }

    /// Short text for the operator: `+500 ms, 10 % 5xx, health critical`, or `none`.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.latency_ms > 0 {
            parts.push(format!("+{} ms", self.latency_ms));
        }
        if self.error_pct > 0 {
            parts.push(format!("{} % 5xx", self.error_pct));
        }
        if let Some(h) = self.health {
            parts.push(format!("health {}", h.as_str()));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_validation_paths() {
        assert_eq!(Split::default().validate(), Err(SplitError::Empty));
        let dup = Split::from_pairs([("v1", 5000), ("v1", 5000)]);
        assert_eq!(dup.validate(), Err(SplitError::Duplicate("v1".into())));
        let bad = Split::from_pairs([("v1", 8000), ("v2", 1999)]);
        assert_eq!(bad.validate(), Err(SplitError::BadSum(9999)));
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "the sum of all split weights must be 100, not 99.99"
        );
        assert!(
            Split::from_pairs([("v1", 8000), ("v2", 2000)])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn breaker_worst_wins() {
        let e = BreakerState::Ejecting {
            ejected: 1,
            total: 3,
        };
        assert_eq!(BreakerState::Closed.worst(e), e);
        assert_eq!(e.worst(BreakerState::Open), BreakerState::Open);
        assert_eq!(BreakerState::Saturated.worst(e), BreakerState::Saturated);
        assert_eq!(e.label(), "ejecting 1 of 3");
    }

    #[test]
    fn demo_fault_summary() {
        assert!(DemoFault::default().is_clear());
        assert_eq!(DemoFault::default().summary(), "none");
        let f = DemoFault {
            latency_ms: 500,
            error_pct: 10,
            health: Some(Health::Critical),
        };
        assert!(!f.is_clear());
        assert_eq!(f.summary(), "+500 ms, 10 % 5xx, health critical");
    }

    #[test]
    fn health_counts_worst() {
        let mut c = HealthCounts::default();
        assert_eq!(c.worst(), None);
        c.add(Health::Passing);
        c.add(Health::Warning);
        assert_eq!(c.worst(), Some(Health::Warning));
        assert_eq!(c.total(), 2);
        assert_eq!(Health::from_consul_status("maintenance"), Health::Critical);
    }
}

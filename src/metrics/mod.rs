//! Envoy sidecar statistics: a literal Prometheus text-format (0.0.4) parser, the fold of
//! Envoy's families into per-cluster counters, and rates / percentiles / breaker state from
//! two scrapes (`API_BRIEF.md` §2.2–2.5); the `/clusters?format=json` host list (§2.6).
//! Pure functions: no I/O.

pub mod clusters;
pub mod derive;
pub mod parse;
pub mod prometheus;

pub use clusters::{
    ClusterHost, ClusterHosts, ClustersError, HostHealth, cluster_id_from_name, parse_clusters_json,
};
pub use derive::{
    LaneWindow, MergeOutcome, WindowStats, breaker_state, cluster_window, paired_window,
    quantile_ms, sidecar_windows, window,
};
pub use parse::{StatsError, parse_envoy_stats};

/// Identifies one upstream cluster as seen by one sidecar.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterId {
    /// `consul_source_service` (else `local_cluster`, else empty).
    pub source: String,
    /// `consul_destination_service`; without `consul_*` labels, `envoy_cluster_name`.
    pub service: String,
    /// `consul_destination_service_subset`; empty when there is none.
    pub subset: String,
}

impl ClusterId {
    /// Envoy's own clusters that are not roads between services.
    #[must_use]
    pub fn is_local(&self) -> bool {
        matches!(
            self.service.as_str(),
            "local_app" | "local_agent" | "self_admin" | "prometheus_backend"
        )
    }
}

/// A cumulative latency histogram (`envoy_cluster_upstream_rq_time`), in milliseconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// `(le, cumulative count)` ascending by `le`; the last one is `+Inf` (`f64::INFINITY`).
    pub buckets: Vec<(f64, u64)>,
    /// `_sum` in milliseconds.
    pub sum: f64,
    /// `_count`.
    pub count: u64,
}

/// The families the dashboard needs for one cluster of one sidecar, at one scrape.
/// Counters missing from the body (Envoy's `usedonly`) are 0; gauges missing are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterCounters {
    /// Which cluster.
    pub id: ClusterId,
    /// `envoy_cluster_upstream_rq_total`: requests that reached an upstream.
    pub rq_total: u64,
    /// `envoy_cluster_upstream_rq_completed`: all completed, including local 503 on overflow.
    pub rq_completed: u64,
    /// `envoy_cluster_upstream_rq_xx` by `envoy_response_code_class`, index 0 = 1xx … 4 = 5xx.
    pub rq_xx: [u64; 5],
    /// `envoy_cluster_upstream_rq_pending_overflow`.
    pub rq_pending_overflow: u64,
    /// `envoy_cluster_upstream_cx_overflow`.
    pub cx_overflow: u64,
    /// `envoy_cluster_upstream_rq_time` histogram.
    pub rq_time: Histogram,
    /// `envoy_cluster_membership_healthy`.
    pub membership_healthy: Option<u64>,
    /// `envoy_cluster_membership_total`.
    pub membership_total: Option<u64>,
    /// `envoy_cluster_outlier_detection_ejections_active`.
    pub ejections_active: Option<u64>,
    /// `envoy_cluster_circuit_breakers_default_rq_open` (0/1).
    pub cb_rq_open: u64,
    /// `envoy_cluster_circuit_breakers_default_rq_pending_open` (0/1).
    pub cb_rq_pending_open: u64,
    /// `envoy_cluster_circuit_breakers_default_cx_open` (0/1).
    pub cb_cx_open: u64,
    /// Samples of a counter of this cluster (requests, classes, overflows, latency buckets
    /// and count) whose value cannot be a counter: `NaN`, infinite, negative, or beyond
    /// `u64`. Their counter is unknown, so every window touching this scrape is a gap.
    pub bad_values: u32,
}

/// One parsed scrape of one sidecar's `/stats/prometheus`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SidecarScrape {
    /// Clusters sorted by id.
    pub clusters: Vec<ClusterCounters>,
    /// `envoy_server_uptime` in seconds, when present (a decrease means a restart).
    pub uptime_secs: Option<f64>,
    /// Series written twice with the same name and the same label set (in any order): the
    /// first one counts, the repeats are counted here (the scraper logs them once).
    pub duplicate_series: u32,
}

impl SidecarScrape {
    /// The counters of one cluster (`clusters` is sorted by id).
    #[must_use]
    pub fn cluster(&self, id: &ClusterId) -> Option<&ClusterCounters> {
        self.clusters
            .binary_search_by(|c| c.id.cmp(id))
            .ok()
            .and_then(|i| self.clusters.get(i))
    }
}

//! Rates, percentiles and breaker state from two scrapes (API_BRIEF.md §2.5).

use super::ClusterCounters;
use crate::model::types::BreakerState;

/// Deltas of one cluster between two scrapes of one sidecar. Several sidecars of the same
/// caller service are merged (deltas added, rates added) before deriving stats.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaneWindow {
    /// Completed requests per second (Σ over merged sidecars of Δcompleted/Δt).
    pub rps_completed: f64,
    /// Requests reaching an upstream per second.
    pub rps_upstream_total: f64,
    /// Δcompleted.
    pub completed: f64,
    /// Δ per response class, index 0 = 1xx … 4 = 5xx.
    pub xx: [f64; 5],
    /// Breaker rejections per second.
    pub pending_overflow_per_s: f64,
    /// Δ`upstream_rq_pending_overflow` + Δ`upstream_cx_overflow` (did an overflow rise?).
    pub overflow: f64,
    /// `(le, Δcumulative count)` ascending, last is +Inf.
    pub buckets: Vec<(f64, f64)>,
    /// Breaker state at the end of the window, worst over the merged sidecars.
    pub breaker: BreakerState,
}

/// Stats of a lane over one window, as shown on the map and in `snapshot --json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowStats {
    /// Completed requests per second.
    pub rps: f64,
    /// 5xx / completed, as a ratio 0..1; `None` without requests.
    pub err5xx_ratio: Option<f64>,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Breaker state.
    pub breaker: BreakerState,
}

/// The window between two scrapes `a` (earlier) and `b` of the same cluster, `dt_secs` apart.
/// `None` when a counter went down (restart / reset): that window is a gap.
#[must_use]
pub fn window(_a: &ClusterCounters, _b: &ClusterCounters, _dt_secs: f64) -> Option<LaneWindow> {
    todo!("metrics helper")
}

impl LaneWindow {
    /// Adds another sidecar's window of the same lane (same caller service).
    pub fn merge(&mut self, _other: &LaneWindow) {
        todo!("metrics helper")
    }

    /// Rates, error ratio, percentiles and breaker state of this window.
    #[must_use]
    pub fn stats(&self) -> WindowStats {
        todo!("metrics helper")
    }
}

/// `histogram_quantile` over bucket deltas (`q` in 0..1); `None` when the window has no requests.
#[must_use]
pub fn quantile_ms(_buckets: &[(f64, f64)], _q: f64) -> Option<f64> {
    todo!("metrics helper")
}

/// Breaker state from one scrape's gauges and whether an overflow counter rose in the window.
#[must_use]
pub fn breaker_state(_c: &ClusterCounters, _overflow_rose: bool) -> BreakerState {
    todo!("metrics helper")
}

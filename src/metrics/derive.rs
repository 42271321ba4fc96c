//! Rates, percentiles and breaker state from two scrapes (`API_BRIEF.md` §2.5).
//!
//! A window is the difference between two cumulative scrapes of the same cluster of the same
//! sidecar. A counter that went down (Envoy restarted, `/reset_counters`) makes the window a
//! gap (`None`), never a negative rate; so does a scrape with a counter value that cannot be
//! a counter ([`ClusterCounters::bad_values`]). Latency buckets that contradict each other
//! (one went down or vanished while the counters did not) leave the rates alone and make
//! the window's percentiles unknown ([`LaneWindow::latency_unknown`]). Windows of several sidecars of the same caller are
//! merged (deltas and rates added, buckets added per `le`) before percentiles are computed:
//! percentiles are never averaged.

use super::{ClusterCounters, ClusterId, SidecarScrape};
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
    /// `(le, Δcumulative count)` ascending, last is +Inf. Empty when the cluster has no
    /// latency histogram (no request ever), which counts as all zero.
    pub buckets: Vec<(f64, f64)>,
    /// Breaker state at the end of the window, worst over the merged sidecars.
    pub breaker: BreakerState,
    /// The latency histogram of a merged sidecar contradicted itself between the two
    /// scrapes: the percentiles of this window are unknown (not computed from the others).
    pub latency_unknown: bool,
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

/// `b − a` for a counter; `None` when it went down.
fn delta(a: u64, b: u64) -> Option<u64> {
    b.checked_sub(a)
}

fn same_le(a: f64, b: f64) -> bool {
    a.total_cmp(&b).is_eq()
}

/// Per-`le` deltas over `b`'s buckets; a bound missing in `a` counts as 0. `None` when a
/// bucket went down or a non-empty bucket of `a` vanished from `b` (a reset).
fn bucket_deltas(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<Vec<(f64, f64)>> {
    // Common cases first, same result as the search below: no earlier buckets, or the same
    // strictly ascending bounds on both sides (pairwise deltas).
    if a.is_empty() {
        return Some(b.iter().map(|&(le, n)| (le, n as f64)).collect());
    }
    if a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| same_le(x.0, y.0))
        && a.windows(2).all(|w| w[0].0 < w[1].0)
    {
        let mut out = Vec::with_capacity(b.len());
        for (x, y) in a.iter().zip(b) {
            out.push((y.0, delta(x.1, y.1)? as f64));
        }
        return Some(out);
    }
    for &(le, count) in a {
        if count > 0 && !b.iter().any(|&(l, _)| same_le(l, le)) {
            return None;
        }
    }
    b.iter()
        .map(|&(le, count_b)| {
            let count_a = a
                .iter()
                .find(|&&(l, _)| same_le(l, le))
                .map_or(0, |&(_, c)| c);
            delta(count_a, count_b).map(|d| (le, d as f64))
        })
        .collect()
}

/// The window between two scrapes `a` (earlier) and `b` of the same cluster, `dt_secs` apart.
/// `None` when a counter went down (restart / reset: that window is a gap) or when `dt_secs`
/// is not a positive finite number. The caller pairs `a` and `b` by [`ClusterId`]; a cluster
/// missing from `a` (Envoy's `usedonly`) can be passed as zero counters.
#[must_use]
pub fn window(a: &ClusterCounters, b: &ClusterCounters, dt_secs: f64) -> Option<LaneWindow> {
    if !(dt_secs.is_finite() && dt_secs > 0.0) || a.bad_values > 0 || b.bad_values > 0 {
        return None;
    }
    let completed = delta(a.rq_completed, b.rq_completed)?;
    let total = delta(a.rq_total, b.rq_total)?;
    let pending_overflow = delta(a.rq_pending_overflow, b.rq_pending_overflow)?;
    let cx_overflow = delta(a.cx_overflow, b.cx_overflow)?;
    delta(a.rq_time.count, b.rq_time.count)?;
    let mut xx = [0.0; 5];
    for ((d, &xa), &xb) in xx.iter_mut().zip(&a.rq_xx).zip(&b.rq_xx) {
        *d = delta(xa, xb)? as f64;
    }
    let buckets = bucket_deltas(&a.rq_time.buckets, &b.rq_time.buckets);
    let latency_unknown = buckets.is_none();
    let overflow = pending_overflow.saturating_add(cx_overflow);
    Some(LaneWindow {
        rps_completed: completed as f64 / dt_secs,
        rps_upstream_total: total as f64 / dt_secs,
        completed: completed as f64,
        xx,
        pending_overflow_per_s: pending_overflow as f64 / dt_secs,
        overflow: overflow as f64,
        buckets: buckets.unwrap_or_default(),
        breaker: breaker_state(b, overflow > 0),
        latency_unknown,
    })
}

/// Windows of every cluster of sidecar scrape `b`, against the earlier scrape `a`.
/// A cluster missing from `a` counts from zero (Envoy's `usedonly`); clusters gone from `b`
/// are left out. When `envoy_server_uptime` went down (a restart), every window is `None`.
#[must_use]
pub fn sidecar_windows(
    a: &SidecarScrape,
    b: &SidecarScrape,
    dt_secs: f64,
) -> Vec<(ClusterId, Option<LaneWindow>)> {
    b.clusters
        .iter()
        .map(|cb| (cb.id.clone(), cluster_window(a, b, cb, dt_secs)))
        .collect()
}

/// The window of one cluster `cb` of scrape `b` against the earlier scrape `a`, as
/// [`sidecar_windows`] gives it (from zero when `a` lacks the cluster, `None` after a
/// restart).
#[must_use]
pub fn cluster_window(
    a: &SidecarScrape,
    b: &SidecarScrape,
    cb: &ClusterCounters,
    dt_secs: f64,
) -> Option<LaneWindow> {
    paired_window(a, b, a.cluster(&cb.id), cb, dt_secs)
}

/// [`cluster_window`] when the caller already knows `ca`, the cluster of `a` with `cb`'s
/// id (`None`: `a` lacks it), e.g. because both scrapes list the same clusters in the same
/// order.
#[must_use]
pub fn paired_window(
    a: &SidecarScrape,
    b: &SidecarScrape,
    ca: Option<&ClusterCounters>,
    cb: &ClusterCounters,
    dt_secs: f64,
) -> Option<LaneWindow> {
    let restarted = matches!((a.uptime_secs, b.uptime_secs), (Some(ua), Some(ub)) if ub < ua);
    if restarted {
        None
    } else if let Some(ca) = ca {
        window(ca, cb, dt_secs)
    } else {
        window(&ClusterCounters::default(), cb, dt_secs)
    }
}

/// Adds two windows' cumulative bucket deltas per `le`. A side with no buckets counts as all
/// zero. Otherwise only the bounds both sides have are kept: the other side's cumulative
/// count at a bound it lacks is unknown, and guessing it would bend the percentiles.
fn merge_buckets(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    // The common case, the same strictly ascending bounds on both sides: add pairwise
    // (what the search below gives, without its quadratic cost).
    if a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| same_le(x.0, y.0))
        && a.windows(2).all(|w| w[0].0 < w[1].0)
    {
        return a.iter().zip(b).map(|(x, y)| (x.0, x.1 + y.1)).collect();
    }
    a.iter()
        .filter_map(|&(le, ca)| {
            b.iter()
                .find(|&&(l, _)| same_le(l, le))
                .map(|&(_, cb)| (le, ca + cb))
        })
        .collect()
}

/// What [`LaneWindow::merge_window`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The window was added.
    Merged,
    /// There is no window between the two scrapes ([`window`] gives `None`): nothing added.
    NoWindow,
    /// Not done here (latency bucket bounds differ): build the window with [`window`] and
    /// [`LaneWindow::merge`] it.
    Slow,
}

impl LaneWindow {
    /// Adds another sidecar's window of the same lane (same caller service): rates and
    /// deltas are added, buckets are added per `le` (bounds only one side has are dropped,
    /// see the module docs), the breaker is the worst of the two.
    pub fn merge(&mut self, other: &LaneWindow) {
        self.rps_completed += other.rps_completed;
        self.rps_upstream_total += other.rps_upstream_total;
        self.completed += other.completed;
        for (s, o) in self.xx.iter_mut().zip(other.xx) {
            *s += o;
        }
        self.pending_overflow_per_s += other.pending_overflow_per_s;
        self.overflow += other.overflow;
        if other.buckets.is_empty() {
            // All zero: nothing to add.
        } else if self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(x, y)| same_le(x.0, y.0))
            && self.buckets.windows(2).all(|w| w[0].0 < w[1].0)
        {
            // Same ascending bounds: add in place (what `merge_buckets` gives, no allocation).
            for (x, y) in self.buckets.iter_mut().zip(&other.buckets) {
                x.1 += y.1;
            }
        } else {
            self.buckets = merge_buckets(&self.buckets, &other.buckets);
        }
        self.breaker = self.breaker.worst(other.breaker);
        self.latency_unknown |= other.latency_unknown;
    }

    /// Adds the window between cluster scrapes `a` and `b` exactly as
    /// `self.merge(&window(a, b, dt_secs)?)` would, without building it (no allocation),
    /// when both have the same latency bucket bounds as `self` (the usual case); else says
    /// [`MergeOutcome::Slow`] and changes nothing.
    pub fn merge_window(
        &mut self,
        a: &ClusterCounters,
        b: &ClusterCounters,
        dt_secs: f64,
    ) -> MergeOutcome {
        if !(dt_secs.is_finite() && dt_secs > 0.0) || a.bad_values > 0 || b.bad_values > 0 {
            return MergeOutcome::NoWindow;
        }
        let (Some(completed), Some(total), Some(pending_overflow), Some(cx_overflow), Some(_)) = (
            delta(a.rq_completed, b.rq_completed),
            delta(a.rq_total, b.rq_total),
            delta(a.rq_pending_overflow, b.rq_pending_overflow),
            delta(a.cx_overflow, b.cx_overflow),
            delta(a.rq_time.count, b.rq_time.count),
        ) else {
            return MergeOutcome::NoWindow;
        };
        let mut xx = [0.0; 5];
        for ((d, &xa), &xb) in xx.iter_mut().zip(&a.rq_xx).zip(&b.rq_xx) {
            let Some(n) = delta(xa, xb) else {
                return MergeOutcome::NoWindow;
            };
            *d = n as f64;
        }
        let (ab, bb) = (&a.rq_time.buckets, &b.rq_time.buckets);
        let ascending = |v: &[(f64, u64)]| v.windows(2).all(|w| w[0].0 < w[1].0);
        if bb.is_empty() {
            // `bucket_deltas`: a non-empty bucket that vanished contradicts the histogram.
            if ab.iter().any(|&(_, n)| n > 0) {
                return MergeOutcome::Slow;
            }
        } else {
            let same_as_b = |v: &[(f64, u64)]| {
                v.len() == bb.len() && v.iter().zip(bb.iter()).all(|(x, y)| same_le(x.0, y.0))
            };
            let mine_match = self.buckets.len() == bb.len()
                && self
                    .buckets
                    .iter()
                    .zip(bb.iter())
                    .all(|(x, y)| same_le(x.0, y.0))
                && self.buckets.windows(2).all(|w| w[0].0 < w[1].0);
            if !(ab.is_empty() || (same_as_b(ab) && ascending(ab))) || !mine_match {
                return MergeOutcome::Slow;
            }
            if ab.iter().zip(bb.iter()).any(|(x, y)| y.1 < x.1) {
                return MergeOutcome::Slow;
            }
            for (i, (mine, y)) in self.buckets.iter_mut().zip(bb.iter()).enumerate() {
                let earlier = ab.get(i).map_or(0, |x| x.1);
                mine.1 += (y.1 - earlier) as f64;
            }
        }
        let overflow = pending_overflow.saturating_add(cx_overflow);
        self.rps_completed += completed as f64 / dt_secs;
        self.rps_upstream_total += total as f64 / dt_secs;
        self.completed += completed as f64;
        for (s, o) in self.xx.iter_mut().zip(xx) {
            *s += o;
        }
        self.pending_overflow_per_s += pending_overflow as f64 / dt_secs;
        self.overflow += overflow as f64;
        self.breaker = self.breaker.worst(breaker_state(b, overflow > 0));
        MergeOutcome::Merged
    }

    /// Rates, error ratio, percentiles and breaker state of this window. The error ratio's
    /// denominator is Σ of the response classes (= Δcompleted, `API_BRIEF.md` §0.6).
    #[must_use]
    pub fn stats(&self) -> WindowStats {
        let answered: f64 = self.xx.iter().sum();
        let err5xx_ratio = (answered > 0.0).then(|| self.xx[4] / answered);
        let quantile = |q| {
            if self.latency_unknown {
                None
            } else {
                quantile_ms(&self.buckets, q)
            }
        };
        WindowStats {
            rps: self.rps_completed,
            err5xx_ratio,
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            breaker: self.breaker,
        }
    }
}

/// `histogram_quantile` over bucket deltas (`q` in 0..1); `None` when the window has no requests.
///
/// Prometheus semantics: `N` = count of the `+Inf` bucket, `rank = q·N`, the first bucket
/// with a cumulative count ≥ rank is interpolated linearly between the previous bound (0 for
/// the first bucket) and its own; a rank in the `+Inf` bucket gives the largest finite bound.
/// Also `None` when `q` is `NaN`, when the last bucket is not `+Inf` or when there is no finite
/// bucket. `q` outside 0..1 is clamped. Counts are made monotonic first (as Prometheus does).
/// `buckets` must be sorted by `le`.
#[must_use]
pub fn quantile_ms(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let (&(last_le, _), finite) = buckets.split_last()?;
    if !(last_le.is_infinite() && last_le > 0.0) || finite.is_empty() {
        return None;
    }
    let n = buckets
        .iter()
        .map(|&(_, c)| c)
        .filter(|c| c.is_finite())
        .fold(0.0_f64, f64::max);
    if n <= 0.0 {
        return None;
    }
    let rank = q * n;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for (i, &(le, count)) in finite.iter().enumerate() {
        let count = if count.is_finite() {
            count.max(prev_count)
        } else {
            prev_count
        };
        if count >= rank {
            if i == 0 && le <= 0.0 {
                return Some(le);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                // Only for rank 0 in an empty first bucket.
                return Some(prev_le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

/// Breaker state from one scrape's gauges and whether an overflow counter rose in the window
/// (`GUIDE.md`, "Shared vocabulary"), worst first:
/// `Open` when `membership_healthy` is 0 (or every host is ejected);
/// `Saturated` when a default-priority `rq_open` / `rq_pending_open` / `cx_open` gauge is ≥ 1
/// or an overflow rose; `Ejecting { n, m }` when `ejections_active` = n with
/// 0 < n < m = `membership_total`; else `Closed`. Without `membership_total` an ejection
/// cannot be shown as "n of m" and counts as `Closed`.
#[must_use]
pub fn breaker_state(c: &ClusterCounters, overflow_rose: bool) -> BreakerState {
    if c.membership_healthy == Some(0) {
        return BreakerState::Open;
    }
    if c.cb_rq_open >= 1 || c.cb_rq_pending_open >= 1 || c.cb_cx_open >= 1 || overflow_rose {
        return BreakerState::Saturated;
    }
    if let (Some(ejected), Some(total)) = (c.ejections_active, c.membership_total)
        && ejected > 0
    {
        if ejected >= total {
            return BreakerState::Open;
        }
        return BreakerState::Ejecting {
            ejected: u32::try_from(ejected).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
        };
    }
    BreakerState::Closed
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the expected values are small integers, exact in f64"
)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 in (0,1], 30 in (1,5], 60 in (5,10], none beyond.
        let b = [(1.0, 10.0), (5.0, 40.0), (10.0, 100.0), (INF, 100.0)];
        assert!(close(quantile_ms(&b, 0.05), 0.5)); // first bucket: lo = 0
        assert!(close(quantile_ms(&b, 0.1), 1.0));
        assert!(close(quantile_ms(&b, 0.25), 3.0)); // 1 + 4 * 15/30
        assert!(close(quantile_ms(&b, 0.7), 7.5)); // 5 + 5 * 30/60
        assert!(close(quantile_ms(&b, 1.0), 10.0));
        assert!(close(quantile_ms(&b, 7.0), 10.0)); // clamped
        assert_eq!(quantile_ms(&b, f64::NAN), None);
    }

    #[test]
    fn quantile_edge_cases() {
        // Empty window, no buckets, no +Inf, only +Inf.
        assert_eq!(quantile_ms(&[(1.0, 0.0), (INF, 0.0)], 0.5), None);
        assert_eq!(quantile_ms(&[], 0.5), None);
        assert_eq!(quantile_ms(&[(1.0, 5.0), (2.0, 5.0)], 0.5), None);
        assert_eq!(quantile_ms(&[(INF, 5.0)], 0.5), None);
        // All in the first bucket: interpolated from 0.
        let first = [(0.5, 8.0), (1.0, 8.0), (INF, 8.0)];
        assert!(close(quantile_ms(&first, 0.5), 0.25));
        assert!(close(quantile_ms(&first, 0.99), 0.495));
        // All in +Inf: the largest finite bound.
        let inf = [(0.5, 0.0), (3_600_000.0, 0.0), (INF, 4.0)];
        assert!(close(quantile_ms(&inf, 0.5), 3_600_000.0));
        // Rank 0 in an empty first bucket, non-positive first bound.
        assert!(close(quantile_ms(&inf, 0.0), 0.0));
        assert!(close(quantile_ms(&[(-1.0, 2.0), (INF, 2.0)], 0.5), -1.0));
        // Non-monotonic counts are repaired, not a panic or a negative.
        let bumpy = [(1.0, 10.0), (2.0, 5.0), (4.0, 20.0), (INF, 20.0)];
        assert!(close(quantile_ms(&bumpy, 0.75), 3.0)); // rank 15 in (2,4]: 2 + 2 * 5/10
    }

    fn counters(completed: u64, bucket_counts: [u64; 3], overflow: u64) -> ClusterCounters {
        ClusterCounters {
            rq_total: completed - overflow,
            rq_completed: completed,
            rq_xx: [0, completed - overflow, 0, 0, overflow],
            rq_pending_overflow: overflow,
            rq_time: Histogram {
                buckets: vec![
                    (10.0, bucket_counts[0]),
                    (100.0, bucket_counts[1]),
                    (INF, bucket_counts[2]),
                ],
                sum: 0.0,
                count: bucket_counts[2],
            },
            membership_healthy: Some(2),
            membership_total: Some(2),
            ..ClusterCounters::default()
        }
    }

    #[test]
    fn window_deltas_and_stats() {
        let a = counters(100, [50, 90, 90], 10);
        let b = counters(300, [150, 270, 280], 30);
        let w = window(&a, &b, 10.0).unwrap();
        assert!((w.rps_completed - 20.0).abs() < 1e-12);
        assert!((w.rps_upstream_total - 18.0).abs() < 1e-12);
        assert!((w.pending_overflow_per_s - 2.0).abs() < 1e-12);
        assert_eq!(w.xx, [0.0, 180.0, 0.0, 0.0, 20.0]);
        assert_eq!(w.buckets, vec![(10.0, 100.0), (100.0, 180.0), (INF, 190.0)]);
        assert_eq!(w.breaker, BreakerState::Saturated); // overflow rose
        let s = w.stats();
        assert!(close(s.err5xx_ratio, 0.1));
        assert!(close(s.p50_ms, 9.5)); // rank 95 of 100 in (0,10]
        assert!(close(s.p99_ms, 100.0)); // rank 188.1 in +Inf
    }

    #[test]
    fn counter_reset_is_a_gap() {
        let a = counters(300, [150, 270, 280], 30);
        let earlier = counters(100, [50, 90, 90], 10);
        assert_eq!(window(&a, &earlier, 10.0), None);
        // Any single counter going down is enough.
        let mut cx_before = a.clone();
        cx_before.cx_overflow = 1;
        assert_eq!(window(&cx_before, &a, 10.0), None);
        // A latency bucket that went down or vanished while the counters did not: rates
        // stay, percentiles are unknown.
        let mut bucket_down = a.clone();
        bucket_down.rq_time.buckets[0].1 -= 1;
        let mut bucket_gone = a.clone();
        bucket_gone.rq_time.buckets.remove(0);
        for lying in [&bucket_down, &bucket_gone] {
            let w = window(&a, lying, 10.0).unwrap();
            assert!(w.latency_unknown);
            assert_eq!(w.stats().p50_ms, None);
            assert_eq!(w.stats().rps, 0.0);
            let mut merged = window(&counters(0, [0, 0, 0], 0), &a, 10.0).unwrap();
            assert!(merged.stats().p50_ms.is_some());
            assert_eq!(merged.merge_window(&a, lying, 10.0), MergeOutcome::Slow);
            merged.merge(&w);
            assert_eq!(
                merged.stats().p50_ms,
                None,
                "one lying sidecar: lane percentiles unknown"
            );
        }
        // A counter value that could not be a counter: a gap.
        let mut bad = a.clone();
        bad.bad_values = 1;
        assert_eq!(window(&a, &bad, 10.0), None);
        assert_eq!(window(&bad, &a, 10.0), None);
        assert_eq!(
            LaneWindow::default().merge_window(&a, &bad, 10.0),
            MergeOutcome::NoWindow
        );
        let mut count_down = a.clone();
        count_down.rq_time.count -= 1;
        assert_eq!(window(&a, &count_down, 10.0), None);
        for class in 0..5 {
            let mut before = a.clone();
            before.rq_xx[class] += 1;
            assert_eq!(window(&before, &a, 10.0), None, "class {class}");
        }
        // Same scrape twice: a zero window, not a gap; bad dt: a gap.
        let z = window(&a, &a, 10.0).unwrap();
        assert_eq!(z.stats().err5xx_ratio, None);
        assert_eq!(z.stats().p99_ms, None);
        assert_eq!(window(&a, &a, 0.0), None);
        assert_eq!(window(&a, &a, f64::NAN), None);
        assert_eq!(window(&a, &a, -1.0), None);
    }

    #[test]
    fn merge_two_sidecars() {
        let w1 = window(
            &counters(0, [0, 0, 0], 0),
            &counters(100, [60, 100, 100], 0),
            10.0,
        )
        .unwrap();
        let mut w2 = window(
            &counters(0, [0, 0, 0], 0),
            &counters(100, [0, 20, 100], 10),
            10.0,
        )
        .unwrap();
        // Sidecar 2 has one more bound (50 ms): dropped, since sidecar 1's count there is unknown.
        w2.buckets.insert(1, (50.0, 10.0));
        let mut m = LaneWindow::default();
        m.merge(&w1);
        m.merge(&w2);
        assert!((m.rps_completed - 20.0).abs() < 1e-12);
        assert!((m.rps_upstream_total - 19.0).abs() < 1e-12);
        assert!((m.completed - 200.0).abs() < 1e-12);
        assert_eq!(m.xx, [0.0, 190.0, 0.0, 0.0, 10.0]);
        assert_eq!(m.buckets, vec![(10.0, 60.0), (100.0, 120.0), (INF, 200.0)]);
        assert_eq!(m.breaker, BreakerState::Saturated);
        let s = m.stats();
        assert!(close(s.err5xx_ratio, 0.05));
        // Percentile of the summed buckets (rank 100 in (10,100]: 10 + 90 * 40/60), not the
        // average of the two sidecars' percentiles.
        assert!(close(s.p50_ms, 70.0));
        // Merging an empty window changes nothing.
        let before = m.clone();
        m.merge(&LaneWindow::default());
        assert_eq!(m, before);
    }

    #[test]
    fn breaker_rules_in_order() {
        let base = ClusterCounters {
            membership_healthy: Some(2),
            membership_total: Some(3),
            ejections_active: Some(1),
            ..ClusterCounters::default()
        };
        assert_eq!(
            breaker_state(&base, false),
            BreakerState::Ejecting {
                ejected: 1,
                total: 3
            }
        );
        assert_eq!(breaker_state(&base, true), BreakerState::Saturated);
        let open_gauge = ClusterCounters {
            cb_cx_open: 1,
            ..base.clone()
        };
        assert_eq!(breaker_state(&open_gauge, false), BreakerState::Saturated);
        let none_healthy = ClusterCounters {
            membership_healthy: Some(0),
            ..open_gauge
        };
        assert_eq!(breaker_state(&none_healthy, true), BreakerState::Open);
        let all_ejected = ClusterCounters {
            ejections_active: Some(3),
            ..base.clone()
        };
        assert_eq!(breaker_state(&all_ejected, false), BreakerState::Open);
        let calm = ClusterCounters {
            ejections_active: Some(0),
            ..base
        };
        assert_eq!(breaker_state(&calm, false), BreakerState::Closed);
        assert_eq!(
            breaker_state(&ClusterCounters::default(), false),
            BreakerState::Closed
        );
    }

    #[test]
    fn sidecar_windows_handle_new_clusters_and_restarts() {
        let id = |s: &str| ClusterId {
            source: "web".into(),
            service: s.into(),
            subset: String::new(),
        };
        let mut old = counters(100, [50, 90, 100], 0);
        old.id = id("a");
        let mut new_a = counters(200, [100, 180, 200], 0);
        new_a.id = id("a");
        let mut new_b = counters(10, [10, 10, 10], 0);
        new_b.id = id("b");
        let a = SidecarScrape {
            duplicate_series: 0,
            clusters: vec![old],
            uptime_secs: Some(100.0),
        };
        let mut b = SidecarScrape {
            duplicate_series: 0,
            clusters: vec![new_a, new_b],
            uptime_secs: Some(110.0),
        };
        let ws = sidecar_windows(&a, &b, 10.0);
        assert_eq!(ws.len(), 2);
        assert!(close(ws[0].1.as_ref().map(|w| w.rps_completed), 10.0));
        assert!(close(ws[1].1.as_ref().map(|w| w.rps_completed), 1.0));
        b.uptime_secs = Some(5.0);
        assert!(
            sidecar_windows(&a, &b, 10.0)
                .iter()
                .all(|(_, w)| w.is_none())
        );
    }
}

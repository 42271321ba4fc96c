//! History of lane stats in bounded, preallocated, two-tier rings: one [`Series`] per lane,
//! and one per (service, version) aggregated over callers, for the inspector's charts.
//! Every point carries the five values of a lane (rps, 5xx %, p50, p95, p99).
//!
//! **Fine tier**: one point per scrape interval ("slot") for [`FINE_SPAN`] (5 min). The slot
//! grid of a series starts half an interval before its first point, so a sidecar scraped
//! every interval lands mid-slot and jitter does not split or merge its windows. Several
//! updates within one slot (lanes fed by several sidecars with their own phases) keep the
//! latest, so the tier holds at most one point per interval. A slot whose lane had no data
//! (stale callers, counter reset, lane gone) is a point with `None`s: charts show a gap,
//! never a zero. A slot that saw no update at all has no point; points are timestamped, so
//! charts may also break lines where two neighbours are far apart ([`max_step`]).
//!
//! **Coarse tier**: one point per [`COARSE_STEP`] (10 s, or the interval if longer) for
//! [`HISTORY_SPAN`] (1 h), built from the fine points once their slot is closed:
//! - rps: the mean over the bucket's data points (a rate averages honestly);
//! - 5xx %: request-weighted, Σ(5xx % × rps) / Σ rps over points with a ratio (the share of
//!   the bucket's requests that failed), the plain mean when no point has traffic;
//! - p50 / p95 / p99: the **maximum** over the bucket's points. A percentile of merged
//!   windows cannot be rebuilt from per-window percentiles, and a mean would hide a spike:
//!   the coarse point shows the worst window of its bucket (an upper bound);
//! - a bucket whose points are all gaps is a gap; a bucket with some data averages the
//!   data only (the fine tier shows the partial gap while it is within 5 min);
//! - the point stands at the end of the bucket's newest window.
//!
//! Reading ([`Series::points`], [`Series::points_since`]) gives coarse points older than the
//! oldest fine point, then the fine points: 1 h in all, full resolution for the last 5 min.
//!
//! **Memory budget** (the scale issue: ≤ 300 MB for the whole dashboard with 2,000
//! services). A stored point is a `u32` millisecond offset, rps as `f32` and the other four
//! values as bfloat16 (see `Stored`; NaN = no value): [`POINT_BYTES`] = 16 bytes. At a 1 s
//! interval a series preallocates 301 fine + 361 coarse points = 662 × 16 B ≈ 10.6 KB
//! ([`Series::bytes`]), never more. 2,000 services calling ~3 services each, every tenth
//! with two versions, are ~6,450 lanes plus ~2,150 versions: ~8,600 series × 10.6 KB ≈
//! 91 MB (with five `f32`, 24-byte points, it was 137 MB). A series whose newest data point
//! is older than [`HISTORY_SPAN`] is forgotten.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::types::{BreakerState, LaneKey};
use super::{LaneState, Model};
use crate::metrics::WindowStats;

/// Span of the fine tier (one point per scrape interval).
pub const FINE_SPAN: Duration = Duration::from_mins(5);

/// Resolution of the coarse tier (the scrape interval when that is longer).
pub const COARSE_STEP: Duration = Duration::from_secs(10);

/// How far back a series reaches (the coarse tier's span).
pub const HISTORY_SPAN: Duration = Duration::from_hours(1);

/// Upper bound on the points of one tier, whatever the interval.
const MAX_POINTS: usize = 100_000;

/// The longest step between two chart points that still draws a line, for a chart window
/// of `window` at scrape interval `interval`: three intervals within the fine tier, three
/// coarse steps beyond it.
#[must_use]
pub fn max_step(interval: Duration, window: Duration) -> Duration {
    if window > FINE_SPAN {
        coarse_step(interval) * 3
    } else {
        interval * 3
    }
}

fn coarse_step(interval: Duration) -> Duration {
    COARSE_STEP.max(interval)
}

/// Stats of one completed window; all `None` when the window had no data (a gap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryPoint {
    /// End of the window (for a gap: when it was noticed).
    pub at: Instant,
    /// Completed requests per second.
    pub rps: Option<f64>,
    /// 5xx share in percent (0–100); `None` also when the window had no request.
    pub err_pct: Option<f64>,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
}

impl HistoryPoint {
    /// A window without data.
    #[must_use]
    pub fn gap(at: Instant) -> Self {
        Self {
            at,
            rps: None,
            err_pct: None,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        }
    }

    /// A window with data.
    #[must_use]
    pub fn from_stats(at: Instant, stats: &WindowStats) -> Self {
        Self {
            at,
            rps: Some(stats.rps),
            err_pct: stats.err5xx_ratio.map(|r| r * 100.0),
            p50_ms: stats.p50_ms,
            p95_ms: stats.p95_ms,
            p99_ms: stats.p99_ms,
        }
    }

    /// Drops values a chart cannot show and that no window can give: not finite, negative,
    /// or beyond `f32` (stored as `f32`, they would be infinite). Without its rate the point
    /// is a gap.
    fn keep_plottable(&mut self) {
        let plottable = |v: &mut Option<f64>| {
            *v = v.filter(|v| v.is_finite() && (0.0..=f64::from(f32::MAX)).contains(v));
        };
        for v in [
            &mut self.rps,
            &mut self.err_pct,
            &mut self.p50_ms,
            &mut self.p95_ms,
            &mut self.p99_ms,
        ] {
            plottable(v);
        }
        if self.rps.is_none() {
            *self = Self::gap(self.at);
        }
    }

    /// Whether this point is a gap (no data in its window).
    #[must_use]
    pub fn is_gap(&self) -> bool {
        self.rps.is_none()
    }
}

/// A point as stored: milliseconds from the series' origin, rps as `f32`, the 5xx % and the
/// three percentiles as bfloat16 (`NaN` = `None`): 16 bytes instead of 96.
///
/// bfloat16 keeps `f32`'s range with an 8-bit mantissa: within ±0.4 % of the value (2.5,
/// 5, 10, 50, 100 stay exact). The percentiles are interpolated inside Envoy's latency
/// buckets (100 ms, 250 ms, …), an error far larger, and a chart cannot show 0.4 %; rates
/// keep `f32` (7 digits).
#[derive(Debug, Clone, Copy)]
struct Stored {
    offset_ms: u32,
    rps: f32,
    /// err %, p50, p95, p99.
    rest: [u16; 4],
}

impl Stored {
    fn new(offset_ms: u32, values: [f32; 5]) -> Self {
        let [rps, err, p50, p95, p99] = values;
        Self {
            offset_ms,
            rps,
            rest: [err, p50, p95, p99].map(to_bf16),
        }
    }

    /// rps, err %, p50, p95, p99.
    fn values(&self) -> [f32; 5] {
        let [err, p50, p95, p99] = self.rest.map(from_bf16);
        [self.rps, err, p50, p95, p99]
    }

    fn is_gap(&self) -> bool {
        self.rps.is_nan()
    }
}

/// `v` as bfloat16, rounded to nearest (ties to even); NaN stays NaN.
fn to_bf16(v: f32) -> u16 {
    if v.is_nan() {
        return 0x7FC0;
    }
    let bits = v.to_bits();
    let rounding = 0x7FFF + ((bits >> 16) & 1);
    (bits.saturating_add(rounding) >> 16) as u16
}

fn from_bf16(v: u16) -> f32 {
    f32::from_bits(u32::from(v) << 16)
}

/// Bytes one stored point takes in a ring.
pub const POINT_BYTES: usize = std::mem::size_of::<Stored>();

fn pack(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |v| v as f32)
}

fn unpack(v: f32) -> Option<f64> {
    (!v.is_nan()).then_some(f64::from(v))
}

/// One bounded ring of stored points, oldest first, preallocated.
#[derive(Debug, Clone)]
struct Tier {
    points: VecDeque<Stored>,
    capacity: usize,
    span_ms: u64,
}

impl Tier {
    fn new(step: Duration, span: Duration) -> Self {
        let capacity = ((span.as_secs_f64() / step.as_secs_f64()).ceil() as usize)
            .saturating_add(1)
            .clamp(2, MAX_POINTS);
        Self {
            points: VecDeque::with_capacity(capacity),
            capacity,
            span_ms: u64::try_from(span.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Appends, dropping the oldest point when full and points older than the span.
    fn push(&mut self, point: Stored) {
        if self.points.len() >= self.capacity {
            self.points.pop_front();
        }
        while let Some(front) = self.points.front()
            && u64::from(point.offset_ms).saturating_sub(u64::from(front.offset_ms)) > self.span_ms
        {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// Index of the first point at or after `offset_ms`.
    fn first_from(&self, offset_ms: u64) -> usize {
        self.points
            .partition_point(|s| u64::from(s.offset_ms) < offset_ms)
    }
}

/// The coarse bucket being filled from closed fine slots (see module docs).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    index: u64,
    /// Offset of the newest point in the bucket.
    last_ms: u32,
    data_points: u32,
    rps_sum: f64,
    /// Σ err % × rps and Σ rps over points with a 5xx ratio.
    err_weighted: f64,
    err_weight: f64,
    /// Σ err % and count, for buckets without traffic.
    err_sum: f64,
    err_points: u32,
    /// Max p50, p95, p99 (NaN = none yet).
    p_max: [f32; 3],
}

impl Bucket {
    fn new(index: u64) -> Self {
        Self {
            index,
            last_ms: 0,
            data_points: 0,
            rps_sum: 0.0,
            err_weighted: 0.0,
            err_weight: 0.0,
            err_sum: 0.0,
            err_points: 0,
            p_max: [f32::NAN; 3],
        }
    }

    fn add(&mut self, s: &Stored) {
        self.last_ms = self.last_ms.max(s.offset_ms);
        if s.is_gap() {
            return;
        }
        let [rps, err, p50, p95, p99] = s.values();
        self.data_points += 1;
        self.rps_sum += f64::from(rps);
        if !err.is_nan() {
            self.err_weighted += f64::from(err) * f64::from(rps);
            self.err_weight += f64::from(rps);
            self.err_sum += f64::from(err);
            self.err_points += 1;
        }
        for (max, v) in self.p_max.iter_mut().zip([p50, p95, p99]) {
            // `f32::max` ignores NaN on either side: a missing percentile never wins.
            *max = max.max(v);
        }
    }

    fn point(&self) -> Stored {
        if self.data_points == 0 {
            return Stored::new(self.last_ms, [f32::NAN; 5]);
        }
        let rps = self.rps_sum / f64::from(self.data_points);
        let err = if self.err_weight > 0.0 {
            self.err_weighted / self.err_weight
        } else if self.err_points > 0 {
            self.err_sum / f64::from(self.err_points)
        } else {
            f64::NAN
        };
        let [p50, p95, p99] = self.p_max;
        Stored::new(self.last_ms, [rps as f32, err as f32, p50, p95, p99])
    }
}

/// A bounded two-tier history of [`HistoryPoint`]s (see module docs). Rates are kept as
/// `f32` (7 significant digits), the 5xx share and percentiles as bfloat16 (±0.4 %), times
/// to the millisecond: plenty for charts.
#[derive(Debug, Clone)]
pub struct Series {
    fine: Tier,
    coarse: Tier,
    /// The coarse bucket being filled; its points are all still in the fine tier.
    open: Option<Bucket>,
    interval: Duration,
    coarse_step_ms: u64,
    /// Start of slot 0, half an interval before the first point; stored times are offsets
    /// from it.
    origin: Instant,
    /// Slot of the newest point.
    last_slot: u128,
    /// Source time (`updated_at`) of the newest data recorded, to skip unchanged lanes.
    last_source: Option<Instant>,
    /// Time of the newest data point, or creation while there is none (for forgetting).
    last_data_at: Instant,
}

impl Series {
    /// An empty series for points every `interval`, tiers as in the module docs
    /// (preallocated); `created` counts as the newest data until there is some.
    #[must_use]
    pub fn new(interval: Duration, created: Instant) -> Self {
        Self::with_spans(interval, FINE_SPAN, COARSE_STEP, HISTORY_SPAN, created)
    }

    /// An empty series with other tier sizes (tests): fine points every `interval` for
    /// `fine_span`, coarse points every `coarse_step` (at least `interval`) for `span`.
    #[must_use]
    pub fn with_spans(
        interval: Duration,
        fine_span: Duration,
        coarse_step: Duration,
        span: Duration,
        created: Instant,
    ) -> Self {
        let interval = if interval.is_zero() {
            Duration::from_secs(1)
        } else {
            interval
        };
        let coarse_step = coarse_step.max(interval);
        Self {
            fine: Tier::new(interval, fine_span),
            coarse: Tier::new(coarse_step, span),
            open: None,
            interval,
            coarse_step_ms: u64::try_from(coarse_step.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            origin: created,
            last_slot: 0,
            last_source: None,
            last_data_at: created,
        }
    }

    fn store(&self, p: &HistoryPoint) -> Stored {
        let offset = p.at.saturating_duration_since(self.origin);
        Stored::new(
            u32::try_from(offset.as_millis()).unwrap_or(u32::MAX),
            [p.rps, p.err_pct, p.p50_ms, p.p95_ms, p.p99_ms].map(pack),
        )
    }

    fn at_of(&self, s: &Stored) -> Instant {
        self.origin + Duration::from_millis(s.offset_ms.into())
    }

    fn load(&self, s: &Stored) -> HistoryPoint {
        let [rps, err_pct, p50_ms, p95_ms, p99_ms] = s.values().map(unpack);
        HistoryPoint {
            at: self.at_of(s),
            rps,
            err_pct,
            p50_ms,
            p95_ms,
            p99_ms,
        }
    }

    /// How many coarse points are older than the oldest fine point (the ones shown).
    fn coarse_shown(&self) -> usize {
        match self.fine.points.front() {
            Some(first) => self.coarse.first_from(first.offset_ms.into()),
            None => self.coarse.points.len(),
        }
    }

    /// All points, oldest first: coarse ones older than the fine tier, then the fine tier.
    #[must_use = "an iterator does nothing unless consumed"]
    pub fn points(&self) -> impl DoubleEndedIterator<Item = HistoryPoint> {
        let shown = self.coarse_shown();
        self.coarse
            .points
            .range(..shown)
            .chain(self.fine.points.iter())
            .map(|s| self.load(s))
    }

    /// Points no older than `window` before `now`, oldest first.
    #[must_use = "an iterator does nothing unless consumed"]
    pub fn points_since(
        &self,
        now: Instant,
        window: Duration,
    ) -> impl DoubleEndedIterator<Item = HistoryPoint> {
        let start_ms = now.checked_sub(window).map_or(0, |start| {
            u64::try_from(start.saturating_duration_since(self.origin).as_millis())
                .unwrap_or(u64::MAX)
        });
        let shown = self.coarse_shown();
        let coarse_first = self.coarse.first_from(start_ms).min(shown);
        let fine_first = self.fine.first_from(start_ms);
        self.coarse
            .points
            .range(coarse_first..shown)
            .chain(self.fine.points.range(fine_first..))
            .map(|s| self.load(s))
    }

    /// The newest point.
    #[must_use]
    pub fn latest(&self) -> Option<HistoryPoint> {
        self.fine.points.back().map(|s| self.load(s))
    }

    /// How many points the two tiers hold at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.fine.capacity + self.coarse.capacity
    }

    /// Bytes the two tiers' rings take (preallocated, fixed).
    #[must_use]
    pub fn bytes(&self) -> usize {
        (self.fine.points.capacity() + self.coarse.points.capacity()) * POINT_BYTES
    }

    /// Number of points [`Series::points`] gives.
    #[must_use]
    pub fn len(&self) -> usize {
        self.coarse_shown() + self.fine.points.len()
    }

    /// Whether the series holds no point.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fine.points.is_empty()
    }

    fn slot_of(&self, at: Instant) -> u128 {
        at.saturating_duration_since(self.origin).as_nanos() / self.interval.as_nanos()
    }

    /// A fine slot closed: its point goes into the coarse bucket of its time.
    fn close_slot(&mut self, closed: Stored) {
        let index = u64::from(closed.offset_ms) / self.coarse_step_ms;
        let bucket = match &mut self.open {
            Some(open) if open.index == index => open,
            open => {
                if let Some(done) = open.take() {
                    self.coarse.push(done.point());
                }
                open.insert(Bucket::new(index))
            }
        };
        bucket.add(&closed);
    }

    /// Adds a point: a new slot pushes (dropping the oldest when full), the same slot
    /// replaces the newest point, except that a gap never replaces data. Times never go
    /// backwards in the ring.
    pub fn record(&mut self, mut point: HistoryPoint) {
        point.keep_plottable();
        let Some(last) = self.fine.points.back().copied() else {
            // The first point anchors the slot grid half an interval before it.
            self.origin = point.at.checked_sub(self.interval / 2).unwrap_or(point.at);
            self.last_slot = self.slot_of(point.at);
            if !point.is_gap() {
                self.last_data_at = point.at;
            }
            let stored = self.store(&point);
            self.fine.points.push_back(stored);
            return;
        };
        let slot = self.slot_of(point.at);
        point.at = point.at.max(self.at_of(&last));
        if !point.is_gap() {
            self.last_data_at = point.at;
        }
        if slot <= self.last_slot {
            if !point.is_gap() || last.is_gap() {
                let stored = self.store(&point);
                if let Some(back) = self.fine.points.back_mut() {
                    *back = stored;
                }
            }
            return;
        }
        self.close_slot(last);
        self.last_slot = slot;
        let stored = self.store(&point);
        self.fine.push(stored);
    }

    /// Records a lane's or version's current data: new data (a source time not recorded
    /// yet) as a point at that time, no data as a gap at `now`; unchanged data is skipped.
    fn observe(&mut self, now: Instant, data: Option<(Option<Instant>, WindowStats)>) {
        match data {
            Some((Some(source), stats)) => {
                if self.last_source != Some(source) {
                    self.last_source = Some(source);
                    self.record(HistoryPoint::from_stats(source, &stats));
                }
            }
            // A source without window times: one point per slot, latest wins.
            Some((None, stats)) => self.record(HistoryPoint::from_stats(now, &stats)),
            None => self.record(HistoryPoint::gap(now)),
        }
    }

    /// Whether the newest data point has aged out of the span.
    fn forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_data_at)
            > Duration::from_millis(self.coarse.span_ms)
    }
}

/// All history rings of the model.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    lanes: BTreeMap<LaneKey, Series>,
    /// service → version → series.
    versions: BTreeMap<String, BTreeMap<String, Series>>,
}

impl History {
    pub(crate) fn lane(&self, key: &LaneKey) -> Option<&Series> {
        self.lanes.get(key)
    }
}

impl Model {
    /// History of one lane, oldest first.
    #[must_use]
    pub fn lane_history(&self, key: &LaneKey) -> Option<&Series> {
        self.history.lanes.get(key)
    }

    /// History of one version of `service`, aggregated over all callers (windows merged
    /// before percentiles, never averaged).
    #[must_use]
    pub fn version_history(&self, service: &str, version: &str) -> Option<&Series> {
        self.history.versions.get(service)?.get(version)
    }

    /// Benchmark and snapshot support: records `points` (oldest first, older than any point
    /// the model records later) straight into the history of lane `key`, creating its
    /// series. Bypasses the derivation from sidecar windows, so an hour of synthetic history
    /// for thousands of lanes takes a second (`synthetic::LargeSpine::model`).
    pub fn backfill_lane_history(
        &mut self,
        key: &LaneKey,
        points: impl IntoIterator<Item = HistoryPoint>,
    ) {
        let interval = self.scrape_interval;
        let mut points = points.into_iter().peekable();
        let Some(first) = points.peek().map(|p| p.at) else {
            return;
        };
        let series = self
            .history
            .lanes
            .entry(key.clone())
            .or_insert_with(|| Series::new(interval, first));
        points.for_each(|p| series.record(p));
    }

    /// As [`Model::backfill_lane_history`], for the history of one version of `service`.
    pub fn backfill_version_history(
        &mut self,
        service: &str,
        version: &str,
        points: impl IntoIterator<Item = HistoryPoint>,
    ) {
        let interval = self.scrape_interval;
        let mut points = points.into_iter().peekable();
        let Some(first) = points.peek().map(|p| p.at) else {
            return;
        };
        let series = self
            .history
            .versions
            .entry(service.to_owned())
            .or_default()
            .entry(version.to_owned())
            .or_insert_with(|| Series::new(interval, first));
        points.for_each(|p| series.record(p));
    }

    /// Number of history series (lanes and versions) and the bytes their rings take.
    #[must_use]
    pub fn history_footprint(&self) -> (usize, usize) {
        let all = self
            .history
            .lanes
            .values()
            .chain(self.history.versions.values().flat_map(BTreeMap::values));
        all.fold((0, 0), |(n, bytes), s| (n + 1, bytes + s.bytes()))
    }

    /// Adds this update's points to every lane and version series (see module docs).
    /// Returns whether a lane's series was forgotten.
    pub(super) fn record_history(&mut self, now: Instant) -> bool {
        let interval = self.scrape_interval;
        let new_series = || Series::new(interval, now);
        let history = &mut self.history;

        // Lanes and their series side by side (both sorted by key): a lane's data goes into
        // its series, a series whose lane is gone takes a gap, a new lane gets a series.
        let mut missing = Vec::new();
        let mut series_iter = history.lanes.iter_mut().peekable();
        for (key, lane) in &self.lanes {
            let data = lane.stats.clone().map(|s| (lane.updated_at, s));
            while let Some((_, gone)) = series_iter.next_if(|(k, _)| *k < key) {
                gone.observe(now, None);
            }
            if let Some((_, series)) = series_iter.next_if(|(k, _)| *k == key) {
                series.observe(now, data);
            } else {
                missing.push((key, data));
            }
        }
        for (_, gone) in series_iter {
            gone.observe(now, None);
        }
        for (key, data) in missing {
            let mut series = new_series();
            series.observe(now, data);
            history.lanes.insert(key.clone(), series);
        }
        let before = history.lanes.len();
        history.lanes.retain(|_, s| !s.forgotten(now));
        let forgot_lanes = history.lanes.len() < before;

        // Per version: the lanes with data of every caller, and their newest window end.
        let mut groups: BTreeMap<(&str, &str), VersionLanes> = BTreeMap::new();
        for lane in self.lanes.values() {
            let group = groups
                .entry((lane.key.service.as_str(), lane.key.version.as_str()))
                .or_default();
            if lane.stats.is_some() {
                group.0 = group.0.max(lane.updated_at);
                group.1.push(lane);
            }
        }
        for ((service, version), (newest, lanes)) in &groups {
            let Some(versions) = get_or_insert(&mut history.versions, service, BTreeMap::new)
            else {
                continue;
            };
            let Some(series) = get_or_insert(versions, version, new_series) else {
                continue;
            };
            if lanes.is_empty() {
                series.observe(now, None);
                continue;
            }
            if newest.is_some() && series.last_source == *newest {
                continue; // nothing new: skip the merge
            }
            series.observe(now, Some((*newest, version_stats(lanes))));
        }
        for (service, versions) in &mut history.versions {
            for (version, series) in versions.iter_mut() {
                if !groups.contains_key(&(service.as_str(), version.as_str())) {
                    series.observe(now, None);
                }
            }
            versions.retain(|_, s| !s.forgotten(now));
        }
        history.versions.retain(|_, v| !v.is_empty());
        forgot_lanes
    }
}

/// Stats of one version over its callers' lanes with data: windows merged (counts and
/// buckets added) before percentiles. A lane source without windows (stats only) gives
/// summed rates and the request-weighted 5xx share, and no percentiles unless there is a
/// single lane: percentiles are never averaged.
fn version_stats(lanes: &[&LaneState]) -> WindowStats {
    let windows: Vec<_> = lanes.iter().filter_map(|l| l.window.as_ref()).collect();
    if let [first, rest @ ..] = windows.as_slice()
        && windows.len() == lanes.len()
    {
        let mut merged = (*first).clone();
        for w in rest {
            merged.merge(w);
        }
        return merged.stats();
    }
    let stats: Vec<&WindowStats> = lanes.iter().filter_map(|l| l.stats.as_ref()).collect();
    if let [only] = stats.as_slice() {
        return (*only).clone();
    }
    let rps: f64 = stats.iter().map(|s| s.rps).sum();
    let errors: f64 = stats
        .iter()
        .filter_map(|s| s.err5xx_ratio.map(|r| r * s.rps))
        .sum();
    let answered: f64 = stats
        .iter()
        .filter(|s| s.err5xx_ratio.is_some())
        .map(|s| s.rps)
        .sum();
    WindowStats {
        rps,
        err5xx_ratio: (answered > 0.0).then(|| errors / answered),
        p50_ms: None,
        p95_ms: None,
        p99_ms: None,
        breaker: stats
            .iter()
            .map(|s| s.breaker)
            .fold(BreakerState::Closed, BreakerState::worst),
    }
}

/// The newest window end among a version's lanes with data, and those lanes.
type VersionLanes<'a> = (Option<Instant>, Vec<&'a LaneState>);

/// The value at `key`, inserted with `make` when missing (no key allocation when present;
/// always `Some`).
fn get_or_insert<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    make: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), make());
    }
    map.get_mut(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LaneWindow;
    use crate::model::tests_support::{lane_key, stats_window, test_model};

    const SEC: Duration = Duration::from_secs(1);

    /// `p` as the ring gives it back (values through `f32`).
    fn as_stored(p: HistoryPoint) -> HistoryPoint {
        let values = [p.rps, p.err_pct, p.p50_ms, p.p95_ms, p.p99_ms].map(pack);
        let [rps, err_pct, p50_ms, p95_ms, p99_ms] = Stored::new(0, values).values().map(unpack);
        HistoryPoint {
            rps,
            err_pct,
            p50_ms,
            p95_ms,
            p99_ms,
            ..p
        }
    }

    #[test]
    fn bfloat16_keeps_round_values_and_is_within_half_a_percent() {
        for v in [0.0_f32, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0, 250.0] {
            assert_eq!(from_bf16(to_bf16(v)).to_bits(), v.to_bits(), "{v} is exact");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert!(from_bf16(to_bf16(f32::INFINITY)).is_infinite());
        for v in [0.012_f32, 9.090_909, 17.3, 333.3, 41_843.75, 3.6e6] {
            let back = from_bf16(to_bf16(v));
            assert!(((back - v) / v).abs() <= 1.0 / 256.0, "{v} → {back}");
        }
    }

    fn point(at: Instant, rps: f64) -> HistoryPoint {
        HistoryPoint {
            at,
            rps: Some(rps),
            err_pct: Some(0.0),
            p50_ms: Some(1.0),
            p95_ms: Some(2.0),
            p99_ms: Some(3.0),
        }
    }

    #[test]
    fn values_a_chart_cannot_show_are_dropped_and_no_rate_is_a_gap() {
        let t0 = Instant::now();
        let mut s = fine_only(Duration::from_secs(10), t0);
        let mut odd = point(t0, 5.0);
        odd.err_pct = Some(f64::NAN);
        odd.p50_ms = Some(-1.0);
        odd.p95_ms = Some(1e300);
        odd.p99_ms = Some(f64::INFINITY);
        s.record(odd);
        let got = s.latest().unwrap();
        assert_eq!(got.rps, Some(5.0));
        assert_eq!(
            (got.err_pct, got.p50_ms, got.p95_ms, got.p99_ms),
            (None, None, None, None)
        );
        for rps in [f64::NAN, f64::INFINITY, -3.0, 1e300] {
            s.record(point(t0 + SEC * 2, rps));
            assert!(s.latest().unwrap().is_gap(), "{rps}");
            assert!(
                s.points()
                    .all(|p| p.rps.is_none_or(|r| r.is_finite() && r >= 0.0)),
                "{rps}"
            );
        }
    }

    /// A series with only a fine tier in view (the coarse bucket never closes).
    fn fine_only(span: Duration, t0: Instant) -> Series {
        Series::with_spans(SEC, span, HISTORY_SPAN, HISTORY_SPAN, t0)
    }

    #[test]
    fn fine_tier_is_preallocated_bounded_and_drops_oldest() {
        let t0 = Instant::now();
        let mut s = fine_only(Duration::from_secs(10), t0);
        assert_eq!(s.fine.capacity, 11);
        assert!(s.fine.points.capacity() >= 11, "preallocated");
        for i in 0..30_u32 {
            s.record(point(t0 + SEC * i, f64::from(i)));
        }
        assert_eq!(s.len(), 11);
        let rps: Vec<f64> = s.points().filter_map(|p| p.rps).collect();
        assert_eq!(rps, (19..30).map(f64::from).collect::<Vec<_>>());
        // A sparse series drops points older than the span even before it is full.
        let mut sparse = fine_only(Duration::from_secs(10), t0);
        sparse.record(point(t0, 1.0));
        sparse.record(point(t0 + SEC * 5, 2.0));
        sparse.record(point(t0 + SEC * 14, 3.0));
        let rps: Vec<f64> = sparse.points().filter_map(|p| p.rps).collect();
        assert_eq!(rps, vec![2.0, 3.0]);
    }

    #[test]
    fn default_tiers_and_their_bytes() {
        let s = Series::new(SEC, Instant::now());
        // 5 min at 1 s and 1 h at 10 s, both ends included.
        assert_eq!((s.fine.capacity, s.coarse.capacity), (301, 361));
        assert_eq!(POINT_BYTES, 16);
        assert!(
            s.bytes() >= 662 * POINT_BYTES,
            "preallocated: {}",
            s.bytes()
        );
        assert!(s.bytes() < 700 * POINT_BYTES, "{}", s.bytes());
        // A slow scrape interval coarsens both tiers, never below one point per interval.
        let slow = Series::new(Duration::from_secs(30), Instant::now());
        assert_eq!((slow.fine.capacity, slow.coarse.capacity), (11, 121));
    }

    #[test]
    fn two_hours_of_points_keep_the_memory_fixed() {
        let t0 = Instant::now();
        let mut s = Series::new(SEC, t0);
        let bytes = s.bytes();
        for i in 0..7_200_u32 {
            let p = if i % 100 < 3 {
                HistoryPoint::gap(t0 + SEC * i)
            } else {
                point(t0 + SEC * i, f64::from(i))
            };
            s.record(p);
            assert_eq!(s.bytes(), bytes, "no growth at point {i}");
        }
        assert_eq!(s.fine.points.len(), 301);
        assert_eq!(s.coarse.points.len(), 361);
        let now = t0 + SEC * 7_199;
        let all: Vec<HistoryPoint> = s.points().collect();
        let oldest = all.first().map(|p| now.duration_since(p.at));
        assert!(
            oldest.is_some_and(|age| age <= HISTORY_SPAN + SEC * 10),
            "{oldest:?}"
        );
        assert!(all.windows(2).all(|w| w[0].at < w[1].at), "time order");
        // Full resolution for the last 5 min, 10 s steps before.
        let fine = all.iter().filter(|p| now.duration_since(p.at) <= FINE_SPAN);
        assert_eq!(fine.count(), 301);
        assert_eq!(all.len(), s.len());
        let hour: Vec<HistoryPoint> = s.points_since(now, Duration::from_hours(1)).collect();
        assert!(
            hour.iter()
                .all(|p| now.duration_since(p.at) <= HISTORY_SPAN)
        );
        assert!((620..=632).contains(&hour.len()), "{}", hour.len());
        assert!(
            hour.iter().all(|p| p.rps != Some(0.0)),
            "gaps are never zeros"
        );
    }

    #[test]
    fn coarse_points_average_rates_weight_errors_and_keep_the_worst_percentile() {
        let t0 = Instant::now();
        let mut s = Series::new(SEC, t0);
        // Bucket 0 holds seconds 0..=9 (the grid starts half a second before t0).
        for k in 0..400_u32 {
            let p = if k < 10 {
                HistoryPoint {
                    at: t0 + SEC * k,
                    rps: Some(f64::from(k + 1)),
                    err_pct: Some(if k == 9 { 50.0 } else { 0.0 }),
                    p50_ms: Some(2.0),
                    p95_ms: if k == 4 { None } else { Some(4.0) },
                    p99_ms: Some(if k == 3 { 100.0 } else { 5.0 }),
                }
            } else {
                point(t0 + SEC * k, 7.0)
            };
            s.record(p);
        }
        let first = s.points().next().expect("a coarse point");
        assert_eq!(first.at, t0 + SEC * 9, "at the end of its newest window");
        assert_eq!(first.rps, Some(5.5), "mean of 1..=10");
        // 50 % of the 10 rps of second 9, over 55 requests per second in all (bfloat16).
        let err = first.err_pct.expect("a ratio");
        assert!((err - 500.0 / 55.0).abs() < 0.04, "{err}");
        assert_eq!(first.p50_ms, Some(2.0));
        assert_eq!(first.p95_ms, Some(4.0), "a missing percentile never wins");
        assert_eq!(first.p99_ms, Some(100.0), "the worst window, not a mean");
    }

    #[test]
    fn gaps_stay_gaps_in_the_coarse_tier() {
        let t0 = Instant::now();
        let mut s = Series::new(SEC, t0);
        for k in 0..400_u32 {
            // Seconds 20..40 fill buckets 2 and 3: no data at all. Seconds 45..=47 are a
            // partial gap in bucket 4.
            let p = if (20..40).contains(&k) || (45..=47).contains(&k) {
                HistoryPoint::gap(t0 + SEC * k)
            } else {
                point(t0 + SEC * k, f64::from(k))
            };
            s.record(p);
        }
        let coarse: Vec<HistoryPoint> = s.points().take(6).collect();
        let rps: Vec<Option<f64>> = coarse.iter().map(|p| p.rps).collect();
        // Bucket 4 averages its seven seconds with data: (40+41+42+43+44+48+49) / 7.
        assert_eq!(
            rps,
            vec![
                Some(4.5),
                Some(14.5),
                None,
                None,
                Some(f64::from((307.0_f64 / 7.0) as f32)),
                Some(54.5)
            ]
        );
        assert!(coarse[2].is_gap() && coarse[2].p99_ms.is_none() && coarse[2].err_pct.is_none());
        assert_eq!(coarse[3].at, t0 + SEC * 39);
    }

    #[test]
    fn one_point_per_slot_latest_wins_and_gaps_never_hide_data() {
        let t0 = Instant::now();
        let mut s = Series::new(SEC, t0);
        s.record(point(t0, 1.0));
        // Jitter around the interval stays one point per scrape.
        s.record(point(t0 + Duration::from_millis(1_400), 2.0));
        s.record(point(t0 + Duration::from_millis(1_450), 3.0)); // same slot: replaces
        s.record(HistoryPoint::gap(t0 + Duration::from_millis(1_480))); // ignored
        s.record(point(t0 + Duration::from_millis(1_600), 4.0)); // next slot
        s.record(HistoryPoint::gap(t0 + Duration::from_secs(3)));
        s.record(point(t0 + Duration::from_millis(3_100), 5.0)); // same slot: replaces the gap
        let got: Vec<Option<f64>> = s.points().map(|p| p.rps).collect();
        assert_eq!(got, vec![Some(1.0), Some(3.0), Some(4.0), Some(5.0)]);
        // Times never go backwards.
        s.record(point(t0, 6.0));
        assert_eq!(
            s.latest().map(|p| p.at),
            Some(t0 + Duration::from_millis(3_100))
        );
    }

    #[test]
    fn points_since_cuts_the_window() {
        let t0 = Instant::now();
        let mut s = Series::new(SEC, t0);
        for i in 0..120_u32 {
            s.record(point(t0 + SEC * i, f64::from(i)));
        }
        let now = t0 + SEC * 119;
        let last_min: Vec<f64> = s
            .points_since(now, Duration::from_mins(1))
            .filter_map(|p| p.rps)
            .collect();
        assert_eq!(last_min, (59..120).map(f64::from).collect::<Vec<_>>());
        assert_eq!(s.points_since(now, Duration::from_hours(1)).count(), 120);
    }

    #[test]
    fn charts_join_coarse_points_beyond_the_fine_span() {
        assert_eq!(max_step(SEC, Duration::from_mins(5)), SEC * 3);
        assert_eq!(max_step(SEC, Duration::from_hours(1)), SEC * 30);
    }

    #[test]
    fn lanes_and_versions_record_one_point_per_window_with_gaps() {
        let mut m = test_model();
        let t0 = Instant::now();
        let gw = lane_key("gateway", "identity", "v1");
        let portal = lane_key("portal", "identity", "v1");
        // Two callers of identity v1: 10 rps in the 5 ms bucket, 10 rps (2 errors) in the
        // 50 ms one.
        let set = |m: &mut Model, key: &LaneKey, at: Instant, w: Option<LaneWindow>| {
            m.lanes.insert(
                key.clone(),
                LaneState {
                    key: key.clone(),
                    stats: w.as_ref().map(LaneWindow::stats),
                    updated_at: w.as_ref().map(|_| at),
                    window: w,
                },
            );
        };
        let fast = stats_window(10.0, 0.0, 5.0);
        set(&mut m, &gw, t0, Some(fast.clone()));
        set(&mut m, &portal, t0, Some(stats_window(10.0, 2.0, 50.0)));
        m.lanes_updated(t0, m.wall_at(t0));
        // An update caused by someone else's scrape changes nothing.
        let later = t0 + Duration::from_millis(300);
        m.lanes_updated(later, m.wall_at(later));
        let t1 = t0 + SEC;
        set(&mut m, &gw, t1, None); // gateway's sidecars went stale
        m.lanes_updated(t1, m.wall_at(t1));

        let lane = m.lane_history(&gw).expect("gateway lane history");
        assert_eq!(
            lane.points().collect::<Vec<_>>(),
            vec![
                as_stored(HistoryPoint::from_stats(t0, &fast.stats())),
                HistoryPoint::gap(t1),
            ]
        );
        assert_eq!(lane.points().next().and_then(|p| p.p50_ms), Some(2.5));
        let version = m.version_history("identity", "v1").expect("v1 history");
        let points: Vec<HistoryPoint> = version.points().collect();
        assert_eq!(points.len(), 1, "portal's lane did not change at t1");
        // Merged: 20 rps, 2 errors in 20, p50 from the summed buckets (rank 10 of 20 is the
        // top of the 5 ms bucket), not the mean of the callers' 2.5 and 30 ms.
        assert_eq!(
            points[0],
            HistoryPoint {
                at: t0,
                rps: Some(20.0),
                err_pct: Some(10.0),
                p50_ms: Some(5.0),
                ..points[0]
            }
        );
        assert!(m.version_history("identity", "v2").is_none());
    }

    #[test]
    fn versions_from_a_source_without_windows_never_average_percentiles() {
        let stats = |rps: f64, err: f64, p99: f64| WindowStats {
            rps,
            err5xx_ratio: Some(err),
            p50_ms: Some(p99 / 2.0),
            p95_ms: Some(p99),
            p99_ms: Some(p99),
            breaker: BreakerState::Closed,
        };
        let lane = |caller: &str, s: WindowStats| LaneState {
            key: lane_key(caller, "identity", "v1"),
            stats: Some(s),
            window: None,
            updated_at: None,
        };
        let a = lane("gateway", stats(30.0, 0.0, 8.0));
        let b = lane("portal", stats(10.0, 0.5, 100.0));
        assert_eq!(version_stats(&[&a]), stats(30.0, 0.0, 8.0));
        assert_eq!(
            version_stats(&[&a, &b]),
            WindowStats {
                rps: 40.0,
                err5xx_ratio: Some(5.0 / 40.0),
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
                breaker: BreakerState::Closed,
            }
        );
    }

    #[test]
    fn a_lane_without_data_is_forgotten_after_the_span() {
        let mut m = test_model();
        let t0 = Instant::now();
        let key = lane_key("gateway", "photo", "v1");
        m.lanes.insert(
            key.clone(),
            LaneState {
                key: key.clone(),
                stats: Some(stats_window(1.0, 0.0, 5.0).stats()),
                window: Some(stats_window(1.0, 0.0, 5.0)),
                updated_at: Some(t0),
            },
        );
        m.lanes_updated(t0, m.wall_at(t0));
        m.lanes.clear(); // the lane vanished
        let t1 = t0 + SEC * 60;
        m.lanes_updated(t1, m.wall_at(t1));
        let s = m
            .lane_history(&key)
            .expect("kept while its data is within the span");
        assert_eq!(s.latest(), Some(HistoryPoint::gap(t1)));
        let t2 = t0 + HISTORY_SPAN + SEC;
        m.lanes_updated(t2, m.wall_at(t2));
        assert!(m.lane_history(&key).is_none());
        assert!(m.version_history("photo", "v1").is_none());
    }
}

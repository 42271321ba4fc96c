//! Drift detector: configured weight vs observed share of requests per version, for every
//! service with a split.
//!
//! Requests are summed per version over a trailing window ([`DRIFT_WINDOW`], 60 s), then
//! shares are compared — never an instantaneous ratio. Each lane update adds, per version,
//! the current request rate (Σ over the lanes with data into that version, any caller)
//! times the time since the previous update; that time is capped at one scrape interval,
//! so rates are never stretched over a pause in the data, and time in which no lane into
//! the service had data adds nothing. The window must really hold ≥ [`DRIFT_MIN_SECS`]
//! (30 s) of data before a drift is reported. When the configured split changes, the sums
//! start again: the old split's traffic says nothing about the new one.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::Model;
use super::types::{FULL_WEIGHT, Split};

/// Trailing window over which requests are summed.
pub const DRIFT_WINDOW: Duration = Duration::from_mins(1);

/// Least amount of data (seconds) in the window before drift is reported.
pub const DRIFT_MIN_SECS: f64 = 30.0;

/// A version's observed share may differ from its weight by this many points.
pub const DRIFT_THRESHOLD_PCT: f64 = 5.0;

/// The version whose observed share is furthest from its configured weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// The version.
    pub version: String,
    /// Its configured weight, percent.
    pub configured_pct: f64,
    /// Its share of the requests in the window, percent.
    pub observed_pct: f64,
    /// Seconds of data the window holds.
    pub window_secs: f64,
}

/// Requests per version over a stretch of time.
#[derive(Debug, Clone)]
struct Sample {
    /// When the stretch began (to coalesce updates into one sample per interval).
    started: Instant,
    /// When it ended.
    ended: Instant,
    /// Seconds of data it covers.
    covered_secs: f64,
    /// Requests per version.
    requests: BTreeMap<String, f64>,
}

/// Samples of one service, under one configured split.
#[derive(Debug, Clone)]
struct ServiceSamples {
    split: Split,
    samples: VecDeque<Sample>,
    last_update: Option<Instant>,
}

/// Per-service request sums for the drift detector.
#[derive(Debug, Clone, Default)]
pub(crate) struct DriftTracker {
    services: BTreeMap<String, ServiceSamples>,
}

/// Observed share of requests per version over the drift window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowedShare {
    /// Percent (0–100) of the window's requests per version.
    pub pct: BTreeMap<String, f64>,
    /// Seconds of data the window holds.
    pub window_secs: f64,
}

impl Model {
    /// Share of requests per version of `service` summed over the drift window (up to
    /// 60 s), whatever its length — the number to show beside the configured weight, so it
    /// agrees with [`Model::drift`]. `None` without a split or without requests.
    #[must_use]
    pub fn windowed_share(&self, service: &str) -> Option<WindowedShare> {
        let s = self.drift.services.get(service)?;
        let mut requests: BTreeMap<String, f64> = BTreeMap::new();
        for sample in &s.samples {
            for (v, n) in &sample.requests {
                match requests.get_mut(v) {
                    Some(sum) => *sum += n,
                    None => {
                        requests.insert(v.clone(), *n);
                    }
                }
            }
        }
        let total: f64 = requests.values().sum();
        if total <= 0.0 {
            return None;
        }
        for n in requests.values_mut() {
            *n = *n * 100.0 / total;
        }
        Some(WindowedShare {
            pct: requests,
            window_secs: s.samples.iter().map(|x| x.covered_secs).sum(),
        })
    }

    /// The worst drift of `service`'s split: `Some` when some version's observed share
    /// differs from its weight by more than 5 points over a window holding ≥ 30 s of data.
    /// `None` without a split, without traffic, or before 30 s of data.
    #[must_use]
    pub fn drift(&self, service: &str) -> Option<Drift> {
        let split = &self.drift.services.get(service)?.split;
        let share = self.windowed_share(service)?;
        if share.window_secs < DRIFT_MIN_SECS {
            return None;
        }
        // The split's versions in its order, then versions it does not name (weight 0).
        let configured = split
            .entries
            .iter()
            .map(|e| (e.subset.as_str(), e.weight))
            .chain(
                share
                    .pct
                    .keys()
                    .filter(|v| split.weight_of(v).is_none())
                    .map(|v| (v.as_str(), 0)),
            );
        let mut worst: Option<Drift> = None;
        for (version, weight) in configured {
            let configured_pct = f64::from(weight) * 100.0 / f64::from(FULL_WEIGHT);
            let observed_pct = share.pct.get(version).copied().unwrap_or(0.0);
            let diff = (observed_pct - configured_pct).abs();
            if diff > DRIFT_THRESHOLD_PCT
                && worst
                    .as_ref()
                    .is_none_or(|w| diff > (w.observed_pct - w.configured_pct).abs())
            {
                worst = Some(Drift {
                    version: version.to_owned(),
                    configured_pct,
                    observed_pct,
                    window_secs: share.window_secs,
                });
            }
        }
        worst
    }

    /// Adds this update's requests per version (see module docs).
    pub(super) fn record_drift(&mut self, now: Instant) {
        let interval = self.slowest_sidecar_interval();
        // Request rates per version into each service with a split, over the lanes with
        // data (any caller, in lane order; the lane index spares a scan of every lane).
        let all_rates: Vec<BTreeMap<String, f64>> = self
            .services
            .values()
            .filter(|svc| svc.split.is_some())
            .map(|svc| {
                let mut rates: BTreeMap<String, f64> = BTreeMap::new();
                for lane in self.lanes_into(&svc.name) {
                    if let Some(stats) = &lane.stats {
                        match rates.get_mut(&lane.key.version) {
                            Some(r) => *r += stats.rps,
                            None => {
                                rates.insert(lane.key.version.clone(), stats.rps);
                            }
                        }
                    }
                }
                rates
            })
            .collect();
        let tracker = &mut self.drift;
        tracker.services.retain(|name, _| {
            self.services
                .get(name)
                .is_some_and(|svc| svc.split.is_some())
        });
        let with_split = self.services.values().filter(|svc| svc.split.is_some());
        for (svc, rates) in with_split.zip(all_rates) {
            let Some(cfg) = &svc.split else { continue };
            let entry =
                tracker
                    .services
                    .entry(svc.name.clone())
                    .or_insert_with(|| ServiceSamples {
                        split: cfg.split.clone(),
                        samples: VecDeque::new(),
                        last_update: None,
                    });
            if entry.split != cfg.split {
                entry.split = cfg.split.clone();
                entry.samples.clear();
                entry.last_update = None;
            }
            let previous = entry.last_update.replace(now);
            let Some(previous) = previous else { continue };
            let span = now.saturating_duration_since(previous).min(interval);
            if let Some(cutoff) = now.checked_sub(DRIFT_WINDOW) {
                while entry.samples.front().is_some_and(|s| s.ended < cutoff) {
                    entry.samples.pop_front();
                }
            }
            if rates.is_empty() {
                continue; // no lane into the service has data
            }
            if span.is_zero() {
                continue;
            }
            let secs = span.as_secs_f64();
            let joins_last = entry
                .samples
                .back()
                .is_some_and(|s| now.saturating_duration_since(s.started) < interval);
            if !joins_last {
                entry.samples.push_back(Sample {
                    started: now.checked_sub(span).unwrap_or(now),
                    ended: now,
                    covered_secs: 0.0,
                    requests: BTreeMap::new(),
                });
            }
            let Some(sample) = entry.samples.back_mut() else {
                continue;
            };
            sample.ended = now;
            sample.covered_secs += secs;
            for (version, rps) in rates {
                match sample.requests.get_mut(&version) {
                    Some(n) => *n += rps * secs,
                    None => {
                        sample.requests.insert(version, rps * secs);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LaneState;
    use crate::model::tests_support::{lane_key, stats_window, test_model};
    use crate::model::types::SplitConfig;

    /// Feeds `secs` one-second updates in which gateway sends `v1_rps` / `v2_rps` to
    /// identity, starting at `t0`; returns the time of the last update.
    fn run(m: &mut Model, t0: Instant, secs: u32, v1_rps: f64, v2_rps: f64) -> Instant {
        let mut at = t0;
        for i in 0..=secs {
            at = t0 + Duration::from_secs(1) * i;
            for (version, rps) in [("v1", v1_rps), ("v2", v2_rps)] {
                let key = lane_key("gateway", "identity", version);
                let w = stats_window(rps, 0.0, 5.0);
                m.lanes.insert(
                    key.clone(),
                    LaneState {
                        key,
                        stats: Some(w.stats()),
                        window: Some(w),
                        updated_at: Some(at),
                    },
                );
            }
            m.lanes_updated(at, m.wall_at(at));
        }
        at
    }

    #[test]
    fn matching_split_is_no_drift() {
        let mut m = test_model();
        run(&mut m, Instant::now(), 40, 80.0, 20.0);
        assert_eq!(m.drift("identity"), None);
    }

    #[test]
    fn sixty_forty_for_forty_seconds_is_drift() {
        let mut m = test_model();
        run(&mut m, Instant::now(), 40, 60.0, 40.0);
        assert_eq!(
            m.drift("identity"),
            Some(Drift {
                version: "v1".into(),
                configured_pct: 80.0,
                observed_pct: 60.0,
                window_secs: 40.0,
            })
        );
    }

    #[test]
    fn ten_seconds_is_not_enough_yet() {
        let mut m = test_model();
        run(&mut m, Instant::now(), 10, 60.0, 40.0);
        assert_eq!(m.drift("identity"), None);
        // The share is there to show, with its window.
        assert_eq!(
            m.windowed_share("identity"),
            Some(WindowedShare {
                pct: [("v1".to_owned(), 60.0), ("v2".to_owned(), 40.0)].into(),
                window_secs: 10.0,
            })
        );
    }

    #[test]
    fn no_traffic_is_no_drift() {
        let mut m = test_model();
        run(&mut m, Instant::now(), 40, 0.0, 0.0);
        assert_eq!(m.drift("identity"), None);
        assert_eq!(m.drift("photo"), None, "no split");
        assert_eq!(m.drift("nobody"), None);
    }

    #[test]
    fn requests_are_summed_over_the_window_not_the_last_ratio() {
        let mut m = test_model();
        let t0 = Instant::now();
        // 30 s at 60/40, then 30 s at 100/0: 4800 + … vs 1200 → v2 observed 20 % overall.
        let t = run(&mut m, t0, 30, 60.0, 40.0);
        run(&mut m, t + Duration::from_secs(1), 29, 100.0, 0.0);
        let d = m.drift("identity");
        assert_eq!(d, None, "60 s of data average out to 80/20: {d:?}");
    }

    #[test]
    fn the_window_trails_pauses_are_not_counted_and_a_new_split_starts_again() {
        let mut m = test_model();
        let t0 = Instant::now();
        // Old traffic at 60/40 falls out of the 60 s window.
        let t = run(&mut m, t0, 40, 60.0, 40.0);
        let t = run(&mut m, t + Duration::from_secs(1), 70, 80.0, 20.0);
        assert_eq!(m.drift("identity"), None);
        // A 20 s pause in updates adds one interval of data, not 20 s.
        let t = run(&mut m, t + Duration::from_secs(20), 0, 0.0, 100.0);
        let before = m.drift.services["identity"]
            .samples
            .back()
            .map(|s| s.covered_secs);
        assert_eq!(before, Some(1.0));
        // Operator moves to 100 % v2: the 80/20 traffic says nothing about it.
        if let Some(svc) = m.services.get_mut("identity") {
            svc.split = Some(SplitConfig {
                split: Split::from_pairs([("v1", 0), ("v2", 10_000)]),
                modify_index: 6,
            });
        }
        run(&mut m, t + Duration::from_secs(1), 10, 0.0, 100.0);
        assert_eq!(m.drift("identity"), None, "only 10 s under the new split");
    }

    #[test]
    fn unconfigured_version_taking_traffic_is_drift() {
        let mut m = test_model();
        let t0 = Instant::now();
        for i in 0..=40_u32 {
            let at = t0 + Duration::from_secs(1) * i;
            for (version, rps) in [("v1", 80.0), ("v2", 10.0), ("default", 10.0)] {
                let key = lane_key("portal", "identity", version);
                let w = stats_window(rps, 0.0, 5.0);
                m.lanes.insert(
                    key.clone(),
                    LaneState {
                        key,
                        stats: Some(w.stats()),
                        window: Some(w),
                        updated_at: Some(at),
                    },
                );
            }
            m.lanes_updated(at, m.wall_at(at));
        }
        let d = m.drift("identity").expect("drift");
        assert_eq!(d.version, "v2");
        assert!((d.observed_pct - 10.0).abs() < 1e-9);
    }
}

//! Lanes from a Prometheus server (`--metrics prometheus://…`) instead of the sidecars'
//! scrapes: the last good answer, the source's freshness, and the same [`LaneState`]s the
//! map draws. A stale or failing Prometheus gives "no data" lanes, as stale sidecars do.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::{Duration, Instant};

use super::types::LaneKey;
use super::{LaneState, Model, SourceStatus};
use crate::metrics::LaneWindow;
use crate::metrics::prometheus::{LaneSamples, PrometheusSource};

/// The Prometheus metrics source as the model knows it.
#[derive(Debug, Clone)]
pub struct PromState {
    /// Base URL, for the status bar.
    pub address: String,
    /// Rate window of the queries.
    pub window: Duration,
    /// Refresh interval (stale after two).
    pub interval: Duration,
    /// Freshness and last error.
    pub status: SourceStatus,
    /// The last good answer and when it arrived.
    pub last: Option<(Instant, LaneSamples)>,
}

impl PromState {
    /// Stale: the last refresh failed or none succeeded within two intervals.
    #[must_use]
    pub fn is_stale(&self, now: Instant) -> bool {
        self.status.is_stale(now, self.interval)
    }

    /// Lanes (local clusters excluded) in the last good answer, and how many have data.
    #[must_use]
    pub fn lane_counts(&self) -> (usize, usize) {
        let Some((_, samples)) = &self.last else {
            return (0, 0);
        };
        let roads = samples.lanes.iter().filter(|l| !l.id.is_local());
        let with_data = roads.clone().filter(|l| l.window.is_some()).count();
        (roads.count(), with_data)
    }
}

impl Model {
    /// Takes lane metrics from Prometheus instead of the sidecars (set once, at start).
    #[must_use]
    pub fn with_prometheus(mut self, source: &PrometheusSource) -> Self {
        self.prometheus = Some(PromState {
            address: source.base_url.clone(),
            window: source.window,
            interval: source.interval,
            status: SourceStatus::default(),
            last: None,
        });
        self.sidecars.clear();
        self
    }

    /// Applies one Prometheus refresh (`IoEvent::LaneSamples`).
    pub(super) fn apply_lane_samples(&mut self, at: Instant, result: Result<LaneSamples, String>) {
        let Some(prom) = self.prometheus.as_mut() else {
            return; // not the configured source
        };
        let notice = match result {
            Ok(samples) => {
                prom.status.record_ok(at);
                prom.last = Some((at, samples));
                None
            }
            Err(error) => {
                let changed = prom.status.last_error.as_deref() != Some(error.as_str());
                prom.status.record_err(at, error.clone());
                changed.then_some(error)
            }
        };
        if let Some(error) = notice {
            self.notice(at, true, format!("prometheus: {error}"));
        }
        self.mark_pending();
    }

    /// Every lane of the last answer; stats only while the source is fresh. Lanes whose
    /// ids map to the same key (an empty subset and the single version's name) are merged,
    /// their windows added; Prometheus's own quantiles are kept only for unmerged lanes.
    pub(super) fn prometheus_lanes(
        &self,
        prom: &PromState,
        now: Instant,
    ) -> BTreeMap<LaneKey, LaneState> {
        let mut lanes = BTreeMap::new();
        let Some((at, samples)) = &prom.last else {
            return lanes;
        };
        let fresh = !prom.is_stale(now);
        // Key → (window, Prometheus stats when the lane came from one id).
        let mut merged: BTreeMap<LaneKey, (Option<LaneWindow>, usize, usize)> = BTreeMap::new();
        for (i, lane) in samples.lanes.iter().enumerate() {
            if lane.id.is_local() {
                continue;
            }
            let key = LaneKey {
                caller: lane.id.source.clone(),
                service: lane.id.service.clone(),
                version: self.lane_version(&lane.id.service, &lane.id.subset),
            };
            let window = if fresh { lane.window.clone() } else { None };
            match merged.entry(key) {
                Entry::Vacant(e) => {
                    e.insert((window, i, 1));
                }
                Entry::Occupied(mut e) => {
                    let (acc, _, n) = e.get_mut();
                    *n += 1;
                    match (acc.as_mut(), window) {
                        (Some(a), Some(w)) => a.merge(&w),
                        (None, Some(w)) => *acc = Some(w),
                        (_, None) => {}
                    }
                }
            }
        }
        for (key, (window, first, n)) in merged {
            let stats = match (&window, samples.lanes.get(first)) {
                (None, _) => None,
                (Some(_), Some(lane)) if n == 1 => lane.stats(),
                (Some(w), _) => Some(w.stats()),
            };
            lanes.insert(
                key.clone(),
                LaneState {
                    key,
                    stats,
                    updated_at: window.as_ref().map(|_| *at),
                    window,
                },
            );
        }
        lanes
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "the expected values are exact in f64")]
mod tests {
    use super::super::RegistryInfo;
    use super::super::types::{
        BreakerState, Health, Instance, RegistryKind, RegistrySnapshot, ServiceEntry,
    };
    use super::*;
    use crate::io::IoEvent;
    use crate::metrics::ClusterId;
    use crate::metrics::prometheus::PromLane;

    fn inst(id: &str, service: &str, version: &str) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            address: "127.0.0.1".into(),
            port: 1,
            health: Health::Passing,
            check_output: String::new(),
            metrics_url: Some(format!("http://{id}/stats/prometheus")),
        }
    }

    fn model() -> Model {
        let info = RegistryInfo {
            kind: RegistryKind::Consul,
            address: "http://consul".into(),
            datacenter: None,
            writable: true,
        };
        let source = PrometheusSource {
            base_url: "http://prom:9090".into(),
            window: Duration::from_secs(30),
            interval: Duration::from_secs(5),
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1))
            .with_prometheus(&source);
        let snap = RegistrySnapshot {
            drivers: Vec::new(),
            services: vec![
                ServiceEntry {
                    protocol: None,
                    name: "gateway".into(),
                    instances: vec![inst("gw-1", "gateway", "v1")],
                    subsets: vec![],
                    split: None,
                },
                ServiceEntry {
                    protocol: None,
                    name: "photo".into(),
                    instances: vec![inst("photo-1", "photo", "v1")],
                    subsets: vec![],
                    split: None,
                },
            ],
        };
        let at = Instant::now();
        m.apply(
            IoEvent::Registry {
                at,
                result: Ok(Some(snap)),
                next_within: Duration::from_secs(1),
            },
            at,
        );
        m
    }

    fn lane(service: &str, subset: &str, rps: Option<f64>, p99: Option<f64>) -> PromLane {
        PromLane {
            id: ClusterId {
                source: "gateway".into(),
                service: service.into(),
                subset: subset.into(),
            },
            window: rps.map(|r| LaneWindow {
                rps_completed: r,
                completed: r * 30.0,
                xx: [0.0, r * 30.0, 0.0, 0.0, 0.0],
                buckets: vec![(10.0, r * 30.0), (f64::INFINITY, r * 30.0)],
                ..LaneWindow::default()
            }),
            quantiles_ms: [None, None, p99],
        }
    }

    fn samples(lanes: Vec<PromLane>) -> LaneSamples {
        LaneSamples {
            lanes,
            window_secs: 30.0,
            warnings: Vec::new(),
        }
    }

    fn key(service: &str, version: &str) -> LaneKey {
        LaneKey {
            caller: "gateway".into(),
            service: service.into(),
            version: version.into(),
        }
    }

    #[test]
    fn lanes_come_from_prometheus_not_the_sidecars() {
        let mut m = model();
        assert!(m.sidecars.is_empty(), "no sidecar is scraped");
        let t = Instant::now();
        let local = PromLane {
            id: ClusterId {
                source: "gateway".into(),
                service: "local_app".into(),
                subset: String::new(),
            },
            ..lane("x", "", Some(1.0), None)
        };
        m.apply(
            IoEvent::LaneSamples {
                at: t,
                result: Ok(samples(vec![
                    lane("photo", "", Some(12.0), Some(8.0)),
                    lane("identity", "v2", None, None),
                    local,
                ])),
            },
            t,
        );
        assert_eq!(m.lanes.len(), 2, "local_app is not a road");
        let photo = m.lanes[&key("photo", "v1")].stats.clone().unwrap();
        assert_eq!(photo.rps, 12.0);
        assert_eq!(photo.p99_ms, Some(8.0), "Prometheus's histogram_quantile");
        assert_eq!(photo.breaker, BreakerState::Closed);
        assert_eq!(
            m.lanes[&key("identity", "v2")].stats,
            None,
            "no samples: no data, not 0 rps"
        );
        assert!(!m.caller_stale("gateway", t));
        let prom = m.prometheus.as_ref().unwrap();
        assert_eq!(prom.lane_counts(), (2, 1));
        // A registry poll recomputes the lanes from the same answer.
        let at = t + Duration::from_millis(10);
        m.apply(
            IoEvent::Registry {
                at,
                result: Ok(Some(RegistrySnapshot::default())),
                next_within: Duration::from_secs(1),
            },
            at,
        );
        assert_eq!(
            m.lanes
                .get(&key("photo", "default"))
                .and_then(|l| l.stats.as_ref())
                .map(|s| s.rps),
            Some(12.0),
            "photo unknown to the registry now: the default lane"
        );
    }

    #[test]
    fn same_lane_twice_merges_windows() {
        let mut m = model();
        let t = Instant::now();
        m.apply(
            IoEvent::LaneSamples {
                at: t,
                result: Ok(samples(vec![
                    lane("photo", "", Some(2.0), Some(9.0)),
                    lane("photo", "v1", Some(3.0), Some(5.0)),
                ])),
            },
            t,
        );
        let s = m.lanes[&key("photo", "v1")].stats.clone().unwrap();
        assert_eq!(s.rps, 5.0);
        assert_eq!(
            s.p99_ms,
            Some(9.9),
            "from the merged buckets, not either quantile"
        );
    }

    #[test]
    fn failing_prometheus_goes_stale_with_its_error() {
        let mut m = model();
        let t = Instant::now();
        m.apply(
            IoEvent::LaneSamples {
                at: t,
                result: Ok(samples(vec![lane("photo", "", Some(2.0), None)])),
            },
            t,
        );
        let t2 = t + Duration::from_secs(5);
        let err = "Prometheus rates query: connection refused — is Prometheus running at that address? (http://prom:9090/api/v1/query)";
        m.apply(
            IoEvent::LaneSamples {
                at: t2,
                result: Err(err.into()),
            },
            t2,
        );
        let prom = m.prometheus.as_ref().unwrap();
        assert_eq!(prom.status.last_error.as_deref(), Some(err));
        assert!(prom.is_stale(t2));
        assert_eq!(m.lanes[&key("photo", "v1")].stats, None);
        assert!(m.caller_stale("gateway", t2));
        assert_eq!(
            m.notices.back().map(|n| n.text.clone()),
            Some(format!("prometheus: {err}"))
        );
        // Old but never failed: stale after two intervals, too.
        let mut m = model();
        m.apply(
            IoEvent::LaneSamples {
                at: t,
                result: Ok(samples(vec![lane("photo", "", Some(2.0), None)])),
            },
            t,
        );
        let late = t + Duration::from_secs(11);
        m.apply(
            IoEvent::Registry {
                at: late,
                result: Ok(Some(RegistrySnapshot::default())),
                next_within: Duration::from_secs(1),
            },
            late,
        );
        assert!(m.lanes.values().all(|l| l.stats.is_none()));
    }

    #[test]
    fn lane_samples_without_prometheus_are_ignored() {
        let info = RegistryInfo {
            kind: RegistryKind::Demo,
            address: "http://x".into(),
            datacenter: None,
            writable: true,
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
        let t = Instant::now();
        m.apply(
            IoEvent::LaneSamples {
                at: t,
                result: Ok(samples(vec![lane("photo", "", Some(2.0), None)])),
            },
            t,
        );
        assert!(m.lanes.is_empty());
    }
}

//! Helpers shared by the model's unit tests: a small model, lane keys, made-up windows.

use std::time::Duration;

use super::types::{Health, Instance, LaneKey, RegistryKind, ServiceEntry, Split, SplitConfig};
use super::{Model, RegistryInfo};
use crate::metrics::LaneWindow;

/// A lane key.
pub(crate) fn lane_key(caller: &str, service: &str, version: &str) -> LaneKey {
    LaneKey {
        caller: caller.into(),
        service: service.into(),
        version: version.into(),
    }
}

/// An instance of `service` at `version` with the given health.
pub(crate) fn instance(id: &str, service: &str, version: &str, health: Health) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        address: "127.0.0.1".into(),
        port: 1,
        health,
        check_output: String::new(),
        metrics_url: None,
    }
}

/// A model with a 1 s scrape interval and, in the registry, `identity` (v1 / v2, split
/// 80/20), `photo` (v1) and `gateway` (v1).
pub(crate) fn test_model() -> Model {
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address: "http://x".into(),
        datacenter: None,
        writable: true,
    };
    let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    for svc in [
        ServiceEntry {
            protocol: None,
            name: "gateway".into(),
            instances: vec![instance("gw-1", "gateway", "v1", Health::Passing)],
            subsets: vec![],
            split: None,
        },
        ServiceEntry {
            protocol: None,
            name: "identity".into(),
            instances: vec![
                instance("id-1", "identity", "v1", Health::Passing),
                instance("id-2", "identity", "v2", Health::Critical),
            ],
            subsets: vec!["v1".into(), "v2".into()],
            split: Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 5,
            }),
        },
        ServiceEntry {
            protocol: None,
            name: "photo".into(),
            instances: vec![instance("photo-1", "photo", "v1", Health::Warning)],
            subsets: vec![],
            split: None,
        },
    ] {
        m.services.insert(svc.name.clone(), svc);
    }
    m
}

/// A one-second window: `rps` requests, `err_rps` of them 5xx, all in the latency bucket
/// `le_ms` (one of 5, 10, 50, 250, 1000), closed breaker.
pub(crate) fn stats_window(rps: f64, err_rps: f64, le_ms: f64) -> LaneWindow {
    let buckets = [5.0, 10.0, 50.0, 250.0, 1000.0, f64::INFINITY]
        .into_iter()
        .map(|le| (le, if le >= le_ms { rps } else { 0.0 }))
        .collect();
    LaneWindow {
        rps_completed: rps,
        rps_upstream_total: rps,
        completed: rps,
        xx: [0.0, rps - err_rps, 0.0, 0.0, err_rps],
        buckets,
        ..LaneWindow::default()
    }
}

/// Measures `lanes_updated` and `matches` on a synthetic mesh (500 services with two
/// versions and a split, three callers each): run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_large_mesh() {
    use super::LaneState;
    use super::filter::Filter;
    use super::history::Series;
    use std::time::Instant;

    let mut m = test_model();
    let n = 500;
    for i in 0..n {
        let name = format!("svc-{i:03}");
        m.services.insert(
            name.clone(),
            ServiceEntry {
                protocol: None,
                name: name.clone(),
                instances: vec![
                    instance(&format!("{name}-1"), &name, "v1", Health::Passing),
                    instance(&format!("{name}-2"), &name, "v2", Health::Passing),
                ],
                subsets: vec!["v1".into(), "v2".into()],
                split: Some(SplitConfig {
                    split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                    modify_index: 1,
                }),
            },
        );
    }
    let t0 = Instant::now();
    let steps = 60_u32;
    let mut spent = Duration::ZERO;
    for step in 0..steps {
        let at = t0 + Duration::from_secs(1) * step;
        for i in 0..n {
            for c in 1..=3 {
                for v in ["v1", "v2"] {
                    let key = lane_key(
                        &format!("svc-{:03}", (i + c) % n),
                        &format!("svc-{i:03}"),
                        v,
                    );
                    let w = stats_window(10.0, 0.1, 50.0);
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
            }
        }
        let started = Instant::now();
        m.lanes_updated(at, m.wall_at(at));
        spent += started.elapsed();
    }
    let now = t0 + Duration::from_secs(1) * steps;
    let started = Instant::now();
    let reps = 10;
    for _ in 0..reps {
        m.lanes_updated(now, m.wall_at(now));
    }
    let idle = started.elapsed() / reps;
    let min_of = |m: &mut Model, f: &dyn Fn(&mut Model)| {
        (0..20)
            .map(|_| {
                let t = Instant::now();
                f(m);
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let parts = [
        (
            "all",
            min_of(&mut m, &|m| m.lanes_updated(now, m.wall_at(now))),
        ),
        ("index", min_of(&mut m, &|m| m.reindex_lanes())),
        (
            "history",
            min_of(&mut m, &|m| {
                m.record_history(now);
            }),
        ),
        (
            "tape",
            min_of(&mut m, &|m| m.record_tape(now, m.wall_at(now), false)),
        ),
        ("drift", min_of(&mut m, &|m| m.record_drift(now))),
    ];
    println!("unchanged, by part: {parts:?}");
    let f = Filter::parse("svc err>0.5% p99>10ms breaker:closed").unwrap();
    let started = Instant::now();
    let hits = m.services.keys().filter(|s| m.matches(s, &f, now)).count();
    let matching = started.elapsed();
    let series = m.lanes.len() + 2 * n;
    let ring_bytes = Series::new(Duration::from_secs(1), Instant::now()).bytes();
    println!(
        "lanes {} | lanes_updated with new data: {:?} per call | unchanged: {idle:?} | \
         matches over {} services: {matching:?} ({hits} hits) | {series} series × {} B = {} MB",
        m.lanes.len(),
        spent / steps,
        m.services.len(),
        ring_bytes,
        series * ring_bytes / 1_000_000
    );
}

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
            name: "gateway".into(),
            instances: vec![instance("gw-1", "gateway", "v1", Health::Passing)],
            subsets: vec![],
            split: None,
        },
        ServiceEntry {
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

//! Models built from a described spine, for image snapshots, UI tests and benchmarks: the
//! registry snapshot and two sidecar scrapes one second apart go through `Model::apply`
//! like real events, so every derived number (rates, percentiles, breaker states) is the
//! model's own.

use std::time::{Duration, Instant};

use super::types::{
    BreakerState, Health, Instance, RegistryKind, RegistrySnapshot, ServiceEntry, Split,
    SplitConfig,
};
use super::{Model, RegistryInfo};
use crate::io::IoEvent;
use crate::metrics::{ClusterCounters, ClusterId, Histogram, SidecarScrape};

/// Histogram bounds (ms), as Envoy's defaults.
const BOUNDS_MS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// One lane of the described spine and what flows on it over the one-second window.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSpec {
    /// Calling service.
    pub caller: String,
    /// Called service.
    pub service: String,
    /// Version (subset) of the called service.
    pub version: String,
    /// Requests in the window (= rps).
    pub rps: u64,
    /// 5xx answers among them.
    pub errors: u64,
    /// Typical latency (ms): 98 % of requests at about this, 2 % at about 4× it.
    pub latency_ms: f64,
    /// Breaker state the caller's sidecar reports.
    pub breaker: BreakerState,
}

impl LaneSpec {
    /// A healthy lane.
    #[must_use]
    pub fn ok(caller: &str, service: &str, version: &str, rps: u64, latency_ms: f64) -> Self {
        Self {
            caller: caller.into(),
            service: service.into(),
            version: version.into(),
            rps,
            errors: 0,
            latency_ms,
            breaker: BreakerState::Closed,
        }
    }
}

/// One service of the described spine: instances per version (and their health).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Name.
    pub name: String,
    /// `(version, health)` per instance.
    pub instances: Vec<(String, Health)>,
    /// Split in hundredths, if any.
    pub split: Option<Vec<(String, u32)>>,
}

fn bucket_index(ms: f64) -> usize {
    BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BOUNDS_MS.len())
}

/// Cumulative counters after `step` of `end` one-second windows, the rate wobbling by up to
/// ±10 % (deterministically) so charts look like traffic; the last window is exact.
fn counters(lane: &LaneSpec, subset: &str, step: u64, end: u64) -> ClusterCounters {
    let wobble = |j: u64| {
        let from_end = end.saturating_sub(j + 1) as f64;
        (lane.rps as f64 * 0.1 * (from_end * 0.7).sin()).round() as i64
    };
    let per_window = |j: u64| (lane.rps as i64 + wobble(j)).max(0) as u64;
    let total: u64 = (0..step).map(per_window).sum();
    // About 2 % slow requests, rounded per window (so p99 is steady, not jumping).
    let slow: u64 = (0..step).map(|j| (per_window(j) + 25) / 50).sum();
    let window = step;
    let errors = (total * lane.errors).checked_div(lane.rps).unwrap_or(0);
    let mut counts = vec![0_u64; BOUNDS_MS.len() + 1];
    counts[bucket_index(lane.latency_ms)] += total - slow;
    counts[bucket_index(lane.latency_ms * 4.0)] += slow;
    let mut cumulative = 0;
    let mut buckets: Vec<(f64, u64)> = BOUNDS_MS
        .iter()
        .zip(&counts)
        .map(|(le, c)| {
            cumulative += c;
            (*le, cumulative)
        })
        .collect();
    buckets.push((f64::INFINITY, total));
    let (ejected, hosts) = match lane.breaker {
        BreakerState::Ejecting { ejected, total } => (ejected, total),
        BreakerState::Open => (2, 2),
        _ => (0, 2),
    };
    ClusterCounters {
        id: ClusterId {
            source: lane.caller.clone(),
            service: lane.service.clone(),
            subset: subset.to_owned(),
        },
        rq_total: total,
        rq_completed: total,
        rq_xx: [0, total - errors, 0, 0, errors],
        rq_pending_overflow: if lane.breaker == BreakerState::Saturated {
            7 * window
        } else {
            0
        },
        cx_overflow: 0,
        rq_time: Histogram {
            buckets,
            sum: lane.latency_ms * total as f64,
            count: total,
        },
        membership_healthy: Some(u64::from(hosts - ejected)),
        membership_total: Some(u64::from(hosts)),
        ejections_active: Some(u64::from(ejected)),
        cb_rq_open: u64::from(lane.breaker == BreakerState::Saturated),
        cb_rq_pending_open: 0,
        cb_cx_open: 0,
    }
}

fn stats_url(service: &str) -> String {
    format!("http://127.0.0.1:1/{service}/stats/prometheus")
}

/// A model of the described spine at `now`, with one window (`now - 1 s` → `now`).
#[must_use]
pub fn model(services: &[ServiceSpec], lanes: &[LaneSpec], now: Instant) -> Model {
    model_over(services, lanes, now, 1)
}

/// A model of the described spine at `now` after `history_secs` one-second windows (the
/// charts have that much history).
#[must_use]
pub fn model_over(
    services: &[ServiceSpec],
    lanes: &[LaneSpec],
    now: Instant,
    history_secs: u64,
) -> Model {
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address: "http://127.0.0.1:8500".into(),
        datacenter: Some("dc1".into()),
        writable: true,
    };
    let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    // A fixed wall clock (2026-11-27 12:00:00 UTC at `now`): snapshots show the same times.
    m.set_clock_anchor(now, std::time::UNIX_EPOCH + Duration::from_hours(498_828));
    let entries: Vec<ServiceEntry> = services
        .iter()
        .map(|s| {
            let instances = s
                .instances
                .iter()
                .enumerate()
                .map(|(i, (version, health))| Instance {
                    id: format!("{}-{}-{}", s.name, version, i + 1),
                    service: s.name.clone(),
                    version: version.clone(),
                    address: format!("10.0.{}.{}", i / 200, 10 + i % 200),
                    port: 8080,
                    health: *health,
                    check_output: match health {
                        Health::Passing => String::new(),
                        Health::Warning => "HTTP GET /health: 429 Too Many Requests".into(),
                        Health::Critical => "HTTP GET /health: connection refused".into(),
                    },
                    // One sidecar per service (its first instance) carries its lanes.
                    metrics_url: (i == 0).then(|| stats_url(&s.name)),
                })
                .collect();
            let mut subsets: Vec<String> = s.instances.iter().map(|(v, _)| v.clone()).collect();
            subsets.sort();
            subsets.dedup();
            ServiceEntry {
                name: s.name.clone(),
                instances,
                subsets: if subsets.len() > 1 {
                    subsets
                } else {
                    Vec::new()
                },
                split: s.split.as_ref().map(|pairs| SplitConfig {
                    split: Split::from_pairs(pairs.iter().map(|(v, w)| (v.clone(), *w))),
                    modify_index: 42,
                }),
            }
        })
        .collect();
    let history_secs = history_secs.max(1);
    let t0 = now
        .checked_sub(Duration::from_secs(history_secs))
        .unwrap_or(now);
    m.apply(
        IoEvent::Registry {
            at: t0,
            result: Ok(Some(RegistrySnapshot { services: entries })),
            next_within: Duration::from_hours(1),
        },
        t0,
    );
    // The registry is still connected at `now`.
    m.apply(
        IoEvent::Registry {
            at: now,
            result: Ok(None),
            next_within: Duration::from_secs(1),
        },
        now,
    );
    for s in services {
        let mine: Vec<&LaneSpec> = lanes.iter().filter(|l| l.caller == s.name).collect();
        let versions_of = |svc: &str| {
            services.iter().find(|x| x.name == svc).map_or(1, |x| {
                let mut v: Vec<&String> = x.instances.iter().map(|(v, _)| v).collect();
                v.sort();
                v.dedup();
                v.len()
            })
        };
        let scrape = |step: u64| {
            let mut clusters: Vec<ClusterCounters> = mine
                .iter()
                .map(|l| {
                    let subset = if versions_of(&l.service) > 1 {
                        l.version.as_str()
                    } else {
                        ""
                    };
                    counters(l, subset, step, history_secs)
                })
                .collect();
            clusters.sort_by(|a, b| a.id.cmp(&b.id));
            SidecarScrape {
                clusters,
                uptime_secs: Some(100.0 + step as f64),
            }
        };
        for k in 0..=history_secs {
            let at = t0 + Duration::from_secs(k);
            let window = k;
            m.apply(
                IoEvent::Scrape {
                    url: stats_url(&s.name),
                    at,
                    result: Ok(scrape(window)),
                },
                at,
            );
        }
    }
    m
}

/// The demo spine's topology, all healthy, identity at 80/20: the base of the snapshots.
#[must_use]
pub fn demo_services() -> Vec<ServiceSpec> {
    let one = |name: &str, n: usize| ServiceSpec {
        name: name.into(),
        instances: vec![("v1".into(), Health::Passing); n],
        split: None,
    };
    vec![
        one("portal", 1),
        one("gateway", 1),
        ServiceSpec {
            name: "identity".into(),
            instances: vec![
                ("v1".into(), Health::Passing),
                ("v1".into(), Health::Passing),
                ("v2".into(), Health::Passing),
            ],
            split: Some(vec![("v1".into(), 8000), ("v2".into(), 2000)]),
        },
        one("photo", 2),
        one("payment", 2),
        one("notification", 1),
    ]
}

/// The demo spine's lanes with healthy traffic (50 rps in, identity 80/20).
#[must_use]
pub fn demo_lanes() -> Vec<LaneSpec> {
    vec![
        LaneSpec::ok("portal", "gateway", "v1", 50, 40.0),
        LaneSpec::ok("gateway", "identity", "v1", 40, 12.0),
        LaneSpec::ok("gateway", "identity", "v2", 10, 15.0),
        LaneSpec::ok("gateway", "photo", "v1", 50, 20.0),
        LaneSpec::ok("gateway", "payment", "v1", 50, 18.0),
        LaneSpec::ok("payment", "notification", "v1", 50, 9.0),
    ]
}

/// A synthetic mesh of `n` services in layers of about √n, each calling up to three
/// services of the next layer; every tenth service has two versions.
#[must_use]
pub fn mesh(n: usize) -> (Vec<ServiceSpec>, Vec<LaneSpec>) {
    let width = (n as f64).sqrt().ceil().max(1.0) as usize;
    let name = |i: usize| format!("svc-{i:04}");
    let services: Vec<ServiceSpec> = (0..n)
        .map(|i| ServiceSpec {
            name: name(i),
            instances: if i.is_multiple_of(10) {
                vec![
                    ("v1".into(), Health::Passing),
                    ("v2".into(), Health::Passing),
                ]
            } else {
                vec![("v1".into(), Health::Passing); 2]
            },
            split: i
                .is_multiple_of(10)
                .then(|| vec![("v1".into(), 9000), ("v2".into(), 1000)]),
        })
        .collect();
    let mut lanes = Vec::new();
    for i in 0..n {
        let next_layer = (i / width + 1) * width;
        for k in 0..3 {
            let j = next_layer + (i * 7 + k * 13) % width;
            if j >= n {
                continue;
            }
            let versions: &[&str] = if j.is_multiple_of(10) {
                &["v1", "v2"]
            } else {
                &["v1"]
            };
            for v in versions {
                let mut lane = LaneSpec::ok(&name(i), &name(j), v, 5 + (i as u64 % 40), 10.0);
                if i % 97 == 0 {
                    lane.errors = lane.rps / 4;
                }
                lanes.push(lane);
            }
        }
    }
    lanes.sort_by(|a, b| {
        (&a.caller, &a.service, &a.version).cmp(&(&b.caller, &b.service, &b.version))
    });
    lanes.dedup_by(|a, b| {
        (&a.caller, &a.service, &a.version) == (&b.caller, &b.service, &b.version)
    });
    (services, lanes)
}

/// Business domains of [`domain_mesh`], in order; the last three are platform domains
/// every other one calls.
const DOMAINS: [&str; 28] = [
    "payments",
    "catalog",
    "search",
    "orders",
    "shipping",
    "billing",
    "inventory",
    "pricing",
    "reviews",
    "media",
    "accounts",
    "ledger",
    "fraud",
    "loyalty",
    "recommend",
    "analytics",
    "checkout",
    "cart",
    "profile",
    "support",
    "partners",
    "tax",
    "ads",
    "content",
    "geo",
    "identity",
    "messaging",
    "config",
];

/// A synthetic mesh of `n` services named as real meshes name them (`edge-03`,
/// `payments-api-007`, `payments-worker-031`): a few edge services calling the domains'
/// APIs, each domain a chain of tiers (api → core → worker → store, three calls into the
/// next tier), core and worker services calling the platform domains' APIs (`identity-…`,
/// `messaging-…`, `config-…`), stores calling config, and some domains calling the next
/// one. About three calls per service, `instances` instances each (one
/// in ten services also runs a v2), a few unhealthy instances, erring lanes and breakers
/// not closed — a mesh for grouping, filters and the frame benchmark.
#[must_use]
pub fn domain_mesh(n: usize, instances: usize) -> (Vec<ServiceSpec>, Vec<LaneSpec>) {
    const TIERS: [&str; 4] = ["api", "core", "worker", "store"];
    let edges = (n / 100).max(2).min(n);
    let domains = (((n as f64).sqrt() / 2.0).round() as usize).clamp(2, DOMAINS.len());
    let rest = n - edges;
    // Services per domain, then per tier: names and tiers.
    let mut by_domain: Vec<Vec<Vec<String>>> = vec![vec![Vec::new(); TIERS.len()]; domains];
    let mut names: Vec<String> = (1..=edges).map(|k| format!("edge-{k:02}")).collect();
    for d in 0..domains {
        let m = rest / domains + usize::from(d < rest % domains);
        for j in 0..m {
            let tier = (j * TIERS.len() / m.max(1)).min(TIERS.len() - 1);
            let name = format!("{}-{}-{:03}", DOMAINS[d], TIERS[tier], j + 1);
            by_domain[d][tier].push(name.clone());
            names.push(name);
        }
    }
    let instances = instances.max(1);
    let services: Vec<ServiceSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let two_versions = i % 10 == 5;
            let mut list: Vec<(String, Health)> = (0..instances)
                .map(|k| {
                    let v = if two_versions && k == instances - 1 && instances > 1 {
                        "v2"
                    } else {
                        "v1"
                    };
                    (v.to_owned(), Health::Passing)
                })
                .collect();
            if i % 37 == 11 {
                list[0].1 = Health::Critical;
            } else if i % 53 == 7 {
                list[0].1 = Health::Warning;
            }
            ServiceSpec {
                name: name.clone(),
                instances: list,
                split: (two_versions && instances > 1)
                    .then(|| vec![("v1".into(), 9000), ("v2".into(), 1000)]),
            }
        })
        .collect();
    let versions_of = |name: &str| -> &[&str] {
        match names.iter().position(|x| x == name) {
            Some(i) if i % 10 == 5 && instances > 1 => &["v1", "v2"],
            _ => &["v1"],
        }
    };
    let platform = domains.saturating_sub(3).max(1);
    let api_of = |d: usize, k: usize| {
        let apis = &by_domain[d][0];
        (!apis.is_empty()).then(|| apis[k % apis.len()].clone())
    };
    let mut calls: Vec<(String, String)> = Vec::new();
    for (k, edge) in names.iter().take(edges).enumerate() {
        for c in 0..3 {
            if let Some(api) = api_of((k * 3 + c) % platform, k) {
                calls.push((edge.clone(), api));
            }
        }
    }
    for (d, tiers) in by_domain.iter().enumerate() {
        for (t, tier) in tiers.iter().enumerate() {
            for (j, name) in tier.iter().enumerate() {
                // Three calls into the next tier of the domain.
                if let Some(next) = tiers.get(t + 1).filter(|x| !x.is_empty()) {
                    for c in 0..3 {
                        calls.push((name.clone(), next[(j * 3 + c) % next.len()].clone()));
                    }
                }
                // Core and worker services call a platform domain, stores half the time the
                // last one (config); some domains call the next one.
                let platform_call = match t {
                    1 | 2 => Some(platform + (j + t) % (domains - platform).max(1)),
                    3 if j % 2 == 0 => Some(domains - 1),
                    _ => None,
                };
                if let Some(p) = platform_call.filter(|_| d < platform)
                    && let Some(api) = api_of(p.min(domains - 1), j)
                {
                    calls.push((name.clone(), api));
                }
                if t == 0
                    && d + 1 < platform
                    && d % 4 == 0
                    && j % 2 == 0
                    && let Some(api) = api_of(d + 1, j)
                {
                    calls.push((name.clone(), api));
                }
            }
        }
    }
    let mut lanes = Vec::new();
    for (i, (caller, callee)) in calls.iter().enumerate() {
        if caller == callee {
            continue;
        }
        for v in versions_of(callee) {
            let rps = if *v == "v2" {
                1 + i as u64 % 9
            } else {
                5 + (i as u64 * 7) % 200
            };
            let mut lane = LaneSpec::ok(caller, callee, v, rps, 4.0 + (i % 16) as f64 * 5.0);
            if i % 97 == 13 {
                lane.errors = lane.rps / 4;
            }
            lane.breaker = match i % 400 {
                17 => BreakerState::Open,
                71 | 271 => BreakerState::Saturated,
                113 => BreakerState::Ejecting {
                    ejected: 1,
                    total: 2,
                },
                _ => BreakerState::Closed,
            };
            lanes.push(lane);
        }
    }
    lanes.sort_by(|a, b| {
        (&a.caller, &a.service, &a.version).cmp(&(&b.caller, &b.service, &b.version))
    });
    lanes.dedup_by(|a, b| {
        (&a.caller, &a.service, &a.version) == (&b.caller, &b.service, &b.version)
    });
    (services, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::LaneKey;

    fn key(c: &str, s: &str, v: &str) -> LaneKey {
        LaneKey {
            caller: c.into(),
            service: s.into(),
            version: v.into(),
        }
    }

    #[test]
    fn the_model_derives_what_was_described() {
        let now = Instant::now();
        let mut lanes = demo_lanes();
        lanes[3].breaker = BreakerState::Open;
        lanes[3].errors = 50;
        lanes[4].breaker = BreakerState::Saturated;
        let m = model(&demo_services(), &lanes, now);
        let v2 = m.lanes[&key("gateway", "identity", "v2")]
            .stats
            .clone()
            .unwrap();
        assert!((v2.rps - 10.0).abs() < 1e-9, "{v2:?}");
        assert_eq!(v2.breaker, BreakerState::Closed);
        let photo = m.lanes[&key("gateway", "photo", "v1")]
            .stats
            .clone()
            .unwrap();
        assert_eq!(photo.breaker, BreakerState::Open);
        assert_eq!(photo.err5xx_ratio, Some(1.0));
        let pay = m.lanes[&key("gateway", "payment", "v1")]
            .stats
            .clone()
            .unwrap();
        assert_eq!(pay.breaker, BreakerState::Saturated);
        assert!(pay.p99_ms.unwrap() > 18.0);
        assert_eq!(m.configured_weight("identity", "v2"), Some(2000));
    }

    #[test]
    fn domain_mesh_is_grouped_by_name_and_about_three_calls_a_service() {
        let (s, l) = domain_mesh(2000, 10);
        assert_eq!(s.len(), 2000);
        assert!(s.iter().all(|x| x.instances.len() == 10));
        let calls: std::collections::BTreeSet<(&str, &str)> = l
            .iter()
            .map(|x| (x.caller.as_str(), x.service.as_str()))
            .collect();
        assert!((4000..8000).contains(&calls.len()), "{}", calls.len());
        assert!(s.iter().any(|x| x.name == "edge-01"));
        assert!(s.iter().any(|x| x.name.starts_with("payments-api-")));
        assert!(l.iter().any(|x| x.breaker == BreakerState::Open));
        let (small, _) = domain_mesh(120, 2);
        assert_eq!(small.len(), 120);
    }

    #[test]
    fn mesh_has_the_asked_size() {
        let (s, l) = mesh(500);
        assert_eq!(s.len(), 500);
        assert!(l.len() > 1000, "{}", l.len());
        let m = model(&s, &l, Instant::now());
        assert_eq!(m.services.len(), 500);
        assert!(m.lanes.len() > 1000);
    }
}

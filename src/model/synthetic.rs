//! Models built from a described spine, for image snapshots, UI tests and benchmarks: the
//! registry snapshot and two sidecar scrapes one second apart go through `Model::apply`
//! like real events, so every derived number (rates, percentiles, breaker states) is the
//! model's own.
//!
//! At scale ([`LargeSpine`]: 2,000 services, 10 instances each, one sidecar per instance)
//! the scrapes still go through the real path (and can be rendered as Envoy
//! `/stats/prometheus` text with [`envoy_text`], for the parser); only the hour of history
//! before them is written straight into the history rings
//! ([`Model::backfill_lane_history`]), which takes a second instead of replaying 3,600
//! rounds of 20,000 scrapes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::history::HistoryPoint;
use super::types::{
    BreakerState, Health, Instance, LaneKey, RegistryKind, RegistrySnapshot, ServiceEntry, Split,
    SplitConfig,
};
use super::{Model, RegistryInfo};
use crate::io::IoEvent;
use crate::metrics::{ClusterCounters, ClusterId, Histogram, LaneWindow, SidecarScrape};

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
        bad_values: 0,
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

/// The registry entry of `spec` with `instances`: resolver subsets when it has two or more
/// versions, its split at index 42.
fn service_entry(spec: &ServiceSpec, instances: Vec<Instance>) -> ServiceEntry {
    let mut subsets: Vec<String> = spec.instances.iter().map(|(v, _)| v.clone()).collect();
    subsets.sort();
    subsets.dedup();
    ServiceEntry {
        protocol: None,
        name: spec.name.clone(),
        instances,
        subsets: if subsets.len() > 1 {
            subsets
        } else {
            Vec::new()
        },
        split: spec.split.as_ref().map(|pairs| SplitConfig {
            split: Split::from_pairs(pairs.iter().map(|(v, w)| (v.clone(), *w))),
            modify_index: 42,
        }),
    }
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
            service_entry(s, instances)
        })
        .collect();
    let history_secs = history_secs.max(1);
    let t0 = now
        .checked_sub(Duration::from_secs(history_secs))
        .unwrap_or(now);
    m.apply(
        IoEvent::Registry {
            at: t0,
            result: Ok(Some(RegistrySnapshot {
                drivers: Vec::new(),
                services: entries,
            })),
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
    let versions = version_counts(services);
    let by_caller = lanes_by_caller(lanes);
    // One batch per second: every sidecar scraped at the same instant, one refresh.
    for k in 0..=history_secs {
        let at = t0 + Duration::from_secs(k);
        let events = services.iter().map(|s| {
            let mine = by_caller
                .get(s.name.as_str())
                .map_or(&[][..], Vec::as_slice);
            let mut clusters: Vec<ClusterCounters> = mine
                .iter()
                .map(|l| counters(l, subset_of(l, &versions), k, history_secs))
                .collect();
            clusters.sort_by(|a, b| a.id.cmp(&b.id));
            IoEvent::Scrape {
                url: stats_url(&s.name),
                at,
                result: Ok(SidecarScrape {
                    duplicate_series: 0,
                    clusters,
                    uptime_secs: Some(100.0 + k as f64),
                }),
            }
        });
        m.apply_batch(events.collect::<Vec<_>>(), at);
    }
    m
}

/// Number of versions per described service.
fn version_counts(services: &[ServiceSpec]) -> BTreeMap<&str, usize> {
    services
        .iter()
        .map(|s| {
            let mut v: Vec<&String> = s.instances.iter().map(|(v, _)| v).collect();
            v.sort();
            v.dedup();
            (s.name.as_str(), v.len())
        })
        .collect()
}

/// The subset label a caller's sidecar gives a lane: the version, or none for a service
/// with a single version (its lane is still that version's, GUIDE.md).
fn subset_of<'a>(lane: &'a LaneSpec, versions: &BTreeMap<&str, usize>) -> &'a str {
    if versions.get(lane.service.as_str()).copied().unwrap_or(1) > 1 {
        lane.version.as_str()
    } else {
        ""
    }
}

fn lanes_by_caller(lanes: &[LaneSpec]) -> BTreeMap<&str, Vec<&LaneSpec>> {
    let mut by_caller: BTreeMap<&str, Vec<&LaneSpec>> = BTreeMap::new();
    for l in lanes {
        by_caller.entry(l.caller.as_str()).or_default().push(l);
    }
    by_caller
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
/// services of the next layer; every tenth service has two versions. Two instances each.
#[must_use]
pub fn mesh(n: usize) -> (Vec<ServiceSpec>, Vec<LaneSpec>) {
    mesh_with(n, 2)
}

/// [`mesh`] with `instances` instances per service (at least one; a service with two
/// versions alternates v1, v2).
#[must_use]
pub fn mesh_with(n: usize, instances: usize) -> (Vec<ServiceSpec>, Vec<LaneSpec>) {
    let width = (n as f64).sqrt().ceil().max(1.0) as usize;
    let name = |i: usize| format!("svc-{i:04}");
    let instances = instances.max(1);
    let services: Vec<ServiceSpec> = (0..n)
        .map(|i| ServiceSpec {
            name: name(i),
            instances: if i.is_multiple_of(10) {
                (0..instances.max(2))
                    .map(|k| {
                        let v = if k % 2 == 0 { "v1" } else { "v2" };
                        (v.into(), Health::Passing)
                    })
                    .collect()
            } else {
                vec![("v1".into(), Health::Passing); instances]
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

/// Envoy's trust domain in the rendered labels (as in the fixture).
const TRUST_DOMAIN: &str = "c3f1b6a2-8d4e-4f7a-9b2c-1e5d7a9f3b64";

/// Renders a sidecar scrape as Envoy's `/stats/prometheus` text with Consul Connect's
/// labels, as a real sidecar prints it: one `# TYPE` line per family, families grouped,
/// every label of the fixture (`tests/fixtures/envoy/stats_prometheus.txt`), the
/// `external_` duplicates and a few families the dashboard does not read, default latency
/// buckets. `parse_envoy_stats` of the text gives `scrape` back (tested).
#[must_use]
pub fn envoy_text(scrape: &SidecarScrape) -> String {
    type Pick = fn(&ClusterCounters) -> Option<u64>;
    let mut out = String::with_capacity(scrape.clusters.len() * 40_000 + 512);
    let labels: Vec<String> = scrape
        .clusters
        .iter()
        .map(|c| cluster_labels(&c.id))
        .collect();
    let counters: [(&str, Pick); 12] = [
        ("envoy_cluster_external_upstream_rq_completed", |c| {
            Some(c.rq_completed)
        }),
        ("envoy_cluster_upstream_cx_overflow", |c| {
            Some(c.cx_overflow)
        }),
        ("envoy_cluster_upstream_cx_rx_bytes_total", |c| {
            Some(c.rq_total * 1_024)
        }),
        ("envoy_cluster_upstream_cx_total", |c| Some(c.rq_total / 50)),
        ("envoy_cluster_upstream_rq", |c| Some(c.rq_xx[1])),
        ("envoy_cluster_upstream_rq_completed", |c| {
            Some(c.rq_completed)
        }),
        ("envoy_cluster_upstream_rq_pending_overflow", |c| {
            Some(c.rq_pending_overflow)
        }),
        ("envoy_cluster_upstream_rq_pending_total", |c| {
            Some(c.rq_total / 20)
        }),
        ("envoy_cluster_upstream_rq_retry", |c| Some(c.rq_xx[4] / 3)),
        ("envoy_cluster_upstream_rq_timeout", |_| Some(0)),
        ("envoy_cluster_upstream_rq_total", |c| Some(c.rq_total)),
        ("envoy_cluster_upstream_rq_xx", |_| None), // classes, below
    ];
    for (family, pick) in counters {
        let _ = writeln!(out, "# TYPE {family} counter");
        for (c, l) in scrape.clusters.iter().zip(&labels) {
            if family.ends_with("_rq_xx") {
                for (class, n) in c.rq_xx.iter().enumerate() {
                    if *n > 0 {
                        let _ = writeln!(
                            out,
                            "{family}{{{l},envoy_response_code_class=\"{}\",{}}} {n}",
                            class + 1,
                            cluster_name_label(&c.id)
                        );
                    }
                }
            } else if family.ends_with("upstream_rq") {
                let _ = writeln!(
                    out,
                    "{family}{{{l},envoy_response_code=\"200\",{}}} {}",
                    cluster_name_label(&c.id),
                    c.rq_xx[1]
                );
            } else if let Some(n) = pick(c) {
                let _ = writeln!(out, "{family}{{{l},{}}} {n}", cluster_name_label(&c.id));
            }
        }
    }
    let gauges: [(&str, Pick); 9] = [
        ("envoy_cluster_circuit_breakers_default_cx_open", |c| {
            Some(c.cb_cx_open)
        }),
        ("envoy_cluster_circuit_breakers_default_rq_open", |c| {
            Some(c.cb_rq_open)
        }),
        (
            "envoy_cluster_circuit_breakers_default_rq_pending_open",
            |c| Some(c.cb_rq_pending_open),
        ),
        ("envoy_cluster_membership_degraded", |_| Some(0)),
        ("envoy_cluster_membership_healthy", |c| c.membership_healthy),
        ("envoy_cluster_membership_total", |c| c.membership_total),
        ("envoy_cluster_outlier_detection_ejections_active", |c| {
            c.ejections_active
        }),
        ("envoy_cluster_upstream_cx_active", |c| c.membership_total),
        ("envoy_cluster_upstream_rq_active", |_| Some(1)),
    ];
    for (family, pick) in gauges {
        let _ = writeln!(out, "# TYPE {family} gauge");
        for (c, l) in scrape.clusters.iter().zip(&labels) {
            if let Some(n) = pick(c) {
                let _ = writeln!(out, "{family}{{{l},{}}} {n}", cluster_name_label(&c.id));
            }
        }
    }
    if let Some(uptime) = scrape.uptime_secs {
        let _ = writeln!(
            out,
            "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{{}} {uptime}"
        );
    }
    for family in [
        "envoy_cluster_external_upstream_rq_time",
        "envoy_cluster_upstream_rq_time",
    ] {
        let _ = writeln!(out, "# TYPE {family} histogram");
        for (c, l) in scrape.clusters.iter().zip(&labels) {
            let name = cluster_name_label(&c.id);
            for (le, n) in &c.rq_time.buckets {
                let le = if le.is_infinite() {
                    "+Inf".to_owned()
                } else {
                    le.to_string()
                };
                let _ = writeln!(out, "{family}_bucket{{{l},{name},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{family}_sum{{{l},{name}}} {}", c.rq_time.sum);
            let _ = writeln!(out, "{family}_count{{{l},{name}}} {}", c.rq_time.count);
        }
    }
    out
}

/// The Consul Connect labels of one upstream cluster, as the fixture has them (without the
/// trailing `envoy_cluster_name`).
fn cluster_labels(id: &ClusterId) -> String {
    let target = if id.subset.is_empty() {
        format!("{}.default.dc1", id.service)
    } else {
        format!("{}.{}.default.dc1", id.subset, id.service)
    };
    format!(
        "local_cluster=\"{src}\",consul_source_service=\"{src}\",consul_source_namespace=\"default\",\
         consul_source_partition=\"default\",consul_source_datacenter=\"dc1\",\
         consul_destination_custom_hash=\"\",consul_destination_service_subset=\"{subset}\",\
         consul_destination_service=\"{svc}\",consul_destination_namespace=\"default\",\
         consul_destination_partition=\"default\",consul_destination_datacenter=\"dc1\",\
         consul_destination_routing_type=\"internal\",consul_destination_trust_domain=\"{TRUST_DOMAIN}\",\
         consul_destination_target=\"{target}\",consul_destination_full_target=\"{target}.internal.{TRUST_DOMAIN}\"",
        src = id.source,
        subset = id.subset,
        svc = id.service,
    )
}

/// `envoy_cluster_name`: the first dot-token of the cluster name (`API_BRIEF.md`).
fn cluster_name_label(id: &ClusterId) -> String {
    let first = if id.subset.is_empty() {
        &id.service
    } else {
        &id.subset
    };
    format!("envoy_cluster_name=\"{first}\"")
}

/// A described spine at scale, for benchmarks: every instance of every service has its own
/// sidecar (stats URL), and a caller's requests on each lane are spread over its
/// instances' sidecars (each carries 1/n of them, rounded up).
#[derive(Debug, Clone)]
pub struct LargeSpine {
    /// The services.
    pub services: Vec<ServiceSpec>,
    /// The lanes.
    pub lanes: Vec<LaneSpec>,
    /// Per service (same order as `services`): the indices of the lanes it calls.
    calls: Vec<Vec<usize>>,
    /// Per lane: the counters of one second on one caller sidecar.
    per_second: Vec<ClusterCounters>,
}

impl LargeSpine {
    /// [`mesh_with`]`(services, instances)` with one sidecar per instance.
    #[must_use]
    pub fn mesh(services: usize, instances: usize) -> Self {
        let (services, lanes) = mesh_with(services, instances);
        Self::new(services, lanes)
    }

    /// The described spine with one sidecar per instance.
    #[must_use]
    pub fn new(services: Vec<ServiceSpec>, lanes: Vec<LaneSpec>) -> Self {
        let versions = version_counts(&services);
        let index: BTreeMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut calls = vec![Vec::new(); services.len()];
        let per_second = lanes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let callers = index.get(l.caller.as_str()).copied();
                if let Some(c) = callers {
                    calls[c].push(i);
                }
                let n = callers.map_or(1, |c| services[c].instances.len().max(1)) as u64;
                let share = LaneSpec {
                    rps: l.rps.div_ceil(n),
                    errors: l.errors.div_ceil(n),
                    ..l.clone()
                };
                counters(&share, subset_of(l, &versions), 1, 1)
            })
            .collect();
        Self {
            services,
            lanes,
            calls,
            per_second,
        }
    }

    /// Number of instances (= sidecars).
    #[must_use]
    pub fn instances(&self) -> usize {
        self.services.iter().map(|s| s.instances.len()).sum()
    }

    /// The stats URL of instance `instance` of service number `service`.
    #[must_use]
    pub fn stats_url(&self, service: usize, instance: usize) -> String {
        let name = self.services.get(service).map_or("", |s| s.name.as_str());
        format!("http://{name}-{instance}.sidecar:19000/stats/prometheus")
    }

    /// The registry's view: every instance with its sidecar's stats URL.
    #[must_use]
    pub fn snapshot(&self) -> RegistrySnapshot {
        let services = self
            .services
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let instances = s
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, (version, health))| Instance {
                        id: format!("{}-{}", s.name, i + 1),
                        service: s.name.clone(),
                        version: version.clone(),
                        address: format!("10.{}.{}.{}", si / 250, si % 250, i),
                        port: 8080,
                        health: *health,
                        check_output: String::new(),
                        metrics_url: Some(self.stats_url(si, i)),
                    })
                    .collect();
                service_entry(s, instances)
            })
            .collect();
        RegistrySnapshot {
            drivers: Vec::new(),
            services,
        }
    }

    /// What one sidecar of service number `service` reports after `secs` seconds of
    /// steady traffic (cumulative counters; the uptime is `secs`).
    #[must_use]
    pub fn scrape(&self, service: usize, secs: u64) -> SidecarScrape {
        let mut clusters: Vec<ClusterCounters> = self
            .calls
            .get(service)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|&l| self.per_second.get(l))
            .map(|one| {
                let mut c = one.clone();
                let scale = |v: &mut u64| *v = v.saturating_mul(secs);
                scale(&mut c.rq_total);
                scale(&mut c.rq_completed);
                c.rq_xx.iter_mut().for_each(scale);
                scale(&mut c.rq_pending_overflow);
                scale(&mut c.cx_overflow);
                scale(&mut c.rq_time.count);
                c.rq_time.buckets.iter_mut().for_each(|(_, n)| scale(n));
                c.rq_time.sum *= secs as f64;
                c
            })
            .collect();
        clusters.sort_by(|a, b| a.id.cmp(&b.id));
        SidecarScrape {
            duplicate_series: 0,
            clusters,
            uptime_secs: Some(secs as f64),
        }
    }

    /// A model of this spine at `now`: the registry snapshot, `history_secs` of history
    /// written straight into the rings (lanes and versions, see [`LargeSpine::history`]),
    /// then two scrapes of every sidecar (`now − 1 s`, `now`) through
    /// `Model::apply_deferred` and one refresh: the current window is derived by the model.
    #[must_use]
    pub fn model(&self, now: Instant, history_secs: u64) -> Model {
        let info = RegistryInfo {
            kind: RegistryKind::Demo,
            address: "http://127.0.0.1:8500".into(),
            datacenter: Some("dc1".into()),
            writable: true,
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
        m.set_clock_anchor(now, std::time::UNIX_EPOCH + Duration::from_hours(498_828));
        let t0 = now
            .checked_sub(Duration::from_secs(history_secs.max(1)))
            .unwrap_or(now);
        m.apply(
            IoEvent::Registry {
                at: t0,
                result: Ok(Some(self.snapshot())),
                next_within: Duration::from_hours(1),
            },
            t0,
        );
        self.history(&mut m, now, history_secs);
        let start = history_secs.max(2);
        let before = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        for (at, secs) in [(before, start - 1), (now, start)] {
            for (si, s) in self.services.iter().enumerate() {
                let scrape = self.scrape(si, secs);
                for i in 0..s.instances.len() {
                    m.apply_deferred(
                        IoEvent::Scrape {
                            url: self.stats_url(si, i),
                            at,
                            result: Ok(scrape.clone()),
                        },
                        at,
                    );
                }
            }
        }
        m.apply_deferred(
            IoEvent::Registry {
                at: now,
                result: Ok(None),
                next_within: Duration::from_secs(1),
            },
            now,
        );
        m.finish_batch(now);
        m
    }

    /// Writes `history_secs − 1` seconds of history ending one second before `now` into
    /// every lane's and version's rings: each lane's steady stats with the rate wobbling by
    /// ±10 %, versions summing their lanes' rates; callers whose name ends in `7` have a
    /// two-minute gap (a sidecar outage) in the middle, kept as a gap, not zeros.
    pub fn history(&self, m: &mut Model, now: Instant, history_secs: u64) {
        let secs = history_secs.saturating_sub(1);
        if secs == 0 {
            return;
        }
        let start = now
            .checked_sub(Duration::from_secs(history_secs))
            .unwrap_or(now);
        let gap = (secs / 2)..(secs / 2 + 120);
        // version → (lanes' specs and stats)
        let mut by_version: BTreeMap<(&str, &str), Vec<(&LaneSpec, LaneWindow)>> = BTreeMap::new();
        for (l, one) in self.lanes.iter().zip(&self.per_second) {
            let Some(w) = crate::metrics::window(&ClusterCounters::default(), one, 1.0) else {
                continue;
            };
            let stats = w.stats();
            let outage = l.caller.ends_with('7');
            let key = LaneKey {
                caller: l.caller.clone(),
                service: l.service.clone(),
                version: l.version.clone(),
            };
            m.backfill_lane_history(
                &key,
                (0..secs).map(|k| {
                    let at = start + Duration::from_secs(k);
                    if outage && gap.contains(&k) {
                        HistoryPoint::gap(at)
                    } else {
                        HistoryPoint {
                            rps: Some(stats.rps * wobble(k)),
                            ..HistoryPoint::from_stats(at, &stats)
                        }
                    }
                }),
            );
            by_version
                .entry((l.service.as_str(), l.version.as_str()))
                .or_default()
                .push((l, w));
        }
        for ((service, version), lanes) in by_version {
            let mut merged = lanes[0].1.clone();
            for (_, w) in &lanes[1..] {
                merged.merge(w);
            }
            let stats = merged.stats();
            m.backfill_version_history(
                service,
                version,
                (0..secs).map(|k| HistoryPoint {
                    rps: Some(stats.rps * wobble(k)),
                    ..HistoryPoint::from_stats(start + Duration::from_secs(k), &stats)
                }),
            );
        }
    }
}

/// A deterministic ±10 % rate wobble for second `k`.
fn wobble(k: u64) -> f64 {
    1.0 + 0.1 * (k as f64 * 0.7).sin()
}

/// `services` (e.g. from [`mesh`]) with `per_service` instances each, for the served
/// synthetic spine (`spine-dash demo --serve --size N`): a service with several versions
/// keeps them all, its last version with a fifth of the instances (at least one), the
/// first with the rest; about one instance in 250 is critical.
#[must_use]
pub fn with_instances(services: &[ServiceSpec], per_service: usize) -> Vec<ServiceSpec> {
    let per_service = per_service.max(1);
    services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut versions: Vec<String> = s.instances.iter().map(|(v, _)| v.clone()).collect();
            versions.sort();
            versions.dedup();
            let last_share = if versions.len() > 1 {
                (per_service / 5).max(1)
            } else {
                0
            };
            let instances = (0..per_service)
                .map(|j| {
                    let version = match versions.as_slice() {
                        [] => "v1".to_owned(),
                        [only] => only.clone(),
                        [first, .., last] => {
                            if j >= per_service - last_share {
                                last.clone()
                            } else {
                                first.clone()
                            }
                        }
                    };
                    let health = if (i * per_service + j) % 250 == 17 {
                        Health::Critical
                    } else {
                        Health::Passing
                    };
                    (version, health)
                })
                .collect();
            ServiceSpec {
                name: s.name.clone(),
                instances,
                split: s.split.clone(),
            }
        })
        .collect()
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
    fn instances_scale_and_keep_versions() {
        let (s, _) = mesh(100);
        let big = with_instances(&s, 10);
        assert_eq!(big.len(), 100);
        assert!(big.iter().all(|x| x.instances.len() == 10));
        let two: Vec<&ServiceSpec> = big
            .iter()
            .filter(|x| x.instances.iter().any(|(v, _)| v == "v2"))
            .collect();
        assert_eq!(two.len(), 10);
        let v2 = two[0].instances.iter().filter(|(v, _)| v == "v2").count();
        assert_eq!(v2, 2);
        let critical = big
            .iter()
            .flat_map(|x| &x.instances)
            .filter(|(_, h)| *h == Health::Critical)
            .count();
        assert_eq!(critical, 4);
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

    #[test]
    fn envoy_text_parses_back_to_the_scrape() {
        let spine = LargeSpine::mesh(30, 2);
        // svc-0000 calls three services, one of them with two versions.
        let scrape = spine.scrape(0, 1_234);
        assert!(scrape.clusters.len() >= 3, "{scrape:?}");
        let text = envoy_text(&scrape);
        assert!(
            text.contains("consul_destination_trust_domain"),
            "fixture labels"
        );
        assert_eq!(crate::metrics::parse_envoy_stats(&text), Ok(scrape));
    }

    #[test]
    fn large_spine_model_has_a_sidecar_per_instance_and_backfilled_history() {
        let spine = LargeSpine::mesh(30, 3);
        assert_eq!(spine.instances(), 90);
        let now = Instant::now();
        let m = spine.model(now, 400);
        assert_eq!(m.sidecars.len(), 90);
        assert_eq!(m.sidecars_with_window(), 90);
        assert_eq!(m.lanes.len(), spine.lanes.len());
        assert!(
            m.lanes.values().all(|l| l.stats.is_some()),
            "every lane has a window"
        );
        // A lane of svc-0007: three sidecars with 1/3 of its requests each (rounded up).
        let spec = spine
            .lanes
            .iter()
            .find(|l| l.caller == "svc-0007")
            .expect("svc-0007 calls");
        let key = LaneKey {
            caller: spec.caller.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
        };
        let lane = m.lanes[&key].stats.clone().expect("data");
        assert!((lane.rps - (spec.rps.div_ceil(3) * 3) as f64).abs() < 1e-9);
        let history: Vec<HistoryPoint> = m.lane_history(&key).expect("history").points().collect();
        assert_eq!(
            history.last().map(|p| p.at),
            Some(now),
            "the derived window comes last"
        );
        // 400 s: coarse points before the last 5 min, then one point per second.
        assert!(
            history.len() > 300 && history.len() < 320,
            "{}",
            history.len()
        );
        assert!(
            history.iter().any(HistoryPoint::is_gap),
            "the outage is a gap"
        );
        assert!(history.iter().all(|p| p.rps != Some(0.0)), "never zeros");
        let version = m
            .version_history(&spec.service, &spec.version)
            .expect("version history");
        assert!(version.len() > 300);
        let (series, bytes) = m.history_footprint();
        assert!(series > spine.lanes.len(), "lanes and versions: {series}");
        assert_eq!(
            bytes % series,
            0,
            "every series preallocates the same rings"
        );
    }
}

//! The synthetic spine: a large mesh served from the demo registry (`spine-dash demo
//! --serve --size N`), for measuring the dashboard at scale without running 20,000 servers.
//!
//! - **Topology** comes from [`crate::model::synthetic::mesh`] (the frame benchmark's
//!   models have the same call graph: services in layers of about √N, each calling up to
//!   three services of the next layer, every tenth with versions v1 and v2 split 90/10),
//!   with [`crate::model::synthetic::with_instances`] instances per service (default 10,
//!   about one in 250 critical).
//! - **Registry**: the demo's Consul API ([`super::consul_api`]) over the demo registry
//!   state, every instance registered with its `<svc>-sidecar-proxy`, `Meta.version` and
//!   `Meta.metrics_url`; `service-defaults` for each service, a `service-resolver` and a
//!   `service-splitter` for each one with two versions. Nothing changes unless asked
//!   ([`SyntheticSpine::set_health`]): a *static* spine.
//! - **Sidecars**: one listener serves all of them, `/s/<instance-id>/stats/prometheus`
//!   (Envoy's text format with Consul's labels, honouring `usedonly` and `filter`),
//!   `/s/<id>/clusters?format=json` and `/s/<id>/ready`. Counters come from a deterministic
//!   traffic model: each lane's rate, split over its caller's instances, wobbles ±10 % over
//!   a minute, so counters only grow and two scrapes give a rate; latency follows a
//!   log-normal around the lane's typical value. A few lanes are unusual, by a fixed rule:
//!   about 1 in 97 saturated (breaker gauges 1, overflow counted), 1 in 97 ejecting one
//!   host, 1 in 389 open (no healthy host), callees with index ≡ 7 (mod 53) slow (25×
//!   latency), and 1 sidecar in 997 answers only after [`SLOW_SIDECAR_DELAY`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::clusters::{self, ClusterStatusView, HostView};
use super::net::{self, ServerHandle};
use super::sidecar::{ENVOY_DEFAULT_MAX, HostStats, TRUST_DOMAIN};
use super::state::{InstanceSpec, LOOPBACK, RegistryState};
use super::stats::{self, BreakerGauges, ClusterStats, ClusterView, Membership, StatsQuery};
use super::{DemoError, consul_api, lock};
use crate::model::synthetic::{mesh, with_instances};
use crate::model::types::Health;

/// How long the few slow sidecars take to answer (below the dashboard's 2 s deadline).
pub const SLOW_SIDECAR_DELAY: Duration = Duration::from_millis(1500);
/// Uptime the sidecars report at start: counters begin at an hour of traffic.
const START_UPTIME_SECS: f64 = 3600.0;
/// Period of the ±10 % traffic wobble.
const WOBBLE_PERIOD_SECS: f64 = 60.0;
/// Spread (σ of ln ms) of the latency distribution.
const LATENCY_SIGMA: f64 = 0.6;
/// First port of the (fictional) app ports of the instances; nothing listens there.
const FIRST_APP_PORT: usize = 10_000;

/// Settings of the synthetic spine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Services.
    pub services: usize,
    /// Instances per service.
    pub instances_per_service: usize,
    /// Datacenter the registry reports.
    pub datacenter: String,
    /// Registry port on 127.0.0.1 (0 = any free port).
    pub registry_port: u16,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            services: 2000,
            instances_per_service: 10,
            datacenter: "dc1".into(),
            registry_port: 0,
        }
    }
}

/// What a lane is doing, by the fixed rule of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneMood {
    Normal,
    Saturated,
    Ejecting,
    Open,
}

/// A host of a cluster: instance id, app port, healthy.
type Host = (String, u16, bool);
/// A version's weight in hundredths, per version.
type SplitWeights = Vec<(String, u32)>;

/// One upstream cluster of a caller's sidecars.
#[derive(Debug)]
struct Lane {
    labels: String,
    envoy_name: String,
    full_name: String,
    /// Requests per second of one caller instance.
    rps_per_instance: f64,
    err_ratio: f64,
    latency_ms: f64,
    mood: LaneMood,
    /// Callee hosts.
    hosts: Vec<Host>,
}

/// One service: its sidecars' fixed labels and upstream clusters.
#[derive(Debug)]
struct Service {
    fixed_labels: String,
    lanes: Vec<Lane>,
    /// Requests per second into one of its instances (its `local_app` cluster).
    inbound_rps_per_instance: f64,
}

/// One instance's sidecar.
#[derive(Debug)]
struct Sidecar {
    service: usize,
    app_port: u16,
    /// This instance's share of its service's traffic (≈ 1).
    share: f64,
    phase: f64,
    slow: bool,
}

/// The served mesh: everything the sidecar listener needs, fixed at start.
#[derive(Debug)]
struct Mesh {
    services: Vec<Service>,
    sidecars: HashMap<String, Sidecar>,
    started: Instant,
}

fn unit_hash(parts: impl Hash) -> f64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Cumulative requests after `x` seconds at `rate` wobbling ±10 % with `phase`.
fn cumulative(rate: f64, x: f64, phase: f64) -> f64 {
    let w = std::f64::consts::TAU / WOBBLE_PERIOD_SECS;
    let phi = phase * std::f64::consts::TAU;
    rate * (x + 0.1 * (phi.cos() - (w * x + phi).cos()) / w)
}

/// Share of requests at most `ms` long, log-normal around `median_ms` (logistic
/// approximation of the normal CDF).
fn latency_cdf(ms: f64, median_ms: f64) -> f64 {
    if ms <= 0.0 {
        return 0.0;
    }
    let z = (ms / median_ms).ln() / LATENCY_SIGMA;
    1.0 / (1.0 + (-1.702 * z).exp())
}

impl Mesh {
    /// Counters of one cluster after `x` seconds of traffic at `rps`.
    fn cluster_stats(rps: f64, x: f64, phase: f64, lane: Option<&Lane>) -> ClusterStats {
        let completed = cumulative(rps, x, phase).max(0.0);
        let (err_ratio, latency_ms, overflow_ratio) = match lane {
            Some(l) => (
                l.err_ratio,
                l.latency_ms,
                if l.mood == LaneMood::Saturated {
                    0.08
                } else {
                    0.0
                },
            ),
            None => (0.0, 2.0, 0.0),
        };
        let completed_n = completed.floor() as u64;
        let overflow = (completed * overflow_ratio).floor() as u64;
        let errors = (completed * err_ratio).floor() as u64 + overflow;
        let mut stats = ClusterStats::default();
        stats.rq_total = completed_n.saturating_sub(overflow);
        stats.rq_pending_overflow = overflow;
        stats.rq_completed = completed_n;
        let ok = completed_n.saturating_sub(errors);
        if ok > 0 {
            stats.rq_by_code.insert(200, ok);
        }
        if errors > 0 {
            stats.rq_by_code.insert(503, errors);
        }
        let upstream = stats.rq_total;
        let mean_ms = latency_ms * (LATENCY_SIGMA * LATENCY_SIGMA / 2.0).exp();
        stats.set_time_histogram(upstream, upstream as f64 * mean_ms, |b| {
            latency_cdf(b, latency_ms)
        });
        stats
    }

    /// `/stats/prometheus` of one sidecar now.
    fn render_stats(&self, sidecar: &Sidecar, query: &StatsQuery) -> String {
        let svc = &self.services[sidecar.service];
        let elapsed = self.started.elapsed().as_secs_f64();
        let x = START_UPTIME_SECS + elapsed;
        let stats: Vec<ClusterStats> = svc
            .lanes
            .iter()
            .map(|l| {
                Self::cluster_stats(
                    l.rps_per_instance * sidecar.share,
                    x,
                    sidecar.phase,
                    Some(l),
                )
            })
            .collect();
        let local = Self::cluster_stats(
            svc.inbound_rps_per_instance * sidecar.share,
            x,
            sidecar.phase,
            None,
        );
        let mut views: Vec<ClusterView<'_>> = svc
            .lanes
            .iter()
            .zip(&stats)
            .map(|(l, s)| {
                let total = l.hosts.len() as u64;
                let healthy = l.hosts.iter().filter(|h| h.2).count() as u64;
                let (healthy, ejected) = match l.mood {
                    LaneMood::Ejecting if healthy > 1 => (healthy - 1, 1),
                    LaneMood::Open => (0, healthy.min(1)),
                    _ => (healthy, 0),
                };
                let saturated = l.mood == LaneMood::Saturated;
                ClusterView {
                    labels: &l.labels,
                    cluster_name: &l.envoy_name,
                    full_name: &l.full_name,
                    stats: s,
                    membership: Membership {
                        healthy,
                        total,
                        ejections_active: ejected,
                    },
                    outlier_detection: true,
                    breakers: BreakerGauges {
                        rq_open: saturated,
                        rq_pending_open: saturated,
                        remaining: None,
                    },
                }
            })
            .collect();
        views.push(ClusterView {
            labels: &svc.fixed_labels,
            cluster_name: "local_app",
            full_name: "local_app",
            stats: &local,
            membership: Membership {
                healthy: 1,
                total: 1,
                ejections_active: 0,
            },
            outlier_detection: false,
            breakers: BreakerGauges::default(),
        });
        stats::render(&svc.fixed_labels, &views, x as u64, query)
    }

    /// `/clusters?format=json` of one sidecar.
    fn render_clusters(&self, sidecar: &Sidecar) -> String {
        let svc = &self.services[sidecar.service];
        let mut views: Vec<ClusterStatusView<'_>> = svc
            .lanes
            .iter()
            .map(|l| {
                let mut ejected_left = match l.mood {
                    LaneMood::Ejecting => 1,
                    LaneMood::Open => usize::MAX,
                    _ => 0,
                };
                ClusterStatusView {
                    name: &l.full_name,
                    added_via_api: true,
                    hosts: l
                        .hosts
                        .iter()
                        .map(|(_, port, healthy)| {
                            let ejected = *healthy && ejected_left > 0;
                            if ejected {
                                ejected_left -= 1;
                            }
                            HostView {
                                address: LOOPBACK,
                                port: *port,
                                stats: HostStats::default(),
                                eds_healthy: *healthy,
                                ejected,
                            }
                        })
                        .collect(),
                    max_requests: ENVOY_DEFAULT_MAX,
                    max_pending_requests: ENVOY_DEFAULT_MAX,
                }
            })
            .collect();
        views.push(ClusterStatusView {
            name: "local_app",
            added_via_api: true,
            hosts: vec![HostView {
                address: LOOPBACK,
                port: sidecar.app_port,
                stats: HostStats::default(),
                eds_healthy: true,
                ejected: false,
            }],
            max_requests: ENVOY_DEFAULT_MAX,
            max_pending_requests: ENVOY_DEFAULT_MAX,
        });
        clusters::render(&views)
    }
}

/// What [`build`] makes: the served mesh, the registry's instances with their health, and
/// the service names (sorted).
struct Built {
    mesh: Mesh,
    specs: Vec<InstanceSpec>,
    healths: Vec<Health>,
    /// Service names (sorted) with their split, if any (hundredths per version).
    names: Vec<(String, Option<SplitWeights>)>,
}

/// Builds the mesh and the registry's instance list.
fn build(cfg: &SyntheticConfig, sidecar_port: u16) -> Built {
    let (services, lanes) = mesh(cfg.services);
    let services = with_instances(&services, cfg.instances_per_service);
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut specs = Vec::new();
    let mut healths = Vec::new();
    let mut sidecars = HashMap::new();
    // (service, version) → hosts.
    let mut hosts: HashMap<(usize, &str), Vec<Host>> = HashMap::new();
    for (si, s) in services.iter().enumerate() {
        for (j, (version, health)) in s.instances.iter().enumerate() {
            let id = format!("{}-{version}-{}", s.name, j + 1);
            let n = si * cfg.instances_per_service + j;
            let app_port = (FIRST_APP_PORT + n % 50_000) as u16;
            specs.push(InstanceSpec {
                id: id.clone(),
                service: s.name.clone(),
                version: version.clone(),
                port: app_port,
                sidecar_port,
                sidecar_path: format!("/s/{id}"),
            });
            healths.push(*health);
            hosts.entry((si, version.as_str())).or_default().push((
                id.clone(),
                app_port,
                *health != Health::Critical,
            ));
            sidecars.insert(
                id.clone(),
                Sidecar {
                    service: si,
                    app_port,
                    share: 0.9 + 0.2 * unit_hash(&id),
                    phase: unit_hash((&id, 1)),
                    slow: n % 997 == 500,
                },
            );
        }
    }
    let versions_of = |i: usize| {
        let mut v: Vec<&str> = services[i]
            .instances
            .iter()
            .map(|(v, _)| v.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let mut served: Vec<Service> = services
        .iter()
        .map(|s| Service {
            fixed_labels: stats::fixed_labels(&s.name, &cfg.datacenter),
            lanes: Vec::new(),
            inbound_rps_per_instance: 0.0,
        })
        .collect();
    let mut inbound = vec![0.0_f64; services.len()];
    for lane in &lanes {
        let (Some(&ci), Some(&si)) = (
            index.get(lane.caller.as_str()),
            index.get(lane.service.as_str()),
        ) else {
            continue;
        };
        let subset = if versions_of(si) > 1 {
            lane.version.as_str()
        } else {
            ""
        };
        let fixed = &served[ci].fixed_labels;
        let (labels, envoy_name) =
            stats::upstream_labels(fixed, &lane.service, subset, &cfg.datacenter, TRUST_DOMAIN);
        let rule = (ci * 31 + si * 17) % 97;
        let mood = if (ci * 13 + si) % 389 == 3 {
            LaneMood::Open
        } else if rule == 1 {
            LaneMood::Saturated
        } else if rule == 2 {
            LaneMood::Ejecting
        } else {
            LaneMood::Normal
        };
        let callers = services[ci].instances.len().max(1) as f64;
        let rps = lane.rps as f64;
        inbound[si] += rps;
        let latency_ms = if si % 53 == 7 {
            lane.latency_ms * 25.0
        } else {
            lane.latency_ms
        };
        let err_ratio = if mood == LaneMood::Open {
            1.0
        } else if lane.rps > 0 {
            lane.errors as f64 / rps
        } else {
            0.0
        };
        served[ci].lanes.push(Lane {
            labels,
            envoy_name,
            full_name: stats::cluster_full_name(
                &lane.service,
                subset,
                &cfg.datacenter,
                TRUST_DOMAIN,
            ),
            rps_per_instance: rps / callers,
            err_ratio,
            latency_ms,
            mood,
            hosts: hosts
                .get(&(si, lane.version.as_str()))
                .cloned()
                .unwrap_or_default(),
        });
    }
    for (i, s) in served.iter_mut().enumerate() {
        s.inbound_rps_per_instance = inbound[i] / services[i].instances.len().max(1) as f64;
    }
    Built {
        mesh: Mesh {
            services: served,
            sidecars,
            started: Instant::now(),
        },
        specs,
        healths,
        names: services
            .iter()
            .map(|s| (s.name.clone(), s.split.clone()))
            .collect(),
    }
}

struct Inner {
    registry_url: String,
    sidecar_base: String,
    registry: Arc<Mutex<RegistryState>>,
    requests: Arc<consul_api::RequestCounter>,
    servers: Mutex<Vec<ServerHandle>>,
    services: usize,
    instances: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for mut s in lock(&self.servers).drain(..) {
            s.kill();
        }
    }
}

/// A running synthetic spine. Cheap to clone; dropping the last clone stops it.
#[derive(Clone)]
pub struct SyntheticSpine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyntheticSpine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSpine")
            .field("registry_url", &self.inner.registry_url)
            .field("services", &self.inner.services)
            .field("instances", &self.inner.instances)
            .finish_non_exhaustive()
    }
}

/// Resolver (a subset per version, by `Meta.version`) and splitter of a service with a
/// split (`weights` in hundredths per version).
fn split_entries(name: &str, weights: &[(String, u32)]) -> [String; 2] {
    let subsets: Vec<String> = weights
        .iter()
        .map(|(v, _)| format!(r#""{v}":{{"Filter":"Service.Meta.version == {v}"}}"#))
        .collect();
    let splits: Vec<String> = weights
        .iter()
        .map(|(v, w)| {
            format!(
                r#"{{"Weight":{},"ServiceSubset":"{v}"}}"#,
                f64::from(*w) / 100.0
            )
        })
        .collect();
    let default = weights.first().map_or("", |(v, _)| v.as_str());
    [
        format!(
            r#"{{"Kind":"service-resolver","Name":"{name}","DefaultSubset":"{default}","Subsets":{{{}}}}}"#,
            subsets.join(",")
        ),
        format!(
            r#"{{"Kind":"service-splitter","Name":"{name}","Splits":[{}]}}"#,
            splits.join(",")
        ),
    ]
}

impl SyntheticSpine {
    /// Starts the registry and the sidecar listener on the current tokio runtime.
    pub async fn start(cfg: SyntheticConfig) -> Result<Self, DemoError> {
        if cfg.services == 0 || cfg.instances_per_service == 0 {
            return Err(DemoError::Config(
                "a synthetic spine needs at least one service and one instance each".into(),
            ));
        }
        let registry_listener = net::bind(cfg.registry_port).await?;
        let registry_port = net::port_of(&registry_listener);
        let sidecar_listener = net::bind(0).await?;
        let sidecar_port = net::port_of(&sidecar_listener);
        let Built {
            mesh,
            specs,
            healths,
            names,
        } = build(&cfg, sidecar_port);
        let ids: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
        let instances = specs.len();
        let mut registry = RegistryState::new(
            &cfg.datacenter,
            specs,
            Duration::from_secs(10),
            Duration::from_secs(1),
        );
        for (name, split) in &names {
            registry.seed_service_defaults(name, "http");
            if let Some(split) = split {
                for entry in split_entries(name, split) {
                    registry
                        .config_put(entry.as_bytes(), None)
                        .map_err(|e| DemoError::Config(e.message))?;
                }
            }
        }
        for (id, health) in ids.iter().zip(healths) {
            let output = match health {
                Health::Critical => format!(
                    "HTTP GET http://{LOOPBACK}:{sidecar_port}/s/{id}/health: 503 Service Unavailable Output: synthetic outage"
                ),
                _ => format!(
                    "HTTP GET http://{LOOPBACK}:{sidecar_port}/s/{id}/health: 200 OK Output: ok"
                ),
            };
            registry.set_check(id, health, output);
        }
        let registry = Arc::new(Mutex::new(registry));
        let requests = Arc::new(consul_api::RequestCounter::default());
        let api = Arc::new(consul_api::ApiState {
            registry: Arc::clone(&registry),
            leader: format!("{LOOPBACK}:{registry_port}"),
            requests: Arc::clone(&requests),
        });
        let servers = vec![
            net::spawn_server(registry_listener, consul_api::router(api)),
            net::spawn_server(sidecar_listener, sidecar_router(Arc::new(mesh))),
        ];
        Ok(Self {
            inner: Arc::new(Inner {
                registry_url: format!("http://{LOOPBACK}:{registry_port}"),
                sidecar_base: format!("http://{LOOPBACK}:{sidecar_port}"),
                registry,
                requests,
                servers: Mutex::new(servers),
                services: names.len(),
                instances,
            }),
        })
    }

    /// Base URL of the registry (Consul HTTP API), e.g. `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn registry_url(&self) -> String {
        self.inner.registry_url.clone()
    }

    /// Base URL of the shared sidecar listener (`…/s/<instance-id>/stats/prometheus`).
    #[must_use]
    pub fn sidecar_base(&self) -> String {
        self.inner.sidecar_base.clone()
    }

    /// Services served.
    #[must_use]
    pub fn services(&self) -> usize {
        self.inner.services
    }

    /// Instances served.
    #[must_use]
    pub fn instances(&self) -> usize {
        self.inner.instances
    }

    /// Answers the registry sent so far, per path (what a dashboard costs it).
    #[must_use]
    pub fn registry_requests(&self) -> BTreeMap<String, u64> {
        self.inner.requests.snapshot()
    }

    /// Sets an instance's health check (one registry change, as a real check flip);
    /// `false` for an unknown id or no change.
    #[must_use = "false: unknown instance or no change"]
    pub fn set_health(&self, instance_id: &str, health: Health) -> bool {
        let output = format!("synthetic: set to {}", health.as_str());
        lock(&self.inner.registry).set_check(instance_id, health, output)
    }

    /// Stops both servers; frees the ports. Idempotent.
    pub fn shutdown(&self) {
        for mut s in lock(&self.inner.servers).drain(..) {
            s.kill();
        }
    }
}

fn sidecar_router(mesh: Arc<Mesh>) -> Router {
    Router::new()
        .route("/s/{id}/stats/prometheus", get(stats_page))
        .route("/s/{id}/clusters", get(clusters_page))
        .route("/s/{id}/ready", get(|| async { "LIVE\n" }))
        .with_state(mesh)
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn stats_page(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(sidecar) = mesh.sidecars.get(&id) else {
        return plain(StatusCode::NOT_FOUND, format!("no sidecar {id:?}\n"));
    };
    let query = match StatsQuery::parse(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    if sidecar.slow {
        tokio::time::sleep(SLOW_SIDECAR_DELAY).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        mesh.render_stats(sidecar, &query),
    )
        .into_response()
}

async fn clusters_page(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(sidecar) = mesh.sidecars.get(&id) else {
        return plain(StatusCode::NOT_FOUND, format!("no sidecar {id:?}\n"));
    };
    if !query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"))
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "the demo sidecar serves /clusters?format=json only".to_owned(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        mesh.render_clusters(sidecar),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::parse_envoy_stats;

    fn small() -> SyntheticConfig {
        SyntheticConfig {
            services: 30,
            instances_per_service: 4,
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn counters_grow_and_histograms_stay_cumulative() {
        let cfg = small();
        let Built { mesh, specs, .. } = build(&cfg, 1);
        assert_eq!(specs.len(), 120);
        let id = &specs[0].id;
        let sidecar = &mesh.sidecars[id];
        let q = StatsQuery::default();
        let a = parse_envoy_stats(&mesh.render_stats(sidecar, &q)).unwrap();
        assert!(!a.clusters.iter().all(|c| c.id.is_local()), "has upstreams");
        for c in &a.clusters {
            let b = &c.rq_time.buckets;
            assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "{b:?}");
            assert_eq!(b.last().map(|x| x.1), Some(c.rq_time.count));
            assert!(c.rq_completed >= c.rq_total);
        }
        // Later: every counter at least as large.
        let x = START_UPTIME_SECS + 10.0;
        for lane in &mesh.services[0].lanes {
            let s0 = Mesh::cluster_stats(lane.rps_per_instance, START_UPTIME_SECS, 0.3, Some(lane));
            let s1 = Mesh::cluster_stats(lane.rps_per_instance, x, 0.3, Some(lane));
            assert!(s1.rq_completed > s0.rq_completed);
            assert!(s1.rq_total >= s0.rq_total);
        }
    }

    #[test]
    fn wobble_keeps_rates_within_ten_percent() {
        for phase in [0.0, 0.25, 0.7] {
            for x in [0.0, 13.0, 3600.0] {
                let r = cumulative(50.0, x + 1.0, phase) - cumulative(50.0, x, phase);
                assert!((44.0..=56.0).contains(&r), "{r}");
            }
        }
        assert!((latency_cdf(10.0, 10.0) - 0.5).abs() < 1e-9);
        assert!(latency_cdf(100.0, 10.0) > 0.99);
    }

    #[test]
    fn the_mesh_has_unusual_lanes_and_slow_sidecars_at_scale() {
        let cfg = SyntheticConfig {
            services: 2000,
            instances_per_service: 10,
            ..SyntheticConfig::default()
        };
        let Built {
            mesh,
            specs,
            healths,
            ..
        } = build(&cfg, 1);
        assert_eq!(specs.len(), 20_000);
        let moods: Vec<LaneMood> = mesh
            .services
            .iter()
            .flat_map(|s| s.lanes.iter().map(|l| l.mood))
            .collect();
        let count = |m: LaneMood| moods.iter().filter(|x| **x == m).count();
        assert!(
            count(LaneMood::Saturated) > 20,
            "{}",
            count(LaneMood::Saturated)
        );
        assert!(count(LaneMood::Ejecting) > 20);
        assert!(count(LaneMood::Open) > 3);
        let slow = mesh.sidecars.values().filter(|s| s.slow).count();
        assert!((10..=30).contains(&slow), "{slow}");
        let critical = healths.iter().filter(|h| **h == Health::Critical).count();
        assert_eq!(critical, 80);
    }
}

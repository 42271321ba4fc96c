//! The embedded demo spine: a registry speaking the Consul HTTP API subset, real HTTP
//! services, an Envoy-like sidecar per instance, health checks, traffic and faults, all on
//! 127.0.0.1. A simulator for learning, demos and tests — never a production registry.
//!
//! The system is the design's: portal → gateway → identity (v1 ×2, v2 ×1, split 80/20),
//! photo (×2) and payment (×2) → notification. Every instance and every sidecar is an HTTP
//! server on its own free loopback port; the dashboard reaches them only through its normal
//! Consul and Envoy adapters (`registry_url()`, `Service.Meta.metrics_url`).

mod app;
mod clusters;
mod consul_api;
mod filter;
mod net;
mod sidecar;
mod state;
mod stats;
pub mod synthetic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};

pub use crate::model::types::DemoFault;
use crate::model::types::DemoInstanceState;
use crate::model::types::Health;
use app::{AppCtx, UpstreamCall};
use net::ServerHandle;
use sidecar::{OutlierConfig, Sidecar};
use state::{InstanceSpec, LOOPBACK, RegistryState};

/// Settings of the demo spine.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Requests per second the traffic generator sends into the portal (0 = none).
    pub traffic_rps: f64,
    /// Period of the registry's HTTP health checks.
    pub health_interval: Duration,
    /// How long a sidecar keeps a failing host ejected.
    pub ejection_base: Duration,
    /// Consecutive failures (connect errors, 5xx) that eject a host (0 = never).
    pub consecutive_failures: u32,
    /// Datacenter name reported by the registry and in sidecar labels.
    pub datacenter: String,
    /// Port of the registry (Consul HTTP API) on 127.0.0.1; 0 = any free port.
    pub registry_port: u16,
    /// Circuit-breaker thresholds of every upstream cluster of the sidecars behind the
    /// entry service (gateway → identity / photo / payment, payment → notification).
    pub limits: RequestLimits,
    /// Thresholds of the entry service's (portal's) upstream cluster: Envoy's defaults, as
    /// an edge sized for all user traffic. Were they as tight as `limits`, the lane in front
    /// would saturate first and hide the saturated lane behind it.
    pub entry_limits: RequestLimits,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            traffic_rps: 50.0,
            health_interval: Duration::from_secs(2),
            ejection_base: Duration::from_secs(5),
            consecutive_failures: 3,
            datacenter: "dc1".into(),
            registry_port: 0,
            limits: RequestLimits::default(),
            entry_limits: RequestLimits {
                max_requests: sidecar::ENVOY_DEFAULT_MAX,
                max_pending_requests: sidecar::ENVOY_DEFAULT_MAX,
            },
        }
    }
}

/// Envoy circuit-breaker thresholds (default priority) of one upstream cluster, as Consul
/// sets them from an upstream's `limits` (`max_concurrent_requests`, `max_pending_requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests in flight at once (`max_requests`); at least 1.
    pub max_requests: u32,
    /// Requests waiting for a slot beyond those (`max_pending_requests`); 0 = none wait.
    pub max_pending_requests: u32,
}

impl Default for RequestLimits {
    /// 10 in flight, 10 waiting: the demo's ~50 rps needs about 1 slot per lane (about 3
    /// on portal → gateway), while 500 ms added to one payment instance needs about 13 on
    /// gateway → payment, and 2 s on both about 100.
    fn default() -> Self {
        Self {
            max_requests: 10,
            max_pending_requests: 10,
        }
    }
}

/// What can go wrong starting or controlling the demo spine.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A loopback port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No instance has this id.
    #[error("no demo instance named {0:?}")]
    UnknownInstance(String),
    /// The configuration cannot work (e.g. a zero health interval).
    #[error("invalid demo configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the demo HTTP client: {0}")]
    Client(String),
    /// `shutdown()` was called.
    #[error("the demo spine is shut down")]
    ShutDown,
}

/// Timeout of one health check, as a Consul HTTP check's `Timeout`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one generated user request.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(5);
/// Most user requests in flight at once; ticks beyond it are skipped.
const MAX_IN_FLIGHT: usize = 200;
/// Longest health check output kept, as Consul does (4 KiB).
const MAX_OUTPUT: usize = 4096;

/// One service of the demo system.
struct ServiceSpec {
    name: &'static str,
    /// Path its callers use.
    path: &'static str,
    upstreams: &'static [&'static str],
    /// (version, instances, base latency in ms).
    versions: &'static [(&'static str, u32, u64)],
}

const TOPOLOGY: &[ServiceSpec] = &[
    ServiceSpec {
        name: "portal",
        path: "/passport",
        upstreams: &["gateway"],
        versions: &[("v1", 1, 2)],
    },
    ServiceSpec {
        name: "gateway",
        path: "/api/renew",
        upstreams: &["identity", "photo", "payment"],
        versions: &[("v1", 1, 3)],
    },
    ServiceSpec {
        name: "identity",
        path: "/login",
        upstreams: &[],
        versions: &[("v1", 2, 4), ("v2", 1, 9)],
    },
    ServiceSpec {
        name: "photo",
        path: "/photo",
        upstreams: &[],
        versions: &[("v1", 2, 10)],
    },
    ServiceSpec {
        name: "payment",
        path: "/pay",
        upstreams: &["notification"],
        versions: &[("v1", 2, 6)],
    },
    ServiceSpec {
        name: "notification",
        path: "/notify",
        upstreams: &[],
        versions: &[("v1", 1, 3)],
    },
];

/// Config entries the demo starts with (written through the normal validation path).
const SEED_ENTRIES: [&str; 2] = [
    r#"{"Kind":"service-resolver","Name":"identity","DefaultSubset":"v1",
        "Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},
                   "v2":{"Filter":"Service.Meta.version == v2","OnlyPassing":true}},
        "ConnectTimeout":"5s"}"#,
    r#"{"Kind":"service-splitter","Name":"identity",
        "Splits":[{"Weight":80,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}]}"#,
];

/// Locks a std mutex, recovering the data if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One instance at run time.
struct InstanceRuntime {
    spec: InstanceSpec,
    app: Arc<AppCtx>,
    server: Mutex<Option<ServerHandle>>,
    /// Serializes stop / start of this instance.
    op: tokio::sync::Mutex<()>,
}

struct Inner {
    registry_url: String,
    registry_port: u16,
    /// The registry's HTTP server (`None` while stopped, see [`DemoSpine::stop_registry`]);
    /// the registry's state lives on in `registry_api` either way.
    registry_server: Mutex<Option<ServerHandle>>,
    registry_api: Arc<consul_api::ApiState>,
    /// Serializes stop / start of the registry.
    registry_op: tokio::sync::Mutex<()>,
    requests: Arc<consul_api::RequestCounter>,
    instances: BTreeMap<String, InstanceRuntime>,
    servers: Mutex<Vec<ServerHandle>>,
    tasks: Mutex<Vec<AbortHandle>>,
    shut_down: AtomicBool,
}

impl Inner {
    fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for mut server in lock(&self.servers).drain(..) {
            server.kill();
        }
        if let Some(mut server) = lock(&self.registry_server).take() {
            server.kill();
        }
        for rt in self.instances.values() {
            if let Some(mut server) = lock(&rt.server).take() {
                server.kill();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A running demo spine. Cheap to clone; dropping the last clone shuts it down.
#[derive(Clone)]
pub struct DemoSpine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DemoSpine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSpine")
            .field("registry_url", &self.inner.registry_url)
            .field("instances", &self.inner.instances.len())
            .finish_non_exhaustive()
    }
}

fn validate(cfg: &DemoConfig) -> Result<Option<Duration>, DemoError> {
    if cfg.health_interval.is_zero() {
        return Err(DemoError::Config(
            "health_interval must be above zero".into(),
        ));
    }
    if cfg.datacenter.is_empty()
        || !cfg
            .datacenter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(DemoError::Config(format!(
            "datacenter {:?} must be letters, digits, '-' or '_'",
            cfg.datacenter
        )));
    }
    if !(cfg.traffic_rps.is_finite() && cfg.traffic_rps >= 0.0) {
        return Err(DemoError::Config(format!(
            "traffic_rps must be a number >= 0, not {}",
            cfg.traffic_rps
        )));
    }
    if cfg.limits.max_requests == 0 || cfg.entry_limits.max_requests == 0 {
        return Err(DemoError::Config("max_requests must be at least 1".into()));
    }
    if cfg.traffic_rps == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(1.0 / cfg.traffic_rps) {
        Ok(period) if !period.is_zero() => Ok(Some(period)),
        _ => Err(DemoError::Config(format!(
            "traffic_rps {} is out of range",
            cfg.traffic_rps
        ))),
    }
}

fn instance_id(spec: &ServiceSpec, version: &str, n: u32) -> String {
    if spec.versions.len() > 1 {
        format!("{}-{version}-{n}", spec.name)
    } else {
        format!("{}-{n}", spec.name)
    }
}

impl DemoSpine {
    /// Starts the registry, every instance, its sidecar, the health checks and the traffic
    /// on the current tokio runtime. Health is checked once before this returns, so the
    /// registry's first answers are already true.
    pub async fn start(cfg: DemoConfig) -> Result<DemoSpine, DemoError> {
        let traffic_period = validate(&cfg)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DemoError::Client(e.to_string()))?;

        // Bind everything first: ports are part of the registrations.
        let registry_listener = net::bind(cfg.registry_port).await?;
        let registry_port = net::port_of(&registry_listener);
        let mut planned = Vec::new();
        for svc in TOPOLOGY {
            for &(version, count, latency_ms) in svc.versions {
                for n in 1..=count {
                    let app_listener = net::bind(0).await?;
                    let sidecar_listener = net::bind(0).await?;
                    let spec = InstanceSpec {
                        id: instance_id(svc, version, n),
                        service: svc.name.to_owned(),
                        version: version.to_owned(),
                        port: net::port_of(&app_listener),
                        sidecar_port: net::port_of(&sidecar_listener),
                        sidecar_path: String::new(),
                    };
                    planned.push((svc, spec, latency_ms, app_listener, sidecar_listener));
                }
            }
        }

        let mut registry = RegistryState::new(
            &cfg.datacenter,
            planned.iter().map(|p| p.1.clone()).collect(),
            cfg.health_interval,
            HEALTH_TIMEOUT,
        );
        for svc in TOPOLOGY {
            registry.seed_service_defaults(svc.name, "http");
        }
        for entry in SEED_ENTRIES {
            registry
                .config_put(entry.as_bytes(), None)
                .map_err(|e| DemoError::Config(e.message))?;
        }
        let registry = Arc::new(Mutex::new(registry));

        let outlier = OutlierConfig {
            consecutive_failures: cfg.consecutive_failures,
            ejection_base: cfg.ejection_base,
        };
        let mut servers = Vec::new();
        let requests = Arc::new(consul_api::RequestCounter::default());
        let api = Arc::new(consul_api::ApiState {
            registry: Arc::clone(&registry),
            leader: format!("{LOOPBACK}:{registry_port}"),
            requests: Arc::clone(&requests),
        });
        let registry_server =
            net::spawn_killable_server(registry_listener, consul_api::router(Arc::clone(&api)));

        let mut instances = BTreeMap::new();
        for (svc, spec, latency_ms, app_listener, sidecar_listener) in planned {
            let limits = if svc.name == TOPOLOGY[0].name {
                cfg.entry_limits
            } else {
                cfg.limits
            };
            let sidecar = Arc::new(Sidecar::new(
                svc.name,
                &cfg.datacenter,
                svc.upstreams.iter().map(|u| (*u).to_owned()).collect(),
                Arc::clone(&registry),
                client.clone(),
                outlier,
                limits,
                spec.port,
            ));
            servers.push(net::spawn_server(
                sidecar_listener,
                sidecar::router(Arc::clone(&sidecar)),
            ));
            let upstreams = svc
                .upstreams
                .iter()
                .map(|u| UpstreamCall {
                    service: (*u).to_owned(),
                    path: TOPOLOGY
                        .iter()
                        .find(|s| s.name == *u)
                        .map_or("/", |s| s.path)
                        .to_owned(),
                })
                .collect();
            let app = Arc::new(AppCtx::new(
                &spec.id,
                &spec.service,
                &spec.version,
                upstreams,
                spec.sidecar_port,
                Duration::from_millis(latency_ms),
                client.clone(),
                sidecar,
            ));
            let server = net::spawn_server(app_listener, app::router(Arc::clone(&app)));
            instances.insert(
                spec.id.clone(),
                InstanceRuntime {
                    spec,
                    app,
                    server: Mutex::new(Some(server)),
                    op: tokio::sync::Mutex::new(()),
                },
            );
        }

        let targets: Vec<(String, u16)> = instances
            .values()
            .map(|rt| (rt.spec.id.clone(), rt.spec.port))
            .collect();
        health_round(&registry, &client, &targets).await;

        let mut tasks = Vec::new();
        // TTL checks and KV sessions of SDK registrations end when not renewed.
        let expiry = tokio::spawn(consul_api::expiry_loop(
            Arc::clone(&registry),
            Duration::from_millis(250),
        ));
        tasks.push(expiry.abort_handle());
        let health = tokio::spawn(health_loop(
            Arc::clone(&registry),
            client.clone(),
            targets,
            cfg.health_interval,
        ));
        tasks.push(health.abort_handle());
        if let Some(period) = traffic_period {
            let entry_urls: Vec<String> = instances
                .values()
                .filter(|rt| rt.spec.service == TOPOLOGY[0].name)
                .map(|rt| format!("http://{LOOPBACK}:{}{}", rt.spec.port, TOPOLOGY[0].path))
                .collect();
            let traffic = tokio::spawn(traffic_loop(client, entry_urls, period));
            tasks.push(traffic.abort_handle());
        }

        Ok(DemoSpine {
            inner: Arc::new(Inner {
                requests,
                registry_url: format!("http://{LOOPBACK}:{registry_port}"),
                registry_port,
                registry_server: Mutex::new(Some(registry_server)),
                registry_api: api,
                registry_op: tokio::sync::Mutex::new(()),
                instances,
                servers: Mutex::new(servers),
                tasks: Mutex::new(tasks),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    /// Base URL of the registry (Consul HTTP API), e.g. `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn registry_url(&self) -> String {
        self.inner.registry_url.clone()
    }

    /// Kills the registry's HTTP server as if its process died: the port refuses
    /// connections, every open connection fails at once (a blocking query in flight gets
    /// no answer). Its state — services, checks, config entries, KV — lives on, and health
    /// checks go on updating it. Stopping a stopped registry is a no-op.
    pub async fn stop_registry(&self) -> Result<(), DemoError> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(DemoError::ShutDown);
        }
        let _op = self.inner.registry_op.lock().await;
        let server = lock(&self.inner.registry_server).take();
        if let Some(server) = server {
            server.stop().await;
            tracing::info!("demo registry stopped ({})", self.inner.registry_url);
        }
        Ok(())
    }

    /// Serves the registry again on the same port, with the state it had (and what the
    /// health checks changed meanwhile). Starting a running registry is a no-op.
    pub async fn start_registry(&self) -> Result<(), DemoError> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(DemoError::ShutDown);
        }
        let _op = self.inner.registry_op.lock().await;
        if lock(&self.inner.registry_server).is_some() {
            return Ok(());
        }
        let listener = net::bind(self.inner.registry_port).await?;
        let server = net::spawn_killable_server(
            listener,
            consul_api::router(Arc::clone(&self.inner.registry_api)),
        );
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(DemoError::ShutDown);
        }
        *lock(&self.inner.registry_server) = Some(server);
        tracing::info!("demo registry started again ({})", self.inner.registry_url);
        Ok(())
    }

    /// Whether the registry's HTTP server runs (see [`DemoSpine::stop_registry`]).
    #[must_use]
    pub fn registry_running(&self) -> bool {
        lock(&self.inner.registry_server).is_some()
    }

    /// Answers the registry sent so far, per path (what a dashboard costs it).
    #[must_use]
    pub fn registry_requests(&self) -> BTreeMap<String, u64> {
        self.inner.requests.snapshot()
    }

    /// Every instance, whether its server runs and its injected faults, sorted by id.
    #[must_use]
    pub fn instances(&self) -> Vec<DemoInstanceState> {
        self.inner
            .instances
            .values()
            .map(|rt| DemoInstanceState {
                id: rt.spec.id.clone(),
                service: rt.app.service.clone(),
                version: rt.app.version.clone(),
                running: lock(&rt.server).is_some(),
                fault: rt.app.fault(),
            })
            .collect()
    }

    fn runtime(&self, id: &str) -> Result<&InstanceRuntime, DemoError> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(DemoError::ShutDown);
        }
        self.inner
            .instances
            .get(id)
            .ok_or_else(|| DemoError::UnknownInstance(id.to_owned()))
    }

    /// Kills the instance's HTTP server: its port refuses connections and its open
    /// connections die. Its sidecar keeps running. Stopping a stopped instance is a no-op.
    pub async fn stop_instance(&self, id: &str) -> Result<(), DemoError> {
        let rt = self.runtime(id)?;
        let _op = rt.op.lock().await;
        let server = lock(&rt.server).take();
        if let Some(server) = server {
            server.stop().await;
        }
        Ok(())
    }

    /// Serves the instance again on the same port. Starting a running instance is a no-op.
    pub async fn start_instance(&self, id: &str) -> Result<(), DemoError> {
        let rt = self.runtime(id)?;
        let _op = rt.op.lock().await;
        if lock(&rt.server).is_some() {
            return Ok(());
        }
        let listener = net::bind(rt.spec.port).await?;
        let server = net::spawn_server(listener, app::router(Arc::clone(&rt.app)));
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(DemoError::ShutDown);
        }
        *lock(&rt.server) = Some(server);
        Ok(())
    }

    /// Injects faults into one instance (replacing any before): added latency and a share of
    /// 5xx answers take effect with the next request, a health override with the next
    /// health check (within `health_interval`). `DemoFault::default()` clears them.
    /// Latency is capped at 60 s and the error share at 100 %.
    pub fn set_fault(&self, id: &str, fault: DemoFault) -> Result<(), DemoError> {
        let rt = self.runtime(id)?;
        rt.app.set_fault(fault);
        tracing::info!("demo fault on {id}: {}", rt.app.fault().summary());
        Ok(())
    }

    /// The faults injected into one instance now, `None` for an unknown id.
    #[must_use]
    pub fn fault(&self, id: &str) -> Option<DemoFault> {
        self.inner.instances.get(id).map(|rt| rt.app.fault())
    }

    /// The Envoy Prometheus stats URL of the instance's sidecar
    /// (`http://127.0.0.1:P/stats/prometheus`), `None` for an unknown id.
    #[must_use]
    pub fn sidecar_stats_url(&self, id: &str) -> Option<String> {
        self.inner.instances.get(id).map(|rt| rt.spec.metrics_url())
    }

    /// Stops everything: traffic, health checks, every server; frees the ports. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// Runs one round of health checks and records the results.
async fn health_round(
    registry: &Arc<Mutex<RegistryState>>,
    client: &reqwest::Client,
    targets: &[(String, u16)],
) {
    let mut set = JoinSet::new();
    for (id, port) in targets {
        let client = client.clone();
        let id = id.clone();
        let port = *port;
        set.spawn(async move {
            let (status, output) = check_http(&client, port).await;
            (id, status, output)
        });
    }
    let mut results = Vec::with_capacity(targets.len());
    while let Some(joined) = set.join_next().await {
        if let Ok(r) = joined {
            results.push(r);
        }
    }
    let mut reg = lock(registry);
    for (id, status, output) in results {
        reg.set_check(&id, status, output);
    }
}

/// One Consul-style HTTP check: 2xx passing, 429 warning, anything else critical.
async fn check_http(client: &reqwest::Client, port: u16) -> (Health, String) {
    let url = format!("http://{LOOPBACK}:{port}/health");
    match client.get(&url).timeout(HEALTH_TIMEOUT).send().await {
        Ok(mut resp) => {
            let code = resp.status();
            let body = crate::net::read_body(&mut resp, MAX_OUTPUT, true)
                .await
                .unwrap_or_default();
            let mut text = String::from_utf8_lossy(&body).into_owned();
            if text.len() > MAX_OUTPUT {
                let mut cut = MAX_OUTPUT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            let status = if code.is_success() {
                Health::Passing
            } else if code.as_u16() == 429 {
                Health::Warning
            } else {
                Health::Critical
            };
            let reason = code.canonical_reason().unwrap_or("");
            (
                status,
                format!("HTTP GET {url}: {} {reason} Output: {text}", code.as_u16()),
            )
        }
        Err(e) if e.is_connect() => (
            Health::Critical,
            format!("Get \"{url}\": dial tcp {LOOPBACK}:{port}: connect: connection refused"),
        ),
        Err(e) if e.is_timeout() => (
            Health::Critical,
            format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
        ),
        Err(e) => (Health::Critical, format!("Get \"{url}\": {e}")),
    }
}

async fn health_loop(
    registry: Arc<Mutex<RegistryState>>,
    client: reqwest::Client,
    targets: Vec<(String, u16)>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; `start` has just run a round.
    tick.tick().await;
    loop {
        tick.tick().await;
        health_round(&registry, &client, &targets).await;
    }
}

/// Sends user requests into the entry service, one per `period`, never more than
/// `MAX_IN_FLIGHT` at once. Dropping the task (abort) cancels the requests in flight.
async fn traffic_loop(client: reqwest::Client, urls: Vec<String>, period: Duration) {
    if urls.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    let mut n: usize = 0;
    loop {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_IN_FLIGHT {
            continue;
        }
        let url = urls[n % urls.len()].clone();
        n = n.wrapping_add(1);
        let client = client.clone();
        in_flight.spawn(async move {
            if let Ok(mut resp) = client.get(&url).timeout(TRAFFIC_TIMEOUT).send().await {
                let limit = crate::net::limits::MAX_ERROR_BODY_BYTES;
                let _ = crate::net::read_body(&mut resp, limit, true).await;
            }
        });
    }
}

//! The demo sidecar: an Envoy stand-in beside every instance. Its app calls
//! `GET /upstream/<service>/<path>`; the sidecar reads the route from the registry (the
//! demo's xDS), picks the subset by smooth weighted round-robin, a host by round-robin
//! among those not critical and not ejected, forwards, and keeps Envoy's cluster stats and
//! outlier detection (consecutive failures eject a host for a while). When no host can
//! take traffic it answers 503 at once: the design's `CircuitOpen` message.
//!
//! Request limits work as Envoy's default-priority circuit-breaker thresholds: at most
//! `max_requests` requests in flight per upstream cluster, at most `max_pending_requests`
//! more waiting for a slot; any request beyond is refused at once with 503 and
//! `x-envoy-overloaded: true`, counted in `upstream_rq_pending_overflow` (Envoy counts both
//! limits' overflows there) and in `upstream_rq_completed` / 5xx, not in `upstream_rq_total`.
//! The `circuit_breakers.default.{rq_open,rq_pending_open}` gauges read 1 while a limit is
//! reached; the `remaining_*` gauges are served too (as with Envoy's `track_remaining`).
//!
//! `GET /stats/prometheus` serves the stats with Consul Connect's labels;
//! `GET /clusters?format=json` serves the clusters, their hosts and which are ejected, as
//! Envoy's admin endpoint does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RequestLimits;
use super::clusters::{self, ClusterStatusView, HostView};
use super::lock;
use super::state::{ClusterKey, LOOPBACK, Member, RegistryState, Target};
use super::stats::{self, BreakerGauges, ClusterStats, ClusterView, Membership, Remaining};

/// Trust domain used in cluster names (`….internal.<td>.consul`).
pub(crate) const TRUST_DOMAIN: &str = "0de70000-5b1e-4d3a-8c2f-7a9e6b4d2c10";

/// Timeout of one forwarded request once it is sent to a host, and, separately, the longest
/// a request waits for a slot while the cluster is at `max_requests`. Up to 2 s of injected
/// latency stays below it: slowness alone saturates a lane, it does not eject hosts.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Envoy's default thresholds: connections, pending and requests (retries: 3).
pub(crate) const ENVOY_DEFAULT_MAX: u32 = 1024;
/// Envoy's default `max_retries` (the demo never retries).
pub(crate) const ENVOY_DEFAULT_RETRIES: u32 = 3;

/// Outlier detection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutlierConfig {
    /// Consecutive failures (connect errors, 5xx) that eject a host; 0 disables ejection.
    pub consecutive_failures: u32,
    /// How long an ejected host stays out.
    pub ejection_base: Duration,
}

/// Envoy's per-host counters (`/clusters` `host_statuses[].stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HostStats {
    /// Connection attempts that failed.
    pub cx_connect_fail: u64,
    /// Requests sent to the host.
    pub rq_total: u64,
    /// Answers below 500.
    pub rq_success: u64,
    /// 5xx answers, timeouts and resets.
    pub rq_error: u64,
    /// Requests that timed out.
    pub rq_timeout: u64,
    /// Requests in flight to the host.
    pub rq_active: u64,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    stats: HostStats,
}

#[derive(Debug)]
struct Cluster {
    labels: String,
    envoy_name: String,
    /// The full Consul Connect cluster name (`v1.identity.default.dc1.internal.<td>.consul`).
    full_name: String,
    stats: ClusterStats,
    hosts: BTreeMap<String, HostState>,
    next_host: usize,
    /// One permit per request allowed in flight (`max_requests`).
    slots: Arc<Semaphore>,
}

impl Cluster {
    fn is_ejected(&self, id: &str, now: Instant) -> bool {
        self.hosts
            .get(id)
            .and_then(|h| h.ejected_until)
            .is_some_and(|t| t > now)
    }

    /// Lets hosts whose ejection ran out back in (with a fresh failure count).
    fn expire_ejections(&mut self, now: Instant) {
        for h in self.hosts.values_mut() {
            if h.ejected_until.is_some_and(|t| t <= now) {
                h.ejected_until = None;
                h.consecutive_failures = 0;
            }
        }
    }

    /// The default-priority breaker gauges now: `rq_open` while every slot is taken,
    /// `rq_pending_open` while the pending queue is full (with no queue: while `rq_open`).
    fn breaker_gauges(&self, limits: RequestLimits) -> BreakerGauges {
        let free = self.slots.available_permits() as u64;
        let pending = self.stats.rq_pending_active;
        let max_pending = u64::from(limits.max_pending_requests);
        BreakerGauges {
            rq_open: free == 0,
            rq_pending_open: pending >= max_pending && (max_pending > 0 || free == 0),
            remaining: Some(Remaining {
                // One connection per request in flight, as Envoy's HTTP/1.1 pool.
                cx: u64::from(ENVOY_DEFAULT_MAX).saturating_sub(self.stats.rq_active),
                pending: max_pending.saturating_sub(pending),
                retries: u64::from(ENVOY_DEFAULT_RETRIES),
                rq: free,
            }),
        }
    }

    fn membership(&self, members: &[Member], now: Instant) -> Membership {
        let ejected = members
            .iter()
            .filter(|m| self.is_ejected(&m.id, now))
            .count();
        let healthy = members
            .iter()
            .filter(|m| m.healthy && !self.is_ejected(&m.id, now))
            .count();
        Membership {
            healthy: healthy as u64,
            total: members.len() as u64,
            ejections_active: ejected as u64,
        }
    }

    /// Outlier detection: counts a result for `host`.
    fn record_host(&mut self, host: &str, failed: bool, now: Instant, cfg: OutlierConfig) {
        let h = self.hosts.entry(host.to_owned()).or_default();
        match h.ejected_until {
            // Late answers of requests sent before the ejection change nothing.
            Some(t) if t > now => return,
            Some(_) => {
                h.ejected_until = None;
                h.consecutive_failures = 0;
            }
            None => {}
        }
        if !failed {
            h.consecutive_failures = 0;
            return;
        }
        h.consecutive_failures += 1;
        if cfg.consecutive_failures > 0 && h.consecutive_failures >= cfg.consecutive_failures {
            h.ejected_until = Some(now + cfg.ejection_base);
            h.consecutive_failures = 0;
            self.stats.ejections_enforced_total += 1;
        }
    }
}

/// Smooth weighted round-robin (nginx): deterministic, spreads picks evenly.
#[derive(Debug, Default)]
pub(crate) struct Wrr {
    targets: Vec<Target>,
    current: Vec<i64>,
}

impl Wrr {
    /// Picks the index of the next target; state resets when `targets` change.
    pub(crate) fn pick(&mut self, targets: &[Target]) -> Option<usize> {
        if self.targets != targets {
            self.targets = targets.to_vec();
            self.current = vec![0; targets.len()];
        }
        let total: i64 = targets.iter().map(|t| i64::from(t.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, t) in targets.iter().enumerate() {
            if t.weight == 0 {
                continue;
            }
            self.current[i] += i64::from(t.weight);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

#[derive(Debug, Default)]
struct SidecarState {
    clusters: BTreeMap<ClusterKey, Cluster>,
    routes: HashMap<String, Wrr>,
    local_app: ClusterStats,
}

/// Whether a request may go to its host now.
enum Admission {
    /// A slot is taken; dropping the permit frees it.
    Go(OwnedSemaphorePermit),
    /// The cluster is at `max_requests`: wait for a slot (counted as pending).
    Wait(Arc<Semaphore>),
    /// Both limits are reached: refused at once.
    Overflow,
}

/// One sidecar.
#[derive(Debug)]
pub(crate) struct Sidecar {
    source: String,
    datacenter: String,
    fixed_labels: String,
    upstreams: Vec<String>,
    registry: Arc<Mutex<RegistryState>>,
    client: reqwest::Client,
    outlier: OutlierConfig,
    limits: RequestLimits,
    /// Port of the app beside it (the `local_app` cluster's host).
    app_port: u16,
    started: Instant,
    state: Mutex<SidecarState>,
}

/// What the picker decided under the lock.
enum Pick {
    Host {
        key: ClusterKey,
        id: String,
        port: u16,
        admission: Admission,
    },
    Open {
        key: ClusterKey,
        failing: usize,
        total: usize,
    },
}

/// How a forwarded request ended.
enum Outcome {
    Response(u16),
    ConnectFail,
    Timeout,
    Reset,
    /// The caller went away before the answer (not the host's fault).
    Cancelled,
}

impl Sidecar {
    /// A sidecar for `source` calling `upstreams` with `limits` on every upstream cluster;
    /// clusters for the current routes exist from the start, so every lane shows up before
    /// traffic does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        source: &str,
        datacenter: &str,
        upstreams: Vec<String>,
        registry: Arc<Mutex<RegistryState>>,
        client: reqwest::Client,
        outlier: OutlierConfig,
        limits: RequestLimits,
        app_port: u16,
    ) -> Self {
        let sc = Self {
            source: source.to_owned(),
            datacenter: datacenter.to_owned(),
            fixed_labels: stats::fixed_labels(source, datacenter),
            upstreams,
            registry,
            client,
            outlier,
            limits,
            app_port,
            started: Instant::now(),
            state: Mutex::new(SidecarState::default()),
        };
        let keys: Vec<ClusterKey> = {
            let reg = lock(&sc.registry);
            sc.upstreams
                .iter()
                .flat_map(|u| reg.route(u))
                .map(|t| t.key)
                .collect()
        };
        let mut st = lock(&sc.state);
        for key in keys {
            sc.ensure_cluster(&mut st, &key);
        }
        drop(st);
        sc
    }

    fn ensure_cluster<'a>(&self, st: &'a mut SidecarState, key: &ClusterKey) -> &'a mut Cluster {
        st.clusters.entry(key.clone()).or_insert_with(|| {
            let (labels, cluster_name) = stats::upstream_labels(
                &self.fixed_labels,
                &key.service,
                &key.subset,
                &self.datacenter,
                TRUST_DOMAIN,
            );
            Cluster {
                labels,
                envoy_name: cluster_name,
                full_name: stats::cluster_full_name(
                    &key.service,
                    &key.subset,
                    &self.datacenter,
                    TRUST_DOMAIN,
                ),
                stats: ClusterStats::default(),
                hosts: BTreeMap::new(),
                next_host: 0,
                slots: Arc::new(Semaphore::new(self.limits.max_requests as usize)),
            }
        })
    }

    /// Counts one inbound request the app answered (the `local_app` cluster).
    pub(crate) fn record_inbound(&self, code: u16, elapsed: Duration) {
        let mut st = lock(&self.state);
        st.local_app.rq_total += 1;
        st.local_app.count_response(code);
        st.local_app.record_time(elapsed);
    }

    /// Routes: the route plan with every target's members, read from the registry.
    fn plan(&self, service: &str) -> Vec<(Target, Vec<Member>)> {
        let reg = lock(&self.registry);
        reg.route(service)
            .into_iter()
            .map(|t| {
                let members = reg.members(&t.key);
                (t, members)
            })
            .collect()
    }

    fn pick(&self, service: &str, plan: &[(Target, Vec<Member>)]) -> Option<Pick> {
        let now = Instant::now();
        let targets: Vec<Target> = plan.iter().map(|(t, _)| t.clone()).collect();
        let mut st = lock(&self.state);
        let idx = st
            .routes
            .entry(service.to_owned())
            .or_default()
            .pick(&targets)?;
        let (target, members) = &plan[idx];
        let cluster = self.ensure_cluster(&mut st, &target.key);
        cluster.expire_ejections(now);
        let eligible: Vec<&Member> = members
            .iter()
            .filter(|m| m.healthy && !cluster.is_ejected(&m.id, now))
            .collect();
        if eligible.is_empty() {
            cluster.stats.count_response(503);
            cluster.stats.cx_none_healthy += 1;
            return Some(Pick::Open {
                key: target.key.clone(),
                failing: members.len(),
                total: members.len(),
            });
        }
        let host = eligible[cluster.next_host % eligible.len()];
        cluster.next_host = cluster.next_host.wrapping_add(1);
        let admission = match Arc::clone(&cluster.slots).try_acquire_owned() {
            Ok(permit) => {
                cluster.stats.rq_active += 1;
                cluster
                    .hosts
                    .entry(host.id.clone())
                    .or_default()
                    .stats
                    .rq_active += 1;
                Admission::Go(permit)
            }
            Err(_)
                if cluster.stats.rq_pending_active
                    < u64::from(self.limits.max_pending_requests) =>
            {
                cluster.stats.rq_pending_active += 1;
                cluster.stats.rq_pending_total += 1;
                Admission::Wait(Arc::clone(&cluster.slots))
            }
            Err(_) => {
                // Envoy: local 503, `upstream_rq_pending_overflow`, completed but not total.
                cluster.stats.rq_pending_overflow += 1;
                cluster.stats.count_response(503);
                Admission::Overflow
            }
        };
        Some(Pick::Host {
            key: target.key.clone(),
            id: host.id.clone(),
            port: host.port,
            admission,
        })
    }

    /// A request that waited for a slot got one (`admitted`) or gave up / went away.
    fn leave_pending(&self, key: &ClusterKey, host: &str, outcome: PendingEnd) {
        let mut st = lock(&self.state);
        let cluster = self.ensure_cluster(&mut st, key);
        cluster.stats.rq_pending_active = cluster.stats.rq_pending_active.saturating_sub(1);
        match outcome {
            PendingEnd::Admitted => {
                cluster.stats.rq_active += 1;
                cluster
                    .hosts
                    .entry(host.to_owned())
                    .or_default()
                    .stats
                    .rq_active += 1;
            }
            PendingEnd::TimedOut => {
                cluster.stats.rq_timeout += 1;
                cluster.stats.count_response(504);
            }
            PendingEnd::Cancelled => {}
        }
    }

    fn finish(&self, key: &ClusterKey, host: &str, outcome: &Outcome, elapsed: Duration) {
        let now = Instant::now();
        let cfg = self.outlier;
        let mut st = lock(&self.state);
        let cluster = self.ensure_cluster(&mut st, key);
        cluster.stats.rq_active = cluster.stats.rq_active.saturating_sub(1);
        let hs = &mut cluster.hosts.entry(host.to_owned()).or_default().stats;
        hs.rq_active = hs.rq_active.saturating_sub(1);
        match *outcome {
            Outcome::Response(code) => {
                hs.rq_total += 1;
                if code >= 500 {
                    hs.rq_error += 1;
                } else {
                    hs.rq_success += 1;
                }
            }
            Outcome::ConnectFail => hs.cx_connect_fail += 1,
            Outcome::Timeout => {
                hs.rq_total += 1;
                hs.rq_timeout += 1;
                hs.rq_error += 1;
            }
            Outcome::Reset => {
                hs.rq_total += 1;
                hs.rq_error += 1;
            }
            Outcome::Cancelled => hs.rq_total += 1,
        }
        let failed = match *outcome {
            Outcome::Response(code) => {
                cluster.stats.rq_total += 1;
                cluster.stats.count_response(code);
                cluster.stats.record_time(elapsed);
                code >= 500
            }
            Outcome::ConnectFail => {
                cluster.stats.cx_connect_fail += 1;
                cluster.stats.count_response(503);
                true
            }
            Outcome::Timeout => {
                cluster.stats.rq_total += 1;
                cluster.stats.rq_timeout += 1;
                cluster.stats.count_response(504);
                true
            }
            Outcome::Reset => {
                cluster.stats.rq_total += 1;
                cluster.stats.count_response(503);
                true
            }
            Outcome::Cancelled => {
                cluster.stats.rq_total += 1;
                return;
            }
        };
        cluster.record_host(host, failed, now, cfg);
    }

    /// Forwards one outbound call to `service` (`path_and_query` starts with `/`).
    async fn forward(&self, service: &str, path_and_query: &str) -> Response {
        let plan = self.plan(service);
        let Some(pick) = self.pick(service, &plan) else {
            return text(503, "no healthy upstream".to_owned());
        };
        let (key, id, port, admission) = match pick {
            Pick::Open {
                key,
                failing,
                total,
            } => {
                let name = if key.subset.is_empty() {
                    key.service.clone()
                } else {
                    format!("{}/{}", key.service, key.subset)
                };
                return text(
                    503,
                    format!(
                        "CircuitOpen: '{name}' temporarily unavailable ({failing}/{total} failures)"
                    ),
                );
            }
            Pick::Host {
                key,
                id,
                port,
                admission,
            } => (key, id, port, admission),
        };
        let _permit = match admission {
            Admission::Go(permit) => permit,
            Admission::Overflow => return overflow_reply(),
            Admission::Wait(slots) => {
                let mut guard = PendingGuard {
                    sidecar: self,
                    key: &key,
                    host: &id,
                    done: false,
                };
                let waited = tokio::time::timeout(UPSTREAM_TIMEOUT, slots.acquire_owned()).await;
                guard.done = true;
                // Err: timed out (the semaphore is never closed).
                let Ok(Ok(permit)) = waited else {
                    self.leave_pending(&key, &id, PendingEnd::TimedOut);
                    return timeout_reply();
                };
                self.leave_pending(&key, &id, PendingEnd::Admitted);
                permit
            }
        };
        // Decrements `rq_active` even if the caller goes away mid-request.
        let mut guard = ActiveGuard {
            sidecar: self,
            key: &key,
            host: &id,
            done: false,
        };
        let url = format!("http://{LOOPBACK}:{port}{path_and_query}");
        let started = Instant::now();
        let result = self.client.get(&url).timeout(UPSTREAM_TIMEOUT).send().await;
        let (outcome, response) = match result {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
                let limit = crate::net::limits::SIDECAR_MAX_BODY_BYTES;
                match crate::net::read_body(&mut resp, limit, false).await {
                    Ok(body) => {
                        let mut r = Response::new(Body::from(body));
                        *r.status_mut() =
                            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                        if let Some(ct) = content_type {
                            r.headers_mut().insert(header::CONTENT_TYPE, ct);
                        }
                        (Outcome::Response(code), r)
                    }
                    Err(crate::net::BodyError::Transport(e)) if e.is_timeout() => {
                        (Outcome::Timeout, timeout_reply())
                    }
                    Err(_) => (Outcome::Reset, reset_reply("connection termination")),
                }
            }
            Err(e) if e.is_connect() => (Outcome::ConnectFail, reset_reply("connection failure")),
            Err(e) if e.is_timeout() => (Outcome::Timeout, timeout_reply()),
            Err(_) => (Outcome::Reset, reset_reply("connection termination")),
        };
        guard.done = true;
        self.finish(&key, &id, &outcome, started.elapsed());
        response
    }

    /// Members of every known or routed cluster (read from the registry), with the
    /// clusters for the current routes created and expired ejections let back in.
    fn prepare_render(
        &self,
    ) -> (
        BTreeMap<ClusterKey, Vec<Member>>,
        Instant,
        std::sync::MutexGuard<'_, SidecarState>,
    ) {
        let known: Vec<ClusterKey> = lock(&self.state).clusters.keys().cloned().collect();
        let (members, routed) = {
            let reg = lock(&self.registry);
            let routed: Vec<ClusterKey> = self
                .upstreams
                .iter()
                .flat_map(|u| reg.route(u))
                .map(|t| t.key)
                .collect();
            let members: BTreeMap<ClusterKey, Vec<Member>> = known
                .iter()
                .chain(&routed)
                .map(|k| (k.clone(), reg.members(k)))
                .collect();
            (members, routed)
        };
        let now = Instant::now();
        let mut st = lock(&self.state);
        for key in &routed {
            self.ensure_cluster(&mut st, key);
        }
        for c in st.clusters.values_mut() {
            c.expire_ejections(now);
        }
        (members, now, st)
    }

    /// Renders `/stats/prometheus`.
    pub(crate) fn render_stats(&self, query: &stats::StatsQuery) -> String {
        let (members, now, st) = self.prepare_render();
        let mut views: Vec<ClusterView<'_>> = st
            .clusters
            .iter()
            .map(|(key, c)| ClusterView {
                labels: &c.labels,
                cluster_name: &c.envoy_name,
                full_name: &c.full_name,
                stats: &c.stats,
                membership: members
                    .get(key)
                    .map(|m| c.membership(m, now))
                    .unwrap_or_default(),
                outlier_detection: true,
                breakers: c.breaker_gauges(self.limits),
            })
            .collect();
        views.push(ClusterView {
            labels: &self.fixed_labels,
            cluster_name: "local_app",
            full_name: "local_app",
            stats: &st.local_app,
            membership: Membership {
                healthy: 1,
                total: 1,
                ejections_active: 0,
            },
            outlier_detection: false,
            breakers: BreakerGauges::default(),
        });
        stats::render(
            &self.fixed_labels,
            &views,
            self.started.elapsed().as_secs(),
            query,
        )
    }

    /// Renders `/clusters?format=json`: every upstream cluster with its hosts (the
    /// registry's members: EDS health, whether outlier detection ejected them, per-host
    /// counters) and thresholds, then `local_app`.
    pub(crate) fn render_clusters(&self) -> String {
        let (members, now, st) = self.prepare_render();
        let mut views: Vec<ClusterStatusView<'_>> = st
            .clusters
            .iter()
            .map(|(key, c)| ClusterStatusView {
                name: &c.full_name,
                added_via_api: true,
                hosts: members
                    .get(key)
                    .map(|ms| {
                        ms.iter()
                            .map(|m| HostView {
                                address: LOOPBACK,
                                port: m.port,
                                stats: c.hosts.get(&m.id).map(|h| h.stats).unwrap_or_default(),
                                eds_healthy: m.healthy,
                                ejected: c.is_ejected(&m.id, now),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                max_requests: self.limits.max_requests,
                max_pending_requests: self.limits.max_pending_requests,
            })
            .collect();
        let app = &st.local_app;
        let errors: u64 = app
            .rq_by_code
            .iter()
            .filter(|(code, _)| **code >= 500)
            .map(|(_, n)| n)
            .sum();
        views.push(ClusterStatusView {
            name: "local_app",
            added_via_api: true,
            hosts: vec![HostView {
                address: LOOPBACK,
                port: self.app_port,
                stats: HostStats {
                    rq_total: app.rq_total,
                    rq_success: app.rq_total.saturating_sub(errors),
                    rq_error: errors,
                    ..HostStats::default()
                },
                eds_healthy: true,
                ejected: false,
            }],
            max_requests: ENVOY_DEFAULT_MAX,
            max_pending_requests: ENVOY_DEFAULT_MAX,
        });
        clusters::render(&views)
    }
}

/// How a wait for a slot ended.
#[derive(Clone, Copy)]
enum PendingEnd {
    Admitted,
    TimedOut,
    Cancelled,
}

/// Leaves the pending queue if the caller goes away while waiting for a slot.
struct PendingGuard<'a> {
    sidecar: &'a Sidecar,
    key: &'a ClusterKey,
    host: &'a str,
    done: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.sidecar
                .leave_pending(self.key, self.host, PendingEnd::Cancelled);
        }
    }
}

struct ActiveGuard<'a> {
    sidecar: &'a Sidecar,
    key: &'a ClusterKey,
    host: &'a str,
    done: bool,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.sidecar
                .finish(self.key, self.host, &Outcome::Cancelled, Duration::ZERO);
        }
    }
}

fn text(code: u16, body: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

fn reset_reply(reason: &str) -> Response {
    text(
        503,
        format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {reason}"
        ),
    )
}

/// Envoy's local reply when a circuit-breaker limit refuses a request (response flag `UO`).
fn overflow_reply() -> Response {
    let mut r = reset_reply("overflow");
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    r
}

fn timeout_reply() -> Response {
    text(504, "upstream request timeout".to_owned())
}

/// The sidecar's HTTP routes.
pub(crate) fn router(sc: Arc<Sidecar>) -> Router {
    Router::new()
        .route("/upstream/{*rest}", get(proxy))
        .route("/stats/prometheus", get(prometheus))
        .route("/clusters", get(clusters_admin))
        .route("/ready", get(|| async { "LIVE\n" }))
        .with_state(sc)
}

async fn proxy(State(sc): State<Arc<Sidecar>>, uri: Uri) -> Response {
    let Some(rest) = uri.path().strip_prefix("/upstream/") else {
        return text(404, "not found".to_owned());
    };
    let (service, path) = match rest.split_once('/') {
        Some((s, p)) => (s, format!("/{p}")),
        None => (rest, "/".to_owned()),
    };
    if !sc.upstreams.iter().any(|u| u == service) {
        return text(
            404,
            format!("no upstream {service:?} configured for {:?}", sc.source),
        );
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    sc.forward(service, &path_and_query).await
}

async fn prometheus(State(sc): State<Arc<Sidecar>>, RawQuery(query): RawQuery) -> Response {
    let query = match stats::StatsQuery::parse(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return text(400, e),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        sc.render_stats(&query),
    )
        .into_response()
}

/// `GET /clusters?format=json`. The text form (plain `/clusters`) is not served.
async fn clusters_admin(State(sc): State<Arc<Sidecar>>, RawQuery(query): RawQuery) -> Response {
    let json = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    if !json {
        return text(
            400,
            "the demo sidecar serves /clusters?format=json only".to_owned(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        sc.render_clusters(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[(&str, u32)]) -> Vec<Target> {
        weights
            .iter()
            .map(|(s, w)| Target {
                key: ClusterKey {
                    service: "identity".into(),
                    subset: (*s).into(),
                },
                weight: *w,
            })
            .collect()
    }

    #[test]
    fn smooth_wrr_spreads_80_20_evenly_and_exactly() {
        let t = targets(&[("v1", 8000), ("v2", 2000)]);
        let mut wrr = Wrr::default();
        let picks: Vec<usize> = (0..10).map(|_| wrr.pick(&t).unwrap()).collect();
        // nginx's smooth WRR never sends two v2 in a row at 80/20 and is exact per 5.
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
        let v2 = (0..1000).filter(|_| wrr.pick(&t) == Some(1)).count();
        assert_eq!(v2, 200);
    }

    #[test]
    fn wrr_resets_on_change_and_skips_zero_weights() {
        let mut wrr = Wrr::default();
        let a = targets(&[("v1", 5000), ("v2", 5000)]);
        assert_eq!(wrr.pick(&a), Some(0));
        let b = targets(&[("v1", 0), ("v2", 10000)]);
        assert!((0..20).all(|_| wrr.pick(&b) == Some(1)));
        assert_eq!(wrr.pick(&targets(&[("v1", 0)])), None);
    }

    #[test]
    fn outlier_detection_ejects_after_consecutive_failures_and_lets_back() {
        let cfg = OutlierConfig {
            consecutive_failures: 3,
            ejection_base: Duration::from_secs(5),
        };
        let mut c = Cluster {
            labels: String::new(),
            envoy_name: "photo".into(),
            full_name: stats::cluster_full_name("photo", "", "dc1", TRUST_DOMAIN),
            stats: ClusterStats::default(),
            hosts: BTreeMap::new(),
            next_host: 0,
            slots: Arc::new(Semaphore::new(2)),
        };
        let t0 = Instant::now();
        c.record_host("photo-1", true, t0, cfg);
        c.record_host("photo-1", true, t0, cfg);
        c.record_host("photo-1", false, t0, cfg);
        assert!(!c.is_ejected("photo-1", t0), "a success resets the count");
        for _ in 0..3 {
            c.record_host("photo-1", true, t0, cfg);
        }
        assert!(c.is_ejected("photo-1", t0));
        assert_eq!(c.stats.ejections_enforced_total, 1);
        let members = [Member {
            id: "photo-1".into(),
            port: 1,
            healthy: true,
        }];
        let m = c.membership(&members, t0);
        assert_eq!((m.healthy, m.total, m.ejections_active), (0, 1, 1));
        let later = t0 + Duration::from_secs(6);
        c.expire_ejections(later);
        let m = c.membership(&members, later);
        assert_eq!((m.healthy, m.total, m.ejections_active), (1, 1, 0));
    }

    #[test]
    fn breaker_gauges_follow_slots_and_pending() {
        let limits = RequestLimits {
            max_requests: 2,
            max_pending_requests: 1,
        };
        let mut c = Cluster {
            labels: String::new(),
            envoy_name: "payment".into(),
            full_name: stats::cluster_full_name("payment", "", "dc1", TRUST_DOMAIN),
            stats: ClusterStats::default(),
            hosts: BTreeMap::new(),
            next_host: 0,
            slots: Arc::new(Semaphore::new(2)),
        };
        let remaining = |cx, pending, rq| {
            Some(Remaining {
                cx,
                pending,
                retries: 3,
                rq,
            })
        };
        assert_eq!(
            c.breaker_gauges(limits),
            BreakerGauges {
                rq_open: false,
                rq_pending_open: false,
                remaining: remaining(1024, 1, 2),
            }
        );
        let a = Arc::clone(&c.slots).try_acquire_owned().unwrap();
        let b = Arc::clone(&c.slots).try_acquire_owned().unwrap();
        c.stats.rq_active = 2;
        assert_eq!(
            c.breaker_gauges(limits),
            BreakerGauges {
                rq_open: true,
                rq_pending_open: false,
                remaining: remaining(1022, 1, 0),
            }
        );
        c.stats.rq_pending_active = 1;
        assert_eq!(
            c.breaker_gauges(limits),
            BreakerGauges {
                rq_open: true,
                rq_pending_open: true,
                remaining: remaining(1022, 0, 0),
            }
        );
        // Without a queue the pending breaker is open exactly when the slots are full.
        let no_queue = RequestLimits {
            max_pending_requests: 0,
            ..limits
        };
        c.stats.rq_pending_active = 0;
        assert!(c.breaker_gauges(no_queue).rq_pending_open);
        drop(a);
        assert!(!c.breaker_gauges(no_queue).rq_pending_open);
        drop(b);
    }
}

//! The demo sidecar: an Envoy stand-in beside every instance. Its app calls
//! `GET /upstream/<service>/<path>`; the sidecar reads the route from the registry (the
//! demo's xDS), picks the subset by smooth weighted round-robin, a host by round-robin
//! among those not critical and not ejected, forwards, and keeps Envoy's cluster stats and
//! outlier detection (consecutive failures eject a host for a while). When no host can
//! take traffic it answers 503 at once: the design's `CircuitOpen` message.
//! `GET /stats/prometheus` serves the stats with Consul Connect's labels.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::lock;
use super::state::{ClusterKey, LOOPBACK, Member, RegistryState, Target};
use super::stats::{self, ClusterStats, ClusterView, Membership};

/// Trust domain used in cluster names (`….internal.<td>.consul`).
pub(crate) const TRUST_DOMAIN: &str = "0de70000-5b1e-4d3a-8c2f-7a9e6b4d2c10";

/// Timeout of one forwarded request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Outlier detection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutlierConfig {
    /// Consecutive failures (connect errors, 5xx) that eject a host; 0 disables ejection.
    pub consecutive_failures: u32,
    /// How long an ejected host stays out.
    pub ejection_base: Duration,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
}

#[derive(Debug)]
struct Cluster {
    labels: String,
    envoy_name: String,
    stats: ClusterStats,
    hosts: BTreeMap<String, HostState>,
    next_host: usize,
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
    started: Instant,
    state: Mutex<SidecarState>,
}

/// What the picker decided under the lock.
enum Pick {
    Host {
        key: ClusterKey,
        id: String,
        port: u16,
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
    /// A sidecar for `source` calling `upstreams`; clusters for the current routes exist
    /// from the start, so every lane shows up before traffic does.
    pub(crate) fn new(
        source: &str,
        datacenter: &str,
        upstreams: Vec<String>,
        registry: Arc<Mutex<RegistryState>>,
        client: reqwest::Client,
        outlier: OutlierConfig,
    ) -> Self {
        let sc = Self {
            source: source.to_owned(),
            datacenter: datacenter.to_owned(),
            fixed_labels: stats::fixed_labels(source, datacenter),
            upstreams,
            registry,
            client,
            outlier,
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
                stats: ClusterStats::default(),
                hosts: BTreeMap::new(),
                next_host: 0,
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
        cluster.stats.rq_active += 1;
        Some(Pick::Host {
            key: target.key.clone(),
            id: host.id.clone(),
            port: host.port,
        })
    }

    fn finish(&self, key: &ClusterKey, host: &str, outcome: &Outcome, elapsed: Duration) {
        let now = Instant::now();
        let cfg = self.outlier;
        let mut st = lock(&self.state);
        let cluster = self.ensure_cluster(&mut st, key);
        cluster.stats.rq_active = cluster.stats.rq_active.saturating_sub(1);
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
        let (key, id, port) = match pick {
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
            Pick::Host { key, id, port } => (key, id, port),
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
            Ok(resp) => {
                let code = resp.status().as_u16();
                let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
                match resp.bytes().await {
                    Ok(body) => {
                        let mut r = Response::new(Body::from(body));
                        *r.status_mut() =
                            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                        if let Some(ct) = content_type {
                            r.headers_mut().insert(header::CONTENT_TYPE, ct);
                        }
                        (Outcome::Response(code), r)
                    }
                    Err(e) if e.is_timeout() => (Outcome::Timeout, timeout_reply()),
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

    /// Renders `/stats/prometheus`.
    pub(crate) fn render_stats(&self, used_only: bool) -> String {
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
        let mut views: Vec<ClusterView<'_>> = st
            .clusters
            .iter()
            .map(|(key, c)| ClusterView {
                labels: &c.labels,
                cluster_name: &c.envoy_name,
                stats: &c.stats,
                membership: members
                    .get(key)
                    .map(|m| c.membership(m, now))
                    .unwrap_or_default(),
                outlier_detection: true,
            })
            .collect();
        views.push(ClusterView {
            labels: &self.fixed_labels,
            cluster_name: "local_app",
            stats: &st.local_app,
            membership: Membership {
                healthy: 1,
                total: 1,
                ejections_active: 0,
            },
            outlier_detection: false,
        });
        stats::render(
            &self.fixed_labels,
            &views,
            self.started.elapsed().as_secs(),
            used_only,
        )
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

fn timeout_reply() -> Response {
    text(504, "upstream request timeout".to_owned())
}

/// The sidecar's HTTP routes.
pub(crate) fn router(sc: Arc<Sidecar>) -> Router {
    Router::new()
        .route("/upstream/{*rest}", get(proxy))
        .route("/stats/prometheus", get(prometheus))
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
    let used_only = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "usedonly" || p.starts_with("usedonly="))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        sc.render_stats(used_only),
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
            stats: ClusterStats::default(),
            hosts: BTreeMap::new(),
            next_host: 0,
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
}

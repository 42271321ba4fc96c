//! Following Consul with blocking queries (API brief §1.5) on **bulk** endpoints, so the
//! requests per refresh do not grow with the number of services.
//!
//! Catalog mode ([`follow_catalog`]) keeps seven blocking queries open:
//!
//! | endpoint | moves when | gives |
//! |---|---|---|
//! | `/v1/catalog/services` | a service registers, deregisters or changes | names and tags |
//! | `/v1/health/state/any` | any check changes (status, output, re-registration) | every instance's health |
//! | `/v1/config/service-resolver` | a resolver changes | subsets of every service |
//! | `/v1/config/service-splitter` | a splitter changes | every split with its `ModifyIndex` |
//! | `/v1/config/service-defaults` | a service-defaults entry changes | every service's `Protocol` (404: unknown) |
//! | `/v1/config/proxy-defaults` | the global proxy-defaults change | the mesh's default protocol (`[]`: none; the list, since a missing entry's 404 has no index) |
//! | `/v1/kv/spine-dash/drivers/?recurse` | a driver marker comes or goes | the markers (404: none) |
//!
//! A health change, a split change, a resolver change, a protocol change or a marker
//! change is one answer of one query and no other request. Instance details (address, port, `Meta.metrics_url`) exist only in
//! per-service reads (`/v1/health/service/<s>`, plus `/v1/health/connect/<s>` for the
//! Connect stats fallback): they are read once at start and then only for services whose
//! bulk data moved — new in the catalog, other tags, or another set of checks (instance
//! added, removed or registered again: `CreateIndex` of its checks) — at most
//! [`super::MAX_CONCURRENT_REQUESTS`] at once. A registration moves the catalog and the
//! checks at the same index, and their answers come in either order: a catalog change is
//! explained once a re-read was made for a change at that index or later. One that no
//! service can be blamed for (an address changed without touching any check) is given
//! [`UNATTRIBUTED_GRACE`] for the checks answer to arrive, and then every service is read
//! again (measured: 1 + N answers, the only case that grows with N).
//!
//! Index rules ([`IndexTracker`]): index 0 never blocks and is never looped on (an answer
//! of 0 becomes 1); an index that goes backwards resets to 0 (one non-blocking read, then
//! blocking again); an answer with the same index is "nothing new" (`Ok(None)` to the io
//! layer). Failures back off exponentially with jitter ([`Backoff`], from the follow
//! interval up to [`MAX_BACKOFF`]) and keep the index; a `400 Invalid index` resets it.
//!
//! Outage ([`is_outage`]: a transport failure — refused, reset, timed out): the
//! first such failure aborts every other query, and from then on **one** probe at a time
//! (a non-blocking read of the endpoint that failed) goes out, after [`FIRST_PROBE`],
//! doubling with jitter up to [`MAX_BACKOFF`]; each failed probe is one error report. When
//! a probe answers, every other endpoint is read once without blocking (indexes kept), so
//! the data is current — and reported — one round trip after the agent's return.
//! Two queries of one endpoint start at least the follow interval apart (our own rate
//! limit; a query that blocked for that long goes again at once). The HTTP deadline of a
//! blocking query is `wait + wait/16` plus the request timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kv::{KvPair, parse_kv_list};
use super::{
    Answer, CheckRow, ConsulClient, MAX_CONCURRENT_REQUESTS, NodeInstance, Protocols, acquire,
    apply_metrics_fallback, blocking_deadline, drivers, error_from_response, health_from_checks,
    parse_checks, parse_connect_metrics, parse_health_service_nodes, parse_proxy_defaults_list,
    parse_resolver_list, parse_service_defaults_list, parse_splitter_list,
};
use crate::model::types::{
    DRIVER_PREFIX, DriverMarker, RegistrySnapshot, ServiceEntry, SplitConfig,
};
use crate::registry::{FollowContext, RegistryError, unit_random};

/// Longest pause between retries of a failing query (and between probes while the agent
/// is unreachable): an agent that comes back is seen within about a second.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// First pause before probing an agent that just became unreachable (doubled per failed
/// probe, with jitter, up to [`MAX_BACKOFF`]).
pub const FIRST_PROBE: Duration = Duration::from_millis(100);

/// How long a catalog change nobody can be blamed for waits for the checks query to
/// explain it before every service is read again.
pub const UNATTRIBUTED_GRACE: Duration = Duration::from_secs(2);

/// What an answer's `X-Consul-Index` means for the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStep {
    /// Same index: nothing changed (the wait expired, or an idempotent write).
    Unchanged,
    /// A new index (or the first answer): the data may have changed.
    Changed,
    /// The index went backwards (snapshot restore, …): reset to 0, read again.
    Reset,
}

/// The index of one blocking query, with Consul's rules (API brief §1.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexTracker {
    index: u64,
    seen: bool,
}

impl IndexTracker {
    /// Starts at 0: the first query does not block.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The index to send; 0 means "do not block" (no `index` / `wait` parameters).
    #[must_use]
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Takes an answer's `X-Consul-Index` (`None`: header missing, so the data is taken as
    /// new and the index is kept).
    pub fn observe(&mut self, new: Option<u64>) -> IndexStep {
        let Some(new) = new else {
            self.seen = true;
            return IndexStep::Changed;
        };
        if new < self.index {
            self.index = 0;
            self.seen = false;
            return IndexStep::Reset;
        }
        let step = if self.seen && new == self.index {
            IndexStep::Unchanged
        } else {
            IndexStep::Changed
        };
        self.seen = true;
        // Never block on 0: 0 would answer at once, forever.
        self.index = new.max(1);
        step
    }

    /// Back to 0 (a `400 Invalid index`, or another datacenter).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Exponential backoff with jitter: `base`, `2·base`, `4·base`… capped, each scaled by a
/// random factor in `[0.5, 1)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` (at least 10 ms), capped at `cap`.
    #[must_use]
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base: base.max(Duration::from_millis(10)),
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The pause before the next retry; `unit` in `[0, 1)` is the jitter.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        let full = self.base.saturating_mul(factor).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// One bulk endpoint a view follows.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    /// Path segments, e.g. `["v1", "catalog", "services"]`.
    pub segments: Vec<String>,
    /// Extra query pairs (`("recurse", "")` is a bare key).
    pub query: Vec<(String, String)>,
    /// A 404 is an empty answer (a KV prefix without keys).
    pub empty_on_404: bool,
}

/// What the follow engine needs from a registry layout (catalog or KV).
pub(crate) trait MeshView: Send {
    /// The bulk endpoints to keep blocking queries on.
    fn watches(&self) -> Vec<WatchSpec>;
    /// Watch `watch` answered with new data at `index` (`X-Consul-Index`).
    fn update(
        &mut self,
        watch: usize,
        index: Option<u64>,
        body: &[u8],
    ) -> Result<(), RegistryError>;
    /// The snapshot from the latest data, reading what must be read.
    fn build(
        &mut self,
        client: &ConsulClient,
    ) -> impl std::future::Future<Output = Result<RegistrySnapshot, RegistryError>> + Send;
    /// When the view wants `build` again without new data (a grace period ending).
    fn wake_at(&self) -> Option<Instant> {
        None
    }
    /// Forget everything (another datacenter).
    fn reset(&mut self);
}

/// State of one followed endpoint.
struct WatchState {
    tracker: IndexTracker,
    backoff: Backoff,
    last_start: Option<Instant>,
    loaded: bool,
    failing: bool,
}

impl WatchState {
    fn new(base: Duration) -> Self {
        Self {
            tracker: IndexTracker::new(),
            backoff: Backoff::new(base, MAX_BACKOFF),
            last_start: None,
            loaded: false,
            failing: false,
        }
    }
}

type WatchResult = (usize, u64, Instant, Result<Answer, RegistryError>);

fn spawn_query(
    set: &mut JoinSet<WatchResult>,
    client: &ConsulClient,
    spec: &WatchSpec,
    watch: usize,
    epoch: u64,
    index: u64,
    delay: Duration,
) {
    let client = client.clone();
    let spec = spec.clone();
    set.spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let started = Instant::now();
        let segments: Vec<&str> = spec.segments.iter().map(String::as_str).collect();
        let query: Vec<(&str, &str)> = spec
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let result = client
            .get_blocking(&segments, &query, index)
            .await
            .and_then(|answer| {
                if answer.status.is_success() {
                    Ok(answer)
                } else if spec.empty_on_404 && answer.status == reqwest::StatusCode::NOT_FOUND {
                    Ok(Answer {
                        body: Vec::new(),
                        ..answer
                    })
                } else {
                    Err(error_from_response(answer.status.as_u16(), &answer.body))
                }
            });
        (watch, epoch, started, result)
    });
}

/// Runs `view`'s blocking queries until `ctx.out` closes (see the module docs).
pub(crate) async fn follow_with<V: MeshView>(
    client: &ConsulClient,
    mut view: V,
    ctx: FollowContext,
) {
    let specs = view.watches();
    let gap = ctx.interval;
    let next_within = blocking_deadline(client.blocking_wait, client.request_timeout);
    let mut watches: Vec<WatchState> = specs.iter().map(|_| WatchState::new(gap)).collect();
    let mut dc_rx = client.datacenter_changes();
    let mut set: JoinSet<WatchResult> = JoinSet::new();
    let mut epoch = 0u64;
    for (i, spec) in specs.iter().enumerate() {
        spawn_query(&mut set, client, spec, i, epoch, 0, Duration::ZERO);
    }
    let mut dirty = false;
    let mut last: Option<RegistrySnapshot> = None;
    let mut build_backoff = Backoff::new(gap, MAX_BACKOFF);
    let mut retry_build: Option<Instant> = None;
    // While the agent is unreachable: the endpoint probed (the only query in flight).
    let mut down: Option<usize> = None;
    let mut probe_backoff = Backoff::new(FIRST_PROBE, MAX_BACKOFF);
    loop {
        let mut report_none = false;
        let mut errors: Vec<RegistryError> = Vec::new();
        let wake = match (retry_build, view.wake_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            () = ctx.out.closed() => return,
            changed = dc_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                epoch += 1;
                set.abort_all();
                view.reset();
                for w in &mut watches {
                    *w = WatchState::new(gap);
                }
                dirty = false;
                last = None;
                retry_build = None;
                down = None;
                probe_backoff.reset();
                for (i, spec) in specs.iter().enumerate() {
                    spawn_query(&mut set, client, spec, i, epoch, 0, Duration::ZERO);
                }
                continue;
            }
            () = ctx.refresh.notified() => {
                // Read every endpoint once without blocking, keeping the indexes (while
                // the agent is unreachable: probe now, still one request).
                epoch += 1;
                set.abort_all();
                for (i, spec) in specs.iter().enumerate() {
                    if down.is_none_or(|d| d == i) {
                        spawn_query(&mut set, client, spec, i, epoch, 0, Duration::ZERO);
                    }
                }
                continue;
            }
            () = sleep_until_opt(wake) => {
                retry_build = None;
                dirty = true;
            }
            Some(joined) = set.join_next() => {
                // Aborted queries (refresh, datacenter switch) end as cancelled: skip them.
                let Ok((i, ep, started, result)) = joined else { continue };
                if ep != epoch {
                    continue;
                }
                if let Err(e) = &result
                    && is_outage(e)
                {
                    if down.is_none() {
                        // Stop everything else; from now on one probe at a time.
                        epoch += 1;
                        set.abort_all();
                        down = Some(i);
                        for w in &mut watches {
                            w.failing = true;
                        }
                    }
                    let probe = down.unwrap_or(i);
                    if let Err(e) = result {
                        errors.push(e);
                    }
                    let delay = probe_backoff.next_delay(unit_random());
                    spawn_query(&mut set, client, &specs[probe], probe, epoch, 0, delay);
                } else {
                    if down.take().is_some() {
                        // The agent is back: read every other endpoint once, at once.
                        probe_backoff.reset();
                        for (j, spec) in specs.iter().enumerate() {
                            if j != i {
                                spawn_query(&mut set, client, spec, j, epoch, 0, Duration::ZERO);
                            }
                        }
                    }
                    let w = &mut watches[i];
                    w.last_start = Some(started);
                    let delay = match result {
                        Ok(answer) => {
                            w.backoff.reset();
                            w.failing = false;
                            match w.tracker.observe(answer.index) {
                                IndexStep::Unchanged => report_none = true,
                                IndexStep::Changed | IndexStep::Reset => {
                                    match view.update(i, answer.index, &answer.body) {
                                        Ok(()) => {
                                            w.loaded = true;
                                            dirty = true;
                                        }
                                        Err(e) => {
                                            w.failing = true;
                                            errors.push(e);
                                        }
                                    }
                                }
                            }
                            // Our own rate limit: starts at least `gap` apart.
                            gap.saturating_sub(started.elapsed())
                        }
                        Err(e) => {
                            if is_invalid_index(&e) {
                                w.tracker.reset();
                            }
                            w.failing = true;
                            errors.push(e);
                            w.backoff.next_delay(unit_random())
                        }
                    };
                    let index = w.tracker.index();
                    spawn_query(&mut set, client, &specs[i], i, epoch, index, delay);
                }
            }
        }
        for e in errors {
            if !ctx.report(Err(e), next_within).await {
                return;
            }
        }
        let all_loaded = watches.iter().all(|w| w.loaded);
        let any_failing = watches.iter().any(|w| w.failing);
        if dirty && all_loaded && !any_failing && retry_build.is_none() {
            match view.build(client).await {
                Ok(snapshot) => {
                    dirty = false;
                    build_backoff.reset();
                    let result = if last.as_ref() == Some(&snapshot) {
                        Ok(None)
                    } else {
                        last = Some(snapshot.clone());
                        Ok(Some(snapshot))
                    };
                    if !ctx.report(result, next_within).await {
                        return;
                    }
                }
                Err(e) => {
                    retry_build = Some(Instant::now() + build_backoff.next_delay(unit_random()));
                    if !ctx.report(Err(e), next_within).await {
                        return;
                    }
                }
            }
        } else if report_none
            && !any_failing
            && !dirty
            && last.is_some()
            && !ctx.report(Ok(None), next_within).await
        {
            return;
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a failed query means the agent is unreachable: a transport failure (refused,
/// reset, no answer in time). An agent that answers with an error (`500 No cluster
/// leader`, 403) is reachable: that query backs off on its own and keeps its index.
#[must_use]
pub fn is_outage(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Transport { .. })
}

fn is_invalid_index(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Http { status: 400, body, .. } if body.contains("Invalid index"))
}

// ---------------------------------------------------------------------------------------
// Catalog mode.

/// Follows the catalog, the mesh's checks, resolvers and splitters (see the module docs).
pub(crate) async fn follow_catalog(client: &ConsulClient, ctx: FollowContext) {
    follow_with(client, CatalogView::default(), ctx).await;
}

const CATALOG: usize = 0;
const CHECKS: usize = 1;
const RESOLVERS: usize = 2;
const SPLITTERS: usize = 3;
const SERVICE_DEFAULTS: usize = 4;
const PROXY_DEFAULTS: usize = 5;
const DRIVERS: usize = 6;

/// The blocking query on the driver markers' KV prefix (404 = none), shared with KV mode.
pub(crate) fn drivers_watch() -> WatchSpec {
    let mut segments = vec!["v1".to_owned(), "kv".to_owned()];
    segments.extend(DRIVER_PREFIX.split('/').map(str::to_owned));
    WatchSpec {
        segments,
        query: vec![("recurse".into(), String::new())],
        empty_on_404: true,
    }
}

/// Instance data of one service as last read, with the bulk data it was read against.
#[derive(Debug, Clone)]
struct CachedService {
    nodes: Vec<NodeInstance>,
    tags: Vec<String>,
    signature: Signature,
}

/// The checks of a service (and its sidecars): (node, service id, check id, create index).
type Signature = BTreeSet<(String, String, String, u64)>;

/// The catalog layout's view (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct CatalogView {
    catalog: Option<BTreeMap<String, Vec<String>>>,
    checks: Vec<CheckRow>,
    resolvers: BTreeMap<String, Vec<String>>,
    splitters: BTreeMap<String, SplitConfig>,
    protocols: Protocols,
    /// Read when the markers' query answers (so a bad one is logged once per change).
    drivers: Vec<DriverMarker>,
    cache: BTreeMap<String, CachedService>,
    catalog_moved: bool,
    /// Index of the last catalog answer.
    catalog_index: u64,
    /// Index of the last checks answer.
    checks_index: u64,
    /// The highest index whose change was explained by a re-read (a registration moves
    /// the catalog and the checks at the same index; their answers come in either order).
    attributed_index: u64,
    unattributed_since: Option<Instant>,
}

/// Service names (no `-sidecar-proxy`, no `consul`) with their sorted tags.
fn parse_catalog_tags(body: &[u8]) -> Result<BTreeMap<String, Vec<String>>, RegistryError> {
    let map: BTreeMap<String, Option<Vec<String>>> = serde_json::from_slice(body)
        .map_err(|e| RegistryError::Decode(format!("catalog/services: {e}")))?;
    Ok(map
        .into_iter()
        .filter(|(name, _)| name != "consul" && !name.ends_with(super::PROXY_SUFFIX))
        .map(|(name, tags)| {
            let mut tags = tags.unwrap_or_default();
            tags.sort();
            tags.dedup();
            (name, tags)
        })
        .collect())
}

fn signatures(checks: &[CheckRow]) -> BTreeMap<String, Signature> {
    let mut out: BTreeMap<String, Signature> = BTreeMap::new();
    for c in checks.iter().filter(|c| !c.service_name.is_empty()) {
        let service = c
            .service_name
            .strip_suffix(super::PROXY_SUFFIX)
            .unwrap_or(&c.service_name);
        out.entry(service.to_owned()).or_default().insert((
            c.node.clone(),
            c.service_id.clone(),
            c.check_id.clone(),
            c.create_index,
        ));
    }
    out
}

impl CatalogView {
    /// Which services must be read again, and whether the catalog moved without a cause.
    fn stale_services(&self, sigs: &BTreeMap<String, Signature>) -> Vec<String> {
        let Some(catalog) = &self.catalog else {
            return Vec::new();
        };
        catalog
            .iter()
            .filter(|(name, tags)| match self.cache.get(*name) {
                None => true,
                Some(c) => {
                    c.tags != **tags || c.signature != sigs.get(*name).cloned().unwrap_or_default()
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl MeshView for CatalogView {
    fn watches(&self) -> Vec<WatchSpec> {
        let spec = |segments: &[&str], empty_on_404: bool| WatchSpec {
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            empty_on_404,
        };
        vec![
            spec(&["v1", "catalog", "services"], false),
            spec(&["v1", "health", "state", "any"], false),
            spec(&["v1", "config", "service-resolver"], false),
            spec(&["v1", "config", "service-splitter"], false),
            // 404 (an empty body here): an agent without config entries, protocols unknown.
            spec(&["v1", "config", "service-defaults"], true),
            // The list, not `/global`: a missing entry's 404 has no index to block on.
            spec(&["v1", "config", "proxy-defaults"], true),
            drivers_watch(),
        ]
    }

    fn update(
        &mut self,
        watch: usize,
        index: Option<u64>,
        body: &[u8],
    ) -> Result<(), RegistryError> {
        match watch {
            CATALOG => {
                self.catalog = Some(parse_catalog_tags(body)?);
                self.catalog_moved = true;
                self.catalog_index = index.unwrap_or(0);
            }
            CHECKS => {
                self.checks = parse_checks(body)?;
                self.checks_index = index.unwrap_or(0);
            }
            RESOLVERS => self.resolvers = parse_resolver_list(body)?,
            SPLITTERS => self.splitters = parse_splitter_list(body)?,
            SERVICE_DEFAULTS => {
                self.protocols.defaults = if body.is_empty() {
                    None
                } else {
                    Some(parse_service_defaults_list(body)?)
                };
            }
            PROXY_DEFAULTS => {
                self.protocols.global = if body.is_empty() {
                    None
                } else {
                    parse_proxy_defaults_list(body)?
                };
            }
            DRIVERS => self.drivers = markers(&parse_kv_list(body)?),
            _ => {}
        }
        Ok(())
    }

    async fn build(&mut self, client: &ConsulClient) -> Result<RegistrySnapshot, RegistryError> {
        let sigs = signatures(&self.checks);
        let mut stale = self.stale_services(&sigs);
        let first = self.cache.is_empty();
        let now = Instant::now();
        if !stale.is_empty() {
            self.attributed_index = self
                .attributed_index
                .max(self.checks_index)
                .max(self.catalog_index);
        }
        let explained = self.attributed_index >= self.catalog_index;
        if !self.catalog_moved || first || explained {
            self.catalog_moved = false;
            self.unattributed_since = None;
        } else {
            // Nobody to blame yet: give the checks query a moment, then read everything.
            match self.unattributed_since {
                None => self.unattributed_since = Some(now),
                Some(since) if now.duration_since(since) >= UNATTRIBUTED_GRACE => {
                    stale = self
                        .catalog
                        .as_ref()
                        .map(|c| c.keys().cloned().collect())
                        .unwrap_or_default();
                    self.unattributed_since = None;
                    self.catalog_moved = false;
                }
                Some(_) => {}
            }
        }
        if let Some(catalog) = &self.catalog {
            self.cache.retain(|name, _| catalog.contains_key(name));
        }
        let read = read_services(client, &stale).await?;
        let catalog = self.catalog.clone().unwrap_or_default();
        for (name, nodes) in read {
            let tags = catalog.get(&name).cloned().unwrap_or_default();
            let signature = sigs.get(&name).cloned().unwrap_or_default();
            self.cache.insert(
                name,
                CachedService {
                    nodes,
                    tags,
                    signature,
                },
            );
        }
        let services = catalog
            .keys()
            .map(|name| {
                let instances = self
                    .cache
                    .get(name)
                    .map(|c| {
                        c.nodes
                            .iter()
                            .map(|n| {
                                let mut instance = n.instance.clone();
                                if let Some((health, text)) =
                                    health_from_checks(&self.checks, &n.node, &instance.id)
                                {
                                    instance.health = health;
                                    instance.check_output = text;
                                }
                                instance
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ServiceEntry {
                    protocol: self.protocols.protocol_of(name),
                    name: name.clone(),
                    instances,
                    subsets: self.resolvers.get(name).cloned().unwrap_or_default(),
                    split: self.splitters.get(name).cloned(),
                }
            })
            .collect();
        Ok(RegistrySnapshot {
            drivers: self.drivers.clone(),
            services,
        })
    }

    fn wake_at(&self) -> Option<Instant> {
        self.unattributed_since.map(|t| t + UNATTRIBUTED_GRACE)
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The markers of the drivers prefix, logging each unreadable one.
pub(crate) fn markers(pairs: &[KvPair]) -> Vec<DriverMarker> {
    let (markers, warnings) = drivers::markers_from_kv(pairs);
    for w in warnings {
        tracing::warn!("consul: {w}");
    }
    markers
}

/// Reads the instances of `names` (`/v1/health/service/<s>`, and `/v1/health/connect/<s>`
/// when an instance has no `metrics_url`), at most [`MAX_CONCURRENT_REQUESTS`] at once.
async fn read_services(
    client: &ConsulClient,
    names: &[String],
) -> Result<Vec<(String, Vec<NodeInstance>)>, RegistryError> {
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut tasks = JoinSet::new();
    for name in names {
        let client = client.clone();
        let limit = Arc::clone(&limit);
        let name = name.clone();
        tasks.spawn(async move {
            let mut nodes = {
                let _permit = acquire(&limit).await?;
                let body = client
                    .get(&["v1", "health", "service", &name], false)
                    .await?;
                parse_health_service_nodes(&body.unwrap_or_default())?
            };
            if nodes.iter().any(|n| n.instance.metrics_url.is_none()) {
                let _permit = acquire(&limit).await?;
                if let Some(body) = client
                    .get(&["v1", "health", "connect", &name], true)
                    .await?
                {
                    let urls = parse_connect_metrics(&body)?;
                    let mut instances: Vec<_> = nodes.iter().map(|n| n.instance.clone()).collect();
                    apply_metrics_fallback(&mut instances, &urls);
                    for (n, i) in nodes.iter_mut().zip(instances) {
                        n.instance = i;
                    }
                }
            }
            Ok::<_, RegistryError>((name, nodes))
        });
    }
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        out.push(joined.map_err(|e| RegistryError::Decode(format!("service read failed: {e}")))??);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules_follow_the_fixture_sequence() {
        // blocking_sequence_health_identity.jsonl, step by step.
        let mut t = IndexTracker::new();
        assert_eq!(t.index(), 0, "the first query does not block");
        assert_eq!(t.observe(Some(1187)), IndexStep::Changed);
        assert_eq!(t.index(), 1187);
        assert_eq!(t.observe(Some(1187)), IndexStep::Unchanged, "wait expired");
        assert_eq!(t.observe(Some(1196)), IndexStep::Changed);
        assert_eq!(t.observe(Some(1142)), IndexStep::Reset, "went backwards");
        assert_eq!(t.index(), 0, "reset to 0: one non-blocking read");
        assert_eq!(t.observe(Some(1142)), IndexStep::Changed);
        assert_eq!(t.index(), 1142);
    }

    #[test]
    fn never_blocks_on_zero() {
        let mut t = IndexTracker::new();
        assert_eq!(t.observe(Some(0)), IndexStep::Changed);
        assert_eq!(t.index(), 1, "an answer of 0 becomes 1");
        assert_eq!(t.observe(Some(1)), IndexStep::Unchanged);
        assert_eq!(
            t.observe(None),
            IndexStep::Changed,
            "no header: data taken as new"
        );
        assert_eq!(t.index(), 1);
        t.reset();
        assert_eq!(t.index(), 0);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay(0.999)).collect();
        assert!(delays[0] <= Duration::from_secs(1) && delays[0] >= Duration::from_millis(990));
        assert!(delays[1] >= Duration::from_millis(1990) && delays[1] <= Duration::from_secs(2));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays[7] >= Duration::from_secs(29));
        let low = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).next_delay(0.0);
        assert_eq!(
            low,
            Duration::from_millis(500),
            "jitter takes up to half off"
        );
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay(0.5) <= Duration::from_secs(1));
    }

    #[test]
    fn probes_start_fast_and_never_wait_more_than_a_second() {
        let mut b = Backoff::new(FIRST_PROBE, MAX_BACKOFF);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay(0.999)).collect();
        assert!(delays[0] <= Duration::from_millis(100), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        assert!(delays[19] >= Duration::from_millis(990));
        assert!(is_outage(&RegistryError::Transport {
            message: "connection refused".into(),
            url: "http://x".into(),
        }));
        assert!(!is_outage(&RegistryError::Http {
            status: 500,
            body: "No cluster leader".into(),
            hint: None,
        }));
    }

    #[test]
    fn catalog_tags_drop_sidecars() {
        let body = br#"{"consul":[],"identity":["v2","v1","v1"],"identity-sidecar-proxy":["v1"],"x":null}"#;
        let map = parse_catalog_tags(body).unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["identity", "x"]);
        assert_eq!(map["identity"], ["v1", "v2"]);
    }
}

//! Pure data and rules: services, instances, versions, splits, breaker states, lanes,
//! source freshness. No I/O, no egui; time is passed in.

pub mod drift;
pub mod filter;
pub mod gone;
pub mod guard;
pub mod history;
pub mod hosts;
pub mod index;
mod lanes;
pub mod plan;
pub mod prom;
pub mod shift;
pub mod snapshot;
pub mod synthetic;
pub mod tape;
#[cfg(test)]
mod tests_support;
pub mod types;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::io::{self, IoEvent};
use crate::metrics::{LaneWindow, SidecarScrape, WindowStats};
use crate::registry::WriteOutcome;
use types::{
    BreakerState, DemoInstanceState, HealthCounts, LaneKey, RegistryKind, ServiceEntry, Split,
};

/// How many notices (write results, errors) the model keeps.
const MAX_NOTICES: usize = 50;

/// Where the data comes from, for the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryInfo {
    /// Demo, Consul or etcd.
    pub kind: RegistryKind,
    /// Base URL of the registry.
    pub address: String,
    /// Datacenter, once known.
    pub datacenter: Option<String>,
    /// Whether split writes are allowed.
    pub writable: bool,
}

/// Freshness and last error of one source (the registry or one sidecar).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Until when the source's data was last known good: its last good answer — or, for a
    /// registry watch that was connected, the moment it broke (see `Model::apply`).
    pub last_ok: Option<Instant>,
    /// When the source was last tried.
    pub last_attempt: Option<Instant>,
    /// The error of the last attempt, `None` if it succeeded.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
}

impl SourceStatus {
    fn record_ok(&mut self, at: Instant) {
        self.last_ok = Some(at);
        self.last_attempt = Some(at);
        self.last_error = None;
        self.consecutive_failures = 0;
    }

    fn record_err(&mut self, at: Instant, error: String) {
        self.last_attempt = Some(at);
        self.last_error = Some(error);
        self.consecutive_failures += 1;
    }

    /// Time since the last good answer, `None` if there never was one.
    #[must_use]
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_ok.map(|t| now.saturating_duration_since(t))
    }

    /// Stale: no good answer within two intervals (or never), or the last attempt failed.
    #[must_use]
    pub fn is_stale(&self, now: Instant, interval: Duration) -> bool {
        self.last_error.is_some() || self.age(now).is_none_or(|age| age > interval * 2)
    }
}

/// One sidecar's stats source: the last two scrapes give one window.
#[derive(Debug, Clone, Default)]
pub struct SidecarState {
    /// Instance the sidecar belongs to.
    pub instance_id: String,
    /// Service of that instance.
    pub service: String,
    /// Freshness and last error.
    pub status: SourceStatus,
    /// Its scrape interval when the last answer came (see [`Model::sidecar_stale`]).
    pub interval_at_scrape: Option<Duration>,
    prev: Option<(Instant, SidecarScrape)>,
    last: Option<(Instant, SidecarScrape)>,
    /// The lane key of each cluster of `last`, in its order (`lanes.rs`).
    cluster_keys: Vec<LaneKey>,
    /// Whether this sidecar's window counted (it was fresh) at the last lane refresh.
    counted_fresh: bool,
    /// Whether `prev` and `last` list the same clusters in the same order.
    same_layout: bool,
}

/// What the map shows for one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneState {
    /// Caller, service, version.
    pub key: LaneKey,
    /// Stats over the last window; `None` = no data (never drawn as 0 rps).
    pub stats: Option<WindowStats>,
    /// The merged window behind `stats` (to aggregate over callers).
    pub window: Option<LaneWindow>,
    /// End of the newest window that contributed.
    pub updated_at: Option<Instant>,
}

/// State of the last split write per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteState {
    /// Sent, no answer yet.
    Pending {
        /// The split asked for.
        split: Split,
    },
    /// The registry took it.
    Applied {
        /// The split written.
        split: Split,
    },
    /// Someone else changed the split first; nothing was overwritten.
    Conflict {
        /// The split the operator asked for.
        mine: Split,
        /// What the registry held at the conflict (`None`: no split stored, or unknown).
        theirs: Option<types::SplitConfig>,
    },
    /// The write failed with this text (validation, ACL, transport…).
    Failed {
        /// The split asked for.
        split: Split,
        /// The registry's or transport's message.
        error: String,
    },
    /// Sent, but the answer was lost: it may or may not have been applied. The next
    /// registry answer after `since` settles it (applied when the registry shows the split,
    /// else failed).
    Unknown {
        /// The split asked for.
        split: Split,
        /// The transport's message.
        error: String,
        /// When the outcome became unknown.
        since: Instant,
    },
}

/// A line for the operator: write results and source failures, newest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// When it happened.
    pub at: Instant,
    /// Whether it is an error.
    pub is_error: bool,
    /// The text.
    pub text: String,
}

/// What the spine is, as far as the dashboard knows. Updated only by [`Model::apply`].
#[derive(Debug, Clone)]
pub struct Model {
    /// The configured registry.
    pub registry: RegistryInfo,
    /// Registry freshness.
    pub registry_status: SourceStatus,
    /// Last good registry data, by service name.
    pub services: BTreeMap<String, ServiceEntry>,
    /// Sidecar stats sources, by stats URL.
    pub sidecars: BTreeMap<String, SidecarState>,
    /// Lanes, derived from the sidecars' windows.
    pub lanes: BTreeMap<LaneKey, LaneState>,
    /// Last split write per service.
    pub writes: BTreeMap<String, WriteState>,
    /// Demo instances and whether they run (demo mode only).
    pub demo_instances: Vec<DemoInstanceState>,
    /// Whether the demo registry's server runs (demo mode only, once reported).
    pub demo_registry_running: Option<bool>,
    /// Hosts per sidecar from Envoy's `/clusters` (see [`hosts`]).
    pub hosts: hosts::HostsState,
    /// Recent notices, oldest first.
    pub notices: VecDeque<Notice>,
    /// Longest expected gap between two registry reports (poll interval or blocking-query
    /// wait, updated by each report): freshness deadline.
    pub registry_interval: Duration,
    /// Sidecar scrape interval (for freshness).
    pub scrape_interval: Duration,
    /// The io layer's scrape tiers, once it reported them ([`IoEvent::ScrapePlan`]).
    pub scrape_plan: Option<crate::io::ScrapePlan>,
    /// `Instant` ↔ wall clock pair, to show when things happened (see [`Model::wall_at`]).
    clock_anchor: (Instant, SystemTime),
    /// Per-lane and per-version history rings (`history.rs`).
    history: history::History,
    /// Breaker transitions (`tape.rs`).
    tape: tape::Tape,
    /// Requests per version over a trailing window, per service with a split (`drift.rs`).
    drift: drift::DriftTracker,
    /// Services that vanished from the registry, and when (`gone.rs`).
    gone: BTreeMap<String, Instant>,
    /// Lanes by called service (`index.rs`).
    lane_index: index::LaneIndex,
    /// What changed since the last lane refresh (`lanes.rs`).
    lane_book: lanes::LaneBook,
    /// The Prometheus metrics source, when lanes come from it instead of the sidecars.
    pub prometheus: Option<prom::PromState>,
    /// Datacenters the registry offers (the header's picker), nearest first.
    pub datacenters: Vec<String>,
    /// The config file's context in use (`--context`), shown in the header.
    pub context: Option<String>,
    /// Every context of the config file (the header's switcher), sorted.
    pub contexts: Vec<String>,
    /// Plans, audit trail, undo, driver markers (`shift.rs`).
    pub shifting: shift::Shifting,
}

impl Model {
    /// An empty model for the given registry.
    #[must_use]
    pub fn new(
        registry: RegistryInfo,
        registry_interval: Duration,
        scrape_interval: Duration,
    ) -> Self {
        Self {
            registry,
            registry_status: SourceStatus::default(),
            services: BTreeMap::new(),
            sidecars: BTreeMap::new(),
            lanes: BTreeMap::new(),
            writes: BTreeMap::new(),
            demo_instances: Vec::new(),
            demo_registry_running: None,
            hosts: hosts::HostsState::default(),
            notices: VecDeque::new(),
            registry_interval,
            scrape_interval,
            scrape_plan: None,
            // The model's only clock reading: an anchor for wall-clock display.
            clock_anchor: (Instant::now(), SystemTime::now()),
            history: history::History::default(),
            tape: tape::Tape::default(),
            drift: drift::DriftTracker::default(),
            gone: BTreeMap::new(),
            lane_index: index::LaneIndex::default(),
            lane_book: lanes::LaneBook::default(),
            prometheus: None,
            datacenters: Vec::new(),
            context: None,
            contexts: Vec::new(),
            shifting: shift::Shifting::default(),
        }
    }

    /// Names the config file's context in use and the others it has (header).
    #[must_use]
    pub fn with_context(mut self, context: Option<&str>, known: Vec<String>) -> Self {
        self.context = context.map(str::to_owned);
        self.contexts = known;
        self
    }

    /// Sets the `Instant` ↔ wall-clock pair used by [`Model::wall_at`] (tests inject one;
    /// [`Model::new`] reads both clocks once).
    pub fn set_clock_anchor(&mut self, at: Instant, wall: SystemTime) {
        self.clock_anchor = (at, wall);
    }

    /// Wall-clock time of `at`, for display (tape entries, chart axes).
    #[must_use]
    pub fn wall_at(&self, at: Instant) -> SystemTime {
        let (anchor, wall) = self.clock_anchor;
        if at >= anchor {
            wall + at.duration_since(anchor)
        } else {
            wall.checked_sub(anchor.duration_since(at))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    /// Hook for every source of lane stats (sidecar scrapes via `refresh_lanes`, or any
    /// other): call it once after `self.lanes` changed. Records history points, breaker
    /// transitions and drift samples. `wall` is the wall-clock time of `now`.
    pub fn lanes_updated(&mut self, now: Instant, wall: SystemTime) {
        self.lanes_updated_with(now, wall, true);
    }

    /// [`Model::lanes_updated`]; `keys_changed` false (a refresh that added and removed no
    /// lane) spares the check of the lane index.
    fn lanes_updated_with(&mut self, now: Instant, wall: SystemTime, keys_changed: bool) {
        if keys_changed {
            self.reindex_lanes();
        }
        let forgot_lanes = self.record_history(now);
        self.record_tape(now, wall, forgot_lanes);
        self.record_drift(now);
    }

    /// Applies one event from the io layer and refreshes what it changed (lanes, history,
    /// breaker tape, drift): [`Model::apply_deferred`] then [`Model::finish_batch`].
    pub fn apply(&mut self, event: IoEvent, now: Instant) {
        self.apply_deferred(event, now);
        self.finish_batch(now);
    }

    /// Applies a batch of events, then refreshes once: lanes touched by any of them are
    /// re-derived and history, tape and drift take one update (the state at the end of the
    /// batch), as [`Model::apply`] would after the last event.
    pub fn apply_batch(&mut self, events: impl IntoIterator<Item = IoEvent>, now: Instant) {
        for event in events {
            self.apply_deferred(event, now);
        }
        self.finish_batch(now);
    }

    /// Takes in one event without refreshing lanes yet: call [`Model::finish_batch`] after
    /// the last event of a batch (the app does, once per frame). Until then `lanes` and the
    /// history may lag the sidecars and the registry.
    pub fn apply_deferred(&mut self, event: IoEvent, now: Instant) {
        match event {
            IoEvent::Registry {
                at,
                result,
                next_within,
            } => match result {
                Ok(None) => {
                    self.registry_interval = next_within;
                    self.registry_status.record_ok(at);
                    self.settle_unknown_writes(at);
                }
                Ok(Some(snapshot)) => {
                    self.registry_interval = next_within;
                    self.registry_status.record_ok(at);
                    self.track_gone(&snapshot.services, at);
                    self.shifting.markers = snapshot.drivers;
                    let old = std::mem::replace(
                        &mut self.services,
                        snapshot
                            .services
                            .into_iter()
                            .map(|s| (s.name.clone(), s))
                            .collect(),
                    );
                    self.sync_sidecars(&old);
                    self.services_replaced(&old);
                    self.mark_pending();
                    self.settle_unknown_writes(at);
                }
                Err(error) => {
                    if self.registry_status.last_error.as_deref() != Some(error.as_str()) {
                        self.notice(at, true, format!("registry: {error}"));
                    }
                    if self.registry_status.last_error.is_none()
                        && let Some(ok) = self.registry_status.last_ok
                    {
                        // A blocking query or watch answers only on change: until this first
                        // failure it was connected (within its promise), so the data was
                        // current until then, not only at its last answer.
                        let until = at.min(ok + self.registry_interval).max(ok);
                        self.registry_status.last_ok = Some(until);
                    }
                    self.registry_status.record_err(at, error);
                }
            },
            IoEvent::Scrape { url, at, result } => {
                let interval = self
                    .sidecars
                    .get(&url)
                    .map(|s| self.sidecar_interval(&s.service));
                let Some(sidecar) = self.sidecars.get_mut(&url) else {
                    return; // a scrape for a sidecar the registry no longer lists
                };
                sidecar.interval_at_scrape = interval;
                match result {
                    Ok(mut scrape) => {
                        // Envoy's own clusters (local_app, self_admin…) are never lanes:
                        // not kept, and no spare capacity either (two scrapes per sidecar
                        // are most of the model's memory at 20,000 sidecars).
                        scrape.clusters.retain(|c| !c.id.is_local());
                        scrape.clusters.shrink_to_fit();
                        for c in &mut scrape.clusters {
                            c.rq_time.buckets.shrink_to_fit();
                        }
                        sidecar.status.record_ok(at);
                        // Usually the same clusters in the same order as last time: then
                        // windows pair clusters by position, not by a search.
                        sidecar.same_layout = sidecar.last.as_ref().is_some_and(|(_, was)| {
                            was.clusters.len() == scrape.clusters.len()
                                && was
                                    .clusters
                                    .iter()
                                    .zip(&scrape.clusters)
                                    .all(|(a, b)| a.id == b.id)
                        });
                        sidecar.prev = sidecar.last.take();
                        sidecar.last = Some((at, scrape));
                    }
                    Err(error) => sidecar.status.record_err(at, error),
                }
                self.mark_sidecar(&url);
            }
            IoEvent::LaneSamples { at, result } => self.apply_lane_samples(at, result),
            IoEvent::Datacenters {
                current,
                known,
                error,
            } => {
                if let Some(error) = error {
                    self.notice(now, true, format!("datacenter: {error}"));
                }
                if current.is_some() {
                    self.registry.datacenter = current;
                }
                if !known.is_empty() {
                    self.datacenters = known;
                }
            }
            IoEvent::Clusters { url, at, result } => self.apply_clusters(url, at, result),
            IoEvent::ScrapePlan(plan) => {
                // Intervals decide freshness: every sidecar is judged again.
                self.scrape_plan = Some(plan);
                self.mark_all_lanes();
            }
            IoEvent::WriteFinished { write, result } => {
                self.shift_write_finished(&write, &result, now);
                let service = write.service.clone();
                let split = write.after;
                let state = match result {
                    Ok(WriteOutcome::Applied) => {
                        self.notice(
                            now,
                            false,
                            format!("{service}: split {} applied", split_text(&split)),
                        );
                        WriteState::Applied { split }
                    }
                    Ok(WriteOutcome::Conflict { theirs }) => {
                        self.notice(
                            now,
                            true,
                            format!(
                                "{service}: conflict — the registry now holds {}; nothing was overwritten",
                                theirs
                                    .as_ref()
                                    .map_or_else(|| "no split".into(), |t| split_text(&t.split))
                            ),
                        );
                        WriteState::Conflict {
                            mine: split,
                            theirs,
                        }
                    }
                    Ok(WriteOutcome::Unknown { error }) => {
                        self.notice(
                            now,
                            true,
                            format!(
                                "{service}: split {} may or may not have been applied (answer lost) — re-read after the registry returns",
                                split_text(&split)
                            ),
                        );
                        WriteState::Unknown {
                            split,
                            error,
                            since: now,
                        }
                    }
                    Err(error) => {
                        self.notice(now, true, format!("{service}: write failed: {error}"));
                        WriteState::Failed { split, error }
                    }
                };
                self.writes.insert(service, state);
            }
            IoEvent::Audited(record) => self.push_audit(record),
            IoEvent::Driver { service, state } => {
                if let io::DriverState::HeldBy(m) = &state {
                    self.notice(
                        now,
                        true,
                        format!(
                            "{service}: {}@{} is driving it too ({}) — the marker is advisory",
                            m.user, m.host, m.what
                        ),
                    );
                }
                self.shifting.drivers.insert(service, state);
            }
            IoEvent::DemoRegistry { running, error } => {
                self.demo_registry_running = Some(running);
                if let Some(error) = error {
                    self.notice(now, true, format!("demo: {error}"));
                }
            }
            IoEvent::DemoChanged { instances, error } => {
                self.demo_instances = instances;
                if let Some(error) = error {
                    self.notice(now, true, format!("demo: {error}"));
                }
            }
        }
    }

    /// Ends a batch of [`Model::apply_deferred`] events: re-derives the lanes they touched
    /// (and lanes whose sidecars went stale meanwhile), then records history, breaker
    /// transitions and drift once. Does nothing when no event changed lane data.
    pub fn finish_batch(&mut self, now: Instant) {
        if self.batch_pending() {
            self.refresh_lanes(now);
        }
    }

    /// Adds a notice (e.g. a context switch that failed), shown in the status bar.
    pub fn push_notice(&mut self, at: Instant, is_error: bool, text: String) {
        self.notice(at, is_error, text);
    }

    /// Settles writes whose answer was lost, on a registry answer that came at `at` (after
    /// them): the split the registry shows says whether each was applied.
    fn settle_unknown_writes(&mut self, at: Instant) {
        let unknown: Vec<(String, Split)> = self
            .writes
            .iter()
            .filter_map(|(service, state)| match state {
                WriteState::Unknown { split, since, .. } if at > *since => {
                    Some((service.clone(), split.clone()))
                }
                _ => None,
            })
            .collect();
        for (service, split) in unknown {
            let shown = self.services.get(&service).and_then(|s| s.split.as_ref());
            let state = if shown.is_some_and(|c| guard::same_weights(&c.split, &split)) {
                self.notice(
                    at,
                    false,
                    format!(
                        "{service}: re-read after the lost answer: the registry shows {}, the write was applied",
                        split_text(&split)
                    ),
                );
                WriteState::Applied { split }
            } else {
                let theirs = shown.map_or_else(|| "no split".into(), |c| split_text(&c.split));
                let error = format!(
                    "not applied: re-read after the lost answer, the registry shows {theirs}"
                );
                self.notice(at, true, format!("{service}: {error}"));
                WriteState::Failed { split, error }
            };
            self.writes.insert(service, state);
        }
    }

    /// Records that a write was sent (called when the view emits the command).
    pub fn mark_write_pending(&mut self, service: &str, split: Split) {
        self.writes
            .insert(service.to_owned(), WriteState::Pending { split });
    }

    fn notice(&mut self, at: Instant, is_error: bool, text: String) {
        if self.notices.len() == MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(Notice { at, is_error, text });
    }

    /// The version a lane stands for: the subset, or the single version of a service
    /// without subsets, else `default` (GUIDE.md, derivations).
    #[must_use]
    pub fn lane_version(&self, service: &str, subset: &str) -> String {
        lanes::lane_version_of(&self.services, service, subset).to_owned()
    }

    /// Health counts of one version of a service.
    #[must_use]
    pub fn version_health(&self, service: &str, version: &str) -> HealthCounts {
        let mut counts = HealthCounts::default();
        if let Some(svc) = self.services.get(service) {
            for inst in svc.instances.iter().filter(|i| i.version == version) {
                counts.add(inst.health);
            }
        }
        counts
    }

    /// Configured weight (hundredths) of a version: the split's entry, or 100 % for the
    /// only version of a service without a split.
    #[must_use]
    pub fn configured_weight(&self, service: &str, version: &str) -> Option<u32> {
        let svc = self.services.get(service)?;
        if let Some(cfg) = &svc.split {
            return Some(cfg.split.weight_of(version).unwrap_or(0));
        }
        let versions = svc.versions();
        (versions.len() == 1 && versions[0] == version).then_some(types::FULL_WEIGHT)
    }

    /// Observed share (0..1) of requests per version of `service`, over all callers'
    /// lanes with data; `None` when no lane into the service has traffic.
    #[must_use]
    pub fn observed_share(&self, service: &str) -> Option<BTreeMap<String, f64>> {
        let mut per_version: BTreeMap<String, f64> = BTreeMap::new();
        for lane in self.lanes.values().filter(|l| l.key.service == service) {
            if let Some(stats) = &lane.stats {
                *per_version.entry(lane.key.version.clone()).or_default() += stats.rps;
            }
        }
        let total: f64 = per_version.values().sum();
        (total > 0.0).then(|| {
            per_version
                .into_iter()
                .map(|(v, r)| (v, r / total))
                .collect()
        })
    }

    /// Stats of one version of `service` over all callers (windows merged, not averaged);
    /// `None` without data.
    #[must_use]
    pub fn version_stats(&self, service: &str, version: &str) -> Option<WindowStats> {
        let mut merged: Option<LaneWindow> = None;
        for lane in self.lanes.values() {
            if lane.key.service != service || lane.key.version != version {
                continue;
            }
            let Some(w) = &lane.window else { continue };
            match &mut merged {
                Some(m) => m.merge(w),
                None => merged = Some(w.clone()),
            }
        }
        merged.map(|m| m.stats())
    }

    /// Worst breaker state over the lanes into `service` (any caller).
    #[must_use]
    pub fn worst_breaker_into(&self, service: &str) -> BreakerState {
        self.lanes
            .values()
            .filter(|l| l.key.service == service)
            .filter_map(|l| l.stats.as_ref().map(|s| s.breaker))
            .fold(BreakerState::Closed, BreakerState::worst)
    }

    /// Callers of each service (roads), from the lanes: `(caller, callee)` pairs, sorted.
    #[must_use]
    pub fn roads(&self) -> Vec<(String, String)> {
        let mut roads: Vec<(String, String)> = self
            .lanes
            .keys()
            .map(|k| (k.caller.clone(), k.service.clone()))
            .collect();
        roads.dedup();
        roads
    }

    /// Whether the sidecars feeding `caller`'s lanes are all stale (or absent); with
    /// Prometheus as the source, whether Prometheus is stale.
    #[must_use]
    pub fn caller_stale(&self, caller: &str, now: Instant) -> bool {
        if let Some(prom) = &self.prometheus {
            return prom.is_stale(now);
        }
        !self
            .lane_book
            .by_service
            .get(caller)
            .into_iter()
            .flatten()
            .filter_map(|url| self.sidecars.get(url))
            .any(|s| !self.sidecar_stale(s, now))
    }

    /// The interval `service`'s sidecars are scraped at now (the io layer's plan; the base
    /// interval before it reported one).
    #[must_use]
    pub fn sidecar_interval(&self, service: &str) -> Duration {
        self.scrape_plan
            .as_ref()
            .map_or(self.scrape_interval, |p| p.interval_for(service))
    }

    /// The longest interval any sidecar is scraped at now: the step that history gaps,
    /// drift samples and lane freshness allow for.
    #[must_use]
    pub fn slowest_sidecar_interval(&self) -> Duration {
        self.scrape_plan.as_ref().map_or(self.scrape_interval, |p| {
            p.focused_interval
                .max(p.other_interval)
                .max(self.scrape_interval)
        })
    }

    /// A sidecar is stale after a failed scrape, or when no answer came within two of its
    /// intervals: the longer of the one in effect at its last answer and the current one
    /// (a sidecar that just moved to a shorter interval is not stale before it could be
    /// scraped again).
    #[must_use]
    pub fn sidecar_stale(&self, sidecar: &SidecarState, now: Instant) -> bool {
        let interval = freshness_interval(self.scrape_plan.as_ref(), self.scrape_interval, sidecar);
        sidecar.status.is_stale(now, interval)
    }

    /// Number of sidecars that have at least two scrapes (a full window).
    #[must_use]
    pub fn sidecars_with_window(&self) -> usize {
        self.sidecars
            .values()
            .filter(|s| s.prev.is_some() && s.last.is_some())
            .count()
    }
}

/// The interval a sidecar's freshness is judged by: the longer of the one in effect at its
/// last answer and the one `plan` (or the base interval, before the io layer reported a
/// plan) gives its service now.
pub(crate) fn freshness_interval(
    plan: Option<&crate::io::ScrapePlan>,
    base: Duration,
    sidecar: &SidecarState,
) -> Duration {
    let current = plan.map_or(base, |p| p.interval_for(&sidecar.service));
    sidecar
        .interval_at_scrape
        .map_or(current, |at| at.max(current))
}

/// `v1 80 / v2 20`.
#[must_use]
pub fn split_text(split: &Split) -> String {
    split
        .entries
        .iter()
        .map(|e| format!("{} {}", e.subset, types::format_pct(e.weight)))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ClusterCounters, ClusterId, Histogram};
    use types::{Health, Instance, RegistrySnapshot, SplitConfig};

    fn inst(id: &str, service: &str, version: &str, url: &str) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            address: "127.0.0.1".into(),
            port: 1,
            health: Health::Passing,
            check_output: String::new(),
            metrics_url: Some(url.into()),
        }
    }

    fn model() -> Model {
        let info = RegistryInfo {
            kind: RegistryKind::Demo,
            address: "http://x".into(),
            datacenter: None,
            writable: true,
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
        let snap = RegistrySnapshot {
            drivers: Vec::new(),
            services: vec![
                ServiceEntry {
                    protocol: None,
                    name: "gateway".into(),
                    instances: vec![
                        inst("gw-1", "gateway", "v1", "http://gw1"),
                        inst("gw-2", "gateway", "v1", "http://gw2"),
                    ],
                    subsets: vec![],
                    split: None,
                },
                ServiceEntry {
                    protocol: None,
                    name: "identity".into(),
                    instances: vec![
                        inst("id-1", "identity", "v1", "http://id1"),
                        inst("id-2", "identity", "v2", "http://id2"),
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
                    instances: vec![inst("photo-1", "photo", "v1", "http://p1")],
                    subsets: vec![],
                    split: None,
                },
            ],
        };
        m.apply(
            IoEvent::Registry {
                at: Instant::now(),
                result: Ok(Some(snap)),
                next_within: Duration::from_secs(1),
            },
            Instant::now(),
        );
        m
    }

    /// A cluster with `n` completed requests, `errors` of them 5xx, all in the 5 ms bucket.
    fn cluster(service: &str, subset: &str, n: u64, errors: u64) -> ClusterCounters {
        ClusterCounters {
            id: ClusterId {
                source: "gateway".into(),
                service: service.into(),
                subset: subset.into(),
            },
            rq_total: n,
            rq_completed: n,
            rq_xx: [0, n - errors, 0, 0, errors],
            rq_time: Histogram {
                buckets: vec![(5.0, n), (10.0, n), (f64::INFINITY, n)],
                sum: 4.0 * n as f64,
                count: n,
            },
            membership_healthy: Some(1),
            membership_total: Some(1),
            ejections_active: Some(0),
            ..ClusterCounters::default()
        }
    }

    fn scrape(m: &mut Model, url: &str, at: Instant, clusters: Vec<ClusterCounters>) {
        let result = Ok(SidecarScrape {
            duplicate_series: 0,
            clusters,
            uptime_secs: None,
        });
        m.apply(
            IoEvent::Scrape {
                url: url.into(),
                at,
                result,
            },
            at,
        );
    }

    #[test]
    fn lanes_add_caller_sidecars_before_deriving() {
        let mut m = model();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        scrape(
            &mut m,
            "http://gw1",
            t0,
            vec![
                cluster("identity", "v2", 100, 0),
                cluster("photo", "", 100, 0),
            ],
        );
        scrape(
            &mut m,
            "http://gw2",
            t0,
            vec![
                cluster("identity", "v2", 1000, 0),
                cluster("photo", "", 50, 0),
            ],
        );
        // One window each: gw1 +10 requests (0 errors), gw2 +30 (3 errors).
        scrape(
            &mut m,
            "http://gw1",
            t1,
            vec![
                cluster("identity", "v2", 110, 0),
                cluster("photo", "", 100, 0),
            ],
        );
        scrape(
            &mut m,
            "http://gw2",
            t1,
            vec![
                cluster("identity", "v2", 1030, 3),
                cluster("photo", "", 50, 0),
            ],
        );
        let key = LaneKey {
            caller: "gateway".into(),
            service: "identity".into(),
            version: "v2".into(),
        };
        let stats = m.lanes[&key].stats.clone().expect("a window");
        assert!(
            (stats.rps - 40.0).abs() < 1e-9,
            "rates add up: {}",
            stats.rps
        );
        assert!((stats.err5xx_ratio.unwrap() - 3.0 / 40.0).abs() < 1e-9);
        // An empty subset on a single-version service is that version's lane.
        let photo = LaneKey {
            caller: "gateway".into(),
            service: "photo".into(),
            version: "v1".into(),
        };
        assert_eq!(m.lanes[&photo].stats.as_ref().map(|s| s.rps), Some(0.0));
        assert_eq!(m.configured_weight("identity", "v2"), Some(2000));
        assert_eq!(m.configured_weight("photo", "v1"), Some(types::FULL_WEIGHT));
        let share = m.observed_share("identity").unwrap();
        assert!((share["v2"] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn one_scrape_is_no_data_and_a_failed_sidecar_goes_stale() {
        let mut m = model();
        let t0 = Instant::now();
        scrape(&mut m, "http://gw1", t0, vec![cluster("photo", "", 100, 0)]);
        let photo = LaneKey {
            caller: "gateway".into(),
            service: "photo".into(),
            version: "v1".into(),
        };
        assert_eq!(
            m.lanes[&photo].stats, None,
            "one scrape gives no window: no data, not 0 rps"
        );
        scrape(
            &mut m,
            "http://gw1",
            t0 + Duration::from_secs(1),
            vec![cluster("photo", "", 110, 0)],
        );
        assert!(m.lanes[&photo].stats.is_some());
        let t2 = t0 + Duration::from_secs(2);
        m.apply(
            IoEvent::Scrape {
                url: "http://gw1".into(),
                at: t2,
                result: Err("refused".into()),
            },
            t2,
        );
        assert_eq!(
            m.lanes[&photo].stats, None,
            "a failing sidecar contributes no window"
        );
        assert!(m.caller_stale("gateway", t2));
        assert_eq!(
            m.sidecars["http://gw1"].status.last_error.as_deref(),
            Some("refused")
        );
    }

    #[test]
    fn counter_reset_is_a_gap() {
        let mut m = model();
        let t0 = Instant::now();
        scrape(
            &mut m,
            "http://gw1",
            t0,
            vec![cluster("photo", "", 1000, 0)],
        );
        scrape(
            &mut m,
            "http://gw1",
            t0 + Duration::from_secs(1),
            vec![cluster("photo", "", 5, 0)],
        );
        let photo = LaneKey {
            caller: "gateway".into(),
            service: "photo".into(),
            version: "v1".into(),
        };
        assert_eq!(m.lanes[&photo].stats, None);
    }

    #[test]
    fn registry_errors_keep_last_good_data() {
        let mut m = model();
        let at = Instant::now();
        m.apply(
            IoEvent::Registry {
                at,
                result: Err("HTTP 403: ACL not found".into()),
                next_within: Duration::from_secs(1),
            },
            at,
        );
        assert_eq!(m.services.len(), 3, "last good data kept");
        assert!(m.registry_status.is_stale(at, m.registry_interval));
        // The watch was connected until the failure: the data's age counts from there
        // (within the promised interval after the last answer), not from that answer.
        let mut w = model();
        let t0 = Instant::now();
        let report = |at, result| IoEvent::Registry {
            at,
            result,
            next_within: Duration::from_secs(40),
        };
        w.apply(report(t0, Ok(None)), t0);
        let broke = t0 + Duration::from_secs(25);
        w.apply(report(broke, Err("connection refused".into())), broke);
        assert_eq!(w.registry_status.last_ok, Some(broke));
        let later = broke + Duration::from_secs(30);
        w.apply(report(later, Err("connection refused".into())), later);
        assert_eq!(
            w.registry_status.last_ok,
            Some(broke),
            "only the first failure"
        );
        assert_eq!(w.registry_status.age(later), Some(Duration::from_secs(30)));
        // A failure long after the promise: good until the promise ran out.
        let mut q = model();
        q.apply(report(t0, Ok(None)), t0);
        let late = t0 + Duration::from_secs(100);
        q.apply(report(late, Err("no answer within 41.9 s".into())), late);
        assert_eq!(
            q.registry_status.last_ok,
            Some(t0 + Duration::from_secs(40))
        );
        assert_eq!(
            m.notices.back().map(|n| n.text.as_str()),
            Some("registry: HTTP 403: ACL not found")
        );
    }

    #[test]
    fn scrapes_feed_history_and_the_breaker_tape() {
        let mut m = model();
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        m.set_clock_anchor(t0, wall0);
        let sec = |n: u64| t0 + Duration::from_secs(n);
        let ejecting = |n: u64, errors: u64| ClusterCounters {
            ejections_active: Some(1),
            membership_total: Some(2),
            membership_healthy: Some(1),
            ..cluster("identity", "v2", n, errors)
        };
        scrape(
            &mut m,
            "http://gw1",
            sec(0),
            vec![cluster("identity", "v2", 100, 0)],
        );
        scrape(
            &mut m,
            "http://gw1",
            sec(1),
            vec![cluster("identity", "v2", 110, 0)],
        );
        scrape(&mut m, "http://gw1", sec(2), vec![ejecting(130, 10)]);
        let key = LaneKey {
            caller: "gateway".into(),
            service: "identity".into(),
            version: "v2".into(),
        };
        let rps: Vec<Option<f64>> = m
            .lane_history(&key)
            .map(|s| s.points().map(|p| p.rps).collect())
            .unwrap_or_default();
        assert_eq!(
            rps,
            vec![None, Some(10.0), Some(20.0)],
            "first scrape: no window"
        );
        let v2: Vec<Option<f64>> = m
            .version_history("identity", "v2")
            .map(|s| s.points().map(|p| p.err_pct).collect())
            .unwrap_or_default();
        assert_eq!(v2, vec![None, Some(0.0), Some(50.0)]);
        assert_eq!(
            m.tape().iter().cloned().collect::<Vec<_>>(),
            vec![tape::TapeEntry {
                at: sec(2),
                wall: wall0 + Duration::from_secs(2),
                lane: key.clone(),
                from: Some(BreakerState::Closed),
                to: BreakerState::Ejecting {
                    ejected: 1,
                    total: 2
                },
                detail: "1 of 2 hosts ejected · 5xx 50.0 % · 20.0 rps · p99 5.0 ms".into(),
            }]
        );
        assert_eq!(m.last_trip(&key), Some(sec(2)));
    }
}

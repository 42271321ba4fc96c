//! Lanes from the sidecars' scrapes, recomputed in proportion to what changed.
//!
//! A lane (caller → service version) is the merge of the windows of every sidecar whose
//! last scrape lists it, counted only while that sidecar is fresh. Rebuilding every lane on
//! every event costs O(events × lanes); instead the model keeps:
//! - per sidecar, the lane keys its last scrape lists and whether its window counted
//!   (fresh) at the last refresh;
//! - per lane, the stats URLs of those sidecars (sorted, as `Model::sidecars`);
//! - the sidecars touched since the last refresh (a scrape or a failure of theirs, a
//!   registry change of a service they call), and the time each fresh sidecar goes stale
//!   (two intervals after its last good scrape), so ageing alone also marks it.
//!
//! A refresh ([`Model::finish_batch`], or [`Model::apply`] for one event) re-derives only the
//! lanes of marked sidecars, merging their sources' windows in the same order as a full
//! rebuild: the result is identical, bit for bit, to rebuilding everything (tested against
//! that on random event sequences). It then runs the per-update bookkeeping once
//! (`Model::lanes_updated`: history, breaker tape, drift). A clock that goes backwards, a
//! changed scrape interval or lanes changed from outside make the next refresh a full one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::types::{DEFAULT_VERSION, LaneKey, ServiceEntry};
use super::{LaneState, Model};
use crate::metrics::{
    ClusterCounters, ClusterId, LaneWindow, MergeOutcome, SidecarScrape, paired_window,
};

/// The bookkeeping behind incremental lane refreshes (see module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct LaneBook {
    /// Lane → stats URLs of the sidecars whose last scrape lists it.
    sources: BTreeMap<LaneKey, BTreeSet<String>>,
    /// Sidecars whose contribution must be re-derived.
    dirty_sidecars: BTreeSet<String>,
    /// Lanes that lost a source outside a refresh (a sidecar the registry dropped).
    dirty_lanes: BTreeSet<LaneKey>,
    /// The next refresh rebuilds everything.
    all_dirty: bool,
    /// Something changed since the last refresh.
    pending: bool,
    /// When fresh sidecars go stale, soonest first (entries may be outdated: checked).
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
    /// `now` and scrape interval of the last refresh.
    last_refresh: Option<(Instant, Duration)>,
    /// Stats URLs per service (for `Model::caller_stale`).
    pub(super) by_service: BTreeMap<String, Vec<String>>,
    /// Tests: always look sources up one by one (never sweep), to cover both ways.
    #[cfg(test)]
    never_sweep: bool,
}

impl LaneBook {
    /// A sidecar left: its lanes lose it as a source.
    fn forget_sidecar(&mut self, url: &str, keys: &[LaneKey]) {
        for key in keys {
            if let Some(urls) = self.sources.get_mut(key) {
                urls.remove(url);
                if urls.is_empty() {
                    self.sources.remove(key);
                }
            }
            self.dirty_lanes.insert(key.clone());
        }
    }
}

/// The single version of a service (all instances and subsets agree), if it has one.
pub(super) fn single_version(svc: &ServiceEntry) -> Option<&str> {
    let mut all = svc
        .instances
        .iter()
        .map(|i| i.version.as_str())
        .chain(svc.subsets.iter().map(String::as_str));
    let first = all.next()?;
    all.all(|v| v == first).then_some(first)
}

/// The version a cluster's lane stands for (see `Model::lane_version`), borrowed.
pub(super) fn lane_version_of<'a>(
    services: &'a BTreeMap<String, ServiceEntry>,
    service: &str,
    subset: &'a str,
) -> &'a str {
    if !subset.is_empty() {
        return subset;
    }
    services
        .get(service)
        .and_then(single_version)
        .unwrap_or(DEFAULT_VERSION)
}

fn key_of(services: &BTreeMap<String, ServiceEntry>, id: &ClusterId) -> LaneKey {
    LaneKey {
        caller: id.source.clone(),
        service: id.service.clone(),
        version: lane_version_of(services, &id.service, &id.subset).to_owned(),
    }
}

/// One cluster of a sidecar whose window counts: what its window is made of.
struct Source<'s> {
    prev: &'s SidecarScrape,
    last: &'s SidecarScrape,
    /// The same cluster in `prev`, if there.
    earlier: Option<&'s ClusterCounters>,
    cluster: &'s ClusterCounters,
    dt: f64,
    /// End of the window.
    end: Instant,
}

impl Source<'_> {
    fn window(&self) -> Option<LaneWindow> {
        paired_window(self.prev, self.last, self.earlier, self.cluster, self.dt)
    }

    /// Adds this window to a lane's merge, without building it when bounds allow.
    fn merge_into(&self, (acc, end): &mut (LaneWindow, Instant)) {
        let restarted = matches!(
            (self.prev.uptime_secs, self.last.uptime_secs),
            (Some(was), Some(now)) if now < was
        );
        if restarted {
            return;
        }
        let zero = ClusterCounters::default();
        let earlier = self.earlier.unwrap_or(&zero);
        match acc.merge_window(earlier, self.cluster, self.dt) {
            MergeOutcome::Merged => *end = (*end).max(self.end),
            MergeOutcome::NoWindow => {}
            MergeOutcome::Slow => {
                if let Some(w) = self.window() {
                    acc.merge(&w);
                    *end = (*end).max(self.end);
                }
            }
        }
    }
}

/// Calls `f(lane key, source)` for each cluster of a sidecar whose window counts (fresh,
/// two scrapes), in scrape order.
fn for_each_window<'s>(
    sidecar: &'s super::SidecarState,
    mut f: impl FnMut(&'s LaneKey, Source<'s>),
) {
    let (true, Some((t_last, last)), Some((t_prev, prev))) =
        (sidecar.counted_fresh, &sidecar.last, &sidecar.prev)
    else {
        return;
    };
    let dt = t_last.saturating_duration_since(*t_prev).as_secs_f64();
    for (i, (cluster, key)) in last.clusters.iter().zip(&sidecar.cluster_keys).enumerate() {
        if cluster.id.is_local() {
            continue;
        }
        // Paired by position when both scrapes list the same clusters, else by a search.
        let earlier = if sidecar.same_layout {
            prev.clusters.get(i)
        } else {
            prev.cluster(&cluster.id)
        };
        f(
            key,
            Source {
                prev,
                last,
                earlier,
                cluster,
                dt,
                end: *t_last,
            },
        );
    }
}

/// Adds a source's window to its lane's merge (the first one starts it).
fn merge_into<'k>(
    merged: &mut HashMap<&'k LaneKey, (LaneWindow, Instant)>,
    key: &'k LaneKey,
    source: &Source<'_>,
) {
    match merged.get_mut(key) {
        Some(acc) => source.merge_into(acc),
        None => {
            if let Some(w) = source.window() {
                merged.insert(key, (w, source.end));
            }
        }
    }
}

/// Whether `key` is the lane of cluster `id` (as [`key_of`] would make it, without
/// allocating).
fn key_is(services: &BTreeMap<String, ServiceEntry>, key: &LaneKey, id: &ClusterId) -> bool {
    id.service == key.service
        && id.source == key.caller
        && lane_version_of(services, &id.service, &id.subset) == key.version
}

impl Model {
    /// Marks a sidecar's lanes for the next refresh.
    pub(super) fn mark_sidecar(&mut self, url: &str) {
        if !self.lane_book.dirty_sidecars.contains(url) {
            self.lane_book.dirty_sidecars.insert(url.to_owned());
        }
        self.lane_book.pending = true;
    }

    /// Asks for a refresh at the end of the batch (history, tape and drift run even when
    /// no lane changed, as on every lane-source event).
    pub(super) fn mark_pending(&mut self) {
        self.lane_book.pending = true;
    }

    /// Makes the next refresh (if an event asks for one) rebuild every lane from every
    /// sidecar, as every event did before refreshes became incremental: the peer of the
    /// model-update benchmark, and the reference the tests compare with.
    pub fn mark_all_lanes(&mut self) {
        self.lane_book.all_dirty = true;
    }

    /// Whether events wait for [`Model::finish_batch`].
    #[must_use]
    pub fn batch_pending(&self) -> bool {
        self.lane_book.pending
    }

    /// After the registry changed: services whose single version appeared, changed or
    /// went away re-key the lanes of clusters without a subset, so the sidecars feeding
    /// any lane into them are re-derived.
    pub(super) fn services_replaced(&mut self, old: &BTreeMap<String, ServiceEntry>) {
        let mut changed: BTreeSet<&str> = BTreeSet::new();
        for (name, svc) in &self.services {
            if old.get(name).and_then(single_version) != single_version(svc) {
                changed.insert(name);
            }
        }
        for (name, svc) in old {
            if !self.services.contains_key(name) && single_version(svc).is_some() {
                changed.insert(name);
            }
        }
        if changed.is_empty() {
            return;
        }
        let book = &mut self.lane_book;
        for (key, urls) in &book.sources {
            if changed.contains(key.service.as_str()) {
                for url in urls {
                    if !book.dirty_sidecars.contains(url) {
                        book.dirty_sidecars.insert(url.clone());
                    }
                }
            }
        }
    }

    /// Keeps one sidecar entry per `metrics_url` the registry lists (none when the lanes
    /// come from Prometheus); a sidecar that left takes its lanes' source with it. `old` is
    /// the registry's previous answer: when every service lists the same instances with the
    /// same stats URLs (the usual refresh), there is nothing to do.
    pub(super) fn sync_sidecars(&mut self, old: &BTreeMap<String, ServiceEntry>) {
        if self.prometheus.is_some() {
            return;
        }
        let same_sidecars = old.len() == self.services.len()
            && old
                .iter()
                .zip(&self.services)
                .all(|((name, was), (new_name, now))| {
                    name == new_name
                        && was.instances.len() == now.instances.len()
                        && was
                            .instances
                            .iter()
                            .zip(&now.instances)
                            .all(|(a, b)| a.metrics_url == b.metrics_url && a.id == b.id)
                });
        if same_sidecars && !self.sidecars.is_empty() {
            return;
        }
        let mut wanted: std::collections::HashMap<&str, (&str, &str)> =
            std::collections::HashMap::with_capacity(self.sidecars.len());
        for svc in self.services.values() {
            for inst in &svc.instances {
                if let Some(url) = &inst.metrics_url {
                    // The last listing wins, as the registry order gives it.
                    wanted.insert(url, (&inst.id, &svc.name));
                }
            }
        }
        let book = &mut self.lane_book;
        let before = self.sidecars.len();
        self.sidecars.retain(|url, sidecar| {
            let keep = wanted.contains_key(url.as_str());
            if !keep {
                book.forget_sidecar(url, &sidecar.cluster_keys);
                book.pending = true;
            }
            keep
        });
        let mut reindex = self.sidecars.len() != before || book.by_service.is_empty();
        // Known sidecars in one ordered pass (lookups by URL in the ordered map cost more).
        for (url, sidecar) in &mut self.sidecars {
            let Some(&(instance_id, service)) = wanted.get(url.as_str()) else {
                continue;
            };
            if sidecar.instance_id != instance_id {
                instance_id.clone_into(&mut sidecar.instance_id);
            }
            if sidecar.service != service {
                service.clone_into(&mut sidecar.service);
                reindex = true;
            }
        }
        if self.sidecars.len() < wanted.len() {
            for (url, (instance_id, service)) in wanted {
                if self.sidecars.contains_key(url) {
                    continue;
                }
                self.sidecars.insert(
                    url.to_owned(),
                    super::SidecarState {
                        instance_id: instance_id.to_owned(),
                        service: service.to_owned(),
                        ..super::SidecarState::default()
                    },
                );
                reindex = true;
            }
        }
        if reindex {
            book.by_service.clear();
            for (url, sidecar) in &self.sidecars {
                match book.by_service.get_mut(&sidecar.service) {
                    Some(urls) => urls.push(url.clone()),
                    None => {
                        book.by_service
                            .insert(sidecar.service.clone(), vec![url.clone()]);
                    }
                }
            }
        }
    }

    /// Re-derives the lanes that changed since the last refresh (all of them when asked or
    /// when the clock went back), then runs the per-update bookkeeping.
    pub(super) fn refresh_lanes(&mut self, now: Instant) {
        self.lane_book.pending = false;
        if let Some(prom) = &self.prometheus {
            self.lanes = self.prometheus_lanes(prom, now);
            let wall = self.wall_at(now);
            self.lanes_updated(now, wall);
            return;
        }
        let interval = self.scrape_interval;
        let plan = self.scrape_plan.as_ref();
        let interval_of = |s: &super::SidecarState| super::freshness_interval(plan, interval, s);
        let services = &self.services;
        let sidecars = &mut self.sidecars;
        let book = &mut self.lane_book;
        let all = book.all_dirty
            || self.lanes.len() != book.sources.len()
            || book
                .last_refresh
                .is_none_or(|(at, was)| now < at || was != interval);
        if all {
            book.sources.clear();
            book.expiries.clear();
            book.dirty_lanes.clear();
            self.lanes.clear();
            book.dirty_sidecars = sidecars.keys().cloned().collect();
            for sidecar in sidecars.values_mut() {
                sidecar.cluster_keys.clear();
                sidecar.counted_fresh = false;
            }
        } else {
            while let Some(Reverse((at, _))) = book.expiries.peek()
                && *at < now
            {
                let Some(Reverse((_, url))) = book.expiries.pop() else {
                    break;
                };
                if sidecars
                    .get(&url)
                    .is_some_and(|s| s.counted_fresh && s.status.is_stale(now, interval_of(s)))
                {
                    book.dirty_sidecars.insert(url);
                }
            }
        }
        book.all_dirty = false;
        book.last_refresh = Some((now, interval));

        let mut dirty_lanes = std::mem::take(&mut book.dirty_lanes);
        for url in std::mem::take(&mut book.dirty_sidecars) {
            let Some(sidecar) = sidecars.get_mut(&url) else {
                continue;
            };
            let sidecar_interval = interval_of(sidecar);
            let fresh = !sidecar.status.is_stale(now, sidecar_interval);
            let clusters = sidecar.last.iter().flat_map(|(_, scrape)| &scrape.clusters);
            // The usual scrape lists the same clusters, which key as before: only their
            // lanes are dirty, the sources stay.
            if clusters.clone().count() == sidecar.cluster_keys.len()
                && clusters
                    .clone()
                    .zip(&sidecar.cluster_keys)
                    .all(|(c, k)| key_is(services, k, &c.id))
            {
                for (c, key) in clusters.zip(&sidecar.cluster_keys) {
                    if !c.id.is_local() && !dirty_lanes.contains(key) {
                        dirty_lanes.insert(key.clone());
                    }
                }
                sidecar.counted_fresh = fresh;
                if fresh
                    && let Some(stale_at) = sidecar
                        .status
                        .last_ok
                        .and_then(|ok| ok.checked_add(sidecar_interval * 2))
                {
                    book.expiries.push(Reverse((stale_at, url)));
                }
                continue;
            }
            let cluster_keys: Vec<LaneKey> =
                clusters.clone().map(|c| key_of(services, &c.id)).collect();
            let mut keys: Vec<&LaneKey> = clusters
                .zip(&cluster_keys)
                .filter(|(c, _)| !c.id.is_local())
                .map(|(_, k)| k)
                .collect();
            keys.sort();
            keys.dedup();
            for old in &sidecar.cluster_keys {
                if keys.binary_search(&old).is_err() {
                    if let Some(urls) = book.sources.get_mut(old) {
                        urls.remove(&url);
                        if urls.is_empty() {
                            book.sources.remove(old);
                        }
                    }
                    dirty_lanes.insert(old.clone());
                }
            }
            for &key in &keys {
                match book.sources.get_mut(key) {
                    Some(urls) => {
                        if !urls.contains(&url) {
                            urls.insert(url.clone());
                        }
                    }
                    None => {
                        book.sources
                            .insert(key.clone(), BTreeSet::from([url.clone()]));
                    }
                }
                if !dirty_lanes.contains(key) {
                    dirty_lanes.insert(key.clone());
                }
            }
            drop(keys);
            sidecar.cluster_keys = cluster_keys;
            sidecar.counted_fresh = fresh;
            if fresh
                && let Some(stale_at) = sidecar
                    .status
                    .last_ok
                    .and_then(|ok| ok.checked_add(sidecar_interval * 2))
            {
                book.expiries.push(Reverse((stale_at, url)));
            }
        }

        // Merge the windows of each dirty lane's sources in the order of a full rebuild
        // (sidecars by URL, clusters in scrape order). Few dirty lanes: look their sources
        // up. Many: one sweep over all sidecars in order, cheaper than tens of thousands of
        // lookups by URL.
        let sidecars = &*sidecars;
        let mut merged: HashMap<&LaneKey, (LaneWindow, Instant)> =
            HashMap::with_capacity(dirty_lanes.len());
        let sweep = dirty_lanes.len().saturating_mul(8) >= book.sources.len();
        #[cfg(test)]
        let sweep = sweep && !book.never_sweep;
        if sweep {
            let all_dirty = dirty_lanes.len() >= book.sources.len();
            let dirty: HashSet<&LaneKey> = if all_dirty {
                HashSet::new()
            } else {
                dirty_lanes.iter().collect()
            };
            for sidecar in sidecars.values() {
                for_each_window(sidecar, |key, source| {
                    if all_dirty || dirty.contains(key) {
                        merge_into(&mut merged, key, &source);
                    }
                });
            }
        } else {
            for key in &dirty_lanes {
                for url in book.sources.get(key).into_iter().flatten() {
                    let Some(sidecar) = sidecars.get(url) else {
                        continue;
                    };
                    for_each_window(sidecar, |cluster_key, source| {
                        if cluster_key == key {
                            merge_into(&mut merged, cluster_key, &source);
                        }
                    });
                }
            }
        }
        // Dirty lanes, their sources and the lanes map side by side (all sorted by key): a
        // lane with sources takes its merged window (or none), one without goes.
        let mut added: Vec<LaneState> = Vec::new();
        let mut gone: Vec<&LaneKey> = Vec::new();
        let mut lanes_iter = self.lanes.iter_mut().peekable();
        let mut sources_iter = book.sources.keys().peekable();
        for key in &dirty_lanes {
            while lanes_iter.next_if(|(k, _)| *k < key).is_some() {}
            while sources_iter.next_if(|k| *k < key).is_some() {}
            let lane = lanes_iter.next_if(|(k, _)| *k == key).map(|(_, lane)| lane);
            if sources_iter.next_if(|k| *k == key).is_none() {
                if lane.is_some() {
                    gone.push(key);
                }
                continue;
            }
            let (stats, window, updated_at) = match merged.remove(key) {
                Some((w, at)) => (Some(w.stats()), Some(w), Some(at)),
                None => (None, None, None),
            };
            if let Some(lane) = lane {
                lane.stats = stats;
                lane.window = window;
                lane.updated_at = updated_at;
            } else {
                added.push(LaneState {
                    key: key.clone(),
                    stats,
                    window,
                    updated_at,
                });
            }
        }
        let keys_changed = all || !gone.is_empty() || !added.is_empty();
        for key in gone {
            self.lanes.remove(key);
        }
        for lane in added {
            self.lanes.insert(lane.key.clone(), lane);
        }
        let wall = self.wall_at(now);
        self.lanes_updated_with(now, wall, keys_changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoEvent;
    use crate::metrics::{ClusterCounters, Histogram, SidecarScrape};
    use crate::model::RegistryInfo;
    use crate::model::types::{Health, Instance, RegistryKind, RegistrySnapshot};

    /// A small deterministic generator (xorshift64*), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const URLS: [(&str, &str); 6] = [
        ("http://gw1", "gateway"),
        ("http://gw2", "gateway"),
        ("http://portal1", "portal"),
        ("http://id1", "identity"),
        ("http://ph1", "photo"),
        ("http://unknown", "nobody"),
    ];

    fn instance(id: &str, service: &str, version: &str, url: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            address: "127.0.0.1".into(),
            port: 1,
            health: Health::Passing,
            check_output: String::new(),
            metrics_url: url.map(str::to_owned),
        }
    }

    /// A registry snapshot, varied: photo sometimes gains a v2 (its lanes without a
    /// subset re-key), gw2's sidecar and the payment service come and go.
    fn snapshot(rng: &mut Rng) -> RegistrySnapshot {
        let entry = |name: &str, instances: Vec<Instance>, subsets: Vec<String>| ServiceEntry {
            protocol: None,
            name: name.into(),
            instances,
            subsets,
            split: None,
        };
        let mut gateway = vec![instance("gw-1", "gateway", "v1", Some("http://gw1"))];
        if rng.chance(70) {
            gateway.push(instance("gw-2", "gateway", "v1", Some("http://gw2")));
        }
        let mut photo = vec![instance("ph-1", "photo", "v1", Some("http://ph1"))];
        if rng.chance(30) {
            photo.push(instance("ph-2", "photo", "v2", None));
        }
        let mut services = vec![
            entry("gateway", gateway, vec![]),
            entry(
                "identity",
                vec![
                    instance("id-1", "identity", "v1", Some("http://id1")),
                    instance("id-2", "identity", "v2", None),
                ],
                vec!["v1".into(), "v2".into()],
            ),
            entry("photo", photo, vec![]),
            entry(
                "portal",
                vec![instance("p-1", "portal", "v1", Some("http://portal1"))],
                vec![],
            ),
        ];
        if rng.chance(50) {
            services.push(entry(
                "payment",
                vec![instance("pay-1", "payment", "v1", None)],
                vec![],
            ));
        }
        RegistrySnapshot {
            drivers: Vec::new(),
            services,
        }
    }

    /// Cumulative counters per (url, cluster), advanced by every scrape.
    #[derive(Default)]
    struct Counters(BTreeMap<(String, ClusterId), (u64, u64, u64)>);

    impl Counters {
        fn scrape(&mut self, rng: &mut Rng, url: &str, caller: &str) -> SidecarScrape {
            let mut clusters = Vec::new();
            for (service, subset) in [
                ("identity", "v1"),
                ("identity", "v2"),
                ("identity", ""),
                ("photo", ""),
                ("photo", "v1"),
                ("payment", ""),
                ("local_app", ""),
            ] {
                if !rng.chance(70) {
                    continue;
                }
                let id = ClusterId {
                    source: if rng.chance(95) { caller } else { "other" }.into(),
                    service: service.into(),
                    subset: subset.into(),
                };
                let (n, errors, slow) = self.0.entry((url.to_owned(), id.clone())).or_default();
                if rng.chance(5) {
                    (*n, *errors, *slow) = (0, 0, 0); // a counter reset
                }
                let more = rng.below(50);
                *n += more;
                *errors += rng.below(more / 4 + 1);
                *slow += rng.below(more / 10 + 1);
                let (n, errors, slow) = (*n, (*errors).min(*n), (*slow).min(*n));
                let mut c = ClusterCounters {
                    id,
                    rq_total: n,
                    rq_completed: n,
                    rq_xx: [0, n - errors, 0, 0, errors],
                    rq_time: Histogram {
                        buckets: vec![(5.0, n - slow), (50.0, n), (f64::INFINITY, n)],
                        sum: 3.0 * n as f64,
                        count: n,
                    },
                    membership_total: Some(3),
                    membership_healthy: Some(3 - rng.below(4)),
                    ejections_active: Some(rng.below(2)),
                    rq_pending_overflow: rng.below(2),
                    ..ClusterCounters::default()
                };
                if rng.chance(10) {
                    c.rq_time.buckets.clear();
                } else if rng.chance(5) {
                    // Other bounds (a differently configured sidecar): merged by `le`.
                    c.rq_time.buckets.insert(1, (25.0, n - slow));
                }
                clusters.push(c);
            }
            clusters.sort_by(|a, b| a.id.cmp(&b.id));
            clusters.dedup_by(|a, b| a.id == b.id);
            SidecarScrape {
                duplicate_series: 0,
                clusters,
                uptime_secs: Some(if rng.chance(3) { 1.0 } else { 1e6 }),
            }
        }
    }

    /// An empty model whose wall clock reads 1,700,000,000 s at `t0` (tape entries of two
    /// models compare equal).
    fn empty_model(t0: Instant) -> Model {
        let info = RegistryInfo {
            kind: RegistryKind::Demo,
            address: "http://x".into(),
            datacenter: None,
            writable: true,
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
        m.set_clock_anchor(
            t0,
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        m
    }

    /// A random event at `at`.
    fn event(rng: &mut Rng, counters: &mut Counters, at: Instant) -> IoEvent {
        if rng.chance(8) {
            return IoEvent::Registry {
                at,
                result: Ok(Some(snapshot(rng))),
                next_within: Duration::from_secs(1),
            };
        }
        let (url, caller) = URLS[rng.below(URLS.len() as u64) as usize];
        let result = if rng.chance(10) {
            Err("refused".to_owned())
        } else {
            Ok(counters.scrape(rng, url, caller))
        };
        IoEvent::Scrape {
            url: url.into(),
            at,
            result,
        }
    }

    /// The lanes as the model derived them before refreshes became incremental (every
    /// sidecar's `sidecar_windows`, merged per key in URL order): the independent reference.
    fn reference_lanes(m: &Model, now: Instant) -> BTreeMap<LaneKey, LaneState> {
        let mut windows: BTreeMap<LaneKey, (LaneWindow, Instant)> = BTreeMap::new();
        let mut seen: Vec<LaneKey> = Vec::new();
        for sidecar in m.sidecars.values() {
            let Some((t_last, last)) = &sidecar.last else {
                continue;
            };
            let key_of = |id: &ClusterId| LaneKey {
                caller: id.source.clone(),
                service: id.service.clone(),
                version: m.lane_version(&id.service, &id.subset),
            };
            seen.extend(
                last.clusters
                    .iter()
                    .filter(|c| !c.id.is_local())
                    .map(|c| key_of(&c.id)),
            );
            let fresh = !m.sidecar_stale(sidecar, now);
            let (true, Some((t_prev, prev))) = (fresh, &sidecar.prev) else {
                continue;
            };
            let dt = t_last.saturating_duration_since(*t_prev).as_secs_f64();
            for (id, w) in crate::metrics::sidecar_windows(prev, last, dt) {
                let (false, Some(w)) = (id.is_local(), w) else {
                    continue;
                };
                match windows.get_mut(&key_of(&id)) {
                    Some((acc, at)) => {
                        acc.merge(&w);
                        *at = (*at).max(*t_last);
                    }
                    None => {
                        windows.insert(key_of(&id), (w, *t_last));
                    }
                }
            }
        }
        seen.into_iter()
            .map(|key| {
                let (stats, window, updated_at) = match windows.get(&key) {
                    Some((w, at)) => (Some(w.stats()), Some(w.clone()), Some(*at)),
                    None => (None, None, None),
                };
                let lane = LaneState {
                    key: key.clone(),
                    stats,
                    window,
                    updated_at,
                };
                (key, lane)
            })
            .collect()
    }

    fn history_of(m: &Model) -> Vec<(LaneKey, Vec<crate::model::history::HistoryPoint>)> {
        m.lanes
            .keys()
            .filter_map(|k| Some((k.clone(), m.lane_history(k)?.points().collect())))
            .collect()
    }

    #[test]
    fn incremental_refresh_equals_a_full_rebuild_on_random_events() {
        for seed in 1..=20_u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut counters = Counters::default();
            let t0 = Instant::now();
            let mut incremental = empty_model(t0);
            // Half the seeds merge by looking each source up, half by sweeping.
            incremental.lane_book.never_sweep = seed % 2 == 0;
            let mut full = empty_model(t0);
            let mut at = t0;
            let mut differed = false;
            for step in 0..300 {
                // Mostly sub-second steps; sometimes a pause long enough to go stale.
                at += if rng.chance(5) {
                    Duration::from_millis(2_000 + rng.below(3_000))
                } else {
                    Duration::from_millis(rng.below(700))
                };
                let e = event(&mut rng, &mut counters, at);
                incremental.apply(e.clone(), at);
                full.mark_all_lanes();
                full.apply(e, at);
                assert_eq!(
                    incremental.lanes, full.lanes,
                    "seed {seed}, step {step}: lanes differ"
                );
                if incremental
                    .lane_book
                    .last_refresh
                    .is_some_and(|(t, _)| t == at)
                {
                    assert_eq!(
                        incremental.lanes,
                        reference_lanes(&incremental, at),
                        "seed {seed}, step {step}: lanes differ from the reference"
                    );
                }
                differed |= incremental.lanes.values().any(|l| l.stats.is_some());
            }
            assert!(differed, "seed {seed}: some lane had data");
            assert_eq!(history_of(&incremental), history_of(&full), "seed {seed}");
            assert_eq!(incremental.tape(), full.tape(), "seed {seed}");
            for caller in ["gateway", "portal", "identity", "photo", "nobody"] {
                assert_eq!(
                    incremental.caller_stale(caller, at),
                    full.caller_stale(caller, at),
                    "seed {seed}: {caller}"
                );
            }
        }
    }

    #[test]
    fn a_batch_ends_with_the_lanes_of_one_event_at_a_time() {
        let mut rng = Rng(7);
        let mut counters = Counters::default();
        let t0 = Instant::now();
        let mut events = vec![IoEvent::Registry {
            at: t0,
            result: Ok(Some(snapshot(&mut rng))),
            next_within: Duration::from_secs(1),
        }];
        for i in 1..200_u32 {
            events.push(event(
                &mut rng,
                &mut counters,
                t0 + Duration::from_millis(100) * i,
            ));
        }
        let now = t0 + Duration::from_secs(20);
        let mut one_by_one = empty_model(t0);
        for e in events.clone() {
            one_by_one.apply(e, now);
        }
        let mut batched = empty_model(t0);
        for e in events {
            batched.apply_deferred(e, now);
        }
        assert!(batched.batch_pending());
        batched.finish_batch(now);
        assert!(!batched.batch_pending());
        assert!(!batched.lanes.is_empty());
        assert_eq!(batched.lanes, one_by_one.lanes);
    }

    #[test]
    fn a_sidecar_going_stale_with_no_event_of_its_own_drops_its_window() {
        let t0 = Instant::now();
        let mut m = empty_model(t0);
        let mut rng = Rng(3);
        let mut snap = snapshot(&mut rng);
        snap.services.retain(|s| s.name != "payment");
        m.apply(
            IoEvent::Registry {
                at: t0,
                result: Ok(Some(snap)),
                next_within: Duration::from_secs(1),
            },
            t0,
        );
        for k in 0..2_u32 {
            let at = t0 + Duration::from_secs(1) * k;
            let n = 100 + 10 * u64::from(k);
            let scrape = SidecarScrape {
                duplicate_series: 0,
                clusters: vec![ClusterCounters {
                    id: ClusterId {
                        source: "portal".into(),
                        service: "photo".into(),
                        subset: String::new(),
                    },
                    rq_total: n,
                    rq_completed: n,
                    rq_xx: [0, n, 0, 0, 0],
                    ..ClusterCounters::default()
                }],
                uptime_secs: None,
            };
            m.apply(
                IoEvent::Scrape {
                    url: "http://portal1".into(),
                    at,
                    result: Ok(scrape),
                },
                at,
            );
        }
        let with_data = |m: &Model| {
            m.lanes
                .values()
                .filter(|l| l.key.caller == "portal" && l.stats.is_some())
                .count()
        };
        assert!(with_data(&m) > 0);
        // Another sidecar's failures, 1.5 s and then 3.5 s later: portal's own sidecar is
        // stale only after two intervals without a scrape.
        for secs in [2.5, 4.5] {
            let at = t0 + Duration::from_secs_f64(secs);
            m.apply(
                IoEvent::Scrape {
                    url: "http://gw1".into(),
                    at,
                    result: Err("refused".into()),
                },
                at,
            );
            assert_eq!(with_data(&m) > 0, secs < 3.5, "at {secs} s");
        }
    }
}

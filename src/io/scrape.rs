//! Sidecar scraping at scale: one scheduler for every stats URL the registry lists.
//!
//! - **Independent scrapes.** Each scrape is its own task with its own deadline
//!   (`scrape_timeout`, body included); there is no round and no barrier, so a slow or hung
//!   sidecar delays only itself.
//! - **Bounded concurrency.** At most `max_concurrent_scrapes` scrapes are in flight; a
//!   scrape starts only when a slot is free (no queue builds up behind the slots). A
//!   sidecar whose last scrape failed (timeout, refused, bad body) is *suspect* and needs
//!   one of a small separate share of those slots (an eighth; without a free one it waits
//!   a base interval), so sidecars that hang until the deadline cannot take the slots of
//!   the answering ones.
//! - **Filtered scrapes.** The request adds Envoy's `usedonly` and a `filter` regex
//!   ([`ENVOY_STATS_FILTER`]) that keeps exactly the stats the parser folds, and drops the
//!   `external.` / `internal.` twins (on Envoy's fixture: 111 KB instead of 305 KB).
//! - **Two tiers and a budget.** Sidecars of services the view shows or pins (see
//!   [`Command::Focus`](super::Command::Focus); until the first one, every service) are
//!   scraped every `scrape_interval`, the others `unfocused_factor` times less often. When
//!   that would exceed `max_scrapes_per_sec`, both intervals stretch ([`tier_intervals`]):
//!   focused sidecars may take up to 3/4 of the budget, the others share the rest and are
//!   never scraped more often than focused ones. The intervals in effect go to the model
//!   ([`IoEvent::ScrapePlan`]) for its freshness rules. A token bucket enforces the budget
//!   and spreads the scrapes evenly over the interval (focused ones first); a sidecar's
//!   first two scrapes (its first window) are not held back by it.
//! - **Hosts.** `/clusters?format=json` is fetched after a good scrape only when the
//!   membership / ejection gauges of that scrape differ from those at the last fetch, or
//!   the last fetch failed; for a focused sidecar also when the last fetch is older than
//!   [`CLUSTERS_REFRESH`] (or ten of its intervals, if longer). A 404 pauses it for
//!   [`CLUSTERS_404_PAUSE`].
//! - **Paced wakes.** Scrape results wake the UI at most once per focused interval, kept
//!   between [`MIN_WAKE_PERIOD`] and [`MAX_WAKE_PERIOD`] (the last result of a burst still
//!   wakes it, at the end of the period): hundreds of scrapes a second make one frame, not
//!   one each — a frame costs far more than a scrape, the more so under software rendering.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::http::fetch_text_as;
use super::tasks::{IoConfig, Wake, clusters_url, emit};
use super::{FetchError, IoEvent, fetch_text};
use crate::metrics::{SidecarScrape, parse_clusters_json, parse_envoy_stats};
use crate::net::strip_userinfo;

/// Envoy `filter` regex sent with every scrape of an Envoy stats path: the stats
/// `metrics::parse` folds, by their internal dotted names, and nothing else.
///
/// `cluster.<name>.<stat>` for `upstream_rq_{total,completed,1xx..5xx,pending_overflow,time}`,
/// `upstream_cx_overflow`, `membership_{healthy,total}`, `outlier_detection.ejections_active`
/// and `circuit_breakers.default.{rq,rq_pending,cx}_open`, plus `server.uptime`. The
/// segment right before the stat must not be `external` or `internal`: those are Envoy's
/// duplicate `cluster.<name>.external.upstream_rq_*` families, which the parser skips anyway
/// (RE2 has no look-behind, hence the spelled-out complement). A cluster whose own name
/// ends in `.external` / `.internal` would lose its stats; Consul's end in `.consul`.
pub const ENVOY_STATS_FILTER: &str = concat!(
    r"^cluster\.(?:.*\.)?",
    // One dot-free segment that is neither `external` nor `internal` (both 8 long, same
    // last six letters): another length, or other first two letters, or other last six.
    r"(?:[^.]{1,7}|[^.]{9,}|(?:[^ei.][^.]|e[^x.]|i[^n.])[^.]{6}",
    r"|[^.]{2}(?:[^t.][^.]{5}|t[^e.][^.]{4}|te[^r.][^.]{3}|ter[^n.][^.]{2}|tern[^a.][^.]|terna[^l.]))",
    r"\.(?:upstream_rq_(?:total|completed|[1-5]xx|pending_overflow|time)|upstream_cx_overflow",
    r"|membership_(?:healthy|total)|outlier_detection\.ejections_active",
    r"|circuit_breakers\.default\.(?:rq|rq_pending|cx)_open)$",
    r"|^server\.uptime$",
);

/// How long a sidecar whose `/clusters` answered 404 is not asked again.
pub const CLUSTERS_404_PAUSE: Duration = Duration::from_mins(5);
/// Longest time a focused sidecar's host list is not fetched again while its membership
/// and ejection gauges stay the same (ten scrape intervals when that is longer).
pub const CLUSTERS_REFRESH: Duration = Duration::from_secs(30);
/// Share of the scrape budget focused sidecars may take when others need the rest.
const FOCUS_SHARE: f64 = 0.75;
/// Token bucket depth, in seconds of budget (short bursts only).
const BURST_SECS: f64 = 0.05;
/// Focus changes are applied at most this often (the view may send them while panning).
const FOCUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// Intervals are rounded up to this step (fewer plan changes when counts move a little).
const INTERVAL_STEP_MS: u64 = 100;
/// Longest interval either tier gets.
const MAX_INTERVAL: Duration = Duration::from_hours(1);
/// Scrape results wake the UI at most once per focused interval, but at least this
/// often…
pub const MIN_WAKE_PERIOD: Duration = Duration::from_millis(100);
/// …and at most this seldom.
pub const MAX_WAKE_PERIOD: Duration = Duration::from_secs(1);

/// The wake period for a focused interval (see [`MIN_WAKE_PERIOD`]).
fn wake_period(focused_interval: Duration) -> Duration {
    focused_interval.clamp(MIN_WAKE_PERIOD, MAX_WAKE_PERIOD)
}
/// Largest sidecar stats (and clusters) body read.
const MAX_STATS_BYTES: usize = crate::net::limits::SIDECAR_MAX_BODY_BYTES;

/// The URL a scrape fetches: `metrics_url` plus `usedonly` and `filter=`
/// [`ENVOY_STATS_FILTER`] (percent-encoded) when its path is Envoy's `…/stats/prometheus`
/// or Consul's `envoy_prometheus_bind_addr` listener `…/metrics`. Parameters the URL
/// already has are kept and win (an operator's own `filter` stays).
#[must_use]
pub fn stats_request_url(metrics_url: &str) -> String {
    let (before_fragment, fragment) = match metrics_url.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (metrics_url, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    if !(path.ends_with("/stats/prometheus") || path.ends_with("/metrics")) {
        return metrics_url.to_owned();
    }
    let has = |key: &str| {
        query.is_some_and(|q| {
            q.split('&')
                .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == key)
        })
    };
    let mut params: Vec<String> = query
        .filter(|q| !q.is_empty())
        .map(|q| vec![q.to_owned()])
        .unwrap_or_default();
    if !has("usedonly") {
        params.push("usedonly".into());
    }
    if !has("filter") {
        params.push(format!("filter={}", percent_encode(ENVOY_STATS_FILTER)));
    }
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The scrape intervals in effect: what the model's freshness rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapePlan {
    /// Services whose sidecars are scraped at `focused_interval` (`None`: every service,
    /// as before the view sent its first [`Command::Focus`](super::Command::Focus)).
    pub focus: Option<BTreeSet<String>>,
    /// Interval of the sidecars of focused services.
    pub focused_interval: Duration,
    /// Interval of the others.
    pub other_interval: Duration,
}

impl ScrapePlan {
    /// Whether `service`'s sidecars are in the focused tier.
    #[must_use]
    pub fn is_focused(&self, service: &str) -> bool {
        self.focus.as_ref().is_none_or(|f| f.contains(service))
    }

    /// The interval `service`'s sidecars are scraped at.
    #[must_use]
    pub fn interval_for(&self, service: &str) -> Duration {
        if self.is_focused(service) {
            self.focused_interval
        } else {
            self.other_interval
        }
    }
}

/// Intervals of the focused and the other tier for `focused` and `other` sidecars: the
/// focused ones every `base`, the others `factor`× less often, both stretched when that
/// would exceed `budget_per_sec` scrapes per second. Focused sidecars may then take up to
/// 3/4 of the budget (all of it when the others need less), the others share what is
/// left, never more often than focused ones / `factor`. Rounded up to 100 ms, at most 1 h.
#[must_use]
pub fn tier_intervals(
    focused: usize,
    other: usize,
    base: Duration,
    factor: u32,
    budget_per_sec: f64,
) -> (Duration, Duration) {
    let base_secs = base.as_secs_f64().max(1e-3);
    let factor = f64::from(factor.max(1));
    let budget = if budget_per_sec.is_finite() && budget_per_sec > 0.0 {
        budget_per_sec
    } else {
        f64::INFINITY
    };
    let (nf, no) = (focused as f64, other as f64);
    let other_nominal = no / (base_secs * factor);
    let reserve = other_nominal.min((1.0 - FOCUS_SHARE) * budget);
    let focused_rate = if focused > 0 {
        (1.0 / base_secs).min((budget - reserve) / nf)
    } else {
        1.0 / base_secs
    };
    let left = budget - nf * focused_rate;
    let other_rate = if other > 0 {
        (focused_rate / factor).min(left / no)
    } else {
        focused_rate / factor
    };
    (interval_of(focused_rate), interval_of(other_rate))
}

fn interval_of(rate_per_sec: f64) -> Duration {
    if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
        return MAX_INTERVAL;
    }
    let ms = (1000.0 / rate_per_sec)
        .ceil()
        .min(MAX_INTERVAL.as_millis() as f64) as u64;
    let stepped = ms.div_ceil(INTERVAL_STEP_MS) * INTERVAL_STEP_MS;
    Duration::from_millis(stepped.max(1)).min(MAX_INTERVAL)
}

/// What the scrape of one sidecar (its host-list fetch above all) remembers between scrapes.
#[derive(Debug, Clone, Default)]
struct ClustersMemo {
    /// Whether this sidecar's lies (repeated series, counter values that are not counters)
    /// were logged already: once per sidecar, not once per scrape.
    lies_logged: bool,
    /// Membership / ejection gauges at the last good fetch.
    signature: Option<u64>,
    /// When the last good fetch was made.
    fetched_at: Option<Instant>,
    /// Until when a sidecar without `/clusters` (404) is left alone.
    paused_until: Option<Instant>,
}

/// One sidecar the scheduler knows.
#[derive(Debug)]
struct Target {
    service: String,
    focused: bool,
    /// When the next scrape is due (not meaningful while one is in flight).
    due: Instant,
    /// Generation of its queue entry: older entries of this URL are skipped.
    seq: u64,
    /// A scrape is in flight.
    in_flight: bool,
    /// Its task (aborted when the registry drops the sidecar).
    task: Option<AbortHandle>,
    /// Scrapes started so far.
    started: u64,
    last_start: Option<Instant>,
    /// Failed scrapes in a row. After a failure the next scrape waits for a suspect slot
    /// and comes later ([`failure_backoff`]).
    failures: u32,
    clusters: ClustersMemo,
    /// Its place in the interval, in `[0, 1)` (spreads the scrapes evenly).
    phase: f64,
}

/// How many intervals a sidecar waits after its `failures`-th failed scrape in a row: 1, 2,
/// then 4 at most. A sidecar that keeps failing (down, hung, answering more than the body
/// limit) costs a deadline or a body limit per scrape: asked 4 times less often, it costs 4
/// times less, and its recovery is still seen within 4 intervals.
fn failure_backoff(failures: u32) -> u32 {
    1 << failures.saturating_sub(1).min(2)
}

/// What a finished scrape reports back to the scheduler.
struct Done {
    url: String,
    ok: bool,
    clusters: ClustersMemo,
    /// The UI is still there.
    alive: bool,
}

/// The slots scrapes wait for.
struct Slots {
    healthy: Arc<Semaphore>,
    suspect: Arc<Semaphore>,
}

impl Slots {
    /// `total` slots, an eighth of them (at least one, when there are at least two) kept
    /// for suspect sidecars.
    fn new(total: usize) -> Self {
        let total = total.max(1);
        let suspect = if total >= 2 { (total / 8).max(1) } else { 0 };
        let healthy = Arc::new(Semaphore::new(total - suspect));
        Self {
            suspect: if suspect == 0 {
                Arc::clone(&healthy)
            } else {
                Arc::new(Semaphore::new(suspect))
            },
            healthy,
        }
    }
}

/// A deterministic phase in `[0, 1)` for a URL (spreads first scrapes).
fn phase_of(url: &str) -> f64 {
    let mut h = DefaultHasher::new();
    url.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The scheduler's state.
struct Scheduler {
    config: IoConfig,
    targets: HashMap<String, Target>,
    focused_queue: BinaryHeap<Reverse<(Instant, u64, String)>>,
    other_queue: BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: u64,
    focus: Option<BTreeSet<String>>,
    plan: Option<ScrapePlan>,
    tokens: f64,
    refilled_at: Instant,
}

impl Scheduler {
    fn new(config: IoConfig) -> Self {
        Self {
            tokens: burst(&config),
            config,
            targets: HashMap::new(),
            focused_queue: BinaryHeap::new(),
            other_queue: BinaryHeap::new(),
            next_seq: 0,
            focus: None,
            plan: None,
            refilled_at: Instant::now(),
        }
    }

    fn plan(&self) -> ScrapePlan {
        self.plan.clone().unwrap_or(ScrapePlan {
            focus: None,
            focused_interval: self.config.scrape_interval,
            other_interval: self.config.scrape_interval,
        })
    }

    /// Puts `url` in its tier's queue at its `due` time.
    fn enqueue(&mut self, url: &str) {
        let Some(t) = self.targets.get_mut(url) else {
            return;
        };
        self.next_seq += 1;
        t.seq = self.next_seq;
        let entry = Reverse((t.due, t.seq, url.to_owned()));
        if t.focused {
            self.focused_queue.push(entry);
        } else {
            self.other_queue.push(entry);
        }
    }

    /// The time from `t`'s last scrape start to its next: the first two scrapes one base
    /// interval apart (the first window), then its tier's interval — the first of those
    /// cut to the sidecar's phase of it, so that after the warm-up burst the scrapes are
    /// spread over the whole interval at once.
    fn gap_after(&self, t: &Target, plan: &ScrapePlan) -> Duration {
        let base = self.config.scrape_interval;
        let interval = if t.focused {
            plan.focused_interval
        } else {
            plan.other_interval
        };
        match t.started {
            0 | 1 => base,
            2 => interval.mul_f64(t.phase).max(base),
            _ => interval,
        }
    }

    /// Follows the registry's URL list: new sidecars get a first scrape spread over the
    /// first base interval, vanished ones are dropped (their scrape in flight aborted).
    fn sync_urls(&mut self, urls: &BTreeMap<String, String>, now: Instant) {
        self.targets.retain(|url, t| {
            let keep = urls.contains_key(url);
            if !keep && let Some(task) = &t.task {
                task.abort();
            }
            keep
        });
        let spread = self.config.scrape_interval.min(Duration::from_secs(1));
        for (url, service) in urls {
            if let Some(t) = self.targets.get_mut(url) {
                t.service.clone_from(service);
                continue;
            }
            // A `user:pass@` in a registered stats URL is a secret from now on.
            crate::net::secrets::remember_url_secrets(url);
            self.targets.insert(
                url.clone(),
                Target {
                    service: service.clone(),
                    focused: true,
                    due: now + spread.mul_f64(phase_of(url)),
                    phase: phase_of(url),
                    seq: 0,
                    in_flight: false,
                    task: None,
                    started: 0,
                    last_start: None,
                    failures: 0,
                    clusters: ClustersMemo::default(),
                },
            );
        }
    }

    /// Recomputes tiers and intervals for the current focus and URLs, and every queue
    /// entry; returns the plan when it changed.
    fn retier(&mut self, now: Instant) -> Option<ScrapePlan> {
        let focus = self.focus.clone();
        let mut focused = 0usize;
        for t in self.targets.values_mut() {
            t.focused = focus.as_ref().is_none_or(|f| f.contains(&t.service));
            focused += usize::from(t.focused);
        }
        let other = self.targets.len() - focused;
        let (focused_interval, other_interval) = tier_intervals(
            focused,
            other,
            self.config.scrape_interval,
            self.config.unfocused_factor,
            self.config.max_scrapes_per_sec,
        );
        let plan = ScrapePlan {
            focus,
            focused_interval,
            other_interval,
        };
        let changed = self.plan.as_ref() != Some(&plan);
        self.plan = Some(plan.clone());
        // Rebuild both queues: due times follow the new intervals (never in the past).
        self.focused_queue.clear();
        self.other_queue.clear();
        let urls: Vec<String> = self
            .targets
            .iter()
            .filter(|(_, t)| !t.in_flight)
            .map(|(u, _)| u.clone())
            .collect();
        for url in urls {
            if let Some(t) = self.targets.get(&url)
                && let Some(start) = t.last_start
            {
                let due = (start + self.gap_after(t, &plan)).max(now);
                if let Some(t) = self.targets.get_mut(&url) {
                    t.due = due;
                }
            }
            self.enqueue(&url);
        }
        changed.then_some(plan)
    }

    /// The earliest valid due time of a queue (dropping entries that are out of date).
    fn head(
        queue: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
        targets: &HashMap<String, Target>,
    ) -> Option<(Instant, bool, String)> {
        while let Some(Reverse((due, seq, url))) = queue.peek() {
            match targets.get(url) {
                Some(t) if t.seq == *seq && !t.in_flight => {
                    // Warm-up scrapes (the first two) are not held back by the budget.
                    return Some((*due, t.started < 2, url.clone()));
                }
                _ => {
                    queue.pop();
                }
            }
        }
        None
    }

    /// Books the start of a scrape of `url` at `now`.
    fn begin(&mut self, url: &str, now: Instant) -> Option<&mut Target> {
        let t = self.targets.get_mut(url)?;
        t.started += 1;
        t.last_start = Some(now);
        t.in_flight = true;
        Some(t)
    }

    /// Books the end of a scrape of `url` at `now` and queues its next one.
    fn finish(&mut self, url: &str, ok: bool, clusters: ClustersMemo, now: Instant) {
        let plan = self.plan();
        let Some(gap) = self.targets.get(url).map(|t| self.gap_after(t, &plan)) else {
            return;
        };
        let Some(t) = self.targets.get_mut(url) else {
            return;
        };
        t.in_flight = false;
        t.task = None;
        t.failures = if ok { 0 } else { t.failures.saturating_add(1) };
        t.clusters = clusters;
        let start = t.last_start.unwrap_or(now);
        // A good scrape keeps its rhythm; a failed one (perhaps after the whole deadline)
        // waits from now, so a hung sidecar is not asked back to back, and longer after
        // each further failure.
        t.due = if ok {
            (start + gap).max(now)
        } else {
            now + gap * failure_backoff(t.failures)
        };
        self.enqueue(url);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.refilled_at = now;
        self.tokens =
            (self.tokens + elapsed * self.config.max_scrapes_per_sec).min(burst(&self.config));
    }

    /// The next URL to scrape now, focused first, if a slot of its kind is free (`free`:
    /// healthy and suspect slots); `Err(when)`: nothing before `when` (`None`: nothing
    /// queued, or every healthy slot taken — a finished scrape wakes the scheduler). A
    /// suspect sidecar without a free suspect slot waits a base interval; budget tokens are
    /// taken only for a scrape that starts, so a backlog never queues up behind the slots.
    fn next_due(&mut self, now: Instant, free: Free) -> Result<String, Option<Instant>> {
        self.refill(now);
        let mut wake: Option<Instant> = None;
        for focused in [true, false] {
            loop {
                let queue = if focused {
                    &mut self.focused_queue
                } else {
                    &mut self.other_queue
                };
                let Some((due, warm_up, url)) = Self::head(queue, &self.targets) else {
                    break;
                };
                if due > now {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                    break;
                }
                let suspect = self.targets.get(&url).is_some_and(|t| t.failures > 0);
                if suspect && free.suspect == 0 {
                    queue.pop();
                    let later = now + self.config.scrape_interval;
                    if let Some(t) = self.targets.get_mut(&url) {
                        t.due = later;
                    }
                    self.enqueue(&url);
                    continue;
                }
                if !suspect && free.healthy == 0 {
                    break;
                }
                if !warm_up && self.tokens < 1.0 {
                    let rate = self.config.max_scrapes_per_sec.max(1e-3);
                    let when = now + Duration::from_secs_f64((1.0 - self.tokens) / rate);
                    wake = Some(wake.map_or(when, |w| w.min(when)));
                    break;
                }
                queue.pop();
                if !warm_up {
                    self.tokens -= 1.0;
                }
                return Ok(url);
            }
        }
        Err(wake)
    }
}

/// Free scrape slots, by kind.
#[derive(Debug, Clone, Copy)]
struct Free {
    healthy: usize,
    suspect: usize,
}

/// What a paced wake does with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Wake the UI now.
    Now,
    /// Wake it at this time (the end of the period).
    At(Instant),
    /// A wake is already scheduled.
    Nothing,
}

/// The state of a paced wake: when it last woke the UI, and whether one is scheduled.
#[derive(Debug, Default)]
struct PaceState {
    last: Option<Instant>,
    scheduled: bool,
}

impl PaceState {
    fn call(&mut self, now: Instant, period: Duration) -> Pace {
        if self.scheduled {
            return Pace::Nothing;
        }
        match self.last {
            Some(last) if now < last + period => {
                self.scheduled = true;
                Pace::At(last + period)
            }
            _ => {
                self.last = Some(now);
                Pace::Now
            }
        }
    }

    fn fired(&mut self, now: Instant) {
        self.scheduled = false;
        self.last = Some(now);
    }
}

/// `wake`, called at most once per `period` (milliseconds, may change): a call within the
/// period after the last wake schedules one wake at its end (further calls until then add
/// nothing).
fn paced(wake: Wake, period_ms: Arc<AtomicU64>) -> Wake {
    fn lock(s: &std::sync::Mutex<PaceState>) -> std::sync::MutexGuard<'_, PaceState> {
        s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    let state = Arc::new(std::sync::Mutex::new(PaceState::default()));
    Arc::new(move || {
        let period = Duration::from_millis(period_ms.load(Ordering::Relaxed));
        let pace = lock(&state).call(Instant::now(), period);
        match pace {
            Pace::Now => wake(),
            Pace::At(at) => {
                let (state, wake) = (Arc::clone(&state), Arc::clone(&wake));
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    lock(&state).fired(Instant::now());
                    wake();
                });
            }
            Pace::Nothing => {}
        }
    })
}

fn burst(config: &IoConfig) -> f64 {
    (config.max_scrapes_per_sec * BURST_SECS).max(1.0)
}

/// The scrape scheduler: follows the registry's stats URLs (`url → service`) and the
/// view's focus, and scrapes (see the module docs). Ends when the UI is gone.
pub(super) async fn run(
    mut urls_rx: watch::Receiver<BTreeMap<String, String>>,
    mut focus_rx: watch::Receiver<Option<BTreeSet<String>>>,
    http: reqwest::Client,
    config: IoConfig,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let wake_period_ms = Arc::new(AtomicU64::new(
        wake_period(config.scrape_interval).as_millis() as u64,
    ));
    let wake = paced(wake, Arc::clone(&wake_period_ms));
    let slots = Slots::new(config.max_concurrent_scrapes);
    let mut sched = Scheduler::new(config);
    let mut running: JoinSet<Done> = JoinSet::new();
    let mut urls_open = true;
    let mut focus_open = true;
    let mut retier_due: Option<Instant> = Some(Instant::now());
    let mut last_retier: Option<Instant> = None;
    sched.focus.clone_from(&focus_rx.borrow_and_update());
    sched.sync_urls(&urls_rx.borrow_and_update().clone(), Instant::now());
    loop {
        let now = Instant::now();
        if retier_due.is_some_and(|t| t <= now) {
            retier_due = None;
            last_retier = Some(now);
            if let Some(plan) = sched.retier(now) {
                let focused = sched.targets.values().filter(|t| t.focused).count();
                tracing::info!(
                    "scrape plan: {} sidecars, {focused} focused every {:?}, the others every {:?}",
                    sched.targets.len(),
                    plan.focused_interval,
                    plan.other_interval
                );
                wake_period_ms.store(
                    wake_period(plan.focused_interval).as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !emit(&tx, &wake, IoEvent::ScrapePlan(plan)).await {
                    return;
                }
            }
        }
        // Start every scrape that is due (and allowed by the budget and the slots).
        let wake_at = loop {
            let free = Free {
                healthy: slots.healthy.available_permits(),
                suspect: slots.suspect.available_permits(),
            };
            match sched.next_due(Instant::now(), free) {
                Ok(url) => start_scrape(&mut sched, &slots, &mut running, &url, &http, &tx, &wake),
                Err(when) => break when,
            }
        };
        let wake_at = match (wake_at, retier_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            changed = urls_rx.changed(), if urls_open => {
                if changed.is_err() {
                    urls_open = false;
                    continue;
                }
                let urls = urls_rx.borrow_and_update().clone();
                sched.sync_urls(&urls, Instant::now());
                retier_due = Some(Instant::now());
            }
            changed = focus_rx.changed(), if focus_open => {
                if changed.is_err() {
                    focus_open = false;
                    continue;
                }
                sched.focus.clone_from(&focus_rx.borrow_and_update());
                let now = Instant::now();
                let earliest = last_retier.map_or(now, |t| (t + FOCUS_DEBOUNCE).max(now));
                retier_due = Some(retier_due.map_or(earliest, |t| t.min(earliest)));
            }
            Some(joined) = running.join_next(), if !running.is_empty() => {
                // A cancelled task is a sidecar the registry dropped: nothing to do.
                let Ok(done) = joined else { continue };
                if !done.alive {
                    return;
                }
                finish_scrape(&mut sched, done);
            }
            () = sleep_until_opt(wake_at) => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts one scrape of `url` as its own task.
fn start_scrape(
    sched: &mut Scheduler,
    slots: &Slots,
    running: &mut JoinSet<Done>,
    url: &str,
    http: &reqwest::Client,
    tx: &mpsc::Sender<IoEvent>,
    wake: &Wake,
) {
    let filter = sched.config.filter_stats;
    let timeout = sched.config.scrape_timeout;
    let interval = sched.plan().focused_interval;
    let Some(t) = sched.begin(url, Instant::now()) else {
        return;
    };
    let pool = if t.failures > 0 {
        &slots.suspect
    } else {
        &slots.healthy
    };
    // `next_due` saw a free slot, and only this task takes them.
    let Ok(permit) = Arc::clone(pool).try_acquire_owned() else {
        t.in_flight = false;
        t.started -= 1;
        let url = url.to_owned();
        sched.enqueue(&url);
        return;
    };
    let job = Job {
        url: url.to_owned(),
        request_url: if filter {
            stats_request_url(url)
        } else {
            url.to_owned()
        },
        clusters_url: clusters_url(url),
        clusters: t.clusters.clone(),
        timeout,
        hosts_refresh: t.focused.then(|| CLUSTERS_REFRESH.max(interval * 10)),
    };
    let handle = running.spawn(scrape_once(
        job,
        permit,
        http.clone(),
        tx.clone(),
        Arc::clone(wake),
    ));
    t.task = Some(handle);
}

/// Books a finished scrape and queues the sidecar's next one.
fn finish_scrape(sched: &mut Scheduler, done: Done) {
    sched.finish(&done.url, done.ok, done.clusters, Instant::now());
}

/// One scrape to make.
struct Job {
    /// The sidecar's stats URL (`Meta.metrics_url`): the key of its events.
    url: String,
    /// What is fetched (with `usedonly` and `filter`).
    request_url: String,
    clusters_url: Option<String>,
    clusters: ClustersMemo,
    timeout: Duration,
    /// Fetch the host list again when the last one is this old (`None`: only when the
    /// gauges move).
    hosts_refresh: Option<Duration>,
}

/// Membership and ejection gauges of a scrape: when they move, the host list may have.
fn membership_signature(scrape: &SidecarScrape) -> u64 {
    let mut h = DefaultHasher::new();
    for c in &scrape.clusters {
        c.id.hash(&mut h);
        (c.membership_healthy, c.membership_total, c.ejections_active).hash(&mut h);
    }
    h.finish()
}

/// Scrapes one sidecar (stats, then maybe `/clusters`) within one slot, and emits the
/// events.
async fn scrape_once(
    job: Job,
    _permit: tokio::sync::OwnedSemaphorePermit,
    http: reqwest::Client,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) -> Done {
    let Job {
        url,
        request_url,
        clusters_url,
        mut clusters,
        timeout,
        hosts_refresh,
    } = job;
    // Errors name the registered URL, not the long filtered one.
    let body = fetch_text_as(&http, &request_url, &url, timeout, MAX_STATS_BYTES).await;
    let at = std::time::Instant::now();
    let result = match body {
        Ok(text) => parse_envoy_stats(&text)
            .map_err(|e| format!("bad stats body: {e} ({})", strip_userinfo(&url))),
        Err(e) => Err(e.to_string()),
    };
    match &result {
        Err(e) => tracing::debug!("scrape failed: {e}"),
        Ok(scrape) if !clusters.lies_logged => {
            let bad: u32 = scrape.clusters.iter().map(|c| c.bad_values).sum();
            if scrape.duplicate_series > 0 || bad > 0 {
                clusters.lies_logged = true;
                tracing::warn!(
                    "sidecar {}: {} repeated series (the first of each counts), {bad} counter \
                     values that are not counters (NaN, negative, infinite or too large: those \
                     windows are gaps); logged once for this sidecar",
                    strip_userinfo(&url),
                    scrape.duplicate_series
                );
            }
        }
        Ok(_) => {}
    }
    let ok = result.is_ok();
    let signature = result.as_ref().ok().map(membership_signature);
    let event = IoEvent::Scrape {
        url: url.clone(),
        at,
        result,
    };
    if !emit(&tx, &wake, event).await {
        return Done {
            url,
            ok,
            clusters,
            alive: false,
        };
    }
    // Hosts: after a good scrape only (a dead sidecar is reported once, by its stats).
    let now = Instant::now();
    let wanted = match (&clusters_url, signature) {
        (Some(_), Some(sig)) => {
            clusters.paused_until.is_none_or(|t| now >= t)
                && (clusters.signature != Some(sig)
                    || clusters.fetched_at.is_none_or(|t| {
                        hosts_refresh.is_some_and(|age| now.saturating_duration_since(t) >= age)
                    }))
        }
        _ => false,
    };
    let (Some(curl), true, Some(sig)) = (clusters_url, wanted, signature) else {
        return Done {
            url,
            ok,
            clusters,
            alive: true,
        };
    };
    let body = fetch_text(&http, &curl, timeout, MAX_STATS_BYTES).await;
    let at = std::time::Instant::now();
    let result = match body {
        Ok(text) => parse_clusters_json(text.as_bytes())
            .map_err(|e| format!("bad clusters body: {e} ({})", strip_userinfo(&curl))),
        Err(FetchError::Status { status: 404, .. }) => {
            tracing::debug!(
                "no /clusters on this sidecar, asking again in {CLUSTERS_404_PAUSE:?} ({})",
                strip_userinfo(&curl)
            );
            clusters.paused_until = Some(Instant::now() + CLUSTERS_404_PAUSE);
            return Done {
                url,
                ok,
                clusters,
                alive: true,
            };
        }
        Err(e) => Err(e.to_string()),
    };
    clusters.paused_until = None;
    if result.is_ok() {
        clusters.signature = Some(sig);
        clusters.fetched_at = Some(Instant::now());
    } else {
        // Ask again after the next good scrape.
        clusters.signature = None;
    }
    let event = IoEvent::Clusters {
        url: url.clone(),
        at,
        result,
    };
    let alive = emit(&tx, &wake, event).await;
    Done {
        url,
        ok,
        clusters,
        alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_urls_get_usedonly_and_the_filter() {
        let url = stats_request_url("http://127.0.0.1:19000/stats/prometheus");
        assert!(
            url.starts_with(
                "http://127.0.0.1:19000/stats/prometheus?usedonly&filter=%5Ecluster%5C."
            )
        );
        assert!(!url.contains('+') && !url.contains('|') && !url.contains('\\'));
        // Consul's envoy_prometheus_bind_addr listener.
        assert!(stats_request_url("http://10.0.0.1:20200/metrics").contains("?usedonly&filter="));
        // The operator's own parameters stay and win.
        assert_eq!(
            stats_request_url("http://h:1/stats/prometheus?usedonly&filter=x"),
            "http://h:1/stats/prometheus?usedonly&filter=x"
        );
        let u = stats_request_url("http://h:1/admin/stats/prometheus?text_readouts");
        assert!(u.starts_with("http://h:1/admin/stats/prometheus?text_readouts&usedonly&filter="));
        // Not an Envoy stats path: left alone.
        assert_eq!(
            stats_request_url("http://h:1/stats/prometheus/x"),
            "http://h:1/stats/prometheus/x"
        );
    }

    #[test]
    fn the_filter_keeps_the_parsed_stats_and_drops_the_twins() {
        let re = regex::Regex::new(ENVOY_STATS_FILTER).unwrap();
        let consul = "cluster.v1.identity.default.dc1.internal.c3f1b6a2-8d4e.consul";
        for stat in [
            "upstream_rq_total",
            "upstream_rq_completed",
            "upstream_rq_2xx",
            "upstream_rq_5xx",
            "upstream_rq_pending_overflow",
            "upstream_cx_overflow",
            "upstream_rq_time",
            "membership_healthy",
            "membership_total",
            "outlier_detection.ejections_active",
            "circuit_breakers.default.rq_open",
            "circuit_breakers.default.rq_pending_open",
            "circuit_breakers.default.cx_open",
        ] {
            for cluster in [
                consul,
                "cluster.backend",
                "cluster.local_app",
                "cluster.a.b",
            ] {
                let name = format!("{cluster}.{stat}");
                assert!(re.is_match(&name), "{name} must be kept");
            }
        }
        assert!(re.is_match("server.uptime"));
        for dropped in [
            format!("{consul}.external.upstream_rq_2xx"),
            format!("{consul}.internal.upstream_rq_time"),
            "cluster.backend.external.upstream_rq_completed".to_owned(),
            format!("{consul}.upstream_rq_200"),
            format!("{consul}.upstream_rq_timeout"),
            format!("{consul}.upstream_cx_total"),
            format!("{consul}.membership_degraded"),
            format!("{consul}.outlier_detection.ejections_enforced_total"),
            format!("{consul}.circuit_breakers.default.remaining_rq"),
            format!("{consul}.circuit_breakers.high.rq_open"),
            "server.live".to_owned(),
            "cluster_manager.active_clusters".to_owned(),
            "http.public_listener.downstream_rq_2xx".to_owned(),
        ] {
            assert!(!re.is_match(&dropped), "{dropped} must be dropped");
        }
        // Segments that only look like the twins are kept.
        for seg in [
            "externa",
            "externals",
            "exteRnal",
            "intern4l",
            "xnternal",
            "enternal",
        ] {
            let name = format!("cluster.a.{seg}.upstream_rq_total");
            assert!(re.is_match(&name), "{name}");
        }
    }

    #[test]
    fn small_meshes_get_the_base_interval_and_others_four_times_less() {
        let base = Duration::from_secs(1);
        assert_eq!(
            tier_intervals(9, 0, base, 4, 400.0),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
        assert_eq!(
            tier_intervals(3, 6, base, 4, 400.0),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
    }

    #[test]
    fn a_large_mesh_stretches_intervals_to_the_budget() {
        let base = Duration::from_secs(1);
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
        // 20,000 sidecars, none focused: 400/s → every 50 s.
        let (_, other) = tier_intervals(0, 20_000, base, 4, 400.0);
        assert_eq!(other, Duration::from_secs(50));
        // All focused (the view shows everything): the whole budget, 50 s too.
        let (focused, _) = tier_intervals(20_000, 0, base, 4, 400.0);
        assert_eq!(focused, Duration::from_secs(50));
        // 200 focused of 20,000: focused keep their 1 s; the rest share what is left.
        let (f, o) = tier_intervals(200, 19_800, base, 4, 400.0);
        assert_eq!(f, Duration::from_secs(1));
        assert!(rate(200, f) + rate(19_800, o) <= 400.0 + 1e-9);
        assert!(o > f * 4);
        // 1,000 focused: they take 3/4 of the budget, the others a quarter.
        let (f, o) = tier_intervals(1_000, 19_000, base, 4, 400.0);
        assert!((rate(1_000, f) - 300.0).abs() < 10.0, "{f:?}");
        assert!(rate(1_000, f) + rate(19_000, o) <= 400.0 + 1e-9);
        assert!(o >= f * 4);
        // No budget: nominal intervals.
        assert_eq!(
            tier_intervals(20_000, 20_000, base, 4, 0.0),
            (Duration::from_secs(1), Duration::from_secs(4))
        );
    }

    #[test]
    fn the_plan_answers_per_service() {
        let plan = ScrapePlan {
            focus: Some(BTreeSet::from(["a".to_owned()])),
            focused_interval: Duration::from_secs(1),
            other_interval: Duration::from_secs(4),
        };
        assert_eq!(plan.interval_for("a"), Duration::from_secs(1));
        assert_eq!(plan.interval_for("b"), Duration::from_secs(4));
        let all = ScrapePlan {
            focus: None,
            ..plan
        };
        assert_eq!(all.interval_for("b"), Duration::from_secs(1));
    }

    #[test]
    fn wakes_are_paced_and_the_last_one_still_comes() {
        let period = Duration::from_millis(100);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut st = PaceState::default();
        assert_eq!(st.call(t0, period), Pace::Now, "the first at once");
        assert_eq!(
            st.call(ms(10), period),
            Pace::At(ms(100)),
            "then at the period's end"
        );
        for n in 11..99 {
            assert_eq!(st.call(ms(n), period), Pace::Nothing);
        }
        st.fired(ms(100));
        assert_eq!(st.call(ms(150), period), Pace::At(ms(200)));
        st.fired(ms(200));
        assert_eq!(
            st.call(ms(900), period),
            Pace::Now,
            "after a quiet period: at once"
        );
        assert_eq!(
            wake_period(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        assert_eq!(wake_period(Duration::from_millis(100)), MIN_WAKE_PERIOD);
        assert_eq!(wake_period(Duration::from_secs(50)), MAX_WAKE_PERIOD);
    }

    /// Drives the scheduler through virtual time (scrapes finish at once): how many scrapes
    /// start in each second, for `sidecars` sidecars.
    fn simulate(sidecars: usize, budget: f64, secs: u64) -> Vec<usize> {
        let config = IoConfig {
            max_scrapes_per_sec: budget,
            ..IoConfig::default()
        };
        let mut sched = Scheduler::new(config);
        let t0 = Instant::now();
        sched.refilled_at = t0;
        let urls: BTreeMap<String, String> = (0..sidecars)
            .map(|i| {
                (
                    format!("http://s{i}/stats/prometheus"),
                    format!("svc-{}", i / 10),
                )
            })
            .collect();
        sched.sync_urls(&urls, t0);
        sched.retier(t0);
        let mut per_sec = vec![0usize; secs as usize];
        let step = Duration::from_millis(10);
        let mut now = t0;
        // Scrapes take 50 ms; at most 32 in flight is not modelled (no slots here).
        let mut in_flight: Vec<(Instant, String)> = Vec::new();
        while now < t0 + Duration::from_secs(secs) {
            in_flight.retain(|(end, url)| {
                let done = *end <= now;
                if done {
                    sched.finish(url, true, ClustersMemo::default(), now);
                }
                !done
            });
            let free = Free {
                healthy: usize::MAX,
                suspect: usize::MAX,
            };
            while let Ok(url) = sched.next_due(now, free) {
                sched.begin(&url, now);
                in_flight.push((now + Duration::from_millis(50), url));
                per_sec[(now - t0).as_secs() as usize] += 1;
            }
            now += step;
        }
        per_sec
    }

    #[test]
    fn after_the_warm_up_the_budget_holds_and_scrapes_are_spread() {
        // 2,000 sidecars at 100 scrapes/s: every 20 s each.
        let per_sec = simulate(2000, 100.0, 60);
        // Two scrapes each at once (the budget adds its own on top).
        let warm_up: usize = per_sec[..3].iter().sum();
        assert!((4000..=4000 + 300).contains(&warm_up), "{per_sec:?}");
        for (s, n) in per_sec.iter().enumerate().skip(3) {
            assert!(*n <= 100 + 5, "second {s}: {n} scrapes ({per_sec:?})");
        }
        // Spread: every second after the warm-up has work, none is idle.
        assert!(per_sec[3..].iter().all(|n| *n >= 60), "{per_sec:?}");
        // Small meshes: nominal intervals, the budget is not in the way.
        let small = simulate(9, 400.0, 10);
        assert!(small[3..].iter().all(|n| *n == 9), "{small:?}");
    }

    #[test]
    fn a_sidecar_that_keeps_failing_is_asked_less_often_and_at_once_again_when_it_recovers() {
        assert_eq!(
            (1..=6).map(failure_backoff).collect::<Vec<_>>(),
            [1, 2, 4, 4, 4, 4]
        );
        let mut sched = Scheduler::new(IoConfig::default());
        let base = sched.config.scrape_interval;
        let t0 = Instant::now();
        let url = "http://s0/stats/prometheus".to_owned();
        let urls: BTreeMap<String, String> = [(url.clone(), "svc".to_owned())].into();
        sched.sync_urls(&urls, t0);
        let due = |s: &Scheduler| s.targets[&url].due;
        let mut now = t0;
        let mut waits = Vec::new();
        for ok in [false, false, false, false, true, true] {
            sched.begin(&url, now);
            sched.finish(&url, ok, ClustersMemo::default(), now);
            waits.push((due(&sched) - now).as_secs_f64() / base.as_secs_f64());
            now = due(&sched);
        }
        assert_eq!(waits, [1.0, 2.0, 4.0, 4.0, 1.0, 1.0], "{waits:?}");
        assert_eq!(sched.targets[&url].failures, 0);
    }

    #[test]
    fn suspect_slots_are_an_eighth() {
        let s = Slots::new(32);
        assert_eq!(s.healthy.available_permits(), 28);
        assert_eq!(s.suspect.available_permits(), 4);
        let s = Slots::new(4);
        assert_eq!(s.healthy.available_permits(), 3);
        assert_eq!(s.suspect.available_permits(), 1);
        let s = Slots::new(1);
        assert!(Arc::ptr_eq(&s.healthy, &s.suspect));
    }
}

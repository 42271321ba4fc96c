//! The io tasks: registry poller, sidecar scrapers (one per stats URL) or the Prometheus
//! poller, command handler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::{Command, DemoFault, DemoInstanceState, FetchError, IoEvent, fetch_text};
use crate::demo::DemoSpine;
use crate::metrics::prometheus::PrometheusSource;
use crate::metrics::{parse_clusters_json, parse_envoy_stats};
use crate::registry::{FeedUpdate, FollowContext, Registry};

/// Wakes the UI after events were sent (`ctx.request_repaint_after(~10 ms)` in the app).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Capacity of the event channel: bounded, producers wait when the UI falls behind.
const EVENT_CAPACITY: usize = 1024;
/// Capacity of the command channel.
const COMMAND_CAPACITY: usize = 64;
/// Largest sidecar stats (and clusters) body read.
const MAX_STATS_BYTES: usize = 32 * 1024 * 1024;
/// How long a sidecar whose `/clusters` answered 404 is not asked again.
const CLUSTERS_404_PAUSE: Duration = Duration::from_mins(5);

/// The sidecar's Envoy `/clusters?format=json` URL, on the same base as its stats URL
/// (`…/stats/prometheus[?…]` → `…/clusters?format=json`); `None` when the stats URL is not
/// Envoy's admin path (e.g. Consul's `envoy_prometheus_bind_addr` listener at `/metrics`).
#[must_use]
pub fn clusters_url(stats_url: &str) -> Option<String> {
    let path = stats_url.split(['?', '#']).next().unwrap_or_default();
    let base = path.strip_suffix("/stats/prometheus")?;
    Some(format!("{base}/clusters?format=json"))
}

/// Intervals and limits of the io layer.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// Registry poll interval.
    pub registry_interval: Duration,
    /// Sidecar scrape interval.
    pub scrape_interval: Duration,
    /// Deadline of one scrape, body included.
    pub scrape_timeout: Duration,
    /// Refuse every write (read-only mode).
    pub read_only: bool,
    /// Query this Prometheus server for lane metrics instead of scraping the sidecars.
    pub prometheus: Option<PrometheusSource>,
    /// The audit log of weight changes (`None`: records stay in memory, e.g. tests).
    pub audit_log: Option<std::path::PathBuf>,
    /// Registry kind and address, as the audit lines name it.
    pub registry_label: String,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            registry_interval: Duration::from_secs(1),
            scrape_interval: Duration::from_secs(1),
            scrape_timeout: Duration::from_secs(2),
            read_only: false,
            prometheus: None,
            audit_log: None,
            registry_label: String::new(),
        }
    }
}

/// The UI's ends of the channels. Dropping it stops the io tasks.
pub struct IoHandle {
    /// Events from the sources; drain with `try_recv` in `logic()`.
    pub events: mpsc::Receiver<IoEvent>,
    /// Commands to the io layer.
    pub commands: mpsc::Sender<Command>,
    /// The running tasks.
    pub tasks: IoTasks,
}

/// The io tasks; dropping this aborts them.
pub struct IoTasks(Vec<JoinHandle<()>>);

impl Drop for IoTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Sends an event and wakes the UI; `false` when the UI is gone.
pub(super) async fn emit(tx: &mpsc::Sender<IoEvent>, wake: &Wake, event: IoEvent) -> bool {
    let ok = tx.send(event).await.is_ok();
    wake();
    ok
}

/// Starts the io tasks on the current tokio runtime.
pub fn spawn<R: Registry + 'static>(
    registry: R,
    demo: Option<DemoSpine>,
    config: &IoConfig,
    wake: &Wake,
) -> IoHandle {
    let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let registry = Arc::new(registry);
    let refresh = Arc::new(Notify::new());
    let (urls_tx, urls_rx) = watch::channel(BTreeSet::<String>::new());
    let http = reqwest::Client::builder()
        .connect_timeout(config.scrape_timeout)
        .timeout(config.scrape_timeout)
        .no_proxy()
        .build()
        .unwrap_or_default();

    let mut tasks = vec![
        tokio::spawn(poll_registry(
            Arc::clone(&registry),
            config.registry_interval,
            Arc::clone(&refresh),
            urls_tx,
            event_tx.clone(),
            Arc::clone(wake),
        )),
        match &config.prometheus {
            None => tokio::spawn(supervise_scrapers(
                urls_rx,
                http,
                config.clone(),
                event_tx.clone(),
                Arc::clone(wake),
            )),
            Some(source) => tokio::spawn(poll_prometheus(
                source.clone(),
                urls_rx,
                event_tx.clone(),
                Arc::clone(wake),
            )),
        },
    ];
    // The split writer and the driver markers, each behind its own channel.
    let operator = super::audit::Operator::current();
    let audit = super::audit::AuditLog::new(config.audit_log.clone());
    let history = audit.tail(super::audit::TAIL_LINES);
    let (write_tx, write_rx) = mpsc::channel(COMMAND_CAPACITY);
    let writer = super::writer::Writer {
        read_only: config.read_only,
        audit,
        operator: operator.clone(),
        registry_label: config.registry_label.clone(),
        refresh: Arc::clone(&refresh),
    };
    tasks.push(tokio::spawn(writer.run(
        Arc::clone(&registry),
        write_rx,
        event_tx.clone(),
        Arc::clone(wake),
    )));
    let (driver_tx, driver_rx) = mpsc::channel(COMMAND_CAPACITY);
    tasks.push(tokio::spawn(super::driver::run(
        Arc::clone(&registry),
        config.read_only,
        operator,
        driver_rx,
        event_tx.clone(),
        Arc::clone(wake),
    )));
    tasks.push(tokio::spawn(handle_commands(
        Arc::clone(&registry),
        demo.clone(),
        refresh,
        Routes {
            writes: write_tx,
            drivers: driver_tx,
        },
        command_rx,
        event_tx.clone(),
        Arc::clone(wake),
    )));
    if !history.is_empty() {
        // The audit panel starts with the file's last lines.
        let tx = event_tx.clone();
        let wake = Arc::clone(wake);
        tasks.push(tokio::spawn(async move {
            for record in history {
                if !emit(&tx, &wake, IoEvent::Audited(record)).await {
                    return;
                }
            }
        }));
    }
    {
        // Tell the UI which datacenters the registry offers, once, at start.
        let registry = Arc::clone(&registry);
        let tx = event_tx.clone();
        let wake = Arc::clone(wake);
        tasks.push(tokio::spawn(async move {
            let event = datacenters_event(registry.as_ref(), None).await;
            emit(&tx, &wake, event).await;
        }));
    }
    if let Some(demo) = demo {
        // Tell the UI which demo instances exist, once, at start.
        let tx = event_tx;
        let wake = Arc::clone(wake);
        tasks.push(tokio::spawn(async move {
            let event = IoEvent::DemoChanged {
                instances: demo.instances(),
                error: None,
            };
            emit(&tx, &wake, event).await;
        }));
    }
    IoHandle {
        events,
        commands,
        tasks: IoTasks(tasks),
    }
}

async fn poll_registry<R: Registry>(
    registry: Arc<R>,
    interval: Duration,
    refresh: Arc<Notify>,
    urls_tx: watch::Sender<BTreeSet<String>>,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let (feed_tx, mut feed_rx) = mpsc::channel::<FeedUpdate>(4);
    let follow = registry.follow(FollowContext {
        interval,
        refresh,
        out: feed_tx,
    });
    let forward = async move {
        // Log a failure when it starts or changes, and the recovery; not every retry.
        let mut failing: Option<String> = None;
        while let Some(update) = feed_rx.recv().await {
            let at = Instant::now();
            let result = match update.result {
                Ok(snapshot) => {
                    if failing.take().is_some() {
                        tracing::info!("registry answers again");
                    }
                    if let Some(snapshot) = &snapshot {
                        let urls: BTreeSet<String> = snapshot
                            .services
                            .iter()
                            .flat_map(|s| s.instances.iter())
                            .filter_map(|i| i.metrics_url.clone())
                            .collect();
                        urls_tx.send_if_modified(|cur| {
                            if *cur == urls {
                                false
                            } else {
                                *cur = urls;
                                true
                            }
                        });
                    }
                    Ok(snapshot)
                }
                Err(e) => {
                    let text = e.to_string();
                    if failing.as_deref() != Some(text.as_str()) {
                        tracing::warn!("registry read failed (retrying): {text}");
                        failing = Some(text.clone());
                    }
                    Err(text)
                }
            };
            let event = IoEvent::Registry {
                at,
                result,
                next_within: update.next_within,
            };
            if !emit(&tx, &wake, event).await {
                return;
            }
        }
    };
    // `forward` ends when the UI is gone; dropping `feed_rx` then ends `follow`.
    tokio::select! {
        () = follow => {}
        () = forward => {}
    }
}

/// Keeps one scraper task per stats URL the registry lists.
async fn supervise_scrapers(
    mut urls_rx: watch::Receiver<BTreeSet<String>>,
    http: reqwest::Client,
    config: IoConfig,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let mut running: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
    loop {
        let urls = urls_rx.borrow_and_update().clone();
        running.retain(|url, task| {
            let keep = urls.contains(url);
            if !keep {
                task.abort();
            }
            keep
        });
        for url in urls {
            if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(url) {
                let task = tokio::spawn(scrape_loop(
                    slot.key().clone(),
                    http.clone(),
                    config.clone(),
                    tx.clone(),
                    Arc::clone(&wake),
                ));
                slot.insert(task);
            }
        }
        if urls_rx.changed().await.is_err() {
            break;
        }
    }
    for task in running.values() {
        task.abort();
    }
}

/// Scrapes one sidecar every interval; a slow sidecar delays only itself.
async fn scrape_loop(
    url: String,
    http: reqwest::Client,
    config: IoConfig,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let mut ticker = tokio::time::interval(config.scrape_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clusters = clusters_url(&url);
    // Until when a sidecar without `/clusters` (404) is left alone.
    let mut clusters_paused_until: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        let body = fetch_text(&http, &url, config.scrape_timeout, MAX_STATS_BYTES).await;
        let at = Instant::now();
        let stats_ok = body.is_ok();
        let result = match body {
            Ok(text) => {
                parse_envoy_stats(&text).map_err(|e| format!("bad stats body: {e} ({url})"))
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::debug!("scrape failed: {e}");
        }
        if !emit(
            &tx,
            &wake,
            IoEvent::Scrape {
                url: url.clone(),
                at,
                result,
            },
        )
        .await
        {
            return;
        }
        // Hosts: after a good scrape only (a dead sidecar is reported once, by its stats).
        let Some(clusters) = clusters.as_deref() else {
            continue;
        };
        if !stats_ok || clusters_paused_until.is_some_and(|t| tokio::time::Instant::now() < t) {
            continue;
        }
        let body = fetch_text(&http, clusters, config.scrape_timeout, MAX_STATS_BYTES).await;
        let at = Instant::now();
        let result = match body {
            Ok(text) => parse_clusters_json(text.as_bytes())
                .map_err(|e| format!("bad clusters body: {e} ({clusters})")),
            Err(FetchError::Status { status: 404, .. }) => {
                tracing::debug!(
                    "no /clusters on this sidecar, asking again in {CLUSTERS_404_PAUSE:?} ({clusters})"
                );
                clusters_paused_until = Some(tokio::time::Instant::now() + CLUSTERS_404_PAUSE);
                continue;
            }
            Err(e) => Err(e.to_string()),
        };
        clusters_paused_until = None;
        let event = IoEvent::Clusters {
            url: url.clone(),
            at,
            result,
        };
        if !emit(&tx, &wake, event).await {
            return;
        }
    }
}

/// Queries Prometheus every interval (four queries, whatever the number of services).
/// `_urls` keeps the registry's stats-URL channel open; the sidecars are not scraped.
async fn poll_prometheus(
    source: PrometheusSource,
    _urls: watch::Receiver<BTreeSet<String>>,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let timeout = super::prometheus::query_timeout(&source);
    let http = super::prometheus::client(timeout);
    let mut ticker = tokio::time::interval(source.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Log a failure when it starts or changes, and the recovery; not every retry.
    let mut failing: Option<String> = None;
    loop {
        ticker.tick().await;
        let result = super::prometheus::query_lanes(&http, &source)
            .await
            .map_err(|e| e.to_string());
        match (&result, &failing) {
            (Ok(_), Some(_)) => {
                tracing::info!("Prometheus answers again");
                failing = None;
            }
            (Err(e), last) if last.as_ref() != Some(e) => {
                tracing::warn!("{e}");
                failing = Some(e.clone());
            }
            _ => {}
        }
        let at = Instant::now();
        if !emit(&tx, &wake, IoEvent::LaneSamples { at, result }).await {
            return;
        }
    }
}

/// Where `handle_commands` forwards the commands other tasks carry out.
struct Routes {
    writes: mpsc::Sender<super::SplitWrite>,
    drivers: mpsc::Sender<super::driver::DriverRequest>,
}

async fn handle_commands<R: Registry>(
    registry: Arc<R>,
    demo: Option<DemoSpine>,
    refresh: Arc<Notify>,
    routes: Routes,
    mut rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    use super::driver::DriverRequest;
    while let Some(command) = rx.recv().await {
        let event = match command {
            Command::SetSplit(write) => {
                if routes.writes.send(write).await.is_err() {
                    return;
                }
                continue;
            }
            Command::ClaimDriver { service, what } => {
                if routes
                    .drivers
                    .send(DriverRequest::Claim { service, what })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Command::ReleaseDriver { service } => {
                if routes
                    .drivers
                    .send(DriverRequest::Release { service })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Command::DemoStop { instance_id } => {
                demo_control(demo.as_ref(), &instance_id, false).await
            }
            Command::DemoStart { instance_id } => {
                demo_control(demo.as_ref(), &instance_id, true).await
            }
            Command::DemoFault { instance_id, fault } => {
                demo_fault(demo.as_ref(), &instance_id, fault)
            }
            Command::RefreshNow => {
                refresh.notify_one();
                continue;
            }
            // The app handles a context switch (new io tasks) and plan controls itself.
            Command::SwitchContext(_) | Command::Plan { .. } => continue,
            Command::SetDatacenter(dc) => {
                let switched = registry.set_datacenter(&dc);
                match &switched {
                    Ok(()) => tracing::info!("datacenter: {dc}"),
                    Err(e) => tracing::warn!("datacenter {dc}: {e}"),
                }
                datacenters_event(registry.as_ref(), switched.err().map(|e| e.to_string())).await
            }
        };
        if !emit(&tx, &wake, event).await {
            return;
        }
    }
}

/// The registry's datacenters as an event (`error`: a failed switch, reported with it).
async fn datacenters_event<R: Registry>(registry: &R, error: Option<String>) -> IoEvent {
    match registry.datacenters().await {
        Ok(dcs) => IoEvent::Datacenters {
            current: dcs.current,
            known: dcs.known,
            error,
        },
        Err(e) => IoEvent::Datacenters {
            current: None,
            known: Vec::new(),
            error: Some(error.unwrap_or_else(|| format!("datacenters: {e}"))),
        },
    }
}

async fn demo_control(demo: Option<&DemoSpine>, id: &str, start: bool) -> IoEvent {
    let Some(demo) = demo else {
        return IoEvent::DemoChanged {
            instances: Vec::new(),
            error: Some("not in demo mode".into()),
        };
    };
    let result = if start {
        demo.start_instance(id).await
    } else {
        demo.stop_instance(id).await
    };
    let instances: Vec<DemoInstanceState> = demo.instances();
    IoEvent::DemoChanged {
        instances,
        error: result.err().map(|e| format!("{id}: {e}")),
    }
}

fn demo_fault(demo: Option<&DemoSpine>, id: &str, fault: DemoFault) -> IoEvent {
    let Some(demo) = demo else {
        return IoEvent::DemoChanged {
            instances: Vec::new(),
            error: Some("not in demo mode".into()),
        };
    };
    let result = demo.set_fault(id, fault);
    IoEvent::DemoChanged {
        instances: demo.instances(),
        error: result.err().map(|e| format!("{id}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_url_shares_the_stats_base() {
        assert_eq!(
            clusters_url("http://127.0.0.1:19000/stats/prometheus").as_deref(),
            Some("http://127.0.0.1:19000/clusters?format=json")
        );
        assert_eq!(
            clusters_url("https://10.0.1.12:19000/admin/stats/prometheus?usedonly").as_deref(),
            Some("https://10.0.1.12:19000/admin/clusters?format=json")
        );
        assert_eq!(clusters_url("http://10.0.1.12:20200/metrics"), None);
        assert_eq!(clusters_url("http://x/stats/prometheus/extra"), None);
    }
}

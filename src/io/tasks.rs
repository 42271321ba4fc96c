//! The io tasks: registry poller, sidecar scrape scheduler (`scrape.rs`) or the Prometheus
//! poller, command handler (with [`Command::Focus`] routed to the scheduler first).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::{Command, DemoFault, DemoInstanceState, IoEvent};
use crate::demo::DemoSpine;
use crate::metrics::prometheus::PrometheusSource;
use crate::registry::{FeedUpdate, FollowContext, Registry};

/// Wakes the UI after events were sent (`ctx.request_repaint_after(~10 ms)` in the app).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Capacity of the event channel: bounded, producers wait when the UI falls behind.
const EVENT_CAPACITY: usize = 1024;
/// Capacity of the command channel.
const COMMAND_CAPACITY: usize = 64;

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
    /// Scrape interval of the sidecars of focused services (visible or pinned; every
    /// service until the view says otherwise), when the budget allows it.
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
    /// Scrapes in flight at most (an eighth of them kept for sidecars that failed last).
    pub max_concurrent_scrapes: usize,
    /// Scrape budget: scrapes started per second at most, over all sidecars (intervals
    /// stretch to fit, see `scrape::tier_intervals`). A sidecar's first two scrapes are
    /// not counted.
    pub max_scrapes_per_sec: f64,
    /// Sidecars of services that are not focused are scraped this many times less often.
    pub unfocused_factor: u32,
    /// Ask Envoy for the stats the dashboard uses only (`?usedonly&filter=…`).
    pub filter_stats: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            registry_interval: Duration::from_secs(1),
            scrape_interval: Duration::from_secs(1),
            scrape_timeout: crate::net::limits::SIDECAR_TIMEOUT,
            read_only: false,
            prometheus: None,
            audit_log: None,
            registry_label: String::new(),
            max_concurrent_scrapes: 32,
            max_scrapes_per_sec: DEFAULT_SCRAPES_PER_SEC,
            unfocused_factor: 4,
            filter_stats: true,
        }
    }
}

/// Default scrape budget (scrapes per second); see the README's performance section.
pub const DEFAULT_SCRAPES_PER_SEC: f64 = 400.0;

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

/// Sends an event (its texts scrubbed of secrets, see [`IoEvent::scrub`]) and wakes the
/// UI; `false` when the UI is gone.
pub(super) async fn emit(tx: &mpsc::Sender<IoEvent>, wake: &Wake, mut event: IoEvent) -> bool {
    event.scrub();
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
    let (urls_tx, urls_rx) = watch::channel(BTreeMap::<String, String>::new());
    let (focus_tx, focus_rx) = watch::channel(None::<BTreeSet<String>>);
    let (inner_commands, inner_rx) = mpsc::channel(COMMAND_CAPACITY);
    // Keep-alive only for sidecars scraped often: with thousands of sidecars on as many
    // hosts, idle connections would otherwise pile up (one per sidecar).
    let idle = (config.scrape_interval * 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let http = reqwest::Client::builder()
        .connect_timeout(config.scrape_timeout)
        .timeout(config.scrape_timeout)
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(config.max_concurrent_scrapes.max(1))
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
            None => tokio::spawn(super::scrape::run(
                urls_rx,
                focus_rx,
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
        tokio::spawn(route_commands(command_rx, focus_tx, inner_commands)),
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
        inner_rx,
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
            if emit(&tx, &wake, event).await {
                let running = demo.registry_running();
                emit(
                    &tx,
                    &wake,
                    IoEvent::DemoRegistry {
                        running,
                        error: None,
                    },
                )
                .await;
            }
        }));
    }
    IoHandle {
        events,
        commands,
        tasks: IoTasks(tasks),
    }
}

/// Hands [`Command::Focus`] to the scrape scheduler (latest wins) and every other command
/// to [`handle_commands`].
async fn route_commands(
    mut rx: mpsc::Receiver<Command>,
    focus: watch::Sender<Option<BTreeSet<String>>>,
    out: mpsc::Sender<Command>,
) {
    while let Some(command) = rx.recv().await {
        match command {
            Command::Focus { services } => {
                focus.send_if_modified(|cur| {
                    let new = Some(services.into_iter().collect::<BTreeSet<String>>());
                    if *cur == new {
                        false
                    } else {
                        *cur = new;
                        true
                    }
                });
            }
            other => {
                if out.send(other).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn poll_registry<R: Registry>(
    registry: Arc<R>,
    interval: Duration,
    refresh: Arc<Notify>,
    urls_tx: watch::Sender<BTreeMap<String, String>>,
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
                        // Stats URL → service (the first service listing it).
                        let mut urls: BTreeMap<String, String> = BTreeMap::new();
                        for s in &snapshot.services {
                            for url in s.instances.iter().filter_map(|i| i.metrics_url.as_ref()) {
                                urls.entry(url.clone()).or_insert_with(|| s.name.clone());
                            }
                        }
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

/// Queries Prometheus every interval (four queries, whatever the number of services).
/// `_urls` keeps the registry's stats-URL channel open; the sidecars are not scraped.
async fn poll_prometheus(
    source: PrometheusSource,
    _urls: watch::Receiver<BTreeMap<String, String>>,
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
            Command::DemoRegistry { running } => demo_registry(demo.as_ref(), running).await,
            Command::RefreshNow => {
                refresh.notify_one();
                continue;
            }
            // The app handles a context switch (new io tasks) and plan controls itself; a
            // focus goes to the scrape scheduler before this task (`route_commands`).
            Command::SwitchContext(_) | Command::Plan { .. } | Command::Focus { .. } => continue,
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

async fn demo_registry(demo: Option<&DemoSpine>, running: bool) -> IoEvent {
    let Some(demo) = demo else {
        return IoEvent::DemoRegistry {
            running: false,
            error: Some("not in demo mode".into()),
        };
    };
    let result = if running {
        demo.start_registry().await
    } else {
        demo.stop_registry().await
    };
    IoEvent::DemoRegistry {
        running: demo.registry_running(),
        error: result.err().map(|e| format!("registry: {e}")),
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

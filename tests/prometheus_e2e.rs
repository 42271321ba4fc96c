//! Prometheus as the metrics source, for real: Debian's `prometheus` (`/usr/bin/prometheus`,
//! installed by `scripts/install-deps.sh`) is started by the test on a free 127.0.0.1 port
//! with a temporary config and data dir, scraping the embedded demo spine's sidecars every
//! 1 s, and stopped by PID. Its per-lane rates, 5xx ratios, p99 and breaker states are
//! compared with direct scrapes of the same sidecars over the same period, and the io path
//! (`--metrics prometheus://…`) is driven until Prometheus goes away. One test at a time:
//! each starts a whole spine and a Prometheus.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::prometheus::{PrometheusError, client, query_lanes, run_query};
use spine_dash::io::{self, IoConfig, IoEvent, Wake, fetch_text};
use spine_dash::metrics::prometheus::{PrometheusSource, QueryAnswer, ResponseError};
use spine_dash::metrics::{parse_envoy_stats, quantile_ms};
use spine_dash::model::types::{BreakerState, LaneKey, RegistryKind, RegistrySnapshot};
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::Registry;
use spine_dash::registry::consul::ConsulClient;

/// One spine and one Prometheus at a time (2 cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous deadline for outcomes (not a speed claim: the real delays are printed).
const DEADLINE: Duration = Duration::from_secs(30);

/// The Prometheus binary: Debian's, or `SPINE_DASH_TEST_PROMETHEUS`.
fn prometheus_bin() -> PathBuf {
    let bin = std::env::var_os("SPINE_DASH_TEST_PROMETHEUS")
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    assert!(
        bin.is_file(),
        "{} not found: these tests need a real Prometheus. Run scripts/install-deps.sh \
         (installs Debian's `prometheus` package), or set SPINE_DASH_TEST_PROMETHEUS to a \
         prometheus binary.",
        bin.display()
    );
    bin
}

/// A Prometheus server started by the test; killed by PID and its temp dir removed on drop.
struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    base_url: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (full stats URLs) every second.
    fn start(targets: &[String]) -> Self {
        let bin = prometheus_bin();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("spine-dash-prom-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // Targets as Prometheus wants them: host:port, grouped by metrics path.
        let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in targets {
            let url = reqwest::Url::parse(t).unwrap();
            let host = format!(
                "{}:{}",
                url.host_str().unwrap(),
                url.port_or_known_default().unwrap()
            );
            by_path.entry(url.path().to_owned()).or_default().push(host);
        }
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (i, (path, hosts)) in by_path.iter().enumerate() {
            let list: Vec<String> = hosts.iter().map(|h| format!("'{h}'")).collect();
            write!(
                config,
                "  - job_name: envoy{i}\n    metrics_path: '{path}'\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            )
            .unwrap();
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            dir,
            base_url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for `/-/ready`; returns how long it took.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log_tail());
            }
            let ready = http
                .get(format!("{}/-/ready", self.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "prometheus not ready in {DEADLINE:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process by its PID and reaps it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn source(base_url: &str, window: Duration) -> PrometheusSource {
    PrometheusSource {
        base_url: base_url.to_owned(),
        window,
        interval: Duration::from_secs(1),
    }
}

/// The single value of a scalar-like instant query (`count(…)`), `None` when empty.
async fn value(http: &reqwest::Client, base_url: &str, promql: &str) -> Option<f64> {
    let answer: QueryAnswer = run_query(
        http,
        &source(base_url, Duration::from_secs(1)),
        "test",
        promql,
        None,
    )
    .await
    .unwrap();
    answer.samples.first().map(|s| s.value)
}

/// Starts Prometheus on the spine's sidecars and waits until every target was scraped.
async fn prometheus_on(demo_snapshot: &RegistrySnapshot, http: &reqwest::Client) -> Prometheus {
    let urls = stats_urls(demo_snapshot);
    let mut prom = Prometheus::start(&urls);
    let ready = prom.wait_ready(http).await;
    let start = Instant::now();
    let want = urls.len() as f64;
    while value(http, &prom.base_url, "count(up == 1)").await != Some(want) {
        assert!(
            start.elapsed() < DEADLINE,
            "not every target up:\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "prometheus ready after {:.2} s, all {} targets up after +{:.2} s",
        ready.as_secs_f64(),
        urls.len(),
        start.elapsed().as_secs_f64()
    );
    prom
}

fn stats_urls(snapshot: &RegistrySnapshot) -> Vec<String> {
    let mut urls: Vec<String> = snapshot
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter_map(|i| i.metrics_url.clone())
        .collect();
    urls.sort();
    urls
}

fn model(url: &str, snapshot: &RegistrySnapshot) -> Model {
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address: url.to_owned(),
        datacenter: None,
        writable: true,
    };
    let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    let at = Instant::now();
    m.apply(
        IoEvent::Registry {
            at,
            result: Ok(Some(snapshot.clone())),
            next_within: Duration::from_secs(1),
        },
        at,
    );
    m
}

/// Scrapes every sidecar once, concurrently, into the (sidecars-mode) model.
async fn scrape_all(http: &reqwest::Client, urls: &[String], model: &mut Model) {
    let mut set = tokio::task::JoinSet::new();
    for url in urls {
        let (http, url) = (http.clone(), url.clone());
        set.spawn(async move {
            let text = fetch_text(&http, &url, Duration::from_secs(2), 32 << 20)
                .await
                .unwrap();
            (url, Instant::now(), parse_envoy_stats(&text).unwrap())
        });
    }
    while let Some(done) = set.join_next().await {
        let (url, at, scrape) = done.unwrap();
        model.apply(
            IoEvent::Scrape {
                url,
                at,
                result: Ok(scrape),
            },
            at,
        );
    }
}

/// Width of the Envoy latency bucket holding `ms` (the histogram's resolution there).
fn bucket_width(ms: f64) -> f64 {
    const BOUNDS: [f64; 14] = [
        0.0, 0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0,
    ];
    BOUNDS
        .windows(2)
        .find(|w| ms <= w[1])
        .map_or(f64::INFINITY, |w| w[1] - w[0])
}

/// Length of the comparison windows.
const WINDOW: Duration = Duration::from_secs(20);

/// Fewest requests in a window for rps, 5xx and p99 to be compared (with fewer, one
/// request more or less at the window's edges is already several percent).
const MIN_REQUESTS: f64 = 100.0;

/// Scrapes every sidecar twice `window` apart (the app's direct path, through the model),
/// then asks Prometheus for the same span ending now. Compares rps (within 10 %), 5xx
/// (within 1 point) and p99 (within the histogram's resolution) of every lane with at least
/// [`MIN_REQUESTS`], and with `same_breakers` their breaker states; returns both views.
async fn compare_with_direct(
    http: &reqwest::Client,
    prom: &Prometheus,
    registry_url: &str,
    snapshot: &RegistrySnapshot,
    window: Duration,
    same_breakers: bool,
) -> (Model, Model, usize) {
    let urls = stats_urls(snapshot);
    let mut direct = model(registry_url, snapshot);
    let t0 = Instant::now();
    scrape_all(http, &urls, &mut direct).await;
    tokio::time::sleep(window).await;
    scrape_all(http, &urls, &mut direct).await;
    let span = t0.elapsed();
    let src = source(
        &prom.base_url,
        Duration::from_millis(span.as_millis() as u64),
    );
    let samples = query_lanes(http, &src).await.unwrap();
    let mut via_prom = model(registry_url, snapshot).with_prometheus(&src);
    let at = Instant::now();
    via_prom.apply(
        IoEvent::LaneSamples {
            at,
            result: Ok(samples.clone()),
        },
        at,
    );

    // Prometheus's histogram_quantile and ours agree on its own bucket rates.
    for lane in &samples.lanes {
        let Some(w) = &lane.window else { continue };
        for (i, q) in [0.5, 0.95, 0.99].into_iter().enumerate() {
            if let (Some(theirs), Some(ours)) = (lane.quantiles_ms[i], quantile_ms(&w.buckets, q)) {
                assert!(
                    (theirs - ours).abs() <= 1e-9 * theirs.max(1.0),
                    "{:?} q{q}: {theirs} vs {ours}",
                    lane.id
                );
            }
        }
    }

    eprintln!(
        "window {:.2} s; lane: rps direct/prometheus (diff), 5xx % direct/prometheus, p99 ms direct/prometheus, breaker direct/prometheus",
        span.as_secs_f64()
    );
    let mut compared = 0;
    let mut worst_rps = 0.0_f64;
    for (key, lane) in &direct.lanes {
        let d = lane
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("direct {key:?}: no data"));
        let p = via_prom
            .lanes
            .get(key)
            .and_then(|l| l.stats.as_ref())
            .unwrap_or_else(|| panic!("prometheus has no data for {key:?}"));
        let rps_diff = (p.rps - d.rps) / d.rps;
        let pct = |r: Option<f64>| r.map_or(f64::NAN, |r| r * 100.0);
        let ms = |v: Option<f64>| v.map_or(f64::NAN, |v| v);
        let (d5, p5) = (pct(d.err5xx_ratio), pct(p.err5xx_ratio));
        eprintln!(
            "  {} → {} {}: {:.2}/{:.2} rps ({:+.2} %), 5xx {d5:.2}/{p5:.2} %, p99 {:.2}/{:.2} ms, {} / {}",
            key.caller,
            key.service,
            key.version,
            d.rps,
            p.rps,
            rps_diff * 100.0,
            ms(d.p99_ms),
            ms(p.p99_ms),
            d.breaker.label(),
            p.breaker.label()
        );
        if same_breakers {
            assert_eq!(d.breaker, p.breaker, "{key:?}");
        }
        if d.rps * span.as_secs_f64() < MIN_REQUESTS {
            continue;
        }
        assert!(
            rps_diff.abs() <= 0.10,
            "{key:?}: rps direct {} vs prometheus {}",
            d.rps,
            p.rps
        );
        worst_rps = worst_rps.max(rps_diff.abs());
        assert!((d5 - p5).abs() <= 1.0, "{key:?}: 5xx {d5} % vs {p5} %");
        match (d.p99_ms, p.p99_ms) {
            (Some(dp), Some(pp)) => assert!(
                (dp - pp).abs() <= bucket_width(dp.max(pp)),
                "{key:?}: p99 {dp} vs {pp} ms differ by more than the histogram's resolution"
            ),
            (None, None) => {} // no request reached an upstream
            other => panic!("{key:?}: p99 {other:?}"),
        }
        compared += 1;
    }
    eprintln!(
        "{compared} lanes with ≥ {MIN_REQUESTS} requests compared, largest rps difference {:.2} %",
        worst_rps * 100.0
    );
    (direct, via_prom, compared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_agrees_with_direct_scrapes() {
    let _serial = SERIAL.lock().await;
    let http = client(Duration::from_secs(2));
    let demo = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let url = demo.registry_url();
    let snapshot = ConsulClient::new(&url).unwrap().snapshot().await.unwrap();
    let prom = prometheus_on(&snapshot, &http).await;
    // Let Prometheus fill one whole window before the comparison window starts.
    tokio::time::sleep(WINDOW).await;
    let (_, _, compared) = compare_with_direct(&http, &prom, &url, &snapshot, WINDOW, true).await;
    assert_eq!(compared, 6, "every road of the demo has traffic");

    // Both payment instances down: 5xx, and a breaker that is open, in both paths.
    demo.stop_instance("payment-1").await.unwrap();
    demo.stop_instance("payment-2").await.unwrap();
    // Health checks (every 2 s) mark them critical; then compare a window after that.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Outlier ejection of the failing gateway makes other lanes flap between closed and
    // open within a second, so only the lasting state is compared: payment's open breaker.
    let (direct, via_prom, compared) =
        compare_with_direct(&http, &prom, &url, &snapshot, WINDOW, false).await;
    assert!(compared >= 1, "no lane with traffic compared");
    let payment = LaneKey {
        caller: "gateway".into(),
        service: "payment".into(),
        version: "v1".into(),
    };
    for m in [&direct, &via_prom] {
        let stats = m.lanes[&payment].stats.as_ref().unwrap();
        assert_eq!(stats.breaker, BreakerState::Open);
        assert_eq!(stats.err5xx_ratio, Some(1.0));
    }
    drop(prom);
    demo.shutdown();
}

/// Instant queries Prometheus has answered so far, from its own `/metrics`.
async fn query_requests(http: &reqwest::Client, base_url: &str) -> f64 {
    let text = fetch_text(
        http,
        &format!("{base_url}/metrics"),
        Duration::from_secs(2),
        8 << 20,
    )
    .await
    .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn lane_rps(model: &Model, key: &LaneKey) -> Option<f64> {
    model
        .lanes
        .get(key)
        .and_then(|l| l.stats.as_ref())
        .map(|s| s.rps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_path_fills_lanes_and_shows_prometheus_errors() {
    let _serial = SERIAL.lock().await;
    let http = client(Duration::from_secs(2));
    let demo = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let consul = ConsulClient::new(&demo.registry_url()).unwrap();
    let snapshot = consul.snapshot().await.unwrap();
    let mut prom = prometheus_on(&snapshot, &http).await;
    let base_url = prom.base_url.clone();

    // Error answers of a real Prometheus keep its text, the status and the URL (last).
    let src = source(&base_url, Duration::from_secs(5));
    let bad = run_query(&http, &src, "test", "sum by (le (up)", None)
        .await
        .unwrap_err();
    let PrometheusError::Response {
        source: ResponseError::Api { status: 400, .. },
        ..
    } = &bad
    else {
        panic!("not a bad_data answer: {bad:?}");
    };
    let text = bad.to_string();
    assert!(
        text.starts_with("Prometheus test query: HTTP 400 bad_data: "),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("({base_url}/api/v1/query)")),
        "{text}"
    );
    let prefixed = source(&format!("{base_url}/prom"), Duration::from_secs(5));
    let nf = query_lanes(&http, &prefixed).await.unwrap_err().to_string();
    assert!(
        nf.starts_with(
            "Prometheus rates query: HTTP 404: 404 page not found — is this a Prometheus server?"
        ),
        "{nf}"
    );

    // The io layer with --metrics prometheus://…: lanes fill in, no sidecar is scraped.
    let config = IoConfig {
        prometheus: Some(src.clone()),
        ..IoConfig::default()
    };
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(consul, None, &config, &wake);
    let mut model = model(&demo.registry_url(), &snapshot).with_prometheus(&src);
    let v1 = LaneKey {
        caller: "gateway".into(),
        service: "identity".into(),
        version: "v1".into(),
    };
    let requests = || query_requests(&http, &base_url);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut refreshes = 0;
    let mut counted_from: Option<(f64, u32)> = None;
    // Lanes with traffic, then five more refreshes to count the queries each one sends.
    while counted_from.is_none_or(|(_, r)| refreshes < r + 5) {
        let event = tokio::time::timeout_at(deadline, io.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no lanes in {DEADLINE:?}: {:?}", model.prometheus))
            .unwrap();
        let is_refresh = matches!(event, IoEvent::LaneSamples { .. });
        model.apply(event, Instant::now());
        if is_refresh {
            refreshes += 1;
        }
        if counted_from.is_none() && lane_rps(&model, &v1).is_some_and(|r| r > 1.0) {
            eprintln!(
                "io path: gateway → identity v1 at {:.1} rps after {:.2} s ({refreshes} refreshes)",
                lane_rps(&model, &v1).unwrap(),
                start.elapsed().as_secs_f64()
            );
            counted_from = Some((requests().await, refreshes));
        }
    }
    let (before, from) = counted_from.unwrap();
    let sent = requests().await - before;
    let n = f64::from(refreshes - from);
    eprintln!(
        "{sent} query requests over {n} refreshes ({:.1} per refresh)",
        sent / n
    );
    // Four per refresh, whatever the number of services (±1 refresh in flight at each end).
    assert!(
        (4.0 * (n - 1.0)..=4.0 * (n + 1.0)).contains(&sent),
        "{sent} requests for {n} refreshes"
    );
    assert!(model.sidecars.is_empty());
    let status = &model.prometheus.as_ref().unwrap().status;
    assert_eq!(status.last_error, None);
    assert!(!model.caller_stale("gateway", Instant::now()));

    // Prometheus goes away: its error text reaches the model, lanes become "no data".
    prom.stop();
    let stopped = Instant::now();
    loop {
        let event =
            tokio::time::timeout_at(tokio::time::Instant::now() + DEADLINE, io.events.recv())
                .await
                .expect("no event after Prometheus stopped")
                .unwrap();
        model.apply(event, Instant::now());
        if model
            .prometheus
            .as_ref()
            .and_then(|p| p.status.last_error.as_ref())
            .is_some()
        {
            break;
        }
    }
    let error = model
        .prometheus
        .as_ref()
        .unwrap()
        .status
        .last_error
        .clone()
        .unwrap();
    eprintln!(
        "Prometheus stopped → error shown after {:.2} s: {error}",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(
        error,
        format!(
            "Prometheus rates query: connection refused — is Prometheus running at that address? ({base_url}/api/v1/query)"
        )
    );
    assert_eq!(
        lane_rps(&model, &v1),
        None,
        "no data, not 0 rps and not old data"
    );
    assert!(model.caller_stale("gateway", Instant::now()));
    assert_eq!(
        model.notices.back().map(|n| n.text.clone()),
        Some(format!("prometheus: {error}"))
    );
    drop(io);
    demo.shutdown();
}

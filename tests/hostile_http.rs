//! Hostile HTTP peers: every source kind (sidecar, Consul, etcd unary, etcd watch,
//! Prometheus) against stub servers on 127.0.0.1 that send an endless body, declare a
//! 1 GiB `Content-Length` and stream fast, accept and never answer, trickle one byte a
//! second, or send the head and stall. Each read must end with the right text, resident
//! memory must stay bounded, and a healthy sidecar beside hung ones keeps being scraped.
//!
//! Deadlines here are generous "it ended at all" bounds, never speed claims. Run with
//! `--nocapture` (and `--test-threads=1` for clean memory figures) to see the figures:
//! bytes the stub sent before the cut, peak RSS growth, time to the error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use spine_dash::io::{self, IoConfig, IoEvent, Wake, fetch_text};
use spine_dash::metrics::prometheus::PrometheusSource;
use spine_dash::net::limits;
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::etcd::{EtcdClient, EtcdSettings};
use spine_dash::registry::{FeedUpdate, FollowContext, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// "It ended at all" deadline of one case.
const DEADLINE: Duration = Duration::from_mins(1);
/// Generous bound on the resident memory growth of one case.
const RSS_BOUND: u64 = 200 * 1024 * 1024;
/// Deadline given to the sources under test (where configurable).
const TEST_TIMEOUT: Duration = Duration::from_secs(2);
const GIB: u64 = 1024 * 1024 * 1024;
const MIB_F: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hostile {
    /// 200, chunked, bytes without end.
    Endless,
    /// 200, `Content-Length: 1 GiB`, streamed as fast as the socket takes it.
    HugeLength,
    /// Accepts, reads the request, never answers.
    Silent,
    /// 200 with a body of one byte per second.
    Trickle,
    /// The head, then nothing.
    Stall,
}

const ALL: [Hostile; 5] = [
    Hostile::Endless,
    Hostile::HugeLength,
    Hostile::Silent,
    Hostile::Trickle,
    Hostile::Stall,
];

/// A normal answer for a path (`None`: misbehave).
type Normal = Arc<dyn Fn(&str) -> Option<(u16, String)> + Send + Sync>;

struct Stub {
    addr: SocketAddr,
    /// Body bytes written by the hostile connections.
    sent: Arc<AtomicU64>,
    /// Hostile connections accepted.
    hostile_conns: Arc<AtomicU64>,
}

impl Stub {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A stub on 127.0.0.1: answers `normal(path)` when it says so, else misbehaves as `kind`
/// (with `preamble` sent right after the head, e.g. a watch's `created` line).
async fn stub(kind: Hostile, normal: Option<Normal>, preamble: &'static str) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let hostile_conns = Arc::new(AtomicU64::new(0));
    let (s, h) = (Arc::clone(&sent), Arc::clone(&hostile_conns));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (sent, conns, normal) = (Arc::clone(&s), Arc::clone(&h), normal.clone());
            tokio::spawn(connection(socket, kind, normal, preamble, sent, conns));
        }
    });
    Stub {
        addr,
        sent,
        hostile_conns,
    }
}

async fn connection(
    mut socket: TcpStream,
    kind: Hostile,
    normal: Option<Normal>,
    preamble: &'static str,
    sent: Arc<AtomicU64>,
    conns: Arc<AtomicU64>,
) {
    let Some(path) = read_head(&mut socket).await else {
        return;
    };
    if let Some((status, body)) = normal.as_ref().and_then(|n| n(&path)) {
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(body.as_bytes()).await;
        return;
    }
    conns.fetch_add(1, Ordering::Relaxed);
    let head = match kind {
        Hostile::HugeLength => {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {GIB}\r\n\r\n")
        }
        Hostile::Silent => {
            tokio::time::sleep(Duration::from_hours(1)).await;
            return;
        }
        Hostile::Endless | Hostile::Trickle | Hostile::Stall => {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_owned()
        }
    };
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunked = kind != Hostile::HugeLength;
    let frame = |data: &[u8]| -> Vec<u8> {
        if chunked {
            let mut f = format!("{:x}\r\n", data.len()).into_bytes();
            f.extend_from_slice(data);
            f.extend_from_slice(b"\r\n");
            f
        } else {
            data.to_vec()
        }
    };
    if !preamble.is_empty() && socket.write_all(&frame(preamble.as_bytes())).await.is_err() {
        return;
    }
    match kind {
        Hostile::Endless | Hostile::HugeLength => {
            let data = frame(&vec![b'x'; 64 * 1024]);
            let mut total: u64 = 0;
            while total < GIB && socket.write_all(&data).await.is_ok() {
                total += 64 * 1024;
                sent.fetch_add(64 * 1024, Ordering::Relaxed);
            }
        }
        Hostile::Trickle => loop {
            if socket.write_all(&frame(b"x")).await.is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Hostile::Stall => {
            // Hold the connection until the client goes away.
            let mut buf = [0u8; 1024];
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Hostile::Silent => {}
    }
}

/// Reads a request head; returns its path.
async fn read_head(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?;
    Some(line.split_whitespace().nth(1)?.to_owned())
}

// ---------------------------------------------------------------------------------------
// Memory and figures.

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Samples `VmRSS` every few ms until dropped; keeps the peak.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed).max(rss_bytes())
    }
}

/// Runs one case: the read `f` must fail; prints and returns its text.
async fn case<F, Fut>(source: &str, kind: Hostile, stub: &Stub, f: F) -> String
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let before = rss_bytes();
    let peak = PeakRss::start();
    let started = Instant::now();
    let result = tokio::time::timeout(DEADLINE, f())
        .await
        .unwrap_or_else(|_| panic!("{source} {kind:?}: the read did not end at all"));
    let elapsed = started.elapsed();
    let sent = stub.sent.load(Ordering::Relaxed);
    let peak = peak.finish();
    let growth = peak.saturating_sub(before);
    let err = match result {
        Ok(body) => panic!(
            "{source} {kind:?}: expected an error, got {} bytes",
            body.len()
        ),
        Err(e) => e,
    };
    println!(
        "FIGURE source={source:<11} case={kind:<10} sent_before_cut={sent:>10} bytes ({:>5.1} MiB) rss_peak_growth={:>6.1} MiB time_to_error={:>5.2} s error={err}",
        sent as f64 / MIB_F,
        growth as f64 / MIB_F,
        elapsed.as_secs_f64(),
        kind = format!("{kind:?}"),
    );
    assert!(
        growth < RSS_BOUND,
        "{source} {kind:?}: resident memory grew by {growth} bytes"
    );
    err
}

/// What every source says for `kind`, given its body limit and deadline.
fn expected(kind: Hostile, limit: usize, deadline: Duration) -> String {
    match kind {
        Hostile::Endless | Hostile::HugeLength => limits::too_large_text(limit),
        Hostile::Silent | Hostile::Trickle | Hostile::Stall => limits::timeout_text(deadline),
    }
}

// ---------------------------------------------------------------------------------------
// Captured log (for the watch, whose broken streams are logged and reopened).

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log() -> &'static LogBuf {
    static LOG: OnceLock<LogBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = LogBuf::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------
// The sources.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_scrapes_are_cut_and_time_out() {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for kind in ALL {
        let s = stub(kind, None, "").await;
        let url = format!("{}/stats/prometheus", s.url());
        let (h, u) = (&http, url.clone());
        let err = case("sidecar", kind, &s, move || async move {
            fetch_text(
                h,
                &u,
                limits::SIDECAR_TIMEOUT,
                limits::SIDECAR_MAX_BODY_BYTES,
            )
            .await
            .map_err(|e| e.to_string())
        })
        .await;
        let want = expected(
            kind,
            limits::SIDECAR_MAX_BODY_BYTES,
            limits::SIDECAR_TIMEOUT,
        );
        assert_eq!(err, format!("{want} ({url})"), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_reads_are_cut_and_time_out() {
    for kind in ALL {
        let s = stub(kind, None, "").await;
        let client = ConsulClient::new(&s.url())
            .unwrap()
            .with_timeouts(Duration::from_secs(3), TEST_TIMEOUT)
            .unwrap();
        let err = case("consul", kind, &s, move || async move {
            client
                .snapshot()
                .await
                .map(|_| String::new())
                .map_err(|e| e.to_string())
        })
        .await;
        let want = expected(kind, limits::CONSUL_MAX_BODY_BYTES, TEST_TIMEOUT);
        assert!(
            err.contains(&want) && err.ends_with(&format!("({}/v1/catalog/services)", s.url())),
            "{kind:?}: {err}"
        );
    }
}

/// A Consul blocking query gets `wait + wait/16` plus the request timeout: a hung agent
/// is left at that deadline, not at the plain request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_blocking_queries_time_out_after_wait_plus_margin() {
    let normal: Normal = Arc::new(|path: &str| {
        if path.contains("index=") {
            None
        } else if path.starts_with("/v1/catalog/services") {
            Some((200, "{}".into()))
        } else if path.contains("proxy-defaults") || path.starts_with("/v1/kv/") {
            Some((404, String::new()))
        } else {
            Some((200, "[]".into()))
        }
    });
    let s = stub(Hostile::Silent, Some(normal), "").await;
    let wait = Duration::from_secs(1);
    let client = ConsulClient::new(&s.url())
        .unwrap()
        .with_timeouts(Duration::from_secs(3), TEST_TIMEOUT)
        .unwrap()
        .with_blocking_wait(wait);
    let (out, mut rx) = mpsc::channel::<FeedUpdate>(16);
    let ctx = FollowContext {
        interval: Duration::from_millis(200),
        refresh: Arc::new(Notify::new()),
        out,
    };
    let follow = tokio::spawn(async move { client.follow(ctx).await });
    let started = Instant::now();
    let err = loop {
        let update = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("a report")
            .expect("follow alive");
        if let Err(e) = update.result {
            break e.to_string();
        }
    };
    follow.abort();
    let deadline = spine_dash::registry::consul::blocking_deadline(wait, TEST_TIMEOUT);
    println!(
        "FIGURE source=consul-blocking case=Silent time_to_error={:.2} s deadline={deadline:?} error={err}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        err.contains(&limits::timeout_text(deadline)) && err.contains("index="),
        "{err}"
    );
}

fn etcd_client(url: &str) -> EtcdClient {
    let mut settings = EtcdSettings::new(vec![url.to_owned()]);
    settings.request_timeout = TEST_TIMEOUT;
    EtcdClient::new(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unary_calls_are_cut_and_time_out() {
    for kind in ALL {
        let s = stub(kind, None, "").await;
        let client = etcd_client(&s.url());
        let err = case("etcd-unary", kind, &s, move || async move {
            client
                .snapshot()
                .await
                .map(|_| String::new())
                .map_err(|e| e.to_string())
        })
        .await;
        let want = expected(kind, limits::ETCD_MAX_BODY_BYTES, TEST_TIMEOUT);
        assert!(
            err.contains(&want) && err.ends_with(&format!("({}/v3/kv/txn)", s.url())),
            "{kind:?}: {err}"
        );
    }
}

/// The etcd stub's unary answers: an empty key space at revision 5, a healthy member.
fn etcd_normal() -> Normal {
    Arc::new(|path: &str| {
        match path {
        "/v3/kv/txn" => Some((
            200,
            r#"{"header":{"revision":"5"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"5"}}},{"response_range":{"header":{"revision":"5"}}},{"response_range":{"header":{"revision":"5"}}}]}"#.into(),
        )),
        "/v3/maintenance/status" => Some((
            200,
            r#"{"header":{"revision":"5"},"version":"3.5.0","leader":"1"}"#.into(),
        )),
        _ => None,
    }
    })
}

const CREATED: &str = "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n";

/// The watch: a message without end is cut at the message limit, one that trickles is
/// cut at the message deadline, and the broken stream is reopened; a stream that never
/// answers is reported; an idle stream (head and `created`, then nothing) is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_messages_are_cut_and_time_out() {
    log();
    for kind in ALL {
        let s = stub(kind, Some(etcd_normal()), CREATED).await;
        let client = etcd_client(&s.url()).with_heartbeat(Duration::from_millis(500));
        let (out, mut rx) = mpsc::channel::<FeedUpdate>(64);
        let ctx = FollowContext {
            interval: Duration::from_millis(200),
            refresh: Arc::new(Notify::new()),
            out,
        };
        let conns = Arc::clone(&s.hostile_conns);
        let url = s.url();
        let expected_text = match kind {
            Hostile::Endless | Hostile::HugeLength => format!(
                "watch message larger than {}, cut off",
                limits::format_bytes(limits::ETCD_MAX_MESSAGE_BYTES)
            ),
            Hostile::Trickle => format!(
                "no complete watch message within {}",
                limits::format_duration(limits::ETCD_MESSAGE_TIMEOUT)
            ),
            Hostile::Silent => limits::timeout_text(TEST_TIMEOUT),
            Hostile::Stall => String::new(),
        };
        let follow = tokio::spawn(async move { client.follow(ctx).await });
        let wanted = expected_text.clone();
        let err = case("etcd-watch", kind, &s, move || async move {
            let expected_text = wanted;
            let mut reports_ok = 0;
            loop {
                let update = rx.recv().await.ok_or_else(|| "follow ended".to_owned())?;
                match update.result {
                    Err(e) => return Err(e.to_string()),
                    Ok(_) => reports_ok += 1,
                }
                let logged = log_text();
                if kind == Hostile::Stall && reports_ok >= 6 {
                    // Idle: heartbeats keep coming and no stream of this stub broke.
                    if logged
                        .lines()
                        .any(|l| l.contains("watch interrupted") && l.contains(&url))
                    {
                        return Err(format!("an idle watch was interrupted: {logged}"));
                    }
                    return Err(String::new());
                }
                // A broken stream is logged and reopened (not reported: a reopen worked).
                if kind != Hostile::Stall
                    && logged
                        .lines()
                        .any(|l| l.contains(&expected_text) && l.contains(&url))
                    && conns.load(Ordering::Relaxed) > 3
                {
                    let line = logged
                        .lines()
                        .find(|l| l.contains(&expected_text) && l.contains(&url))
                        .unwrap()
                        .to_owned();
                    return Err(line);
                }
            }
        })
        .await;
        follow.abort();
        match kind {
            Hostile::Stall => assert_eq!(err, "", "idle watch"),
            _ => assert!(err.contains(&expected_text), "{kind:?}: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_queries_are_cut_and_time_out() {
    for kind in ALL {
        let s = stub(kind, None, "").await;
        let mut source = PrometheusSource::new(s.url());
        source.interval = TEST_TIMEOUT;
        let http = io::prometheus::client(TEST_TIMEOUT);
        let (h, src) = (&http, &source);
        let err = case("prometheus", kind, &s, move || async move {
            io::prometheus::run_query(h, src, "rates", "up", None)
                .await
                .map(|_| String::new())
                .map_err(|e| e.to_string())
        })
        .await;
        let want = expected(
            kind,
            limits::PROMETHEUS_MAX_BODY_BYTES,
            io::prometheus::query_timeout(&source),
        );
        assert_eq!(
            err,
            format!("Prometheus rates query: {want} ({}/api/v1/query)", s.url()),
            "{kind:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The scheduler: one healthy sidecar beside five hostile ones.

const GOOD: &str = include_str!("fixtures/envoy/stats_prometheus.txt");

fn health_entry(id: &str, metrics_url: &str) -> serde_json::Value {
    serde_json::json!({
        "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
        "Service": {"ID": id, "Service": "portal", "Tags": ["v1"], "Address": "127.0.0.1", "Port": 1,
                    "Meta": {"version": "v1", "metrics_url": metrics_url}},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "", "ServiceID": ""}]
    })
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_sidecar_keeps_being_scraped_beside_hung_ones() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&scrapes);
    let good_base = serve(Router::new().route(
        "/stats/prometheus",
        get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { GOOD }
        }),
    ))
    .await;
    let good = format!("{good_base}/stats/prometheus");
    let mut stubs = Vec::new();
    let mut entries = vec![health_entry("portal-good", &good)];
    for (i, kind) in ALL.into_iter().enumerate() {
        let s = stub(kind, None, "").await;
        entries.push(health_entry(
            &format!("portal-{kind:?}-{i}"),
            &format!("{}/stats/prometheus", s.url()),
        ));
        stubs.push((kind, s));
    }
    let health = serde_json::Value::Array(entries).to_string();
    let registry = serve(
        Router::new()
            .route(
                "/v1/catalog/services",
                get(|| async { r#"{"portal":["v1"]}"# }),
            )
            .route(
                "/v1/health/service/portal",
                get(move || async move { health }),
            )
            .route("/v1/health/state/any", get(|| async { "[]" }))
            .route("/v1/config/service-resolver", get(|| async { "[]" }))
            .route("/v1/config/service-splitter", get(|| async { "[]" })),
    )
    .await;
    let config = IoConfig {
        scrape_interval: Duration::from_millis(250),
        ..IoConfig::default()
    };
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(ConsulClient::new(&registry).unwrap(), None, &config, &wake);
    let hostile_urls: Vec<String> = stubs
        .iter()
        .map(|(_, s)| format!("{}/stats/prometheus", s.url()))
        .collect();
    let mut failures = std::collections::BTreeMap::<String, (u32, String)>::new();
    let before = rss_bytes();
    let peak = PeakRss::start();
    let started = Instant::now();
    let mut good_at_first_hostile_failure = None;
    // Until every hostile sidecar failed three times (three of its deadlines passed).
    while hostile_urls
        .iter()
        .any(|u| failures.get(u).is_none_or(|(n, _)| *n < 3))
    {
        let event = tokio::time::timeout(DEADLINE, io.events.recv())
            .await
            .expect("every hostile sidecar fails in time")
            .expect("io alive");
        if let IoEvent::Scrape {
            url,
            result: Err(e),
            ..
        } = event
        {
            let entry = failures.entry(url).or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = e;
            good_at_first_hostile_failure.get_or_insert(scrapes.load(Ordering::Relaxed));
        }
    }
    let elapsed = started.elapsed();
    let growth = peak.finish().saturating_sub(before);
    let good_scrapes = scrapes.load(Ordering::Relaxed);
    let while_hung = good_scrapes - good_at_first_hostile_failure.unwrap_or(0);
    println!(
        "FIGURE scheduler: healthy sidecar scraped {good_scrapes} times in {:.1} s ({while_hung} after the first hostile failure), 5 hostile sidecars failed 3 times each, rss_peak_growth={:.1} MiB",
        elapsed.as_secs_f64(),
        growth as f64 / MIB_F
    );
    for ((kind, s), url) in stubs.iter().zip(&hostile_urls) {
        let (n, e) = &failures[url];
        println!(
            "  {kind:?}: {n} failures, {} bytes sent, last error: {e}",
            s.sent.load(Ordering::Relaxed)
        );
        let want = expected(
            *kind,
            limits::SIDECAR_MAX_BODY_BYTES,
            limits::SIDECAR_TIMEOUT,
        );
        assert_eq!(e, &format!("{want} ({url})"), "{kind:?}");
    }
    // Three hostile deadlines (2 s each) passed: at one scrape every 250 ms the healthy
    // sidecar was due ~24 times; it must not have waited on the hung ones.
    assert!(
        while_hung >= 10,
        "the healthy sidecar was scraped only {while_hung} times while others hung"
    );
    assert!(growth < RSS_BOUND, "resident memory grew by {growth} bytes");
    let _ = std::io::stdout().flush();
}

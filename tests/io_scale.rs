//! The scrape scheduler against stub sidecars on 127.0.0.1 (counts and order of events,
//! never timings): hung and trickling sidecars do not hold up the others, scrapes in flight
//! never exceed the limit, focused services are scraped more often than the rest, and the
//! budget stretches the intervals it reports to the model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use spine_dash::io::{self, Command, IoConfig, IoEvent, IoHandle, ScrapePlan, Wake};
use spine_dash::registry::consul::ConsulClient;

/// A small valid stats body for `service`.
fn body(service: &str) -> String {
    format!(
        "# TYPE envoy_cluster_upstream_rq_completed counter\n\
         envoy_cluster_upstream_rq_completed{{consul_source_service=\"{service}\",\
         consul_destination_service=\"db\",envoy_cluster_name=\"db\"}} 7\n\
         # TYPE envoy_server_uptime gauge\nenvoy_server_uptime{{}} 5\n"
    )
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Requests in flight at the sidecar stub, and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

async fn track(State(f): State<Arc<InFlight>>, request: Request, next: Next) -> Response {
    let n = f.now.fetch_add(1, Ordering::SeqCst) + 1;
    f.max.fetch_max(n, Ordering::SeqCst);
    let response = next.run(request).await;
    f.now.fetch_sub(1, Ordering::SeqCst);
    response
}

/// Sidecars under `/<kind>/<n>/…`: `good` answers at once, `slow` after 30 ms, `fail` 500
/// after 30 ms, `hang` never.
async fn sidecars(in_flight: Arc<InFlight>) -> String {
    async fn stats(Path((kind, n)): Path<(String, u32)>) -> Response {
        let service = format!("{kind}-{n}");
        match kind.as_str() {
            "slow" => tokio::time::sleep(Duration::from_millis(30)).await,
            "fail" => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                return Response::builder()
                    .status(500)
                    .body(Body::from("boom"))
                    .unwrap();
            }
            "hang" => tokio::time::sleep(Duration::from_hours(1)).await,
            _ => {}
        }
        Response::new(Body::from(body(&service)))
    }
    serve(
        Router::new()
            .route("/{kind}/{n}/stats/prometheus", get(stats))
            .layer(axum::middleware::from_fn_with_state(in_flight, track)),
    )
    .await
}

/// A sidecar that answers the headers at once and then its body one byte every 200 ms
/// (announcing 10 kB, so it never finishes in time).
async fn trickling_sidecar() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10000\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if socket.write_all(b"#").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/trickle/stats/prometheus")
}

fn entry(id: &str, service: &str, metrics_url: &str) -> serde_json::Value {
    serde_json::json!({
        "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
        "Service": {"ID": id, "Service": service, "Tags": ["v1"], "Address": "127.0.0.1",
                    "Port": 1, "Meta": {"version": "v1", "metrics_url": metrics_url}},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "", "ServiceID": ""}]
    })
}

/// A stub Consul agent listing `services` (name → stats URLs of its instances).
async fn registry(services: BTreeMap<String, Vec<String>>) -> String {
    let catalog: serde_json::Map<String, serde_json::Value> = services
        .keys()
        .map(|s| (s.clone(), serde_json::json!(["v1"])))
        .collect();
    let catalog = serde_json::Value::Object(catalog).to_string();
    let health: BTreeMap<String, String> = services
        .iter()
        .map(|(name, urls)| {
            let entries: Vec<serde_json::Value> = urls
                .iter()
                .enumerate()
                .map(|(i, u)| entry(&format!("{name}-{i}"), name, u))
                .collect();
            (name.clone(), serde_json::Value::Array(entries).to_string())
        })
        .collect();
    let health = Arc::new(health);
    serve(
        Router::new()
            .route("/v1/catalog/services", get(move || async move { catalog }))
            .route(
                "/v1/health/service/{name}",
                get(move |Path(name): Path<String>| async move {
                    health.get(&name).cloned().unwrap_or_else(|| "[]".into())
                }),
            )
            .route("/v1/health/state/any", get(|| async { "[]" }))
            .route("/v1/config/service-resolver", get(|| async { "[]" }))
            .route("/v1/config/service-splitter", get(|| async { "[]" })),
    )
    .await
}

fn spawn_io(registry: &str, config: &IoConfig) -> IoHandle {
    let wake: Wake = Arc::new(|| {});
    io::spawn(ConsulClient::new(registry).unwrap(), None, config, &wake)
}

async fn next_event(io: &mut IoHandle) -> IoEvent {
    tokio::time::timeout(Duration::from_secs(30), io.events.recv())
        .await
        .expect("an event within 30 s")
        .expect("io alive")
}

fn urls(base: &str, kind: &str, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("{base}/{kind}/{i}/stats/prometheus"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_and_trickling_sidecars_hold_up_nobody() {
    let base = sidecars(Arc::default()).await;
    let good = urls(&base, "good", 4);
    let mut bad = urls(&base, "hang", 3);
    bad.push(trickling_sidecar().await);
    let reg = registry(BTreeMap::from([
        ("good".to_owned(), good.clone()),
        ("bad".to_owned(), bad.clone()),
    ]))
    .await;
    // A long deadline: the bad sidecars' first answers (timeouts) come late.
    let config = IoConfig {
        registry_interval: Duration::from_millis(100),
        scrape_interval: Duration::from_millis(100),
        scrape_timeout: Duration::from_secs(4),
        max_concurrent_scrapes: 8,
        ..IoConfig::default()
    };
    let mut io = spawn_io(&reg, &config);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // Until the first bad sidecar is reported (its deadline passed), count good scrapes.
    let first_bad = loop {
        if let IoEvent::Scrape { url, result, .. } = next_event(&mut io).await {
            if bad.contains(&url) {
                break (url, result);
            }
            assert!(result.is_ok(), "{result:?}");
            *counts.entry(url).or_default() += 1;
        }
    };
    let error = first_bad.1.expect_err("a bad sidecar fails");
    assert!(error.contains("no complete answer within"), "{error}");
    assert!(
        error.ends_with(&format!("({})", first_bad.0)),
        "the error names the registered URL, not the filtered one: {error}"
    );
    for url in &good {
        let n = counts.get(url).copied().unwrap_or(0);
        assert!(
            n >= 8,
            "{url} was scraped {n} times while the bad ones hung: {counts:?}"
        );
    }
    // And the good ones keep going while the bad ones are retried (each failure waits
    // for a suspect slot): 20 more good scrapes come before the bad ones fail 8 more times.
    let (mut more_good, mut more_bad) = (0, 0);
    while more_good < 20 {
        if let IoEvent::Scrape { url, .. } = next_event(&mut io).await {
            if bad.contains(&url) {
                more_bad += 1;
            } else {
                more_good += 1;
            }
        }
    }
    assert!(more_bad < 8, "{more_bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_in_flight_never_exceed_the_limit() {
    let in_flight = Arc::new(InFlight::default());
    let base = sidecars(Arc::clone(&in_flight)).await;
    let mut slow = urls(&base, "slow", 30);
    slow.extend(urls(&base, "fail", 3));
    let reg = registry(BTreeMap::from([("many".to_owned(), slow.clone())])).await;
    let limit = 5;
    let config = IoConfig {
        registry_interval: Duration::from_millis(100),
        scrape_interval: Duration::from_millis(50),
        max_concurrent_scrapes: limit,
        ..IoConfig::default()
    };
    let mut io = spawn_io(&reg, &config);
    let mut scrapes = 0;
    let mut failed = 0;
    while scrapes < 200 {
        if let IoEvent::Scrape { result, .. } = next_event(&mut io).await {
            scrapes += 1;
            failed += usize::from(result.is_err());
        }
    }
    let max = in_flight.max.load(Ordering::SeqCst);
    assert!(max <= limit, "{max} requests in flight, limit {limit}");
    assert!(max >= limit - 1, "the limit is used: {max}");
    assert!(failed > 0, "failing sidecars were scraped too");
}

/// The plan the io layer reports once it matches `want`.
async fn plan_where(io: &mut IoHandle, want: impl Fn(&ScrapePlan) -> bool) -> ScrapePlan {
    loop {
        if let IoEvent::ScrapePlan(plan) = next_event(io).await
            && want(&plan)
        {
            return plan;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focused_services_are_scraped_more_often() {
    let base = sidecars(Arc::default()).await;
    let a = urls(&base, "good", 2);
    let b: Vec<String> = (10..12)
        .map(|i| format!("{base}/good/{i}/stats/prometheus"))
        .collect();
    let reg = registry(BTreeMap::from([
        ("a".to_owned(), a.clone()),
        ("b".to_owned(), b.clone()),
    ]))
    .await;
    let config = IoConfig {
        registry_interval: Duration::from_millis(100),
        scrape_interval: Duration::from_millis(100),
        ..IoConfig::default()
    };
    let mut io = spawn_io(&reg, &config);
    // Until the view says otherwise, every service is focused.
    let plan = plan_where(&mut io, |p| p.focus.is_none()).await;
    assert_eq!(plan.focused_interval, Duration::from_millis(100));
    io.commands
        .send(Command::Focus {
            services: vec!["a".into()],
        })
        .await
        .unwrap();
    let plan = plan_where(&mut io, |p| p.focus.is_some()).await;
    assert_eq!(plan.focus, Some(BTreeSet::from(["a".to_owned()])));
    assert_eq!(plan.interval_for("a"), Duration::from_millis(100));
    assert_eq!(plan.interval_for("b"), Duration::from_millis(400));
    let (mut na, mut nb) = (0usize, 0usize);
    while na < 60 {
        if let IoEvent::Scrape { url, .. } = next_event(&mut io).await {
            if a.contains(&url) {
                na += 1;
            } else if b.contains(&url) {
                nb += 1;
            }
        }
    }
    assert!(nb >= 2, "unfocused sidecars are still scraped: {nb}");
    assert!(nb * 2 <= na, "focused {na}, unfocused {nb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_stretches_the_reported_intervals() {
    let base = sidecars(Arc::default()).await;
    let reg = registry(BTreeMap::from([(
        "many".to_owned(),
        urls(&base, "good", 50),
    )]))
    .await;
    let config = IoConfig {
        registry_interval: Duration::from_millis(100),
        scrape_interval: Duration::from_millis(100),
        max_scrapes_per_sec: 20.0,
        ..IoConfig::default()
    };
    let mut io = spawn_io(&reg, &config);
    // 50 sidecars at 20 scrapes/s: every 2.5 s, not every 100 ms.
    let plan = plan_where(&mut io, |p| p.focused_interval > config.scrape_interval).await;
    assert_eq!(plan.focused_interval, Duration::from_millis(2500));
}

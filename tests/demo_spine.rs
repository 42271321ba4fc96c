//! End-to-end tests of the embedded demo spine over real loopback HTTP: the registry's
//! Consul API subset, the sidecars' Envoy stats (80/20 split by smooth WRR), and a fault
//! (both photo instances stopped, then started). Each test starts its own spine and shuts
//! it down; run them one at a time (`--test-threads=1`) on small machines.

// A test crate: helpers panic on purpose when the spine misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use spine_dash::demo::{DemoConfig, DemoError, DemoSpine};

/// Generous deadline for outcomes that depend on health checks and ejections.
const DEADLINE: Duration = Duration::from_secs(20);

struct Answer {
    status: u16,
    content_type: String,
    index: Option<u64>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let index = header("x-consul-index").map(|v| v.parse().expect("numeric X-Consul-Index"));
    let status = resp.status().as_u16();
    let body = String::from_utf8(resp.bytes().await.expect("body").to_vec()).expect("utf-8");
    Answer {
        status,
        content_type,
        index,
        body,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Tiny parser for the text format 0.0.4 as the sidecars write it (no escapes in values).
fn parse_stats(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("number"),
            }
        })
        .collect()
}

/// Sum of the samples of `name` whose labels include all of `want` (`None`: no sample).
fn stat(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!hits.is_empty()).then(|| hits.iter().sum())
}

async fn scrape(http: &reqwest::Client, spine: &DemoSpine, id: &str) -> Vec<Sample> {
    let url = spine.sidecar_stats_url(id).expect("known instance");
    let a = send(http.get(url)).await;
    assert_eq!(a.status, 200);
    parse_stats(&a.body)
}

/// Compiles only for values that can move into a spawned task.
fn assert_send<T: Send + 'static>(_: T) {}

/// Polls `check` every 100 ms until it holds; returns how long that took.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each test starts a whole spine: run them one at a time on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_speaks_the_consul_api_subset() {
    let _serial = SERIAL.lock().await;
    let spine = DemoSpine::start(DemoConfig {
        traffic_rps: 0.0,
        ..DemoConfig::default()
    })
    .await
    .unwrap();
    let http = client();
    let base = spine.registry_url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // Catalog: six services plus their sidecar-proxy registrations, tags merged.
    let a = send(http.get(format!("{base}/v1/catalog/services"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/json");
    assert!(a.index.is_some_and(|i| i > 0));
    let catalog = a.json();
    let names: Vec<&str> = catalog
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let services = [
        "gateway",
        "identity",
        "notification",
        "payment",
        "photo",
        "portal",
    ];
    let mut expected: Vec<String> = services
        .iter()
        .flat_map(|s| [(*s).to_owned(), format!("{s}-sidecar-proxy")])
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(catalog["identity"], serde_json::json!(["v1", "v2"]));
    assert_eq!(catalog["photo-sidecar-proxy"], serde_json::json!(["v1"]));

    // Health: three identity instances with version meta, tags, metrics_url, live checks.
    let a = send(http.get(format!("{base}/v1/health/service/identity"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "application/json");
    let health = a.json();
    let entries = health.as_array().unwrap();
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["identity-v1-1", "identity-v1-2", "identity-v2-1"]);
    for e in entries {
        let svc = &e["Service"];
        let id = svc["ID"].as_str().unwrap();
        let version = svc["Meta"]["version"].as_str().unwrap();
        assert_eq!(svc["Tags"], serde_json::json!([version]));
        assert_eq!(svc["Address"], "127.0.0.1");
        assert_eq!(
            svc["Meta"]["metrics_url"].as_str(),
            spine.sidecar_stats_url(id).as_deref()
        );
        let checks = e["Checks"].as_array().unwrap();
        assert_eq!(checks[0]["CheckID"], "serfHealth");
        assert_eq!(checks[1]["CheckID"], format!("service:{id}"));
        assert_eq!(checks[1]["Status"], "passing");
        assert_eq!(
            checks[1]["Output"],
            format!(
                "HTTP GET http://127.0.0.1:{}/health: 200 OK Output: {{\"up\":true}}",
                svc["Port"]
            )
        );
    }
    assert_eq!(entries[2]["Service"]["Meta"]["version"], "v2");
    let a = send(http.get(format!("{base}/v1/health/service/nope"))).await;
    assert_eq!((a.status, a.body.as_str()), (200, "[]"));
    let a = send(http.get(format!("{base}/v1/health/service/identity?passing"))).await;
    assert_eq!(a.json().as_array().unwrap().len(), 3);

    // Splitter 80/20 with its indexes; resolver subsets; a missing entry is a text 404.
    let splitter_url = format!("{base}/v1/config/service-splitter/identity");
    let a = send(http.get(&splitter_url)).await;
    assert_eq!(a.status, 200);
    let split = a.json();
    assert_eq!(split["Kind"], "service-splitter");
    assert_eq!(
        split["Splits"],
        serde_json::json!([{"Weight":80,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}])
    );
    let modify = split["ModifyIndex"].as_u64().unwrap();
    let create = split["CreateIndex"].as_u64().unwrap();
    assert!(a.index.unwrap() >= modify);
    let a = send(http.get(format!("{base}/v1/config/service-resolver/identity"))).await;
    let resolver = a.json();
    let subsets: Vec<&String> = resolver["Subsets"].as_object().unwrap().keys().collect();
    assert_eq!(subsets, ["v1", "v2"]);
    let a = send(http.get(format!("{base}/v1/config/service-splitter/notification"))).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.content_type, "text/plain; charset=utf-8");
    assert_eq!(
        a.body,
        "Config entry not found for \"service-splitter\" / \"notification\""
    );

    // CAS with a stale index: 200 false, nothing changed.
    let body_70_30 = r#"{"kind":"service-splitter","name":"identity","splits":[{"weight":70,"service_subset":"v1"},{"weight":30,"service_subset":"v2"}]}"#;
    let a = send(
        http.put(format!("{base}/v1/config?cas={}", modify - 1))
            .body(body_70_30),
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "false"));
    assert_eq!(send(http.get(&splitter_url)).await.json(), split);

    // CAS with the current index: true, new ModifyIndex, same CreateIndex.
    let a = send(
        http.put(format!("{base}/v1/config?cas={modify}"))
            .body(body_70_30),
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "true"));
    let after = send(http.get(&splitter_url)).await.json();
    assert_eq!(after["Splits"][0]["Weight"], 70);
    assert_eq!(after["Splits"][1]["Weight"], 30);
    assert!(after["ModifyIndex"].as_u64().unwrap() > modify);
    assert_eq!(after["CreateIndex"].as_u64(), Some(create));

    // Validation failures are 500 text with Consul's wording; bad JSON is 400.
    let a = send(http.put(format!("{base}/v1/config")).body(
        r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":70,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}]}"#,
    ))
    .await;
    assert_eq!(a.status, 500);
    assert_eq!(a.content_type, "text/plain; charset=utf-8");
    assert_eq!(
        a.body,
        "the sum of all split weights must be 100, not 90.000000"
    );
    let a = send(http.put(format!("{base}/v1/config")).body(
        r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":50,"ServiceSubset":"v1"},{"Weight":50,"ServiceSubset":"v3"}]}"#,
    ))
    .await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (
            500,
            "service \"identity\" does not have a subset named \"v3\""
        )
    );
    let a = send(
        http.put(format!("{base}/v1/config"))
            .body(r#"{"Kind":"service-splitter","#),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body.starts_with("Request decoding failed: "),
        "{}",
        a.body
    );
    let a = send(
        http.put(format!("{base}/v1/config"))
            .body(r#"{"Kind":"service-router","Name":"identity"}"#),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("service-router"), "{}", a.body);
    let unchanged = send(http.get(&splitter_url)).await.json();
    assert_eq!(unchanged, after, "failed writes change nothing");

    // Leader probe.
    let a = send(http.get(format!("{base}/v1/status/leader"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), Value::from(base.trim_start_matches("http://")));

    // Instances and controls.
    let instances = spine.instances();
    assert_eq!(instances.len(), 10);
    assert!(instances.windows(2).all(|w| w[0].id < w[1].id));
    assert!(instances.iter().all(|i| i.running));
    let v2 = instances.iter().find(|i| i.id == "identity-v2-1").unwrap();
    assert_eq!(
        (v2.service.as_str(), v2.version.as_str()),
        ("identity", "v2")
    );
    assert!(spine.sidecar_stats_url("nope").is_none());
    // The io layer drives the controls from spawned tasks.
    assert_send(spine.clone());
    let s = spine.clone();
    assert_send(async move { s.stop_instance("photo-1").await });
    let s = spine.clone();
    assert_send(async move { s.start_instance("photo-1").await });
    assert!(matches!(
        spine.stop_instance("nope").await,
        Err(DemoError::UnknownInstance(_))
    ));

    // Clusters exist before any traffic: payment's sidecar already has its notification lane.
    let stats = scrape(&http, &spine, "payment-1").await;
    let notification = [("consul_destination_service", "notification")];
    assert_eq!(
        stat(&stats, "envoy_cluster_membership_total", &notification),
        Some(1.0)
    );
    assert_eq!(
        stat(&stats, "envoy_cluster_upstream_rq_total", &notification),
        Some(0.0)
    );

    spine.shutdown();
    assert!(matches!(
        spine.start_instance("photo-1").await,
        Err(DemoError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sidecar_splits_identity_80_20() {
    let _serial = SERIAL.lock().await;
    let spine = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let http = client();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = scrape(&http, &spine, "gateway-1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = scrape(&http, &spine, "gateway-1").await;

    let completed = |samples: &[Sample], subset: &str| {
        stat(
            samples,
            "envoy_cluster_upstream_rq_completed",
            &[
                ("consul_destination_service", "identity"),
                ("consul_destination_service_subset", subset),
            ],
        )
        .unwrap_or_else(|| panic!("no identity {subset} cluster"))
    };
    let v1 = completed(&after, "v1") - completed(&before, "v1");
    let v2 = completed(&after, "v2") - completed(&before, "v2");
    let total = v1 + v2;
    eprintln!(
        "identity over 2 s: v1 {v1}, v2 {v2} ({:.1} % v2)",
        100.0 * v2 / total
    );
    assert!(total >= 40.0, "too little traffic: {total}");
    // Smooth WRR is exact per 5 picks; only requests in flight at either scrape blur it.
    assert!(
        (v2 - total * 0.2).abs() <= 3.0,
        "v2 {v2} of {total} is not 20 %"
    );

    // The Consul label set, with envoy_cluster_name being the subset.
    let v2_series: Vec<&Sample> = after
        .iter()
        .filter(|s| s.name == "envoy_cluster_upstream_rq_completed")
        .filter(|s| {
            s.labels
                .get("consul_destination_service_subset")
                .map(String::as_str)
                == Some("v2")
        })
        .collect();
    assert_eq!(v2_series.len(), 1);
    let labels = &v2_series[0].labels;
    for (k, v) in [
        ("local_cluster", "gateway"),
        ("consul_source_service", "gateway"),
        ("consul_source_namespace", "default"),
        ("consul_source_partition", "default"),
        ("consul_source_datacenter", "dc1"),
        ("consul_destination_custom_hash", ""),
        ("consul_destination_service", "identity"),
        ("consul_destination_namespace", "default"),
        ("consul_destination_partition", ""),
        ("consul_destination_datacenter", "dc1"),
        ("consul_destination_routing_type", "internal"),
        ("consul_destination_target", "v2.identity.default.dc1"),
        ("envoy_cluster_name", "v2"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert!(
        labels["consul_destination_full_target"].starts_with("v2.identity.default.dc1.internal.")
    );
    assert!(!labels["consul_destination_trust_domain"].is_empty());
    // Healthy traffic: everything that reached identity v1 came back 2xx, with latencies.
    let v1_labels = [
        ("consul_destination_service", "identity"),
        ("consul_destination_service_subset", "v1"),
    ];
    let ok = stat(
        &after,
        "envoy_cluster_upstream_rq_xx",
        &[
            v1_labels[0],
            v1_labels[1],
            ("envoy_response_code_class", "2"),
        ],
    );
    assert_eq!(ok, Some(completed(&after, "v1")));
    assert!(stat(&after, "envoy_cluster_upstream_rq_time_count", &v1_labels).unwrap() > 0.0);
    assert_eq!(
        stat(&after, "envoy_cluster_membership_healthy", &v1_labels),
        Some(2.0)
    );

    spine.shutdown();
}

async fn photo_critical(http: &reqwest::Client, base: &str, want: &str) -> bool {
    let a = send(http.get(format!("{base}/v1/health/service/photo"))).await;
    a.json()
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["Checks"][1]["Status"] == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_both_photo_instances_opens_the_breaker_and_start_heals_it() {
    let _serial = SERIAL.lock().await;
    let spine = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let base = spine.registry_url();
    let photo = [("consul_destination_service", "photo")];
    let to_gateway_5xx = [
        ("consul_destination_service", "gateway"),
        ("envoy_response_code_class", "5"),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gw = scrape(&http, &spine, "gateway-1").await;
    assert_eq!(
        stat(&gw, "envoy_cluster_membership_healthy", &photo),
        Some(2.0)
    );
    assert!(stat(&gw, "envoy_cluster_upstream_rq_completed", &photo).unwrap() > 0.0);
    let portal_5xx_before = stat(
        &scrape(&http, &spine, "portal-1").await,
        "envoy_cluster_upstream_rq_xx",
        &to_gateway_5xx,
    )
    .unwrap_or(0.0);
    let photo_ports: Vec<u64> = send(http.get(format!("{base}/v1/health/service/photo")))
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["Port"].as_u64().unwrap())
        .collect();

    for id in ["photo-1", "photo-2"] {
        tokio::time::timeout(DEADLINE, spine.stop_instance(id))
            .await
            .expect("stop_instance returns")
            .unwrap();
    }
    let stopped = Instant::now();
    for port in &photo_ports {
        assert!(
            tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .is_err(),
            "a stopped instance's port must refuse connections"
        );
    }
    let running: Vec<bool> = spine
        .instances()
        .iter()
        .filter(|i| i.service == "photo")
        .map(|i| i.running)
        .collect();
    assert_eq!(running, [false, false]);

    wait_for("gateway's photo membership_healthy 0", || async {
        let gw = scrape(&http, &spine, "gateway-1").await;
        stat(&gw, "envoy_cluster_membership_healthy", &photo) == Some(0.0)
    })
    .await;
    let open = stopped.elapsed();
    wait_for("photo critical in the registry", || {
        photo_critical(&http, &base, "critical")
    })
    .await;
    let critical = stopped.elapsed();
    wait_for("portal's 5xx to gateway rising", || async {
        let portal = scrape(&http, &spine, "portal-1").await;
        stat(&portal, "envoy_cluster_upstream_rq_xx", &to_gateway_5xx).unwrap_or(0.0)
            > portal_5xx_before
    })
    .await;
    let errors_up = stopped.elapsed();
    eprintln!(
        "after stop: gateway's photo membership_healthy 0 by {open:?}, photo critical in the \
         registry by {critical:?}, portal's 5xx to gateway rising by {errors_up:?}"
    );
    // With every host out, the sidecar answers at once with the design's message.
    let gw_sidecar = spine
        .sidecar_stats_url("gateway-1")
        .unwrap()
        .replace("/stats/prometheus", "/upstream/photo/photo");
    let a = send(http.get(&gw_sidecar)).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        "CircuitOpen: 'photo' temporarily unavailable (2/2 failures)"
    );
    let health = send(http.get(format!("{base}/v1/health/service/photo")))
        .await
        .json();
    let output = health[0]["Checks"][1]["Output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(output.contains("connect: connection refused"), "{output}");

    for id in ["photo-1", "photo-2"] {
        tokio::time::timeout(DEADLINE, spine.start_instance(id))
            .await
            .expect("start_instance returns")
            .unwrap();
    }
    let started = Instant::now();
    wait_for("photo membership back to 2, no ejections", || async {
        let gw = scrape(&http, &spine, "gateway-1").await;
        stat(&gw, "envoy_cluster_membership_healthy", &photo) == Some(2.0)
            && stat(
                &gw,
                "envoy_cluster_outlier_detection_ejections_active",
                &photo,
            ) == Some(0.0)
    })
    .await;
    let healed = started.elapsed();
    wait_for("photo passing in the registry", || {
        photo_critical(&http, &base, "passing")
    })
    .await;
    let passing = started.elapsed();
    eprintln!(
        "after start: membership 2 and ejections 0 by {healed:?}, photo passing in the \
         registry by {passing:?}"
    );
    assert!(spine.instances().iter().all(|i| i.running));
    let a = send(http.get(&gw_sidecar)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    spine.shutdown();
}

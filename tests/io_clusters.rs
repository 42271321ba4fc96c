//! io against stub sidecars serving Envoy's `/clusters?format=json` beside their stats: a
//! sidecar with the endpoint feeds which host is ejected into the model; one without it
//! (404) is asked once, then left alone, and no error is shown for it; a broken body is an
//! error of that source only (and asked again after each scrape); a host list whose
//! sidecar's membership and ejection gauges do not move is not fetched again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use spine_dash::io::{self, IoConfig, IoEvent, Wake};
use spine_dash::metrics::HostHealth;
use spine_dash::model::hosts::HostStatus;
use spine_dash::model::types::{LaneKey, RegistryKind};
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::consul::ConsulClient;

const STATS: &str = include_str!("fixtures/envoy/stats_prometheus.txt");
const CLUSTERS: &str = include_str!("fixtures/envoy/clusters.json");

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn entry(
    id: &str,
    service: &str,
    address: &str,
    port: u16,
    metrics_url: Option<&str>,
) -> serde_json::Value {
    let mut meta = serde_json::json!({"version": "v1"});
    if let Some(url) = metrics_url {
        meta["metrics_url"] = url.into();
    }
    serde_json::json!({
        "Node": {"Node": "n1", "Address": address, "Datacenter": "dc1"},
        "Service": {"ID": id, "Service": service, "Tags": ["v1"], "Address": address, "Port": port,
                    "Meta": meta},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "", "ServiceID": ""}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_come_from_clusters_json_and_a_404_is_left_alone() {
    let asked_404 = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked_404);
    let sidecars = serve(
        Router::new()
            .route("/with/stats/prometheus", get(|| async { STATS }))
            .route("/with/clusters", get(|| async { CLUSTERS }))
            .route("/without/stats/prometheus", get(|| async { STATS }))
            .route(
                "/without/clusters",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { (StatusCode::NOT_FOUND, "Not Found") }
                }),
            )
            .route("/broken/stats/prometheus", get(|| async { STATS }))
            .route(
                "/broken/clusters",
                get(|| async { "{\"cluster_statuses\": 7}" }),
            ),
    )
    .await;
    let with = format!("{sidecars}/with/stats/prometheus");
    let without = format!("{sidecars}/without/stats/prometheus");
    let broken = format!("{sidecars}/broken/stats/prometheus");
    let portal = serde_json::json!([
        entry("portal-1", "portal", "127.0.0.1", 1, Some(&with)),
        entry("portal-2", "portal", "127.0.0.1", 2, Some(&without)),
        entry("portal-3", "portal", "127.0.0.1", 3, Some(&broken)),
    ])
    .to_string();
    let payment = serde_json::json!([
        entry("payment-1", "payment", "10.0.3.11", 21000, None),
        entry("payment-2", "payment", "10.0.3.12", 21000, None),
        entry("payment-3", "payment", "10.0.3.13", 21000, None),
    ])
    .to_string();
    let registry = serve(
        Router::new()
            .route(
                "/v1/catalog/services",
                get(|| async { r#"{"payment":["v1"],"portal":["v1"]}"# }),
            )
            .route(
                "/v1/health/service/portal",
                get(move || async move { portal }),
            )
            .route(
                "/v1/health/service/payment",
                get(move || async move { payment }),
            )
            .route("/v1/health/state/any", get(|| async { "[]" }))
            .route("/v1/config/service-resolver", get(|| async { "[]" }))
            .route("/v1/config/service-splitter", get(|| async { "[]" })),
    )
    .await;

    let config = IoConfig {
        registry_interval: Duration::from_millis(200),
        scrape_interval: Duration::from_millis(200),
        scrape_timeout: Duration::from_secs(1),
        read_only: false,
        ..IoConfig::default()
    };
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(ConsulClient::new(&registry).unwrap(), None, &config, &wake);
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: registry,
        datacenter: None,
        writable: true,
    };
    let mut model = Model::new(info, config.registry_interval, config.scrape_interval);

    // Run until every sidecar was scraped at least 5 times.
    let mut scrapes = std::collections::BTreeMap::<String, usize>::new();
    let mut clusters_events = std::collections::BTreeMap::<String, usize>::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while scrapes.len() < 3 || scrapes.values().any(|&n| n < 5) {
        let event = tokio::time::timeout_at(deadline, io.events.recv())
            .await
            .expect("deadline")
            .expect("io alive");
        match &event {
            IoEvent::Scrape { url, .. } => *scrapes.entry(url.clone()).or_default() += 1,
            IoEvent::Clusters { url, .. } => {
                *clusters_events.entry(url.clone()).or_default() += 1;
            }
            _ => {}
        }
        model.apply(event, Instant::now());
    }

    assert_eq!(asked_404.load(Ordering::SeqCst), 1, "a 404 is asked once");
    assert!(!clusters_events.contains_key(&without), "no event for it");
    assert!(!model.hosts.by_sidecar.contains_key(&without));
    assert_eq!(
        model.sidecars[&without].status.last_error, None,
        "no error shown"
    );
    assert_eq!(
        clusters_events[&with], 1,
        "same gauges, same hosts: asked once ({clusters_events:?})"
    );
    assert!(
        clusters_events[&broken] >= 4,
        "a failed fetch is retried after each good scrape ({clusters_events:?})"
    );
    let broken_error = model.hosts.by_sidecar[&broken]
        .status
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(
        broken_error.starts_with("bad clusters body: not Envoy /clusters JSON")
            && broken_error.ends_with(&format!("({sidecars}/broken/clusters?format=json)")),
        "{broken_error}"
    );
    assert_eq!(
        model.sidecars[&broken].status.last_error, None,
        "its stats are fine"
    );

    let payment_lane = LaneKey {
        caller: "portal".into(),
        service: "payment".into(),
        version: "v1".into(),
    };
    let host = |port_ip: &str, id: &str, health: HostHealth, by: &[&str]| HostStatus {
        address: port_ip.into(),
        port: 21000,
        instance_id: Some(id.into()),
        health,
        ejected_by: by.iter().map(|s| (*s).to_owned()).collect(),
        seen_by: 1,
    };
    assert_eq!(
        model.lane_hosts(&payment_lane),
        vec![
            host("10.0.3.11", "payment-1", HostHealth::Healthy, &[]),
            host("10.0.3.12", "payment-2", HostHealth::Healthy, &[]),
            host("10.0.3.13", "payment-3", HostHealth::Ejected, &["portal-1"]),
        ]
    );
    let instances = &model.services["payment"].instances;
    let ejected: Vec<Option<bool>> = instances
        .iter()
        .map(|i| model.instance_ejected(i))
        .collect();
    assert_eq!(ejected, [Some(false), Some(false), Some(true)]);
}

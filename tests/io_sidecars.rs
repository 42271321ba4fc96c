//! io against stub sidecars: a garbage body and a hanging sidecar each mark only their own
//! source failed, with the error text; a good sidecar keeps updating its lanes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use spine_dash::io::{self, IoConfig, Wake};
use spine_dash::model::types::RegistryKind;
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::consul::ConsulClient;

const GOOD_T0: &str = include_str!("fixtures/envoy/stats_prometheus.txt");

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn health_entry(id: &str, metrics_url: &str) -> serde_json::Value {
    serde_json::json!({
        "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
        "Service": {"ID": id, "Service": "portal", "Tags": ["v1"], "Address": "127.0.0.1", "Port": 1,
                    "Meta": {"version": "v1", "metrics_url": metrics_url}},
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "", "ServiceID": ""}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sidecars_fail_alone() {
    let sidecars = serve(
        Router::new()
            .route("/good/stats/prometheus", get(|| async { GOOD_T0 }))
            .route(
                "/garbage/stats/prometheus",
                get(|| async { "<html><body>502 Bad Gateway</body></html>" }),
            )
            .route(
                "/hang/stats/prometheus",
                get(|| async {
                    tokio::time::sleep(Duration::from_hours(1)).await;
                    ""
                }),
            ),
    )
    .await;
    let good = format!("{sidecars}/good/stats/prometheus");
    let garbage = format!("{sidecars}/garbage/stats/prometheus");
    let hang = format!("{sidecars}/hang/stats/prometheus");
    let health = serde_json::json!([
        health_entry("portal-1", &good),
        health_entry("portal-2", &garbage),
        health_entry("portal-3", &hang),
    ])
    .to_string();
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
            // The bulk reads the Consul client follows (no checks, resolvers, splitters).
            .route("/v1/health/state/any", get(|| async { "[]" }))
            .route("/v1/config/service-resolver", get(|| async { "[]" }))
            .route("/v1/config/service-splitter", get(|| async { "[]" })),
    )
    .await;

    let config = IoConfig {
        registry_interval: Duration::from_millis(300),
        scrape_interval: Duration::from_millis(300),
        scrape_timeout: Duration::from_millis(500),
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

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = |m: &Model| {
        m.sidecars.len() == 3
            && m.sidecars[&good].status.last_ok.is_some()
            && m.sidecars[&garbage].status.consecutive_failures >= 2
            && m.sidecars[&hang].status.consecutive_failures >= 2
            && m.sidecars_with_window() >= 1
    };
    while !done(&model) {
        let event = tokio::time::timeout_at(deadline, io.events.recv())
            .await
            .expect("deadline")
            .expect("io alive");
        model.apply(event, Instant::now());
    }
    let now = Instant::now();
    let err = |url: &str| {
        model.sidecars[url]
            .status
            .last_error
            .clone()
            .unwrap_or_default()
    };
    assert!(
        err(&garbage).contains("bad stats body"),
        "garbage: {}",
        err(&garbage)
    );
    assert!(
        err(&hang).contains("no complete answer within"),
        "hang: {}",
        err(&hang)
    );
    assert!(
        err(&hang).contains(&hang),
        "the URL goes with the error: {}",
        err(&hang)
    );
    assert_eq!(model.sidecars[&good].status.last_error, None);
    assert!(
        !model.sidecars[&good]
            .status
            .is_stale(now, config.scrape_interval)
    );
    // The good sidecar's lanes exist (same body twice: 0 rps, a real window, not "no data").
    let lanes: Vec<_> = model
        .lanes
        .values()
        .filter(|l| l.key.caller == "portal")
        .collect();
    assert!(
        lanes
            .iter()
            .any(|l| l.stats.as_ref().is_some_and(|s| s.rps == 0.0)),
        "{lanes:?}"
    );
}

//! Registry requests per refresh, measured at the registry: a synthetic spine of N
//! services (`demo::synthetic`), the dashboard's Consul adapter following it with blocking
//! queries, and the answers the registry sends per change. Shared by
//! `tests/registry_requests.rs` (asserts) and `benches/registry_requests.rs` (prints).

use std::sync::Arc;
use std::time::Duration;

use spine_dash::demo::synthetic::{SyntheticConfig, SyntheticSpine};
use spine_dash::model::types::{Health, RegistrySnapshot};
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::{FeedUpdate, FollowContext, Registry as _};
use tokio::sync::{Notify, mpsc};

/// Answers the registry sent, per situation.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    /// Services.
    pub services: usize,
    /// One full poll (`ConsulClient::snapshot`), for comparison.
    pub poll: u64,
    /// Start of following: the bulk reads and every service's instances.
    pub initial: u64,
    /// One instance's check changes.
    pub health_change: u64,
    /// One service's split changes.
    pub split_change: u64,
    /// One instance registers.
    pub new_instance: u64,
    /// Nothing changes: answers per blocking wait (`None`: not measured).
    pub idle_per_wait: Option<f64>,
}

/// Requests the measurement itself sends (writes), left out of the counts.
const OWN_PATHS: [&str; 2] = ["/v1/config", "/v1/agent/service/register"];

fn answered(spine: &SyntheticSpine) -> u64 {
    spine
        .registry_requests()
        .iter()
        .filter(|(path, _)| !OWN_PATHS.contains(&path.as_str()))
        .map(|(_, n)| n)
        .sum()
}

async fn next_snapshot(rx: &mut mpsc::Receiver<FeedUpdate>) -> RegistrySnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_mins(2);
    loop {
        let update = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a snapshot within 120 s")
            .expect("follow running");
        match update.result {
            Ok(Some(s)) => return s,
            Ok(None) => {}
            Err(e) => panic!("follow failed: {e}"),
        }
    }
}

async fn snapshot_where(
    rx: &mut mpsc::Receiver<FeedUpdate>,
    done: impl Fn(&RegistrySnapshot) -> bool,
) {
    while !done(&next_snapshot(rx).await) {}
}

/// Time for trailing answers to arrive after the snapshot that shows a change.
const SETTLE: Duration = Duration::from_millis(400);

/// Follows `spine` with blocking queries of `wait`; returns the snapshot channel and the
/// follow task.
fn follow(url: &str, wait: Duration) -> (mpsc::Receiver<FeedUpdate>, tokio::task::JoinHandle<()>) {
    let client = ConsulClient::new(url)
        .expect("registry URL")
        .with_blocking_wait(wait);
    let (tx, rx) = mpsc::channel(64);
    let ctx = FollowContext {
        interval: Duration::from_millis(50),
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let task = tokio::spawn(async move { client.follow(ctx).await });
    (rx, task)
}

/// Measures a spine of `services` services (10 instances each); `idle_window`: also count
/// answers while nothing changes, with 1 s blocking waits, over that long.
pub async fn measure(services: usize, idle_window: Option<Duration>) -> Counts {
    let spine = SyntheticSpine::start(SyntheticConfig {
        services,
        ..SyntheticConfig::default()
    })
    .await
    .expect("synthetic spine");
    let url = spine.registry_url();
    let http = reqwest::Client::new();

    let before = answered(&spine);
    ConsulClient::new(&url)
        .expect("registry URL")
        .snapshot()
        .await
        .expect("poll");
    let poll = answered(&spine) - before;

    // Long waits: no blocking query expires while changes are measured.
    let before = answered(&spine);
    let (mut rx, task) = follow(&url, Duration::from_mins(5));
    let first = next_snapshot(&mut rx).await;
    assert_eq!(first.services.len(), services);
    tokio::time::sleep(SETTLE).await;
    let initial = answered(&spine) - before;

    let target = first.services[1].instances[0].id.clone();
    let before = answered(&spine);
    assert!(spine.set_health(&target, Health::Critical));
    snapshot_where(&mut rx, |s| {
        s.services
            .iter()
            .flat_map(|x| &x.instances)
            .any(|i| i.id == target && i.health == Health::Critical)
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    let health_change = answered(&spine) - before;

    let split_service = first.services[0].name.clone();
    let before = answered(&spine);
    let body = format!(
        r#"{{"Kind":"service-splitter","Name":"{split_service}","Splits":[{{"Weight":50,"ServiceSubset":"v1"}},{{"Weight":50,"ServiceSubset":"v2"}}]}}"#
    );
    let put = http
        .put(format!("{url}/v1/config"))
        .body(body)
        .send()
        .await
        .expect("PUT /v1/config");
    assert_eq!(put.text().await.expect("answer"), "true");
    snapshot_where(&mut rx, |s| {
        s.services.iter().any(|x| {
            x.name == split_service
                && x.split
                    .as_ref()
                    .is_some_and(|c| c.split.weight_of("v2") == Some(5000))
        })
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    let split_change = answered(&spine) - before;

    let new_service = first.services[2].name.clone();
    let new_id = format!("{new_service}-extra");
    let before = answered(&spine);
    let body = format!(
        r#"{{"ID":"{new_id}","Name":"{new_service}","Port":9,"Meta":{{"version":"v1","metrics_url":"http://127.0.0.1:9/stats/prometheus"}},"Check":{{"TTL":"1h","Status":"passing"}}}}"#
    );
    let put = http
        .put(format!("{url}/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .expect("register");
    assert!(put.status().is_success());
    snapshot_where(&mut rx, |s| {
        s.services
            .iter()
            .flat_map(|x| &x.instances)
            .any(|i| i.id == new_id)
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    let new_instance = answered(&spine) - before;
    task.abort();

    let idle_per_wait = match idle_window {
        None => None,
        Some(window) => {
            let wait = Duration::from_secs(1);
            let (mut rx, task) = follow(&url, wait);
            next_snapshot(&mut rx).await;
            tokio::time::sleep(wait * 2).await;
            let before = answered(&spine);
            tokio::time::sleep(window).await;
            let n = answered(&spine) - before;
            task.abort();
            Some(n as f64 / (window.as_secs_f64() / wait.as_secs_f64()))
        }
    };
    spine.shutdown();
    Counts {
        services,
        poll,
        initial,
        health_change,
        split_change,
        new_instance,
        idle_per_wait,
    }
}

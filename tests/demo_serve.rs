//! `spine-dash demo --serve` as the real binary: it prints the registry URL (one line) and
//! serves until SIGTERM. With `--size 2000` the registry lists 2,000 services and 20,000
//! instances (a tenth with two versions), and a sidecar URL taken from the registry serves
//! stats the parser reads, honouring Envoy's `usedonly` and `filter`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use spine_dash::io::scrape::stats_request_url;
use spine_dash::metrics::parse_envoy_stats;
use spine_dash::registry::Registry as _;
use spine_dash::registry::consul::ConsulClient;

/// Each test starts a whole spine: one at a time on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The server process; killed (SIGKILL) if the test ends without stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `spine-dash demo --serve ARGS…` and reads the URL line it prints.
fn start(args: &[&str]) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spine-dash"))
        .args(["demo", "--serve"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_mins(2))
        .expect("the URL line within 120 s");
    (server, line.trim().to_owned())
}

/// Sends SIGTERM by PID and checks that the server exits cleanly.
fn stop(mut server: Server) {
    let pid = server.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    for _ in 0..300 {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("still running 30 s after SIGTERM");
}

/// Family names (`# TYPE` lines) of a stats body.
fn families(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_spine_of_2000_services_serves_registry_and_sidecars() {
    let _serial = SERIAL.lock().await;
    let (server, url) = start(&["--size", "2000"]);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // The dashboard's own Consul adapter reads it.
    let client = ConsulClient::new(&url).unwrap();
    let snapshot = client.snapshot().await.unwrap();
    assert_eq!(snapshot.services.len(), 2000);
    let instances: usize = snapshot.services.iter().map(|s| s.instances.len()).sum();
    assert_eq!(instances, 20_000);
    let versioned = snapshot
        .services
        .iter()
        .filter(|s| s.subsets.len() == 2)
        .count();
    assert_eq!(versioned, 200, "a tenth with two versions");
    assert!(
        snapshot
            .services
            .iter()
            .filter(|s| s.subsets.len() == 2)
            .all(|s| s.split.is_some()),
        "and a split"
    );
    let critical = snapshot
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| i.health == spine_dash::model::types::Health::Critical)
        .count();
    assert!(critical > 0 && critical < 200, "{critical}");

    // A sidecar, as the registry lists it.
    let caller = snapshot
        .services
        .iter()
        .find(|s| s.name == "svc-0001")
        .unwrap();
    let metrics_url = caller.instances[0].metrics_url.clone().unwrap();
    assert!(metrics_url.contains("/s/svc-0001-"), "{metrics_url}");
    let http = reqwest::Client::new();
    let get = |u: String| {
        let http = http.clone();
        async move {
            let resp = http.get(&u).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{u}");
            resp.text().await.unwrap()
        }
    };
    let full = get(metrics_url.clone()).await;
    let filtered = get(stats_request_url(&metrics_url)).await;
    let parsed_full = parse_envoy_stats(&full).unwrap();
    let parsed = parse_envoy_stats(&filtered).unwrap();
    let upstreams = |s: &spine_dash::metrics::SidecarScrape| {
        s.clusters
            .iter()
            .filter(|c| !c.id.is_local())
            .map(|c| c.id.clone())
            .collect::<Vec<_>>()
    };
    assert!(!upstreams(&parsed).is_empty(), "svc-0001 calls others");
    assert_eq!(upstreams(&parsed), upstreams(&parsed_full));
    assert!(parsed.uptime_secs.is_some());
    let kept = families(&filtered);
    let allowed: BTreeSet<String> = [
        "envoy_cluster_upstream_rq_total",
        "envoy_cluster_upstream_rq_completed",
        "envoy_cluster_upstream_rq_xx",
        "envoy_cluster_upstream_rq_pending_overflow",
        "envoy_cluster_upstream_rq_time",
        "envoy_cluster_membership_healthy",
        "envoy_cluster_membership_total",
        "envoy_cluster_outlier_detection_ejections_active",
        "envoy_cluster_circuit_breakers_default_rq_open",
        "envoy_cluster_circuit_breakers_default_rq_pending_open",
        "envoy_cluster_circuit_breakers_default_cx_open",
        "envoy_server_uptime",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert!(kept.is_subset(&allowed), "{kept:?}");
    let all = families(&full);
    assert!(all.contains("envoy_server_live") && all.contains("envoy_cluster_upstream_rq"));
    assert!(filtered.len() < full.len());
    // A bad regex is Envoy's 400.
    let bad = http
        .get(format!("{metrics_url}?filter=%28"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_six_service_demo_serves_too() {
    let _serial = SERIAL.lock().await;
    let (server, url) = start(&[]);
    let snapshot = ConsulClient::new(&url).unwrap().snapshot().await.unwrap();
    let names: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gateway",
            "identity",
            "notification",
            "payment",
            "photo",
            "portal"
        ]
    );
    stop(server);
}

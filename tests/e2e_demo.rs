//! End to end on the embedded demo spine, through the real adapters (Consul API, Envoy
//! stats) and the real io + model path. One test at a time: each starts a whole spine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::{self, IoConfig, IoHandle, Wake, fetch_text};
use spine_dash::metrics::parse_envoy_stats;
use spine_dash::model::types::{BreakerState, LaneKey, RegistryKind, Split};
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::{Registry, WriteOutcome};

/// These tests start a whole spine each: run them one at a time on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lane(caller: &str, service: &str, version: &str) -> LaneKey {
    LaneKey {
        caller: caller.into(),
        service: service.into(),
        version: version.into(),
    }
}

/// Completed requests from `caller_url`'s sidecar to identity v1 and v2.
async fn identity_counts(http: &reqwest::Client, stats_url: &str) -> (u64, u64) {
    let text = fetch_text(http, stats_url, Duration::from_secs(2), 32 << 20)
        .await
        .unwrap();
    let scrape = parse_envoy_stats(&text).unwrap();
    let count = |subset: &str| {
        scrape
            .clusters
            .iter()
            .filter(|c| c.id.service == "identity" && c.id.subset == subset)
            .map(|c| c.rq_completed)
            .sum::<u64>()
    };
    (count("v1"), count("v2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifting_identity_to_50_50_moves_the_observed_share() {
    let _serial = SERIAL.lock().await;
    let demo = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let consul = ConsulClient::new(&demo.registry_url()).unwrap();
    let snap = consul.snapshot().await.unwrap();
    let identity = snap.services.iter().find(|s| s.name == "identity").unwrap();
    let cfg = identity.split.clone().expect("identity has a splitter");
    assert_eq!(cfg.split, Split::from_pairs([("v1", 8000), ("v2", 2000)]));

    let half = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    let outcome = consul
        .write_split("identity", &half, cfg.modify_index)
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    let after = consul.snapshot().await.unwrap();
    let applied = after
        .services
        .iter()
        .find(|s| s.name == "identity")
        .unwrap()
        .split
        .clone()
        .unwrap();
    assert_eq!(applied.split, half, "the registry reflects the write");
    assert!(applied.modify_index > cfg.modify_index);

    // Count requests from the gateway's sidecar, from now on.
    let gateway = after.services.iter().find(|s| s.name == "gateway").unwrap();
    let stats_url = gateway.instances[0]
        .metrics_url
        .clone()
        .expect("metrics_url in Meta");
    let http = reqwest::Client::new();
    let (v1_0, v2_0) = identity_counts(&http, &stats_url).await;
    let start = Instant::now();
    let (mut dv1, mut dv2) = (0, 0);
    while dv1 + dv2 < 400 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} requests in 30 s",
            dv1 + dv2
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (v1, v2) = identity_counts(&http, &stats_url).await;
        (dv1, dv2) = (v1 - v1_0, v2 - v2_0);
    }
    let share = dv2 as f64 / (dv1 + dv2) as f64;
    eprintln!(
        "after 50/50: {dv1} v1 + {dv2} v2 requests in {:.1} s, v2 share {:.1} %",
        start.elapsed().as_secs_f64(),
        share * 100.0
    );
    assert!((0.45..=0.55).contains(&share), "v2 share {share}");
    demo.shutdown();
}

/// Applies io events to the model until `done` or 30 s; returns the delay.
async fn until(
    io: &mut IoHandle,
    model: &mut Model,
    what: &str,
    done: impl Fn(&Model) -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(model) {
        match tokio::time::timeout_at(deadline, io.events.recv()).await {
            Ok(Some(event)) => model.apply(event, Instant::now()),
            Ok(None) => panic!("io stopped"),
            Err(elapsed) => panic!(
                "{what}: not reached within 30 s ({elapsed}); lanes: {:#?}",
                model
                    .lanes
                    .values()
                    .map(|l| (&l.key, &l.stats))
                    .collect::<Vec<_>>()
            ),
        }
    }
    start.elapsed()
}

fn breaker(model: &Model, key: &LaneKey) -> Option<BreakerState> {
    model
        .lanes
        .get(key)
        .and_then(|l| l.stats.as_ref())
        .map(|s| s.breaker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_photo_opens_its_lane_and_errors_reach_portal() {
    let _serial = SERIAL.lock().await;
    let demo = DemoSpine::start(DemoConfig::default()).await.unwrap();
    let url = demo.registry_url();
    let wake: Wake = Arc::new(|| {});
    let config = IoConfig::default();
    let mut io = io::spawn(
        ConsulClient::new(&url).unwrap(),
        Some(demo.clone()),
        &config,
        &wake,
    );
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address: url,
        datacenter: None,
        writable: true,
    };
    let mut model = Model::new(info, config.registry_interval, config.scrape_interval);

    let photo = lane("gateway", "photo", "v1");
    let portal_gateway = lane("portal", "gateway", "v1");
    until(&mut io, &mut model, "photo lane closed with traffic", |m| {
        breaker(m, &photo) == Some(BreakerState::Closed)
            && m.lanes
                .get(&photo)
                .and_then(|l| l.stats.as_ref())
                .is_some_and(|s| s.rps > 1.0)
    })
    .await;

    let photos: Vec<String> = demo
        .instances()
        .into_iter()
        .filter(|i| i.service == "photo")
        .map(|i| i.id)
        .collect();
    assert_eq!(photos.len(), 2);
    for id in &photos {
        demo.stop_instance(id).await.unwrap();
    }
    let to_open = until(&mut io, &mut model, "photo lane open", |m| {
        breaker(m, &photo) == Some(BreakerState::Open)
    })
    .await;
    let to_portal_errors = until(&mut io, &mut model, "portal sees 5xx", |m| {
        m.lanes
            .get(&portal_gateway)
            .and_then(|l| l.stats.as_ref())
            .and_then(|s| s.err5xx_ratio)
            .is_some_and(|r| r > 0.5)
    })
    .await;
    eprintln!(
        "stop photo ×2 → lane open after {:.1} s; portal→gateway 5xx > 50 % after +{:.1} s",
        to_open.as_secs_f64(),
        to_portal_errors.as_secs_f64()
    );

    for id in &photos {
        demo.start_instance(id).await.unwrap();
    }
    let to_closed = until(&mut io, &mut model, "photo lane closed again", |m| {
        breaker(m, &photo) == Some(BreakerState::Closed)
            && m.lanes
                .get(&photo)
                .and_then(|l| l.stats.as_ref())
                .and_then(|s| s.err5xx_ratio)
                == Some(0.0)
    })
    .await;
    eprintln!(
        "start photo ×2 → lane closed, no 5xx after {:.1} s",
        to_closed.as_secs_f64()
    );
    drop(io);
    demo.shutdown();
}

//! End to end on the embedded demo spine, through the dashboard's normal path (Consul API,
//! Envoy stats and `/clusters` scrapes, io, model): injected faults drive the breaker states.
//! 2 s of latency on both payment instances saturates gateway → payment (request limits);
//! 100 % 5xx on one photo instance ejects it (`ejecting 1 of 2`, and the gateway sidecar's
//! `/clusters?format=json` names the host); clearing the faults closes the lanes again.
//! Delays are measured and printed, not asserted. One test at a time: each starts a spine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::{DemoConfig, DemoFault, DemoSpine};
use spine_dash::io::{self, IoConfig, IoHandle, Wake, clusters_url, fetch_text};
use spine_dash::metrics::{HostHealth, parse_clusters_json};
use spine_dash::model::types::{BreakerState, Instance, LaneKey, RegistryKind};
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::consul::ConsulClient;

/// These tests start a whole spine each: run them one at a time on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generous deadline for each outcome (a deadline, not a speed claim).
const DEADLINE: Duration = Duration::from_secs(40);

fn lane(caller: &str, service: &str, version: &str) -> LaneKey {
    LaneKey {
        caller: caller.into(),
        service: service.into(),
        version: version.into(),
    }
}

/// Applies io events to the model until `done`; returns the delay.
async fn until(
    io: &mut IoHandle,
    model: &mut Model,
    what: &str,
    done: impl Fn(&Model) -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(model) {
        match tokio::time::timeout_at(deadline, io.events.recv()).await {
            Ok(Some(event)) => model.apply(event, Instant::now()),
            Ok(None) => panic!("io stopped"),
            Err(elapsed) => panic!(
                "{what}: not reached within {DEADLINE:?} ({elapsed}); lanes: {:#?}",
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

fn rps(model: &Model, key: &LaneKey) -> f64 {
    model
        .lanes
        .get(key)
        .and_then(|l| l.stats.as_ref())
        .map_or(0.0, |s| s.rps)
}

fn closed_with_traffic(model: &Model, key: &LaneKey) -> bool {
    breaker(model, key) == Some(BreakerState::Closed) && rps(model, key) > 1.0
}

fn instance<'m>(model: &'m Model, id: &str) -> &'m Instance {
    model
        .services
        .values()
        .flat_map(|s| &s.instances)
        .find(|i| i.id == id)
        .unwrap()
}

fn ids(demo: &DemoSpine, service: &str) -> Vec<String> {
    demo.instances()
        .into_iter()
        .filter(|i| i.service == service)
        .map(|i| i.id)
        .collect()
}

/// Sends `n` calls at once through the gateway's sidecar to payment; returns how many were
/// refused by a request limit (503 with `x-envoy-overloaded: true`) and one such body.
async fn burst_through_gateway(demo: &DemoSpine, n: usize) -> (usize, Option<String>) {
    let url = demo
        .sidecar_stats_url("gateway-1")
        .unwrap()
        .replace("/stats/prometheus", "/upstream/payment/pay");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let calls = (0..n).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let resp = http
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .ok()?;
            let overloaded = resp.status().as_u16() == 503
                && resp
                    .headers()
                    .get("x-envoy-overloaded")
                    .is_some_and(|v| v == "true");
            let body = resp.text().await.unwrap_or_default();
            overloaded.then_some(body)
        })
    });
    let mut refused = 0;
    let mut body = None;
    for call in calls.collect::<Vec<_>>() {
        if let Some(b) = call.await.unwrap() {
            refused += 1;
            body = Some(b);
        }
    }
    (refused, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_drive_saturated_and_ejecting_and_clearing_closes() {
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
    let payment = lane("gateway", "payment", "v1");
    let photo = lane("gateway", "photo", "v1");
    let warm = until(
        &mut io,
        &mut model,
        "payment and photo closed with traffic",
        |m| closed_with_traffic(m, &payment) && closed_with_traffic(m, &photo),
    )
    .await;

    // 1. Latency: 2 s on both payment instances saturates gateway → payment.
    let slow = DemoFault {
        latency_ms: 2000,
        ..DemoFault::default()
    };
    for id in ids(&demo, "payment") {
        demo.set_fault(&id, slow).unwrap();
        assert_eq!(demo.fault(&id), Some(slow));
    }
    assert!(
        demo.instances()
            .iter()
            .filter(|i| i.service == "payment")
            .all(|i| i.fault == slow),
        "faults are shown in the instance states"
    );
    let to_saturated = until(&mut io, &mut model, "payment lane saturated", |m| {
        breaker(m, &payment) == Some(BreakerState::Saturated)
    })
    .await;
    // The mechanism: calls over the limits are refused at once, the Envoy way.
    let (refused, body) = burst_through_gateway(&demo, 40).await;
    assert!(
        refused > 0,
        "a burst of 40 over a full cluster is refused in part"
    );
    assert_eq!(
        body.as_deref(),
        Some("upstream connect error or disconnect/reset before headers. reset reason: overflow")
    );
    for id in ids(&demo, "payment") {
        demo.set_fault(&id, DemoFault::default()).unwrap();
    }
    let payment_closed = until(&mut io, &mut model, "payment lane closed again", |m| {
        closed_with_traffic(m, &payment)
    })
    .await;

    // 2. Errors: 100 % 5xx on photo-1 ejects it: ejecting 1 of 2.
    let photo_1 = ids(&demo, "photo")[0].clone();
    let broken = DemoFault {
        error_pct: 100,
        ..DemoFault::default()
    };
    demo.set_fault(&photo_1, broken).unwrap();
    let to_ejecting = until(&mut io, &mut model, "photo lane ejecting 1 of 2", |m| {
        breaker(m, &photo)
            == Some(BreakerState::Ejecting {
                ejected: 1,
                total: 2,
            })
    })
    .await;
    // The gateway sidecar's /clusters names the host, read directly…
    let (address, port) = {
        let i = instance(&model, &photo_1);
        (i.address.clone(), i.port)
    };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let clusters = clusters_url(&demo.sidecar_stats_url("gateway-1").unwrap()).unwrap();
    let body = fetch_text(&http, &clusters, Duration::from_secs(2), 1 << 20)
        .await
        .unwrap();
    let parsed = parse_clusters_json(body.as_bytes()).unwrap();
    let photo_cluster = parsed
        .iter()
        .find(|c| c.id.service == "photo")
        .expect("a photo cluster");
    let health_of = |p: u16| {
        photo_cluster
            .hosts
            .iter()
            .find(|h| h.address == address && h.port == p)
            .map(|h| h.health)
    };
    assert_eq!(health_of(port), Some(HostHealth::Ejected), "{body}");
    assert_eq!(photo_cluster.hosts.len(), 2);
    // …and through the dashboard's io and model.
    let to_host_shown = until(
        &mut io,
        &mut model,
        "photo-1 shown ejected by gateway-1",
        |m| {
            m.instance_ejected(instance(m, &photo_1)) == Some(true)
                && m.lane_hosts(&photo).iter().any(|h| {
                    h.instance_id.as_deref() == Some(photo_1.as_str())
                        && h.health == HostHealth::Ejected
                        && h.ejected_by == ["gateway-1"]
                })
        },
    )
    .await;
    let photo_2 = ids(&demo, "photo")[1].clone();
    assert_eq!(
        model.instance_ejected(instance(&model, &photo_2)),
        Some(false)
    );

    demo.set_fault(&photo_1, DemoFault::default()).unwrap();
    let photo_closed = until(
        &mut io,
        &mut model,
        "photo lane closed, photo-1 back",
        |m| {
            closed_with_traffic(m, &photo)
                && m.instance_ejected(instance(m, &photo_1)) == Some(false)
        },
    )
    .await;

    eprintln!(
        "warm-up {:.1} s; 2 s latency on payment ×2 → gateway→payment saturated after {:.1} s \
         ({refused}/40 of a burst refused with x-envoy-overloaded); cleared → closed with \
         traffic after {:.1} s; 100 % 5xx on {photo_1} → ejecting 1 of 2 after {:.1} s, shown \
         ejected by gateway-1 in the model after +{:.1} s; cleared → closed and back after {:.1} s",
        warm.as_secs_f64(),
        to_saturated.as_secs_f64(),
        payment_closed.as_secs_f64(),
        to_ejecting.as_secs_f64(),
        to_host_shown.as_secs_f64(),
        photo_closed.as_secs_f64(),
    );
    drop(io);
    demo.shutdown();
}

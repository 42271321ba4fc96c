//! The design's SDK calls on Consul (catalog form and KV form) and the KV-mode registry,
//! driven against the embedded demo spine's registry over loopback HTTP; and the demo
//! registry's blocking queries (a query waits for a change, or for its `wait`). One spine
//! at a time (a static lock), no traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::model::types::Split;
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::consul::kv::ConsulKvClient;
use spine_dash::registry::sdk::{LookupError, Registration, ServiceSdk};
use spine_dash::registry::{FeedUpdate, FollowContext, Registry, WriteOutcome};
use tokio::sync::{Mutex, Notify, mpsc};

/// Demo spines run one at a time.
static SPINE: Mutex<()> = Mutex::const_new(());

async fn quiet_spine() -> DemoSpine {
    DemoSpine::start(DemoConfig {
        traffic_rps: 0.0,
        ..DemoConfig::default()
    })
    .await
    .unwrap()
}

/// Polls `check` every 50 ms until it holds (deadline 20 s); returns how long it took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: no result within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_form_register_lookup_ttl_deregister() {
    let _one = SPINE.lock().await;
    let spine = quiet_spine().await;
    let sdk = ConsulClient::new(&spine.registry_url()).unwrap();

    let reg = Registration {
        service: "sdk-photo".into(),
        url: "http://127.0.0.1:18002".into(),
        version: Some("v1".into()),
        ttl: Some(Duration::from_secs(1)),
    };
    let registered = sdk.register(&reg).await.unwrap();
    assert_eq!(registered.instance_id, "sdk-photo-v1-127.0.0.1-18002");
    assert_eq!(
        registered.lease.as_deref(),
        Some("service:sdk-photo-v1-127.0.0.1-18002")
    );
    assert_eq!(
        sdk.lookup("sdk-photo").await.unwrap(),
        "http://127.0.0.1:18002"
    );

    // Not kept alive: the TTL check turns critical, lookup says the design's text.
    let expired = eventually("TTL expiry", || async {
        matches!(
            sdk.lookup("sdk-photo").await,
            Err(LookupError::Unavailable { .. })
        )
    })
    .await;
    eprintln!("TTL 1 s check went critical after {expired:?}");
    assert_eq!(
        sdk.lookup("sdk-photo").await.unwrap_err().to_string(),
        "'sdk-photo' temporarily unavailable (1/1 failures)"
    );
    // keep_alive passes it again.
    sdk.keep_alive(&registered).await.unwrap();
    assert_eq!(
        sdk.lookup("sdk-photo").await.unwrap(),
        "http://127.0.0.1:18002"
    );

    // The instance shows in the dashboard's own read too.
    let snap = Registry::snapshot(&sdk).await.unwrap();
    let svc = snap
        .services
        .iter()
        .find(|s| s.name == "sdk-photo")
        .unwrap();
    assert_eq!(svc.instances[0].version, "v1");
    assert_eq!(svc.instances[0].port, 18002);

    // A second instance without TTL, then `deregister <name>` removes both.
    let plain = sdk
        .register(&Registration {
            service: "sdk-photo".into(),
            url: "http://127.0.0.1:18003".into(),
            version: None,
            ttl: None,
        })
        .await
        .unwrap();
    assert_eq!(plain.lease, None);
    sdk.deregister(&registered).await.unwrap();
    assert_eq!(
        sdk.lookup("sdk-photo").await.unwrap(),
        "http://127.0.0.1:18003"
    );
    assert_eq!(sdk.deregister_service("sdk-photo").await.unwrap(), 1);
    assert_eq!(
        sdk.lookup("sdk-photo").await.unwrap_err(),
        LookupError::Unknown("sdk-photo".into())
    );
    spine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_form_register_split_lookup_and_follow() {
    let _one = SPINE.lock().await;
    let spine = quiet_spine().await;
    let kv = ConsulKvClient::new(ConsulClient::new(&spine.registry_url()).unwrap());

    // Follow the KV layout with blocking queries while the SDK writes.
    let (tx, mut rx) = mpsc::channel::<FeedUpdate>(64);
    let ctx = FollowContext {
        interval: Duration::from_millis(50),
        refresh: Arc::new(Notify::new()),
        out: tx,
    };
    let follower = kv.clone();
    let follow = tokio::spawn(async move { follower.follow(ctx).await });
    let first = rx.recv().await.unwrap().result.unwrap().unwrap();
    assert!(first.services.is_empty(), "no KV registrations yet");

    // The design's simple form: services/<name> = hex URL.
    let simple = kv
        .register(&Registration {
            service: "sdk-id".into(),
            url: "http://127.0.0.1:18001".into(),
            version: None,
            ttl: None,
        })
        .await
        .unwrap();
    assert_eq!(simple.instance_id, "services/sdk-id");
    // A v2 instance kept by a session (Behavior=delete).
    let leased = kv
        .register(&Registration {
            service: "sdk-id".into(),
            url: "http://127.0.0.1:18011".into(),
            version: Some("v2".into()),
            ttl: Some(Duration::from_secs(10)),
        })
        .await
        .unwrap();
    assert_eq!(leased.instance_id, "services/sdk-id/v2/127.0.0.1-18011");
    assert!(leased.lease.is_some());
    kv.keep_alive(&leased).await.unwrap();

    // The follower sees both instances, pushed by the blocking query.
    let started = Instant::now();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let Ok(Some(s)) = update.result
            && s.services.first().is_some_and(|e| e.instances.len() == 2)
        {
            assert_eq!(s.services[0].versions(), ["default", "v2"]);
            break;
        }
    }
    eprintln!(
        "KV follow saw the registrations {:?} after the write",
        started.elapsed()
    );

    // All traffic to v2 through a CAS write of mesh/splits/sdk-id; lookup follows it.
    let split = Split::from_pairs([("default", 0), ("v2", 10_000)]);
    assert_eq!(
        kv.write_split("sdk-id", &split, 0).await.unwrap(),
        WriteOutcome::Applied
    );
    let stored = kv
        .snapshot()
        .await
        .unwrap()
        .services
        .into_iter()
        .find(|s| s.name == "sdk-id")
        .and_then(|s| s.split)
        .unwrap();
    assert_eq!(stored.split, split);
    assert_eq!(
        kv.write_split("sdk-id", &split, 0).await.unwrap(),
        WriteOutcome::Conflict {
            theirs: Some(stored)
        },
        "create-only twice: the conflict shows what is stored"
    );
    for _ in 0..10 {
        assert_eq!(kv.lookup("sdk-id").await.unwrap(), "http://127.0.0.1:18011");
    }
    let snap = Registry::snapshot(&kv).await.unwrap();
    let modify = snap.services[0].split.as_ref().unwrap().modify_index;
    assert_eq!(
        kv.write_split(
            "sdk-id",
            &Split::from_pairs([("default", 10_000), ("v2", 0)]),
            modify
        )
        .await
        .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(kv.lookup("sdk-id").await.unwrap(), "http://127.0.0.1:18001");

    // Deregistering the leased instance deletes its key and ends its session.
    kv.deregister(&leased).await.unwrap();
    let err = kv.keep_alive(&leased).await.unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(kv.deregister_service("sdk-id").await.unwrap(), 1);
    assert_eq!(
        kv.lookup("sdk-id").await.unwrap_err(),
        LookupError::Unknown("sdk-id".into())
    );
    // A session TTL Consul would refuse is refused before sending.
    let short = kv
        .register(&Registration {
            service: "sdk-id".into(),
            url: "http://127.0.0.1:18001".into(),
            version: None,
            ttl: Some(Duration::from_secs(2)),
        })
        .await
        .unwrap_err();
    assert!(short.to_string().contains("between 10s and 24h"), "{short}");
    follow.abort();
    spine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_blocking_queries_wait_for_a_change_or_the_wait() {
    let _one = SPINE.lock().await;
    let spine = quiet_spine().await;
    let base = spine.registry_url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let index_of = |resp: &reqwest::Response| -> u64 {
        resp.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let resp = http
        .get(format!("{base}/v1/config/service-splitter"))
        .send()
        .await
        .unwrap();
    let index = index_of(&resp);

    // Nothing changes: the answer comes after the wait (plus at most wait/16).
    let start = Instant::now();
    let resp = http
        .get(format!(
            "{base}/v1/config/service-splitter?index={index}&wait=1s"
        ))
        .send()
        .await
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(index_of(&resp), index, "same index: nothing new");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    eprintln!("unchanged blocking query answered after {waited:?} (wait 1s)");

    // A split write wakes the waiter at once with a higher index.
    let blocked = {
        let http = http.clone();
        let url = format!("{base}/v1/config/service-splitter?index={index}&wait=30s");
        tokio::spawn(async move {
            let start = Instant::now();
            let resp = http.get(url).send().await.unwrap();
            (start.elapsed(), resp)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = ConsulClient::new(&base).unwrap();
    let snap = client.snapshot().await.unwrap();
    let identity = snap.services.iter().find(|s| s.name == "identity").unwrap();
    let cas = identity.split.as_ref().unwrap().modify_index;
    assert_eq!(
        client
            .write_split(
                "identity",
                &Split::from_pairs([("v1", 5000), ("v2", 5000)]),
                cas
            )
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let (took, resp) = blocked.await.unwrap();
    assert!(index_of(&resp) > index);
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!("blocked query woke {took:?} after it was sent (write at ~200 ms)");

    // Consul's answers to bad parameters and another datacenter.
    for (query, status, text) in [
        ("index=x", 400, "Invalid index"),
        ("index=1&wait=soon", 400, "Invalid wait time"),
        ("dc=dc9", 500, "No path to datacenter"),
    ] {
        let resp = http
            .get(format!("{base}/v1/catalog/services?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{query}");
        assert_eq!(resp.text().await.unwrap(), text);
    }
    let dcs = http
        .get(format!("{base}/v1/catalog/datacenters"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(dcs, r#"["dc1"]"#);
    spine.shutdown();
}

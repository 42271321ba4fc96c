//! Two dashboards at once, against live registries: the demo spine's Consul API (config
//! mode through `ConsulClient`, KV mode through `ConsulKvClient`) and a real etcd (through
//! `EtcdClient`, started here on free 127.0.0.1 ports, killed by PID).
//!
//! - **Racing writers**: for N rounds both read the same index, then write different
//!   splits with it concurrently (`tokio::join!`): exactly one lands, the other gets a
//!   conflict carrying the winner's split with the new index ("theirs", compared as a
//!   whole struct), and the registry holds the winner's split.
//! - **Driver markers**: a claim, a second claimant told who holds it, the marker in the
//!   followed snapshot, release, and a holder that stops renewing ("dies"): its marker
//!   vanishes after the TTL (the measured delay is printed: `-- --nocapture`).
//! - **Protocol**: the demo refuses a splitter on a `tcp` service with Consul's text.
//!
//! One registry at a time (a static lock): these machines have 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::model::types::{DriverMarker, RegistrySnapshot, Split, SplitConfig};
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::consul::kv::ConsulKvClient;
use spine_dash::registry::etcd::{EtcdClient, EtcdSettings};
use spine_dash::registry::sdk::{Registration, ServiceSdk};
use spine_dash::registry::{
    DriverClaim, FeedUpdate, FollowContext, Registry, RegistryError, WriteOutcome,
};
use tokio::sync::{Mutex, Notify, mpsc};

/// One live registry at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Rounds of each race.
const ROUNDS: u32 = 20;

async fn quiet_spine() -> DemoSpine {
    DemoSpine::start(DemoConfig {
        traffic_rps: 0.0,
        ..DemoConfig::default()
    })
    .await
    .unwrap()
}

fn etcd_client(base: &str) -> EtcdClient {
    EtcdClient::new(&EtcdSettings::new(vec![base.to_owned()])).unwrap()
}

/// The split `registry` stores for `service`, with its index.
async fn stored<R: Registry>(registry: &R, service: &str) -> Option<SplitConfig> {
    registry
        .snapshot()
        .await
        .unwrap()
        .services
        .into_iter()
        .find(|s| s.name == service)
        .and_then(|s| s.split)
}

/// `ROUNDS` rounds of `a` and `b` writing different splits of `service` with the same
/// index at once. Returns how many rounds each won.
async fn race<R: Registry>(what: &str, a: &R, b: &R, service: &str) -> (u32, u32) {
    let (mut a_won, mut b_won) = (0, 0);
    for round in 0..ROUNDS {
        let before = stored(a, service).await.expect("a split to race on");
        let index = before.modify_index;
        let mine = Split::from_pairs([("v1", 1000 + round * 100), ("v2", 9000 - round * 100)]);
        let yours = Split::from_pairs([("v1", 6000 + round * 100), ("v2", 4000 - round * 100)]);
        let (ra, rb) = tokio::join!(
            a.write_split(service, &mine, index),
            b.write_split(service, &yours, index)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let after = stored(a, service).await.unwrap();
        assert!(
            after.modify_index > index,
            "{what} round {round}: the index moved"
        );
        let (winner, loser) = match (&ra, &rb) {
            (WriteOutcome::Applied, WriteOutcome::Conflict { .. }) => {
                a_won += 1;
                (&mine, rb)
            }
            (WriteOutcome::Conflict { .. }, WriteOutcome::Applied) => {
                b_won += 1;
                (&yours, ra)
            }
            other => panic!("{what} round {round}: exactly one write must land, got {other:?}"),
        };
        assert_eq!(
            after.split, *winner,
            "{what} round {round}: the winner's split is stored"
        );
        assert_eq!(
            loser,
            WriteOutcome::Conflict {
                theirs: Some(after.clone())
            },
            "{what} round {round}: the loser is shown the winner's split and index"
        );
    }
    println!(
        "{what}: {ROUNDS} rounds, exactly one write each; first writer won {a_won}, second {b_won}"
    );
    (a_won, b_won)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_race_on_the_demo_consul_api() {
    let _one = SERIAL.lock().await;
    let spine = quiet_spine().await;
    let a = ConsulClient::new(&spine.registry_url()).unwrap();
    let b = ConsulClient::new(&spine.registry_url()).unwrap();
    // The demo seeds identity's splitter (80/20).
    let (a_won, b_won) = race("consul config (demo)", &a, &b, "identity").await;
    assert_eq!(a_won + b_won, ROUNDS);
    // A CAS on an entry deleted since it was read: a conflict with nothing stored.
    let last = stored(&a, "identity").await.unwrap();
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/v1/config/service-splitter/identity",
            spine.registry_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        a.write_split("identity", &last.split, last.modify_index)
            .await,
        Ok(WriteOutcome::Conflict { theirs: None })
    );

    // KV mode on the same agent: an instance key, a split created with cas=0, then race.
    let a = ConsulKvClient::new(a);
    let b = ConsulKvClient::new(b);
    a.register(&Registration {
        service: "identity".into(),
        url: "http://127.0.0.1:18001".into(),
        version: None,
        ttl: None,
    })
    .await
    .unwrap();
    let first = Split::from_pairs([("v1", 8000), ("v2", 2000)]);
    assert_eq!(
        a.write_split("identity", &first, 0).await,
        Ok(WriteOutcome::Applied)
    );
    let (a_won, b_won) = race("consul kv (demo)", &a, &b, "identity").await;
    assert_eq!(a_won + b_won, ROUNDS);
    spine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_race_on_etcd() {
    let _one = SERIAL.lock().await;
    let etcd = common::single().await;
    let a = etcd_client(&etcd.client_url);
    let b = etcd_client(&etcd.client_url);
    let first = Split::from_pairs([("v1", 8000), ("v2", 2000)]);
    // Create-only, twice at once: one creates, the other sees what it created.
    let other = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    let (ra, rb) = tokio::join!(
        a.write_split("identity", &first, 0),
        b.write_split("identity", &other, 0)
    );
    let created = stored(&a, "identity").await.unwrap();
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, WriteOutcome::Conflict { .. }));
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Applied,
            WriteOutcome::Conflict {
                theirs: Some(created)
            }
        ]
    );
    let (a_won, b_won) = race("etcd", &a, &b, "identity").await;
    assert_eq!(a_won + b_won, ROUNDS);
}

// ---- driver markers ------------------------------------------------------------------------

/// `follow` of a registry in a task, and its snapshots.
struct Follower {
    rx: mpsc::Receiver<FeedUpdate>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start<R: Registry + Clone + 'static>(registry: &R) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let ctx = FollowContext {
            interval: Duration::from_millis(100),
            refresh: Arc::new(Notify::new()),
            out: tx,
        };
        let r = registry.clone();
        let task = tokio::spawn(async move { r.follow(ctx).await });
        Self { rx, task }
    }

    /// The first snapshot satisfying `pred` within `deadline`, and when it came.
    async fn until(
        &mut self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&RegistrySnapshot) -> bool,
    ) -> Instant {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let update = tokio::time::timeout_at(end, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no snapshot with {what} within {deadline:?}"))
                .expect("follow ended");
            if let Ok(Some(s)) = update.result
                && pred(&s)
            {
                return Instant::now();
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn marker(user: &str) -> DriverMarker {
    DriverMarker {
        service: "identity".into(),
        user: user.into(),
        host: format!("ws-{user}"),
        pid: 4242,
        since: "2026-11-28T10:00:00Z".into(),
        what: "plan 95/5 → 80/20 → 50/50 → 0/100".into(),
    }
}

/// Claim, held by, followed, released, claimed by the other, then that holder stops
/// renewing: its marker vanishes after the TTL. Returns the measured vanish delay (from
/// the holder's last renewal to the snapshot without the marker).
async fn marker_flow<R: Registry + Clone + 'static>(
    what: &str,
    a: &R,
    b: &R,
    key: &str,
    ttl: Duration,
) -> Duration {
    let generous = ttl * 3 + Duration::from_secs(10);
    let mut follower = Follower::start(a);
    follower
        .until("the first snapshot", generous, |s| s.drivers.is_empty())
        .await;

    let DriverClaim::Claimed(ana) = a.claim_driver(&marker("ana"), ttl).await.unwrap() else {
        panic!("{what}: the first claim must succeed")
    };
    assert_eq!((ana.service.as_str(), ana.key.as_str()), ("identity", key));
    assert!(ana.renew_every > Duration::ZERO && ana.renew_every < ttl.max(Duration::from_secs(10)));
    let claimed_at = Instant::now();
    let seen_at = follower
        .until("ana's marker", generous, |s| s.drivers == [marker("ana")])
        .await;
    println!(
        "{what}: a claim is in the followed snapshot after {:?}",
        seen_at - claimed_at
    );

    // A second dashboard is told who drives.
    assert_eq!(
        b.claim_driver(&marker("bob"), ttl).await.unwrap(),
        DriverClaim::HeldBy(marker("ana"))
    );
    assert_eq!(a.renew_driver(&ana).await, Ok(true));

    // Release: gone at once, and the lease with it.
    a.release_driver(&ana).await.unwrap();
    follower
        .until("no marker after the release", generous, |s| {
            s.drivers.is_empty()
        })
        .await;
    assert_eq!(a.renew_driver(&ana).await, Ok(false));

    // Bob claims, renews once, then his app "dies": nobody renews any more.
    let DriverClaim::Claimed(bob) = b.claim_driver(&marker("bob"), ttl).await.unwrap() else {
        panic!("{what}: free again after the release")
    };
    follower
        .until("bob's marker", generous, |s| s.drivers == [marker("bob")])
        .await;
    assert_eq!(b.renew_driver(&bob).await, Ok(true));
    let last_renewal = Instant::now();
    let gone_at = follower
        .until("bob's marker expired", generous, |s| s.drivers.is_empty())
        .await;
    let delay = gone_at - last_renewal;
    println!(
        "{what}: the marker of a holder that stopped renewing vanished {delay:?} after its last renewal (TTL asked {ttl:?}, renew every {:?})",
        bob.renew_every
    );
    assert_eq!(
        b.renew_driver(&bob).await,
        Ok(false),
        "expired: claim again"
    );
    assert!(matches!(
        a.claim_driver(&marker("ana"), ttl).await,
        Ok(DriverClaim::Claimed(_))
    ));
    delay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_markers_on_the_demo_consul_api() {
    let _one = SERIAL.lock().await;
    let spine = quiet_spine().await;
    let a = ConsulClient::new(&spine.registry_url()).unwrap();
    let b = ConsulClient::new(&spine.registry_url()).unwrap();
    // Consul's shortest session TTL.
    let ttl = Duration::from_secs(10);
    let delay = marker_flow(
        "consul config (demo)",
        &a,
        &b,
        "spine-dash/drivers/identity",
        ttl,
    )
    .await;
    assert!(
        delay >= Duration::from_secs(5),
        "not before the TTL: {delay:?}"
    );

    // KV mode follows the same keys: claim, held by, shown, released.
    let a = ConsulKvClient::new(a);
    let b = ConsulKvClient::new(b);
    a.register(&Registration {
        service: "identity".into(),
        url: "http://127.0.0.1:18001".into(),
        version: None,
        ttl: None,
    })
    .await
    .unwrap();
    // The config-mode flow ended with ana holding the marker again: release it first.
    let mut follower = Follower::start(&a);
    follower
        .until("ana's marker in KV mode", Duration::from_secs(20), |s| {
            s.drivers == [marker("ana")]
        })
        .await;
    assert_eq!(
        b.claim_driver(&marker("bob"), ttl).await.unwrap(),
        DriverClaim::HeldBy(marker("ana"))
    );
    drop(follower);
    spine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_markers_on_etcd() {
    let _one = SERIAL.lock().await;
    let etcd = common::single().await;
    let a = etcd_client(&etcd.client_url);
    let b = etcd_client(&etcd.client_url);
    let delay = marker_flow(
        "etcd",
        &a,
        &b,
        "/spine-dash/drivers/identity",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        delay >= Duration::from_secs(1),
        "not before the TTL: {delay:?}"
    );
}

// ---- protocol ------------------------------------------------------------------------------

/// The body of a raw HTTP response fixture (after the blank line).
fn fixture_body(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/consul/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("\r\n", "\n");
    text.split_once("\n\n").unwrap().1.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_a_split_on_a_tcp_service_like_consul() {
    let _one = SERIAL.lock().await;
    let spine = quiet_spine().await;
    let client = ConsulClient::new(&spine.registry_url()).unwrap();
    let protocol_of = |s: &RegistrySnapshot, name: &str| {
        s.services
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.protocol.clone())
    };
    let before = client.snapshot().await.unwrap();
    for s in &before.services {
        assert_eq!(
            s.protocol.as_deref(),
            Some("http"),
            "{}: seeded http",
            s.name
        );
    }
    // notification becomes tcp (it has no splitter, so Consul allows that).
    let http = reqwest::Client::new();
    let put = |body: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/config", spine.registry_url());
        async move {
            let resp = http.put(url).body(body).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(
        put(r#"{"Kind":"service-defaults","Name":"notification","Protocol":"tcp"}"#).await,
        (200, "true".to_owned())
    );
    let after = client.snapshot().await.unwrap();
    assert_eq!(protocol_of(&after, "notification").as_deref(), Some("tcp"));
    assert_eq!(protocol_of(&after, "identity").as_deref(), Some("http"));

    // A split on it: Consul's 500 with the fixture's text.
    let err = client
        .write_split("notification", &Split::from_pairs([("", 10_000)]), 0)
        .await
        .unwrap_err();
    let RegistryError::Http { status, body, hint } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 500);
    assert_eq!(*body, fixture_body("error_splitter_protocol_tcp_500.txt"));
    assert!(
        hint.as_deref().unwrap_or_default().contains("L7"),
        "{hint:?}"
    );
    // And a service with a splitter cannot become tcp (the same text, for identity).
    let (status, text) =
        put(r#"{"Kind":"service-defaults","Name":"identity","Protocol":"tcp"}"#).await;
    assert_eq!(status, 500);
    assert_eq!(
        text,
        fixture_body("error_splitter_protocol_tcp_500.txt").replace("notification", "identity")
    );
    spine.shutdown();
}

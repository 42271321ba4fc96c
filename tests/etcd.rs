//! End-to-end tests of the etcd backend against real etcd processes (Debian `etcd-server`,
//! 3.4) started here on free 127.0.0.1 ports with temporary data dirs, stopped by PID, one
//! test at a time (they share `SERIAL`). They never reach any other address.
//!
//! Covered: watch instead of polling (checked with etcd's own gRPC counters), lease expiry,
//! the SDK's keep-alive, split writes through the io layer and a stale second writer, auth,
//! TLS with client certificates, failover in a 3-member cluster, and the `lookup` /
//! `register` / `deregister` subcommands of the binary. Measured delays are printed
//! (`cargo test --test etcd -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use spine_dash::io::{self, Command, IoConfig, IoEvent, SplitWrite, Wake};
use spine_dash::model::types::{Health, RegistrySnapshot, Split, SplitConfig};
use spine_dash::registry::etcd::wire::Secret;
use spine_dash::registry::etcd::{Credentials, EtcdClient, EtcdSettings};
use spine_dash::registry::sdk::{Registration, ServiceSdk};
use spine_dash::registry::{FeedUpdate, FollowContext, Registry, RegistryError, WriteOutcome};
use spine_dash::sdk_cli;
use tokio::sync::{Notify, mpsc};

mod common;
use common::{DEADLINE, Member, ServerTls, raw_client, single, temp_dir, wait_healthy};

/// One etcd test at a time: these machines have 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn b64(s: impl AsRef<[u8]>) -> String {
    STANDARD.encode(s)
}

/// A direct POST to the gateway (the test's own view, not the client under test).
async fn raw(http: &reqwest::Client, base: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = http
        .post(format!("{base}{path}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null),
    )
}

async fn raw_put(http: &reqwest::Client, base: &str, key: &str, value: &str) {
    let (status, body) = raw(
        http,
        base,
        "/v3/kv/put",
        &json!({"key": b64(key), "value": b64(value)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn raw_get(http: &reqwest::Client, base: &str, key: &str) -> Option<String> {
    let (_, body) = raw(http, base, "/v3/kv/range", &json!({"key": b64(key)})).await;
    body["kvs"][0]["value"]
        .as_str()
        .map(|v| String::from_utf8(STANDARD.decode(v).unwrap()).unwrap())
}

/// etcd's own count of started gRPC calls of `method` (the gateway goes through gRPC).
async fn grpc_started(http: &reqwest::Client, base: &str, method: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle =
        format!("grpc_server_started_total{{grpc_method=\"{method}\",grpc_service=\"etcdserverpb.");
    text.lines()
        .find(|l| l.starts_with(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn client_for(endpoints: &[&str]) -> EtcdClient {
    let settings = EtcdSettings::new(endpoints.iter().map(ToString::to_string).collect());
    EtcdClient::new(&settings).unwrap()
}

/// `follow` running in a task, and its reports.
struct Follower {
    rx: mpsc::Receiver<FeedUpdate>,
    task: tokio::task::JoinHandle<()>,
    heartbeats: usize,
    errors: Vec<String>,
}

impl Follower {
    fn start(client: &EtcdClient) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let refresh = Arc::new(Notify::new());
        let ctx = FollowContext {
            interval: Duration::from_secs(1),
            refresh,
            out: tx,
        };
        let c = client.clone();
        let task = tokio::spawn(async move { c.follow(ctx).await });
        Self {
            rx,
            task,
            heartbeats: 0,
            errors: Vec::new(),
        }
    }

    /// Waits for a snapshot that satisfies `pred`; returns it and when it arrived.
    async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&RegistrySnapshot) -> bool,
    ) -> (RegistrySnapshot, Instant) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let update = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no snapshot with {what} within {DEADLINE:?}; errors: {:?}",
                        self.errors
                    )
                })
                .expect("follow ended");
            match update.result {
                Ok(Some(s)) if pred(&s) => return (s, Instant::now()),
                Ok(Some(_)) => {}
                Ok(None) => self.heartbeats += 1,
                Err(e) => self.errors.push(e.to_string()),
            }
        }
    }

    /// Reports for `period`, counted.
    async fn idle(&mut self, period: Duration) -> (usize, usize) {
        let end = tokio::time::Instant::now() + period;
        let (mut snapshots, mut heartbeats) = (0, 0);
        while let Ok(Some(update)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            match update.result {
                Ok(Some(_)) => snapshots += 1,
                Ok(None) => heartbeats += 1,
                Err(e) => self.errors.push(e.to_string()),
            }
        }
        (snapshots, heartbeats)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn instances_of<'a>(
    s: &'a RegistrySnapshot,
    service: &str,
) -> Vec<&'a spine_dash::model::types::Instance> {
    s.services
        .iter()
        .filter(|e| e.name == service)
        .flat_map(|e| e.instances.iter())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_pushes_registrations_and_lease_expiry_without_polling() {
    let _one = SERIAL.lock().await;
    let etcd = single().await;
    let http = raw_client();
    let base = etcd.client_url.clone();
    let client = client_for(&[&base]).with_heartbeat(Duration::from_secs(1));
    let txns_before = grpc_started(&http, &base, "Txn").await;
    let ranges_before = grpc_started(&http, &base, "Range").await;
    let watches_before = grpc_started(&http, &base, "Watch").await;

    let mut follower = Follower::start(&client);
    let (first, _) = follower.until("the first read", |_| true).await;
    assert!(first.services.is_empty(), "{first:?}");

    // Register with a 2 s lease that nobody keeps alive: appears, then expires.
    let sdk = client.clone();
    let registered_at = Instant::now();
    let registered = sdk
        .register(&Registration {
            service: "photo".into(),
            url: "http://127.0.0.1:8002".into(),
            version: Some("v2".into()),
            ttl: Some(Duration::from_secs(2)),
        })
        .await
        .unwrap();
    assert!(registered.lease.is_some());
    let (seen, appeared_at) = follower
        .until("photo registered", |s| !instances_of(s, "photo").is_empty())
        .await;
    let photo = instances_of(&seen, "photo")[0].clone();
    assert_eq!(
        (photo.version.as_str(), photo.health),
        ("v2", Health::Passing)
    );
    assert_eq!(photo.id, registered.instance_id);
    let (_, gone_at) = follower
        .until("photo expired", |s| instances_of(s, "photo").is_empty())
        .await;
    println!(
        "etcd watch: registration seen after {:?}; lease (TTL 2 s) expiry seen after {:?}",
        appeared_at - registered_at,
        gone_at - registered_at
    );

    // With the SDK's keep-alive (ttl/3) the registration outlives its TTL, and the
    // shutdown deregisters it at once.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reg = Registration {
        service: "identity".into(),
        url: "http://127.0.0.1:8001".into(),
        version: Some("v1".into()),
        ttl: Some(Duration::from_secs(2)),
    };
    let sdk2 = client.clone();
    let keeper = tokio::spawn(async move {
        sdk_cli::register(&sdk2, &reg, async { stop_rx.await.unwrap_or(()) }, |_| {}).await
    });
    follower
        .until("identity registered", |s| {
            !instances_of(s, "identity").is_empty()
        })
        .await;
    let (snapshots, _) = follower.idle(Duration::from_secs(5)).await;
    assert_eq!(
        snapshots, 0,
        "the kept-alive registration changed: {:?}",
        follower.errors
    );
    let stop_at = Instant::now();
    stop_tx.send(()).unwrap();
    keeper.await.unwrap().unwrap();
    let (_, removed_at) = follower
        .until("identity deregistered", |s| {
            instances_of(s, "identity").is_empty()
        })
        .await;
    println!(
        "etcd: kept alive 5 s past a 2 s TTL; deregistration seen {:?} after Ctrl-C",
        removed_at - stop_at
    );

    // Idle: heartbeats, no data reads. One txn (the first read), three watch streams.
    let (snapshots, heartbeats) = follower.idle(Duration::from_secs(3)).await;
    assert_eq!(snapshots, 0);
    assert!(
        heartbeats >= 2,
        "an idle watch still reports (got {heartbeats})"
    );
    let txns = grpc_started(&http, &base, "Txn").await - txns_before;
    let ranges = grpc_started(&http, &base, "Range").await - ranges_before;
    let watches = grpc_started(&http, &base, "Watch").await - watches_before;
    println!(
        "etcd gRPC calls over the test: Txn {txns}, Range {ranges}, Watch {watches}; heartbeats {}",
        follower.heartbeats + heartbeats
    );
    assert_eq!(
        txns, 1,
        "one read (a txn of three ranges), then only the watch"
    );
    assert_eq!(ranges, 0, "no polling");
    assert_eq!(
        watches, 3,
        "one watch per prefix (services, splits, driver markers)"
    );
    assert!(follower.errors.is_empty(), "{:?}", follower.errors);
}

/// Applies io events until a registry snapshot satisfies `pred` (or a write finished, when
/// `want_write`); returns the write's result if one came.
async fn io_until(
    io: &mut spine_dash::io::IoHandle,
    what: &str,
    mut pred: impl FnMut(&IoEvent) -> bool,
) -> IoEvent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, io.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
            .expect("io stopped");
        if pred(&event) {
            return event;
        }
    }
}

fn split_in(event: &IoEvent, service: &str) -> Option<(Split, u64)> {
    let IoEvent::Registry {
        result: Ok(Some(s)),
        ..
    } = event
    else {
        return None;
    };
    let entry = s.services.iter().find(|e| e.name == service)?;
    let cfg = entry.split.as_ref()?;
    Some((cfg.split.clone(), cfg.modify_index))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_writes_land_and_a_stale_writer_gets_a_conflict() {
    let _one = SERIAL.lock().await;
    let etcd = single().await;
    let http = raw_client();
    let base = etcd.client_url.clone();
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(client_for(&[&base]), None, &IoConfig::default(), &wake);
    io_until(&mut io, "first snapshot", |e| {
        matches!(
            e,
            IoEvent::Registry {
                result: Ok(Some(_)),
                ..
            }
        )
    })
    .await;

    // The UI path: a SetSplit command, create-only (no split yet).
    let mine = Split::from_pairs([("v1", 8000), ("v2", 2000)]);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            mine.clone(),
            0,
        )))
        .await
        .unwrap();
    let done = io_until(&mut io, "write result", |e| {
        matches!(e, IoEvent::WriteFinished { .. })
    })
    .await;
    let IoEvent::WriteFinished { result, .. } = done else {
        unreachable!()
    };
    assert_eq!(result, Ok(WriteOutcome::Applied));
    let seen = io_until(&mut io, "the split in a snapshot", |e| {
        split_in(e, "identity").is_some()
    })
    .await;
    let (split, rev1) = split_in(&seen, "identity").unwrap();
    assert_eq!(split, mine);
    assert_eq!(
        raw_get(&http, &base, "/mesh/splits/identity")
            .await
            .unwrap(),
        r#"{"service":"identity","splits":[{"subset":"v1","weight":80},{"subset":"v2","weight":20}]}"#
    );

    // A colleague moves it to 50/50 with the revision they saw.
    let theirs = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    let colleague = client_for(&[&base]);
    assert_eq!(
        colleague.write_split("identity", &theirs, rev1).await,
        Ok(WriteOutcome::Applied)
    );
    // Our stale write (still rev1) is refused and nothing is overwritten.
    let stale = Split::from_pairs([("v1", 0), ("v2", 10000)]);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity", stale, rev1,
        )))
        .await
        .unwrap();
    let done = io_until(&mut io, "write result", |e| {
        matches!(e, IoEvent::WriteFinished { .. })
    })
    .await;
    let IoEvent::WriteFinished {
        result: stale_result,
        ..
    } = done
    else {
        unreachable!()
    };
    assert!(
        raw_get(&http, &base, "/mesh/splits/identity")
            .await
            .unwrap()
            .contains(r#""weight":50"#)
    );
    // The next snapshot shows theirs, with the revision to retry against.
    let seen = io_until(&mut io, "their split", |e| {
        split_in(e, "identity").is_some_and(|(s, _)| s == theirs)
    })
    .await;
    let (_, rev2) = split_in(&seen, "identity").unwrap();
    assert!(rev2 > rev1);
    // The refused write carried theirs already (the txn's failure branch read it).
    let theirs_stored = SplitConfig {
        split: theirs.clone(),
        modify_index: rev2,
    };
    assert_eq!(
        stale_result,
        Ok(WriteOutcome::Conflict {
            theirs: Some(theirs_stored.clone())
        })
    );
    // Create-only on an existing key is a conflict too; weights that do not sum to 100
    // are refused before sending.
    assert_eq!(
        colleague.write_split("identity", &mine, 0).await,
        Ok(WriteOutcome::Conflict {
            theirs: Some(theirs_stored)
        })
    );
    // A CAS on a key that was deleted since: a conflict with nothing stored.
    let (status, _) = raw(
        &http,
        &base,
        "/v3/kv/deleterange",
        &json!({"key": b64("/mesh/splits/identity")}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        colleague.write_split("identity", &mine, rev2).await,
        Ok(WriteOutcome::Conflict { theirs: None })
    );
    let bad = Split::from_pairs([("v1", 5000), ("v2", 4000)]);
    assert!(matches!(
        colleague.write_split("identity", &bad, rev2).await,
        Err(RegistryError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_wrong_password_is_clear_right_one_works_and_survives_a_restart() {
    let _one = SERIAL.lock().await;
    let mut etcd = single().await;
    let http = raw_client();
    let base = etcd.client_url.clone();
    for (path, body) in [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "rootpw"}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": "dash", "password": "Corr3ct-horse"}),
        ),
        ("/v3/auth/role/add", json!({"name": "dash"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "dash", "perm": {"permType": "READWRITE", "key": b64("/services/"), "range_end": b64("/services0")}}),
        ),
        (
            "/v3/auth/role/grant",
            json!({"name": "dash", "perm": {"permType": "READWRITE", "key": b64("/mesh/"), "range_end": b64("/mesh0")}}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "dash", "role": "dash"}),
        ),
        ("/v3/auth/enable", json!({})),
    ] {
        let (status, answer) = raw(&http, &base, path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let with_user = |password: &str| {
        let mut s = EtcdSettings::new(vec![base.clone()]);
        s.credentials = Some(Credentials {
            user: "dash".into(),
            password: Secret::new(password),
        });
        EtcdClient::new(&s).unwrap()
    };

    let wrong = with_user("wrong-horse").snapshot().await.unwrap_err();
    let text = wrong.to_string();
    println!("etcd auth, wrong password: {text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("\"dash\""), "names the user: {text}");
    assert!(!text.contains("wrong-horse"), "never the password: {text}");
    let anonymous = client_for(&[&base])
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("user name is empty") && anonymous.contains("ETCDCTL_USER"),
        "{anonymous}"
    );

    let right = with_user("Corr3ct-horse");
    assert!(!format!("{right:?}").contains("Corr3ct"));
    // The role may not read /spine-dash/drivers/: the markers are left out, the rest is
    // read; claiming one is refused by etcd (403), not by a crash.
    right.snapshot().await.unwrap();
    let claim = right
        .claim_driver(
            &spine_dash::model::types::DriverMarker {
                service: "identity".into(),
                user: "dash".into(),
                ..Default::default()
            },
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(claim, Err(RegistryError::Http { status: 403, .. })),
        "{claim:?}"
    );
    let mut follower = Follower::start(&right);
    follower.until("the first read", |_| true).await;
    let split = Split::from_pairs([("v1", 10000)]);
    assert_eq!(
        right.write_split("photo", &split, 0).await,
        Ok(WriteOutcome::Applied)
    );
    follower
        .until("the split through an authenticated watch", |s| {
            s.services
                .iter()
                .any(|e| e.name == "photo" && e.split.is_some())
        })
        .await;
    drop(follower);

    // Simple tokens die with the member: the next call gets 401, authenticates again
    // once and succeeds.
    etcd.stop();
    etcd.start();
    wait_healthy(&http, &etcd).await;
    let snap = right.snapshot().await.unwrap();
    assert_eq!(snap.services.len(), 1);
}

struct Pki {
    dir: PathBuf,
    server: ServerTls,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A CA with a server certificate (127.0.0.1, localhost) and a client certificate, plus an
/// unrelated CA (rustls refuses a self-signed leaf used as its own CA).
fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let dir = temp_dir("pki");
    let ca = |cn: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (params, key, cert)
    };
    let (ca_params, ca_key, ca_cert) = ca("spine-dash test CA");
    let (_, _, other_cert) = ca("some other CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, cn: &str| {
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        // etcd's gateway dials its own gRPC server with the server certificate.
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        "etcd",
    );
    let (client_pem, client_key) = leaf(vec![], vec![ExtendedKeyUsagePurpose::ClientAuth], "dash");
    Pki {
        server: ServerTls {
            cert: write(&dir, "server.crt", &server_pem),
            key: write(&dir, "server.key", &server_key),
            ca: write(&dir, "ca.crt", &ca_cert.pem()),
        },
        client_cert: write(&dir, "client.crt", &client_pem),
        client_key: write(&dir, "client.key", &client_key),
        other_ca: write(&dir, "other-ca.crt", &other_cert.pem()),
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_accepted_wrong_ca_rejected() {
    let _one = SERIAL.lock().await;
    let pki = make_pki();
    let mut m = Member::new("tls", "https");
    let cluster = format!("tls={}", m.peer_url);
    m.configure(&cluster, Some(&pki.server));
    m.start();
    let base = m.client_url.clone();
    let settings = |ca: &Path, client: bool| {
        let mut s = EtcdSettings::new(vec![base.clone()]);
        s.ca_file = Some(ca.to_path_buf());
        if client {
            s.cert_file = Some(pki.client_cert.clone());
            s.key_file = Some(pki.client_key.clone());
        }
        s
    };
    let good = EtcdClient::new(&settings(&pki.server.ca, true)).unwrap();
    // Wait for the member through the client under test (its /health needs a client cert).
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < DEADLINE {
        match good.snapshot().await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.is_none(), "mTLS client refused: {last:?}\n{}", m.log());
    assert_eq!(
        good.write_split("identity", &Split::from_pairs([("v1", 10000)]), 0)
            .await,
        Ok(WriteOutcome::Applied)
    );
    let mut follower = Follower::start(&good);
    follower
        .until("the split over TLS", |s| {
            s.services.iter().any(|e| e.name == "identity")
        })
        .await;
    drop(follower);

    let wrong_ca = EtcdClient::new(&settings(&pki.other_ca, true)).unwrap();
    let text = wrong_ca.snapshot().await.unwrap_err().to_string();
    println!("etcd TLS, wrong CA: {text}");
    assert!(text.contains("ETCDCTL_CACERT"), "{text}");
    assert!(text.contains("certificate"), "{text}");
    assert!(
        text.ends_with(&format!("({base}/v3/kv/txn)")),
        "URL last: {text}"
    );

    let no_client_cert = EtcdClient::new(&settings(&pki.server.ca, false)).unwrap();
    let text = no_client_cert.snapshot().await.unwrap_err().to_string();
    println!("etcd TLS, no client certificate: {text}");
    assert!(text.contains("ETCDCTL_CERT"), "{text}");
    drop(m);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_keeps_updates_flowing_when_the_member_in_use_stops() {
    let _one = SERIAL.lock().await;
    let http = raw_client();
    let mut members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| Member::new(n, "http"))
        .collect();
    let cluster = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    for m in &mut members {
        m.configure(&cluster, None);
        m.start();
    }
    for m in &members {
        wait_healthy(&http, m).await;
    }
    // The leader first, so the member in use is the leader: the harder case (its death
    // needs an election before the cluster takes writes again).
    let mut endpoints: Vec<String> = Vec::new();
    for m in &members {
        let (_, status) = raw(&http, &m.client_url, "/v3/maintenance/status", &json!({})).await;
        let is_leader = status["leader"] == status["header"]["member_id"];
        if is_leader {
            endpoints.insert(0, m.client_url.clone());
        } else {
            endpoints.push(m.client_url.clone());
        }
    }
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let client = client_for(&refs).with_heartbeat(Duration::from_secs(1));
    let mut follower = Follower::start(&client);
    follower.until("the first read", |_| true).await;
    let in_use = client.current_endpoint();
    let victim = members.iter().position(|m| m.client_url == in_use).unwrap();
    let other = members[(victim + 1) % 3].client_url.clone();
    raw_put(
        &http,
        &other,
        "/services/ticker/t0",
        r#"{"address":"127.0.0.1","port":1}"#,
    )
    .await;
    follower
        .until("t0", |s| instances_of(s, "ticker").len() == 1)
        .await;

    // Stop the member the watch runs on; keep writing through another one.
    let killed_at = Instant::now();
    members[victim].stop();
    let first_write = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let writer = {
        let http = http.clone();
        let other = other.clone();
        let first_write = Arc::clone(&first_write);
        tokio::spawn(async move {
            for i in 1.. {
                let key = format!("/services/ticker/t{i}");
                let value = r#"{"address":"127.0.0.1","port":1}"#;
                let body = json!({"key": b64(&key), "value": b64(value)});
                let ok = http
                    .post(format!("{other}/v3/kv/put"))
                    .body(body.to_string())
                    .timeout(Duration::from_millis(300))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    first_write.lock().unwrap().get_or_insert_with(Instant::now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (_, seen_at) = follower
        .until("a write made after the stop", |s| {
            instances_of(s, "ticker").len() >= 3
        })
        .await;
    writer.abort();
    let now_using = client.current_endpoint();
    let first_write = first_write.lock().unwrap().map(|t| t - killed_at);
    println!(
        "etcd 3-member failover: {in_use} (the leader) stopped; updates flowed again through {now_using} after {:?}; the cluster took the first write after {first_write:?} (writes every 100 ms; errors reported meanwhile: {:?})",
        seen_at - killed_at,
        follower.errors
    );
    assert_ne!(now_using, in_use);
    assert!(seen_at - killed_at < DEADLINE);
}

fn binary() -> Process {
    let mut p = Process::new(env!("CARGO_BIN_EXE_spine-dash"));
    for var in [
        "CONSUL_HTTP_ADDR",
        "ETCDCTL_ENDPOINTS",
        "ETCDCTL_USER",
        "ETCDCTL_PASSWORD",
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
        "SPINE_DASH_CONTEXT",
        "SPINE_DASH_METRICS",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
    ] {
        p.env_remove(var);
    }
    // Never the developer's own config file (its default context could change the run).
    let no_config = std::env::temp_dir().join("spine-dash-etcd-tests-no-config");
    p.env("XDG_CONFIG_HOME", no_config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_register_lookup_and_deregister_against_etcd() {
    let _one = SERIAL.lock().await;
    let etcd = single().await;
    let http = raw_client();
    let base = etcd.client_url.clone();
    let registry = format!("etcd://{}", base.trim_start_matches("http://"));
    let run = |args: &[&str]| {
        let out = binary()
            .arg("--registry")
            .arg(&registry)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };

    // Two photo instances whose registrations say they are critical: nothing healthy.
    for (id, port) in [("photo-v1-a", 9001), ("photo-v1-b", 9002)] {
        raw_put(
            &http,
            &base,
            &format!("/services/photo/{id}"),
            &format!(r#"{{"id":"{id}","service":"photo","version":"v1","address":"127.0.0.1","port":{port},"health":"critical"}}"#),
        )
        .await;
    }
    let (ok, stdout, stderr) = run(&["lookup", "photo"]);
    assert!(!ok, "lookup must fail: {stdout}");
    assert!(
        stderr.contains("'photo' temporarily unavailable (2/2 failures)"),
        "{stderr}"
    );

    // register (no TTL) → lookup finds it → deregister removes every registration.
    let (ok, _, stderr) = run(&[
        "register",
        "identity",
        "http://127.0.0.1:8001",
        "--version",
        "v1",
    ]);
    assert!(ok, "{stderr}");
    raw_put(&http, &base, "/services/gateway", "http://127.0.0.1:8443").await;
    let (ok, stdout, stderr) = run(&["lookup", "identity"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "http://127.0.0.1:8001");
    let (ok, stdout, _) = run(&["lookup", "gateway"]);
    assert!(ok);
    assert_eq!(stdout, "http://127.0.0.1:8443", "the design's simple form");
    let (ok, _, stderr) = run(&["deregister", "photo"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("deregistered 2"), "{stderr}");
    let (ok, _, stderr) = run(&["lookup", "photo"]);
    assert!(!ok);
    assert!(stderr.contains("'photo' is not registered"), "{stderr}");

    // snapshot --json against etcd.
    let (ok, stdout, stderr) = run(&["snapshot", "--json"]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["registry"]["kind"], "etcd");
    let names: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gateway", "identity"]);

    // A bad certificate path is a one-line startup error.
    let (ok, _, stderr) = run(&["--etcd-cacert", "/nonexistent/ca.pem", "lookup", "x"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read the CA certificate (ETCDCTL_CACERT)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// What the stub gateway saw: every request's path and JSON body, in order.
type Seen = Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A stub etcd gateway on 127.0.0.1 for what a real member cannot be made to do on cue: a
/// watch stream that breaks after an event, then one canceled for compaction. Plain
/// HTTP/1.1 written by hand; watch answers are chunked and stay open.
async fn stub_gateway() -> (String, Seen) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: head, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len])
                        .unwrap_or(Value::Null);
                    buf.drain(..head_end + len);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (txns, watches) = {
                        let mut seen = log.lock().unwrap();
                        seen.push((path.clone(), body));
                        let count = |p: &str| seen.iter().filter(|(q, _)| q == p).count();
                        (count("/v3/kv/txn"), count("/v3/watch"))
                    };
                    let kv = |key: &str, value: &str, rev: i64| json!({"key": b64(key), "value": b64(value), "create_revision": rev.to_string(), "mod_revision": rev.to_string(), "version": "1"});
                    let unary = |v: Value| {
                        let text = v.to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        )
                    };
                    match path.as_str() {
                        "/v3/kv/txn" => {
                            // First read at revision 5: identity; after the compaction, at 20: photo.
                            let (rev, key) = if txns == 1 {
                                (5, "/services/identity/i1")
                            } else {
                                (20, "/services/photo/p1")
                            };
                            let answer = json!({"header": {"revision": rev.to_string()}, "succeeded": true, "responses": [
                                {"response_range": {"header": {"revision": rev.to_string()}, "kvs": [kv(key, r#"{"address":"10.0.0.1","port":80}"#, rev)], "count": "1"}},
                                {"response_range": {"header": {"revision": rev.to_string()}}}]});
                            let _ = sock.write_all(unary(answer).as_bytes()).await;
                        }
                        "/v3/maintenance/status" => {
                            let _ = sock.write_all(unary(json!({"header": {"revision": "1", "member_id": "1"}, "leader": "1"})).as_bytes()).await;
                        }
                        "/v3/watch" => {
                            let chunk = |line: Value| {
                                let text = format!("{line}\n");
                                format!("{:x}\r\n{text}\r\n", text.len())
                            };
                            let mut out = String::from(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                            );
                            out += &chunk(
                                json!({"result": {"header": {"revision": "5"}, "created": true}}),
                            );
                            // Watches 1–3 (first session: services, splits, driver markers):
                            // the services stream gets an event at revision 7, then breaks.
                            // Watches 4–6 (reopened): canceled for compaction. Later: quiet.
                            let end = match watches {
                                1 => {
                                    out += &chunk(
                                        json!({"result": {"header": {"revision": "7"}, "events": [{"kv": kv("/services/identity/i2", r#"{"address":"10.0.0.2","port":80}"#, 7)}]}}),
                                    );
                                    true
                                }
                                4 => {
                                    out += &chunk(
                                        json!({"result": {"header": {}, "canceled": true, "compact_revision": "12"}}),
                                    );
                                    false
                                }
                                _ => false,
                            };
                            let _ = sock.write_all(out.as_bytes()).await;
                            if end {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                return; // the connection drops: the stream breaks
                            }
                            std::future::pending::<()>().await;
                        }
                        _ => {
                            let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\n\r\nNot Found\n").await;
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_resumes_from_its_revision_and_compaction_reads_everything_again() {
    let (url, seen) = stub_gateway().await;
    let client = client_for(&[&url]).with_heartbeat(Duration::from_secs(1));
    let mut follower = Follower::start(&client);
    follower
        .until("the first read", |s| instances_of(s, "identity").len() == 1)
        .await;
    follower
        .until("the event of the first stream", |s| {
            instances_of(s, "identity").len() == 2
        })
        .await;
    let (after, _) = follower
        .until("the re-read after the compaction", |s| {
            !instances_of(s, "photo").is_empty()
        })
        .await;
    assert!(
        instances_of(&after, "identity").is_empty(),
        "the re-read replaces the view"
    );
    follower.idle(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(String, String)> = seen
        .iter()
        .filter(|(p, _)| p != "/v3/maintenance/status")
        .map(|(p, b)| {
            let start = b["create_request"]["start_revision"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            (p.clone(), start)
        })
        .collect();
    let w = |rev: &str| ("/v3/watch".to_owned(), rev.to_owned());
    let t = ("/v3/kv/txn".to_owned(), String::new());
    assert_eq!(
        calls,
        vec![
            t.clone(),
            w("6"),
            w("6"),
            w("6"),
            // The services stream broke after revision 7: each resumes from what it saw.
            w("8"),
            w("6"),
            w("6"),
            // Canceled with compact_revision: one full read, then watches from 21.
            t,
            w("21"),
            w("21"),
            w("21"),
        ],
        "{seen:?}"
    );
    assert!(
        follower.errors.is_empty(),
        "a bridged break is not an error: {:?}",
        follower.errors
    );
}

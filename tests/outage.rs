//! Registry outages, end to end: the real app (io tasks, model, `SpineApp` in an
//! `egui_kittest` harness stepped at ~60 frames per second) on the embedded demo spine and
//! on a real etcd, whose registry goes away for 60 s (`OUTAGE_SECS` changes it) and comes
//! back on the same port (etcd: the same data dir).
//!
//! Asserted: frames keep coming (no frame waits on io: every one under 1 s); the status
//! bar says STALE with the last good data's age, and that age grows; failed attempts
//! arrive one at a time, never more than ~1.2 s apart (the backoff is capped at 1 s); a
//! weight write made while the registry is down is never "applied" — it fails with
//! "registry unreachable — not applied" and is in the audit log; within 2 s of the
//! registry's return the data is current again (on the demo: showing a health change made
//! during the outage). Measured figures are printed (`-- --nocapture`).
//!
//! The demo spine's registry is stopped as if its process died (`DemoSpine::stop_registry`:
//! every open connection fails at once); etcd is killed (`SIGKILL`) and started again.
//! One test at a time (`SERIAL`): each runs a registry, the io and the UI on 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spine_dash::app::SpineApp;
use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::{self, AuditOutcome, Command, IoConfig, SplitWrite, Wake};
use spine_dash::model::types::{Health, RegistryKind, Split};
use spine_dash::model::{Model, RegistryInfo, WriteState};
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::etcd::{EtcdClient, EtcdSettings};
use spine_dash::registry::sdk::{Registration, ServiceSdk};
use spine_dash::registry::{Registry, WriteOutcome};
use spine_dash::view::bars::registry_status_text;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

#[path = "support/app_run.rs"]
mod app_run;
mod common;
use app_run::{AppRun, gaps, median_max};

static SERIAL: Mutex<()> = Mutex::new(());

/// Generous deadline for outcomes that are not the subject (start-up, a write's answer).
const DEADLINE: Duration = Duration::from_secs(30);
/// The issue's deadline: current again within 2 s of the registry's return.
const CURRENT_WITHIN: Duration = Duration::from_secs(2);
/// The issue's backoff cap is "about 1 s": no two attempts further apart than this.
const MAX_RETRY_GAP: Duration = Duration::from_millis(1200);
/// A frame that waited on io would take a connect or request timeout (seconds).
const FRAME_BOUND: Duration = Duration::from_secs(1);

fn outage_len() -> Duration {
    let secs = std::env::var("OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("outage-io")
        .enable_all()
        .build()
        .unwrap()
}

fn temp_audit(tag: &str) -> std::path::PathBuf {
    let dir = common::temp_dir(tag);
    dir.join("audit.jsonl")
}

/// What one outage measured.
#[derive(Debug)]
struct Figures {
    attempts: usize,
    gap_median: Duration,
    gap_max: Duration,
    max_burst: u32,
    frames: u64,
    fps: f64,
    longest_frame: Duration,
    to_current: Duration,
    write: String,
}

/// How the scenario reaches the registry under test.
struct Target<'a> {
    name: &'a str,
    /// The service whose split is written during the outage, and its split now.
    service: &'a str,
    split: Split,
    /// Takes the registry away (returns at once).
    stop: Box<dyn FnOnce() + 'a>,
    /// Brings it back; the slot is filled with the instant it serves again.
    start: Box<dyn FnOnce() -> Arc<Mutex<Option<Instant>>> + 'a>,
    /// Whether the model shows what changed during the outage (on top of freshness).
    current: Box<dyn Fn(&Model) -> bool + 'a>,
}

fn fresh(model: &Model, now: Instant) -> bool {
    !model.registry_status.is_stale(now, model.registry_interval)
}

/// The whole outage: down for `outage_len()`, a write in the middle, then back.
fn outage(
    run: &mut AppRun,
    commands: &mpsc::Sender<Command>,
    audit_file: &std::path::Path,
    target: Target<'_>,
) -> Figures {
    let len = outage_len();
    let service = target.service.to_owned();
    let index = run.model().services[&service]
        .split
        .as_ref()
        .map_or(0, |c| c.modify_index);
    run.reset_counters();
    let down_at = Instant::now();
    (target.stop)();

    // The registry is down: frames go on; a write is made 5 s in.
    let mut write_sent = false;
    let mut applied_seen = false;
    let mut stale_ages: Vec<(Duration, String)> = Vec::new();
    let mut shown_stale = false;
    let wanted = Split::from_pairs([("v1", 5_000), ("v2", 5_000)]);
    let first_check = len.mul_f64(0.2).max(Duration::from_secs(3));
    run.run_for(len, |run| {
        let now = Instant::now();
        let into = now - down_at;
        if !write_sent && into >= Duration::from_secs(5).min(len / 2) {
            let w = SplitWrite::by_operator(service.clone(), wanted.clone(), index);
            commands.try_send(Command::SetSplit(w)).unwrap();
            write_sent = true;
        }
        if matches!(
            run.model().writes.get(&service),
            Some(WriteState::Applied { .. })
        ) {
            applied_seen = true;
        }
        let check = (stale_ages.is_empty() && into >= first_check)
            || (stale_ages.len() == 1 && into >= len.saturating_sub(Duration::from_secs(2)));
        if check {
            let (stale, text) = registry_status_text(run.model(), now);
            assert!(
                stale,
                "{}: not stale {into:?} into the outage: {text}",
                target.name
            );
            let age = run.model().registry_status.age(now).unwrap();
            stale_ages.push((age, text));
            shown_stale |= run.shows("registry: STALE — showing the last good data from");
        }
    });
    let frames = run.frames;
    let longest = run.longest;
    let failures = run.failures.clone();
    let max_burst = run.max_burst;

    // Back: current again within 2 s.
    let back = (target.start)();
    let current = &target.current;
    run.until("current again", DEADLINE, |m, now| {
        fresh(m, now) && m.registry_status.last_ok.is_some_and(|t| t > down_at + len) && current(m)
    });
    let current_at = run.model().registry_status.last_ok.unwrap();
    let back_at = loop {
        if let Some(t) = *back.lock().unwrap() {
            break t;
        }
        run.frame();
        assert!(
            current_at.elapsed() < DEADLINE,
            "the registry's return was not seen"
        );
    };
    let to_current = current_at.saturating_duration_since(back_at);

    // The write made while down: refused, never applied, audited.
    let write = match run.model().writes.get(&service) {
        Some(WriteState::Failed { error, .. }) => format!("failed: {error}"),
        Some(WriteState::Unknown { error, .. }) => format!("unknown: {error}"),
        other => panic!("{}: the write while down ended as {other:?}", target.name),
    };
    assert!(
        write.contains("not applied") || write.starts_with("unknown"),
        "{}: {write}",
        target.name
    );
    assert!(
        !applied_seen,
        "{}: a write while down was shown as applied",
        target.name
    );
    let audited: Vec<_> = run
        .model()
        .shifting
        .audit
        .iter()
        .filter(|r| r.service == service)
        .map(|r| r.outcome)
        .collect();
    assert!(
        audited.iter().any(|o| matches!(
            o,
            AuditOutcome::Failed | AuditOutcome::Refused | AuditOutcome::Unknown
        )) && !audited.contains(&AuditOutcome::Applied),
        "{}: audit {audited:?}",
        target.name
    );
    let file = std::fs::read_to_string(audit_file).unwrap();
    assert!(
        file.lines()
            .any(|l| l.contains(&format!("\"service\":\"{service}\""))
                && l.contains("\"outcome\":\"failed\"")),
        "{}: audit file {file}",
        target.name
    );
    // The registry still holds the split from before: nothing was written.
    let stored = run.model().services[&service].split.clone().unwrap();
    assert_eq!(stored.split, target.split, "{}", target.name);

    // Stale, said on screen, with an age that grew.
    assert!(
        shown_stale,
        "{}: the status bar never said STALE",
        target.name
    );
    assert_eq!(stale_ages.len(), 2, "{}", target.name);
    assert!(
        stale_ages[1].0 > stale_ages[0].0,
        "{}: the age did not grow: {stale_ages:?}",
        target.name
    );
    // Retried one at a time, with the backoff capped at about 1 s.
    let g = gaps(&failures);
    let (gap_median, gap_max) = median_max(&g);
    assert!(
        failures.len() as f64 >= len.as_secs_f64() / MAX_RETRY_GAP.as_secs_f64() - 1.0,
        "{}: only {} attempts in {len:?}",
        target.name,
        failures.len()
    );
    assert!(
        gap_max <= MAX_RETRY_GAP,
        "{}: a retry gap of {gap_max:?}",
        target.name
    );
    assert_eq!(max_burst, 1, "{}: failures came in bursts", target.name);
    // The UI never waited on io.
    assert!(
        longest < FRAME_BOUND,
        "{}: a frame took {longest:?}",
        target.name
    );
    assert!(
        to_current <= CURRENT_WITHIN,
        "{}: current again {to_current:?} after the registry's return",
        target.name
    );
    let figures = Figures {
        attempts: failures.len(),
        gap_median,
        gap_max,
        max_burst,
        frames,
        fps: frames as f64 / len.as_secs_f64(),
        longest_frame: longest,
        to_current,
        write,
    };
    println!(
        "{}: outage {len:?}: {} failed attempts, retry gap median {:?} max {:?}, max burst {}; \
         {} frames ({:.1}/s), longest {:?}; current again {:?} after the return; \
         status while down: {:?} … {:?}; write while down: {}",
        target.name,
        figures.attempts,
        figures.gap_median,
        figures.gap_max,
        figures.max_burst,
        figures.frames,
        figures.fps,
        figures.longest_frame,
        figures.to_current,
        stale_ages[0].1,
        stale_ages[1].1,
        figures.write
    );
    figures
}

#[test]
fn demo_registry_outage_keeps_drawing_says_stale_and_recovers() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let demo = rt
        .block_on(DemoSpine::start(DemoConfig::default()))
        .unwrap();
    let address = demo.registry_url();
    let client = ConsulClient::new(&address).unwrap();
    let audit_file = temp_audit("outage-demo");
    let config = IoConfig {
        audit_log: Some(audit_file.clone()),
        registry_label: format!("demo {address}"),
        ..IoConfig::default()
    };
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address,
        datacenter: None,
        writable: true,
    };
    let model = Model::new(info, config.registry_interval, config.scrape_interval);
    let wake: Wake = Arc::new(|| {});
    let io = {
        let _rt = rt.enter();
        io::spawn(client, Some(demo.clone()), &config, &wake)
    };
    let commands = io.commands.clone();
    let mut run = AppRun::new(SpineApp::new(model, io, None));
    run.until(
        "the demo's services and identity's split",
        DEADLINE,
        |m, now| {
            fresh(m, now)
                && m.services.len() == 6
                && m.services["identity"].split.is_some()
                && m.demo_registry_running == Some(true)
        },
    );
    let split = run.model().services["identity"]
        .split
        .clone()
        .unwrap()
        .split;

    let stop_demo = demo.clone();
    let stop_rt = &rt;
    let start_demo = demo.clone();
    let photo_critical = |m: &Model| {
        m.services["photo"]
            .instances
            .iter()
            .any(|i| i.id == "photo-1" && i.health == Health::Critical)
    };
    let figures = outage(
        &mut run,
        &commands,
        &audit_file,
        Target {
            name: "demo",
            service: "identity",
            split,
            stop: Box::new(move || {
                stop_rt.block_on(async {
                    stop_demo.stop_registry().await.unwrap();
                    // A change the registry records while nobody can read it.
                    stop_demo.stop_instance("photo-1").await.unwrap();
                });
            }),
            start: Box::new(move || {
                stop_rt.block_on(start_demo.start_registry()).unwrap();
                Arc::new(Mutex::new(Some(Instant::now())))
            }),
            current: Box::new(photo_critical),
        },
    );
    assert!(
        figures.write.contains("registry unreachable — not applied"),
        "{figures:?}"
    );
    drop(run);
    demo.shutdown();
}

#[test]
fn etcd_outage_keeps_drawing_says_stale_and_recovers() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let mut etcd = rt.block_on(common::single());
    let base = etcd.client_url.clone();
    let settings = EtcdSettings::new(vec![base.clone()]);
    let client = EtcdClient::new(&settings).unwrap();
    let split = Split::from_pairs([("v1", 8_000), ("v2", 2_000)]);
    rt.block_on(async {
        for (version, port) in [("v1", 9101), ("v1", 9102), ("v2", 9103)] {
            client
                .register(&Registration {
                    service: "identity".into(),
                    url: format!("http://127.0.0.1:{port}"),
                    version: Some(version.into()),
                    ttl: None,
                })
                .await
                .unwrap();
        }
        assert_eq!(
            client.write_split("identity", &split, 0).await.unwrap(),
            WriteOutcome::Applied
        );
    });
    let audit_file = temp_audit("outage-etcd");
    let config = IoConfig {
        audit_log: Some(audit_file.clone()),
        registry_label: format!("etcd {base}"),
        ..IoConfig::default()
    };
    let info = RegistryInfo {
        kind: RegistryKind::Etcd,
        address: base.clone(),
        datacenter: None,
        writable: true,
    };
    let model = Model::new(info, config.registry_interval, config.scrape_interval);
    let wake: Wake = Arc::new(|| {});
    let io = {
        let _rt = rt.enter();
        io::spawn(client, None, &config, &wake)
    };
    let commands = io.commands.clone();
    let mut run = AppRun::new(SpineApp::new(model, io, None));
    run.until("identity and its split from etcd", DEADLINE, |m, now| {
        fresh(m, now)
            && m.services
                .get("identity")
                .is_some_and(|s| s.instances.len() == 3 && s.split.is_some())
    });

    let etcd_cell = std::cell::RefCell::new(&mut etcd);
    let rt_ref = &rt;
    let figures = outage(
        &mut run,
        &commands,
        &audit_file,
        Target {
            name: "etcd",
            service: "identity",
            split,
            stop: Box::new(|| etcd_cell.borrow_mut().stop()),
            start: Box::new(|| {
                let mut m = etcd_cell.borrow_mut();
                m.start();
                // Back once it answers /health (watched on the side: frames go on).
                let slot = Arc::new(Mutex::new(None));
                let url = format!("{}/health", m.client_url);
                let found = Arc::clone(&slot);
                rt_ref.spawn(async move {
                    let http = common::raw_client();
                    loop {
                        if let Ok(resp) = http.get(&url).send().await
                            && resp.text().await.unwrap_or_default().contains("\"true\"")
                        {
                            *found.lock().unwrap() = Some(Instant::now());
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                slot
            }),
            current: Box::new(|_| true),
        },
    );
    assert!(
        figures.write.contains("registry unreachable — not applied"),
        "{figures:?}"
    );
    drop(run);
}

/// A registry stand-in on 127.0.0.1 that answers Consul's read of the splitter and takes
/// every other request whole, then closes the connection without an answer: "sent, answer
/// lost". Returns its base URL.
async fn answer_losing_stub() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: the head, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    if head.starts_with("get /v1/config/service-splitter/identity") {
                        let body = r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":80,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}],"CreateIndex":7,"ModifyIndex":7}"#;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-consul-index: 7\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    } else {
                        // Taken whole, never answered.
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", common::free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_unknown_and_one_never_sent_is_not_applied() {
    let split = Split::from_pairs([("v1", 5_000), ("v2", 5_000)]);
    let stub = answer_losing_stub().await;

    // Consul: the PUT was taken, the connection closed without an answer.
    let consul = ConsulClient::new(&stub).unwrap();
    let lost = consul.write_split("identity", &split, 7).await;
    assert!(matches!(lost, Ok(WriteOutcome::Unknown { .. })), "{lost:?}");
    // etcd: the txn was taken, no answer.
    let etcd = EtcdClient::new(&EtcdSettings::new(vec![stub.clone()])).unwrap();
    let lost = etcd.write_split("identity", &split, 7).await;
    assert!(matches!(lost, Ok(WriteOutcome::Unknown { .. })), "{lost:?}");
    // Nobody listening: never sent, an error (not applied).
    let closed = closed_port_url();
    for refused in [
        ConsulClient::new(&closed)
            .unwrap()
            .write_split("identity", &split, 7)
            .await,
        EtcdClient::new(&EtcdSettings::new(vec![closed.clone()]))
            .unwrap()
            .write_split("identity", &split, 7)
            .await,
    ] {
        assert!(
            matches!(
                refused,
                Err(spine_dash::registry::RegistryError::Transport { .. })
            ),
            "{refused:?}"
        );
    }

    // Through the writer: audited "unknown", the model says so, and the next registry
    // answer settles it.
    let audit_file = temp_audit("lost-answer");
    let config = IoConfig {
        audit_log: Some(audit_file.clone()),
        ..IoConfig::default()
    };
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(ConsulClient::new(&stub).unwrap(), None, &config, &wake);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            split.clone(),
            7,
        )))
        .await
        .unwrap();
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: stub.clone(),
        datacenter: None,
        writable: true,
    };
    let mut model = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !matches!(
        model.writes.get("identity"),
        Some(WriteState::Unknown { .. })
    ) {
        let event = tokio::time::timeout_at(deadline, io.events.recv())
            .await
            .expect("a write result")
            .unwrap();
        if !matches!(event, io::IoEvent::Registry { .. }) {
            model.apply(event, Instant::now());
        }
    }
    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(text.contains("\"outcome\":\"unknown\""), "{text}");
    assert!(text.contains("may or may not have been applied"), "{text}");
    assert!(
        model
            .notices
            .back()
            .is_some_and(|n| n.text.contains("may or may not have been applied")),
        "{:?}",
        model.notices.back()
    );
    drop(io);

    // The registry answers again: it shows the split asked for → applied; another → failed.
    let snapshot = |weights: [(&str, u32); 2]| spine_dash::model::types::RegistrySnapshot {
        drivers: Vec::new(),
        services: vec![spine_dash::model::types::ServiceEntry {
            protocol: None,
            name: "identity".into(),
            instances: Vec::new(),
            subsets: vec!["v1".into(), "v2".into()],
            split: Some(spine_dash::model::types::SplitConfig {
                split: Split::from_pairs(weights),
                modify_index: 8,
            }),
        }],
    };
    let mut other = model.clone();
    let later = Instant::now() + Duration::from_millis(1);
    model.apply(
        io::IoEvent::Registry {
            at: later,
            result: Ok(Some(snapshot([("v1", 5_000), ("v2", 5_000)]))),
            next_within: Duration::from_secs(1),
        },
        later,
    );
    assert!(
        matches!(
            model.writes.get("identity"),
            Some(WriteState::Applied { .. })
        ),
        "{:?}",
        model.writes.get("identity")
    );
    other.apply(
        io::IoEvent::Registry {
            at: later,
            result: Ok(Some(snapshot([("v1", 8_000), ("v2", 2_000)]))),
            next_within: Duration::from_secs(1),
        },
        later,
    );
    let Some(WriteState::Failed { error, .. }) = other.writes.get("identity") else {
        panic!("{:?}", other.writes.get("identity"));
    };
    assert!(error.starts_with("not applied"), "{error}");
}

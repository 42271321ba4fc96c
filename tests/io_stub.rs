//! io against a stub Consul on 127.0.0.1: a CAS conflict (`200 false`) reaches the model as a
//! conflict, not a success; a registry that is down is reported and retried.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, put};
use spine_dash::io::{self, Command, IoConfig, IoHandle, SplitWrite, Wake};
use spine_dash::model::types::{RegistryKind, Split, SplitConfig};
use spine_dash::model::{Model, RegistryInfo, WriteState};
use spine_dash::registry::consul::ConsulClient;

/// `(cas query parameter, body)` of one PUT.
type Put = (Option<String>, String);

#[derive(Clone, Default)]
struct Seen {
    puts: Arc<Mutex<Vec<Put>>>,
    /// Every request that is not a GET (any write of any kind), as `METHOD path`.
    writes: Arc<Mutex<Vec<String>>>,
}

async fn start_stub(cas_answer: &'static str) -> (String, Seen) {
    start_stub_answers(&[(200, cas_answer)]).await
}

/// A stub whose config PUTs answer `answers` in turn (the last one repeats).
async fn start_stub_answers(answers: &[(u16, &'static str)]) -> (String, Seen) {
    let answers: Arc<Mutex<Vec<(u16, &'static str)>>> =
        Arc::new(Mutex::new(answers.iter().rev().copied().collect()));
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/v1/catalog/services",
            get(|| async { ([("X-Consul-Index", "7")], "{}") }),
        )
        // The stored splitter a write reads first (read-modify-write).
        .route(
            "/v1/config/service-splitter/identity",
            get(|| async {
                r#"{"Kind":"service-splitter","Name":"identity","Splits":[{"Weight":80,"ServiceSubset":"v1"},{"Weight":20,"ServiceSubset":"v2"}],"CreateIndex":405,"ModifyIndex":1190}"#
            }),
        )
        // The other bulk reads the Consul client follows: empty.
        .route(
            "/v1/health/state/any",
            get(|| async { ([("X-Consul-Index", "7")], "[]") }),
        )
        .route(
            "/v1/config/service-resolver",
            get(|| async { ([("X-Consul-Index", "7")], "[]") }),
        )
        .route(
            "/v1/config/service-splitter",
            get(|| async { ([("X-Consul-Index", "7")], "[]") }),
        )
        .route(
            "/v1/config",
            put(
                move |State(seen): State<Seen>,
                      Query(q): Query<std::collections::HashMap<String, String>>,
                      body: String| async move {
                    seen.puts
                        .lock()
                        .unwrap()
                        .push((q.get("cas").cloned(), body));
                    let mut a = answers.lock().unwrap();
                    let (status, text) = if a.len() > 1 { a.pop().unwrap() } else { a[0] };
                    (axum::http::StatusCode::from_u16(status).unwrap(), text)
                },
            ),
        )
        .with_state(seen.clone());
    let writes = Arc::clone(&seen.writes);
    let app = app.layer(axum::middleware::map_request(
        move |req: axum::extract::Request| {
            let writes = Arc::clone(&writes);
            async move {
                if req.method() != axum::http::Method::GET {
                    writes
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri()));
                }
                req
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn model_for(address: &str) -> Model {
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: address.into(),
        datacenter: None,
        writable: true,
    };
    Model::new(info, Duration::from_secs(1), Duration::from_secs(1))
}

fn fast_config() -> IoConfig {
    IoConfig {
        registry_interval: Duration::from_millis(200),
        scrape_interval: Duration::from_millis(200),
        ..IoConfig::default()
    }
}

/// The io tasks on a Consul client for `url`, without a UI to wake.
fn spawn_io(url: &str, config: &IoConfig) -> IoHandle {
    let wake: Wake = Arc::new(|| {});
    io::spawn(ConsulClient::new(url).unwrap(), None, config, &wake)
}

/// Applies events until `done(model)` or the deadline; returns the time it took.
async fn run_until(
    io: &mut IoHandle,
    model: &mut Model,
    done: impl Fn(&Model) -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(model) {
        match tokio::time::timeout_at(deadline, io.events.recv()).await {
            Ok(Some(event)) => model.apply(event, Instant::now()),
            Ok(None) => panic!("io stopped"),
            Err(elapsed) => panic!("deadline passed ({elapsed}); model: {:?}", model.writes),
        }
    }
    start.elapsed()
}

#[tokio::test]
async fn cas_conflict_reaches_the_model_as_conflict() {
    let (url, seen) = start_stub("false").await;
    let mut io = spawn_io(&url, &fast_config());
    let mut model = model_for(&url);
    let split = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    model.mark_write_pending("identity", split.clone());
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            split.clone(),
            1190,
        )))
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| {
        !matches!(m.writes.get("identity"), Some(WriteState::Pending { .. }))
    })
    .await;
    assert_eq!(
        model.writes.get("identity"),
        Some(&WriteState::Conflict {
            mine: split,
            // Read back after the `false`: the stub's stored 80/20 at 1190.
            theirs: Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                modify_index: 1190,
            })
        })
    );
    assert!(
        model
            .notices
            .iter()
            .any(|n| n.is_error && n.text.contains("conflict"))
    );
    let puts = seen.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].0.as_deref(),
        Some("1190"),
        "CAS index sent as ?cas="
    );
}

#[tokio::test]
async fn cas_success_reaches_the_model_as_applied() {
    let (url, _seen) = start_stub("true").await;
    let mut io = spawn_io(&url, &fast_config());
    let mut model = model_for(&url);
    let split = Split::from_pairs([("v1", 7000), ("v2", 3000)]);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            split.clone(),
            1190,
        )))
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| m.writes.contains_key("identity")).await;
    assert_eq!(
        model.writes.get("identity"),
        Some(&WriteState::Applied { split })
    );
}

#[tokio::test]
async fn read_only_refuses_without_sending() {
    let (url, seen) = start_stub("true").await;
    let config = IoConfig {
        read_only: true,
        ..fast_config()
    };
    let mut io = spawn_io(&url, &config);
    let mut model = model_for(&url);
    let split = Split::from_pairs([("v1", 7000), ("v2", 3000)]);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            split.clone(),
            1190,
        )))
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| m.writes.contains_key("identity")).await;
    assert!(
        matches!(model.writes.get("identity"), Some(WriteState::Failed { error, .. }) if error.contains("read-only"))
    );
    assert_eq!(
        model.shifting.audit.back().map(|r| r.outcome),
        Some(io::AuditOutcome::Refused),
        "the refusal is audited"
    );
    // A driver marker is a write too: refused.
    io.commands
        .send(Command::ClaimDriver {
            service: "identity".into(),
            what: "plan".into(),
        })
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| {
        m.shifting.drivers.contains_key("identity")
    })
    .await;
    assert!(matches!(
        model.shifting.drivers.get("identity"),
        Some(io::DriverState::Failed(e)) if e.contains("read-only")
    ));
    io.commands
        .send(Command::ReleaseDriver {
            service: "identity".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.writes.lock().unwrap().clone(),
        Vec::<String>::new(),
        "zero write requests of any kind reached the registry"
    );
    assert!(
        seen.puts.lock().unwrap().is_empty(),
        "no write reached the registry"
    );
}

/// A temporary audit file, removed at the end.
struct TempAudit(std::path::PathBuf);

impl TempAudit {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("spine-audit-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Self(p)
    }
    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for TempAudit {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn the_audit_log_has_one_line_per_attempt_failures_included() {
    let (url, seen) = start_stub_answers(&[
        (200, "true"),
        (200, "false"),
        (
            500,
            "the sum of all split weights must be 100, not 90.000000",
        ),
    ])
    .await;
    let audit = TempAudit::new("attempts");
    let config = IoConfig {
        audit_log: Some(audit.0.clone()),
        registry_label: format!("consul {url}"),
        ..fast_config()
    };
    let mut io = spawn_io(&url, &config);
    let mut model = model_for(&url);
    let splits = [(7000, "applied"), (6000, "conflict"), (5000, "failed")];
    for (v1, _) in splits {
        let mut w = SplitWrite::by_operator(
            "identity",
            Split::from_pairs([("v1", v1), ("v2", 10_000 - v1)]),
            1190,
        );
        w.before = Some(Split::from_pairs([("v1", 8000), ("v2", 2000)]));
        w.reason = format!("test {v1}");
        io.commands.send(Command::SetSplit(w)).await.unwrap();
        // One at a time: queued writes of one service would coalesce.
        run_until(&mut io, &mut model, |m| {
            m.shifting
                .audit
                .iter()
                .any(|r| r.reason == format!("test {v1}"))
        })
        .await;
    }
    // An invalid split is refused before sending, and audited too.
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity",
            Split::from_pairs([("v1", 5000), ("v2", 4000)]),
            1190,
        )))
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| m.shifting.audit.len() == 4).await;
    let lines = audit.lines();
    assert_eq!(lines.len(), 4, "one line per attempt: {lines:#?}");
    let outcomes: Vec<&str> = lines
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["applied", "conflict", "failed", "refused"]);
    assert_eq!(
        seen.puts.lock().unwrap().len(),
        3,
        "the refused one was not sent"
    );
    let first = &lines[0];
    assert_eq!(first["service"], "identity");
    assert_eq!(first["before"], "v1 80 / v2 20");
    assert_eq!(first["after"], "v1 70 / v2 30");
    assert_eq!(first["cas_index"], 1190);
    assert_eq!(first["origin"], "operator");
    assert_eq!(first["reason"], "test 7000");
    assert_eq!(first["registry"], format!("consul {url}"));
    assert!(!first["user"].as_str().unwrap().is_empty());
    assert!(!first["host"].as_str().unwrap().is_empty());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        lines[2]["detail"].as_str().unwrap().contains("HTTP 500"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3]["detail"].as_str().unwrap().contains("sum"),
        "{}",
        lines[3]
    );
    // The panel shows the same records, in the same order.
    let shown: Vec<&str> = model
        .shifting
        .audit
        .iter()
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(shown, outcomes);
}

#[tokio::test]
async fn writes_queued_behind_one_in_flight_coalesce_latest_wins() {
    let (url, seen) = start_stub("true").await;
    let audit = TempAudit::new("coalesce");
    let config = IoConfig {
        audit_log: Some(audit.0.clone()),
        ..fast_config()
    };
    let mut io = spawn_io(&url, &config);
    let mut model = model_for(&url);
    for v2 in [1000, 2000, 3000, 4000, 5000] {
        io.commands
            .send(Command::SetSplit(SplitWrite::by_operator(
                "identity",
                Split::from_pairs([("v1", 10_000 - v2), ("v2", v2)]),
                1190,
            )))
            .await
            .unwrap();
    }
    run_until(&mut io, &mut model, |m| m.shifting.audit.len() == 5).await;
    let puts = seen.puts.lock().unwrap().clone();
    assert!(
        puts.len() < 5,
        "some drafts were coalesced: {} sent",
        puts.len()
    );
    assert!(
        puts.last().unwrap().1.contains("\"Weight\":50"),
        "the latest one was sent last"
    );
    let lines = audit.lines();
    let applied = lines.iter().filter(|l| l["outcome"] == "applied").count();
    let superseded = lines
        .iter()
        .filter(|l| l["outcome"] == "superseded")
        .count();
    assert_eq!(applied, puts.len());
    assert_eq!(applied + superseded, 5, "every attempt is audited");
    assert_eq!(lines.last().unwrap()["after"], "v1 50 / v2 50");
}

#[tokio::test]
async fn registry_down_is_reported_and_retried() {
    // Bind then drop: nothing listens on that port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut io = spawn_io(&url, &fast_config());
    let mut model = model_for(&url);
    run_until(&mut io, &mut model, |m| {
        m.registry_status.consecutive_failures >= 2
    })
    .await;
    let error = model.registry_status.last_error.clone().unwrap();
    assert!(error.contains(&url), "error names the registry: {error}");
    assert!(model.registry_status.last_ok.is_none());
    assert!(model.services.is_empty());
}

#[tokio::test]
async fn a_403_reaches_the_status_bar_text_with_its_hint() {
    let body = "Permission denied: token with AccessorID 'a1' lacks permission 'service:read' on \"identity\"";
    let app =
        Router::new().fallback(move || async move { (axum::http::StatusCode::FORBIDDEN, body) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut io = spawn_io(&url, &fast_config());
    let mut model = model_for(&url);
    run_until(&mut io, &mut model, |m| {
        m.registry_status.last_error.is_some()
    })
    .await;
    let shown = model.registry_status.last_error.clone().unwrap();
    assert!(shown.starts_with("HTTP 403: Permission denied"), "{shown}");
    assert!(
        shown.contains("service \"identity\" { policy = \"read\" }"),
        "{shown}"
    );
}

#[tokio::test]
async fn the_datacenter_picker_switches_every_read() {
    let dcs: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = |dcs: Arc<Mutex<Vec<Option<String>>>>, body: &'static str| {
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                dcs.lock().unwrap().push(q.get("dc").cloned());
                ([("X-Consul-Index", "7")], body)
            },
        )
    };
    let app = Router::new()
        .route(
            "/v1/catalog/datacenters",
            get(|| async { r#"["dc1","dc2"]"# }),
        )
        .route("/v1/catalog/services", record(Arc::clone(&dcs), "{}"))
        .route("/v1/health/state/any", record(Arc::clone(&dcs), "[]"))
        .route(
            "/v1/config/service-resolver",
            record(Arc::clone(&dcs), "[]"),
        )
        .route(
            "/v1/config/service-splitter",
            record(Arc::clone(&dcs), "[]"),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut io = spawn_io(&url, &fast_config());
    let mut model = model_for(&url);
    run_until(&mut io, &mut model, |m| m.datacenters.len() == 2).await;
    assert_eq!(
        model.registry.datacenter.as_deref(),
        Some("dc1"),
        "the agent's own first"
    );
    assert!(
        dcs.lock().unwrap().iter().all(Option::is_none),
        "no dc chosen yet"
    );
    io.commands
        .send(Command::SetDatacenter("dc2".into()))
        .await
        .unwrap();
    run_until(&mut io, &mut model, |m| {
        m.registry.datacenter.as_deref() == Some("dc2")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dcs
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.as_deref() == Some("dc2"))
        .count()
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "reads with dc=dc2: {:?}",
            dcs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

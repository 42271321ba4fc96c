//! Secrets never leave the process: a recognisable Consul ACL token, etcd password and
//! token, and passwords in URLs are set, every error path that can be driven is driven
//! (wrong token → 403 / 401 from stubs that echo what they were sent, registry down,
//! garbage answers, timeouts, a refused write, URLs with credentials, a panic), and all
//! output is captured — the log (a subscriber writing to a buffer, unfiltered), error
//! texts, the audit log file, the UI's painted text and accessibility labels, `snapshot
//! --json` of the real binary (stdout and stderr), `Debug` output, the panic hook's
//! text — and searched for the secrets: zero occurrences. Each capture is checked to be
//! non-trivial: it holds the error texts, and the stubs' raw answers (what an unscrubbed
//! error would show) do hold the secrets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use egui_kittest::Harness;
use egui_kittest::kittest::NodeT as _;
use spine_dash::app::SpineApp;
use spine_dash::config::consul::ConsulSettings;
use spine_dash::io::{self, Command, IoConfig, IoEvent, SplitWrite, Wake};
use spine_dash::model::snapshot::SnapshotDoc;
use spine_dash::model::types::{RegistryKind, Split};
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::net::Secret;
use spine_dash::registry::Registry;
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::etcd::{Credentials, EtcdClient, EtcdSettings};
use tokio::net::TcpListener;

const TOKEN: &str = "SECRET-7f3a9c-token";
const ETCD_PASSWORD: &str = "PASSW0RD-etcd-91";
const ETCD_WRONG_PASSWORD: &str = "PASSW0RD-wrong-77";
const ETCD_TOKEN: &str = "ETCDTOKEN-5b2e0d7c11";
const URL_PASSWORD: &str = "URLPASS-8c1d44";
const SIDECAR_PASSWORD: &str = "SIDECAR-pw-3141";

const ALL: [&str; 6] = [
    TOKEN,
    ETCD_PASSWORD,
    ETCD_WRONG_PASSWORD,
    ETCD_TOKEN,
    URL_PASSWORD,
    SIDECAR_PASSWORD,
];

/// Generous deadline for outcomes (not a speed claim).
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Captures.

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The log of this test process, at debug level, written to a buffer as is (no
/// scrubbing writer: the texts must be clean where they are made).
fn log() -> &'static Buf {
    static LOG: OnceLock<Buf> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Buf::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        buf
    })
}

/// Asserts `text` holds none of the secrets; `what` names the capture.
fn assert_clean(what: &str, text: &str) {
    for secret in ALL {
        assert!(!text.contains(secret), "{what} leaks {secret}:\n{text}");
    }
}

/// Raw answers the stubs sent (what an unscrubbed error text would have shown).
fn raw() -> &'static Mutex<String> {
    static RAW: OnceLock<Mutex<String>> = OnceLock::new();
    RAW.get_or_init(Mutex::default)
}

fn echo(status: StatusCode, body: String) -> (StatusCode, String) {
    raw().lock().unwrap().push_str(&body);
    (status, body)
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A Consul agent that refuses every request with a 403 echoing the token it got (and
/// answers `/v1/catalog/datacenters` with garbage holding it).
async fn consul_echo() -> String {
    let refuse = |headers: HeaderMap| async move {
        echo(
            StatusCode::FORBIDDEN,
            format!(
                "ACL not found: token {} is unknown",
                header(&headers, "x-consul-token")
            ),
        )
    };
    serve(
        Router::new()
            .route(
                "/v1/catalog/datacenters",
                get(|headers: HeaderMap| async move {
                    echo(
                        StatusCode::OK,
                        format!(
                            "<html>your token: {}</html>",
                            header(&headers, "x-consul-token")
                        ),
                    )
                }),
            )
            .route("/v1/config", put(refuse))
            .fallback(refuse),
    )
    .await
}

/// An etcd member: authenticate gives [`ETCD_TOKEN`] for the right password (401 echoing
/// the password otherwise), every other call fails echoing token and password.
async fn etcd_echo() -> String {
    serve(
        Router::new()
            .route(
                "/v3/auth/authenticate",
                post(|body: String| async move {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let password = v["password"].as_str().unwrap_or_default().to_owned();
                    if password == ETCD_PASSWORD {
                        echo(
                            StatusCode::OK,
                            format!(r#"{{"header":{{}},"token":"{ETCD_TOKEN}"}}"#),
                        )
                    } else {
                        echo(
                            StatusCode::UNAUTHORIZED,
                            format!(
                                r#"{{"error":"etcdserver: authentication failed, invalid user ID or password {password}","code":3,"message":"etcdserver: authentication failed, invalid user ID or password {password}"}}"#
                            ),
                        )
                    }
                }),
            )
            .fallback(|headers: HeaderMap| async move {
                let token = header(&headers, "authorization");
                echo(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        r#"{{"error":"etcdserver: permission denied for token {token} (user dash, password {ETCD_PASSWORD})","code":7,"message":"etcdserver: permission denied for token {token} (user dash, password {ETCD_PASSWORD})"}}"#
                    ),
                )
            }),
    )
    .await
}

/// An etcd member whose authenticate answers garbage quoting the password it was sent.
async fn etcd_garbage() -> String {
    serve(Router::new().fallback(|body: String| async move {
        echo(StatusCode::OK, format!("not json; you sent {body}"))
    }))
    .await
}

/// A listener that accepts and never answers.
async fn silent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    format!("{addr}")
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn with_token(address: &str) -> ConsulClient {
    let mut settings = ConsulSettings::new(address);
    settings.token = Some(Secret::new(TOKEN));
    ConsulClient::from_settings(&settings)
        .unwrap()
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
        .unwrap()
}

fn etcd(url: &str, password: &str) -> EtcdClient {
    let mut settings = EtcdSettings::new(vec![url.to_owned()]);
    settings.credentials = Some(Credentials {
        user: "dash".into(),
        password: Secret::new(password),
    });
    settings.request_timeout = Duration::from_secs(2);
    EtcdClient::new(&settings).unwrap()
}

// ---------------------------------------------------------------------------------------
// Error texts of the clients, and the log they write.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_and_log_hold_no_secret() {
    log();
    let mut texts: Vec<String> = Vec::new();

    // Consul: wrong token (403 echoing it), garbage answer, refused write.
    let agent = consul_echo().await;
    let client = with_token(&agent);
    texts.push(client.snapshot().await.unwrap_err().to_string());
    texts.push(
        ConsulClient::datacenters(&client)
            .await
            .unwrap_err()
            .to_string(),
    );
    let split = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    texts.push(
        client
            .write_split("identity", &split, 7)
            .await
            .unwrap_err()
            .to_string(),
    );
    texts.push(format!("{client:?}"));

    // Consul with credentials in its URL: down, and hung.
    let down = format!("http://admin:{URL_PASSWORD}@127.0.0.1:{}", closed_port());
    let c = with_token(&down);
    texts.push(c.snapshot().await.unwrap_err().to_string());
    texts.push(format!("{c:?} {}", c.base_url()));
    let hung = format!("http://admin:{URL_PASSWORD}@{}", silent().await);
    texts.push(with_token(&hung).snapshot().await.unwrap_err().to_string());

    // etcd: the right password, then every call refused echoing token and password; a
    // wrong password (401 echoing it); an authenticate answering garbage.
    let member = etcd_echo().await;
    let e = etcd(&member, ETCD_PASSWORD);
    texts.push(e.snapshot().await.unwrap_err().to_string());
    texts.push(
        e.write_split("identity", &split, 3)
            .await
            .unwrap_err()
            .to_string(),
    );
    texts.push(format!("{e:?}"));
    texts.push(
        etcd(&member, ETCD_WRONG_PASSWORD)
            .snapshot()
            .await
            .unwrap_err()
            .to_string(),
    );
    let garbage = etcd_garbage().await;
    texts.push(
        etcd(&garbage, ETCD_PASSWORD)
            .snapshot()
            .await
            .unwrap_err()
            .to_string(),
    );
    // etcd down.
    texts.push(
        etcd(
            &format!("http://127.0.0.1:{}", closed_port()),
            ETCD_PASSWORD,
        )
        .snapshot()
        .await
        .unwrap_err()
        .to_string(),
    );

    // Settings refused at start: addresses with credentials in them.
    for bad in [
        format!("consul://admin:{URL_PASSWORD}@127.0.0.1:8500/extra"),
        format!("ftp://admin:{URL_PASSWORD}@127.0.0.1:8500"),
        format!("etcd://admin:{URL_PASSWORD}@127.0.0.1:2379"),
        format!("etcd://admin:{URL_PASSWORD}@127.0.0.1:99999"),
        format!("admin:{URL_PASSWORD}@127.0.0.1:99999"),
    ] {
        let registry = bad.strip_prefix("etcd://").unwrap_or(&bad);
        texts.push(format!("{:?}", spine_dash::config::parse_registry(&bad)));
        texts.push(format!(
            "{:?}",
            spine_dash::registry::etcd::parse_endpoints(registry, "http")
        ));
    }
    texts.push(
        spine_dash::config::parse_metrics(&format!("prometheus://u:{URL_PASSWORD}@127.0.0.1:9090"))
            .unwrap_err()
            .to_string(),
    );

    let all = texts.join("\n");
    println!("error texts ({} lines):\n{all}", texts.len());
    assert_clean("error texts", &all);
    // Non-trivial: the errors are there, and what the stubs sent did hold the secrets.
    for want in [
        "HTTP 403: ACL not found: token <redacted> is unknown",
        "connection refused",
        "no complete answer within 2 s",
        "permission denied for token <redacted>",
        "invalid user ID or password <redacted>",
        "not json; you sent",
        "<redacted>",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let raw = raw().lock().unwrap().clone();
    for secret in [TOKEN, ETCD_PASSWORD, ETCD_WRONG_PASSWORD, ETCD_TOKEN] {
        assert!(raw.contains(secret), "the stubs never echoed {secret}");
    }
    let logged = log().text();
    println!("log so far: {} lines", logged.lines().count());
    assert_clean("log", &logged);
}

// ---------------------------------------------------------------------------------------
// The io layer end to end: events, the UI, the audit file, snapshot JSON.

/// Drains events until `done` says so (or the deadline).
async fn collect(io: &mut io::IoHandle, mut done: impl FnMut(&[IoEvent]) -> bool) -> Vec<IoEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(&events) {
        match tokio::time::timeout_at(deadline, io.events.recv()).await {
            Ok(Some(e)) => events.push(e),
            _ => panic!("deadline: events so far: {events:#?}"),
        }
    }
    events
}

fn shapes(shape: &egui::Shape, out: &mut String) {
    match shape {
        egui::Shape::Text(t) => {
            out.push_str(t.galley.text());
            out.push('\n');
        }
        egui::Shape::Vec(v) => v.iter().for_each(|s| shapes(s, out)),
        _ => {}
    }
}

fn labels(node: egui_kittest::Node<'_>, out: &mut String) {
    let a = node.accesskit_node();
    for t in [a.label(), a.value(), a.description()]
        .into_iter()
        .flatten()
    {
        out.push_str(&t);
        out.push('\n');
    }
    for child in node.children() {
        labels(child, out);
    }
}

/// All text the UI paints (shapes) and labels (AccessKit) after a few frames.
fn ui_text(model: Model, events: Vec<IoEvent>) -> String {
    let (tx, rx) = tokio::sync::mpsc::channel(events.len() + 8);
    for e in events {
        tx.try_send(e).unwrap();
    }
    let (cmd_tx, _cmd_rx) = tokio::sync::mpsc::channel(64);
    let mut app = SpineApp::with_channels(model, rx, cmd_tx);
    while app.drain_events() {}
    app.view_mut().selected = Some("identity".into());
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app);
    for _ in 0..5 {
        h.step();
    }
    let mut out = String::new();
    for clipped in &h.output().shapes {
        shapes(&clipped.shape, &mut out);
    }
    labels(h.root(), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_events_ui_and_audit_log_hold_no_secret() {
    log();
    let dir = std::env::temp_dir().join(format!("spine-dash-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");

    // A registry that refuses the token (403 echoing it), and a write to it.
    let agent = consul_echo().await;
    let client = with_token(&agent);
    let config = IoConfig {
        registry_interval: Duration::from_millis(200),
        audit_log: Some(audit.clone()),
        registry_label: format!("consul {}", client.base_url()),
        ..IoConfig::default()
    };
    let wake: Wake = Arc::new(|| {});
    let mut io = io::spawn(client.clone(), None, &config, &wake);
    let split = Split::from_pairs([("v1", 2000), ("v2", 8000)]);
    io.commands
        .send(Command::SetSplit(SplitWrite::by_operator(
            "identity", split, 7,
        )))
        .await
        .unwrap();
    let events = collect(&mut io, |ev| {
        ev.iter()
            .any(|e| matches!(e, IoEvent::Registry { result: Err(_), .. }))
            && ev
                .iter()
                .any(|e| matches!(e, IoEvent::WriteFinished { .. }))
            && ev.iter().any(|e| matches!(e, IoEvent::Audited(_)))
            && ev.iter().any(|e| matches!(e, IoEvent::Datacenters { .. }))
    })
    .await;
    drop(io);

    // A registry (no token) listing one instance whose stats URL carries a password; the
    // sidecar refuses it, echoing the password.
    let sidecar = serve(Router::new().fallback(|headers: HeaderMap| async move {
        echo(
            StatusCode::UNAUTHORIZED,
            format!(
                "bad credentials {} (password {SIDECAR_PASSWORD})",
                header(&headers, "authorization")
            ),
        )
    }))
    .await;
    let metrics_url = sidecar.replace("http://", &format!("http://scrape:{SIDECAR_PASSWORD}@"))
        + "/stats/prometheus";
    let health = serde_json::json!([{
        "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
        "Service": {"ID": "identity-1", "Service": "identity", "Tags": ["v1"], "Address": "127.0.0.1",
                    "Port": 1, "Meta": {"version": "v1", "metrics_url": metrics_url}},
        "Checks": []
    }])
    .to_string();
    let registry = serve(
        Router::new()
            .route(
                "/v1/catalog/services",
                get(|| async { r#"{"identity":["v1"]}"# }),
            )
            .route(
                "/v1/health/service/identity",
                get(move || async move { health }),
            )
            .route("/v1/health/state/any", get(|| async { "[]" }))
            .route("/v1/config/service-resolver", get(|| async { "[]" }))
            .route("/v1/config/service-splitter", get(|| async { "[]" })),
    )
    .await;
    let mut io2 = io::spawn(
        ConsulClient::new(&registry).unwrap(),
        None,
        &IoConfig {
            scrape_interval: Duration::from_millis(200),
            ..IoConfig::default()
        },
        &wake,
    );
    let scrapes = collect(&mut io2, |ev| {
        ev.iter()
            .filter(|e| matches!(e, IoEvent::Scrape { result: Err(_), .. }))
            .count()
            >= 2
    })
    .await;
    drop(io2);

    // The events as the model gets them.
    let texts: Vec<String> = events
        .iter()
        .chain(&scrapes)
        .filter_map(|e| match e {
            IoEvent::Registry { result: Err(t), .. }
            | IoEvent::Scrape { result: Err(t), .. }
            | IoEvent::WriteFinished { result: Err(t), .. } => Some(t.clone()),
            IoEvent::Audited(r) => Some(format!("{r:?}")),
            IoEvent::Datacenters { error, .. } => error.clone(),
            _ => None,
        })
        .collect();
    let event_text = texts.join("\n");
    println!("event texts ({} lines):\n{event_text}", texts.len());
    assert_clean("io events", &event_text);
    for want in [
        "ACL not found: token <redacted>",
        "HTTP 401: bad credentials",
        "(password <redacted>)",
    ] {
        assert!(
            event_text.contains(want),
            "missing {want:?} in:\n{event_text}"
        );
    }

    // The audit file.
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    println!("audit log:\n{audit_text}");
    assert_clean("audit log", &audit_text);
    assert!(
        audit_text.contains(r#""outcome":"failed""#) && audit_text.contains("<redacted>"),
        "{audit_text}"
    );

    // The UI, with both sources' events applied.
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: client.base_url().to_owned(),
        datacenter: None,
        writable: true,
    };
    let model = Model::new(info, Duration::from_millis(200), Duration::from_millis(200));
    // The sidecar's source first, the refusing registry last (its error is what shows).
    let mut all = scrapes;
    all.extend(events);
    let mut snapshot_model = Model::new(
        RegistryInfo {
            kind: RegistryKind::Consul,
            address: client.base_url().to_owned(),
            datacenter: None,
            writable: true,
        },
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    for e in all.clone() {
        snapshot_model.apply(e, Instant::now());
    }
    let screen = ui_text(model, all);
    println!("UI text ({} lines)", screen.lines().count());
    assert_clean("UI", &screen);
    assert!(
        screen.contains("<redacted>") && screen.contains("403"),
        "the UI shows the errors:\n{screen}"
    );

    // `snapshot --json` of that model (the binary's own run is below).
    let json = serde_json::to_string_pretty(&SnapshotDoc::from_model(&snapshot_model)).unwrap();
    assert_clean("snapshot JSON", &json);
    assert!(json.contains("<redacted>"), "{json}");

    let logged = log().text();
    println!(
        "audit log: {} lines; log so far: {} lines",
        audit_text.lines().count(),
        logged.lines().count()
    );
    assert_clean("log", &logged);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary: `snapshot --json` against the echoing agent, with the token from the
/// environment, and once more with credentials in the registry URL. stdout (the JSON)
/// and stderr (the log through the scrubbing writer, the final error line) are clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_json_of_the_binary_holds_no_secret() {
    let agent = consul_echo().await;
    let home = std::env::temp_dir().join(format!("spine-dash-secrets-bin-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let with_creds = agent.replace("http://", &format!("consul://admin:{URL_PASSWORD}@"));
    for registry in [agent.replace("http://", "consul://"), with_creds] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spine-dash"));
        cmd.args(["snapshot", "--json", "--registry", &registry])
            .env("CONSUL_HTTP_TOKEN", TOKEN)
            .env("SPINE_DASH_AUDIT_LOG", "")
            .env("XDG_CONFIG_HOME", &home)
            .env("XDG_DATA_HOME", &home)
            .env("RUST_LOG", "debug")
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("CONSUL_HTTP_TOKEN_FILE");
        // The stub runs on this runtime: wait for the child off its threads.
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "snapshot --json --registry {}: exit {:?}, {} stdout lines, {} stderr lines",
            registry.replace(URL_PASSWORD, "…"),
            out.status.code(),
            stdout.lines().count(),
            stderr.lines().count()
        );
        assert_clean("snapshot stdout", &stdout);
        assert_clean("snapshot stderr", &stderr);
        assert!(!out.status.success(), "the registry refused: {stderr}");
        assert!(
            stdout.contains("ACL not found: token <redacted> is unknown"),
            "{stdout}"
        );
        assert!(stderr.contains("registry not reachable"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

// ---------------------------------------------------------------------------------------
// Debug output and panics.

#[test]
fn debug_output_holds_no_secret() {
    let mut consul = ConsulSettings::new(&format!("http://admin:{URL_PASSWORD}@127.0.0.1:8500"));
    consul.token = Some(Secret::new(TOKEN));
    let mut etcd = EtcdSettings::new(vec!["http://127.0.0.1:2379".into()]);
    etcd.credentials = Some(Credentials {
        user: "dash".into(),
        password: Secret::new(ETCD_PASSWORD),
    });
    let flags = spine_dash::config::resolve::Flags {
        registry: Some("etcd://127.0.0.1:2379".into()),
        etcd_user: Some(Secret::new(format!("dash:{ETCD_PASSWORD}"))),
        ..Default::default()
    };
    let env = |k: &str| (k == "CONSUL_HTTP_TOKEN").then(|| TOKEN.to_owned());
    let resolved = spine_dash::config::resolve::resolve(&flags, &env, None).unwrap();
    let consul_flags = spine_dash::config::resolve::Flags {
        registry: Some(format!("consul://admin:{URL_PASSWORD}@127.0.0.1:8500")),
        ..Default::default()
    };
    let consul_resolved = spine_dash::config::resolve::resolve(&consul_flags, &env, None).unwrap();
    let client = ConsulClient::from_settings(&consul).unwrap();
    let text = format!(
        "{consul:?}\n{etcd:?}\n{flags:?}\n{resolved:?}\n{}\n{consul_flags:?}\n{consul_resolved:?}\n{}\n{client:?}",
        resolved.describe(),
        consul_resolved.describe()
    );
    println!("{text}");
    assert_clean("Debug output", &text);
    assert!(
        text.contains("<redacted>") && text.contains("dash"),
        "{text}"
    );
}

#[test]
fn a_panic_message_holds_no_secret() {
    let _ = Secret::new(TOKEN);
    spine_dash::net::secrets::remember_url_secrets(&format!("http://u:{URL_PASSWORD}@h"));
    let captured = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&captured);
    let previous = std::panic::take_hook();
    spine_dash::net::secrets::install_panic_hook_with(move |text| {
        sink.lock().unwrap().push_str(text);
    });
    let calls = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(|| {
        calls.fetch_add(1, Ordering::Relaxed);
        panic!("request with token {TOKEN} to http://admin:{URL_PASSWORD}@127.0.0.1:8500 failed");
    });
    std::panic::set_hook(previous);
    assert!(result.is_err() && calls.load(Ordering::Relaxed) == 1);
    let text = captured.lock().unwrap().clone();
    println!("panic hook wrote: {text}");
    assert_clean("panic message", &text);
    assert!(
        text.contains("request with token <redacted> to http://127.0.0.1:8500 failed")
            && text.contains("panicked at"),
        "{text}"
    );
}

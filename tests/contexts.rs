#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The config file with named contexts, through the real binary: `contexts` lists them,
//! `snapshot --json --context demo-ctx` runs on the context's registry (the embedded demo),
//! and the startup errors (unknown context, unknown key, missing token file, bad address
//! in the environment) exit non-zero with one line naming what is wrong. Then the running
//! app: the header's context picker emits `Command::SwitchContext`, and a switch replaces
//! the client, io tasks and model (the old demo spine is shut down; a failed switch keeps
//! the old context and says why).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use spine_dash::app::SpineApp;
use spine_dash::config::file::ConfigFile;
use spine_dash::config::resolve::{Flags, resolve};
use spine_dash::io::{Command as IoCommand, Wake};
use spine_dash::launch::{Launch, Switcher};
use spine_dash::model::types::RegistryKind;
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::view::{ViewState, root_ui};

const CONFIG: &str = r#"
# two contexts; secrets only by file path
default_context = "prod"

[contexts.prod]
registry = "consul+https://consul.prod.example:8501"
metrics = "prometheus://prom.prod.example:9090?window=30s"
datacenter = "eu1"
token_file = "prod.token"
tls_server_name = "server.eu1.consul"

[contexts.demo-ctx]
registry = "demo"
metrics = "sidecars"
read_only = true
"#;

/// A fresh folder for this test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spine-dash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with a clean environment: no registry, context or backtrace variables, and
/// a home without a config file.
fn binary(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spine-dash"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CONSUL_")
            || key.starts_with("ETCDCTL_")
            || key.starts_with("SPINE_DASH_")
            || key.ends_with("BACKTRACE")
        {
            c.env_remove(key);
        }
    }
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `Error: …` line of a failed run (there must be exactly one).
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (_, stderr) = text(out);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
    errors[0].to_owned()
}

#[test]
fn contexts_lists_names_registries_metrics_default_and_active() {
    let dir = temp_dir("ctx-list");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = binary(&dir)
        .arg("--config")
        .arg(&cfg)
        .arg("contexts")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (stdout, _) = text(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("config file: {}", cfg.display()));
    assert_eq!(
        lines[1..],
        [
            "  NAME      REGISTRY                                 METRICS",
            "  demo-ctx  demo                                     sidecars",
            "* prod      consul+https://consul.prod.example:8501  prometheus://prom.prod.example:9090?window=30s  default, active",
        ],
        "{stdout}"
    );
    // The active one follows --context, then SPINE_DASH_CONTEXT.
    let out = binary(&dir)
        .arg("--config")
        .arg(&cfg)
        .env("SPINE_DASH_CONTEXT", "demo-ctx")
        .arg("contexts")
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("* demo-ctx  demo") && l.ends_with("  active")),
        "{stdout}"
    );
    // Without a file at the default place: said so, not an error.
    let out = binary(&dir).arg("contexts").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (stdout, _) = text(&out);
    assert!(
        stdout.starts_with("no config file (looked for "),
        "{stdout}"
    );
    assert!(stdout.contains("spine-dash/config.toml"), "{stdout}");
}

#[test]
fn snapshot_runs_on_the_chosen_context_and_errors_are_one_line() {
    let dir = temp_dir("ctx-snapshot");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, CONFIG).unwrap();

    let out = binary(&dir)
        .args(["snapshot", "--json", "--context", "demo-ctx", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["registry"]["kind"], "demo", "{stdout}");
    assert_eq!(doc["registry"]["context"], "demo-ctx", "{stdout}");
    assert_eq!(doc["registry"]["ok"], true, "{stdout}");
    let services: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(services.contains(&"identity"), "{services:?}");
    // Where each setting came from, in the log: read-only from the context, chosen by flag.
    assert!(
        stderr.contains(
            "settings: context demo-ctx (--context), registry demo (context 'demo-ctx'), metrics sidecars (context 'demo-ctx'), read-only (context 'demo-ctx')"
        ),
        "{stderr}"
    );

    // Unknown context: the known ones are listed.
    let out = binary(&dir)
        .args(["snapshot", "--context", "staging", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        error_line(&out),
        format!(
            "Error: unknown context 'staging' (from --context); known: demo-ctx, prod ({})",
            cfg.display()
        )
    );

    // The default context (prod) names a token file that is not there.
    let out = binary(&dir)
        .args(["snapshot", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        error_line(&out),
        format!(
            "Error: context 'prod' (config file {}): token_file: cannot read {}: No such file or directory (os error 2)",
            cfg.display(),
            dir.join("prod.token").display()
        )
    );

    // Environment beats the context: a bad CONSUL_HTTP_ADDR is used (and refused) even
    // though demo-ctx names the demo.
    let out = binary(&dir)
        .args(["snapshot", "--context", "demo-ctx", "--config"])
        .arg(&cfg)
        .env("CONSUL_HTTP_ADDR", "ftp://consul.example")
        .output()
        .unwrap();
    assert!(
        error_line(&out).starts_with("Error: CONSUL_HTTP_ADDR: unknown registry scheme 'ftp'"),
        "{out:?}"
    );

    // A typo in a key: named with the line, the table and the file; nothing is started.
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "[contexts.prod]\nregistry = \"consul://c:8500\"\ntoken_flie = \"prod.token\"\n",
    )
    .unwrap();
    let out = binary(&dir)
        .args(["snapshot", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(
        line.starts_with(&format!(
            "Error: config file {}, line 3 in [contexts.prod]: unknown field `token_flie`, expected one of ",
            typo.display()
        )),
        "{line}"
    );

    // A secret written into the file is refused, and not echoed.
    std::fs::write(&typo, "[contexts.prod]\ntoken = \"s3cr3t-value\"\n").unwrap();
    let out = binary(&dir)
        .arg("--config")
        .arg(&typo)
        .arg("contexts")
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(
        line.contains("unknown field `token`") && line.contains("token_file"),
        "{line}"
    );
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));

    // --config naming a missing file is an error (a missing default file is not).
    let out = binary(&dir)
        .args(["snapshot", "--config"])
        .arg(dir.join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(
        error_line(&out),
        format!(
            "Error: config file: cannot read it: No such file or directory (os error 2) ({})",
            dir.join("nope.toml").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_header_shows_the_context_and_its_picker_emits_switch_context() {
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: "https://consul.prod.example:8501".into(),
        datacenter: None,
        writable: false,
    };
    let model = Model::new(info, Duration::from_secs(1), Duration::from_secs(1))
        .with_context(Some("prod"), vec!["demo-ctx".into(), "prod".into()]);
    let state = (model, ViewState::default(), Vec::<IoCommand>::new());
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(
            |ui, (model, view, out): &mut (Model, ViewState, Vec<IoCommand>)| {
                root_ui(ui, model, view, out, Instant::now());
            },
            state,
        );
    h.run();
    h.get_by_role_and_label(Role::ComboBox, "context").click();
    h.run();
    h.get_by_label("demo-ctx").click();
    h.run();
    assert_eq!(
        h.state().2,
        vec![IoCommand::SwitchContext("demo-ctx".into())]
    );
}

/// Steps the app until a switch finished (deadline 30 s: a deadline, not a speed claim).
async fn until_switched(app: &mut SpineApp) -> Duration {
    let start = Instant::now();
    while !app.poll_switch() {
        assert!(start.elapsed() < Duration::from_secs(30), "no switch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_context_replaces_client_io_and_model() {
    let dir = temp_dir("ctx-switch");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        r#"
default_context = "demo-ctx"
[contexts.demo-ctx]
registry = "demo"
[contexts.closed]
registry = "consul://127.0.0.1:9"
metrics = "prometheus://127.0.0.1:9"
read_only = true
[contexts.broken]
registry = "consul://127.0.0.1:9"
token_file = "missing.token"
"#,
    )
    .unwrap();
    let file = ConfigFile::load(&cfg, true).unwrap().unwrap();
    let flags = Flags::default();
    let resolved = resolve(&flags, &|_| None, Some(&file)).unwrap();
    let launch = Launch::prepare(&resolved, file.names(), None)
        .await
        .unwrap();
    let wake: Wake = Arc::new(|| {});
    let (model, io, demo) = launch.spawn(&wake);
    let demo_url = demo.as_ref().unwrap().registry_url();
    let mut app = SpineApp::new(model, io, None).with_switcher(
        Switcher { flags, file },
        demo,
        Arc::clone(&wake),
    );
    assert_eq!(app.model().context.as_deref(), Some("demo-ctx"));
    assert_eq!(app.model().registry.kind, RegistryKind::Demo);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let catalog = format!("{demo_url}/v1/catalog/services");
    assert!(http.get(&catalog).send().await.is_ok(), "demo answers");

    // To a Consul agent that is not there: new model, new io, the demo spine is stopped.
    app.switch_context("closed");
    let took = until_switched(&mut app).await;
    println!("switch demo -> closed took {took:?}");
    let m = app.model();
    assert_eq!(m.context.as_deref(), Some("closed"));
    assert_eq!(m.registry.address, "http://127.0.0.1:9");
    assert!(!m.registry.writable, "read_only from the context");
    assert!(m.prometheus.is_some(), "metrics from the context");
    assert!(m.services.is_empty(), "a fresh model");
    assert!(
        http.get(&catalog).send().await.is_err(),
        "old demo shut down"
    );
    // Its events come from the new registry.
    let start = Instant::now();
    while app.model().registry_status.last_error.is_none() {
        assert!(start.elapsed() < Duration::from_secs(30));
        app.drain_events();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = app.model().registry_status.last_error.clone().unwrap();
    assert!(error.contains("127.0.0.1:9"), "{error}");

    // A context whose token file is missing: the running one stays, the reason is shown.
    app.switch_context("broken");
    until_switched(&mut app).await;
    assert_eq!(app.model().context.as_deref(), Some("closed"));
    let last = app.model().notices.back().unwrap();
    assert!(last.is_error, "{last:?}");
    assert!(
        last.text
            .starts_with("context broken: context 'broken' (config file ")
            && last.text.contains("token_file: cannot read"),
        "{}",
        last.text
    );

    // An unknown name: said at once, nothing started.
    app.switch_context("nope");
    assert!(!app.poll_switch());
    let last = &app.model().notices.back().unwrap().text;
    assert!(
        last.contains("unknown context 'nope'") && last.contains("known: broken, closed, demo-ctx"),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The config file with named contexts, through the real binary: `contexts` lists them,
//! `snapshot --json --context demo-ctx` runs on the context's registry (the embedded demo),
//! and the startup errors (unknown context, unknown key, missing token file, bad address
//! in the environment) exit non-zero with one line naming what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

//! spine-dash: CLI, logging, tokio runtime, then the window (or a headless snapshot).
//! Settings are merged by `config::resolve` (flag > environment > config file context)
//! and turned into running parts by `launch`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use spine_dash::app::{FramePacer, SpineApp};
use spine_dash::config::file::{ConfigFile, default_config_path, known_list};
use spine_dash::config::resolve::{Flags, resolve};
use spine_dash::demo::synthetic::{SyntheticConfig, SyntheticSpine};
use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::Wake;
use spine_dash::launch::{Launch, PromptFn, RegistryClient, Switcher, no_wake};
use spine_dash::model::snapshot::SnapshotDoc;
use spine_dash::net::scrub_known;
use spine_dash::net::secrets::{ScrubbingWriter, install_panic_hook};
use spine_dash::registry::etcd::wire::Secret;
use spine_dash::registry::sdk::{LookupError, Registration, ServiceSdk};
use spine_dash::sdk_cli;

#[derive(Parser, Debug)]
#[command(
    name = "spine-dash",
    version,
    about = "Live highway map of a service registry + Envoy sidecars"
)]
struct Cli {
    /// Config file with named contexts (default: `config.toml` in the platform config dir,
    /// e.g. `~/.config/spine-dash/config.toml`; a missing default file is fine).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Context of the config file to use (or `SPINE_DASH_CONTEXT`; default: the file's
    /// `default_context`). Flags, then environment variables, override its values.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// Registry (else `CONSUL_HTTP_ADDR`, `ETCDCTL_ENDPOINTS`, the context's): `demo`
    /// (default), `consul://host:8500`, `consul+https://host:8501`, `consul+kv://host:8500`
    /// (KV mode, no Connect), `etcd://h1:2379,h2:2379`, `etcd+https://h1:2379`.
    #[arg(long, global = true)]
    registry: Option<String>,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Consul datacenter to read and write (default: the agent's own), as Consul's
    /// `-datacenter`.
    #[arg(long, global = true)]
    datacenter: Option<String>,
    /// Never write to the registry.
    #[arg(long, global = true)]
    read_only: bool,
    /// Lane metrics (else `SPINE_DASH_METRICS`, the context's): `sidecars` (default: scrape
    /// each sidecar's `Meta.metrics_url`) or a Prometheus server that scrapes them:
    /// `prometheus://host:9090`, `prometheus+https://host[/prefix]`, options
    /// `?window=1m&interval=5s`.
    #[arg(long, global = true)]
    metrics: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Poll the registry, scrape every sidecar twice ~1 s apart, print what the map shows.
    Snapshot {
        /// Print JSON (the shape documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// List the config file's contexts (name, registry, metrics; default and active).
    Contexts,
    /// Register an instance (the design's `register`); with `--ttl` stay in the
    /// foreground keeping it alive, and deregister on Ctrl-C.
    Register {
        /// Service name.
        name: String,
        /// The instance's URL, e.g. `http://127.0.0.1:8001`.
        url: String,
        /// Version (subset), e.g. `v1`.
        #[arg(long)]
        version: Option<String>,
        /// Expire unless kept alive, e.g. `15s`.
        #[arg(long, value_parser = sdk_cli::parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Print one URL of a service: weighted by the split, healthy instances only.
    Lookup {
        /// Service name.
        name: String,
    },
    /// Remove every registration of a service.
    Deregister {
        /// Service name.
        name: String,
    },
    /// Run the demo spine headless in this process (`--serve`): prints the registry URL
    /// (one line, for `--registry`) and serves until killed (SIGTERM, Ctrl-C).
    Demo {
        /// Serve the spine (required: the window runs its own demo spine by default).
        #[arg(long)]
        serve: bool,
        /// A synthetic mesh of this many services (10 instances each, ~3 upstreams per
        /// service, versions v1/v2 on every tenth) instead of the 6-service demo.
        #[arg(long, value_name = "N")]
        size: Option<usize>,
        /// Registry port on 127.0.0.1 (default: any free port).
        #[arg(long, value_name = "P")]
        port: Option<u16>,
    },
}

/// etcd connection settings, named as etcdctl names them (each flag beats its `ETCDCTL_*`
/// variable, which beats the context). Secrets never come from a flag value (flags show
/// in `ps`): the password is in `ETCDCTL_USER=user:password`, `ETCDCTL_PASSWORD`, a file,
/// or typed at a prompt.
#[derive(clap::Args, Debug)]
struct EtcdArgs {
    /// etcd: CA certificate file (PEM) that signed the members' certificates (else
    /// `ETCDCTL_CACERT`).
    #[arg(long = "etcd-cacert", global = true)]
    cacert: Option<PathBuf>,
    /// etcd: client certificate file (PEM) for mTLS (else `ETCDCTL_CERT`).
    #[arg(long = "etcd-cert", global = true)]
    cert: Option<PathBuf>,
    /// etcd: client key file (PEM) for mTLS (else `ETCDCTL_KEY`).
    #[arg(long = "etcd-key", global = true)]
    key: Option<PathBuf>,
    /// etcd: `user` or `user:password` when auth is on (else `ETCDCTL_USER`).
    #[arg(long = "etcd-user", global = true)]
    user: Option<Secret>,
    /// etcd: file whose first line is the user's password.
    #[arg(long = "password-file", global = true)]
    password_file: Option<PathBuf>,
}

impl Cli {
    /// What the command line said, for [`resolve`].
    fn flags(&self) -> Flags {
        Flags {
            context: self.context.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            datacenter: self.datacenter.clone(),
            read_only: self.read_only,
            etcd_cacert: self.etcd.cacert.clone(),
            etcd_cert: self.etcd.cert.clone(),
            etcd_key: self.etcd.key.clone(),
            etcd_user: self.etcd.user.clone(),
            password_file: self.etcd.password_file.clone(),
        }
    }
}

/// Runs, and prints a failure as one line (`Error: …`, its causes joined with `: `),
/// whatever `RUST_BACKTRACE` says: startup messages stay one line.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", scrub_known(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Every log line and panic message passes the secrets filter (`net::secrets`).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(|| ScrubbingWriter(std::io::stderr()))
        .init();
    install_panic_hook();
    let cli = Cli::parse();
    let (config_path, required) = match &cli.config {
        Some(p) => (Some(p.clone()), true),
        None => (default_config_path(), false),
    };
    let file = match &config_path {
        Some(p) => ConfigFile::load(p, required)?,
        None => None,
    };
    if let Some(Cmd::Demo { serve, size, port }) = cli.command {
        return serve_demo(serve, size, port.unwrap_or(0));
    }
    let flags = cli.flags();
    if matches!(cli.command, Some(Cmd::Contexts)) {
        return print_contexts(&flags, file.as_ref(), config_path.as_deref());
    }
    let resolved =
        resolve(&flags, &|k| std::env::var(k).ok(), file.as_ref()).map_err(|e| {
            match (&file, &config_path) {
                (None, Some(p)) if e.ends_with("there is no config file") => {
                    anyhow::anyhow!("{e} (looked for {})", p.display())
                }
                _ => anyhow::Error::msg(e),
            }
        })?;
    for note in &resolved.notes {
        tracing::warn!("{note}");
    }
    tracing::info!("settings: {}", resolved.describe());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("spine-io")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _guard = rt.enter();

    let prompt: Option<PromptFn> = std::io::stdin()
        .is_terminal()
        .then(|| Box::new(|q: &str| rpassword::prompt_password(q)) as PromptFn);
    let known = file.as_ref().map(ConfigFile::names).unwrap_or_default();
    let launch = rt
        .block_on(Launch::prepare(&resolved, known, prompt))
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        "registry: {} at {}",
        launch.model.registry.kind.as_str(),
        launch.model.registry.address
    );
    if let Some(p) = &launch.config.prometheus {
        tracing::info!(
            "metrics: Prometheus, rate window {:?}, every {:?}, at {}",
            p.window,
            p.interval,
            p.base_url
        );
    } else {
        tracing::info!("metrics: scraping each sidecar");
    }
    let demo = launch.demo.clone();
    let switcher = file.map(|file| Switcher { flags, file });
    let result = match cli.command {
        None => run_window(launch, switcher),
        Some(Cmd::Snapshot { json }) => rt.block_on(snapshot(launch, json)),
        Some(cmd) => match &launch.client {
            RegistryClient::Consul(c) => rt.block_on(run_sdk(c, cmd)),
            RegistryClient::ConsulKv(c) => rt.block_on(run_sdk(c, cmd)),
            RegistryClient::Etcd(c) => rt.block_on(run_sdk(c, cmd)),
        },
    };
    if let Some(d) = demo {
        d.shutdown();
    }
    result
}

/// `spine-dash contexts`: the file's contexts as written (the file holds no secret), the
/// default and the active one marked.
fn print_contexts(
    flags: &Flags,
    file: Option<&ConfigFile>,
    looked_at: Option<&Path>,
) -> Result<()> {
    let Some(file) = file else {
        println!(
            "no config file (looked for {}); see assets/config.example.toml",
            looked_at.map_or_else(
                || "none: no home directory".into(),
                |p| p.display().to_string()
            )
        );
        return Ok(());
    };
    let active = flags
        .context
        .clone()
        .or_else(|| {
            std::env::var("SPINE_DASH_CONTEXT")
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
        .or_else(|| file.default_context.clone());
    println!("config file: {}", file.path.display());
    let rows: Vec<[String; 4]> = file
        .contexts
        .values()
        .map(|c| {
            let mut marks = Vec::new();
            if file.default_context.as_deref() == Some(c.name.as_str()) {
                marks.push("default");
            }
            if active.as_deref() == Some(c.name.as_str()) {
                marks.push("active");
            }
            [
                c.name.clone(),
                c.spec
                    .registry
                    .as_deref()
                    .map_or_else(|| "-".into(), scrub_known),
                c.spec
                    .metrics
                    .as_deref()
                    .map_or_else(|| "-".into(), scrub_known),
                marks.join(", "),
            ]
        })
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0, "NAME"), width(1, "REGISTRY"), width(2, "METRICS"));
    let header = format!("  {:<w0$}  {:<w1$}  {:<w2$}", "NAME", "REGISTRY", "METRICS");
    println!("{}", header.trim_end());
    for [name, registry, metrics, marks] in &rows {
        let star = if marks.contains("active") { '*' } else { ' ' };
        let line = format!("{star} {name:<w0$}  {registry:<w1$}  {metrics:<w2$}  {marks}");
        println!("{}", line.trim_end());
    }
    if let Some(name) = active
        && !file.contexts.contains_key(&name)
    {
        bail!("unknown context '{name}'; {}", known_list(&file.names()));
    }
    Ok(())
}

/// The design's SDK subcommands over any backend that implements [`ServiceSdk`].
async fn run_sdk<S: ServiceSdk>(sdk: &S, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Register {
            name,
            url,
            version,
            ttl,
        } => {
            let registration = Registration {
                service: name,
                url,
                version,
                ttl,
            };
            let ctrl_c = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            sdk_cli::register(sdk, &registration, ctrl_c, |line| {
                eprintln!("{}", scrub_known(line));
            })
            .await
            .map_err(|e| anyhow::anyhow!("register: {e}"))?;
            Ok(())
        }
        Cmd::Lookup { name } => match sdk_cli::lookup(sdk, &name).await {
            Ok(url) => {
                println!("{url}");
                Ok(())
            }
            Err(e @ LookupError::Unavailable { .. }) => bail!("CircuitOpen: {e}"),
            Err(e) => bail!("lookup: {e}"),
        },
        Cmd::Deregister { name } => {
            let n = sdk_cli::deregister(sdk, &name)
                .await
                .map_err(|e| anyhow::anyhow!("deregister: {e}"))?;
            eprintln!("deregistered {n} registration(s) of {name}");
            Ok(())
        }
        Cmd::Snapshot { .. } | Cmd::Contexts | Cmd::Demo { .. } => bail!("not an SDK call"),
    }
}

/// `spine-dash demo --serve [--size N] [--port P]`: the demo spine (or a synthetic mesh of
/// N services) in this process, headless, until SIGTERM or Ctrl-C.
fn serve_demo(serve: bool, size: Option<usize>, port: u16) -> Result<()> {
    if !serve {
        bail!(
            "demo: add --serve to run the demo spine headless (the window runs its own demo spine by default)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("spine-demo")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let (url, stop): (String, Box<dyn FnOnce()>) = match size {
            None => {
                let demo = DemoSpine::start(DemoConfig {
                    registry_port: port,
                    ..DemoConfig::default()
                })
                .await
                .context("starting the demo spine")?;
                tracing::info!("demo spine: 6 services, traffic and health checks running");
                (demo.registry_url(), Box::new(move || demo.shutdown()))
            }
            Some(services) => {
                let spine = SyntheticSpine::start(SyntheticConfig {
                    services,
                    registry_port: port,
                    ..SyntheticConfig::default()
                })
                .await
                .context("starting the synthetic spine")?;
                tracing::info!(
                    "synthetic spine: {} services, {} instances, sidecars at {}/s/<instance-id>/stats/prometheus",
                    spine.services(),
                    spine.instances(),
                    spine.sidecar_base()
                );
                (spine.registry_url(), Box::new(move || spine.shutdown()))
            }
        };
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{url}").context("writing the registry URL")?;
            out.flush().context("writing the registry URL")?;
        }
        tracing::info!("serving; connect with: spine-dash --registry {url}");
        wait_for_stop().await;
        tracing::info!("stopping the demo spine");
        stop();
        Ok(())
    })
}

/// Returns on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn run_window(launch: Launch, switcher: Option<Switcher>) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("spine-dash")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 500.0]),
        ..Default::default()
    };
    eframe::run_native(
        "spine-dash",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let pacer = FramePacer::new();
            let frames = Arc::clone(&pacer);
            let wake: Wake =
                Arc::new(move || ctx.request_repaint_after(frames.wake_delay(Instant::now())));
            let (model, io, demo) = launch.spawn(&wake);
            let app = SpineApp::new(model, io, cc.storage).with_pacer(pacer);
            Ok(Box::new(match switcher {
                Some(s) => app.with_switcher(s, demo, wake),
                None => app,
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("window: {e}"))
}

/// Headless: warm up (demo), then wait until the registry answered and every sidecar has
/// two scrapes (or Prometheus answered), then print the model.
async fn snapshot(launch: Launch, json: bool) -> Result<()> {
    if launch.demo.is_some() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (mut model, mut io, _demo) = launch.spawn(&no_wake());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics_ready = match &model.prometheus {
            Some(p) => p.status.last_ok.is_some() || p.status.consecutive_failures >= 3,
            None => model.sidecars_with_window() == model.sidecars.len(),
        };
        let ready = model.registry_status.last_ok.is_some() && metrics_ready;
        let failed = model.registry_status.last_error.is_some()
            && model.registry_status.consecutive_failures >= 3;
        if ready || failed {
            break;
        }
        match tokio::time::timeout_at(deadline, io.events.recv()).await {
            Ok(Some(event)) => model.apply(event, Instant::now()),
            Ok(None) | Err(_) => break,
        }
    }
    let doc = SnapshotDoc::from_model(&model);
    if json {
        println!("{}", scrub_known(&serde_json::to_string_pretty(&doc)?));
    } else {
        print_table(&doc);
    }
    if let Some(e) = model
        .prometheus
        .as_ref()
        .and_then(|p| p.status.last_error.as_ref())
    {
        eprintln!("metrics: {}", scrub_known(e));
    }
    if !doc.registry.ok {
        bail!(
            "registry not reachable: {}",
            doc.registry.error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(())
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}{unit}"))
}

fn print_table(doc: &SnapshotDoc) {
    println!(
        "registry: {} {} ({})",
        doc.registry.kind,
        doc.registry.address,
        if doc.registry.ok { "ok" } else { "FAILING" }
    );
    for s in &doc.services {
        let versions: Vec<String> = s
            .versions
            .iter()
            .map(|v| {
                format!(
                    "{} {}% ({}/{}/{})",
                    v.version,
                    opt(v.configured_weight_pct, ""),
                    v.health.passing,
                    v.health.warning,
                    v.health.critical
                )
            })
            .collect();
        println!("  {:<14} {}", s.name, versions.join("  "));
    }
    println!(
        "{:<10} {:<14} {:<8} {:>9} {:>7} {:>9} {:>9} {:>9}  breaker",
        "caller", "service", "version", "rps", "5xx", "p50", "p95", "p99"
    );
    for l in &doc.lanes {
        println!(
            "{:<10} {:<14} {:<8} {:>9} {:>7} {:>9} {:>9} {:>9}  {}",
            l.caller,
            l.service,
            l.version,
            opt(l.rps, ""),
            opt(l.err5xx_pct, "%"),
            opt(l.p50_ms, "ms"),
            opt(l.p95_ms, "ms"),
            opt(l.p99_ms, "ms"),
            l.breaker.as_deref().unwrap_or("no data")
        );
    }
}

//! spine-dash: CLI, logging, tokio runtime, then the window (or a headless snapshot).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use spine_dash::app::SpineApp;
use spine_dash::config::consul::{ConsulEnv, ConsulSettings};
use spine_dash::config::{RegistryChoice, choose_registry, parse_metrics};
use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::{self, IoConfig, IoHandle, Wake};
use spine_dash::model::snapshot::SnapshotDoc;
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::Registry;
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::consul::kv::ConsulKvClient;
use spine_dash::registry::etcd::settings::resolve_credentials;
use spine_dash::registry::etcd::wire::Secret;
use spine_dash::registry::etcd::{EtcdClient, EtcdSettings, PasswordSources};
use spine_dash::registry::sdk::{LookupError, Registration, ServiceSdk};
use spine_dash::sdk_cli;

#[derive(Parser, Debug)]
#[command(
    name = "spine-dash",
    version,
    about = "Live highway map of a service registry + Envoy sidecars"
)]
struct Cli {
    /// Registry: `demo` (default), `consul://host:8500`, `consul+https://host:8501`,
    /// `consul+kv://host:8500` (KV mode, no Connect), `etcd://h1:2379,h2:2379`,
    /// `etcd+https://h1:2379` (or `ETCDCTL_ENDPOINTS`).
    #[arg(long, global = true, env = "CONSUL_HTTP_ADDR")]
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
    /// Lane metrics: `sidecars` (default: scrape each sidecar's `Meta.metrics_url`) or a
    /// Prometheus server that scrapes them: `prometheus://host:9090`,
    /// `prometheus+https://host[/prefix]`, options `?window=1m&interval=5s`.
    #[arg(long, global = true, env = "SPINE_DASH_METRICS")]
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
}

/// etcd connection settings, named as etcdctl names them. Secrets never come from a flag
/// value (flags show in `ps`): the password is in `ETCDCTL_USER=user:password`,
/// `ETCDCTL_PASSWORD`, a file, or typed at a prompt.
#[derive(clap::Args, Debug)]
struct EtcdArgs {
    /// etcd: CA certificate file (PEM) that signed the members' certificates.
    #[arg(long = "etcd-cacert", global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<PathBuf>,
    /// etcd: client certificate file (PEM) for mTLS.
    #[arg(long = "etcd-cert", global = true, env = "ETCDCTL_CERT")]
    cert: Option<PathBuf>,
    /// etcd: client key file (PEM) for mTLS.
    #[arg(long = "etcd-key", global = true, env = "ETCDCTL_KEY")]
    key: Option<PathBuf>,
    /// etcd: `user` or `user:password` (when auth is on).
    #[arg(
        long = "etcd-user",
        global = true,
        env = "ETCDCTL_USER",
        hide_env_values = true
    )]
    user: Option<String>,
    /// etcd: file whose first line is the user's password.
    #[arg(long = "password-file", global = true)]
    password_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// The settings for these endpoints: files as given (read when the client is built),
    /// the password resolved now (a prompt only on a terminal).
    fn settings(&self, endpoints: Vec<String>) -> Result<EtcdSettings> {
        let sources = PasswordSources {
            file: self.password_file.clone(),
            env: std::env::var("ETCDCTL_PASSWORD").ok().map(Secret::new),
            prompt: std::io::stdin().is_terminal(),
        };
        let credentials = resolve_credentials(self.user.as_deref(), &sources, |q| {
            rpassword::prompt_password(q)
        })
        .map_err(anyhow::Error::msg)?;
        let mut settings = EtcdSettings::new(endpoints);
        settings.ca_file.clone_from(&self.cacert);
        settings.cert_file.clone_from(&self.cert);
        settings.key_file.clone_from(&self.key);
        settings.credentials = credentials;
        Ok(settings)
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let choice = choose_registry(
        cli.registry.as_deref(),
        std::env::var("ETCDCTL_ENDPOINTS").ok().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let metrics = parse_metrics(cli.metrics.as_deref().unwrap_or("sidecars"))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("spine-io")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _guard = rt.enter();

    if let RegistryChoice::Etcd(endpoints) = &choice {
        let settings = cli.etcd.settings(endpoints.clone())?;
        let client = EtcdClient::new(&settings).map_err(|e| anyhow::anyhow!("etcd: {e}"))?;
        tracing::info!("registry: etcd at {}", endpoints.join(","));
        return run_etcd(&rt, client, cli);
    }
    let demo = match choice {
        RegistryChoice::Demo => Some(
            rt.block_on(DemoSpine::start(DemoConfig::default()))
                .context("starting the embedded demo spine")?,
        ),
        RegistryChoice::Consul(_) | RegistryChoice::ConsulKv(_) | RegistryChoice::Etcd(_) => None,
    };
    let address = match (&choice, &demo) {
        (RegistryChoice::Consul(url) | RegistryChoice::ConsulKv(url), _) => url.clone(),
        (RegistryChoice::Etcd(endpoints), _) => endpoints.join(","),
        (RegistryChoice::Demo, Some(d)) => d.registry_url(),
        (RegistryChoice::Demo, None) => bail!("demo spine missing"),
    };
    tracing::info!("registry: {} at {address}", choice.kind().as_str());
    // Token and TLS files come from the environment only (never a flag: flags show in
    // `ps`); the files are read now, so a missing one stops here with a clear message.
    let kv_mode = matches!(choice, RegistryChoice::ConsulKv(_));
    let settings = match choice {
        RegistryChoice::Demo => {
            let mut s = ConsulSettings::new(&address);
            s.datacenter.clone_from(&cli.datacenter);
            s
        }
        RegistryChoice::Consul(_) | RegistryChoice::ConsulKv(_) => {
            let env =
                ConsulEnv::from_vars(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
            ConsulSettings::load(&address, kv_mode, cli.datacenter.as_deref(), &env)
                .map_err(anyhow::Error::msg)?
        }
        RegistryChoice::Etcd(_) => bail!("etcd is handled above"),
    };
    let client = ConsulClient::from_settings(&settings)
        .map_err(|e| anyhow::anyhow!("registry settings: {e}"))?;
    let config = IoConfig {
        read_only: cli.read_only,
        prometheus: metrics.prometheus().cloned(),
        ..IoConfig::default()
    };
    if let Some(p) = &config.prometheus {
        tracing::info!(
            "metrics: Prometheus, rate window {:?}, every {:?}, at {}",
            p.window,
            p.interval,
            p.base_url
        );
    } else {
        tracing::info!("metrics: scraping each sidecar");
    }
    let info = RegistryInfo {
        kind: choice.kind(),
        address,
        datacenter: settings.datacenter.clone(),
        writable: !cli.read_only,
    };
    let mut model = Model::new(info, config.registry_interval, config.scrape_interval);
    if let Some(p) = &config.prometheus {
        model = model.with_prometheus(p);
    }

    let result = match (cli.command, kv_mode) {
        (Some(Cmd::Snapshot { json }), false) => {
            rt.block_on(snapshot(client, demo.clone(), config, model, json))
        }
        (Some(Cmd::Snapshot { json }), true) => rt.block_on(snapshot(
            ConsulKvClient::new(client),
            demo.clone(),
            config,
            model,
            json,
        )),
        (None, false) => run_window(client, demo.clone(), config, model),
        (None, true) => run_window(ConsulKvClient::new(client), demo.clone(), config, model),
        (Some(cmd), false) => rt.block_on(run_sdk(&client, cmd)),
        (Some(cmd), true) => rt.block_on(run_sdk(&ConsulKvClient::new(client), cmd)),
    };
    if let Some(d) = demo {
        d.shutdown();
    }
    result
}

/// The window, `snapshot` or an SDK subcommand against etcd.
fn run_etcd(rt: &tokio::runtime::Runtime, client: EtcdClient, cli: Cli) -> Result<()> {
    let config = IoConfig {
        read_only: cli.read_only,
        ..IoConfig::default()
    };
    let info = RegistryInfo {
        kind: spine_dash::model::types::RegistryKind::Etcd,
        address: client.endpoints().join(","),
        datacenter: None,
        writable: !cli.read_only,
    };
    let model = Model::new(info, config.registry_interval, config.scrape_interval);
    match cli.command {
        None => run_window(client, None, config, model),
        Some(Cmd::Snapshot { json }) => rt.block_on(snapshot(client, None, config, model, json)),
        Some(cmd) => rt.block_on(run_sdk(&client, cmd)),
    }
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
            sdk_cli::register(sdk, &registration, ctrl_c, |line| eprintln!("{line}"))
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
        Cmd::Snapshot { .. } => bail!("snapshot is not an SDK call"),
    }
}

fn run_window<R: Registry + 'static>(
    client: R,
    demo: Option<DemoSpine>,
    config: IoConfig,
    model: Model,
) -> Result<()> {
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
            let wake: Wake = Arc::new(move || ctx.request_repaint_after(Duration::from_millis(10)));
            let io = io::spawn(client, demo, &config, &wake);
            Ok(Box::new(SpineApp::new(model, io, cc.storage)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("window: {e}"))
}

/// Headless: warm up (demo), then wait until the registry answered and every sidecar has
/// two scrapes (or Prometheus answered), then print the model.
async fn snapshot<R: Registry + 'static>(
    client: R,
    demo: Option<DemoSpine>,
    config: IoConfig,
    mut model: Model,
    json: bool,
) -> Result<()> {
    if demo.is_some() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let wake: Wake = Arc::new(|| {});
    let mut io: IoHandle = io::spawn(client, demo, &config, &wake);
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
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&doc);
    }
    if let Some(e) = model
        .prometheus
        .as_ref()
        .and_then(|p| p.status.last_error.as_ref())
    {
        eprintln!("metrics: {e}");
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

//! spine-dash: CLI, logging, tokio runtime, then the window (or a headless snapshot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use spine_dash::app::SpineApp;
use spine_dash::config::consul::{ConsulEnv, ConsulSettings};
use spine_dash::config::{RegistryChoice, parse_registry};
use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::{self, IoConfig, IoHandle, Wake};
use spine_dash::model::snapshot::SnapshotDoc;
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::Registry;
use spine_dash::registry::consul::ConsulClient;
use spine_dash::registry::consul::kv::ConsulKvClient;

#[derive(Parser, Debug)]
#[command(
    name = "spine-dash",
    version,
    about = "Live highway map of a service registry + Envoy sidecars"
)]
struct Cli {
    /// Registry: `demo` (default), `consul://host:8500`, `consul+https://host:8501`,
    /// `consul+kv://host:8500` (KV mode, no Connect).
    #[arg(long, global = true, env = "CONSUL_HTTP_ADDR")]
    registry: Option<String>,
    /// Consul datacenter to read and write (default: the agent's own), as Consul's
    /// `-datacenter`.
    #[arg(long, global = true)]
    datacenter: Option<String>,
    /// Never write to the registry.
    #[arg(long, global = true)]
    read_only: bool,
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
    let choice =
        parse_registry(cli.registry.as_deref().unwrap_or("demo")).map_err(anyhow::Error::msg)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("spine-io")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _guard = rt.enter();

    let demo = match choice {
        RegistryChoice::Demo => Some(
            rt.block_on(DemoSpine::start(DemoConfig::default()))
                .context("starting the embedded demo spine")?,
        ),
        RegistryChoice::Consul(_) | RegistryChoice::ConsulKv(_) => None,
    };
    let address = match (&choice, &demo) {
        (RegistryChoice::Consul(url) | RegistryChoice::ConsulKv(url), _) => url.clone(),
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
    };
    let client = ConsulClient::from_settings(&settings)
        .map_err(|e| anyhow::anyhow!("registry settings: {e}"))?;
    let config = IoConfig {
        read_only: cli.read_only,
        ..IoConfig::default()
    };
    let info = RegistryInfo {
        kind: choice.kind(),
        address,
        datacenter: settings.datacenter.clone(),
        writable: !cli.read_only,
    };
    let model = Model::new(info, config.registry_interval, config.scrape_interval);

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
    };
    if let Some(d) = demo {
        d.shutdown();
    }
    result
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
/// two scrapes, then print the model.
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
        let ready = model.registry_status.last_ok.is_some()
            && model.sidecars_with_window() == model.sidecars.len();
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

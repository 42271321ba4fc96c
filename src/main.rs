//! spine-dash: CLI, logging, tokio runtime, then the window (or a headless snapshot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use spine_dash::app::SpineApp;
use spine_dash::config::{RegistryChoice, parse_metrics, parse_registry};
use spine_dash::demo::{DemoConfig, DemoSpine};
use spine_dash::io::{self, IoConfig, IoHandle, Wake};
use spine_dash::model::snapshot::SnapshotDoc;
use spine_dash::model::{Model, RegistryInfo};
use spine_dash::registry::consul::ConsulClient;

#[derive(Parser, Debug)]
#[command(
    name = "spine-dash",
    version,
    about = "Live highway map of a service registry + Envoy sidecars"
)]
struct Cli {
    /// Registry: `demo` (default), `consul://host:8500`, `consul+https://host:8501`.
    #[arg(long, global = true, env = "CONSUL_HTTP_ADDR")]
    registry: Option<String>,
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
    let metrics = parse_metrics(cli.metrics.as_deref().unwrap_or("sidecars"))?;

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
        RegistryChoice::Consul(_) => None,
    };
    let address = match (&choice, &demo) {
        (RegistryChoice::Consul(url), _) => url.clone(),
        (RegistryChoice::Demo, Some(d)) => d.registry_url(),
        (RegistryChoice::Demo, None) => bail!("demo spine missing"),
    };
    tracing::info!("registry: {} at {address}", choice.kind().as_str());
    // A Consul token comes from the environment only (never a flag: flags show in `ps`).
    let token = match choice {
        RegistryChoice::Consul(_) => std::env::var("CONSUL_HTTP_TOKEN").ok(),
        RegistryChoice::Demo => None,
    };
    let client = ConsulClient::new(&address)
        .map_err(|e| anyhow::anyhow!("registry address: {e}"))?
        .with_token(token);
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
        datacenter: None,
        writable: !cli.read_only,
    };
    let mut model = Model::new(info, config.registry_interval, config.scrape_interval);
    if let Some(p) = &config.prometheus {
        model = model.with_prometheus(p);
    }

    let result = match cli.command {
        Some(Cmd::Snapshot { json }) => {
            rt.block_on(snapshot(client, demo.clone(), config, model, json))
        }
        None => run_window(client, demo.clone(), config, model),
    };
    if let Some(d) = demo {
        d.shutdown();
    }
    result
}

fn run_window(
    client: ConsulClient,
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
async fn snapshot(
    client: ConsulClient,
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

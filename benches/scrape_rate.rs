//! Sidecar scraping cost at scale: a synthetic spine of 2,000 services / 20,000 sidecars
//! (its own runtime, threads `demo-rt`) scraped by the io layer (threads `io-rt`: scheduler,
//! HTTP, filtered Envoy text parsed into `SidecarScrape`; events drained and dropped, no
//! model, no UI) at several scrape budgets. After the warm-up (two scrapes per sidecar, not
//! budgeted), prints per budget the scrapes per second reached and the CPU of each side,
//! from `/proc/self/task/*/stat`. `cargo bench --bench scrape_rate`; under `cargo test` (no
//! `--bench` argument) a small mesh for a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_dash::demo::synthetic::{SyntheticConfig, SyntheticSpine};
use spine_dash::io::{self, IoConfig, IoEvent, Wake};
use spine_dash::registry::consul::ConsulClient;

/// CPU seconds used so far by this process's threads, by thread-name prefix.
fn cpu_by_thread() -> BTreeMap<String, f64> {
    let ticks = 100.0; // CLK_TCK on Linux
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        let secs = (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks;
        let key = name.split('-').take(2).collect::<Vec<_>>().join("-");
        *out.entry(key).or_default() += secs;
    }
    out
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (services, budgets, measure) = if full {
        (2000, vec![100.0, 400.0, 1600.0], Duration::from_secs(15))
    } else {
        (20, vec![400.0], Duration::from_secs(1))
    };
    let demo_rt = runtime("demo-rt");
    let spine = match demo_rt.block_on(SyntheticSpine::start(SyntheticConfig {
        services,
        ..SyntheticConfig::default()
    })) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("synthetic spine: {e}");
            std::process::exit(1);
        }
    };
    let sidecars = spine.instances();
    let io_rt = runtime("io-rt");
    println!(
        "scraping {sidecars} synthetic sidecars (filtered Envoy text, parsed; no model, no UI); CPU in % of one core"
    );
    println!(
        "{:>8} {:>11} {:>9} {:>13} {:>9} {:>13}",
        "budget/s", "scrapes/s", "io cpu", "io µs/scrape", "demo cpu", "demo µs/scr."
    );
    for budget in budgets {
        let Ok(client) = ConsulClient::new(&spine.registry_url()) else {
            eprintln!("registry URL");
            std::process::exit(1);
        };
        let wake: Wake = Arc::new(|| {});
        let config = IoConfig {
            max_scrapes_per_sec: budget,
            ..IoConfig::default()
        };
        let _guard = io_rt.enter();
        let mut handle = io::spawn(client, None, &config, &wake);
        let (scrapes, secs, cpu) = io_rt.block_on(async {
            // Warm-up: every sidecar's first two scrapes (not budgeted), then a second.
            let mut seen: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
            let mut warm = 0usize;
            let warm_deadline = tokio::time::Instant::now() + Duration::from_mins(5);
            while warm < sidecars {
                match tokio::time::timeout_at(warm_deadline, handle.events.recv()).await {
                    Ok(Some(IoEvent::Scrape { url, .. })) => {
                        let n = seen.entry(url).or_default();
                        *n += 1;
                        if *n == 2 {
                            warm += 1;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let settle = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(_)) = tokio::time::timeout_at(settle, handle.events.recv()).await {}
            let before = cpu_by_thread();
            let start = Instant::now();
            let end = tokio::time::Instant::now() + measure;
            let mut scrapes = 0usize;
            while let Ok(Some(event)) = tokio::time::timeout_at(end, handle.events.recv()).await {
                if matches!(event, IoEvent::Scrape { .. }) {
                    scrapes += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let after = cpu_by_thread();
            let used = |k: &str| {
                after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
            };
            (scrapes, secs, (used("io-rt"), used("demo-rt")))
        });
        drop(handle);
        let rate = scrapes as f64 / secs;
        let per = |cpu: f64| {
            if scrapes == 0 {
                0.0
            } else {
                cpu / scrapes as f64 * 1e6
            }
        };
        println!(
            "{:>8.0} {:>11.0} {:>8.1}% {:>13.0} {:>8.1}% {:>13.0}",
            budget,
            rate,
            100.0 * cpu.0 / secs,
            per(cpu.0),
            100.0 * cpu.1 / secs,
            per(cpu.1),
        );
    }
    spine.shutdown();
}

//! Registry requests per refresh at 10, 200 and 2,000 services: a synthetic spine
//! (`spine-dash demo --serve --size N` in process) counts the answers its registry sends
//! while the dashboard's Consul adapter follows it. Prints one row per size; `cargo bench
//! --bench registry_requests`. Under `cargo test` (no `--bench` argument) it runs 10 only.

// Test support shared with `tests/registry_requests.rs`: a failed setup fails the run.
#[allow(clippy::expect_used)]
#[path = "../tests/support/registry_counts.rs"]
mod registry_counts;

use std::time::Duration;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[10, 200, 2000] } else { &[10] };
    let idle = full.then_some(Duration::from_secs(5));
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        eprintln!("cannot start a tokio runtime");
        std::process::exit(1);
    };
    println!(
        "registry answers per refresh (blocking queries on bulk endpoints; a poll for comparison)"
    );
    println!(
        "{:>9} {:>9} {:>9} {:>14} {:>13} {:>13} {:>15}",
        "services",
        "poll",
        "start",
        "health change",
        "split change",
        "new instance",
        "idle per wait"
    );
    for &n in sizes {
        let c = rt.block_on(registry_counts::measure(n, idle));
        println!(
            "{:>9} {:>9} {:>9} {:>14} {:>13} {:>13} {:>15}",
            c.services,
            c.poll,
            c.initial,
            c.health_change,
            c.split_change,
            c.new_instance,
            c.idle_per_wait
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
        );
    }
}

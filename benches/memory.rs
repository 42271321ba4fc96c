//! Memory at scale (issue 6, benchmark 4): the resident set of a fresh process that builds
//! the model of 2,000 services / 20,000 instances (one sidecar each, two scrapes held per
//! sidecar) after an hour of history (`synthetic::LargeSpine`), then of the whole UI drawing
//! it for a few frames (egui context, fonts, tessellation; no window, no GPU). Reads
//! `VmRSS` / `VmHWM` from `/proc/self/status`; goal ≤ 300 MB for the dashboard.
//!
//! `cargo bench --bench memory`; under `cargo test --all-targets` (no `--bench`) a smoke
//! run on 20 services.

use std::time::{Duration, Instant};

use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::LargeSpine;
use tokio::sync::mpsc;

/// `VmRSS` and `VmHWM` (peak) in MB, when `/proc` has them.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (services, instances, history_secs) = if full {
        (2_000, 10, 3_600)
    } else {
        (20, 3, 60)
    };
    let (start, _) = rss_mb();
    let spine = LargeSpine::mesh(services, instances);
    let now = Instant::now();
    let m = spine.model(now, history_secs);
    let (series, history_bytes) = m.history_footprint();
    let (model_rss, model_peak) = rss_mb();
    println!("memory process at start                       {start:>7.1} MB RSS");
    println!(
        "memory model: {services} services, {} sidecars, {} lanes, {history_secs} s history",
        m.sidecars.len(),
        m.lanes.len()
    );
    println!(
        "memory   history rings: {series} series × {} B = {:.1} MB (preallocated, fixed)",
        history_bytes / series.max(1),
        history_bytes as f64 / 1e6
    );
    // The peer, computed: the rings as they were (one 28-byte point per second), kept for
    // the same hour.
    let old_bytes = series * 3_601 * 28;
    println!(
        "memory   peer: 1 h at 1 s in the former 28-byte points: {:.1} MB ({:.1}× the tiers)",
        old_bytes as f64 / 1e6,
        old_bytes as f64 / history_bytes.max(1) as f64
    );
    println!(
        "memory   process with the model               {model_rss:>7.1} MB RSS (peak {model_peak:.1} MB while building)"
    );
    let (_tx, rx) = mpsc::channel::<IoEvent>(1);
    let (cmd_tx, _crx) = mpsc::channel::<Command>(1);
    let mut app = SpineApp::with_channels(m, rx, cmd_tx);
    app.set_clock(now);
    let ctx = egui::Context::default();
    let frames = if full { 5 } else { 2 };
    let started = Instant::now();
    for _ in 0..frames {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1600.0, 1000.0),
            )),
            ..Default::default()
        };
        let mut out = ctx.run_ui(input, |ui| app.ui_root(ui));
        out.textures_delta.clear();
        std::hint::black_box(ctx.tessellate(out.shapes, out.pixels_per_point));
    }
    let per_frame = started.elapsed() / frames;
    let (ui_rss, ui_peak) = rss_mb();
    println!(
        "memory   + UI ({frames} frames drawn, {:.0} ms each)  {ui_rss:>7.1} MB RSS (peak {ui_peak:.1} MB); goal ≤ 300 MB",
        per_frame.as_secs_f64() * 1e3
    );
    std::hint::black_box((&app, Duration::ZERO));
}

//! Frame CPU of the whole UI (egui run + tessellate, no GPU) on synthetic models: the demo
//! spine and a 500-service mesh. Prints the median and p90 per frame; `cargo bench --bench
//! frame`. Models come from `model::synthetic` (built through `Model::apply`).

use std::time::{Duration, Instant};

use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{demo_lanes, demo_services, mesh, model};
use tokio::sync::mpsc;

fn measure(name: &str, app: &mut SpineApp, frames: usize) {
    let ctx = egui::Context::default();
    let input = || egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1600.0, 1000.0),
        )),
        ..Default::default()
    };
    // Warm-up: fonts, layout caches, the first fit.
    for _ in 0..5 {
        let mut out = ctx.run_ui(input(), |ui| app.ui_root(ui));
        out.textures_delta.clear(); // no GPU here: nothing uploads them
        let _ = ctx.tessellate(out.shapes, out.pixels_per_point);
    }
    let mut out = ctx.run_ui(input(), |ui| app.ui_root(ui));
    out.textures_delta.clear(); // no GPU here: nothing uploads them
    let shapes = out.shapes.len();
    let meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
    let vertices: usize = meshes
        .iter()
        .map(|m| match &m.primitive {
            egui::epaint::Primitive::Mesh(mesh) => mesh.vertices.len(),
            egui::epaint::Primitive::Callback(_) => 0,
        })
        .sum();
    println!("       {name:<28} {shapes} shapes → {vertices} vertices per frame");
    let mut times: Vec<Duration> = (0..frames)
        .map(|_| {
            let start = Instant::now();
            let mut out = ctx.run_ui(input(), |ui| app.ui_root(ui));
            out.textures_delta.clear(); // no GPU here: nothing uploads them
            let meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
            std::hint::black_box(meshes);
            start.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "frame {name:<28} median {:>7.3} ms   p90 {:>7.3} ms   ({frames} frames, 1600×1000)",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
    );
}

/// An app drawing `m` as at `now` (the model's own clock: nothing reads as stale).
fn app_for(m: spine_dash::model::Model, now: Instant, selected: Option<&str>) -> SpineApp {
    let (_tx, rx) = mpsc::channel::<IoEvent>(1);
    let (ctx_tx, _crx) = mpsc::channel::<Command>(1);
    let mut app = SpineApp::with_channels(m, rx, ctx_tx);
    app.set_clock(now);
    app.view_mut().selected = selected.map(str::to_owned);
    app
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test
    // (a few frames of small models), so CI stays quick and the bench still builds and runs.
    let full = std::env::args().any(|a| a == "--bench");
    let (frames, big_frames, size) = if full { (300, 60, 500) } else { (3, 2, 40) };
    let now = Instant::now();
    let mut demo = app_for(model(&demo_services(), &demo_lanes(), now), now, None);
    measure("demo spine (6 services)", &mut demo, frames);
    let mut demo_sel = app_for(
        model(&demo_services(), &demo_lanes(), now),
        now,
        Some("identity"),
    );
    measure("demo spine + inspector", &mut demo_sel, frames);
    let (services, lanes) = mesh(size);
    let built = Instant::now();
    let m = model(&services, &lanes, now);
    println!(
        "model  {size} services / {} lanes built through Model::apply in {:.0} ms",
        m.lanes.len(),
        built.elapsed().as_secs_f64() * 1000.0
    );
    let mut big = app_for(m.clone(), now, None);
    measure(&format!("synthetic {size} services"), &mut big, big_frames);
    let mut still = app_for(m, now, None);
    still.view_mut().particles = false;
    measure(
        &format!("synthetic {size}, no particles"),
        &mut still,
        big_frames,
    );
}

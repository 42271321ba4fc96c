//! Frame CPU of the whole UI (egui run + tessellate, no GPU) on synthetic models: the demo
//! spine, a 500-service mesh, and a 2,000-service / 20,000-instance mesh named by domain
//! (grouped by name prefix at fit, every group expanded, every service at fit, every
//! service at 1:1). Prints the median and p90 per frame (wall time, best of three rounds:
//! on a shared machine a p90 still catches other processes' time slices) and shapes →
//! vertices; the peer
//! rows draw the same scene with one egui shape per lane, particle, ring and station (the
//! map before meshes), in the same process. `cargo bench --bench frame`. Models come from
//! `model::synthetic` (built through `Model::apply`).

use std::time::{Duration, Instant};

use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{demo_lanes, demo_services, domain_mesh, mesh, model};
use spine_dash::view::group::{Grouping, groups_of};
use tokio::sync::mpsc;

const SIZE: egui::Vec2 = egui::vec2(1600.0, 1000.0);

fn input() -> egui::RawInput {
    egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, SIZE)),
        ..Default::default()
    }
}

/// One frame: run the UI, tessellate; returns (shapes, vertices).
fn frame(ctx: &egui::Context, app: &mut SpineApp) -> (usize, usize) {
    let mut out = ctx.run_ui(input(), |ui| app.ui_root(ui));
    out.textures_delta.clear(); // no GPU here: nothing uploads them
    let shapes = out.shapes.len();
    let meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
    let vertices = meshes
        .iter()
        .map(|m| match &m.primitive {
            egui::epaint::Primitive::Mesh(mesh) => mesh.vertices.len(),
            egui::epaint::Primitive::Callback(_) => 0,
        })
        .sum();
    (shapes, vertices)
}

/// A warmed-up context for `app` (fonts, layout caches, the first fit).
fn warm(app: &mut SpineApp) -> egui::Context {
    let ctx = egui::Context::default();
    for _ in 0..5 {
        frame(&ctx, app);
    }
    ctx
}

/// Rounds per scene: the round with the lowest median is reported (this machine is shared:
/// another process's compile can take whole rounds of frames).
const ROUNDS: usize = 3;

fn measure(name: &str, ctx: &egui::Context, app: &mut SpineApp, frames: usize) {
    let (shapes, vertices) = frame(ctx, app);
    let rounds = if frames > 10 { ROUNDS } else { 1 };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, p90) = (0..rounds)
        .map(|_| {
            let mut times: Vec<Duration> = (0..frames)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(frame(ctx, app));
                    start.elapsed()
                })
                .collect();
            times.sort();
            (ms(times[times.len() / 2]), ms(times[times.len() * 9 / 10]))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default();
    if std::env::var_os("FRAME_DEBUG").is_some() {
        let rt = &app.view_mut().map_runtime;
        println!("       map meshes (vertices, indices): {:?}", rt.mesh_sizes);
    }
    println!(
        "frame {name:<46} median {median:>7.3} ms   p90 {p90:>7.3} ms   {shapes} shapes → {:.1} k vertices ({frames} frames × {rounds}, 1600×1000)",
        vertices as f64 / 1000.0,
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

/// Zooms the current map to 1:1 around the middle of the window.
fn zoom_to_one(app: &mut SpineApp) {
    let view = app.view_mut();
    let cam = if view.groups.active {
        &mut view.groups.camera
    } else {
        &mut view.camera
    };
    if let Some(c) = cam.as_mut() {
        let mid = egui::vec2(SIZE.x / 2.0, SIZE.y / 2.0);
        let off = egui::vec2(c.offset[0], c.offset[1]);
        let world = (mid - off) / c.scale;
        let new = mid - world;
        *c = spine_dash::view::Camera {
            scale: 1.0,
            offset: [new.x, new.y],
        };
    }
}

/// Measures `m` as configured by `setup`, with meshes and (if `peer`) with shapes.
fn scene(
    name: &str,
    m: &spine_dash::model::Model,
    now: Instant,
    frames: usize,
    peer: bool,
    setup: &dyn Fn(&mut SpineApp),
) {
    if !wanted(name) {
        return;
    }
    let mut app = app_for(m.clone(), now, None);
    setup(&mut app);
    let ctx = warm(&mut app);
    measure(name, &ctx, &mut app, frames);
    if peer {
        app.view_mut().map_runtime.individual_shapes = true;
        frame(&ctx, &mut app);
        measure(&format!("{name} [peer: shapes]"), &ctx, &mut app, frames);
    }
}

/// `FRAME_ONLY=500` runs only the scenes whose name contains `500` (profiling one scene).
fn wanted(name: &str) -> bool {
    std::env::var("FRAME_ONLY").map_or(true, |only| name.contains(&only))
}

/// Whether some wanted scene's name starts with `prefix` (its model must be built).
fn wanted_prefix(prefix: &str) -> bool {
    std::env::var("FRAME_ONLY").map_or(true, |only| only.contains(prefix) || prefix.contains(&only))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test
    // (a few frames of small models), so CI stays quick and the bench still builds and runs.
    let full = std::env::args().any(|a| a == "--bench");
    let (frames, big_frames, size, big, instances) = if full {
        (300, 60, 500, 2000, 10)
    } else {
        (3, 2, 40, 120, 3)
    };
    // `FRAME_N=2000` measures that many frames of the big scenes (profiling).
    let big_frames = std::env::var("FRAME_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(big_frames);
    let now = Instant::now();
    let demo = model(&demo_services(), &demo_lanes(), now);
    scene("demo spine (6 services)", &demo, now, frames, full, &|_| {});
    scene(
        "demo spine + inspector",
        &demo,
        now,
        frames,
        false,
        &|app| {
            app.view_mut().selected = Some("identity".into());
        },
    );

    let (services, lanes) = if wanted_prefix(&format!("synthetic {size}")) {
        mesh(size)
    } else {
        (Vec::new(), Vec::new())
    };
    let built = Instant::now();
    let m = model(&services, &lanes, now);
    println!(
        "model  {size} services / {} lanes built through Model::apply in {:.0} ms",
        m.lanes.len(),
        built.elapsed().as_secs_f64() * 1000.0
    );
    let name = format!("synthetic {size} services");
    scene(&name, &m, now, big_frames, full, &|_| {});
    scene(
        &format!("{name}, no particles"),
        &m,
        now,
        big_frames,
        full,
        &|app| {
            app.view_mut().particles = false;
        },
    );

    let (services, lanes) = if wanted_prefix(&format!("domains {big}")) {
        domain_mesh(big, instances)
    } else {
        (Vec::new(), Vec::new())
    };
    let built = Instant::now();
    let m = model(&services, &lanes, now);
    let groups = groups_of(m.services.keys().map(String::as_str));
    println!(
        "model  {big} services / {} instances / {} lanes / {} groups built through Model::apply in {:.0} ms",
        m.services
            .values()
            .map(|s| s.instances.len())
            .sum::<usize>(),
        m.lanes.len(),
        groups.len(),
        built.elapsed().as_secs_f64() * 1000.0
    );
    let tag = format!("domains {big}/{}", big * instances);
    scene(
        &format!("{tag} grouped, fit"),
        &m,
        now,
        big_frames,
        full,
        &|_| {},
    );
    scene(
        &format!("{tag} grouped, 3 groups open"),
        &m,
        now,
        big_frames,
        false,
        &|app| {
            let keys: Vec<String> = groups_of(app.model().services.keys().map(String::as_str))
                .keys()
                .take(3)
                .cloned()
                .collect();
            app.view_mut().groups.expanded.extend(keys);
        },
    );
    scene(
        &format!("{tag} every service, fit"),
        &m,
        now,
        big_frames,
        full,
        &|app| {
            app.view_mut().groups.mode = Grouping::Off;
        },
    );
    let flat_one = |app: &mut SpineApp| {
        app.view_mut().groups.mode = Grouping::Off;
        let ctx = egui::Context::default();
        frame(&ctx, app);
        zoom_to_one(app);
    };
    scene(
        &format!("{tag} every service, 1:1"),
        &m,
        now,
        big_frames,
        full,
        &flat_one,
    );
    scene(
        &format!("{tag} filter (~60 matches)"),
        &m,
        now,
        big_frames,
        false,
        &|app| {
            app.view_mut().filter = "payments-api".into();
        },
    );
}

//! Renders the whole window on a large synthetic mesh to PNGs (wgpu; lavapipe under CI),
//! to look at the map at scale: grouped at fit, a group expanded, every service at fit and
//! at 1:1, a filter. `cargo run --release --example map_shots -- 2000 10 /tmp/shots`
//! (services, instances per service, output directory).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a developer tool: fail loudly

use std::time::Instant;

use egui_kittest::Harness;
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{domain_mesh, model};
use spine_dash::view::group::Grouping;
use tokio::sync::mpsc;

/// How a shot sets the app up before it is rendered.
type Setup = fn(&mut SpineApp);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let instances: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let out = args.get(3).cloned().unwrap_or_else(|| "/tmp/shots".into());
    std::fs::create_dir_all(&out).unwrap();
    let now = Instant::now();
    let (services, lanes) = domain_mesh(n, instances);
    let built = Instant::now();
    let m = model(&services, &lanes, now);
    println!(
        "model of {n} services built in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    let shots: [(&str, Setup); 6] = [
        ("grouped_fit", |_| {}),
        ("grouped_payments_open", |app| {
            app.view_mut().groups.expanded.insert("payments-*".into());
            app.view_mut().groups.reveal = Some("payments-*".into());
        }),
        ("grouped_zoom", |app| {
            let view = app.view_mut();
            if let Some(c) = view.groups.camera.as_mut() {
                *c = spine_dash::view::Camera {
                    scale: 1.0,
                    offset: [40.0, 400.0],
                };
            }
        }),
        ("flat_fit", |app| app.view_mut().groups.mode = Grouping::Off),
        ("flat_one_to_one", |app| {
            app.view_mut().groups.mode = Grouping::Off;
        }),
        ("filter_payments_api", |app| {
            app.view_mut().filter = "payments-api".into();
        }),
    ];
    for (name, setup) in shots {
        let (_events, event_rx) = mpsc::channel::<IoEvent>(4);
        let (cmd_tx, _commands) = mpsc::channel::<Command>(4);
        let mut app = SpineApp::with_channels(m.clone(), event_rx, cmd_tx);
        app.set_clock(now);
        app.view_mut().particles = false;
        let mut harness = Harness::builder()
            .with_size(egui::vec2(1600.0, 1000.0))
            .wgpu()
            .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app);
        harness.run_steps(2);
        setup(harness.state_mut());
        if name == "flat_one_to_one" {
            harness.run_steps(1);
            let view = harness.state_mut().view_mut();
            if let Some(c) = view.camera.as_mut() {
                let mid = egui::vec2(800.0, 460.0);
                let world = (mid - egui::vec2(c.offset[0], c.offset[1])) / c.scale;
                let off = mid - world;
                *c = spine_dash::view::Camera {
                    scale: 1.0,
                    offset: [off.x, off.y],
                };
            }
        }
        harness.run_steps(3);
        let image = harness.render().unwrap();
        let path = format!("{out}/{name}.png");
        image.save(&path).unwrap();
        println!("wrote {path}");
    }
}

//! Image snapshots of the whole window, rendered by wgpu on lavapipe from a fixed model at a
//! fixed size and clock. Bless with `UPDATE_SNAPSHOTS=1 cargo test --test ui_snapshots`
//! and look at every PNG in `tests/snapshots/` before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Instant;

use egui_kittest::Harness;
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{LaneSpec, demo_lanes, demo_services, model_over};
use spine_dash::model::types::BreakerState;
use tokio::sync::mpsc;

fn render(name: &str, lanes: &[LaneSpec], selected: Option<&str>) {
    let now = Instant::now();
    // Two minutes of history, so the inspector's charts have lines.
    let m = model_over(&demo_services(), lanes, now, 120);
    let (_events, event_rx) = mpsc::channel::<IoEvent>(4);
    let (cmd_tx, _commands) = mpsc::channel::<Command>(4);
    let mut app = SpineApp::with_channels(m, event_rx, cmd_tx);
    app.set_clock(now);
    app.view_mut().particles = false;
    app.view_mut().selected = selected.map(str::to_owned);
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .wgpu()
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app);
    harness.run_steps(4);
    harness.snapshot(name);
}

#[test]
fn healthy_demo_spine() {
    render("healthy", &demo_lanes(), None);
}

#[test]
fn identity_at_80_20_in_the_inspector() {
    render("identity_80_20", &demo_lanes(), Some("identity"));
}

#[test]
fn photo_open_and_payment_saturated() {
    let mut lanes = demo_lanes();
    for lane in &mut lanes {
        match lane.service.as_str() {
            "photo" => {
                lane.breaker = BreakerState::Open;
                lane.errors = lane.rps;
            }
            "payment" => {
                lane.breaker = BreakerState::Saturated;
                lane.errors = 3;
                lane.latency_ms = 480.0;
            }
            "gateway" => lane.errors = 10,
            _ => {}
        }
    }
    render("photo_open_payment_saturated", &lanes, None);
}

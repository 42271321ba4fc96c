//! Image snapshots of the whole window, rendered by wgpu on lavapipe from a fixed model at a
//! fixed size and clock. Bless with `UPDATE_SNAPSHOTS=1 cargo test --test ui_snapshots`
//! and look at every PNG in `tests/snapshots/` before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent, SplitWrite, WriteOrigin};
use spine_dash::model::plan::{GuardLimits, Phase, Plan, PlanEvent, PlanStep};
use spine_dash::model::synthetic::{LaneSpec, demo_lanes, demo_services, model_over};
use spine_dash::model::types::BreakerState;
use spine_dash::model::types::Split;
use spine_dash::view::shift::Confirm;
use tokio::sync::mpsc;

fn render(name: &str, lanes: &[LaneSpec], selected: Option<&str>) {
    render_with(name, lanes, selected, |_, _| {});
}

/// Renders after `prepare` changed the model and the app (at the fixed clock `now`).
fn render_with(
    name: &str,
    lanes: &[LaneSpec],
    selected: Option<&str>,
    prepare: impl FnOnce(&mut SpineApp, Instant),
) {
    let now = Instant::now();
    // Two minutes of history, so the inspector's charts have lines.
    let m = model_over(&demo_services(), lanes, now, 120);
    let (_events, event_rx) = mpsc::channel::<IoEvent>(4);
    let (cmd_tx, _commands) = mpsc::channel::<Command>(4);
    let mut app = SpineApp::with_channels(m, event_rx, cmd_tx);
    app.set_clock(now);
    app.view_mut().particles = false;
    app.view_mut().selected = selected.map(str::to_owned);
    prepare(&mut app, now);
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

/// identity's plan paused after a guard reverted it, with the audit panel open.
#[test]
fn a_reverted_plan_and_the_audit_panel() {
    render_with(
        "plan_reverted_audit",
        &demo_lanes(),
        Some("identity"),
        |app, now| {
            let steps = [(5000, 5000), (0, 10_000)]
                .into_iter()
                .map(|(a, b)| PlanStep {
                    split: Split::from_pairs([("v1", a), ("v2", b)]),
                    hold: Duration::from_mins(5),
                })
                .collect();
            let before = Split::from_pairs([("v1", 8000), ("v2", 2000)]);
            let mut plan =
                Plan::new("identity", &before, steps, GuardLimits::default(), now).unwrap();
            let reason = "guard tripped at step 1: v2 5xx 84.6 % > 5 % (26.1 rps); \
                          reverted to v1 80 / v2 20";
            plan.events.push(PlanEvent {
                at: now,
                text: reason.into(),
                is_error: true,
            });
            plan.phase = Phase::Paused {
                step: 0,
                reason: reason.into(),
            };
            let records = [
                (
                    "2026-11-27T11:58:40Z",
                    "plan",
                    "applied",
                    "v1 80 / v2 20",
                    "v1 50 / v2 50",
                ),
                (
                    "2026-11-27T11:59:52Z",
                    "revert",
                    "applied",
                    "v1 50 / v2 50",
                    "v1 80 / v2 20",
                ),
            ];
            let model = app.model_mut();
            model.shifting.plans.insert("identity".into(), plan);
            for (time, origin, outcome, before, after) in records {
                model.shifting.audit.push_back(
                    serde_json::from_value(serde_json::json!({
                        "time": time, "user": "alice", "host": "ws1",
                        "registry": "demo http://127.0.0.1:8500", "service": "identity",
                        "before": before, "after": after,
                        "reason": if origin == "revert" { "revert: guard tripped" } else { "plan step 1/2" },
                        "origin": origin, "cas_index": 1190, "outcome": outcome,
                    }))
                    .unwrap(),
                );
            }
            app.view_mut().audit_open = true;
            app.view_mut().tape_open = false;
        },
    );
}

/// The confirm step for 80/20 → 50/50 on identity, over the map.
#[test]
fn the_confirm_step() {
    render_with(
        "confirm_50_50",
        &demo_lanes(),
        Some("identity"),
        |app, _| {
            app.view_mut().drafts.insert(
                "identity".into(),
                vec![("v1".into(), 5000), ("v2".into(), 5000)],
            );
            app.view_mut().confirm = Some(Confirm {
                write: SplitWrite {
                    service: "identity".into(),
                    before: Some(Split::from_pairs([("v1", 8000), ("v2", 2000)])),
                    after: Split::from_pairs([("v1", 5000), ("v2", 5000)]),
                    expected_index: 42,
                    reason: "canary looks fine".into(),
                    origin: WriteOrigin::Operator,
                },
                allow_unhealthy: false,
                shown: true,
            });
        },
    );
}

//! UI tests of the highway map and its keyboard habits: the real app on a synthetic model
//! (`model::synthetic`, built through `Model::apply`), driven through `egui_kittest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::Instant;

use egui::{Event, Key, pos2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{demo_lanes, demo_services, model};
use tokio::sync::mpsc;

struct Ui {
    harness: Harness<'static, SpineApp>,
    _events: mpsc::Sender<IoEvent>,
    _commands: mpsc::Receiver<Command>,
}

fn demo_ui() -> Ui {
    ui_with(&demo_lanes())
}

fn station_rect(h: &Harness<'static, SpineApp>, name: &str) -> egui::Rect {
    h.get_by_label(&format!("station {name}")).rect()
}

fn stations(h: &Harness<'static, SpineApp>) -> Vec<String> {
    [
        "portal",
        "gateway",
        "identity",
        "photo",
        "payment",
        "notification",
    ]
    .into_iter()
    .filter(|n| h.query_by_label(&format!("station {n}")).is_some())
    .map(str::to_owned)
    .collect()
}

fn type_text(h: &mut Harness<'static, SpineApp>, text: &str) {
    h.event(Event::Text(text.into()));
    h.run_steps(2);
}

#[test]
fn question_mark_opens_the_help_and_esc_closes_it() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    assert!(h.query_by_label("Keyboard and mouse").is_none());
    type_text(h, "?");
    assert!(
        h.query_by_label("Keyboard and mouse").is_some(),
        "help open"
    );
    // Every binding is listed.
    for (keys, _) in spine_dash::view::BINDINGS {
        assert!(
            h.query_all_by_label(keys).next().is_some(),
            "binding {keys} listed"
        );
    }
    h.key_press(Key::Escape);
    h.run_steps(2);
    assert!(
        h.query_by_label("Keyboard and mouse").is_none(),
        "help closed"
    );
}

#[test]
fn slash_focuses_the_filter_and_typing_narrows_the_map() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    assert_eq!(stations(h).len(), 6);
    type_text(h, "/");
    type_text(h, "pho");
    assert_eq!(stations(h), vec!["photo".to_owned()]);
    // Esc in the field clears it: everything is back.
    h.key_press(Key::Escape);
    h.run_steps(2);
    assert_eq!(stations(h).len(), 6);
}

#[test]
fn clicking_a_lane_selects_it_and_opens_the_inspector() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    let a = station_rect(h, "payment");
    let b = station_rect(h, "notification");
    // payment → notification has one lane, on the straight line between the stations.
    let mid = pos2(f32::midpoint(a.right(), b.left()), a.center().y);
    h.hover_at(mid);
    h.run_steps(1);
    h.drag_at(mid);
    h.drop_at(mid);
    h.run_steps(3);
    assert_eq!(h.state().selected(), Some("notification"));
    let lane = h.state_mut().view_mut().selected_lane.clone().unwrap();
    assert_eq!(
        (lane.caller.as_str(), lane.version.as_str()),
        ("payment", "v1")
    );
    assert!(
        h.query_by_label_contains("Instances").is_some(),
        "inspector shows the service"
    );
}

#[test]
fn arrows_move_the_selection_along_roads() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    h.state_mut().view_mut().selected = Some("gateway".into());
    h.run_steps(1);
    h.key_press(Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().selected(), Some("identity"), "topmost callee");
    h.key_press(Key::ArrowDown);
    h.run_steps(2);
    assert_eq!(h.state().selected(), Some("payment"));
    h.key_press(Key::ArrowRight);
    h.run_steps(2);
    assert_eq!(h.state().selected(), Some("notification"));
    h.key_press(Key::ArrowLeft);
    h.run_steps(2);
    assert_eq!(h.state().selected(), Some("payment"));
}

#[test]
fn dragging_a_station_pins_it_and_moves_nobody_else() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    let photo = station_rect(h, "photo");
    let others: Vec<egui::Rect> = ["portal", "gateway", "identity", "payment"]
        .iter()
        .map(|n| station_rect(h, n))
        .collect();
    let from = photo.center();
    h.drag_at(from);
    h.run_steps(1);
    for dy in [20.0, 40.0, 60.0] {
        h.hover_at(from + egui::vec2(0.0, dy));
        h.run_steps(1);
    }
    h.drop_at(from + egui::vec2(0.0, 60.0));
    h.run_steps(2);
    assert!(h.state_mut().view_mut().pins.contains_key("photo"));
    let moved = station_rect(h, "photo");
    assert!(
        moved.center().y > photo.center().y + 30.0,
        "{moved:?} vs {photo:?}"
    );
    for (n, before) in ["portal", "gateway", "identity", "payment"]
        .iter()
        .zip(&others)
    {
        assert_eq!(station_rect(h, n), *before, "{n} moved");
    }
}

#[test]
fn space_pauses_the_display_and_the_theme_toggles() {
    let mut ui = demo_ui();
    let h = &mut ui.harness;
    h.key_press(Key::Space);
    h.run_steps(2);
    assert!(h.query_by_label_contains("PAUSED").is_some());
    h.key_press(Key::Space);
    h.run_steps(2);
    assert!(h.query_by_label_contains("PAUSED").is_none());
    assert!(h.state_mut().view_mut().dark);
    type_text(h, "t");
    assert!(!h.state_mut().view_mut().dark, "t toggles to light");
    assert_eq!(h.ctx.theme(), egui::Theme::Light);
}

fn ui_with(lanes: &[spine_dash::model::synthetic::LaneSpec]) -> Ui {
    ui_on(model(&demo_services(), lanes, Instant::now()))
}

fn ui_on(m: spine_dash::model::Model) -> Ui {
    let (events, event_rx) = mpsc::channel(16);
    let (cmd_tx, commands) = mpsc::channel(16);
    let mut app = SpineApp::with_channels(m, event_rx, cmd_tx);
    app.view_mut().particles = false;
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app);
    harness.run_steps(3);
    Ui {
        harness,
        _events: events,
        _commands: commands,
    }
}

fn photo_open() -> Vec<spine_dash::model::synthetic::LaneSpec> {
    let mut lanes = demo_lanes();
    for lane in &mut lanes {
        if lane.service == "photo" {
            lane.breaker = spine_dash::model::types::BreakerState::Open;
            lane.errors = lane.rps;
        }
    }
    lanes
}

#[test]
fn predicates_narrow_the_map_and_a_bad_one_is_explained() {
    let mut ui = ui_with(&photo_open());
    let h = &mut ui.harness;
    h.state_mut().view_mut().filter = "breaker:open".into();
    h.run_steps(2);
    assert_eq!(stations(h), vec!["photo".to_owned()]);
    h.state_mut().view_mut().filter = "version:v2".into();
    h.run_steps(2);
    assert_eq!(stations(h), vec!["identity".to_owned()]);
    h.state_mut().view_mut().filter = "err>50%".into();
    h.run_steps(2);
    assert_eq!(stations(h), vec!["photo".to_owned()]);
    h.state_mut().view_mut().filter = "p99>>3".into();
    h.run_steps(2);
    assert_eq!(stations(h).len(), 6, "a bad filter filters nothing");
    assert!(h.query_by_label_contains("filter ignored").is_some());
}

#[test]
fn clicking_a_tape_entry_selects_its_lane() {
    let mut ui = ui_with(&photo_open());
    let h = &mut ui.harness;
    assert!(h.state().selected().is_none());
    h.get_by_label("gateway → photo v1").click();
    h.run_steps(3);
    assert_eq!(h.state().selected(), Some("photo"));
    let lane = h.state_mut().view_mut().selected_lane.clone().unwrap();
    assert_eq!(lane.caller, "gateway");
    // b hides the tape.
    type_text(h, "b");
    assert!(h.query_by_label("gateway → photo v1").is_none());
}

#[test]
fn a_station_that_joins_later_is_brought_into_view_until_the_operator_moves_the_camera() {
    let without = |gone: &[&str]| {
        demo_lanes()
            .into_iter()
            .filter(|l| !gone.contains(&l.service.as_str()) && !gone.contains(&l.caller.as_str()))
            .collect::<Vec<_>>()
    };
    let services = |gone: &[&str]| {
        demo_services()
            .into_iter()
            .filter(|s| !gone.contains(&s.name.as_str()))
            .collect::<Vec<_>>()
    };
    let mut ui = ui_on(model(
        &services(&["notification", "photo"]),
        &without(&["notification", "photo"]),
        Instant::now(),
    ));
    let h = &mut ui.harness;
    assert!(h.query_by_label("station notification").is_none());
    // notification (a layer further right) joins: the fitted map takes it in.
    *h.state_mut().model_mut() = model(&services(&["photo"]), &without(&["photo"]), Instant::now());
    h.run_steps(3);
    let screen = egui::Rect::from_min_size(pos2(0.0, 0.0), egui::vec2(1280.0, 800.0));
    assert!(
        screen.contains_rect(station_rect(h, "notification")),
        "notification off screen: {:?}",
        station_rect(h, "notification")
    );
    // The operator zooms: a station joining now leaves the camera where they put it.
    h.hover_at(station_rect(h, "gateway").center());
    h.event(Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 120.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(60);
    let gateway = station_rect(h, "gateway");
    *h.state_mut().model_mut() = model(&demo_services(), &demo_lanes(), Instant::now());
    h.run_steps(3);
    assert_eq!(station_rect(h, "gateway"), gateway, "the camera stayed");
}

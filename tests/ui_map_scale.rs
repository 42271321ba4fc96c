//! UI tests of the map at scale: groups by name prefix (collapse, expand, collapse back),
//! filters that draw only what matches, and idle behaviour (no repaint requested when
//! nothing moves; particles stop when the window is idle or loses focus). The real app on
//! synthetic models (`model::synthetic`), driven through `egui_kittest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use egui::ViewportId;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::synthetic::{demo_lanes, demo_services, domain_mesh, model};
use spine_dash::model::types::Health;
use tokio::sync::mpsc;

struct Ui {
    harness: Harness<'static, SpineApp>,
    _events: mpsc::Sender<IoEvent>,
    commands: mpsc::Receiver<Command>,
}

impl Ui {
    /// The `Focus` commands the app sent since the last call (to the io layer's scrape
    /// scheduler), each one's services.
    fn focus_sent(&mut self) -> Vec<Vec<String>> {
        std::iter::from_fn(|| self.commands.try_recv().ok())
            .filter_map(|c| match c {
                Command::Focus { services } => Some(services),
                _ => None,
            })
            .collect()
    }
}

fn ui_for(m: spine_dash::model::Model, now: Instant, particles: bool) -> Ui {
    let (events, event_rx) = mpsc::channel(16);
    let (cmd_tx, commands) = mpsc::channel(16);
    let mut app = SpineApp::with_channels(m, event_rx, cmd_tx);
    app.set_clock(now);
    app.view_mut().particles = particles;
    // Frames 1/60 s apart, as on screen (two clicks make a double-click).
    let harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .with_step_dt(1.0 / 60.0)
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app);
    let mut ui = Ui {
        harness,
        _events: events,
        commands,
    };
    ui.harness.run_steps(3);
    ui
}

/// 120 services named by domain (`payments-api-001`, …): past the 80 where groups start.
fn mesh_ui() -> Ui {
    let now = Instant::now();
    let (services, lanes) = domain_mesh(120, 2);
    ui_for(model(&services, &lanes, now), now, false)
}

fn labels_with(h: &Harness<'static, SpineApp>, prefix: &str) -> Vec<String> {
    h.query_all_by_label_contains(prefix)
        .filter_map(|n| n.accesskit_node().label())
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// The delay before the next repaint the last frame asked for (`MAX`: none).
fn repaint_delay(h: &Harness<'static, SpineApp>) -> Duration {
    h.output()
        .viewport_output
        .get(&ViewportId::ROOT)
        .map_or(Duration::MAX, |v| v.repaint_delay)
}

fn type_text(h: &mut Harness<'static, SpineApp>, text: &str) {
    h.event(egui::Event::Text(text.into()));
    h.run_steps(2);
}

#[test]
fn a_large_mesh_shows_groups_one_expands_to_its_members_and_collapses_back() {
    let mut ui = mesh_ui();
    let h = &mut ui.harness;
    let groups = labels_with(h, "group ");
    assert!(
        groups.contains(&"group payments-*".to_owned()),
        "{groups:?}"
    );
    assert!(groups.len() >= 4, "{groups:?}");
    assert!(
        labels_with(h, "station payments-").is_empty(),
        "members hidden while collapsed"
    );
    let before = h.get_by_label("group search-*").rect();

    // Double-click expands.
    let node = h.get_by_label("group payments-*");
    node.click();
    node.click();
    h.run_steps(3);
    let members = labels_with(h, "station payments-");
    assert!(members.len() >= 5, "{members:?}");
    assert!(h.query_by_label("group payments-*").is_none());
    assert!(
        h.query_by_label("expanded group payments-*").is_some(),
        "its slot keeps an outline"
    );
    assert_eq!(
        h.get_by_label("group search-*").rect(),
        before,
        "expanding moves nobody"
    );

    // `e` on the selected expanded group collapses it again.
    h.get_by_label("expanded group payments-*").click();
    h.run_steps(2);
    type_text(h, "e");
    assert!(h.query_by_label("group payments-*").is_some());
    assert!(labels_with(h, "station payments-").is_empty());

    // ... and expands it once more: the members come back to the same slots.
    type_text(h, "e");
    let again = labels_with(h, "station payments-");
    assert_eq!(again, members);
}

#[test]
fn the_header_menu_turns_grouping_off_and_every_service_is_a_station() {
    let mut ui = mesh_ui();
    let h = &mut ui.harness;
    h.get_by_label_contains("groups (").click();
    h.run_steps(2);
    h.get_by_label("off: every service").click();
    h.run_steps(3);
    assert!(labels_with(h, "group ").is_empty());
    assert!(!labels_with(h, "station ").is_empty());
    assert!(!h.state_mut().view_mut().groups.active);
}

#[test]
fn a_filter_draws_only_what_matches() {
    let mut ui = mesh_ui();
    let h = &mut ui.harness;
    // Few matches: their groups open by themselves, only the matches are stations.
    h.state_mut().view_mut().filter = "payments-api".into();
    h.run_steps(3);
    let shown = labels_with(h, "station ");
    assert!(!shown.is_empty());
    assert!(
        shown.iter().all(|s| s.starts_with("station payments-api-")),
        "{shown:?}"
    );
    assert!(labels_with(h, "group ").is_empty(), "no group matches");

    // Many matches: groups stay collapsed (each says how many of its services match).
    h.state_mut().view_mut().filter = "o".into();
    h.run_steps(3);
    assert!(labels_with(h, "station ").is_empty());
    assert!(!labels_with(h, "group ").is_empty());

    // A predicate: only the service with a critical instance.
    let now = Instant::now();
    let (mut services, lanes) = domain_mesh(120, 2);
    for s in &mut services {
        for inst in &mut s.instances {
            inst.1 = Health::Passing;
        }
    }
    services[30].instances[0].1 = Health::Critical;
    let sick = services[30].name.clone();
    let mut ui = ui_for(model(&services, &lanes, now), now, false);
    let h = &mut ui.harness;
    h.state_mut().view_mut().filter = "health:critical".into();
    h.run_steps(3);
    assert_eq!(labels_with(h, "station "), vec![format!("station {sick}")]);
}

#[test]
fn nothing_asks_for_a_repaint_when_idle() {
    let now = Instant::now();
    // Particles off: a static model and no input never ask for another frame.
    let mut ui = ui_for(model(&demo_services(), &demo_lanes(), now), now, false);
    let h = &mut ui.harness;
    h.run_steps(5);
    assert_eq!(repaint_delay(h), Duration::MAX);

    // Particles on: they move while the operator is around, then stop.
    let mut ui = ui_for(model(&demo_services(), &demo_lanes(), now), now, true);
    let h = &mut ui.harness;
    h.state_mut().view_mut().particles_idle_secs = 2;
    h.run_steps(2);
    assert!(repaint_delay(h) <= Duration::from_millis(50));
    assert!(h.state_mut().view_mut().map_runtime.particles_moving);
    // Two seconds of frames (kittest advances 1/60 s a step) without input.
    h.run_steps(130);
    assert_eq!(repaint_delay(h), Duration::MAX, "idle: no repaint asked");
    assert!(!h.state_mut().view_mut().map_runtime.particles_moving);
    let frozen = h.state_mut().view_mut().map_runtime.particle_secs;
    h.run_steps(10);
    let later = h.state_mut().view_mut().map_runtime.particle_secs;
    assert!(later.total_cmp(&frozen).is_eq(), "particles stand still");
    // A pointer move wakes them.
    h.hover_at(egui::pos2(700.0, 500.0));
    h.run_steps(2);
    assert!(h.state_mut().view_mut().map_runtime.particles_moving);
    assert!(repaint_delay(h) <= Duration::from_millis(50));
}

#[test]
fn particles_stop_when_the_window_loses_focus_unless_asked_not_to() {
    let now = Instant::now();
    let mut ui = ui_for(model(&demo_services(), &demo_lanes(), now), now, true);
    let h = &mut ui.harness;
    h.run_steps(2);
    assert!(h.state_mut().view_mut().map_runtime.particles_moving);
    let focus = |h: &mut Harness<'static, SpineApp>, focused: bool| {
        h.input_mut()
            .viewports
            .entry(ViewportId::ROOT)
            .or_default()
            .focused = Some(focused);
    };
    focus(h, false);
    h.run_steps(3);
    assert!(!h.state_mut().view_mut().map_runtime.particles_moving);
    assert_eq!(repaint_delay(h), Duration::MAX);
    // The setting (header → settings) keeps them moving without focus.
    h.state_mut().view_mut().particles_unfocused = true;
    h.run_steps(3);
    assert!(h.state_mut().view_mut().map_runtime.particles_moving);
    assert!(repaint_delay(h) <= Duration::from_millis(50));
    h.state_mut().view_mut().particles_unfocused = false;
    focus(h, true);
    h.run_steps(3);
    assert!(h.state_mut().view_mut().map_runtime.particles_moving);
}

#[test]
fn zoomed_far_out_expanded_groups_draw_collapsed_again() {
    let mut ui = mesh_ui();
    let h = &mut ui.harness;
    h.state_mut()
        .view_mut()
        .groups
        .expanded
        .insert("payments-*".into());
    h.run_steps(3);
    assert!(!labels_with(h, "station payments-").is_empty());
    let cam = h.state_mut().view_mut().groups.camera.unwrap();
    h.state_mut().view_mut().groups.camera = Some(spine_dash::view::Camera { scale: 0.1, ..cam });
    h.run_steps(2);
    assert!(h.query_by_label("group payments-*").is_some());
    assert!(labels_with(h, "station payments-").is_empty());
    // Zoomed in again, the operator's expansion is still there.
    h.state_mut().view_mut().groups.camera = Some(cam);
    h.run_steps(2);
    assert!(!labels_with(h, "station payments-").is_empty());
}

#[test]
fn the_services_in_view_are_told_once_per_change() {
    let mut ui = mesh_ui();
    let sent = ui.focus_sent();
    assert_eq!(sent.len(), 1, "one Focus command after the first frames");
    // Grouped at fit: every group is on screen, so every service is in view.
    let first = &sent[0];
    assert_eq!(first.len(), 120);
    ui.harness.run_steps(2);
    assert!(ui.focus_sent().is_empty(), "nothing changed, nothing sent");
    // Zoomed in on the left: fewer.
    let h = &mut ui.harness;
    let cam = h.state_mut().view_mut().groups.camera.unwrap();
    h.state_mut().view_mut().groups.camera = Some(spine_dash::view::Camera {
        scale: 2.5,
        offset: [0.0, cam.offset[1] * 2.5],
    });
    h.run_steps(2);
    let zoomed = ui.focus_sent();
    assert_eq!(zoomed.len(), 1);
    assert!(zoomed[0].len() < first.len(), "{}", zoomed[0].len());
}

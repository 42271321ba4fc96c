//! UI tests: the real app driven through `egui_kittest` (AccessKit), no network.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, IoEvent};
use spine_dash::model::types::{
    Health, Instance, RegistryKind, RegistrySnapshot, ServiceEntry, Split, SplitConfig,
};
use spine_dash::model::{Model, RegistryInfo};
use tokio::sync::mpsc;

fn instance(id: &str, service: &str, version: &str, health: Health) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        version: version.into(),
        address: "10.0.1.11".into(),
        port: 8080,
        health,
        check_output: String::new(),
        metrics_url: None,
    }
}

/// gateway, and identity (v1 ×2, v2 ×1, split 80/20 at index 1190).
fn identity_snapshot() -> RegistrySnapshot {
    RegistrySnapshot {
        drivers: Vec::new(),
        services: vec![
            ServiceEntry {
                protocol: None,
                name: "gateway".into(),
                instances: vec![instance("gateway-1", "gateway", "v1", Health::Passing)],
                subsets: vec![],
                split: None,
            },
            ServiceEntry {
                protocol: None,
                name: "identity".into(),
                instances: vec![
                    instance("identity-v1-a", "identity", "v1", Health::Passing),
                    instance("identity-v1-b", "identity", "v1", Health::Passing),
                    instance("identity-v2-a", "identity", "v2", Health::Passing),
                ],
                subsets: vec!["v1".into(), "v2".into()],
                split: Some(SplitConfig {
                    split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                    modify_index: 1190,
                }),
            },
        ],
    }
}

/// An app on a writable Consul registry that knows nothing yet, with its channel ends.
fn empty_app() -> (SpineApp, mpsc::Sender<IoEvent>, mpsc::Receiver<Command>) {
    let info = RegistryInfo {
        kind: RegistryKind::Consul,
        address: "http://127.0.0.1:8500".into(),
        datacenter: None,
        writable: true,
    };
    let model = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    let (event_tx, event_rx) = mpsc::channel(16);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    (
        SpineApp::with_channels(model, event_rx, cmd_tx),
        event_tx,
        cmd_rx,
    )
}

/// A model that knows identity (v1 ×2, v2 ×1, split 80/20 at index 1190) and gateway.
fn app_with_identity() -> (SpineApp, mpsc::Sender<IoEvent>, mpsc::Receiver<Command>) {
    let (mut app, event_tx, cmd_rx) = empty_app();
    let snapshot = identity_snapshot();
    event_tx
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(snapshot)),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    app.drain_events();
    (app, event_tx, cmd_rx)
}

fn harness(app: SpineApp) -> Harness<'static, SpineApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app)
}

#[test]
fn dragging_the_v2_slider_emits_a_cas_split_write() {
    let (mut app, _events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();

    let slider = h.get_by_role_and_label(Role::Slider, "v2 weight");
    let rect = slider.rect();
    // Drag the v2 handle from its 20 % position to the middle of the rail: 50 %.
    let from = egui::pos2(rect.left() + rect.width() * 0.2, rect.center().y);
    let to = egui::pos2(rect.center().x, rect.center().y);
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    h.hover_at(to);
    h.step();
    h.drop_at(to);
    h.step();
    h.step();

    let command = commands.try_recv().expect("a command after release");
    let Command::SetSplit {
        service,
        split,
        expected_index,
    } = command
    else {
        panic!("expected SetSplit, got {command:?}");
    };
    assert_eq!(service, "identity");
    assert_eq!(expected_index, 1190, "CAS on the splitter's ModifyIndex");
    let v2 = split.weight_of("v2").unwrap();
    assert!((4500..=5500).contains(&v2), "v2 weight near 50 %, got {v2}");
    assert_eq!(
        split.weight_of("v1").unwrap() + v2,
        10_000,
        "coupled sliders sum to 100 %"
    );
    assert!(
        commands.try_recv().is_err(),
        "exactly one write per release"
    );
}

#[test]
fn clicking_a_station_opens_the_inspector() {
    let (app, _events, _commands) = app_with_identity();
    let mut h = harness(app);
    h.run();
    assert!(
        h.query_by_role_and_label(Role::Slider, "v2 weight")
            .is_none()
    );
    h.get_by_role_and_label(Role::Button, "station identity")
        .click();
    h.run();
    assert_eq!(h.state().selected(), Some("identity"));
    h.get_by_role_and_label(Role::Slider, "v2 weight");
    assert!(
        h.query_by_label("identity-v2-a").is_some(),
        "instances listed"
    );
}

#[test]
fn registry_down_at_start_is_said_then_the_map_fills_in() {
    let (app, event_tx, _cmd_rx) = empty_app();
    let mut h = harness(app);
    let error = "connection refused (http://127.0.0.1:8500/v1/catalog/services)";
    event_tx
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Err(error.into()),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    h.state_mut().drain_events();
    h.run();
    assert!(
        h.query_by_label_contains("registry: no answer yet")
            .is_some()
    );
    assert!(
        h.query_by_label(error).is_some(),
        "the real error text is shown"
    );
    assert!(h.query_by_label("station identity").is_none());

    // The registry answers: the same app fills the map in.
    event_tx
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(identity_snapshot())),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    h.state_mut().drain_events();
    h.run();
    assert!(h.query_by_label_contains("registry: ok").is_some());
    h.get_by_role_and_label(Role::Button, "station identity");
}

#[test]
fn a_cas_conflict_is_shown_and_reapplying_uses_the_current_index() {
    let (mut app, events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mine = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    // A colleague moved identity to 70/30 (index 1203) before our write landed.
    let theirs = ServiceEntry {
        protocol: None,
        name: "identity".into(),
        instances: app.model().services["identity"].instances.clone(),
        subsets: vec!["v1".into(), "v2".into()],
        split: Some(SplitConfig {
            split: Split::from_pairs([("v1", 7000), ("v2", 3000)]),
            modify_index: 1203,
        }),
    };
    events
        .try_send(IoEvent::WriteFinished {
            service: "identity".into(),
            split: mine.clone(),
            result: Ok(spine_dash::registry::WriteOutcome::Conflict {
                theirs: theirs.split.clone(),
            }),
        })
        .unwrap();
    events
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(RegistrySnapshot {
                drivers: Vec::new(),
                services: vec![theirs],
            })),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    app.drain_events();
    let mut h = harness(app);
    h.run();
    assert!(
        h.query_by_label_contains(
            "Conflict: the registry changed to v1 70 / v2 30; your v1 50 / v2 50 was not written"
        )
        .is_some()
    );
    assert!(
        commands.try_recv().is_err(),
        "nothing was re-sent on its own"
    );
    h.get_by_label("Re-apply mine on top of theirs").click();
    h.run();
    let Ok(Command::SetSplit {
        split,
        expected_index,
        ..
    }) = commands.try_recv()
    else {
        panic!("re-apply emits a write");
    };
    assert_eq!(split, mine);
    assert_eq!(expected_index, 1203, "on top of theirs: CAS on their index");
}

#[test]
fn the_datacenter_picker_emits_set_datacenter() {
    let (mut app, events, mut commands) = empty_app();
    events
        .try_send(IoEvent::Datacenters {
            current: Some("dc1".into()),
            known: vec!["dc1".into(), "dc2".into()],
            error: None,
        })
        .unwrap();
    app.drain_events();
    let mut h = harness(app);
    h.run();
    // The combo box is labelled "dc" and shows the current datacenter.
    h.get_by_role_and_label(Role::ComboBox, "dc").click();
    h.run();
    h.get_by_label("dc2").click();
    h.run();
    assert_eq!(
        commands.try_recv().expect("a command after choosing"),
        Command::SetDatacenter("dc2".into())
    );
    // Nothing more until the io layer reports the switch.
    assert!(commands.try_recv().is_err());
}

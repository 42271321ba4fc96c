//! UI tests: the real app driven through `egui_kittest` (AccessKit), no network.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use spine_dash::app::SpineApp;
use spine_dash::io::{AuditOutcome, AuditRecord, Command, IoEvent, SplitWrite, WriteOrigin};
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
    while app.drain_events() {}
    (app, event_tx, cmd_rx)
}

fn harness(app: SpineApp) -> Harness<'static, SpineApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app)
}

/// Drags identity's v2 slider from 20 % to the middle of the rail (50 %).
fn drag_v2_to_half(h: &mut Harness<'static, SpineApp>) {
    let slider = h.get_by_role_and_label(Role::Slider, "v2 weight");
    let rect = slider.rect();
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
}

fn press(h: &mut Harness<'static, SpineApp>, key: egui::Key) {
    h.key_press(key);
    h.step();
    h.step();
}

#[test]
fn a_slider_drag_is_a_draft_until_confirmed_then_one_cas_write() {
    let (mut app, _events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    drag_v2_to_half(&mut h);
    assert!(
        next_command(&mut commands).is_err(),
        "releasing the slider writes nothing"
    );

    h.get_by_label("Review change…").click();
    h.step();
    h.step();
    // The confirm step: before → after, the checks.
    assert!(
        h.query_by_label_contains("Change the traffic split of identity")
            .is_some()
    );
    assert!(h.query_by_label_contains("checks passed").is_some());
    assert!(
        !h.query_all_by_label("80 %").collect::<Vec<_>>().is_empty(),
        "before: v1 80 %"
    );
    assert!(
        h.query_by_label_contains("compare-and-set on index 1190")
            .is_some()
    );
    assert!(next_command(&mut commands).is_err(), "nothing before Enter");
    press(&mut h, egui::Key::Enter);

    let command = next_command(&mut commands).expect("a command after Enter");
    let Command::SetSplit(write) = command else {
        panic!("expected SetSplit, got {command:?}");
    };
    assert_eq!(write.service, "identity");
    assert_eq!(
        write.expected_index, 1190,
        "CAS on the splitter's ModifyIndex"
    );
    assert_eq!(write.origin, WriteOrigin::Operator);
    assert_eq!(
        write.before,
        Some(Split::from_pairs([("v1", 8000), ("v2", 2000)]))
    );
    let v2 = write.after.weight_of("v2").unwrap();
    assert!((4500..=5500).contains(&v2), "v2 weight near 50 %, got {v2}");
    assert_eq!(
        write.after.weight_of("v1").unwrap() + v2,
        10_000,
        "coupled sliders sum to 100 %"
    );
    assert!(
        next_command(&mut commands).is_err(),
        "exactly one write per confirm"
    );
    assert!(
        h.query_by_label_contains("Change the traffic split")
            .is_none(),
        "closed"
    );
}

#[test]
fn esc_cancels_the_confirm_step_and_keyboard_nudges_move_a_focused_slider() {
    let (mut app, _events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    h.get_by_role_and_label(Role::Slider, "v2 weight").focus();
    // egui locks the arrows to a slider from its second focused frame on.
    h.step();
    h.step();
    press(&mut h, egui::Key::ArrowRight); // +1
    press(&mut h, egui::Key::PageUp); // +5
    press(&mut h, egui::Key::PageUp); // +5
    press(&mut h, egui::Key::ArrowLeft); // -1
    assert_eq!(
        h.state_mut().view_mut().drafts.get("identity"),
        Some(&vec![("v1".to_owned(), 7000), ("v2".to_owned(), 3000)]),
        "20 % + 1 + 5 + 5 − 1 = 30 %"
    );
    assert_eq!(
        h.state().selected(),
        Some("identity"),
        "arrows did not walk the map"
    );
    press(&mut h, egui::Key::Enter);
    assert!(
        h.query_by_label_contains("Change the traffic split of identity")
            .is_some()
    );
    press(&mut h, egui::Key::Escape);
    assert!(
        h.query_by_label_contains("Change the traffic split")
            .is_none()
    );
    assert!(next_command(&mut commands).is_err(), "Esc wrote nothing");
    assert_eq!(
        h.state().selected(),
        Some("identity"),
        "Esc closed only the dialog"
    );
}

#[test]
fn the_confirm_step_refuses_what_the_guard_rails_refuse() {
    let (mut app, events, mut commands) = app_with_identity();
    // identity v2's only instance goes critical.
    let mut snap = identity_snapshot();
    for s in &mut snap.services {
        for i in &mut s.instances {
            if i.version == "v2" {
                i.health = spine_dash::model::types::Health::Critical;
            }
        }
    }
    events
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(snap)),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    while app.drain_events() {}
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    drag_v2_to_half(&mut h);
    h.get_by_label("Review change…").click();
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains("v2 would get more traffic but has no passing instance")
            .is_some()
    );
    press(&mut h, egui::Key::Enter);
    assert!(
        next_command(&mut commands).is_err(),
        "Enter does not confirm a refused change"
    );
    h.get_by_label("override: write anyway").click();
    h.step();
    h.get_by_label("Confirm (Enter)").click();
    h.step();
    h.step();
    assert!(
        matches!(next_command(&mut commands), Ok(Command::SetSplit(_))),
        "written with the override"
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
    while h.state_mut().drain_events() {}
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
    while h.state_mut().drain_events() {}
    h.run();
    assert!(h.query_by_label_contains("registry: ok").is_some());
    h.get_by_role_and_label(Role::Button, "station identity");
}

#[test]
fn a_cas_conflict_shows_theirs_and_mine_and_reapplying_uses_their_index() {
    let (mut app, events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mine = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
    // A colleague moved identity to 70/30 (index 1203) before our write landed.
    let theirs_cfg = SplitConfig {
        split: Split::from_pairs([("v1", 7000), ("v2", 3000)]),
        modify_index: 1203,
    };
    let theirs = ServiceEntry {
        protocol: None,
        name: "identity".into(),
        instances: app.model().services["identity"].instances.clone(),
        subsets: vec!["v1".into(), "v2".into()],
        split: Some(theirs_cfg.clone()),
    };
    events
        .try_send(IoEvent::WriteFinished {
            write: SplitWrite {
                service: "identity".into(),
                before: Some(Split::from_pairs([("v1", 8000), ("v2", 2000)])),
                after: mine.clone(),
                expected_index: 1190,
                reason: String::new(),
                origin: WriteOrigin::Operator,
            },
            result: Ok(spine_dash::registry::WriteOutcome::Conflict {
                theirs: Some(theirs_cfg),
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
    while app.drain_events() {}
    let mut h = harness(app);
    h.run();
    assert!(
        h.query_by_label_contains("Conflict: someone changed the split first")
            .is_some()
    );
    assert!(h.query_by_label("theirs (in the registry)").is_some());
    assert!(
        !h.query_all_by_label("70 %").collect::<Vec<_>>().is_empty(),
        "theirs: v1 70 %"
    );
    assert!(
        !h.query_all_by_label("30 %").collect::<Vec<_>>().is_empty(),
        "theirs: v2 30 %"
    );
    assert!(
        next_command(&mut commands).is_err(),
        "nothing was re-sent on its own"
    );
    h.get_by_label("Re-apply mine on top of theirs…").click();
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains("compare-and-set on index 1203")
            .is_some()
    );
    press(&mut h, egui::Key::Enter);
    let Ok(Command::SetSplit(write)) = next_command(&mut commands) else {
        panic!("re-apply emits a write");
    };
    assert_eq!(write.after, mine);
    assert_eq!(
        write.expected_index, 1203,
        "on top of theirs: CAS on their index"
    );
    assert_eq!(write.before.map(|b| b.weight_of("v1")), Some(Some(7000)));
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
    while app.drain_events() {}
    let mut h = harness(app);
    h.run();
    // The combo box is labelled "dc" and shows the current datacenter.
    h.get_by_role_and_label(Role::ComboBox, "dc").click();
    h.run();
    h.get_by_label("dc2").click();
    h.run();
    assert_eq!(
        next_command(&mut commands).expect("a command after choosing"),
        Command::SetDatacenter("dc2".into())
    );
    // Nothing more until the io layer reports the switch.
    assert!(next_command(&mut commands).is_err());
}

/// Commands the app sent, without waiting.
fn sent(commands: &mut mpsc::Receiver<Command>) -> Vec<Command> {
    std::iter::from_fn(|| next_command(commands).ok()).collect()
}

#[test]
fn read_only_disables_the_sliders_and_plans_and_says_so() {
    let (identity, _events, _commands) = app_with_identity();
    let mut model = identity.model().clone();
    model.registry.writable = false;
    let (_event_tx, event_rx) = mpsc::channel(16);
    let (cmd_tx, mut commands) = mpsc::channel(16);
    let mut app = SpineApp::with_channels(model, event_rx, cmd_tx);
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    assert!(
        h.query_by_label_contains("read-only: weights and plans cannot be changed")
            .is_some()
    );
    assert!(
        h.get_by_role_and_label(Role::Slider, "v2 weight")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label("Rollout plan").click();
    h.run();
    assert!(h.get_by_label("Start plan…").accesskit_node().is_disabled());
    // Keys do nothing either.
    press(&mut h, egui::Key::Enter);
    assert!(
        sent(&mut commands).is_empty(),
        "nothing to send in read-only mode"
    );
}

#[test]
fn starting_a_plan_from_the_inspector_claims_the_marker_and_writes_step_one() {
    let (mut app, _events, mut commands) = app_with_identity();
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    h.get_by_label("Rollout plan").click();
    h.run();
    h.get_by_label("Start plan…").click();
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains("Start a rollout plan on identity")
            .is_some()
    );
    assert!(
        h.query_by_label("v1 95 / v2 5").is_some(),
        "the steps are listed"
    );
    assert!(sent(&mut commands).is_empty(), "nothing before Enter");
    press(&mut h, egui::Key::Enter);
    let out = sent(&mut commands);
    assert!(
        matches!(&out[0], Command::ClaimDriver { service, what } if service == "identity" && what.contains("95/5")),
        "{out:?}"
    );
    let Command::SetSplit(w) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(w.origin, WriteOrigin::Plan);
    assert_eq!(w.after, Split::from_pairs([("v1", 9500), ("v2", 500)]));
    assert_eq!(w.expected_index, 1190);
    assert!(
        h.query_by_label_contains("plan: step 1/4 · writing")
            .is_some()
    );
    // Pause from the inspector.
    h.get_by_label("Pause").click();
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains("plan: step 1/4 · PAUSED")
            .is_some()
    );
    h.get_by_label("Abort").click();
    h.step();
    h.step();
    assert_eq!(
        sent(&mut commands),
        vec![Command::ReleaseDriver {
            service: "identity".into()
        }]
    );
}

#[test]
fn undo_writes_the_split_before_the_last_change_through_the_confirm_step() {
    let (mut app, events, mut commands) = app_with_identity();
    let mut w = SplitWrite::by_operator(
        "identity",
        Split::from_pairs([("v1", 5000), ("v2", 5000)]),
        1190,
    );
    w.before = Some(Split::from_pairs([("v1", 8000), ("v2", 2000)]));
    events
        .try_send(IoEvent::WriteFinished {
            write: w,
            result: Ok(spine_dash::registry::WriteOutcome::Applied),
        })
        .unwrap();
    let mut snap = identity_snapshot();
    for s in &mut snap.services {
        if let Some(c) = s.split.as_mut() {
            c.split = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
            c.modify_index = 1203;
        }
    }
    events
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(snap)),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    while app.drain_events() {}
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    assert!(h.query_by_label_contains("live: v1 50 / v2 50").is_some());
    h.get_by_label("Undo: back to v1 80 / v2 20…").click();
    h.step();
    h.step();
    assert!(
        h.query_by_label_contains("Undo the last change of identity")
            .is_some()
    );
    press(&mut h, egui::Key::Enter);
    let out = sent(&mut commands);
    let [Command::SetSplit(w)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(w.origin, WriteOrigin::Undo);
    assert_eq!(w.after, Split::from_pairs([("v1", 8000), ("v2", 2000)]));
    assert_eq!(
        w.expected_index, 1203,
        "CAS on the index of the change it undoes"
    );
}

#[test]
fn the_audit_panel_lists_attempts_newest_first_and_selects_their_service() {
    let (mut app, events, _commands) = app_with_identity();
    for (outcome, after) in [
        (AuditOutcome::Applied, "v1 50 / v2 50"),
        (AuditOutcome::Conflict, "v1 0 / v2 100"),
    ] {
        events
            .try_send(IoEvent::Audited(AuditRecord {
                time: "2026-11-28T01:02:03Z".into(),
                user: "alice".into(),
                host: "ws1".into(),
                registry: "consul http://127.0.0.1:8500".into(),
                service: "identity".into(),
                before: "v1 80 / v2 20".into(),
                after: after.into(),
                reason: "canary".into(),
                origin: WriteOrigin::Operator,
                cas_index: 1190,
                outcome,
                detail: String::new(),
            }))
            .unwrap();
    }
    while app.drain_events() {}
    let mut h = harness(app);
    h.run();
    assert!(h.query_by_label_contains("Audit log").is_none());
    h.event(egui::Event::Text("a".into()));
    h.run();
    assert!(h.query_by_label_contains("2 attempts").is_some());
    assert!(h.query_by_label("v1 80 / v2 20 → v1 0 / v2 100").is_some());
    assert!(h.query_by_label("conflict").is_some());
    assert_eq!(h.query_all_by_label("alice@ws1").count(), 2);
    h.query_all_by_role_and_label(Role::Link, "identity")
        .next()
        .unwrap()
        .click();
    h.run();
    assert_eq!(h.state().selected(), Some("identity"));
}

#[test]
fn three_versions_show_the_remainder_and_normalise_fills_100() {
    let (mut app, events, mut commands) = app_with_identity();
    let mut snap = identity_snapshot();
    for s in &mut snap.services {
        if s.name == "identity" {
            s.instances
                .push(instance("identity-v3-a", "identity", "v3", Health::Passing));
            s.subsets.push("v3".into());
            s.split = Some(SplitConfig {
                split: Split::from_pairs([("v1", 8000), ("v2", 2000), ("v3", 0)]),
                modify_index: 1190,
            });
        }
    }
    events
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(snap)),
            next_within: Duration::from_secs(1),
        })
        .unwrap();
    while app.drain_events() {}
    app.view_mut().selected = Some("identity".into());
    let mut h = harness(app);
    h.run();
    // Three sliders are independent: v3 up by 10 leaves 10 % too much.
    h.get_by_role_and_label(Role::Slider, "v3 weight").focus();
    h.step();
    h.step();
    for _ in 0..2 {
        press(&mut h, egui::Key::PageUp);
    }
    assert!(
        h.query_by_label_contains("over by 10 % (sum 110 %)")
            .is_some()
    );
    assert!(
        h.get_by_label("Review change…")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label("Normalise").click();
    h.step();
    h.step();
    // v3 (moved last) keeps 10 %; v1 and v2 share the 90 % left as 80:20.
    assert_eq!(
        h.state_mut().view_mut().drafts.get("identity"),
        Some(&vec![
            ("v1".to_owned(), 7200),
            ("v2".to_owned(), 1800),
            ("v3".to_owned(), 1000)
        ])
    );
    h.get_by_label("Review change…").click();
    h.step();
    h.step();
    press(&mut h, egui::Key::Enter);
    let out = sent(&mut commands);
    let [Command::SetSplit(w)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(w.after.total(), 10_000);
}

/// The next command the app sent, past the `Focus` ones (which services are in view: the
/// map sends one whenever that changes).
fn next_command(
    commands: &mut mpsc::Receiver<Command>,
) -> Result<Command, mpsc::error::TryRecvError> {
    loop {
        match commands.try_recv() {
            Ok(Command::Focus { .. }) => {}
            other => return other,
        }
    }
}

//! UI test of the demo controls: stop, fault injection through the drop-downs and "clear
//! faults", found by their accessible names and asserted on the `Command` that came out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use spine_dash::app::SpineApp;
use spine_dash::io::{Command, DemoInstanceState, IoEvent};
use spine_dash::model::types::{
    DemoFault, Health, Instance, RegistryKind, RegistrySnapshot, ServiceEntry,
};
use spine_dash::model::{Model, RegistryInfo};
use tokio::sync::mpsc;

fn instance(id: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        service: "photo".into(),
        version: "v1".into(),
        address: "127.0.0.1".into(),
        port,
        health: Health::Passing,
        check_output: String::new(),
        metrics_url: None,
    }
}

fn demo_state(id: &str, fault: DemoFault) -> DemoInstanceState {
    DemoInstanceState {
        id: id.into(),
        service: "photo".into(),
        version: "v1".into(),
        running: true,
        fault,
    }
}

/// A demo-mode app with photo selected: photo-1 without faults, photo-2 with +500 ms.
fn demo_app() -> (SpineApp, mpsc::Receiver<Command>) {
    let info = RegistryInfo {
        kind: RegistryKind::Demo,
        address: "http://127.0.0.1:8500".into(),
        datacenter: None,
        writable: true,
    };
    let model = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
    let (event_tx, event_rx) = mpsc::channel(16);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let mut app = SpineApp::with_channels(model, event_rx, cmd_tx);
    let snapshot = RegistrySnapshot {
        drivers: Vec::new(),
        services: vec![ServiceEntry {
            protocol: None,
            name: "photo".into(),
            instances: vec![instance("photo-1", 4001), instance("photo-2", 4002)],
            subsets: vec![],
            split: None,
        }],
    };
    event_tx
        .try_send(IoEvent::Registry {
            at: Instant::now(),
            result: Ok(Some(snapshot)),
            next_within: std::time::Duration::from_secs(1),
        })
        .unwrap();
    let slow = DemoFault {
        latency_ms: 500,
        ..DemoFault::default()
    };
    event_tx
        .try_send(IoEvent::DemoChanged {
            instances: vec![
                demo_state("photo-1", DemoFault::default()),
                demo_state("photo-2", slow),
            ],
            error: None,
        })
        .unwrap();
    while app.drain_events() {}
    app.view_mut().selected = Some("photo".into());
    (app, cmd_rx)
}

fn harness(app: SpineApp) -> Harness<'static, SpineApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 1400.0)) // tall: the demo controls sit below the charts
        .build_ui_state(|ui, app: &mut SpineApp| app.ui_root(ui), app)
}

/// Runs frames until the UI settles (popups animate).
fn settle(h: &mut Harness<'_, SpineApp>) {
    for _ in 0..8 {
        h.step();
    }
}

#[test]
fn choosing_50_percent_5xx_emits_a_demo_fault_for_that_instance() {
    let (app, mut commands) = demo_app();
    let mut h = harness(app);
    settle(&mut h);

    let combo = h.get_by_role_and_label(Role::ComboBox, "photo-1 5xx %");
    assert_eq!(combo.value().as_deref(), Some("0 %"), "no fault yet");
    combo.click();
    settle(&mut h);
    h.get_by_label("50 %").click();
    settle(&mut h);

    let command = next_command(&mut commands).expect("a command after the choice");
    assert_eq!(
        command,
        Command::DemoFault {
            instance_id: "photo-1".into(),
            fault: DemoFault {
                latency_ms: 0,
                error_pct: 50,
                health: None,
            },
        }
    );
    assert!(next_command(&mut commands).is_err(), "exactly one command");
}

#[test]
fn the_current_fault_is_shown_and_clear_faults_resets_it() {
    let (app, mut commands) = demo_app();
    let mut h = harness(app);
    settle(&mut h);

    let latency = h.get_by_role_and_label(Role::ComboBox, "photo-2 added latency");
    assert_eq!(latency.value().as_deref(), Some("+500 ms"));
    assert!(
        h.get_by_label("photo-1 clear faults")
            .accesskit_node()
            .is_disabled(),
        "nothing to clear on photo-1"
    );
    h.get_by_label("photo-2 clear faults").click();
    settle(&mut h);
    assert_eq!(
        next_command(&mut commands).unwrap(),
        Command::DemoFault {
            instance_id: "photo-2".into(),
            fault: DemoFault::default(),
        }
    );

    // The health override keeps photo-2's latency: the command carries the whole fault.
    h.get_by_role_and_label(Role::ComboBox, "photo-2 health override")
        .click();
    settle(&mut h);
    h.get_by_label("critical").click();
    settle(&mut h);
    assert_eq!(
        next_command(&mut commands).unwrap(),
        Command::DemoFault {
            instance_id: "photo-2".into(),
            fault: DemoFault {
                latency_ms: 500,
                error_pct: 0,
                health: Some(Health::Critical),
            },
        }
    );

    h.get_by_label("photo-1 stop").click();
    settle(&mut h);
    assert_eq!(
        next_command(&mut commands).unwrap(),
        Command::DemoStop {
            instance_id: "photo-1".into()
        }
    );
    assert!(next_command(&mut commands).is_err());
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

#[test]
fn the_header_stops_and_starts_the_demo_registry() {
    let (mut app, mut commands) = demo_app();
    app.model_mut().demo_registry_running = Some(true);
    let mut h = harness(app);
    settle(&mut h);
    h.get_by_label("stop registry").click();
    settle(&mut h);
    assert_eq!(
        next_command(&mut commands).unwrap(),
        Command::DemoRegistry { running: false }
    );
    h.state_mut().model_mut().demo_registry_running = Some(false);
    settle(&mut h);
    h.get_by_label("registry stopped: start").click();
    settle(&mut h);
    assert_eq!(
        next_command(&mut commands).unwrap(),
        Command::DemoRegistry { running: true }
    );
}

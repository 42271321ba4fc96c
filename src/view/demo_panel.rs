//! Demo-mode controls in the inspector, per instance of the selected service: stop / start,
//! and fault injection — share of 5xx answers, added latency, health override, clear — so
//! every breaker state can be shown live. Emits `DemoStop` / `DemoStart` / `DemoFault`.
//! Every widget carries the instance id in its accessible name (`photo-1 5xx %`).

use egui::{Button, ComboBox, RichText, Ui};

use super::theme::Theme;
use crate::io::Command;
use crate::model::Model;
use crate::model::types::{DemoFault, DemoInstanceState, Health, RegistryKind};

/// Shares of 5xx answers offered, in percent.
const ERROR_PCTS: [u8; 5] = [0, 1, 10, 50, 100];
/// Added latencies offered, in milliseconds.
const LATENCIES_MS: [u32; 4] = [0, 100, 500, 2000];
/// Health overrides offered.
const HEALTHS: [Option<Health>; 4] = [
    None,
    Some(Health::Passing),
    Some(Health::Warning),
    Some(Health::Critical),
];
/// Width of the fault drop-downs.
const COMBO_WIDTH: f32 = 64.0;

/// Draws the demo controls of `service`'s instances (nothing outside demo mode).
pub fn demo_controls_ui(
    ui: &mut Ui,
    model: &Model,
    service: &str,
    theme: &Theme,
    commands: &mut Vec<Command>,
) {
    if model.registry.kind != RegistryKind::Demo {
        return;
    }
    let instances: Vec<&DemoInstanceState> = model
        .demo_instances
        .iter()
        .filter(|d| d.service == service)
        .collect();
    if instances.is_empty() {
        return;
    }
    ui.add_space(8.0);
    ui.label(
        RichText::new("Demo controls")
            .strong()
            .color(theme.demo_badge),
    )
    .on_hover_text(
        "Faults act on the demo spine only: 5xx and latency on the next requests, \
             a health override at the next health check",
    );
    for inst in instances {
        ui.push_id(&inst.id, |ui| {
            instance_controls_ui(ui, inst, theme, commands);
        });
    }
}

fn instance_controls_ui(
    ui: &mut Ui,
    inst: &DemoInstanceState,
    theme: &Theme,
    commands: &mut Vec<Command>,
) {
    let id = inst.id.as_str();
    ui.separator();
    ui.horizontal(|ui| {
        let name = RichText::new(id).strong();
        if inst.fault.is_clear() {
            ui.label(name);
        } else {
            ui.label(name.color(theme.demo_badge))
                .on_hover_text(format!("faults: {}", inst.fault.summary()));
        }
        if inst.running {
            if ui
                .button("Stop")
                .accessible_name(format!("{id} stop"))
                .on_hover_text("Kill this demo instance's server")
                .clicked()
            {
                commands.push(Command::DemoStop {
                    instance_id: id.to_owned(),
                });
            }
        } else {
            if ui
                .button("Start")
                .accessible_name(format!("{id} start"))
                .on_hover_text("Start this demo instance again")
                .clicked()
            {
                commands.push(Command::DemoStart {
                    instance_id: id.to_owned(),
                });
            }
            ui.colored_label(theme.health_critical, "stopped");
        }
        if ui
            .add_enabled(!inst.fault.is_clear(), Button::new("Clear faults"))
            .accessible_name(format!("{id} clear faults"))
            .on_hover_text("No added latency, no injected 5xx, health as it is")
            .clicked()
        {
            commands.push(Command::DemoFault {
                instance_id: id.to_owned(),
                fault: DemoFault::default(),
            });
        }
    });

    let mut fault = inst.fault;
    ui.horizontal(|ui| {
        ui.label(RichText::new("5xx").color(theme.text_dim));
        ComboBox::from_id_salt("5xx")
            .width(COMBO_WIDTH)
            .selected_text(format!("{} %", fault.error_pct))
            .show_ui(ui, |ui| {
                for pct in ERROR_PCTS {
                    ui.selectable_value(&mut fault.error_pct, pct, format!("{pct} %"));
                }
            })
            .response
            .accessible_name(format!("{id} 5xx %"))
            .on_hover_text("Share of requests this instance answers 500, spread evenly");

        ui.label(RichText::new("latency").color(theme.text_dim));
        ComboBox::from_id_salt("latency")
            .width(COMBO_WIDTH)
            .selected_text(latency_text(fault.latency_ms))
            .show_ui(ui, |ui| {
                for ms in LATENCIES_MS {
                    ui.selectable_value(&mut fault.latency_ms, ms, latency_text(ms));
                }
            })
            .response
            .accessible_name(format!("{id} added latency"))
            .on_hover_text("Added to every request this instance serves");

        ui.label(RichText::new("health").color(theme.text_dim));
        ComboBox::from_id_salt("health")
            .width(COMBO_WIDTH)
            .selected_text(health_text(fault.health))
            .show_ui(ui, |ui| {
                for h in HEALTHS {
                    ui.selectable_value(&mut fault.health, h, health_text(h));
                }
            })
            .response
            .accessible_name(format!("{id} health override"))
            .on_hover_text(
                "What this instance's health check reports: passing 200, warning 429, \
                 critical 503; none = the truth",
            );
    });
    if fault != inst.fault {
        commands.push(Command::DemoFault {
            instance_id: id.to_owned(),
            fault,
        });
    }
}

/// `0 ms`, `+100 ms`, `+2 s`.
fn latency_text(ms: u32) -> String {
    match ms {
        0 => "0 ms".to_owned(),
        ms if ms >= 1000 && ms % 1000 == 0 => format!("+{} s", ms / 1000),
        ms => format!("+{ms} ms"),
    }
}

/// `none` or the health state.
fn health_text(h: Option<Health>) -> &'static str {
    h.map_or("none", Health::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(latency_text(0), "0 ms");
        assert_eq!(latency_text(100), "+100 ms");
        assert_eq!(latency_text(2000), "+2 s");
        assert_eq!(latency_text(1500), "+1500 ms");
        assert_eq!(health_text(None), "none");
        assert_eq!(health_text(Some(Health::Warning)), "warning");
    }
}

//! The inspector for the selected service: instances with health, per-version configured
//! weight vs observed share with rps / 5xx / p99, the weight sliders, demo controls
//! (`demo_panel`).

use std::time::Instant;

use egui::{Grid, RichText, Ui};

use super::ViewState;
use super::map::{fmt_ms, fmt_rps};
use super::theme::Theme;
use crate::io::Command;
use crate::model::Model;
use crate::model::types::format_pct;

/// Draws the inspector.
pub fn inspector_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    theme: &Theme,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    let Some(name) = view.selected.clone() else {
        return;
    };
    let Some(svc) = model.services.get(&name) else {
        return;
    };
    ui.horizontal(|ui| {
        ui.heading(&name);
        if ui
            .small_button("Close")
            .on_hover_text("Close the inspector (Esc)")
            .clicked()
        {
            view.select(None);
        }
    });
    if let Some(lane) = view.selected_lane.clone() {
        ui.horizontal(|ui| {
            ui.label(
                RichText::new(format!(
                    "lane {} → {} {}",
                    lane.caller, lane.service, lane.version
                ))
                .monospace()
                .color(theme.selection),
            );
            if ui.small_button("all lanes").clicked() {
                view.selected_lane = None;
            }
        });
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        versions_ui(ui, model, &name, theme, view.thresholds);
        drift_ui(ui, model, &name, theme);
        ui.add_space(8.0);
        super::shift::weights_ui(ui, model, view, &name, theme, commands, now);
        ui.add_space(8.0);
        super::charts::version_charts_ui(ui, model, view, &name, theme, now);
        ui.add_space(8.0);
        if let Some(lane) = view.selected_lane.clone() {
            lane_hosts_ui(ui, model, &lane, theme);
            ui.add_space(8.0);
        }
        ui.strong("Instances");
        Grid::new("instances")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                for h in ["id", "address", "version", "health", "ejected"] {
                    ui.label(RichText::new(h).color(theme.text_dim));
                }
                ui.end_row();
                for inst in &svc.instances {
                    ui.label(&inst.id);
                    ui.label(format!("{}:{}", inst.address, inst.port));
                    ui.label(&inst.version);
                    let health =
                        ui.colored_label(theme.health_color(inst.health), inst.health.as_str());
                    if !inst.check_output.is_empty() {
                        health.on_hover_text(&inst.check_output);
                    }
                    match model.instance_ejected(inst) {
                        Some(true) => {
                            ui.colored_label(theme.breaker_ejecting, "ejected");
                        }
                        Some(false) => {
                            ui.label("no");
                        }
                        None => {
                            ui.colored_label(theme.text_dim, "–").on_hover_text(
                                "unknown: no caller sidecar's /clusters lists this address",
                            );
                        }
                    }
                    ui.end_row();
                }
            });
        for inst in svc.instances.iter().filter(|i| !i.check_output.is_empty()) {
            ui.colored_label(
                theme.health_color(inst.health),
                format!("{}: {}", inst.id, inst.check_output),
            );
        }
        super::demo_panel::demo_controls_ui(ui, model, &name, theme, commands);
    });
}

/// Which hosts of the selected lane its callers' Envoys hold, and which are out.
fn lane_hosts_ui(ui: &mut Ui, model: &Model, lane: &crate::model::types::LaneKey, theme: &Theme) {
    use crate::metrics::HostHealth;
    let hosts = model.lane_hosts(lane);
    ui.strong(format!("Hosts seen by {}'s sidecars", lane.caller));
    if hosts.is_empty() {
        ui.colored_label(
            theme.text_dim,
            "no /clusters?format=json from the caller's sidecars (not reachable or not Envoy)",
        );
        return;
    }
    Grid::new("lane hosts")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for h in &hosts {
                ui.label(format!("{}:{}", h.address, h.port));
                ui.label(h.instance_id.as_deref().unwrap_or("–"));
                let (text, color) = match h.health {
                    HostHealth::Healthy => ("healthy".to_owned(), theme.lane_ok),
                    HostHealth::Degraded => ("degraded".to_owned(), theme.lane_degraded),
                    HostHealth::Unhealthy => ("unhealthy".to_owned(), theme.lane_failing),
                    HostHealth::Ejected => (
                        format!("ejected by {}", h.ejected_by.join(", ")),
                        theme.breaker_ejecting,
                    ),
                };
                ui.colored_label(color, text);
                ui.end_row();
            }
        });
}

/// The drift warning: configured weight vs observed share over the trailing window.
fn drift_ui(ui: &mut Ui, model: &Model, name: &str, theme: &Theme) {
    if let Some(d) = model.drift(name) {
        ui.colored_label(
            theme.lane_degraded,
            format!(
                "DRIFT: {} gets {:.1} % of requests, configured {:.1} % (over {:.0} s)",
                d.version, d.observed_pct, d.configured_pct, d.window_secs
            ),
        )
        .on_hover_text(
            "Observed share differs from the configured weight by more than 5 points over \
             at least 30 s. Causes: unhealthy or ejected instances of a version, callers \
             that bypass the splitter, or a split the proxies have not picked up yet.",
        );
    }
}

fn versions_ui(
    ui: &mut Ui,
    model: &Model,
    name: &str,
    theme: &Theme,
    thresholds: super::theme::Thresholds,
) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    // The share over the drift window (≥ 30 s, summed requests) when there is a split, so it
    // agrees with the drift warning; else the last window's.
    let windowed = model.windowed_share(name);
    let observed = windowed
        .as_ref()
        .map(|w| w.pct.iter().map(|(v, p)| (v.clone(), p / 100.0)).collect())
        .or_else(|| model.observed_share(name));
    ui.strong("Versions");
    Grid::new("versions")
        .striped(true)
        .num_columns(7)
        .show(ui, |ui| {
            for h in [
                "version",
                "health",
                "configured",
                "observed",
                "rps",
                "5xx",
                "p99",
            ] {
                ui.label(RichText::new(h).color(theme.text_dim));
            }
            ui.end_row();
            for version in svc.versions() {
                let health = model.version_health(name, &version);
                let stats = model.version_stats(name, &version);
                ui.label(&version);
                ui.label(format!(
                    "{}/{}/{}",
                    health.passing, health.warning, health.critical
                ))
                .on_hover_text("passing / warning / critical");
                ui.label(
                    model
                        .configured_weight(name, &version)
                        .map_or("–".into(), |w| format!("{} %", format_pct(w))),
                );
                let share = observed
                    .as_ref()
                    .map(|o| o.get(&version).copied().unwrap_or(0.0));
                ui.label(share.map_or("–".into(), |s| format!("{:.1} %", s * 100.0)));
                ui.label(fmt_rps(stats.as_ref().map(|s| s.rps)));
                let err = stats.as_ref().and_then(|s| s.err5xx_ratio);
                ui.colored_label(
                    theme.lane_color(err, thresholds),
                    err.map_or("–".into(), |e| format!("{:.2} %", e * 100.0)),
                );
                ui.label(fmt_ms(stats.as_ref().and_then(|s| s.p99_ms)));
                ui.end_row();
            }
        });
}

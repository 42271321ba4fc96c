//! The inspector for the selected service: instances with health, per-version configured
//! weight vs observed share with rps / 5xx / p99, the weight sliders, demo controls
//! (`demo_panel`).

use std::time::Instant;

use egui::{Grid, RichText, Slider, Ui};

use super::ViewState;
use super::map::{fmt_ms, fmt_rps};
use super::theme::Theme;
use crate::io::Command;
use crate::model::types::{FULL_WEIGHT, Split, WeightHundredths, format_pct};
use crate::model::{Model, WriteState, split_text};

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
        weights_ui(ui, model, view, &name, theme, commands);
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

/// The split the sliders show: the draft, else a pending write, else the registry's.
fn shown_split(
    model: &Model,
    view: &ViewState,
    name: &str,
    versions: &[String],
) -> Vec<(String, WeightHundredths)> {
    if let Some(d) = view.drafts.get(name) {
        return d.clone();
    }
    if let Some(WriteState::Pending { split }) = model.writes.get(name) {
        return split
            .entries
            .iter()
            .map(|e| (e.subset.clone(), e.weight))
            .collect();
    }
    versions
        .iter()
        .map(|v| (v.clone(), model.configured_weight(name, v).unwrap_or(0)))
        .collect()
}

fn weights_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    name: &str,
    theme: &Theme,
    commands: &mut Vec<Command>,
) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    let versions = svc.versions();
    if versions.len() < 2 {
        return;
    }
    ui.strong("Traffic weights");
    let expected_index = svc.split.as_ref().map_or(0, |c| c.modify_index);
    let writable = model.registry.writable;
    let mut weights = shown_split(model, view, name, &versions);
    let mut release = false;
    let mut edited = false;
    let coupled = weights.len() == 2;
    ui.spacing_mut().slider_width = 200.0;
    for i in 0..weights.len() {
        let (version, w) = weights[i].clone();
        let mut pct = f64::from(w) / 100.0;
        let resp = ui.add_enabled(
            writable,
            Slider::new(&mut pct, 0.0..=100.0)
                .step_by(1.0)
                .suffix(" %")
                .text(format!("{version} weight")),
        );
        if resp.changed() {
            let new = ((pct * 100.0).round() as WeightHundredths).min(FULL_WEIGHT);
            weights[i].1 = new;
            if coupled {
                weights[1 - i].1 = FULL_WEIGHT - new;
            }
            edited = true;
        }
        if resp.drag_stopped() {
            release = true;
        }
    }
    if edited {
        view.drafts.insert(name.to_owned(), weights.clone());
    }
    let total: WeightHundredths = weights.iter().map(|(_, w)| *w).sum();
    if total != FULL_WEIGHT {
        ui.colored_label(
            theme.error,
            format!("sum is {} % — must be 100 %", format_pct(total)),
        );
    }
    let draft_open = view.drafts.contains_key(name);
    let mut apply = release && draft_open;
    if draft_open && !release {
        ui.horizontal(|ui| {
            apply |= ui
                .add_enabled(total == FULL_WEIGHT, egui::Button::new("Apply"))
                .clicked();
            if ui.button("Reset").clicked() {
                view.drafts.remove(name);
            }
        });
    }
    if apply && total == FULL_WEIGHT {
        view.drafts.remove(name);
        commands.push(Command::SetSplit {
            service: name.to_owned(),
            split: Split::from_pairs(weights.iter().map(|(v, w)| (v.clone(), *w))),
            expected_index,
        });
    }
    match model.writes.get(name) {
        Some(WriteState::Pending { split }) => {
            ui.label(format!("writing {} …", split_text(split)));
        }
        Some(WriteState::Applied { split }) => {
            ui.colored_label(theme.success, format!("applied {}", split_text(split)));
        }
        Some(WriteState::Conflict { mine, .. }) => {
            let theirs = svc
                .split
                .as_ref()
                .map_or("no split".into(), |c| split_text(&c.split));
            ui.colored_label(
                theme.error,
                format!(
                    "Conflict: the registry changed to {theirs}; your {} was not written.",
                    split_text(mine)
                ),
            );
            if ui.button("Re-apply mine on top of theirs").clicked() {
                commands.push(Command::SetSplit {
                    service: name.to_owned(),
                    split: mine.clone(),
                    expected_index,
                });
            }
        }
        Some(WriteState::Failed { error, .. }) => {
            ui.colored_label(theme.error, format!("Write failed: {error}"));
        }
        None => {}
    }
    if !writable {
        ui.label(RichText::new("read-only: weights cannot be changed").color(theme.text_dim));
    }
}

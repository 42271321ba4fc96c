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
    _now: Instant,
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
            view.selected = None;
        }
    });
    egui::ScrollArea::vertical().show(ui, |ui| {
        versions_ui(ui, model, &name, theme);
        ui.add_space(8.0);
        weights_ui(ui, model, view, &name, theme, commands);
        ui.add_space(8.0);
        ui.strong("Instances");
        Grid::new("instances")
            .striped(true)
            .num_columns(4)
            .show(ui, |ui| {
                for inst in &svc.instances {
                    ui.label(&inst.id);
                    ui.label(format!("{}:{}", inst.address, inst.port));
                    ui.label(&inst.version);
                    let health =
                        ui.colored_label(theme.health_color(inst.health), inst.health.as_str());
                    if !inst.check_output.is_empty() {
                        health.on_hover_text(&inst.check_output);
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

fn versions_ui(ui: &mut Ui, model: &Model, name: &str, theme: &Theme) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    let observed = model.observed_share(name);
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
                    theme.lane_color(err, super::theme::Thresholds::default()),
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
        Some(WriteState::Conflict { mine }) => {
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

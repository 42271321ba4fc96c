//! Header (which registry, demo or production, writable or read-only) and status bar
//! (freshness and last error of every source).

use std::time::{Duration, Instant};

use egui::{RichText, Ui};

use super::ViewState;
use super::theme::Theme;
use crate::io::Command;
use crate::metrics::prometheus::format_duration;
use crate::model::Model;
use crate::model::prom::PromState;
use crate::model::types::RegistryKind;

/// "0.4 s ago", "3 min ago", "never".
#[must_use]
pub fn fmt_age(age: Option<Duration>) -> String {
    match age {
        None => "never".into(),
        Some(d) if d.as_secs() >= 120 => format!("{} min ago", d.as_secs() / 60),
        Some(d) => format!("{:.1} s ago", d.as_secs_f64()),
    }
}

/// The always-visible header. Choosing another datacenter emits
/// [`Command::SetDatacenter`].
pub fn header_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    theme: &Theme,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    ui.horizontal(|ui| {
        ui.heading("spine-dash");
        ui.separator();
        let reg = &model.registry;
        if reg.kind == RegistryKind::Demo {
            ui.label(
                RichText::new(" DEMO SPINE ")
                    .background_color(theme.demo_badge)
                    .color(theme.map_bg)
                    .strong(),
            );
            ui.label(format!("embedded, Consul API at {}", reg.address));
            demo_registry_ui(ui, model, theme, commands);
        } else {
            ui.label(
                RichText::new(" PRODUCTION ")
                    .background_color(theme.lane_degraded)
                    .color(theme.map_bg)
                    .strong(),
            );
            ui.label(format!("{} at {}", reg.kind.as_str(), reg.address));
        }
        datacenter_ui(ui, model, commands);
        context_ui(ui, model, commands);
        ui.separator();
        if reg.writable {
            ui.label("writable");
        } else {
            ui.colored_label(theme.lane_degraded, "read-only");
        }
        ui.separator();
        ui.label("Filter:");
        let resp = ui.add(
            egui::TextEdit::singleline(&mut view.filter)
                .desired_width(240.0)
                .hint_text("/  name  err>1%  p99>250ms  version:v2"),
        );
        if std::mem::take(&mut view.focus_filter) {
            resp.request_focus();
        }
        if resp.has_focus() && ui.input(|i| i.key_pressed(egui::Key::Escape)) {
            view.filter.clear();
            resp.surrender_focus();
        }
        match crate::model::filter::Filter::parse(&view.filter) {
            Err(e) => {
                ui.colored_label(theme.error, format!("filter ignored — {e}"));
            }
            Ok(f) if !f.is_empty() => {
                let n = model
                    .services
                    .keys()
                    .filter(|s| model.matches(s, &f, now))
                    .count();
                ui.colored_label(
                    theme.text_dim,
                    format!("{n} of {} services", model.services.len()),
                );
            }
            Ok(_) => {}
        }
        if view.paused {
            ui.label(
                RichText::new(" PAUSED (Space) ")
                    .background_color(theme.lane_degraded)
                    .color(theme.map_bg)
                    .strong(),
            );
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("?").on_hover_text("keyboard and mouse").clicked() {
                view.help_open = !view.help_open;
            }
            ui.menu_button("settings", |ui| settings_ui(ui, view));
            super::map::groups_menu_ui(ui, model, view);
            if ui
                .selectable_label(view.tape_open, "breaker tape")
                .on_hover_text("b")
                .clicked()
            {
                view.tape_open = !view.tape_open;
            }
        });
    });
}

/// Demo mode: stop the demo registry's server (an outage on purpose) or start it again.
fn demo_registry_ui(ui: &mut Ui, model: &Model, theme: &Theme, commands: &mut Vec<Command>) {
    let Some(running) = model.demo_registry_running else {
        return;
    };
    if running {
        if ui
            .small_button("stop registry")
            .on_hover_text(
                "Kill the demo registry's server as if its process died (its state lives on): \
                 the map keeps the last good data, drawn stale, and the dashboard retries",
            )
            .clicked()
        {
            commands.push(Command::DemoRegistry { running: false });
        }
    } else if ui
        .small_button(RichText::new("registry stopped: start").color(theme.error))
        .on_hover_text("Serve the demo registry again, on the same port")
        .clicked()
    {
        commands.push(Command::DemoRegistry { running: true });
    }
}

/// The registry's part of the status bar: fresh, or stale with the age of the last good
/// data and the retries so far.
#[must_use]
pub fn registry_status_text(model: &Model, now: Instant) -> (bool, String) {
    let reg = &model.registry_status;
    let stale = reg.is_stale(now, model.registry_interval);
    let retrying = match reg.consecutive_failures {
        0 => String::new(),
        1 => "; retrying (1 failed attempt)".to_owned(),
        n => format!("; retrying ({n} failed attempts)"),
    };
    let text = match reg.age(now) {
        None => format!("registry: no answer yet{retrying}"),
        Some(age) if stale => format!(
            "registry: STALE — showing the last good data from {}{retrying}",
            fmt_age(Some(age))
        ),
        // A blocking query or watch answers only on change (or at its wait): say it is
        // live and when it last spoke, so a quiet age does not read as a problem.
        Some(age) if model.registry_interval > std::time::Duration::from_secs(2) => format!(
            "registry: live (watching; last answer {}, next within {:.0} s)",
            fmt_age(Some(age)),
            model.registry_interval.as_secs_f64()
        ),
        Some(age) => format!("registry: ok {}", fmt_age(Some(age))),
    };
    (stale, text)
}

/// The config file's context in use; a picker when the file has others (choosing one
/// emits [`Command::SwitchContext`]).
fn context_ui(ui: &mut Ui, model: &Model, commands: &mut Vec<Command>) {
    let Some(current) = &model.context else {
        return;
    };
    ui.separator();
    let label = ui.label("context");
    if model.contexts.len() < 2 {
        ui.strong(current);
        return;
    }
    let mut chosen = current.clone();
    egui::ComboBox::from_id_salt("context")
        .selected_text(RichText::new(current).strong())
        .show_ui(ui, |ui| {
            for name in &model.contexts {
                ui.selectable_value(&mut chosen, name.clone(), name);
            }
        })
        .response
        .labelled_by(label.id)
        .on_hover_text("another context starts new connections (as spine-dash --context NAME)");
    if &chosen != current {
        commands.push(Command::SwitchContext(chosen));
    }
}

/// The datacenter: a small picker when the registry offers several, else its name.
fn datacenter_ui(ui: &mut Ui, model: &Model, commands: &mut Vec<Command>) {
    let current = model.registry.datacenter.clone();
    if model.datacenters.len() < 2 {
        if let Some(dc) = &current {
            ui.label(format!("dc {dc}"));
        }
        return;
    }
    let label = ui.label("dc");
    let mut chosen = current.clone().unwrap_or_default();
    egui::ComboBox::from_id_salt("datacenter")
        .selected_text(chosen.clone())
        .width(90.0)
        .show_ui(ui, |ui| {
            for dc in &model.datacenters {
                ui.selectable_value(&mut chosen, dc.clone(), dc);
            }
        })
        .response
        .labelled_by(label.id);
    if current.as_deref() != Some(chosen.as_str()) && !chosen.is_empty() {
        commands.push(Command::SetDatacenter(chosen));
    }
}

/// The settings menu: lane colour thresholds, particles, theme.
fn settings_ui(ui: &mut Ui, view: &mut ViewState) {
    ui.label("Lane colour by 5xx share");
    let t = &mut view.thresholds;
    let mut degraded_pct = t.degraded * 100.0;
    let mut failing_pct = t.failing * 100.0;
    ui.horizontal(|ui| {
        ui.label("degraded at or above");
        ui.add(
            egui::DragValue::new(&mut degraded_pct)
                .range(0.0..=100.0)
                .speed(0.01)
                .suffix(" %"),
        );
    });
    ui.horizontal(|ui| {
        ui.label("failing above");
        ui.add(
            egui::DragValue::new(&mut failing_pct)
                .range(0.0..=100.0)
                .speed(0.1)
                .suffix(" %"),
        );
    });
    t.degraded = degraded_pct / 100.0;
    t.failing = (failing_pct / 100.0).max(t.degraded);
    if ui.button("defaults (0.1 % / 10 %)").clicked() {
        *t = super::theme::Thresholds::default();
    }
    ui.separator();
    ui.checkbox(&mut view.particles, "moving particles (p)");
    ui.add_enabled_ui(view.particles, |ui| {
        ui.checkbox(
            &mut view.particles_unfocused,
            "…also while the window is not focused",
        );
        ui.horizontal(|ui| {
            let label = ui.label("…stop after no input for");
            ui.add(
                egui::DragValue::new(&mut view.particles_idle_secs)
                    .range(0..=3600)
                    .suffix(" s"),
            )
            .labelled_by(label.id)
            .on_hover_text("0 = never stop");
        });
    });
    ui.horizontal(|ui| {
        let label = ui.label("away (unfocused, or no input as above): redraw data every");
        ui.add(
            egui::DragValue::new(&mut view.away_refresh_secs)
                .range(1..=60)
                .suffix(" s"),
        )
        .labelled_by(label.id)
        .on_hover_text(
            "breaker trips and health changes still show at this pace; 1 = every second",
        );
    });
    ui.checkbox(&mut view.dark, "dark theme (t)");
}

/// The bottom status bar.
pub fn status_ui(ui: &mut Ui, model: &Model, theme: &Theme, now: Instant) {
    ui.horizontal(|ui| {
        let reg = &model.registry_status;
        let (stale, reg_text) = registry_status_text(model, now);
        ui.colored_label(if stale { theme.error } else { theme.success }, reg_text);
        if let Some(e) = &reg.last_error {
            ui.colored_label(theme.error, e);
        }
        ui.separator();
        if let Some(prom) = &model.prometheus {
            prometheus_status_ui(ui, prom, theme, now);
        } else {
            sidecars_status_ui(ui, model, theme, now);
        }
        // The newest notice, unless it only repeats a source error shown above.
        if let Some(n) = model
            .notices
            .back()
            .filter(|n| !n.text.starts_with("registry: ") && !n.text.starts_with("prometheus: "))
        {
            ui.separator();
            ui.colored_label(
                if n.is_error {
                    theme.error
                } else {
                    theme.text_dim
                },
                &n.text,
            );
        }
    });
}

/// Freshness of the Prometheus metrics source, its error, and a hint when it has no lanes.
fn prometheus_status_ui(ui: &mut Ui, prom: &PromState, theme: &Theme, now: Instant) {
    let stale = prom.is_stale(now);
    let text = match prom.status.age(now) {
        None if prom.status.last_error.is_some() => "prometheus: FAILING".to_owned(),
        None => "prometheus: no answer yet".to_owned(),
        Some(age) if stale => format!("prometheus: STALE, last answer {}", fmt_age(Some(age))),
        Some(age) => format!("prometheus: ok {}", fmt_age(Some(age))),
    };
    let (lanes, with_data) = prom.lane_counts();
    ui.colored_label(if stale { theme.error } else { theme.success }, text)
        .on_hover_ui(|ui| {
            ui.label(format!(
                "{} · rate window {} · every {}",
                prom.address,
                format_duration(prom.window),
                format_duration(prom.interval)
            ));
            ui.label(format!("{with_data} of {lanes} lanes with samples"));
            if let Some((_, samples)) = &prom.last {
                for w in &samples.warnings {
                    ui.label(format!("warning: {w}"));
                }
            }
        });
    if let Some(e) = &prom.status.last_error {
        ui.colored_label(theme.error, e);
    } else if prom.status.last_ok.is_some() && lanes == 0 {
        ui.colored_label(
            theme.text_dim,
            "no Envoy lanes in Prometheus yet — does it scrape the sidecars' /stats/prometheus?",
        );
    }
}

/// How many sidecars are fresh, and the first failing one's error.
fn sidecars_status_ui(ui: &mut Ui, model: &Model, theme: &Theme, now: Instant) {
    let total = model.sidecars.len();
    let failing: Vec<_> = model
        .sidecars
        .iter()
        .filter(|(_, s)| model.sidecar_stale(s, now))
        .collect();
    let color = if failing.is_empty() {
        theme.success
    } else {
        theme.error
    };
    let label = ui.colored_label(
        color,
        format!("sidecars: {}/{} fresh", total - failing.len(), total),
    );
    if !failing.is_empty() {
        label.on_hover_ui(|ui| {
            for (url, s) in &failing {
                ui.label(format!(
                    "{} ({}): {} — last ok {}",
                    s.instance_id,
                    crate::net::strip_userinfo(url),
                    s.status.last_error.as_deref().unwrap_or("no answer yet"),
                    fmt_age(s.status.age(now))
                ));
            }
        });
        if let Some((_, s)) = failing.first()
            && let Some(e) = &s.status.last_error
        {
            ui.colored_label(theme.error, format!("{}: {e}", s.instance_id));
        }
    }
}

//! Weight shifting in the inspector: the sliders (drafts in hundredths; with three or more
//! versions the remainder and "normalise"), the confirm step (before → after, the guard
//! rails, Enter confirms, Esc cancels), the write's state (pending until the registry
//! shows it; a conflict as theirs vs mine with "re-apply mine on top of theirs"), undo,
//! and rollout plans (editor, progress, controls, log).

use std::time::Instant;

use egui::{Grid, Key, RichText, Slider, Ui};
use serde::{Deserialize, Serialize};

use super::ViewState;
use super::theme::Theme;
use crate::io::{Command, DriverState, SplitWrite, WriteOrigin};
use crate::model::guard::{self, Rejection};
use crate::model::plan::{GuardLimits, Phase, Plan, PlanControl, PlanStep, parse_steps};
use crate::model::types::{FULL_WEIGHT, Split, WeightHundredths, format_pct};
use crate::model::{Model, WriteState, split_text};

/// A write waiting for the operator's confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// The write as it will be sent.
    pub write: SplitWrite,
    /// The operator's override of "no healthy instance".
    pub allow_unhealthy: bool,
    /// Drawn at least once (the Enter that opened it must not also confirm it).
    pub shown: bool,
}

/// The plan editor's fields for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDraft {
    /// Steps as text, e.g. "95/5 80/20 50/50 0/100".
    pub steps: String,
    /// Hold per step, seconds.
    pub hold_secs: u64,
    /// Guard limits.
    pub limits: GuardLimits,
}

impl PlanDraft {
    fn for_versions(versions: &[String]) -> Self {
        let steps = if versions.len() == 2 {
            "95/5 80/20 50/50 0/100".to_owned()
        } else {
            String::new()
        };
        Self {
            steps,
            hold_secs: 60,
            limits: GuardLimits::default(),
        }
    }
}

/// The registry's split of `name` as `(subset, hundredths)` over `versions`.
fn stored_weights(
    model: &Model,
    name: &str,
    versions: &[String],
) -> Vec<(String, WeightHundredths)> {
    versions
        .iter()
        .map(|v| (v.clone(), model.configured_weight(name, v).unwrap_or(0)))
        .collect()
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
    stored_weights(model, name, versions)
}

/// A confirm step for writing `after` over what the registry holds now.
fn confirm_for(
    model: &Model,
    name: &str,
    after: Split,
    origin: WriteOrigin,
    expected: Option<u64>,
) -> Confirm {
    let stored = model.services.get(name).and_then(|s| s.split.as_ref());
    Confirm {
        write: SplitWrite {
            service: name.to_owned(),
            before: stored.map(|c| c.split.clone()),
            after,
            expected_index: expected.unwrap_or_else(|| stored.map_or(0, |c| c.modify_index)),
            reason: String::new(),
            origin,
        },
        allow_unhealthy: false,
        shown: false,
    }
}

/// Sliders, write state, undo and plans of `name`.
pub fn weights_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    name: &str,
    theme: &Theme,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    let Some(svc) = model.services.get(name) else {
        return;
    };
    let versions = svc.versions();
    if versions.len() < 2 {
        return;
    }
    ui.strong("Traffic weights");
    let plan = model.shifting.plans.get(name).filter(|p| p.is_active());
    let writable = model.registry.writable && plan.is_none();
    if let Some(m) = model.shifting.other_driver(name) {
        ui.colored_label(
            theme.lane_degraded,
            format!(
                "{}@{} is driving this service: {} (since {})",
                m.user, m.host, m.what, m.since
            ),
        );
    }
    let mut weights = shown_split(model, view, name, &versions);
    let mut edited = None;
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
        let mut new = ((pct * 100.0).round() as WeightHundredths).min(FULL_WEIGHT);
        if resp.has_focus() {
            // PageUp / PageDown: ±5 (the arrows already give ±1).
            let (up, down) =
                ui.input(|i| (i.num_presses(Key::PageUp), i.num_presses(Key::PageDown)));
            let delta = (up as i64 - down as i64) * 500;
            if delta != 0 {
                new = (i64::from(new) + delta).clamp(0, i64::from(FULL_WEIGHT)) as WeightHundredths;
            }
        }
        if new != w {
            weights[i].1 = new;
            if weights.len() == 2 {
                weights[1 - i].1 = FULL_WEIGHT - new;
            }
            edited = Some(i);
        }
    }
    if let Some(i) = edited {
        view.drafts.insert(name.to_owned(), weights.clone());
        view.draft_fixed = i;
    }
    let total = weights
        .iter()
        .fold(0, |sum: WeightHundredths, (_, w)| sum.saturating_add(*w));
    let draft_open = view.drafts.contains_key(name);
    if total != FULL_WEIGHT {
        let text = if total < FULL_WEIGHT {
            format!(
                "remainder: {} % left to assign (sum {} %)",
                format_pct(FULL_WEIGHT - total),
                format_pct(total)
            )
        } else {
            format!(
                "over by {} % (sum {} %)",
                format_pct(total - FULL_WEIGHT),
                format_pct(total)
            )
        };
        ui.colored_label(theme.error, text);
    }
    // The row is always there (disabled without a draft): widgets appearing under a
    // focused slider would shift the layout and egui would drop the slider's focus.
    let split = Split::from_pairs(weights.iter().map(|(v, w)| (v.clone(), *w)));
    let mut review = false;
    ui.horizontal(|ui| {
        review = ui
            .add_enabled(
                draft_open && total == FULL_WEIGHT,
                egui::Button::new("Review change…"),
            )
            .on_hover_text("shows before and after, and the checks; Enter")
            .clicked();
        if ui
            .add_enabled(
                draft_open && total != FULL_WEIGHT,
                egui::Button::new("Normalise"),
            )
            .on_hover_text("keep the weight you moved last, scale the others to fill 100 %")
            .clicked()
        {
            let fixed = view.draft_fixed.min(weights.len() - 1);
            view.drafts
                .insert(name.to_owned(), guard::normalise(&weights, fixed));
        }
        if ui
            .add_enabled(draft_open, egui::Button::new("Reset"))
            .clicked()
        {
            view.drafts.remove(name);
        }
    });
    let enter = draft_open && view.confirm.is_none() && ui.input(|i| i.key_pressed(Key::Enter));
    if (review || enter) && total == FULL_WEIGHT {
        view.confirm = Some(confirm_for(model, name, split, WriteOrigin::Operator, None));
    }
    write_state_ui(ui, model, view, name, theme);
    undo_ui(ui, model, view, name, writable);
    if !model.registry.writable {
        ui.label(
            RichText::new("read-only: weights and plans cannot be changed").color(theme.text_dim),
        );
    } else if plan.is_some() {
        ui.label(
            RichText::new("a plan drives these weights: pause or abort it to move them by hand")
                .color(theme.text_dim),
        );
    }
    ui.add_space(6.0);
    plan_ui(ui, model, view, name, &versions, theme, commands, now);
}

/// Pending / applied / conflict / failed.
fn write_state_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, name: &str, theme: &Theme) {
    let stored = model.services.get(name).and_then(|s| s.split.as_ref());
    let state = model.writes.get(name);
    if state.is_some() && view.dismissed.get(name) == state {
        return;
    }
    match state {
        Some(WriteState::Pending { split }) => {
            ui.label(format!("writing {} …", split_text(split)));
        }
        Some(WriteState::Applied { split }) => {
            if stored.is_some_and(|c| guard::same_weights(&c.split, split)) {
                ui.colored_label(theme.success, format!("live: {}", split_text(split)));
            } else {
                ui.colored_label(
                    theme.text_dim,
                    format!(
                        "applied {} — waiting for the registry to show it",
                        split_text(split)
                    ),
                );
            }
        }
        Some(WriteState::Conflict { mine, theirs }) => {
            ui.colored_label(
                theme.error,
                "Conflict: someone changed the split first; nothing was overwritten.",
            );
            Grid::new("conflict")
                .num_columns(3)
                .striped(true)
                .show(ui, |ui| {
                    ui.label(RichText::new("version").color(theme.text_dim));
                    ui.label(RichText::new("theirs (in the registry)").color(theme.text_dim));
                    ui.label(RichText::new("mine (not written)").color(theme.text_dim));
                    ui.end_row();
                    let mut subsets: Vec<String> =
                        mine.entries.iter().map(|e| e.subset.clone()).collect();
                    if let Some(t) = theirs {
                        for e in &t.split.entries {
                            if !subsets.contains(&e.subset) {
                                subsets.push(e.subset.clone());
                            }
                        }
                    }
                    for s in subsets {
                        ui.label(&s);
                        let t = theirs.as_ref().and_then(|t| t.split.weight_of(&s));
                        ui.label(t.map_or("–".into(), |w| format!("{} %", format_pct(w))));
                        ui.label(
                            mine.weight_of(&s)
                                .map_or("–".into(), |w| format!("{} %", format_pct(w))),
                        );
                        ui.end_row();
                    }
                });
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(
                        model.registry.writable,
                        egui::Button::new("Re-apply mine on top of theirs…"),
                    )
                    .clicked()
                {
                    let index = theirs.as_ref().map_or(0, |t| t.modify_index);
                    view.confirm = Some(confirm_for(
                        model,
                        name,
                        mine.clone(),
                        WriteOrigin::Operator,
                        Some(index),
                    ));
                    if let Some(c) = view.confirm.as_mut() {
                        c.write.before = theirs.as_ref().map(|t| t.split.clone());
                    }
                }
                if ui.button("Keep theirs").clicked() {
                    view.dismissed.insert(
                        name.to_owned(),
                        state.cloned().unwrap_or(WriteState::Pending {
                            split: mine.clone(),
                        }),
                    );
                    view.drafts.remove(name);
                }
            });
        }
        Some(WriteState::Failed { error, .. }) => {
            ui.colored_label(theme.error, format!("Write failed: {error}"));
        }
        Some(WriteState::Unknown { split, error, .. }) => {
            ui.colored_label(
                theme.lane_degraded,
                format!(
                    "Outcome unknown: {} may or may not have been applied (the answer was lost: {error}) — re-read after the registry returns",
                    split_text(split)
                ),
            );
        }
        None => {}
    }
}

/// "Undo" when the registry still shows our last change.
fn undo_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, name: &str, writable: bool) {
    let Some((Some(before), after)) = model.shifting.last_change.get(name) else {
        return;
    };
    let stored = model.services.get(name).and_then(|s| s.split.as_ref());
    if !stored.is_some_and(|c| guard::same_weights(&c.split, after)) {
        return;
    }
    if ui
        .add_enabled(
            writable,
            egui::Button::new(format!("Undo: back to {}…", split_text(before))),
        )
        .on_hover_text(
            "writes the split before the last change (compare-and-set, with a confirm step)",
        )
        .clicked()
    {
        view.confirm = Some(confirm_for(
            model,
            name,
            before.clone(),
            WriteOrigin::Undo,
            None,
        ));
    }
}

/// The confirm step, as a modal over everything: before → after, the checks, a reason;
/// Enter confirms, Esc cancels.
pub fn confirm_ui(
    ctx: &egui::Context,
    model: &Model,
    view: &mut ViewState,
    theme: &Theme,
    commands: &mut Vec<Command>,
) {
    let Some(mut confirm) = view.confirm.take() else {
        return;
    };
    let service = confirm.write.service.clone();
    let rejections = guard::check(model, &service, &confirm.write.after);
    let blocked = !model.registry.writable || guard::blocks(&rejections, confirm.allow_unhealthy);
    let mut decided: Option<bool> = None;
    let response = egui::Modal::new(egui::Id::unique("confirm split")).show(ctx, |ui| {
        ui.set_max_width(460.0);
        let what = match confirm.write.origin {
            WriteOrigin::Undo => "Undo the last change of",
            _ => "Change the traffic split of",
        };
        ui.heading(format!("{what} {service}"));
        Grid::new("before after")
            .num_columns(4)
            .striped(true)
            .show(ui, |ui| {
                for h in ["version", "before", "after", "change"] {
                    ui.label(RichText::new(h).color(theme.text_dim));
                }
                ui.end_row();
                for e in &confirm.write.after.entries {
                    let before = confirm
                        .write
                        .before
                        .as_ref()
                        .and_then(|b| b.weight_of(&e.subset));
                    ui.label(&e.subset);
                    ui.label(before.map_or("–".into(), |w| format!("{} %", format_pct(w))));
                    ui.strong(format!("{} %", format_pct(e.weight)));
                    let delta = i64::from(e.weight) - i64::from(before.unwrap_or(0));
                    let sign = match delta.cmp(&0) {
                        std::cmp::Ordering::Greater => "+",
                        std::cmp::Ordering::Less => "−",
                        std::cmp::Ordering::Equal => "",
                    };
                    ui.label(
                        RichText::new(format!(
                            "{sign}{} %",
                            format_pct(delta.unsigned_abs() as u32)
                        ))
                        .monospace(),
                    );
                    ui.end_row();
                }
            });
        ui.label(
            RichText::new(format!(
                "compare-and-set on index {} — if anyone changed it since, nothing is written",
                confirm.write.expected_index
            ))
            .small()
            .color(theme.text_dim),
        );
        ui.add_space(4.0);
        if rejections.is_empty() {
            ui.colored_label(
                theme.success,
                "checks passed: sum 100 %, versions exist, healthy instances, protocol",
            );
        }
        for r in &rejections {
            let color = if r.overridable() {
                theme.lane_degraded
            } else {
                theme.error
            };
            ui.colored_label(color, r.text());
        }
        if rejections.iter().any(Rejection::overridable) {
            ui.checkbox(&mut confirm.allow_unhealthy, "override: write anyway");
        }
        if !model.registry.writable {
            ui.colored_label(theme.error, "read-only mode: nothing can be written");
        }
        ui.horizontal(|ui| {
            ui.label("reason");
            ui.add(
                egui::TextEdit::singleline(&mut confirm.write.reason)
                    .hint_text("optional, goes to the audit log")
                    .desired_width(300.0),
            );
        });
        ui.add_space(4.0);
        decided = decide_ui(ui, "Confirm (Enter)", confirm.shown, blocked);
    });
    confirm.shown = true;
    if response.should_close() && decided.is_none() {
        decided = Some(false);
    }
    match decided {
        Some(true) => {
            view.drafts.remove(&service);
            view.dismissed.remove(&service);
            commands.push(Command::SetSplit(confirm.write));
        }
        Some(false) => {}
        None => view.confirm = Some(confirm),
    }
}

/// The confirm and cancel buttons of a modal; Enter confirms once the modal was drawn
/// before (the Enter that opened it does not count). `Some(true)` = confirmed.
fn decide_ui(ui: &mut Ui, confirm_label: &str, shown: bool, blocked: bool) -> Option<bool> {
    let mut decided = None;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!blocked, egui::Button::new(confirm_label))
            .clicked()
        {
            decided = Some(true);
        }
        if ui.button("Cancel (Esc)").clicked() {
            decided = Some(false);
        }
    });
    if shown && !blocked && ui.input(|i| i.key_pressed(Key::Enter)) {
        decided = Some(true);
    }
    decided
}

/// A plan waiting for the operator's confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfirm {
    /// Service name.
    pub service: String,
    /// The steps.
    pub steps: Vec<PlanStep>,
    /// The guards.
    pub limits: GuardLimits,
    /// Drawn at least once.
    pub shown: bool,
}

/// The confirm step of a plan: steps, holds, guards, the first step's checks.
pub fn plan_confirm_ui(
    ctx: &egui::Context,
    model: &Model,
    view: &mut ViewState,
    theme: &Theme,
    commands: &mut Vec<Command>,
) {
    let Some(mut confirm) = view.plan_confirm.take() else {
        return;
    };
    let service = confirm.service.clone();
    let first = confirm
        .steps
        .first()
        .map(|s| s.split.clone())
        .unwrap_or_default();
    let rejections: Vec<Rejection> = guard::check(model, &service, &first)
        .into_iter()
        .filter(|r| *r != Rejection::NoChange)
        .collect();
    let blocked = !model.registry.writable || guard::blocks(&rejections, false);
    let current = model
        .services
        .get(&service)
        .and_then(|s| s.split.as_ref())
        .map_or_else(|| "none".into(), |c| split_text(&c.split));
    let mut decided = None;
    let response = egui::Modal::new(egui::Id::unique("confirm plan")).show(ctx, |ui| {
        ui.set_max_width(460.0);
        ui.heading(format!("Start a rollout plan on {service}"));
        ui.label(format!("now: {current}"));
        Grid::new("plan steps")
            .num_columns(3)
            .striped(true)
            .show(ui, |ui| {
                for h in ["step", "split", "hold"] {
                    ui.label(RichText::new(h).color(theme.text_dim));
                }
                ui.end_row();
                for (i, step) in confirm.steps.iter().enumerate() {
                    ui.label(format!("{}", i + 1));
                    ui.label(RichText::new(split_text(&step.split)).monospace());
                    ui.label(format!("{} s", step.hold.as_secs()));
                    ui.end_row();
                }
            });
        let l = &confirm.limits;
        let mut guards = Vec::new();
        if let Some(v) = l.max_5xx_pct {
            guards.push(format!("5xx > {v} %"));
        }
        if let Some(v) = l.max_p99_ms {
            guards.push(format!("p99 > {v} ms"));
        }
        if let Some(v) = l.max_p99_factor {
            guards.push(format!("p99 > {v} × the old version's"));
        }
        if l.breaker_open {
            guards.push("a breaker opens".into());
        }
        if l.critical {
            guards.push("an instance goes critical".into());
        }
        ui.label(format!(
            "during each hold, revert to the last good split and pause if: {}",
            if guards.is_empty() {
                "never (no guard)".to_owned()
            } else {
                guards.join(", ")
            }
        ));
        for r in &rejections {
            ui.colored_label(theme.error, format!("step 1: {}", r.text()));
        }
        if let Some(m) = model.shifting.other_driver(&service) {
            ui.colored_label(
                theme.lane_degraded,
                format!("{}@{} is driving this service: {}", m.user, m.host, m.what),
            );
        }
        ui.add_space(4.0);
        decided = decide_ui(ui, "Start (Enter)", confirm.shown, blocked);
    });
    confirm.shown = true;
    if response.should_close() && decided.is_none() {
        decided = Some(false);
    }
    match decided {
        Some(true) => commands.push(Command::Plan {
            service,
            control: PlanControl::Start {
                steps: confirm.steps,
                limits: confirm.limits,
            },
        }),
        Some(false) => {}
        None => view.plan_confirm = Some(confirm),
    }
}

/// Plan editor (no plan running) or progress and controls.
#[allow(clippy::too_many_arguments)]
fn plan_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    name: &str,
    versions: &[String],
    theme: &Theme,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    let plan = model.shifting.plans.get(name);
    egui::CollapsingHeader::new("Rollout plan")
        .id_salt(("plan", name))
        .default_open(plan.is_some())
        .show(ui, |ui| {
            if let Some(plan) = plan {
                plan_progress_ui(ui, model, plan, name, theme, commands, now);
                if plan.is_active() {
                    return;
                }
                ui.separator();
            }
            plan_editor_ui(ui, model, view, name, versions, theme);
        });
}

fn plan_editor_ui(
    ui: &mut Ui,
    model: &Model,
    view: &mut ViewState,
    name: &str,
    versions: &[String],
    theme: &Theme,
) {
    let draft = view
        .plan_drafts
        .entry(name.to_owned())
        .or_insert_with(|| PlanDraft::for_versions(versions));
    ui.horizontal(|ui| {
        let label = ui.label(format!("steps ({})", versions.join("/")));
        ui.add(egui::TextEdit::singleline(&mut draft.steps).desired_width(200.0))
            .labelled_by(label.id);
    });
    ui.horizontal(|ui| {
        let label = ui.label("hold each");
        ui.add(
            egui::DragValue::new(&mut draft.hold_secs)
                .range(5..=86_400)
                .suffix(" s"),
        )
        .labelled_by(label.id);
    });
    ui.label(RichText::new("guards on the version gaining traffic").color(theme.text_dim));
    limit_ui(
        ui,
        "5xx above",
        &mut draft.limits.max_5xx_pct,
        5.0,
        " %",
        0.1,
    );
    limit_ui(
        ui,
        "p99 above",
        &mut draft.limits.max_p99_ms,
        500.0,
        " ms",
        10.0,
    );
    limit_ui(
        ui,
        "p99 above old ×",
        &mut draft.limits.max_p99_factor,
        3.0,
        "",
        0.1,
    );
    ui.checkbox(&mut draft.limits.breaker_open, "a breaker opens");
    ui.checkbox(&mut draft.limits.critical, "an instance goes critical");
    let parsed = parse_steps(&draft.steps, versions);
    if let Err(e) = &parsed {
        ui.colored_label(theme.error, e);
    }
    let can = model.registry.writable && parsed.is_ok();
    if ui
        .add_enabled(can, egui::Button::new("Start plan…"))
        .on_hover_text("each step is checked and written with compare-and-set; a tripped guard reverts and pauses")
        .clicked()
        && let Ok(splits) = parsed
    {
        let hold = std::time::Duration::from_secs(draft.hold_secs);
        view.plan_confirm = Some(PlanConfirm {
            service: name.to_owned(),
            steps: splits.into_iter().map(|split| PlanStep { split, hold }).collect(),
            limits: draft.limits.clone(),
            shown: false,
        });
    }
}

fn limit_ui(
    ui: &mut Ui,
    label: &str,
    value: &mut Option<f64>,
    default: f64,
    suffix: &str,
    speed: f64,
) {
    ui.horizontal(|ui| {
        let mut on = value.is_some();
        let check = ui.checkbox(&mut on, label);
        match (on, value.as_mut()) {
            (true, Some(v)) => {
                ui.add(
                    egui::DragValue::new(v)
                        .speed(speed)
                        .range(0.0..=1.0e6)
                        .suffix(suffix),
                )
                .labelled_by(check.id);
            }
            (true, None) => *value = Some(default),
            (false, _) => *value = None,
        }
    });
}

fn plan_progress_ui(
    ui: &mut Ui,
    model: &Model,
    plan: &Plan,
    name: &str,
    theme: &Theme,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    let control = |c: PlanControl| Command::Plan {
        service: name.to_owned(),
        control: c,
    };
    let badge_color = match &plan.phase {
        Phase::Paused { .. } | Phase::Reverting { .. } => theme.lane_degraded,
        Phase::Done => theme.success,
        _ => theme.selection,
    };
    ui.colored_label(
        badge_color,
        RichText::new(format!("plan: {}", plan.badge(now))).strong(),
    );
    let current = plan.step();
    for (i, step) in plan.steps.iter().enumerate() {
        let mark = match current {
            Some(c) if c == i => "▶",
            Some(c) if c > i => "✓",
            None if matches!(plan.phase, Phase::Done) => "✓",
            _ => " ",
        };
        ui.label(
            RichText::new(format!(
                "{mark} {}  hold {} s",
                split_text(&step.split),
                step.hold.as_secs()
            ))
            .monospace(),
        );
    }
    if let Phase::Paused { reason, .. } = &plan.phase {
        ui.colored_label(theme.lane_degraded, reason);
    }
    match model.shifting.drivers.get(name) {
        Some(DriverState::Claimed) => {
            ui.label(
                RichText::new("marker: this dashboard drives it (others see it)")
                    .small()
                    .color(theme.text_dim),
            );
        }
        Some(DriverState::HeldBy(m)) => {
            ui.colored_label(
                theme.lane_degraded,
                format!("marker held by {}@{}: {}", m.user, m.host, m.what),
            );
        }
        Some(DriverState::Failed(e)) => {
            ui.label(
                RichText::new(format!("marker: {e}"))
                    .small()
                    .color(theme.text_dim),
            );
        }
        Some(DriverState::Released) | None => {}
    }
    if plan.is_active() {
        let writable = model.registry.writable;
        ui.horizontal(|ui| {
            let paused = matches!(plan.phase, Phase::Paused { .. });
            if paused {
                if ui
                    .add_enabled(writable, egui::Button::new("Resume"))
                    .clicked()
                {
                    commands.push(control(PlanControl::Resume));
                }
            } else if ui.button("Pause").clicked() {
                commands.push(control(PlanControl::Pause));
            }
            if ui
                .button("Abort")
                .on_hover_text("stop here; the split stays, undo is there")
                .clicked()
            {
                commands.push(control(PlanControl::Abort));
            }
            egui::ComboBox::new(("skip", name), "skip to")
                .selected_text("step…")
                .show_ui(ui, |ui| {
                    for (i, step) in plan.steps.iter().enumerate() {
                        if ui
                            .add_enabled(
                                writable,
                                egui::Button::selectable(
                                    false,
                                    format!("step {}: {}", i + 1, split_text(&step.split)),
                                ),
                            )
                            .clicked()
                        {
                            commands.push(control(PlanControl::SkipTo(i)));
                        }
                    }
                });
        });
    }
    for e in plan.events.iter().rev().take(6) {
        let color = if e.is_error {
            theme.error
        } else {
            theme.text_dim
        };
        let ago = now.saturating_duration_since(e.at).as_secs();
        ui.colored_label(
            color,
            RichText::new(format!("{ago:>4} s ago  {}", e.text)).small(),
        );
    }
}

/// The plan badge for a station on the map (`true` = needs attention).
#[must_use]
pub fn station_badge(model: &Model, name: &str, now: Instant) -> Option<(String, bool)> {
    if let Some(plan) = model.shifting.plans.get(name).filter(|p| p.is_active()) {
        let attention = matches!(plan.phase, Phase::Paused { .. } | Phase::Reverting { .. });
        return Some((format!("PLAN {}", plan.badge(now)), attention));
    }
    model
        .shifting
        .other_driver(name)
        .map(|m| (format!("driven by {}@{}", m.user, m.host), true))
}

//! The audit panel (`a`): every weight-change attempt, newest first — time (UTC), who,
//! service, before → after, origin, reason, CAS index, outcome and detail. The same lines
//! as the JSONL file in the platform data directory.

use egui::{RichText, Ui};

use super::ViewState;
use super::theme::Theme;
use crate::io::AuditOutcome;
use crate::model::Model;

/// Draws the panel.
pub fn audit_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme) {
    let records = &model.shifting.audit;
    ui.horizontal(|ui| {
        ui.strong("Audit log");
        ui.label(
            RichText::new(format!(
                "{} attempts · newest first · times UTC · a hides",
                records.len()
            ))
            .color(theme.text_dim),
        );
    });
    if records.is_empty() {
        ui.label(RichText::new("no weight change attempted yet").color(theme.text_dim));
        return;
    }
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            egui::Grid::new("audit rows")
                .striped(true)
                .num_columns(8)
                .show(ui, |ui| {
                    // Monospace: the arrow is not in the proportional font.
                    for h in [
                        "time",
                        "who",
                        "service",
                        "before → after",
                        "origin",
                        "cas",
                        "outcome",
                        "reason · detail",
                    ] {
                        ui.label(RichText::new(h).monospace().color(theme.text_dim));
                    }
                    ui.end_row();
                    for r in records.iter().rev() {
                        ui.label(
                            RichText::new(r.time.replace('T', " ").trim_end_matches('Z'))
                                .monospace(),
                        );
                        ui.label(format!("{}@{}", r.user, r.host));
                        if ui.link(&r.service).clicked() {
                            view.select(Some(r.service.clone()));
                        }
                        ui.label(RichText::new(format!("{} → {}", r.before, r.after)).monospace());
                        ui.label(format!("{:?}", r.origin).to_lowercase());
                        ui.label(RichText::new(r.cas_index.to_string()).monospace());
                        let color = match r.outcome {
                            AuditOutcome::Applied => theme.success,
                            AuditOutcome::Superseded => theme.text_dim,
                            AuditOutcome::Conflict
                            | AuditOutcome::Refused
                            | AuditOutcome::Unknown => theme.lane_degraded,
                            AuditOutcome::Failed => theme.error,
                        };
                        ui.colored_label(color, r.outcome.as_str());
                        let text = [r.reason.as_str(), r.detail.as_str()]
                            .into_iter()
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join(" · ");
                        ui.label(RichText::new(text).monospace());
                        ui.end_row();
                    }
                });
        });
}

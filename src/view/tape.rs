//! The breaker tape: every breaker transition of every lane, newest first, with time, lane,
//! from → to and the numbers behind it. Clicking an entry selects its lane.

use std::time::{SystemTime, UNIX_EPOCH};

use egui::{RichText, Ui};

use super::ViewState;
use super::theme::Theme;
use crate::model::Model;
use crate::model::types::BreakerState;

/// Rows shown (the model keeps more).
const SHOWN: usize = 200;

/// `HH:MM:SS` (UTC) of a wall-clock time.
#[must_use]
pub fn clock_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn state_text(theme: &Theme, s: Option<BreakerState>) -> RichText {
    match s {
        None => RichText::new("first seen").color(theme.text_dim),
        Some(s) => RichText::new(s.label())
            .color(theme.breaker_color(s).unwrap_or(theme.lane_ok))
            .strong(),
    }
}

/// Draws the tape (inside a bottom panel).
pub fn tape_ui(ui: &mut Ui, model: &Model, view: &mut ViewState, theme: &Theme) {
    let tape = model.tape();
    ui.horizontal(|ui| {
        ui.strong("Breaker tape");
        ui.colored_label(
            theme.text_dim,
            format!(
                "{} transitions · newest first · times UTC · b hides",
                tape.len()
            ),
        );
    });
    if tape.is_empty() {
        ui.colored_label(
            theme.text_dim,
            "no breaker has changed state since the dashboard started",
        );
        return;
    }
    egui::ScrollArea::vertical()
        .auto_shrink([false, true])
        .show(ui, |ui| {
            egui::Grid::new("tape rows")
                .num_columns(4)
                .striped(true)
                .show(ui, |ui| {
                    for entry in tape.iter().rev().take(SHOWN) {
                        ui.monospace(clock_text(entry.wall));
                        let lane = &entry.lane;
                        let text = format!("{} → {} {}", lane.caller, lane.service, lane.version);
                        let selected = view.selected_lane.as_ref() == Some(lane);
                        // Monospace: the proportional font has no arrow.
                        if ui
                            .selectable_label(selected, RichText::new(text).monospace())
                            .on_hover_text("select this lane")
                            .clicked()
                        {
                            view.select(Some(lane.service.clone()));
                            view.selected_lane = Some(lane.clone());
                        }
                        ui.horizontal(|ui| {
                            ui.label(state_text(theme, entry.from));
                            ui.label(RichText::new("→").monospace());
                            ui.label(state_text(theme, Some(entry.to)));
                        });
                        ui.colored_label(theme.text_dim, &entry.detail);
                        ui.end_row();
                    }
                });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clock() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 13 + 60 * 5 + 9);
        assert_eq!(clock_text(t), "13:05:09");
    }
}

//! The `?` overlay: every key binding, from [`super::BINDINGS`].

use super::theme::Theme;
use super::{BINDINGS, ViewState};

/// Draws the help overlay; closes on its button (Esc is handled with the other keys).
pub fn help_ui(ctx: &egui::Context, view: &mut ViewState, theme: &Theme) {
    let mut open = view.help_open;
    egui::Window::new("Keyboard and mouse")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            egui::Grid::new("bindings")
                .num_columns(2)
                .spacing([16.0, 6.0])
                .show(ui, |ui| {
                    for (keys, what) in BINDINGS {
                        ui.label(egui::RichText::new(*keys).monospace().strong());
                        ui.label(*what);
                        ui.end_row();
                    }
                });
            ui.separator();
            ui.colored_label(
                theme.text_dim,
                "Lane colour: 5xx ≥ 0.1 % degraded, > 10 % failing · width: requests per second (log)",
            );
        });
    view.help_open = open && view.help_open;
}

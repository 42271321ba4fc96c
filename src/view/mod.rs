//! egui only: reads `&Model`, edits its own [`ViewState`], emits [`Command`]s. No I/O.

pub mod bars;
pub mod demo_panel;
pub mod layout;
pub mod map;
pub mod panel;
pub mod theme;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::io::Command;
use crate::model::Model;
use crate::model::types::WeightHundredths;
use theme::{Theme, Thresholds};

/// What the operator is looking at and editing; never what the spine is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    /// Selected service.
    pub selected: Option<String>,
    /// Name filter (substring); empty shows everything.
    pub filter: String,
    /// Weight drafts per service while the operator edits: `(subset, hundredths)`.
    #[serde(skip)]
    pub drafts: BTreeMap<String, Vec<(String, WeightHundredths)>>,
    /// Lane colour thresholds.
    #[serde(skip)]
    pub thresholds: Thresholds,
}

impl ViewState {
    /// Whether a service passes the name filter.
    #[must_use]
    pub fn filter_matches(&self, name: &str) -> bool {
        self.filter.is_empty() || name.contains(self.filter.trim())
    }
}

/// Draws the whole dashboard; pushes what the operator asked for into `commands`.
pub fn root_ui(
    ui: &mut egui::Ui,
    model: &Model,
    view: &mut ViewState,
    commands: &mut Vec<Command>,
    now: Instant,
) {
    let theme = Theme::dark();
    egui::Panel::top("header").show(ui, |ui| bars::header_ui(ui, model, view, &theme, now));
    egui::Panel::bottom("status").show(ui, |ui| bars::status_ui(ui, model, &theme, now));
    if view
        .selected
        .as_ref()
        .is_some_and(|s| model.services.contains_key(s))
    {
        egui::Panel::right("inspector")
            .resizable(true)
            .default_size(360.0)
            .show(ui, |ui| {
                panel::inspector_ui(ui, model, view, &theme, commands, now);
            });
    }
    egui::CentralPanel::no_frame().show(ui, |ui| map::map_ui(ui, model, view, &theme, now));
}

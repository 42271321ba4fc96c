//! egui only: reads `&Model`, edits its own [`ViewState`], emits [`Command`]s. No I/O.

pub mod audit;
pub mod bars;
pub mod charts;
pub mod demo_panel;
pub mod help;
pub mod layout;
pub mod map;
pub mod panel;
pub mod shift;
pub mod tape;
pub mod theme;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::io::Command;
use crate::model::Model;
use crate::model::types::{LaneKey, WeightHundredths};
use layout::Placement;
use theme::{Theme, Thresholds};

/// Pan and zoom of the map: screen = world × `scale` + `offset` (offset from the map
/// area's top-left corner, so a window resize does not move the map).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// Screen points per world unit.
    pub scale: f32,
    /// Screen offset of the world origin from the map area's corner.
    pub offset: [f32; 2],
}

/// What the operator is looking at and editing; never what the spine is. (Independent
/// toggles, persisted by name: bools read better here than a bit set.)
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewState {
    /// Selected service.
    pub selected: Option<String>,
    /// Selected lane (a road's version), when one was clicked.
    pub selected_lane: Option<LaneKey>,
    /// Filter text: names and predicates (`err>1%`, `p99>250ms`, `version:v2`, …).
    pub filter: String,
    /// Kept slots of the services on the map.
    pub placement: Placement,
    /// Stations the operator dragged: world centre per service.
    pub pins: BTreeMap<String, [f32; 2]>,
    /// Pan / zoom; `None` = fit on the next frame.
    pub camera: Option<Camera>,
    /// Dark (default) or light theme.
    pub dark: bool,
    /// Moving particles along lanes.
    pub particles: bool,
    /// The breaker tape panel is open.
    pub tape_open: bool,
    /// Chart window of the inspector, seconds (60, 300, 900).
    pub chart_window_secs: u64,
    /// The `?` overlay is open.
    #[serde(skip)]
    pub help_open: bool,
    /// The display is frozen (collection continues).
    #[serde(skip)]
    pub paused: bool,
    /// Move the keyboard focus to the filter on the next frame.
    #[serde(skip)]
    pub focus_filter: bool,
    /// Weight drafts per service while the operator edits: `(subset, hundredths)`.
    #[serde(skip)]
    pub drafts: BTreeMap<String, Vec<(String, WeightHundredths)>>,
    /// Lane colour thresholds (5xx ratios).
    pub thresholds: Thresholds,
    /// The slider moved last in a draft (normalise keeps it).
    #[serde(skip)]
    pub draft_fixed: usize,
    /// A write waiting for the confirm step.
    #[serde(skip)]
    pub confirm: Option<shift::Confirm>,
    /// A plan waiting for the confirm step.
    #[serde(skip)]
    pub plan_confirm: Option<shift::PlanConfirm>,
    /// Write states the operator dismissed ("keep theirs"), by service.
    #[serde(skip)]
    pub dismissed: BTreeMap<String, crate::model::WriteState>,
    /// Plan editors' fields, by service.
    pub plan_drafts: BTreeMap<String, shift::PlanDraft>,
    /// The audit panel is open.
    pub audit_open: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            selected: None,
            selected_lane: None,
            filter: String::new(),
            placement: Placement::default(),
            pins: BTreeMap::new(),
            camera: None,
            dark: true,
            particles: true,
            tape_open: true,
            chart_window_secs: 300,
            help_open: false,
            paused: false,
            focus_filter: false,
            drafts: BTreeMap::new(),
            thresholds: Thresholds::default(),
            draft_fixed: 0,
            confirm: None,
            plan_confirm: None,
            dismissed: BTreeMap::new(),
            plan_drafts: BTreeMap::new(),
            audit_open: false,
        }
    }
}

impl ViewState {
    /// The active theme.
    #[must_use]
    pub fn theme(&self) -> Theme {
        if self.dark {
            Theme::dark()
        } else {
            Theme::light()
        }
    }

    /// Selects a service (and forgets a lane of another service).
    pub fn select(&mut self, service: Option<String>) {
        if self.selected_lane.as_ref().map(|l| &l.service) != service.as_ref() {
            self.selected_lane = None;
        }
        self.selected = service;
    }
}

/// Keyboard bindings: `(keys, what they do)`; the help overlay lists exactly these.
pub const BINDINGS: &[(&str, &str)] = &[
    (
        "/",
        "filter: names and predicates (err>1%, p99>250ms, version:v2, breaker:open)",
    ),
    ("?", "this help"),
    ("Esc", "close help / clear the filter / deselect"),
    (
        "← →",
        "move the selection along roads (to a caller / a callee)",
    ),
    ("↑ ↓", "previous / next station in the same column"),
    ("Space", "pause the display (collection continues)"),
    ("f", "fit the map to the window"),
    ("t", "dark / light theme"),
    ("p", "moving particles on / off"),
    ("b", "breaker tape on / off"),
    ("a", "audit log of weight changes on / off"),
    (
        "← → PgUp PgDn",
        "on a focused weight slider: −1 / +1 / +5 / −5 %",
    ),
    ("Enter", "review the weight draft / confirm the change"),
    ("drag", "background: pan · station: move and pin it"),
    ("wheel", "zoom around the pointer"),
    ("right-click", "station: unpin"),
];

/// Handles the global keys (when no text field has the keyboard).
pub fn keys_ui(ui: &egui::Ui, model: &Model, view: &mut ViewState) {
    let ctx = ui.ctx();
    // A text field, or the confirm step (its own Enter / Esc), has the keyboard.
    if ctx.egui_wants_keyboard_input() || view.confirm.is_some() || view.plan_confirm.is_some() {
        return;
    }
    // A focused widget (a weight slider) takes the arrows.
    let widget_focused = ctx.memory(|m| m.focused().is_some());
    let (typed, esc, space, left, right, up, down) = ui.input(|i| {
        let typed: String = i
            .events
            .iter()
            .filter_map(|e| match e {
                egui::Event::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        (
            typed,
            i.key_pressed(egui::Key::Escape),
            i.key_pressed(egui::Key::Space),
            i.key_pressed(egui::Key::ArrowLeft),
            i.key_pressed(egui::Key::ArrowRight),
            i.key_pressed(egui::Key::ArrowUp),
            i.key_pressed(egui::Key::ArrowDown),
        )
    });
    for c in typed.chars() {
        match c {
            '/' => view.focus_filter = true,
            '?' => view.help_open = !view.help_open,
            't' => view.dark = !view.dark,
            'f' => view.camera = None,
            'p' => view.particles = !view.particles,
            'b' => view.tape_open = !view.tape_open,
            'a' => view.audit_open = !view.audit_open,
            _ => {}
        }
    }
    if esc {
        if view.help_open {
            view.help_open = false;
        } else if !view.filter.is_empty() {
            view.filter.clear();
        } else {
            view.select(None);
        }
    }
    if space {
        view.paused = !view.paused;
    }
    let step = if left {
        Some(map::Step::Left)
    } else if right {
        Some(map::Step::Right)
    } else if up {
        Some(map::Step::Up)
    } else if down {
        Some(map::Step::Down)
    } else {
        None
    };
    if let Some(step) = step.filter(|_| !widget_focused) {
        let next = map::step_selection(model, view, step);
        if next.is_some() {
            view.select(next);
        }
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
    keys_ui(ui, model, view);
    let theme = view.theme();
    let want = if view.dark {
        egui::Theme::Dark
    } else {
        egui::Theme::Light
    };
    if ui.ctx().theme() != want {
        ui.ctx().set_theme(want);
    }
    egui::Panel::top("header").show(ui, |ui| {
        bars::header_ui(ui, model, view, &theme, commands, now);
    });
    egui::Panel::bottom("status").show(ui, |ui| bars::status_ui(ui, model, &theme, now));
    if view.tape_open {
        egui::Panel::bottom("tape")
            .resizable(true)
            .default_size(130.0)
            .show(ui, |ui| tape::tape_ui(ui, model, view, &theme));
    }
    if view
        .selected
        .as_ref()
        .is_some_and(|s| model.services.contains_key(s))
    {
        egui::Panel::right("inspector")
            .resizable(true)
            .default_size(380.0)
            .show(ui, |ui| {
                panel::inspector_ui(ui, model, view, &theme, commands, now);
            });
    }
    if view.audit_open {
        egui::Panel::bottom("audit")
            .resizable(true)
            .default_size(160.0)
            .show(ui, |ui| audit::audit_ui(ui, model, view, &theme));
    }
    egui::CentralPanel::no_frame().show(ui, |ui| map::map_ui(ui, model, view, &theme, now));
    shift::confirm_ui(ui.ctx(), model, view, &theme, commands);
    shift::plan_confirm_ui(ui.ctx(), model, view, &theme, commands);
    if view.help_open {
        help::help_ui(ui.ctx(), view, &theme);
    }
}

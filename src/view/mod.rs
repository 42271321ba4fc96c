//! egui only: reads `&Model`, edits its own [`ViewState`], emits [`Command`]s. No I/O.

pub mod audit;
pub mod bars;
pub mod charts;
pub mod demo_panel;
pub mod group;
pub mod help;
pub mod layout;
pub mod map;
pub mod paint;
pub mod panel;
mod roads;
pub mod shift;
mod stations;
pub mod tape;
pub mod theme;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::io::Command;
use crate::model::Model;
use crate::model::types::{LaneKey, WeightHundredths};
use group::Grouping;
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
    /// Particles keep moving while the window does not have the focus.
    pub particles_unfocused: bool,
    /// Particles stop after this many seconds without input (0 = they never stop).
    pub particles_idle_secs: u32,
    /// While the operator is away (see [`operator_away`]), data redraws at most this often,
    /// in seconds (1 = every second, as when someone is there).
    pub away_refresh_secs: u32,
    /// Semantic zoom: grouping, expanded groups, the grouped map's slots and camera.
    pub groups: GroupView,
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
    /// What the map remembers between frames (input times, the last filter).
    #[serde(skip)]
    pub map_runtime: MapRuntime,
}

/// Semantic zoom (see [`group`]): how services are grouped, which groups the operator
/// opened, and the grouped map's own kept slots, pins and camera (the two maps are laid
/// out apart, so switching never moves a station of either).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupView {
    /// Off, auto (large meshes) or always by name prefix.
    pub mode: Grouping,
    /// Groups drawn as their members (keys such as `payments-*`).
    pub expanded: BTreeSet<String>,
    /// Kept slots of the grouped map (groups and the services drawn on their own).
    pub placement: Placement,
    /// Stations dragged on the grouped map: world centre per key.
    pub pins: BTreeMap<String, [f32; 2]>,
    /// Pan / zoom of the grouped map; `None` = fit on the next frame.
    pub camera: Option<Camera>,
    /// Whether the last frame drew the grouped map.
    #[serde(skip)]
    pub active: bool,
    /// The selected group node, if any.
    #[serde(skip)]
    pub selected: Option<String>,
    /// A group just expanded: bring its members into view if none is on screen.
    #[serde(skip)]
    pub reveal: Option<String>,
}

impl GroupView {
    /// Expands a collapsed group or collapses an expanded one.
    pub fn toggle(&mut self, key: &str) {
        if !self.expanded.remove(key) {
            self.expanded.insert(key.to_owned());
            self.reveal = Some(key.to_owned());
        }
    }
}

/// Per-run memory of the map (never persisted).
#[derive(Debug, Clone, Default)]
pub struct MapRuntime {
    /// egui time (s) of the last input event or pointer move.
    pub last_input_secs: Option<f64>,
    /// Particle clock (s): follows egui time while particles move, stands still otherwise.
    pub particle_secs: f64,
    /// The filter text of the previous frame (a new filter brings its matches into view).
    pub last_filter: String,
    /// Whether the last frame asked for a repaint to move particles.
    pub particles_moving: bool,
    /// Benchmark peer: draw the map's geometry as individual egui shapes, not meshes.
    pub individual_shapes: bool,
    /// Vertices and indices of the road and station meshes last frame (this frame's
    /// capacity).
    pub mesh_sizes: [(usize, usize); 2],
    /// The services the operator can see (on screen, alone or inside a group node), has
    /// pinned or selected, sorted; see [`MapRuntime::take_focus_change`].
    pub focus: Vec<String>,
    /// Fingerprint of `focus`, to notice a change without rebuilding it every frame.
    pub focus_hash: u64,
    /// `focus` changed since [`MapRuntime::take_focus_change`] last took it.
    pub focus_changed: bool,
    /// Screen length of the lanes that could carry particles last frame (points).
    pub particle_len: f32,
    /// Who placed the camera last: a fit the operator has not moved since is refitted when
    /// stations join.
    pub camera_by: CameraBy,
    /// How many groups were expanded last frame (an expansion never refits the camera).
    pub expanded_seen: usize,
}

/// Who placed the map's camera last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CameraBy {
    /// The operator panned or zoomed (or a restored view).
    #[default]
    Operator,
    /// A fit.
    Fit,
}

impl MapRuntime {
    /// The set of services in view, once each time it changes (for the io layer, which
    /// scrapes those sidecars at the normal pace and the others less often).
    pub fn take_focus_change(&mut self) -> Option<Vec<String>> {
        std::mem::take(&mut self.focus_changed).then(|| self.focus.clone())
    }
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
            particles_unfocused: false,
            particles_idle_secs: 60,
            away_refresh_secs: 2,
            groups: GroupView::default(),
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
            map_runtime: MapRuntime::default(),
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

    /// Selects a service (and forgets a lane of another service, and a selected group).
    pub fn select(&mut self, service: Option<String>) {
        if self.selected_lane.as_ref().map(|l| &l.service) != service.as_ref() {
            self.selected_lane = None;
        }
        self.selected = service;
        self.groups.selected = None;
    }

    /// Selects a group node (and no service).
    pub fn select_group(&mut self, key: Option<String>) {
        self.select(None);
        self.groups.selected = key;
    }

    /// Fits the map on screen on the next frame (`f`).
    pub fn refit(&mut self) {
        if self.groups.active {
            self.groups.camera = None;
        } else {
            self.camera = None;
        }
    }

    /// `e`: expands the selected group, or collapses the expanded group of the selected
    /// service (and selects the group).
    pub fn toggle_selected_group(&mut self) {
        if let Some(key) = self.groups.selected.clone() {
            self.groups.toggle(&key);
        } else if let Some(key) = self
            .selected
            .as_deref()
            .and_then(group::prefix_of)
            .map(group::group_key)
            .filter(|k| self.groups.expanded.contains(k))
        {
            self.groups.toggle(&key);
            self.select_group(Some(key));
        }
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
    (
        "e",
        "expand the selected group / collapse the selected service's group",
    ),
    (
        "double-click",
        "group: expand · expanded group's outline: collapse",
    ),
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

/// Whether the operator is away: the window is not focused, or nothing was touched for
/// `particles_idle_secs` (0 = never away by time; the map keeps the input clock). Away,
/// particles stop and data redraws every `away_refresh_secs`.
#[must_use]
pub fn operator_away(ctx: &egui::Context, view: &ViewState) -> bool {
    let (time, focused) = ctx.input(|i| (i.time, i.viewport().focused.unwrap_or(true)));
    let idle_secs = view
        .map_runtime
        .last_input_secs
        .map_or(0.0, |last| time - last);
    !focused || (view.particles_idle_secs > 0 && idle_secs >= f64::from(view.particles_idle_secs))
}

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
            'f' => view.refit(),
            'e' => view.toggle_selected_group(),
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
            view.select_group(None);
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

//! The eframe app: `logic()` drains io events into the model, `ui()` draws and sends the
//! commands the view emitted, `save()` persists the view state.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::io::{Command, IoEvent, IoHandle, IoTasks};
use crate::model::Model;
use crate::view::{ViewState, root_ui};

/// Storage key of the persisted view state.
const VIEW_KEY: &str = "spine-dash.view";
/// Most time `logic()` spends draining events in one frame.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// The dashboard.
pub struct SpineApp {
    model: Model,
    view: ViewState,
    events: Option<mpsc::Receiver<IoEvent>>,
    commands: mpsc::Sender<Command>,
    /// The model as it was when the operator paused the display (collection goes on).
    frozen: Option<(Model, Instant)>,
    /// A fixed clock (image snapshots); `None` = the real one.
    clock: Option<Instant>,
    /// Keeps the io tasks alive while the app runs.
    _io: Option<IoTasks>,
}

impl SpineApp {
    /// An app fed by the io layer. Takes the view state persisted by eframe, if any.
    #[must_use]
    pub fn new(model: Model, io: IoHandle, storage: Option<&dyn eframe::Storage>) -> Self {
        let view = storage
            .and_then(|s| eframe::get_value(s, VIEW_KEY))
            .unwrap_or_default();
        let IoHandle {
            events,
            commands,
            tasks,
        } = io;
        Self {
            model,
            view,
            events: Some(events),
            commands,
            frozen: None,
            clock: None,
            _io: Some(tasks),
        }
    }

    /// An app on given channels, without io tasks (UI tests feed events and read commands).
    #[must_use]
    pub fn with_channels(
        model: Model,
        events: mpsc::Receiver<IoEvent>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            model,
            view: ViewState::default(),
            events: Some(events),
            commands,
            frozen: None,
            clock: None,
            _io: None,
        }
    }

    /// The model (for tests).
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The selected service, if any.
    #[must_use]
    pub fn selected(&self) -> Option<&str> {
        self.view.selected.as_deref()
    }

    /// Draws as if it were always `at` (image snapshots: ages and freshness stay put).
    pub fn set_clock(&mut self, at: Instant) {
        self.clock = Some(at);
    }

    /// The view state (for tests).
    pub fn view_mut(&mut self) -> &mut ViewState {
        &mut self.view
    }

    /// Drains pending events into the model within a time budget; `true` if some are left.
    pub fn drain_events(&mut self) -> bool {
        let Some(rx) = self.events.as_mut() else {
            return false;
        };
        let start = Instant::now();
        while start.elapsed() < DRAIN_BUDGET {
            match rx.try_recv() {
                Ok(event) => self.model.apply(event, Instant::now()),
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.events = None;
                    return false;
                }
            }
        }
        true
    }

    /// Draws everything into `ui` and sends the commands the view emitted.
    pub fn ui_root(&mut self, ui: &mut egui::Ui) {
        let mut out = Vec::new();
        let now = self.clock.unwrap_or_else(Instant::now);
        match (&self.frozen, self.view.paused) {
            (None, true) => self.frozen = Some((self.model.clone(), now)),
            (Some(_), false) => self.frozen = None,
            _ => {}
        }
        // Paused: the model and the clock as they were, so nothing ages on screen.
        let (shown, at) = self
            .frozen
            .as_ref()
            .map_or((&self.model, now), |(m, t)| (m, *t));
        root_ui(ui, shown, &mut self.view, &mut out, at);
        for command in out {
            if let Command::SetSplit { service, split, .. } = &command {
                self.model.mark_write_pending(service, split.clone());
            }
            if let Err(e) = self.commands.try_send(command) {
                tracing::error!("command not sent: {e}");
            }
        }
    }
}

impl eframe::App for SpineApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if self.drain_events() {
            ctx.request_repaint();
        }
        // Ages in the status bar tick; nothing else repaints without an event.
        ctx.request_repaint_after(Duration::from_secs(1));
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.ui_root(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, VIEW_KEY, &self.view);
    }
}

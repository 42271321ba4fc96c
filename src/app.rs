//! The eframe app: `logic()` drains io events into the model, `ui()` draws and sends the
//! commands the view emitted, `save()` persists the view state. A context switch
//! ([`Command::SwitchContext`]) is handled here: the new context's client, io tasks and
//! model are prepared on the tokio runtime; when ready they replace the old ones (whose
//! tasks are aborted and demo spine shut down); if that fails the old ones stay and the
//! error is a notice.
//!
//! Frames: io events wake the window through [`FramePacer`]. While the operator is there,
//! a wake repaints at once and the status bar's ages tick every second; while they are
//! away ([`crate::view::operator_away`]: unfocused, or no input for a minute), data
//! redraws at most every `away_refresh_secs` (2 s by default) and each of those frames
//! takes in more events, so an idle window costs a frame every few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::demo::DemoSpine;
use crate::io::{Command, IoEvent, IoHandle, IoTasks, Wake};
use crate::launch::{Launch, Switcher};
use crate::model::Model;
use crate::view::{ViewState, root_ui};

/// Storage key of the persisted view state.
const VIEW_KEY: &str = "spine-dash.view";
/// Most time `logic()` spends draining events in one frame.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);
/// …and while the operator is away (fewer frames, each takes in more).
const AWAY_DRAIN_BUDGET: Duration = Duration::from_millis(40);
/// Shortest delay between an io wake and its repaint (wakes close together make one frame).
const WAKE_DELAY: Duration = Duration::from_millis(10);

/// Paces the repaints io events ask for: shared by the io layer's wake callback (any
/// thread) and the app, which tells it after each frame how long data may wait.
#[derive(Debug)]
pub struct FramePacer {
    origin: Instant,
    /// The last frame, in ms since `origin`.
    last_frame_ms: AtomicU64,
    /// How long after the last frame a wake may repaint, in ms.
    gap_ms: AtomicU64,
}

impl FramePacer {
    /// A pacer that lets every wake repaint at once (until the app says otherwise).
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            gap_ms: AtomicU64::new(0),
        })
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long a wake at `now` waits before its repaint: [`WAKE_DELAY`], or until the gap
    /// after the last frame is over.
    #[must_use]
    pub fn wake_delay(&self, now: Instant) -> Duration {
        let due = self.last_frame_ms.load(Ordering::Relaxed) + self.gap_ms.load(Ordering::Relaxed);
        Duration::from_millis(due.saturating_sub(self.ms(now))).max(WAKE_DELAY)
    }

    /// A frame ran at `now`; wakes until `now + gap` wait for its end.
    pub fn frame(&self, now: Instant, gap: Duration) {
        self.last_frame_ms.store(self.ms(now), Ordering::Relaxed);
        self.gap_ms.store(
            u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

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
    io_tasks: Option<IoTasks>,
    /// Context switching, when the app was started from a config file.
    switching: Option<SwitchState>,
    /// Paces the io layer's wakes (the window; tests drive frames themselves).
    pacer: Option<Arc<FramePacer>>,
}

/// What a finished switch hands over: the new model, io and demo spine.
type Switched = Result<(Model, IoHandle, Option<DemoSpine>), String>;

/// How to switch context, and a switch under way.
struct SwitchState {
    switcher: Switcher,
    wake: Wake,
    /// The demo spine of the running context (shut down when switching away).
    demo: Option<DemoSpine>,
    /// The context being prepared, and where its parts will arrive.
    pending: Option<(String, oneshot::Receiver<Switched>)>,
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
            io_tasks: Some(tasks),
            switching: None,
            pacer: None,
        }
    }

    /// Lets the app pace the repaints its io layer's wake callback asks for.
    #[must_use]
    pub fn with_pacer(mut self, pacer: Arc<FramePacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Lets the operator switch to another context of the config file (`switcher`);
    /// `demo` is the running context's demo spine, `wake` the io layer's wake callback.
    #[must_use]
    pub fn with_switcher(
        mut self,
        switcher: Switcher,
        demo: Option<DemoSpine>,
        wake: Wake,
    ) -> Self {
        self.switching = Some(SwitchState {
            switcher,
            wake,
            demo,
            pending: None,
        });
        self
    }

    /// Starts switching to context `name` (resolved as `--context NAME` with the other
    /// flags of the start; the environment is read again). Needs a tokio runtime; the
    /// outcome arrives through [`SpineApp::poll_switch`]. A failure is a notice.
    pub fn switch_context(&mut self, name: &str) {
        let now = Instant::now();
        let Some(state) = self.switching.as_mut() else {
            self.model.push_notice(
                now,
                true,
                format!("no config file to switch from: restart with spine-dash --context {name}"),
            );
            return;
        };
        if self.model.context.as_deref() == Some(name) || state.pending.is_some() {
            return;
        }
        let resolved = match state.switcher.resolve(name) {
            Ok(r) => r,
            Err(e) => {
                self.model
                    .push_notice(now, true, format!("context {name}: {e}"));
                return;
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.model
                .push_notice(now, true, format!("context {name}: no tokio runtime"));
            return;
        };
        let (tx, rx) = oneshot::channel();
        let known = state.switcher.file.names();
        let wake = state.wake.clone();
        runtime.spawn(async move {
            let result = match Launch::prepare(&resolved, known, None).await {
                Ok(launch) => {
                    let (mut model, io, demo) = launch.spawn(&wake);
                    for note in &resolved.notes {
                        model.push_notice(Instant::now(), false, note.clone());
                    }
                    Ok((model, io, demo))
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
            wake();
        });
        tracing::info!("switching to context {name}");
        self.model
            .push_notice(now, false, format!("switching to context {name}…"));
        state.pending = Some((name.to_owned(), rx));
    }

    /// Takes over a finished switch: the new model and io tasks replace the old ones (the
    /// old tasks are aborted, the old demo spine shut down). `true` if something changed.
    pub fn poll_switch(&mut self) -> bool {
        let Some(state) = self.switching.as_mut() else {
            return false;
        };
        let Some((name, rx)) = state.pending.as_mut() else {
            return false;
        };
        let result = match rx.try_recv() {
            Ok(result) => result,
            Err(oneshot::error::TryRecvError::Empty) => return false,
            Err(oneshot::error::TryRecvError::Closed) => Err("the switch was abandoned".into()),
        };
        let name = name.clone();
        state.pending = None;
        match result {
            Ok((model, io, demo)) => {
                tracing::info!(
                    "context {name}: {} at {}",
                    model.registry.kind.as_str(),
                    model.registry.address
                );
                let IoHandle {
                    events,
                    commands,
                    tasks,
                } = io;
                // Dropping the old tasks aborts them; then the old demo spine goes.
                self.io_tasks = Some(tasks);
                if let Some(old) = std::mem::replace(&mut state.demo, demo) {
                    old.shutdown();
                }
                self.model = model;
                self.events = Some(events);
                self.commands = commands;
                self.frozen = None;
            }
            Err(e) => {
                tracing::warn!("context {name}: {e}");
                self.model
                    .push_notice(Instant::now(), true, format!("context {name}: {e}"));
            }
        }
        true
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
            io_tasks: None,
            switching: None,
            pacer: None,
        }
    }

    /// Events waiting in the io channel (soak tests watch that it stays short).
    #[must_use]
    pub fn queued_events(&self) -> usize {
        self.events.as_ref().map_or(0, mpsc::Receiver::len)
    }

    /// The model (for tests).
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, to change (tests and snapshots set up states with it).
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
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

    /// Drains pending events into the model within a time budget, as one batch (the
    /// lanes they touched are refreshed once, at the end); `true` if some are left.
    pub fn drain_events(&mut self) -> bool {
        self.drain_events_within(DRAIN_BUDGET)
    }

    fn drain_events_within(&mut self, budget: Duration) -> bool {
        let Some(rx) = self.events.as_mut() else {
            return false;
        };
        let start = Instant::now();
        let mut left = true;
        while start.elapsed() < budget {
            match rx.try_recv() {
                Ok(event) => self.model.apply_deferred(event, Instant::now()),
                Err(mpsc::error::TryRecvError::Empty) => {
                    left = false;
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.events = None;
                    left = false;
                    break;
                }
            }
        }
        self.model.finish_batch(Instant::now());
        left
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
        // The services in view: the io layer scrapes their sidecars at the normal pace.
        if let Some(services) = self.view.map_runtime.take_focus_change() {
            out.push(Command::Focus { services });
        }
        self.send(out, now);
    }

    /// Sends the view's commands to the io layer; context switches and plan controls are
    /// handled here (plans then emit writes of their own).
    fn send(&mut self, commands: Vec<Command>, now: Instant) {
        for command in commands {
            match command {
                Command::SwitchContext(name) => self.switch_context(&name),
                Command::Plan { service, control } => {
                    let more = self.model.plan_control(&service, &control, now);
                    self.send(more, now);
                }
                command => {
                    if let Command::SetSplit(w) = &command {
                        self.model.mark_write_pending(&w.service, w.after.clone());
                    }
                    if let Err(e) = self.commands.try_send(command) {
                        tracing::error!("command not sent: {e}");
                        self.model
                            .push_notice(now, true, format!("command not sent: {e}"));
                    }
                }
            }
        }
    }

    /// Advances the rollout plans on the live model (also while the display is paused)
    /// and sends their writes; `true` if a plan is running (it needs the clock).
    pub fn tick_plans(&mut self) -> bool {
        let now = self.clock.unwrap_or_else(Instant::now);
        let commands = self.model.tick_plans(now);
        self.send(commands, now);
        self.model
            .shifting
            .plans
            .values()
            .any(crate::model::plan::Plan::is_active)
    }
}

impl eframe::App for SpineApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let away = crate::view::operator_away(ctx, &self.view);
        let refresh = if away {
            Duration::from_secs(u64::from(self.view.away_refresh_secs.max(1)))
        } else {
            Duration::from_secs(1)
        };
        if let Some(pacer) = &self.pacer {
            pacer.frame(Instant::now(), if away { refresh } else { Duration::ZERO });
        }
        let switched = self.poll_switch();
        let budget = if away {
            AWAY_DRAIN_BUDGET
        } else {
            DRAIN_BUDGET
        };
        // Events left over: at once while someone watches, with the next frame when away.
        let left = self.drain_events_within(budget);
        if (left && !away) || switched {
            ctx.request_repaint();
        }
        if self.tick_plans() {
            // A hold counts down on screen; guards are checked at least this often.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
        // Ages in the status bar tick; nothing else repaints without an event.
        ctx.request_repaint_after(refresh);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.ui_root(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, VIEW_KEY, &self.view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_repaint_at_once_until_the_app_asks_for_a_gap() {
        let pacer = FramePacer::new();
        let t0 = pacer.origin + Duration::from_secs(5);
        assert_eq!(pacer.wake_delay(t0), WAKE_DELAY);
        // Someone watching: no gap.
        pacer.frame(t0, Duration::ZERO);
        assert_eq!(pacer.wake_delay(t0 + Duration::from_millis(1)), WAKE_DELAY);
        // Away: a wake waits for the end of the gap after the last frame…
        pacer.frame(t0, Duration::from_secs(2));
        let at = t0 + Duration::from_millis(500);
        assert_eq!(pacer.wake_delay(at), Duration::from_millis(1500));
        // …and after it, repaints at once again.
        assert_eq!(pacer.wake_delay(t0 + Duration::from_secs(3)), WAKE_DELAY);
        // Back: the next frame lifts the gap.
        pacer.frame(at, Duration::ZERO);
        assert_eq!(pacer.wake_delay(at), WAKE_DELAY);
    }
}

//! The real app (`SpineApp` on real io tasks) in an `egui_kittest` harness, stepped like a
//! window at ~60 frames per second on the test thread while tokio runs the io on its own
//! threads: the outage and soak tests count frames, time each one, and watch the
//! registry's failed attempts as the model receives them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use spine_dash::app::SpineApp;
use spine_dash::model::Model;

/// Frame period aimed at (a 60 Hz display).
pub const FRAME: Duration = Duration::from_millis(16);

/// The app in a harness, with what was measured while stepping it.
pub struct AppRun {
    pub h: Harness<'static, SpineApp>,
    /// Frames stepped since the last [`AppRun::reset_counters`].
    pub frames: u64,
    /// Longest frame (the whole `step`: drain events, plans, draw) since then.
    pub longest: Duration,
    /// When each failed registry attempt arrived (the event's `at`), in order.
    pub failures: Vec<Instant>,
    /// Most failed attempts that arrived between two frames (1 = one at a time).
    pub max_burst: u32,
    /// Most io events waiting at the start of a frame.
    pub max_queue: usize,
    last_failures: u32,
    next_frame: Instant,
}

impl AppRun {
    pub fn new(app: SpineApp) -> Self {
        let h = Harness::builder()
            .with_size(egui::vec2(1280.0, 800.0))
            .build_ui_state(
                |ui, app: &mut SpineApp| {
                    // What `eframe::App::logic` does each frame, then `ui`.
                    app.poll_switch();
                    app.drain_events();
                    app.tick_plans();
                    app.ui_root(ui);
                },
                app,
            );
        Self {
            h,
            frames: 0,
            longest: Duration::ZERO,
            failures: Vec::new(),
            max_burst: 0,
            max_queue: 0,
            last_failures: 0,
            next_frame: Instant::now(),
        }
    }

    pub fn model(&self) -> &Model {
        self.h.state().model()
    }

    /// One frame, then sleeps until the next one is due.
    pub fn frame(&mut self) {
        self.max_queue = self.max_queue.max(self.h.state().queued_events());
        let start = Instant::now();
        self.h.step();
        let took = start.elapsed();
        self.frames += 1;
        self.longest = self.longest.max(took);
        let status = &self.h.state().model().registry_status;
        let n = status.consecutive_failures;
        if n > self.last_failures {
            self.max_burst = self.max_burst.max(n - self.last_failures);
            if let Some(at) = status.last_attempt {
                self.failures.push(at);
            }
        }
        self.last_failures = n;
        self.next_frame += FRAME;
        let now = Instant::now();
        if self.next_frame > now {
            std::thread::sleep(self.next_frame - now);
        } else {
            self.next_frame = now;
        }
    }

    /// Steps frames until `done` (checked after each), at most `deadline`; the time it took.
    pub fn until(
        &mut self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&Model, Instant) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            self.frame();
            if done(self.model(), Instant::now()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < deadline,
                "{what}: not within {deadline:?}; registry: {:?}",
                self.model().registry_status
            );
        }
    }

    /// Steps frames for `d`, calling `each` after every frame.
    pub fn run_for(&mut self, d: Duration, mut each: impl FnMut(&mut Self)) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.frame();
            each(self);
        }
    }

    pub fn reset_counters(&mut self) {
        self.frames = 0;
        self.longest = Duration::ZERO;
        self.failures.clear();
        self.max_burst = 0;
        self.max_queue = 0;
    }

    /// Whether a widget's label contains `text` (what the operator sees).
    pub fn shows(&self, text: &str) -> bool {
        self.h.query_by_label_contains(text).is_some()
    }
}

/// Gaps between consecutive instants.
pub fn gaps(at: &[Instant]) -> Vec<Duration> {
    at.windows(2).map(|w| w[1].duration_since(w[0])).collect()
}

/// Median and maximum of `d` (zero when empty).
pub fn median_max(d: &[Duration]) -> (Duration, Duration) {
    let mut v = d.to_vec();
    v.sort();
    let median = v.get(v.len() / 2).copied().unwrap_or_default();
    (median, v.last().copied().unwrap_or_default())
}

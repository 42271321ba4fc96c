//! The breaker tape: every transition of a lane's breaker state (`closed`, `saturated`,
//! `ejecting n of m`, `open`), with when, from → to, and the numbers behind it.
//!
//! Rules:
//! - A change of n (or m) in `ejecting n of m` is a transition.
//! - "No data" is not a state: a lane whose callers go stale keeps its last known state,
//!   and when data returns in another state that is a transition from the last known one.
//! - First sighting: a lane first seen `closed` is not recorded; a lane first seen in a
//!   worse state (the dashboard started while `photo` was `open`) is recorded with
//!   `from: None`. Neither is a trip.
//! - A trip is a transition from `closed` to anything worse; [`Model::last_trip`] says
//!   when the last one happened (the map flashes once).
//! - The tape is bounded ([`TAPE_CAPACITY`], oldest dropped). A lane's last known state
//!   and last trip are forgotten together with its history (1 h without data).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

use super::Model;
use super::types::{BreakerState, LaneKey};
use crate::metrics::{LaneWindow, WindowStats};

/// How many transitions the tape keeps.
pub const TAPE_CAPACITY: usize = 1000;

/// One breaker transition of one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeEntry {
    /// When the data showing the new state was taken (end of the lane's window).
    pub at: Instant,
    /// Wall-clock time of `at`, for display.
    pub wall: SystemTime,
    /// The lane.
    pub lane: LaneKey,
    /// The previous known state; `None` when the lane is first seen in a non-closed state.
    pub from: Option<BreakerState>,
    /// The new state.
    pub to: BreakerState,
    /// The numbers behind it, e.g. `2 of 3 hosts ejected · 5xx 48.0 % · 12.0 rps`.
    pub detail: String,
}

/// The tape and the per-lane state needed to extend it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tape {
    entries: VecDeque<TapeEntry>,
    last_state: BTreeMap<LaneKey, BreakerState>,
    last_trip: BTreeMap<LaneKey, Instant>,
}

impl Tape {
    fn push(&mut self, entry: TapeEntry) {
        if self.entries.len() >= TAPE_CAPACITY {
            self.entries.pop_front();
        }
        if entry.from == Some(BreakerState::Closed) && entry.to != BreakerState::Closed {
            self.last_trip.insert(entry.lane.clone(), entry.at);
        }
        self.entries.push_back(entry);
    }
}

/// The numbers behind a breaker state: hosts, overflows, 5xx share, rate, p99.
#[must_use]
pub fn breaker_detail(stats: &WindowStats, window: Option<&LaneWindow>) -> String {
    let mut parts: Vec<String> = Vec::new();
    match stats.breaker {
        BreakerState::Closed => {}
        BreakerState::Ejecting { ejected, total } => {
            parts.push(format!("{ejected} of {total} hosts ejected"));
        }
        BreakerState::Open => parts.push("no healthy host".into()),
        BreakerState::Saturated => match window {
            Some(w) if w.overflow > 0.0 => parts.push(format!(
                "{:.0} overflows ({:.1}/s refused)",
                w.overflow, w.pending_overflow_per_s
            )),
            _ => parts.push("a circuit-breaker gauge is open".into()),
        },
    }
    let mut numbers = String::new();
    match stats.err5xx_ratio {
        Some(r) => {
            let _ = write!(numbers, "5xx {:.1} % · {:.1} rps", r * 100.0, stats.rps);
        }
        None => numbers.push_str("no requests"),
    }
    if let Some(p99) = stats.p99_ms {
        let _ = write!(numbers, " · p99 {p99:.1} ms");
    }
    parts.push(numbers);
    parts.join(" · ")
}

impl Model {
    /// Breaker transitions, oldest first.
    #[must_use]
    pub fn tape(&self) -> &VecDeque<TapeEntry> {
        &self.tape.entries
    }

    /// When the lane last went from `closed` to something worse.
    #[must_use]
    pub fn last_trip(&self, lane: &LaneKey) -> Option<Instant> {
        self.tape.last_trip.get(lane).copied()
    }

    /// Appends the transitions this update shows (see module docs). Runs after
    /// `record_history`; when that forgot lanes, their last states and trips go too.
    pub(super) fn record_tape(&mut self, now: Instant, wall: SystemTime, forgot_lanes: bool) {
        // Lanes and their last known states side by side (both sorted by key).
        let mut entries: Vec<TapeEntry> = Vec::new();
        let mut first_seen: Vec<(LaneKey, BreakerState)> = Vec::new();
        let mut known_iter = self.tape.last_state.iter_mut().peekable();
        for (key, lane) in &self.lanes {
            let Some(stats) = &lane.stats else {
                continue; // no data: not a state
            };
            let to = stats.breaker;
            while known_iter.next_if(|(k, _)| *k < key).is_some() {}
            let from = match known_iter.next_if(|(k, _)| *k == key) {
                Some((_, known)) if *known == to => continue,
                Some((_, known)) => Some(std::mem::replace(known, to)),
                None => {
                    first_seen.push((key.clone(), to));
                    if to == BreakerState::Closed {
                        continue; // first seen closed: nothing to tell
                    }
                    None
                }
            };
            let at = lane.updated_at.unwrap_or(now).min(now);
            let entry_wall = wall.checked_sub(now.duration_since(at)).unwrap_or(wall);
            entries.push(TapeEntry {
                at,
                wall: entry_wall,
                lane: key.clone(),
                from,
                to,
                detail: breaker_detail(stats, lane.window.as_ref()),
            });
        }
        self.tape.last_state.extend(first_seen);
        for entry in entries {
            self.tape.push(entry);
        }
        if forgot_lanes {
            let history = &self.history;
            self.tape
                .last_state
                .retain(|k, _| history.lane(k).is_some());
            self.tape.last_trip.retain(|k, _| history.lane(k).is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LaneState;
    use crate::model::tests_support::{lane_key, stats_window, test_model};
    use std::time::Duration;

    fn set_lane(m: &mut Model, key: &LaneKey, at: Instant, breaker: Option<BreakerState>) {
        let window = breaker.map(|b| LaneWindow {
            breaker: b,
            ..stats_window(12.0, 6.0, 10.0)
        });
        m.lanes.insert(
            key.clone(),
            LaneState {
                key: key.clone(),
                stats: window.as_ref().map(LaneWindow::stats),
                updated_at: window.as_ref().map(|_| at),
                window,
            },
        );
        m.lanes_updated(at, m.wall_at(at));
    }

    #[test]
    fn transitions_are_recorded_with_their_numbers() {
        let mut m = test_model();
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        m.set_clock_anchor(t0, wall0);
        let photo = lane_key("gateway", "photo", "v1");
        let sec = |n: u32| t0 + Duration::from_secs(1) * n;
        let ej = |ejected| BreakerState::Ejecting { ejected, total: 3 };

        set_lane(&mut m, &photo, sec(0), Some(BreakerState::Closed)); // first sighting: quiet
        set_lane(&mut m, &photo, sec(1), Some(BreakerState::Closed));
        set_lane(&mut m, &photo, sec(2), Some(ej(1))); // trip
        set_lane(&mut m, &photo, sec(3), Some(ej(2))); // n changed
        set_lane(&mut m, &photo, sec(4), None); // no data: not a state
        set_lane(&mut m, &photo, sec(5), Some(BreakerState::Open)); // from the last known
        set_lane(&mut m, &photo, sec(6), Some(BreakerState::Open));
        set_lane(&mut m, &photo, sec(7), Some(BreakerState::Closed));

        let entry = |n: u32, from, to, detail: &str| TapeEntry {
            at: sec(n),
            wall: wall0 + Duration::from_secs(n.into()),
            lane: photo.clone(),
            from,
            to,
            detail: detail.into(),
        };
        let numbers = "5xx 50.0 % · 12.0 rps · p99 9.9 ms";
        assert_eq!(
            m.tape().iter().cloned().collect::<Vec<_>>(),
            vec![
                entry(
                    2,
                    Some(BreakerState::Closed),
                    ej(1),
                    &format!("1 of 3 hosts ejected · {numbers}")
                ),
                entry(
                    3,
                    Some(ej(1)),
                    ej(2),
                    &format!("2 of 3 hosts ejected · {numbers}")
                ),
                entry(
                    5,
                    Some(ej(2)),
                    BreakerState::Open,
                    &format!("no healthy host · {numbers}")
                ),
                entry(7, Some(BreakerState::Open), BreakerState::Closed, numbers),
            ]
        );
        assert_eq!(m.last_trip(&photo), Some(sec(2)));
    }

    #[test]
    fn first_sighting_in_a_bad_state_is_recorded_but_is_no_trip() {
        let mut m = test_model();
        let t0 = Instant::now();
        let lane = lane_key("gateway", "payment", "v1");
        set_lane(&mut m, &lane, t0, Some(BreakerState::Saturated));
        assert_eq!(m.tape().len(), 1);
        assert_eq!(m.tape()[0].from, None);
        assert_eq!(m.tape()[0].to, BreakerState::Saturated);
        assert_eq!(
            m.tape()[0].detail,
            "a circuit-breaker gauge is open · 5xx 50.0 % · 12.0 rps · p99 9.9 ms"
        );
        assert_eq!(m.last_trip(&lane), None);
    }

    #[test]
    fn saturated_detail_counts_overflows() {
        let w = LaneWindow {
            overflow: 37.0,
            pending_overflow_per_s: 3.7,
            breaker: BreakerState::Saturated,
            ..LaneWindow::default()
        };
        assert_eq!(
            breaker_detail(&w.stats(), Some(&w)),
            "37 overflows (3.7/s refused) · no requests"
        );
    }

    #[test]
    fn tape_is_bounded_oldest_dropped() {
        let mut m = test_model();
        let t0 = Instant::now();
        let lane = lane_key("gateway", "photo", "v1");
        let states = [BreakerState::Closed, BreakerState::Saturated];
        for i in 0..=TAPE_CAPACITY + 10 {
            let at = t0 + Duration::from_millis(10) * u32::try_from(i).unwrap();
            set_lane(&mut m, &lane, at, Some(states[i % 2]));
        }
        assert_eq!(m.tape().len(), TAPE_CAPACITY);
        // Entry i (1-based transitions) is at 10 ms · i; the first 10 were dropped.
        assert_eq!(m.tape()[0].at, t0 + Duration::from_millis(110));
        assert_eq!(
            m.tape().back().map(|e| e.at),
            Some(t0 + Duration::from_millis(10 * (TAPE_CAPACITY as u64 + 10)))
        );
    }
}

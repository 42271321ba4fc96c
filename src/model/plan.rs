//! Rollout plans: a list of splits (e.g. 95/5 → 80/20 → 50/50 → 0/100), each held for a
//! while. Each step is written with compare-and-set after the guard rails; once the
//! registry shows it, the hold starts and guards watch the target version: 5xx % over a
//! limit, p99 over a limit or over the old version's by a factor, a breaker open, an
//! instance gone critical. A tripped guard writes the last good split back (CAS again),
//! pauses the plan and says why with the numbers. Start / pause / resume / abort /
//! skip-to-step. Pure: [`Plan::tick`] reads the model and returns the writes to send.

use std::time::{Duration, Instant};

use super::Model;
use super::guard;
use super::split_text;
use super::types::{BreakerState, FULL_WEIGHT, Split, WeightHundredths};
use crate::io::{SplitWrite, WriteOrigin};
use crate::registry::WriteOutcome;

/// Limits the guards hold the target version to during a hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuardLimits {
    /// Trip when the target's 5xx share exceeds this (percent).
    pub max_5xx_pct: Option<f64>,
    /// Trip when the target's p99 exceeds this (ms).
    pub max_p99_ms: Option<f64>,
    /// Trip when the target's p99 exceeds the old version's times this factor.
    pub max_p99_factor: Option<f64>,
    /// Trip when a breaker into the target is open.
    pub breaker_open: bool,
    /// Trip when more target instances are critical than when the hold began.
    pub critical: bool,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max_5xx_pct: Some(5.0),
            max_p99_ms: None,
            max_p99_factor: Some(3.0),
            breaker_open: true,
            critical: true,
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// The split to write.
    pub split: Split,
    /// How long to hold it with the guards watching before the next step.
    pub hold: Duration,
}

/// What the operator asks a plan to do.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanControl {
    /// Start a new plan (replacing a finished one).
    Start {
        /// The steps.
        steps: Vec<PlanStep>,
        /// The guards.
        limits: GuardLimits,
    },
    /// Stop advancing (the current split stays).
    Pause,
    /// Go on from where it paused (writes the step again if the registry does not show it).
    Resume,
    /// Give up: the current split stays; undo is there to go back.
    Abort,
    /// Write step `n` (0-based) now and hold it.
    SkipTo(usize),
}

/// Where a plan is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The step's write was sent; waiting for its outcome.
    Writing {
        /// Step index.
        step: usize,
    },
    /// Written; waiting until the registry shows it.
    Settling {
        /// Step index.
        step: usize,
    },
    /// Held since `since`, guards watching.
    Holding {
        /// Step index.
        step: usize,
        /// When the hold began.
        since: Instant,
    },
    /// A guard tripped; the revert write was sent.
    Reverting {
        /// The step that failed.
        step: usize,
        /// Why, with the numbers.
        reason: String,
    },
    /// Stopped at `step` (resume writes or holds it).
    Paused {
        /// Step to resume.
        step: usize,
        /// Why.
        reason: String,
    },
    /// Every step held.
    Done,
    /// Aborted by the operator.
    Aborted,
}

/// One line of a plan's own log (inspector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEvent {
    /// When.
    pub at: Instant,
    /// What happened.
    pub text: String,
    /// Whether it is bad news.
    pub is_error: bool,
}

/// A rollout plan of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Service name.
    pub service: String,
    /// Steps in order.
    pub steps: Vec<PlanStep>,
    /// Guard limits.
    pub limits: GuardLimits,
    /// The version that gains traffic: the guards watch it.
    pub target: String,
    /// The version it takes traffic from (p99 comparison).
    pub baseline: String,
    /// Where it is.
    pub phase: Phase,
    /// The split to go back to when a guard trips (the last step that held, or the split
    /// before the plan).
    pub last_good: Split,
    /// Critical target instances when the hold began.
    critical_at_hold: u32,
    /// When the last guard tripped (for the revert delay).
    pub tripped_at: Option<Instant>,
    /// Its log, oldest first.
    pub events: Vec<PlanEvent>,
}

/// Parses "95/5 80/20 50/50 0/100" (also comma- or arrow-separated) into splits over
/// `versions` in that order. Weights are percents with up to two decimals.
pub fn parse_steps(text: &str, versions: &[String]) -> Result<Vec<Split>, String> {
    let mut steps = Vec::new();
    for token in text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '→' || c == '>')
        .map(|t| t.trim_matches('-'))
        .filter(|t| !t.is_empty())
    {
        let parts: Vec<&str> = token.split('/').collect();
        if parts.len() != versions.len() {
            return Err(format!(
                "step {token:?} has {} weights; this service has {} versions ({})",
                parts.len(),
                versions.len(),
                versions.join("/")
            ));
        }
        let mut weights = Vec::new();
        for p in parts {
            weights.push(parse_pct(p).ok_or_else(|| {
                format!("{p:?} in step {token:?} is not a percentage (0–100, two decimals)")
            })?);
        }
        let split = Split::from_pairs(versions.iter().cloned().zip(weights));
        if split.total() != FULL_WEIGHT {
            return Err(format!("step {token:?} does not sum to 100"));
        }
        steps.push(split);
    }
    if steps.is_empty() {
        return Err("no steps: write them like 95/5 80/20 50/50 0/100".into());
    }
    Ok(steps)
}

fn parse_pct(s: &str) -> Option<WeightHundredths> {
    let s = s.trim().trim_end_matches('%');
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u32 = int.parse().ok()?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    let w = int.checked_mul(100)?.checked_add(frac)?;
    (w <= FULL_WEIGHT).then_some(w)
}

impl Plan {
    /// A plan for `service` starting from the registry's split `current` (`None`: none
    /// stored). The target is the version with the most weight in the last step that
    /// gains weight overall; the baseline the one with the most weight now.
    pub fn new(
        service: &str,
        current: &Split,
        steps: Vec<PlanStep>,
        limits: GuardLimits,
        now: Instant,
    ) -> Result<Self, String> {
        let last = &steps.last().ok_or("a plan needs at least one step")?.split;
        let target = last
            .entries
            .iter()
            .filter(|e| e.weight > current.weight_of(&e.subset).unwrap_or(0))
            .max_by_key(|e| e.weight)
            .or_else(|| last.entries.iter().max_by_key(|e| e.weight))
            .map(|e| e.subset.clone())
            .ok_or("the last step is empty")?;
        let baseline = current
            .entries
            .iter()
            .filter(|e| e.subset != target)
            .max_by_key(|e| e.weight)
            .map_or_else(String::new, |e| e.subset.clone());
        let mut plan = Self {
            service: service.to_owned(),
            steps,
            limits,
            target,
            baseline,
            phase: Phase::Paused {
                step: 0,
                reason: "not started".into(),
            },
            last_good: current.clone(),
            critical_at_hold: 0,
            tripped_at: None,
            events: Vec::new(),
        };
        plan.log(now, false, format!("plan: {}", plan.summary()));
        Ok(plan)
    }

    /// "95/5 → 80/20 → 0/100, hold 60 s" for the marker and the log.
    #[must_use]
    pub fn summary(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                s.split
                    .entries
                    .iter()
                    .map(|e| super::types::format_pct(e.weight))
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        format!("{} (watching {})", steps.join(", "), self.target)
    }

    /// Whether it still drives the service (not done, not aborted).
    #[must_use]
    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Done | Phase::Aborted)
    }

    /// The step it is on, if any.
    #[must_use]
    pub fn step(&self) -> Option<usize> {
        match &self.phase {
            Phase::Writing { step }
            | Phase::Settling { step }
            | Phase::Holding { step, .. }
            | Phase::Reverting { step, .. }
            | Phase::Paused { step, .. } => Some(*step),
            Phase::Done | Phase::Aborted => None,
        }
    }

    /// A short state for the map and the inspector, e.g. "step 2/4 · hold 42 s left".
    #[must_use]
    pub fn badge(&self, now: Instant) -> String {
        let n = self.steps.len();
        match &self.phase {
            Phase::Writing { step } => format!("step {}/{n} · writing", step + 1),
            Phase::Settling { step } => format!("step {}/{n} · waiting for registry", step + 1),
            Phase::Holding { step, since } => {
                let left = self.steps[*step]
                    .hold
                    .saturating_sub(now.saturating_duration_since(*since));
                format!("step {}/{n} · hold {} s left", step + 1, left.as_secs())
            }
            Phase::Reverting { step, .. } => format!("step {}/{n} · REVERTING", step + 1),
            Phase::Paused { step, .. } => format!("step {}/{n} · PAUSED", step + 1),
            Phase::Done => "done".into(),
            Phase::Aborted => "aborted".into(),
        }
    }

    fn log(&mut self, at: Instant, is_error: bool, text: String) {
        if self.events.len() >= 200 {
            self.events.remove(0);
        }
        self.events.push(PlanEvent { at, text, is_error });
    }

    /// Applies an operator control; returns the writes to send.
    pub fn control(
        &mut self,
        model: &Model,
        control: &PlanControl,
        now: Instant,
    ) -> Vec<SplitWrite> {
        match control {
            PlanControl::Start { .. } => {
                self.log(now, false, "started".into());
                self.go_to(model, 0, now)
            }
            PlanControl::Pause => {
                if let Some(step) = self.step()
                    && self.is_active()
                {
                    self.log(now, false, "paused by the operator".into());
                    self.phase = Phase::Paused {
                        step,
                        reason: "paused by the operator".into(),
                    };
                }
                Vec::new()
            }
            PlanControl::Resume => match &self.phase {
                Phase::Paused { step, .. } => {
                    let step = *step;
                    self.log(now, false, format!("resumed at step {}", step + 1));
                    self.go_to(model, step, now)
                }
                _ => Vec::new(),
            },
            PlanControl::Abort => {
                if self.is_active() {
                    self.log(
                        now,
                        false,
                        "aborted by the operator; the split stays as it is".into(),
                    );
                    self.phase = Phase::Aborted;
                }
                Vec::new()
            }
            PlanControl::SkipTo(step) if *step < self.steps.len() => {
                self.log(now, false, format!("skipped to step {}", step + 1));
                self.go_to(model, *step, now)
            }
            PlanControl::SkipTo(_) => Vec::new(),
        }
    }

    /// Writes step `step` (after the guard rails), or holds it if the registry shows it.
    fn go_to(&mut self, model: &Model, step: usize, now: Instant) -> Vec<SplitWrite> {
        let split = self.steps[step].split.clone();
        let rejections = guard::check(model, &self.service, &split);
        if rejections.contains(&guard::Rejection::NoChange) {
            self.start_hold(model, step, now);
            return Vec::new();
        }
        if guard::blocks(&rejections, false) {
            let why: Vec<String> = rejections.iter().map(guard::Rejection::text).collect();
            let reason = format!(
                "step {} refused by the guard rails: {}",
                step + 1,
                why.join("; ")
            );
            self.log(now, true, reason.clone());
            self.phase = Phase::Paused { step, reason };
            return Vec::new();
        }
        self.phase = Phase::Writing { step };
        vec![self.write(
            model,
            split,
            WriteOrigin::Plan,
            format!(
                "plan step {}/{}: {}",
                step + 1,
                self.steps.len(),
                self.summary()
            ),
        )]
    }

    fn write(
        &self,
        model: &Model,
        after: Split,
        origin: WriteOrigin,
        reason: String,
    ) -> SplitWrite {
        let stored = model
            .services
            .get(&self.service)
            .and_then(|s| s.split.as_ref());
        SplitWrite {
            service: self.service.clone(),
            before: stored.map(|c| c.split.clone()),
            after,
            expected_index: stored.map_or(0, |c| c.modify_index),
            reason,
            origin,
        }
    }

    fn start_hold(&mut self, model: &Model, step: usize, now: Instant) {
        self.critical_at_hold = model.version_health(&self.service, &self.target).critical;
        self.log(
            now,
            false,
            format!(
                "step {} live; holding {} s",
                step + 1,
                self.steps[step].hold.as_secs()
            ),
        );
        self.phase = Phase::Holding { step, since: now };
    }

    /// A write of this service finished: plan writes move the plan on.
    pub fn on_write_finished(
        &mut self,
        write: &SplitWrite,
        result: &Result<WriteOutcome, String>,
        now: Instant,
    ) {
        if !matches!(write.origin, WriteOrigin::Plan | WriteOrigin::Revert) {
            return;
        }
        let failure = match result {
            Ok(WriteOutcome::Applied) => None,
            Ok(WriteOutcome::Conflict { theirs }) => Some(format!(
                "conflict: the registry now holds {}; nothing was overwritten",
                theirs
                    .as_ref()
                    .map_or_else(|| "no split".into(), |t| split_text(&t.split))
            )),
            Ok(WriteOutcome::Unknown { error }) => Some(format!(
                "outcome unknown (answer lost: {error}): may or may not have been applied — check the split once the registry answers"
            )),
            Err(e) => Some(format!("write failed: {e}")),
        };
        match (self.phase.clone(), failure) {
            (Phase::Writing { step }, None) if write.origin == WriteOrigin::Plan => {
                self.phase = Phase::Settling { step };
            }
            (Phase::Writing { step }, Some(why)) => {
                let reason = format!("step {}: {why}", step + 1);
                self.log(now, true, reason.clone());
                self.phase = Phase::Paused { step, reason };
            }
            (Phase::Reverting { step, reason }, None) => {
                let reason = format!("{reason}; reverted to {}", split_text(&self.last_good));
                self.log(now, true, reason.clone());
                self.phase = Phase::Paused { step, reason };
            }
            (Phase::Reverting { step, reason }, Some(why)) => {
                let reason = format!("{reason}; the REVERT FAILED ({why}) — check the split now");
                self.log(now, true, reason.clone());
                self.phase = Phase::Paused { step, reason };
            }
            _ => {}
        }
    }

    /// Advances on time and the model; returns the writes to send.
    pub fn tick(&mut self, model: &Model, now: Instant) -> Vec<SplitWrite> {
        match self.phase.clone() {
            Phase::Settling { step } => {
                let shown = model
                    .services
                    .get(&self.service)
                    .and_then(|s| s.split.as_ref())
                    .is_some_and(|c| guard::same_weights(&c.split, &self.steps[step].split));
                if shown {
                    self.start_hold(model, step, now);
                }
                Vec::new()
            }
            Phase::Holding { step, since } => {
                if let Some(reason) = self.tripped(model) {
                    let reason = format!("guard tripped at step {}: {reason}", step + 1);
                    self.tripped_at = Some(now);
                    self.log(now, true, reason.clone());
                    self.phase = Phase::Reverting {
                        step,
                        reason: reason.clone(),
                    };
                    let back = self.last_good.clone();
                    return vec![self.write(
                        model,
                        back,
                        WriteOrigin::Revert,
                        format!("revert: {reason}"),
                    )];
                }
                if now.saturating_duration_since(since) >= self.steps[step].hold {
                    self.last_good = self.steps[step].split.clone();
                    if step + 1 < self.steps.len() {
                        return self.go_to(model, step + 1, now);
                    }
                    self.log(now, false, "done: every step held".into());
                    self.phase = Phase::Done;
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The first guard the target version breaks now, with the numbers.
    fn tripped(&self, model: &Model) -> Option<String> {
        let (svc, target) = (&self.service, &self.target);
        let stats = model.version_stats(svc, target);
        if let (Some(limit), Some(ratio)) = (
            self.limits.max_5xx_pct,
            stats.as_ref().and_then(|s| s.err5xx_ratio),
        ) && ratio * 100.0 > limit
        {
            return Some(format!(
                "{target} 5xx {:.1} % > {limit} % ({:.1} rps)",
                ratio * 100.0,
                stats.as_ref().map_or(0.0, |s| s.rps)
            ));
        }
        let p99 = stats.as_ref().and_then(|s| s.p99_ms);
        if let (Some(limit), Some(p99)) = (self.limits.max_p99_ms, p99)
            && p99 > limit
        {
            return Some(format!("{target} p99 {p99:.0} ms > {limit:.0} ms"));
        }
        if let (Some(factor), Some(p99)) = (self.limits.max_p99_factor, p99)
            && let Some(base) = model
                .version_stats(svc, &self.baseline)
                .and_then(|s| s.p99_ms)
            && base > 0.0
            && p99 > base * factor
        {
            return Some(format!(
                "{target} p99 {p99:.0} ms > {factor} × {} p99 {base:.0} ms",
                self.baseline
            ));
        }
        if self.limits.breaker_open
            && let Some(lane) = model.lanes.values().find(|l| {
                l.key.service == *svc
                    && l.key.version == *target
                    && l.stats
                        .as_ref()
                        .is_some_and(|s| s.breaker == BreakerState::Open)
            })
        {
            return Some(format!(
                "breaker open on {} to {svc} {target}",
                lane.key.caller
            ));
        }
        let critical = model.version_health(svc, target).critical;
        if self.limits.critical && critical > self.critical_at_hold {
            return Some(format!(
                "{target}: {critical} instance(s) critical (was {})",
                self.critical_at_hold
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{LaneSpec, ServiceSpec, model};
    use crate::model::types::{Health, SplitConfig};

    fn versions() -> Vec<String> {
        vec!["v1".into(), "v2".into()]
    }

    fn split(v1: u32, v2: u32) -> Split {
        Split::from_pairs([("v1", v1 * 100), ("v2", v2 * 100)])
    }

    /// identity at `v1/v2` percent; v2 answers `v2_err` of 10 rps with 5xx; v2's instance
    /// has `v2_health`.
    fn spine(v1: u32, v2: u32, v2_err: u64, v2_health: Health, now: Instant) -> Model {
        let services = vec![
            ServiceSpec {
                name: "gateway".into(),
                instances: vec![("v1".into(), Health::Passing)],
                split: None,
            },
            ServiceSpec {
                name: "identity".into(),
                instances: vec![
                    ("v1".into(), Health::Passing),
                    ("v1".into(), Health::Passing),
                    ("v2".into(), v2_health),
                ],
                split: Some(vec![("v1".into(), v1 * 100), ("v2".into(), v2 * 100)]),
            },
        ];
        let mut bad = LaneSpec::ok("gateway", "identity", "v2", 10, 20.0);
        bad.errors = v2_err;
        let lanes = vec![LaneSpec::ok("gateway", "identity", "v1", 40, 20.0), bad];
        model(&services, &lanes, now)
    }

    fn plan(now: Instant, m: &Model) -> Plan {
        let steps = [split(50, 50), split(0, 100)]
            .into_iter()
            .map(|split| PlanStep {
                split,
                hold: Duration::from_mins(1),
            })
            .collect();
        let current = m.services["identity"].split.clone().unwrap().split;
        Plan::new("identity", &current, steps, GuardLimits::default(), now).unwrap()
    }

    fn applied(p: &mut Plan, w: &SplitWrite, now: Instant) {
        p.on_write_finished(w, &Ok(WriteOutcome::Applied), now);
    }

    #[test]
    fn steps_parse_in_version_order() {
        let steps = parse_steps("95/5 80/20, 50/50 → 0/100", &versions()).unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[1], Split::from_pairs([("v1", 8_000), ("v2", 2_000)]));
        let s = parse_steps("66.67/33.33", &versions()).unwrap();
        assert_eq!(s[0], Split::from_pairs([("v1", 6_667), ("v2", 3_333)]));
        assert!(
            parse_steps("90/20", &versions())
                .unwrap_err()
                .contains("sum")
        );
        assert!(
            parse_steps("90/5/5", &versions())
                .unwrap_err()
                .contains("2 versions")
        );
        assert!(parse_steps("x/100", &versions()).is_err());
        assert!(parse_steps("50.123/49.877", &versions()).is_err());
        assert!(parse_steps("  ", &versions()).is_err());
    }

    #[test]
    fn a_plan_writes_each_step_holds_it_once_the_registry_shows_it_then_finishes() {
        let t0 = Instant::now();
        let m = spine(80, 20, 0, Health::Passing, t0);
        let mut p = plan(t0, &m);
        assert_eq!((p.target.as_str(), p.baseline.as_str()), ("v2", "v1"));
        let w = p.control(
            &m,
            &PlanControl::Start {
                steps: Vec::new(),
                limits: GuardLimits::default(),
            },
            t0,
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].after, split(50, 50));
        assert_eq!(w[0].before, Some(split(80, 20)));
        assert_eq!(w[0].expected_index, 42, "CAS on the index the model holds");
        assert_eq!(w[0].origin, WriteOrigin::Plan);
        assert!(w[0].reason.contains("plan step 1/2"), "{}", w[0].reason);
        assert_eq!(p.phase, Phase::Writing { step: 0 });
        applied(&mut p, &w[0], t0);
        assert_eq!(p.phase, Phase::Settling { step: 0 });
        // The registry does not show it yet: no hold, no write.
        assert!(p.tick(&m, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(p.phase, Phase::Settling { step: 0 });
        let t1 = t0 + Duration::from_secs(6);
        let m = spine(50, 50, 0, Health::Passing, t1);
        assert!(p.tick(&m, t1).is_empty());
        assert_eq!(p.phase, Phase::Holding { step: 0, since: t1 });
        assert!(
            p.badge(t1 + Duration::from_secs(18))
                .contains("hold 42 s left")
        );
        assert!(p.tick(&m, t1 + Duration::from_secs(59)).is_empty());
        let w = p.tick(&m, t1 + Duration::from_mins(1));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].after, split(0, 100));
        assert_eq!(p.last_good, split(50, 50));
        applied(&mut p, &w[0], t1);
        let t2 = t1 + Duration::from_secs(61);
        let m = spine(0, 100, 0, Health::Passing, t2);
        assert!(p.tick(&m, t2).is_empty());
        assert!(p.tick(&m, t2 + Duration::from_mins(1)).is_empty());
        assert_eq!(p.phase, Phase::Done);
        assert!(!p.is_active());
    }

    #[test]
    fn a_tripped_guard_reverts_to_the_last_good_split_and_pauses_with_the_numbers() {
        let t0 = Instant::now();
        let m = spine(80, 20, 0, Health::Passing, t0);
        let mut p = plan(t0, &m);
        let w = p.control(
            &m,
            &PlanControl::Start {
                steps: Vec::new(),
                limits: GuardLimits::default(),
            },
            t0,
        );
        applied(&mut p, &w[0], t0);
        let m = spine(50, 50, 0, Health::Passing, t0);
        p.tick(&m, t0);
        // v2 starts failing half its requests during the hold.
        let t1 = t0 + Duration::from_secs(10);
        let m = spine(50, 50, 5, Health::Passing, t1);
        let w = p.tick(&m, t1);
        assert_eq!(w.len(), 1, "one revert write");
        assert_eq!(
            w[0].after,
            split(80, 20),
            "back to the split before the plan"
        );
        assert_eq!(w[0].origin, WriteOrigin::Revert);
        assert_eq!(w[0].expected_index, 42);
        assert_eq!(p.tripped_at, Some(t1));
        let Phase::Reverting { reason, .. } = &p.phase else {
            panic!("{:?}", p.phase)
        };
        assert!(reason.contains("v2 5xx 50.0 % > 5 %"), "{reason}");
        applied(&mut p, &w[0], t1);
        let Phase::Paused { step, reason } = &p.phase else {
            panic!("{:?}", p.phase)
        };
        assert_eq!(*step, 0);
        assert!(reason.contains("reverted to v1 80 / v2 20"), "{reason}");
        assert!(p.is_active(), "paused, not aborted: resume is possible");
        // A failed revert is said loudly.
        let mut q = plan(t0, &spine(80, 20, 0, Health::Passing, t0));
        q.phase = Phase::Reverting {
            step: 0,
            reason: "guard".into(),
        };
        q.on_write_finished(&w[0], &Err("HTTP 503".into()), t1);
        assert!(
            matches!(&q.phase, Phase::Paused { reason, .. } if reason.contains("REVERT FAILED"))
        );
    }

    #[test]
    fn each_guard_trips() {
        let t0 = Instant::now();
        let base = spine(50, 50, 0, Health::Passing, t0);
        let mut p = plan(t0, &base);
        assert_eq!(p.tripped(&base), None);
        // p99 limit and p99 factor: both versions answer in ~20 ms, p99 ~80 ms.
        p.limits.max_p99_ms = Some(10.0);
        assert!(
            p.tripped(&base).unwrap().contains("p99"),
            "{:?}",
            p.tripped(&base)
        );
        p.limits.max_p99_ms = None;
        p.limits.max_p99_factor = Some(0.2);
        assert!(p.tripped(&base).unwrap().contains("× v1 p99"));
        p.limits.max_p99_factor = None;
        // An instance of the target goes critical during the hold.
        let sick = spine(50, 50, 0, Health::Critical, t0);
        assert!(p.tripped(&sick).unwrap().contains("critical"));
        p.limits.critical = false;
        assert_eq!(p.tripped(&sick), None);
        // A breaker opens on a lane into the target.
        let services = vec![
            ServiceSpec {
                name: "gateway".into(),
                instances: vec![("v1".into(), Health::Passing)],
                split: None,
            },
            ServiceSpec {
                name: "identity".into(),
                instances: vec![
                    ("v1".into(), Health::Passing),
                    ("v2".into(), Health::Passing),
                ],
                split: Some(vec![("v1".into(), 5_000), ("v2".into(), 5_000)]),
            },
        ];
        let mut open = LaneSpec::ok("gateway", "identity", "v2", 10, 20.0);
        open.breaker = crate::model::types::BreakerState::Open;
        let m = model(
            &services,
            &[LaneSpec::ok("gateway", "identity", "v1", 10, 20.0), open],
            t0,
        );
        p.limits.max_5xx_pct = None;
        assert!(
            p.tripped(&m).unwrap().contains("breaker open on gateway"),
            "{:?}",
            p.tripped(&m)
        );
    }

    #[test]
    fn pause_resume_skip_abort_and_conflicts() {
        let t0 = Instant::now();
        let m = spine(80, 20, 0, Health::Passing, t0);
        let mut p = plan(t0, &m);
        let start = PlanControl::Start {
            steps: Vec::new(),
            limits: GuardLimits::default(),
        };
        let w = p.control(&m, &start, t0);
        // Someone else wrote first.
        let theirs = SplitConfig {
            split: split(70, 30),
            modify_index: 43,
        };
        p.on_write_finished(
            &w[0],
            &Ok(WriteOutcome::Conflict {
                theirs: Some(theirs),
            }),
            t0,
        );
        assert!(
            matches!(&p.phase, Phase::Paused { step: 0, reason } if reason.contains("v1 70 / v2 30"))
        );
        // Resume writes the step again, on the index the model has now.
        let m = spine(70, 30, 0, Health::Passing, t0);
        let w = p.control(&m, &PlanControl::Resume, t0);
        assert_eq!(w.len(), 1);
        applied(&mut p, &w[0], t0);
        let m = spine(50, 50, 0, Health::Passing, t0);
        p.tick(&m, t0);
        assert!(matches!(p.phase, Phase::Holding { step: 0, .. }));
        assert!(p.control(&m, &PlanControl::Pause, t0).is_empty());
        assert!(matches!(&p.phase, Phase::Paused { reason, .. } if reason.contains("operator")));
        assert!(
            p.tick(&m, t0 + Duration::from_mins(10)).is_empty(),
            "a paused plan does nothing"
        );
        // Resume when the registry already shows the step: hold again, no write.
        assert!(p.control(&m, &PlanControl::Resume, t0).is_empty());
        assert!(matches!(p.phase, Phase::Holding { step: 0, .. }));
        let w = p.control(&m, &PlanControl::SkipTo(1), t0);
        assert_eq!(w[0].after, split(0, 100));
        assert!(p.control(&m, &PlanControl::SkipTo(7), t0).is_empty());
        p.control(&m, &PlanControl::Abort, t0);
        assert_eq!(p.phase, Phase::Aborted);
        assert!(p.control(&m, &PlanControl::Resume, t0).is_empty());
    }

    #[test]
    fn a_step_the_guard_rails_refuse_pauses_the_plan_without_writing() {
        let t0 = Instant::now();
        let m = spine(80, 20, 0, Health::Critical, t0);
        let mut p = plan(t0, &m);
        let w = p.control(
            &m,
            &PlanControl::Start {
                steps: Vec::new(),
                limits: GuardLimits::default(),
            },
            t0,
        );
        assert!(w.is_empty());
        assert!(matches!(&p.phase, Phase::Paused { reason, .. }
            if reason.contains("refused by the guard rails") && reason.contains("no passing instance")));
    }

    #[test]
    fn the_model_claims_the_marker_at_start_and_releases_it_at_the_end() {
        use crate::io::Command;
        let t0 = Instant::now();
        let mut m = spine(80, 20, 0, Health::Passing, t0);
        let steps = vec![PlanStep {
            split: split(50, 50),
            hold: Duration::from_secs(1),
        }];
        let out = m.plan_control(
            "identity",
            &PlanControl::Start {
                steps,
                limits: GuardLimits::default(),
            },
            t0,
        );
        assert!(
            matches!(&out[0], Command::ClaimDriver { service, what } if service == "identity" && what.contains("50/50"))
        );
        let Command::SetSplit(w) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(matches!(
            m.writes.get("identity"),
            Some(crate::model::WriteState::Pending { .. })
        ));
        let w = w.clone();
        m.apply(
            crate::io::IoEvent::WriteFinished {
                write: w.clone(),
                result: Ok(WriteOutcome::Applied),
            },
            t0,
        );
        assert_eq!(
            m.shifting.last_change.get("identity"),
            Some(&(Some(split(80, 20)), split(50, 50)))
        );
        // A second start while one runs is refused.
        assert!(
            m.plan_control(
                "identity",
                &PlanControl::Start {
                    steps: Vec::new(),
                    limits: GuardLimits::default()
                },
                t0
            )
            .is_empty()
        );
        let mut shown = spine(50, 50, 0, Health::Passing, t0);
        shown.shifting = m.shifting.clone();
        shown.tick_plans(t0);
        let out = shown.tick_plans(t0 + Duration::from_secs(2));
        assert_eq!(
            out,
            vec![Command::ReleaseDriver {
                service: "identity".into()
            }]
        );
        assert_eq!(shown.shifting.plans["identity"].phase, Phase::Done);
    }
}

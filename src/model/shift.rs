//! Weight shifting state beside the spine: rollout plans, the audit trail shown in the
//! panel, the last change per service (undo), and the "who is driving" markers (ours and
//! the registry's). Plans are driven from here: [`Model::plan_control`] and
//! [`Model::tick_plans`] return the commands for the io layer.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::Model;
use super::plan::{Plan, PlanControl};
use super::types::{DriverMarker, Split};
use crate::io::{AuditRecord, Command, DriverState, SplitWrite};
use crate::registry::WriteOutcome;

/// How many audit records the panel keeps (the file keeps all).
pub const AUDIT_SHOWN: usize = 500;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Shifting {
    /// Plans by service (finished ones stay until replaced, for their log).
    pub plans: BTreeMap<String, Plan>,
    /// Audit records, oldest first.
    pub audit: VecDeque<AuditRecord>,
    /// The last applied change per service: `(before, after)` (undo writes `before`).
    pub last_change: BTreeMap<String, (Option<Split>, Split)>,
    /// Our markers' states, by service.
    pub drivers: BTreeMap<String, DriverState>,
    /// Every marker the registry holds (ours included).
    pub markers: Vec<DriverMarker>,
}

impl Shifting {
    /// The marker another dashboard holds on `service`, if any: a marker there while
    /// this dashboard does not hold it.
    #[must_use]
    pub fn other_driver(&self, service: &str) -> Option<&DriverMarker> {
        if self.drivers.get(service) == Some(&DriverState::Claimed) {
            return None;
        }
        self.markers.iter().find(|m| m.service == service)
    }
}

impl Model {
    /// Applies an operator's plan control; returns the commands to send.
    pub fn plan_control(
        &mut self,
        service: &str,
        control: &PlanControl,
        now: Instant,
    ) -> Vec<Command> {
        let mut plan = match (control, self.shifting.plans.remove(service)) {
            (PlanControl::Start { steps, limits }, old) => {
                if let Some(old) = old.filter(Plan::is_active) {
                    self.notice(
                        now,
                        true,
                        format!("{service}: a plan is already running; abort it first"),
                    );
                    self.shifting.plans.insert(service.to_owned(), old);
                    return Vec::new();
                }
                let current = self
                    .services
                    .get(service)
                    .and_then(|s| s.split.as_ref().map(|c| c.split.clone()))
                    .unwrap_or_default();
                match Plan::new(service, &current, steps.clone(), limits.clone(), now) {
                    Ok(plan) => plan,
                    Err(e) => {
                        self.notice(now, true, format!("{service}: plan not started: {e}"));
                        return Vec::new();
                    }
                }
            }
            (_, Some(plan)) => plan,
            (_, None) => return Vec::new(),
        };
        let was_active = plan.is_active() && !matches!(control, PlanControl::Start { .. });
        let writes = plan.control(self, control, now);
        let mut out = self.plan_commands(&plan, was_active, writes);
        if matches!(control, PlanControl::Start { .. }) {
            out.insert(
                0,
                Command::ClaimDriver {
                    service: service.to_owned(),
                    what: format!("plan {}", plan.summary()),
                },
            );
        }
        self.shifting.plans.insert(service.to_owned(), plan);
        out
    }

    /// Advances every running plan; returns the commands to send.
    pub fn tick_plans(&mut self, now: Instant) -> Vec<Command> {
        let services: Vec<String> = self
            .shifting
            .plans
            .iter()
            .filter(|(_, p)| p.is_active())
            .map(|(s, _)| s.clone())
            .collect();
        let mut out = Vec::new();
        for service in services {
            let Some(mut plan) = self.shifting.plans.remove(&service) else {
                continue;
            };
            let writes = plan.tick(self, now);
            if let Some(e) = plan.events.last()
                && e.at == now
                && e.is_error
            {
                self.notice(now, true, format!("{service}: {}", e.text));
            }
            out.extend(self.plan_commands(&plan, true, writes));
            self.shifting.plans.insert(service, plan);
        }
        out
    }

    /// The plan's writes as commands (marked pending), plus the marker's release when
    /// the plan just stopped driving.
    fn plan_commands(
        &mut self,
        plan: &Plan,
        was_active: bool,
        writes: Vec<SplitWrite>,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        for w in writes {
            self.mark_write_pending(&w.service, w.after.clone());
            out.push(Command::SetSplit(w));
        }
        if was_active && !plan.is_active() {
            out.push(Command::ReleaseDriver {
                service: plan.service.clone(),
            });
        }
        out
    }

    /// Bookkeeping of a finished write: undo, the plan, the marker list.
    pub(super) fn shift_write_finished(
        &mut self,
        write: &SplitWrite,
        result: &Result<WriteOutcome, String>,
        now: Instant,
    ) {
        if matches!(result, Ok(WriteOutcome::Applied)) {
            self.shifting.last_change.insert(
                write.service.clone(),
                (write.before.clone(), write.after.clone()),
            );
        }
        if let Some(plan) = self.shifting.plans.get_mut(&write.service) {
            plan.on_write_finished(write, result, now);
        }
    }

    /// Adds an audit record (newest last, bounded).
    pub(super) fn push_audit(&mut self, record: AuditRecord) {
        if self.shifting.audit.len() >= AUDIT_SHOWN {
            self.shifting.audit.pop_front();
        }
        self.shifting.audit.push_back(record);
    }
}

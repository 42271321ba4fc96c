//! The split writer: one task that sends compare-and-set writes one at a time. Writes that
//! queue up while one is in flight are coalesced per service (the latest wins; the others
//! are audited as superseded, never sent). Every attempt — applied, conflict, failed,
//! refused in read-only mode, unknown (sent, answer lost) — becomes one audit line and one
//! [`IoEvent::WriteFinished`]. A write while the registry is unreachable is not queued: it
//! fails at once, "registry unreachable — not applied".

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc};

use super::audit::{AuditLog, AuditOutcome, AuditRecord, Operator};
use super::tasks::{Wake, emit};
use super::{IoEvent, SplitWrite};
use crate::model::split_text;
use crate::registry::{Registry, RegistryError, WriteOutcome};

/// What the writer needs besides the registry.
pub(super) struct Writer {
    /// Refuse every write.
    pub read_only: bool,
    /// Where attempts are recorded.
    pub audit: AuditLog,
    /// Who is writing.
    pub operator: Operator,
    /// Registry kind and address for the audit lines.
    pub registry_label: String,
    /// Asks the registry follower to read again after a write.
    pub refresh: Arc<Notify>,
}

/// Keeps the last write per service, in the order services first appeared; returns the
/// kept ones and the superseded ones.
pub(super) fn coalesce(batch: Vec<SplitWrite>) -> (Vec<SplitWrite>, Vec<SplitWrite>) {
    let mut kept: Vec<SplitWrite> = Vec::new();
    let mut superseded = Vec::new();
    for w in batch {
        if let Some(slot) = kept.iter_mut().find(|k| k.service == w.service) {
            superseded.push(std::mem::replace(slot, w));
        } else {
            kept.push(w);
        }
    }
    (kept, superseded)
}

impl Writer {
    /// Runs until the channel closes or the UI is gone.
    pub(super) async fn run<R: Registry>(
        self,
        registry: Arc<R>,
        mut rx: mpsc::Receiver<SplitWrite>,
        tx: mpsc::Sender<IoEvent>,
        wake: Wake,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let (kept, superseded) = coalesce(batch);
            for old in superseded {
                let record = AuditRecord::new(
                    &old,
                    &self.operator,
                    &self.registry_label,
                    AuditOutcome::Superseded,
                    "a newer change of this service was queued before it was sent".into(),
                    SystemTime::now(),
                );
                if !self.record(&tx, &wake, record).await {
                    return;
                }
            }
            for write in kept {
                let (result, refused) = self.attempt(registry.as_ref(), &write).await;
                let record = AuditRecord::of_result(
                    &write,
                    &self.operator,
                    &self.registry_label,
                    &result,
                    refused,
                    SystemTime::now(),
                );
                if !self.record(&tx, &wake, record).await {
                    return;
                }
                self.refresh.notify_one();
                if !emit(&tx, &wake, IoEvent::WriteFinished { write, result }).await {
                    return;
                }
            }
        }
    }

    /// Sends one write (or refuses it); `true` in the second place when refused locally.
    async fn attempt<R: Registry>(
        &self,
        registry: &R,
        write: &SplitWrite,
    ) -> (Result<WriteOutcome, String>, bool) {
        let service = &write.service;
        if self.read_only {
            tracing::warn!("split write for {service} refused: read-only mode");
            return (
                Err("read-only mode: writes are disabled (started with --read-only)".into()),
                true,
            );
        }
        if let Err(e) = write.after.validate() {
            return (Err(format!("split for {service:?} not sent: {e}")), true);
        }
        tracing::info!(
            "writing split for {service}: {} (cas={}, {:?})",
            split_text(&write.after),
            write.expected_index,
            write.origin
        );
        let result = registry
            .write_split(service, &write.after, write.expected_index)
            .await
            .map_err(|e| match e {
                // Never left (refused, DNS, TLS, connect timeout) or failed before the
                // write itself: certainly not applied.
                RegistryError::Transport { .. } => {
                    format!("registry unreachable — not applied ({e})")
                }
                e => e.to_string(),
            });
        match &result {
            Ok(WriteOutcome::Unknown { error }) => tracing::warn!(
                "split write for {service}: answer lost ({error}); it may or may not have been applied"
            ),
            Ok(outcome) => tracing::info!("split write for {service}: {outcome:?}"),
            Err(e) => tracing::warn!("split write for {service} failed: {e}"),
        }
        (result, false)
    }

    /// Appends the record to the file (a failure is logged and becomes part of the
    /// record's detail) and tells the UI.
    async fn record(
        &self,
        tx: &mpsc::Sender<IoEvent>,
        wake: &Wake,
        mut record: AuditRecord,
    ) -> bool {
        if let Err(e) = self.audit.append(&record) {
            tracing::error!("{e}");
            if !record.detail.is_empty() {
                record.detail.push_str("; ");
            }
            record.detail += "NOT in the audit file: ";
            record.detail += &e;
        }
        emit(tx, wake, IoEvent::Audited(record)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::WriteOrigin;
    use crate::model::types::Split;

    fn w(service: &str, v2: u32) -> SplitWrite {
        SplitWrite {
            service: service.into(),
            before: None,
            after: Split::from_pairs([("v1", 10_000 - v2), ("v2", v2)]),
            expected_index: 7,
            reason: String::new(),
            origin: WriteOrigin::Operator,
        }
    }

    #[test]
    fn latest_write_per_service_wins_in_first_seen_order() {
        let (kept, superseded) = coalesce(vec![
            w("identity", 1_000),
            w("photo", 500),
            w("identity", 2_000),
            w("identity", 3_000),
        ]);
        assert_eq!(kept, vec![w("identity", 3_000), w("photo", 500)]);
        assert_eq!(superseded, vec![w("identity", 1_000), w("identity", 2_000)]);
    }
}

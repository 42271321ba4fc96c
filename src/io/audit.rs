//! The audit trail of weight changes: one JSON line per write attempt (applied, conflict,
//! failed, refused in read-only mode, superseded by a newer draft before it was sent,
//! unknown: sent but the answer was lost),
//! appended to `audit.jsonl` in the platform data directory (Linux:
//! `~/.local/share/spine-dash/audit.jsonl`), and shown in the audit panel.
//!
//! Lines carry the operator's OS user and host, the time (RFC 3339, UTC), the registry,
//! service, before → after, reason, origin, CAS index and outcome — never a token.

use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{SplitWrite, WriteOrigin};
use crate::model::split_text;
use crate::registry::WriteOutcome;

/// How many lines of an existing log are shown at start (the file keeps all of them).
pub const TAIL_LINES: usize = 200;

/// What happened to one write attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// The registry took it.
    Applied,
    /// Compare-and-set lost: someone changed the entry first; nothing was written.
    Conflict,
    /// The registry or the transport failed (the detail says how).
    Failed,
    /// Refused locally (read-only mode, invalid split): nothing was sent.
    Refused,
    /// A newer change of the same service replaced it before it was sent.
    Superseded,
    /// Sent, but the answer was lost (reset after sending, timeout): it may or may not
    /// have been applied; the dashboard re-reads the split when the registry answers.
    Unknown,
}

impl AuditOutcome {
    /// Lowercase name, as in the file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Superseded => "superseded",
            Self::Unknown => "unknown",
        }
    }
}

/// The OS user and host of this dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// Login name (`$USER`, `$LOGNAME`, `$USERNAME`), or `unknown`.
    pub user: String,
    /// Host name (kernel host name, `$HOSTNAME`, `$COMPUTERNAME`), or `unknown`.
    pub host: String,
}

impl Operator {
    /// Reads the user and host of this process.
    #[must_use]
    pub fn current() -> Self {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let user = env(&["USER", "LOGNAME", "USERNAME"]).unwrap_or_else(|| "unknown".into());
        let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| env(&["HOSTNAME", "COMPUTERNAME"]))
            .unwrap_or_else(|| "unknown".into());
        Self { user, host }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the attempt finished, RFC 3339 UTC.
    pub time: String,
    /// OS user.
    pub user: String,
    /// Host name.
    pub host: String,
    /// Registry kind and address, e.g. `consul http://127.0.0.1:8500`.
    pub registry: String,
    /// Service name.
    pub service: String,
    /// The split the operator saw, as text (`none` when no split was stored).
    pub before: String,
    /// The split asked for, as text.
    pub after: String,
    /// Why (operator text; plans fill it).
    pub reason: String,
    /// Who asked: operator, undo, plan, revert.
    pub origin: WriteOrigin,
    /// The compare-and-set index the write was conditional on.
    pub cas_index: u64,
    /// What happened.
    pub outcome: AuditOutcome,
    /// The error text, or theirs on a conflict; empty when applied.
    #[serde(default)]
    pub detail: String,
}

impl AuditRecord {
    /// The record of `write` with `outcome` at `time`.
    #[must_use]
    pub fn new(
        write: &SplitWrite,
        operator: &Operator,
        registry: &str,
        outcome: AuditOutcome,
        detail: String,
        time: SystemTime,
    ) -> Self {
        Self {
            time: rfc3339(time),
            user: operator.user.clone(),
            host: operator.host.clone(),
            registry: registry.to_owned(),
            service: write.service.clone(),
            before: write
                .before
                .as_ref()
                .map_or_else(|| "none".into(), split_text),
            after: split_text(&write.after),
            reason: write.reason.clone(),
            origin: write.origin,
            cas_index: write.expected_index,
            outcome,
            detail,
        }
    }

    /// Cuts secrets and URL user-info out of its texts (registry, reason, detail).
    pub fn scrub(&mut self) {
        use crate::net::secrets::scrub_in_place;
        for text in [&mut self.registry, &mut self.reason, &mut self.detail] {
            scrub_in_place(text);
        }
    }

    /// The record of a finished write: the outcome and detail follow from `result`.
    #[must_use]
    pub fn of_result(
        write: &SplitWrite,
        operator: &Operator,
        registry: &str,
        result: &Result<WriteOutcome, String>,
        refused: bool,
        time: SystemTime,
    ) -> Self {
        let (outcome, detail) = match result {
            Ok(WriteOutcome::Applied) => (AuditOutcome::Applied, String::new()),
            Ok(WriteOutcome::Conflict { theirs }) => (
                AuditOutcome::Conflict,
                theirs.as_ref().map_or_else(
                    || "theirs: no split stored".into(),
                    |t| {
                        format!(
                            "theirs: {} (index {})",
                            split_text(&t.split),
                            t.modify_index
                        )
                    },
                ),
            ),
            Ok(WriteOutcome::Unknown { error }) => (
                AuditOutcome::Unknown,
                format!(
                    "answer lost ({error}): may or may not have been applied — re-read after the registry returns"
                ),
            ),
            Err(e) if refused => (AuditOutcome::Refused, e.clone()),
            Err(e) => (AuditOutcome::Failed, e.clone()),
        };
        Self::new(write, operator, registry, outcome, detail, time)
    }
}

/// The append-only JSONL file (or none: tests and `--no-audit` runs keep records in memory
/// only).
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: Option<PathBuf>,
}

impl AuditLog {
    /// A log appending to `path` (`None`: no file).
    #[must_use]
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    /// The default place: `audit.jsonl` in the platform data directory.
    #[must_use]
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "spine-dash")
            .map(|d| d.data_dir().join("audit.jsonl"))
    }

    /// The file, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one line (creating the directory and file). The error names the file.
    pub fn append(&self, record: &AuditRecord) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut record = record.clone();
        record.scrub();
        let mut line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        line.push('\n');
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            // One write call per line: lines from two dashboards never interleave mid-line.
            f.write_all(line.as_bytes())
        };
        write().map_err(|e| format!("audit log {}: {e}", path.display()))
    }

    /// The last `n` records of the file (unreadable lines are skipped; no file = none).
    #[must_use]
    pub fn tail(&self, n: usize) -> Vec<AuditRecord> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        // Read at most the last 1 MiB: enough for `TAIL_LINES` lines.
        let len = f.metadata().map_or(0, |m| m.len());
        let start = len.saturating_sub(1 << 20);
        if f.seek(SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut records: Vec<AuditRecord> = std::io::BufReader::new(f)
            .lines()
            .skip(usize::from(start > 0))
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let drop = records.len().saturating_sub(n);
        records.drain(..drop);
        records
    }
}

/// `2026-11-28T01:02:03Z` for a wall-clock time (UTC, whole seconds).
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::{Split, SplitConfig};
    use std::time::Duration;

    fn write() -> SplitWrite {
        SplitWrite {
            service: "identity".into(),
            before: Some(Split::from_pairs([("v1", 8_000), ("v2", 2_000)])),
            after: Split::from_pairs([("v1", 5_000), ("v2", 5_000)]),
            expected_index: 1190,
            reason: "step 2 of 4".into(),
            origin: WriteOrigin::Plan,
        }
    }

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_827_723);
        assert_eq!(rfc3339(t), "2026-11-28T01:02:03Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_hours(264_384);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn one_line_per_record_and_tail_reads_them_back() {
        let dir = std::env::temp_dir().join(format!("spine-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::new(Some(dir.join("sub").join("audit.jsonl")));
        let op = Operator {
            user: "alice".into(),
            host: "ws1".into(),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_827_723);
        let results = [
            Ok(WriteOutcome::Applied),
            Ok(WriteOutcome::Conflict {
                theirs: Some(SplitConfig {
                    split: Split::from_pairs([("v1", 10_000), ("v2", 0)]),
                    modify_index: 1203,
                }),
            }),
            Err("HTTP 403: Permission denied".to_owned()),
        ];
        for r in &results {
            let rec = AuditRecord::of_result(&write(), &op, "demo http://x", r, false, at);
            log.append(&rec).unwrap();
        }
        let refused = AuditRecord::of_result(
            &write(),
            &op,
            "demo http://x",
            &Err("read-only".into()),
            true,
            at,
        );
        log.append(&refused).unwrap();
        let text = std::fs::read_to_string(dir.join("sub").join("audit.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 4);
        let back = log.tail(10);
        let outcomes: Vec<_> = back.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                AuditOutcome::Applied,
                AuditOutcome::Conflict,
                AuditOutcome::Failed,
                AuditOutcome::Refused
            ]
        );
        assert_eq!(back[0].before, "v1 80 / v2 20");
        assert_eq!(back[0].after, "v1 50 / v2 50");
        assert_eq!(back[0].time, "2026-11-28T01:02:03Z");
        assert_eq!(back[1].detail, "theirs: v1 100 / v2 0 (index 1203)");
        assert_eq!(log.tail(2), back[2..].to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

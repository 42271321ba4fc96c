//! tokio side of the app: pollers per source, the split writer, demo controls. Sends
//! [`IoEvent`]s over a bounded channel and wakes the UI; receives [`Command`]s. Knows a
//! wake callback, never the egui context.

use std::time::{Duration, Instant};

use crate::metrics::prometheus::LaneSamples;
use crate::metrics::{ClusterHosts, SidecarScrape};
pub use crate::model::types::{DemoFault, DemoInstanceState};
use crate::model::types::{DriverMarker, RegistrySnapshot, Split};
use crate::registry::WriteOutcome;

pub use audit::{AuditOutcome, AuditRecord, Operator};

/// Who asked for a split write (the audit log's `origin`; plans recognise their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOrigin {
    /// The operator confirmed a change (sliders, "re-apply mine").
    Operator,
    /// The operator undid the last change.
    Undo,
    /// A step of a rollout plan.
    Plan,
    /// A plan's guard tripped: back to the last good split.
    Revert,
}

/// One compare-and-set split write, as asked for and as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitWrite {
    /// Service name.
    pub service: String,
    /// The split the operator saw when asking (`None`: no split stored).
    pub before: Option<Split>,
    /// The split to write.
    pub after: Split,
    /// `ModifyIndex` / `mod_revision` the operator saw (`0` = none stored: create only).
    pub expected_index: u64,
    /// Why (optional operator text; plans fill it).
    pub reason: String,
    /// Who asked.
    pub origin: WriteOrigin,
}

impl SplitWrite {
    /// An operator's write of `after` on `expected_index` (no `before` known, no reason).
    #[must_use]
    pub fn by_operator(service: impl Into<String>, after: Split, expected_index: u64) -> Self {
        Self {
            service: service.into(),
            before: None,
            after,
            expected_index,
            reason: String::new(),
            origin: WriteOrigin::Operator,
        }
    }
}

/// Where the advisory "who is driving" marker of one service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverState {
    /// This dashboard holds it (kept alive by the io layer).
    Claimed,
    /// Another dashboard holds it.
    HeldBy(DriverMarker),
    /// Released (plan finished or aborted).
    Released,
    /// The registry refused or failed; the text says why (retried while wanted).
    Failed(String),
}

/// Something a source produced, for `Model::apply`.
#[derive(Debug, Clone)]
pub enum IoEvent {
    /// The registry reported: a new snapshot, "still connected, nothing new", or a failure.
    Registry {
        /// When the answer arrived.
        at: Instant,
        /// The snapshot (`None` = unchanged since the last one), or the error text to show.
        result: Result<Option<RegistrySnapshot>, String>,
        /// While the source is healthy its next report comes within this time (the poll
        /// interval, or a blocking query's wait): the model's freshness deadline.
        next_within: Duration,
    },
    /// One scrape of one sidecar's stats finished.
    Scrape {
        /// The sidecar's stats URL (`Meta.metrics_url`).
        url: String,
        /// When the answer arrived.
        at: Instant,
        /// Parsed stats, or the error text to show.
        result: Result<SidecarScrape, String>,
    },
    /// One refresh of the Prometheus metrics source finished (`--metrics prometheus://…`).
    LaneSamples {
        /// When the answers arrived.
        at: Instant,
        /// Every lane Prometheus knows, or the error text to show.
        result: Result<LaneSamples, String>,
    },
    /// One fetch of one sidecar's Envoy `/clusters?format=json` finished (which hosts each
    /// cluster has, which are ejected). Not sent for a sidecar without the endpoint.
    Clusters {
        /// The sidecar's stats URL (`Meta.metrics_url`), the key of [`IoEvent::Scrape`].
        url: String,
        /// When the answer arrived.
        at: Instant,
        /// Clusters with their hosts, or the error text to show.
        result: Result<Vec<ClusterHosts>, String>,
    },
    /// A split write finished (or was refused before sending).
    WriteFinished {
        /// The write as asked for.
        write: SplitWrite,
        /// Applied / conflict, or the error text.
        result: Result<WriteOutcome, String>,
    },
    /// A line was added to the audit log (every write attempt, refusals and superseded
    /// drafts included), or read back from it at start.
    Audited(AuditRecord),
    /// The driver marker of a service changed state.
    Driver {
        /// Service name.
        service: String,
        /// Where it stands.
        state: DriverState,
    },
    /// The registry's datacenters (at start, and after a switch was asked for).
    Datacenters {
        /// The one reads and writes go to.
        current: Option<String>,
        /// Every datacenter to offer, nearest first.
        known: Vec<String>,
        /// Why the list or the switch failed, if it did.
        error: Option<String>,
    },
    /// The sidecar scrape intervals changed (at start, and when the view's focus or the
    /// number of sidecars moves them): the model's freshness rules follow them.
    ScrapePlan(ScrapePlan),
    /// The demo registry's HTTP server was stopped or started (demo mode only; also once
    /// at start).
    DemoRegistry {
        /// Whether it serves now.
        running: bool,
        /// Error text if the control failed.
        error: Option<String>,
    },
    /// A demo-spine control finished (demo mode only).
    DemoChanged {
        /// Instances of the demo spine and whether each is running.
        instances: Vec<DemoInstanceState>,
        /// Error text if the control failed.
        error: Option<String>,
    },
}

impl IoEvent {
    /// Cuts secrets and URL user-info out of the texts the event carries for the screen
    /// (errors, audit lines): every event passes here on its way to the model. Keys (a
    /// sidecar's URL) and registry data stay as they are.
    pub fn scrub(&mut self) {
        use crate::net::secrets::scrub_in_place;
        fn err<T>(r: &mut Result<T, String>) {
            if let Err(e) = r {
                scrub_in_place(e);
            }
        }
        match self {
            Self::Registry { result, .. } => err(result),
            Self::Scrape { result, .. } => err(result),
            Self::LaneSamples { result, .. } => err(result),
            Self::Clusters { result, .. } => err(result),
            Self::WriteFinished { result, .. } => err(result),
            Self::Audited(record) => record.scrub(),
            Self::Driver {
                state: DriverState::Failed(e),
                ..
            } => scrub_in_place(e),
            Self::Datacenters { error, .. }
            | Self::DemoChanged { error, .. }
            | Self::DemoRegistry { error, .. } => {
                if let Some(e) = error {
                    scrub_in_place(e);
                }
            }
            Self::Driver { .. } | Self::ScrapePlan(_) => {}
        }
    }
}

/// What the operator asked for, from a widget.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Compare-and-set write of a service's split (latest wins when several queue up).
    SetSplit(SplitWrite),
    /// Put the advisory "who is driving" marker for a service (while a plan runs) and
    /// keep it alive until released.
    ClaimDriver {
        /// Service name.
        service: String,
        /// What drives it, e.g. "plan 95/5 → 80/20 → 0/100".
        what: String,
    },
    /// Drop the marker of a service.
    ReleaseDriver {
        /// Service name.
        service: String,
    },
    /// Start / pause / resume / abort / skip a rollout plan. The app (not the io layer)
    /// applies it to the model's plans, which then emit the writes.
    Plan {
        /// Service name.
        service: String,
        /// What to do.
        control: crate::model::plan::PlanControl,
    },
    /// Stop (kill) a demo instance's server.
    DemoStop {
        /// Instance id.
        instance_id: String,
    },
    /// Start a stopped demo instance again.
    DemoStart {
        /// Instance id.
        instance_id: String,
    },
    /// Inject faults into a demo instance (replacing its current ones; the default clears).
    DemoFault {
        /// Instance id.
        instance_id: String,
        /// The faults it should have from now on.
        fault: DemoFault,
    },
    /// Stop (`false`, as if its process died) or start again (`true`) the demo spine's
    /// registry server; its state lives on.
    DemoRegistry {
        /// Whether it should serve.
        running: bool,
    },
    /// Poll the registry now.
    RefreshNow,
    /// Read and write another datacenter of the registry (Consul `?dc=`).
    SetDatacenter(String),
    /// Use another context of the config file: the app (not the io layer) tears down the
    /// io tasks and starts new ones with a fresh model.
    SwitchContext(String),
    /// The services the operator can see or has pinned (send it when that set changes):
    /// their sidecars are scraped at the normal interval, the others less often (see
    /// `io::scrape`). Until the first one, every service counts as focused.
    Focus {
        /// Service names.
        services: Vec<String>,
    },
}

pub mod audit;
mod driver;
mod http;
pub mod prometheus;
pub mod scrape;
mod tasks;
mod writer;

pub use http::{FetchError, fetch_text};
pub use scrape::ScrapePlan;
pub use tasks::{DEFAULT_SCRAPES_PER_SEC, IoConfig, IoHandle, IoTasks, Wake, clusters_url, spawn};

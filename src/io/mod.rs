//! tokio side of the app: pollers per source, the split writer, demo controls. Sends
//! [`IoEvent`]s over a bounded channel and wakes the UI; receives [`Command`]s. Knows a
//! wake callback, never the egui context.

use std::time::{Duration, Instant};

use crate::metrics::prometheus::LaneSamples;
use crate::metrics::{ClusterHosts, SidecarScrape};
pub use crate::model::types::{DemoFault, DemoInstanceState};
use crate::model::types::{RegistrySnapshot, Split};
use crate::registry::WriteOutcome;

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
    /// A split write finished.
    WriteFinished {
        /// Service whose split was written.
        service: String,
        /// The split that was asked for.
        split: Split,
        /// Applied / conflict, or the error text.
        result: Result<WriteOutcome, String>,
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
    /// A demo-spine control finished (demo mode only).
    DemoChanged {
        /// Instances of the demo spine and whether each is running.
        instances: Vec<DemoInstanceState>,
        /// Error text if the control failed.
        error: Option<String>,
    },
}

/// What the operator asked for, from a widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Compare-and-set write of a service's split.
    SetSplit {
        /// Service name.
        service: String,
        /// New weights.
        split: Split,
        /// `ModifyIndex` the operator saw (`0` = no splitter yet: create only if absent).
        expected_index: u64,
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

mod http;
pub mod prometheus;
pub mod scrape;
mod tasks;

pub use http::{FetchError, fetch_text};
pub use scrape::ScrapePlan;
pub use tasks::{DEFAULT_SCRAPES_PER_SEC, IoConfig, IoHandle, IoTasks, Wake, clusters_url, spawn};

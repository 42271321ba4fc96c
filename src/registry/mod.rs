//! Registry clients (Consul and etcd) and the pure
//! parse functions beside them. Every client reads a whole [`RegistrySnapshot`] and writes
//! splits with compare-and-set.

pub mod consul;
pub mod etcd;
pub mod sdk;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::model::types::{DriverMarker, RegistrySnapshot, Split, SplitConfig};

/// Result of a compare-and-set split write that was sent to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The registry took the write.
    Applied,
    /// Someone changed the entry since `expected_index`: nothing was written.
    Conflict {
        /// The entry as the registry holds it now ("theirs"), read back at the conflict;
        /// `None` when no split is stored (or it could not be read back: the next
        /// snapshot shows it).
        theirs: Option<SplitConfig>,
    },
    /// The write was sent but its answer was lost (connection reset after sending, no
    /// answer in time, body broken): it may or may not have been applied. Re-read the
    /// split once the registry answers again. (A write that never left — connection
    /// refused — is an `Err` instead: certainly not applied.)
    Unknown {
        /// What went wrong, as the transport said it.
        error: String,
    },
}

/// How a write request failed: certainly not applied, or sent with its answer lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteFailure {
    /// Not applied: it never reached the registry, or the registry refused it.
    NotApplied(RegistryError),
    /// It may have reached the registry; the answer was lost.
    AnswerLost(RegistryError),
}

impl WriteFailure {
    /// The error, whichever kind.
    pub(crate) fn into_error(self) -> RegistryError {
        match self {
            Self::NotApplied(e) | Self::AnswerLost(e) => e,
        }
    }

    /// The write's result: `Unknown` for a lost answer, the error otherwise.
    pub(crate) fn into_outcome(self) -> Result<WriteOutcome, RegistryError> {
        match self {
            Self::NotApplied(e) => Err(e),
            Self::AnswerLost(e) => Ok(WriteOutcome::Unknown {
                error: e.to_string(),
            }),
        }
    }
}

/// A claim on the advisory "who is driving" marker of one service, held while a plan runs.
/// It lives under a registry session (Consul) or lease (etcd): it vanishes when the app
/// dies and the TTL runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverLease {
    /// Service the marker is about.
    pub service: String,
    /// The marker's key in the registry.
    pub key: String,
    /// Consul session ID or etcd lease ID (decimal).
    pub lease: String,
    /// Renew at least this often (a third of the TTL).
    pub renew_every: Duration,
}

/// Answer to [`Registry::claim_driver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverClaim {
    /// The marker is ours now; keep it alive with [`Registry::renew_driver`].
    Claimed(DriverLease),
    /// Another dashboard holds it (advisory: nothing stops a write, the UI warns).
    HeldBy(DriverMarker),
}

/// Reads the stored marker of `service` (the service named by its key, which wins over
/// the JSON's `service`). A value that is not a marker's JSON is still a marker — someone
/// holds the key — shown with `user: "?"`, plus a warning naming `key`.
#[must_use]
pub fn marker_from_value(service: &str, key: &str, value: &[u8]) -> (DriverMarker, Option<String>) {
    match serde_json::from_slice::<DriverMarker>(value) {
        Ok(mut marker) => {
            service.clone_into(&mut marker.service);
            (marker, None)
        }
        Err(e) => (
            DriverMarker {
                service: service.to_owned(),
                user: "?".into(),
                ..DriverMarker::default()
            },
            Some(format!(
                "driver marker {key} is not a marker's JSON ({e}): shown as held by \"?\""
            )),
        ),
    }
}

/// How often to renew a marker kept alive for `ttl` (a third of it, at least 100 ms).
#[must_use]
pub fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// What went wrong talking to a registry. Texts never contain tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS, TLS, timeout…
    #[error("{message} ({url})")]
    Transport {
        /// What failed.
        message: String,
        /// The URL (without secrets), last as the guide asks.
        url: String,
    },
    /// The registry answered with an error status; `body` is its text (Consul errors are text/plain).
    #[error("HTTP {status}: {body}{}", hint.as_deref().map(|h| format!(" — {h}")).unwrap_or_default())]
    Http {
        /// HTTP status code.
        status: u16,
        /// Response body, trimmed and truncated.
        body: String,
        /// A hint for the operator (e.g. which ACL permission is missing).
        hint: Option<String>,
    },
    /// The body could not be decoded.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// Refused locally before sending (e.g. weights not summing to 100).
    #[error("{0}")]
    Invalid(String),
}

/// Address and kind of the configured registry, for the header and `snapshot --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    /// Demo, Consul or etcd.
    pub kind: crate::model::types::RegistryKind,
    /// Base URL, e.g. `http://127.0.0.1:8500`.
    pub address: String,
}

/// One report of a followed registry (see [`Registry::follow`]).
#[derive(Debug, Clone)]
pub struct FeedUpdate {
    /// A new snapshot, `None` = still connected and nothing changed, or the failure.
    pub result: Result<Option<RegistrySnapshot>, RegistryError>,
    /// While healthy, the next report comes within this time (poll interval, or a
    /// blocking query's wait plus its slack): the UI's freshness deadline.
    pub next_within: Duration,
}

/// What [`Registry::follow`] is given by the io layer.
#[derive(Debug, Clone)]
pub struct FollowContext {
    /// Poll interval (polling backends), or the retry pace after a failure.
    pub interval: Duration,
    /// Fires when the operator asks for a refresh or after a write: read again now.
    pub refresh: Arc<Notify>,
    /// Where reports go; `follow` returns when the receiver is gone.
    pub out: mpsc::Sender<FeedUpdate>,
}

/// The datacenters a registry knows and the one in use (Consul; other registries have none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datacenters {
    /// The datacenter reads and writes go to (`None`: unknown / not applicable).
    pub current: Option<String>,
    /// Every datacenter that can be chosen, nearest first.
    pub known: Vec<String>,
}

impl FollowContext {
    /// Sends one report; `false` when the UI is gone (the caller should return).
    pub async fn report(
        &self,
        result: Result<Option<RegistrySnapshot>, RegistryError>,
        next_within: Duration,
    ) -> bool {
        self.out
            .send(FeedUpdate {
                result,
                next_within,
            })
            .await
            .is_ok()
    }
}

/// A number in `[0, 1)` that differs from call to call: retry jitter and `lookup`'s
/// weighted choice (no random-number crate needed for that).
#[must_use]
pub fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Operations every registry backend offers to the io layer.
pub trait Registry: Send + Sync {
    /// The datacenters to offer in the header's picker (default: none).
    fn datacenters(
        &self,
    ) -> impl std::future::Future<Output = Result<Datacenters, RegistryError>> + Send {
        async { Ok(Datacenters::default()) }
    }

    /// Switches reads and writes to datacenter `dc` (the follow loop starts over there).
    /// The default refuses: the registry has no datacenters.
    fn set_datacenter(&self, dc: &str) -> Result<(), RegistryError> {
        Err(RegistryError::Invalid(format!(
            "this registry has no datacenters (asked for {dc:?})"
        )))
    }

    /// Follows the registry until `ctx.out` closes: sends a snapshot whenever the data
    /// may have changed, `Ok(None)` while connected with nothing new, and each failure.
    /// The default polls [`Registry::snapshot`] every `ctx.interval` (and on refresh);
    /// backends with blocking queries or watches override it.
    fn follow(&self, ctx: FollowContext) -> impl std::future::Future<Output = ()> + Send {
        poll_loop(self, ctx)
    }

    /// Reads every service with instances, health, resolver subsets and split.
    fn snapshot(
        &self,
    ) -> impl std::future::Future<Output = Result<RegistrySnapshot, RegistryError>> + Send;

    /// Writes `split` for `service` if the stored entry still has `expected_index`
    /// (`0` = create only if absent).
    fn write_split(
        &self,
        service: &str,
        split: &Split,
        expected_index: u64,
    ) -> impl std::future::Future<Output = Result<WriteOutcome, RegistryError>> + Send;

    /// Puts the advisory "who is driving" marker for `marker.service` under a fresh
    /// session / lease with `ttl`, unless another holder has it. The default refuses: the
    /// backend has no markers.
    fn claim_driver(
        &self,
        marker: &DriverMarker,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<DriverClaim, RegistryError>> + Send {
        let _ = ttl;
        let service = marker.service.clone();
        async move {
            Err(RegistryError::Invalid(format!(
                "this registry keeps no driver markers (for {service})"
            )))
        }
    }

    /// Keeps a claimed marker alive (renews the session / lease). `Ok(false)` when it is
    /// gone (expired): claim again.
    fn renew_driver(
        &self,
        lease: &DriverLease,
    ) -> impl std::future::Future<Output = Result<bool, RegistryError>> + Send {
        let _ = lease;
        async { Ok(false) }
    }

    /// Drops a claimed marker at once (destroys the session / revokes the lease).
    fn release_driver(
        &self,
        lease: &DriverLease,
    ) -> impl std::future::Future<Output = Result<(), RegistryError>> + Send {
        let _ = lease;
        async { Ok(()) }
    }
}

/// Polls `registry.snapshot()` every `ctx.interval` and on refresh, until `ctx.out` closes.
pub async fn poll_loop<R: Registry + ?Sized>(registry: &R, ctx: FollowContext) {
    let mut ticker = tokio::time::interval(ctx.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = ctx.refresh.notified() => {}
            () = ctx.out.closed() => return,
        }
        let update = FeedUpdate {
            result: registry.snapshot().await.map(Some),
            next_within: ctx.interval,
        };
        if ctx.out.send(update).await.is_err() {
            return;
        }
    }
}

//! The advisory "who is driving" markers: while a rollout plan runs, this dashboard keeps
//! a marker for the service in the registry (Consul: KV key under a session; etcd: key
//! under a lease), renewed every third of its TTL. It vanishes when the app dies (the TTL
//! runs out) or at once when released. Another holder is reported, never overridden.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::audit::{Operator, rfc3339};
use super::tasks::{Wake, emit};
use super::{DriverState, IoEvent};
use crate::model::types::DriverMarker;
use crate::registry::{DriverClaim, DriverLease, Registry};

/// TTL of a marker: gone this long after the app died.
pub const DRIVER_TTL: Duration = Duration::from_secs(15);
/// Retry pace after a failed claim or renewal.
const RETRY: Duration = Duration::from_secs(2);

/// One request to the driver task.
pub(super) enum DriverRequest {
    /// Claim and keep alive.
    Claim {
        /// Service name.
        service: String,
        /// What drives it.
        what: String,
    },
    /// Release.
    Release {
        /// Service name.
        service: String,
    },
}

/// Runs the markers' keepers until the channel closes (then the keepers are aborted and
/// the markers expire by TTL).
pub(super) async fn run<R: Registry + 'static>(
    registry: Arc<R>,
    read_only: bool,
    operator: Operator,
    mut rx: mpsc::Receiver<DriverRequest>,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let mut keepers: BTreeMap<String, (JoinHandle<()>, LeaseSlot)> = BTreeMap::new();
    while let Some(request) = rx.recv().await {
        match request {
            DriverRequest::Claim { service, .. } if read_only => {
                let state = DriverState::Failed("read-only mode: no marker is written".into());
                if !emit(&tx, &wake, IoEvent::Driver { service, state }).await {
                    return;
                }
            }
            DriverRequest::Claim { service, what } => {
                if keepers.get(&service).is_some_and(|(k, _)| !k.is_finished()) {
                    continue;
                }
                let marker = DriverMarker {
                    service: service.clone(),
                    user: operator.user.clone(),
                    host: operator.host.clone(),
                    pid: std::process::id(),
                    since: rfc3339(std::time::SystemTime::now()),
                    what,
                };
                let slot = LeaseSlot::default();
                let keeper = tokio::spawn(keep(
                    Arc::clone(&registry),
                    marker,
                    Arc::clone(&slot),
                    tx.clone(),
                    Arc::clone(&wake),
                ));
                keepers.insert(service, (keeper, slot));
            }
            DriverRequest::Release { service } => {
                let Some((keeper, slot)) = keepers.remove(&service) else {
                    continue;
                };
                keeper.abort();
                let _ = keeper.await;
                let lease = slot.lock().ok().and_then(|mut l| l.take());
                if let Some(lease) = lease
                    && let Err(e) = registry.release_driver(&lease).await
                {
                    tracing::warn!("driver marker of {service}: release failed: {e}");
                }
                if !emit(
                    &tx,
                    &wake,
                    IoEvent::Driver {
                        service,
                        state: DriverState::Released,
                    },
                )
                .await
                {
                    return;
                }
            }
        }
    }
    for (keeper, _) in keepers.values() {
        keeper.abort();
    }
}

/// The lease a keeper holds, readable after the keeper was aborted.
type LeaseSlot = Arc<Mutex<Option<DriverLease>>>;

/// Claims the marker and keeps renewing it (re-claiming when it expired) until aborted.
/// The lease is kept in `slot` so that `Release` can drop it after the abort.
async fn keep<R: Registry>(
    registry: Arc<R>,
    marker: DriverMarker,
    slot: LeaseSlot,
    tx: mpsc::Sender<IoEvent>,
    wake: Wake,
) {
    let service = marker.service.clone();
    let send = |state: DriverState| {
        let tx = tx.clone();
        let wake = Arc::clone(&wake);
        let service = service.clone();
        async move { emit(&tx, &wake, IoEvent::Driver { service, state }).await }
    };
    loop {
        let lease = match registry.claim_driver(&marker, DRIVER_TTL).await {
            Ok(DriverClaim::Claimed(lease)) => lease,
            Ok(DriverClaim::HeldBy(other)) => {
                if !send(DriverState::HeldBy(other)).await {
                    return;
                }
                tokio::time::sleep(DRIVER_TTL / 3).await;
                continue;
            }
            Err(e) => {
                tracing::warn!("driver marker of {service}: {e}");
                if !send(DriverState::Failed(e.to_string())).await {
                    return;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        tracing::info!("driver marker of {service} claimed ({})", lease.key);
        if let Ok(mut l) = slot.lock() {
            *l = Some(lease.clone());
        }
        if !send(DriverState::Claimed).await {
            return;
        }
        loop {
            tokio::time::sleep(lease.renew_every).await;
            match registry.renew_driver(&lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("driver marker of {service} expired: claiming again");
                    break;
                }
                Err(e) => {
                    tracing::warn!("driver marker of {service}: renew failed: {e}");
                    if !send(DriverState::Failed(format!("renew failed: {e}"))).await {
                        return;
                    }
                }
            }
        }
    }
}

//! Loopback servers that can be stopped like a process. Aborting the task that runs
//! `axum::serve` drops the listener (the port refuses connections at once) and the serve
//! future; axum 0.8 then shuts every connection task down gracefully: idle keep-alive
//! connections (clients' pools) close at once, a request already in flight is answered
//! first. The demo's fault test relies on this: pooled health-check connections must not
//! outlive a stop.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::DemoError;

/// Binds `127.0.0.1:port` (`0` = a free port). tokio sets `SO_REUSEADDR` on unix, so a
/// stopped instance can bind its old port again at once.
pub(crate) async fn bind(port: u16) -> Result<TcpListener, DemoError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Port a listener is bound to (`0` if the OS cannot tell, which does not happen on loopback).
pub(crate) fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().map_or(0, |a| a.port())
}

/// A running server; dropping it stops the server.
pub(crate) struct ServerHandle {
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops the server without waiting: the port closes once the runtime has dropped the
    /// task (right away unless the runtime is busy).
    pub(crate) fn kill(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Stops the server and waits until its listening socket is closed.
    pub(crate) async fn stop(mut self) {
        self.kill();
        if let Some(task) = self.task.take() {
            // The task was aborted: its result is always "cancelled".
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Serves `router` on `listener` in a new task.
pub(crate) fn spawn_server(listener: TcpListener, router: Router) -> ServerHandle {
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("demo server stopped: {e}");
        }
    });
    ServerHandle { task: Some(task) }
}

//! Loopback servers that can be stopped like a process. Aborting the task that runs
//! `axum::serve` drops the listener (the port refuses connections at once) and the serve
//! future; axum 0.8 then shuts every connection task down gracefully: idle keep-alive
//! connections (clients' pools) close at once, a request already in flight is answered
//! first. The demo's fault test relies on this: pooled health-check connections must not
//! outlive a stop.
//!
//! The registry is served by [`spawn_killable_server`] instead: stopping it is like killing
//! the Consul agent's process — every open connection fails at once, and a request in
//! flight (a blocking query held for its `wait`) gets no answer.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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
    /// Set (or dropped) to kill every connection of a killable server.
    kill: Option<watch::Sender<bool>>,
}

impl ServerHandle {
    /// Stops the server without waiting: the port closes once the runtime has dropped the
    /// task (right away unless the runtime is busy); a killable server's connections fail.
    pub(crate) fn kill(&mut self) {
        if let Some(kill) = &self.kill {
            kill.send_replace(true);
        }
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
    ServerHandle {
        task: Some(task),
        kill: None,
    }
}

/// Serves `router` on `listener` like [`spawn_server`], but killing the handle also fails
/// every open connection at once (reads and writes return "connection reset", the socket
/// closes): a process that died, not one that shut down gracefully.
pub(crate) fn spawn_killable_server(listener: TcpListener, router: Router) -> ServerHandle {
    let (kill, killed) = watch::channel(false);
    let listener = KillableListener {
        inner: listener,
        killed,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("demo server stopped: {e}");
        }
    });
    ServerHandle {
        task: Some(task),
        kill: Some(kill),
    }
}

/// A listener whose connections all fail when its server is killed.
struct KillableListener {
    inner: TcpListener,
    killed: watch::Receiver<bool>,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let mut killed = self.killed.clone();
        let stream = KillableStream {
            inner: stream,
            // Ready when killed (or the handle is gone).
            killed: Box::pin(async move {
                let _ = killed.wait_for(|k| *k).await;
            }),
            dead: false,
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once its server was killed.
struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// `killed` completed (it must not be polled again).
    dead: bool,
}

impl KillableStream {
    /// `Err(reset)` once killed; registers the waker otherwise, so a connection waiting
    /// for a read (idle, or a held blocking query) is woken and fails too.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        if self.dead {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

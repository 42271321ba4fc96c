//! Loopback servers that can be killed like a process: stopping one closes its listening
//! port (connections are refused) *and* every connection it accepted (keep-alive
//! connections pooled by clients die too), which `axum::serve` alone does not do since it
//! spawns connection tasks of its own.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// A running server: its accept task plus the switch that kills its connections.
pub(crate) struct ServerHandle {
    kill: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Kills the server without waiting: the port closes once the runtime has dropped the
    /// accept task, open connections fail on their next read or write.
    pub(crate) fn kill(&mut self) {
        self.kill.send_replace(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Kills the server and waits until its listening socket is closed.
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
        kill,
        task: Some(task),
    }
}

/// A TCP listener whose connections all die when the kill switch flips.
struct KillableListener {
    inner: TcpListener,
    killed: watch::Receiver<bool>,
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Small request/response pairs: do not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return (KillableStream::new(stream, self.killed.clone()), addr);
                }
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A TCP stream that fails every read and write once its server is killed.
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
}

impl KillableStream {
    fn new(inner: TcpStream, mut killed: watch::Receiver<bool>) -> Self {
        Self {
            inner,
            // Also resolves when the server handle is gone (sender dropped).
            killed: Box::pin(async move {
                let _ = killed.wait_for(|k| *k).await;
            }),
            dead: false,
        }
    }

    /// Polls the kill switch (registering the waker) and says whether the stream is dead.
    fn is_dead(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        self.dead
    }
}

fn killed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "demo server stopped")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(killed_error()));
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
        if this.is_dead(cx) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_dead(cx) {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

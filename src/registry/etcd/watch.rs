//! `follow` for etcd: push, no polling (API brief §3.6).
//!
//! 1. One txn ranges `/services/`, `/mesh/splits/` and `/spine-dash/drivers/` at revision
//!    R → first snapshot (without the markers' prefix when the user may not read it).
//! 2. One watch stream per prefix from R+1 (`progress_notify` on). Each message's events
//!    are applied to the local copy of the keys and its `header.revision` remembered; a
//!    burst of messages gives one snapshot (they are coalesced for [`FLUSH_DELAY`]).
//! 3. A stream that breaks is reopened from its last revision + 1 (first try at once,
//!    then exponential backoff with jitter up to [`BACKOFF_MAX`]), on the next endpoint if
//!    the member is gone. Only a failed reopen is reported as an error: a member restart
//!    that is bridged by another member is not a failure the operator must see.
//! 4. A watch canceled with `compact_revision` (its start revision was compacted while
//!    we were away) leads to a full re-range (step 1). One canceled for auth reasons
//!    authenticates again.
//! 5. Idle: etcd's own progress notifications come only every 10 minutes, and through the
//!    gateway a `progress_request` cannot be sent on the open stream. So every heartbeat
//!    (5 s) a `/v3/maintenance/status` call asks the member the watch runs on whether it
//!    is alive and knows a leader; the answer is reported as `Ok(None)` ("connected,
//!    nothing new") and `next_within` promises the next report within one heartbeat. A
//!    failed status call reconnects (and fails over). Status is no read of the data: the
//!    key space is read once, at start (and after a compaction).
//! 6. Refresh (operator or after a write) re-sends the local view without a request,
//!    including values that a failed compare-and-set brought back, so a conflict shows
//!    "theirs" at once.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::EtcdClient;
use super::layout::snapshot_from_kvs;
use super::lines::{LineBuf, TooLong};
use super::wire::{EventType, KeyValue, WatchResponse, parse_watch_line, watch_create};
use crate::model::types::RegistrySnapshot;
use crate::net::limits;
use crate::registry::{FollowContext, RegistryError, unit_random};

/// Events arriving within this time after one another give one snapshot.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);
/// Longest wait between two reconnection attempts: a member that comes back is seen
/// within about a second (each attempt is one request: the first watch of the reopen).
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// First wait after a failed reconnection (doubled each time, with jitter).
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// A stream that lived this long resets the backoff when it breaks.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Longest line (message) accepted from a stream.
const MAX_LINE_BYTES: usize = limits::ETCD_MAX_MESSAGE_BYTES;
/// A message that has begun must end within this time (an idle stream may stay open).
const LINE_TIMEOUT: Duration = limits::ETCD_MESSAGE_TIMEOUT;

/// The local copy of the watched keys.
struct View {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    /// The prefixes read and watched.
    prefixes: &'static [&'static str],
    /// Last revision seen per prefix (index into `prefixes`).
    revisions: Vec<i64>,
}

impl View {
    fn new(kvs: Vec<KeyValue>, revision: i64, prefixes: &'static [&'static str]) -> Self {
        Self {
            kvs: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
            prefixes,
            revisions: vec![revision; prefixes.len()],
        }
    }

    /// Applies one watch message of prefix `i`; `true` when keys changed.
    fn apply(&mut self, i: usize, msg: WatchResponse) -> bool {
        let changed = !msg.events.is_empty();
        for ev in msg.events {
            match ev.kind {
                EventType::Put => {
                    self.kvs.insert(ev.kv.key.clone(), ev.kv);
                }
                EventType::Delete => {
                    self.kvs.remove(&ev.kv.key);
                }
            }
        }
        if msg.header.revision > self.revisions[i] {
            self.revisions[i] = msg.header.revision;
        }
        changed
    }

    /// The snapshot, with what failed compare-and-sets read where it is newer than the
    /// watch has brought so far.
    fn snapshot(&self, client: &EtcdClient, warned: &mut HashSet<String>) -> RegistrySnapshot {
        let seen = self.revisions.iter().copied().min().unwrap_or(0);
        client.drop_conflicts_up_to(seen);
        let conflicts = client.take_conflicts();
        let mut merged = self.kvs.clone();
        for (key, (revision, current)) in conflicts {
            let known = merged.get(&key).map_or(0, |kv| kv.mod_revision);
            match current {
                Some(kv) if kv.mod_revision > known => {
                    merged.insert(key, kv);
                }
                None if known > 0 && known < revision => {
                    merged.remove(&key);
                }
                _ => {}
            }
        }
        let (snapshot, warnings) = snapshot_from_kvs(merged.values());
        for w in warnings {
            if warned.insert(w.clone()) {
                tracing::warn!("etcd: {w}");
            }
        }
        snapshot
    }
}

/// Why a watch session ended.
enum End {
    /// The UI is gone.
    Closed,
    /// A start revision was compacted: read everything again.
    Compacted,
    /// The server canceled the watch for an auth reason.
    Auth(String),
    /// The stream or the member failed.
    Broken(RegistryError),
}

/// Aborts the stream readers when dropped.
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

type Line = (usize, Result<WatchResponse, RegistryError>);

/// Follows the cluster until `ctx.out` closes.
pub(super) async fn follow(client: EtcdClient, ctx: FollowContext) {
    let heartbeat = client.inner.heartbeat;
    let mut view: Option<View> = None;
    let mut warned = HashSet::new();
    let mut attempt: u32 = 0;
    loop {
        if ctx.out.is_closed() {
            return;
        }
        let current = match view.take() {
            Some(v) => v,
            None => match client.read_all().await {
                Ok((kvs, revision, prefixes)) => {
                    let v = View::new(kvs, revision, prefixes);
                    let snap = v.snapshot(&client, &mut warned);
                    if !ctx.report(Ok(Some(snap)), heartbeat).await {
                        return;
                    }
                    v
                }
                Err(e) => {
                    if !ctx.report(Err(e), heartbeat).await || !pause(&ctx, attempt).await {
                        return;
                    }
                    attempt = attempt.saturating_add(1).max(1);
                    continue;
                }
            },
        };
        let mut v = current;
        let opened = open(&client, &v).await;
        let (readers, rx, index) = match opened {
            Ok(o) => o,
            Err(End::Compacted) => {
                tracing::info!(
                    "etcd: watch start revision was compacted, reading everything again"
                );
                continue;
            }
            Err(End::Auth(reason)) => {
                let e = RegistryError::Http {
                    status: 200,
                    body: reason,
                    hint: Some("the watch was refused: check ETCDCTL_USER and the user's READ permission on /services/ and /mesh/splits/".into()),
                };
                view = Some(v);
                if !ctx.report(Err(e), heartbeat).await || !pause(&ctx, attempt).await {
                    return;
                }
                attempt = attempt.saturating_add(1).max(1);
                continue;
            }
            Err(End::Broken(e)) => {
                view = Some(v);
                if !ctx.report(Err(e), heartbeat).await || !pause(&ctx, attempt).await {
                    return;
                }
                attempt = attempt.saturating_add(1).max(1);
                continue;
            }
            Err(End::Closed) => return,
        };
        // Watching (again): fresh, and the next heartbeat is one period from now.
        if !ctx.report(Ok(None), heartbeat).await {
            return;
        }
        let started = Instant::now();
        let end = pump(&client, &ctx, &mut v, rx, index, heartbeat, &mut warned).await;
        drop(readers);
        match end {
            End::Closed => return,
            End::Compacted => {
                tracing::info!("etcd: watch compacted, reading everything again");
                attempt = 0;
            }
            End::Auth(reason) => {
                tracing::info!("etcd: watch canceled ({reason}), authenticating again");
                if let Some(t) = client.cached_token() {
                    client.forget_token(&t);
                }
                view = Some(v);
            }
            End::Broken(e) => {
                tracing::info!("etcd: watch interrupted ({e}), reconnecting");
                client.skip_endpoint(index);
                view = Some(v);
                if started.elapsed() >= STABLE_AFTER {
                    attempt = 0;
                }
                if !pause(&ctx, attempt).await {
                    return;
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Waits before reconnection attempt `attempt` (0: at once, within 100 ms), or until a
/// refresh; `false` when the UI is gone.
async fn pause(ctx: &FollowContext, attempt: u32) -> bool {
    let delay = backoff(attempt, unit_random());
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = ctx.refresh.notified() => true,
        () = ctx.out.closed() => false,
    }
}

/// Delay before reconnection attempt `attempt` with `roll` in `[0, 1)`: attempt 0 waits
/// 0–100 ms; then `BACKOFF_MIN · 2^(attempt-1)` capped at [`BACKOFF_MAX`], of which a random
/// half to all is waited (jitter, so many dashboards do not reconnect in step).
#[must_use]
pub fn backoff(attempt: u32, roll: f64) -> Duration {
    let roll = roll.clamp(0.0, 1.0);
    if attempt == 0 {
        return Duration::from_millis(100).mul_f64(roll);
    }
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(0.5 + 0.5 * roll)
}

/// Opens one watch per prefix from its revision + 1 and waits for each `created`.
/// Returns the readers, their channel and the endpoint of the first stream.
async fn open(
    client: &EtcdClient,
    view: &View,
) -> Result<(Readers, mpsc::Receiver<Line>, usize), End> {
    let (tx, rx) = mpsc::channel::<Line>(64);
    let mut readers = Readers(Vec::new());
    let mut first_index = None;
    let mut auth_retried = false;
    let mut i = 0;
    while i < view.prefixes.len() {
        let prefix = view.prefixes[i];
        let body = watch_create(prefix, view.revisions[i] + 1);
        let (index, resp) = client
            .post("/v3/watch", &body, true)
            .await
            .map_err(End::Broken)?;
        let mut lines = LineReader::new(resp);
        let created = tokio::time::timeout(client.inner.request_timeout, lines.next_line())
            .await
            .map_err(|_| {
                client.skip_endpoint(index);
                End::Broken(RegistryError::Transport {
                    message: "the watch was not confirmed in time".into(),
                    url: client.shown(index, "/v3/watch"),
                })
            })?
            .map_err(|message| {
                End::Broken(RegistryError::Transport {
                    message,
                    url: client.shown(index, "/v3/watch"),
                })
            })?;
        let Some(created) = created else {
            return Err(End::Broken(RegistryError::Transport {
                message: "the watch stream closed at once".into(),
                url: client.shown(index, "/v3/watch"),
            }));
        };
        let msg = parse_watch_line(&created).map_err(End::Broken)?;
        if msg.canceled {
            if msg.compact_revision > 0 {
                return Err(End::Compacted);
            }
            if is_auth_reason(&msg.cancel_reason) && !auth_retried {
                auth_retried = true;
                if let Some(t) = client.cached_token() {
                    client.forget_token(&t);
                }
                continue;
            }
            if is_auth_reason(&msg.cancel_reason) {
                return Err(End::Auth(msg.cancel_reason));
            }
            return Err(End::Broken(RegistryError::Http {
                status: 200,
                body: format!("watch canceled: {}", msg.cancel_reason),
                hint: None,
            }));
        }
        first_index.get_or_insert(index);
        let tx = tx.clone();
        readers.0.push(tokio::spawn(read_stream(
            i,
            lines,
            tx,
            client.shown(index, "/v3/watch"),
        )));
        i += 1;
    }
    Ok((readers, rx, first_index.unwrap_or(0)))
}

fn is_auth_reason(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("auth")
        || r.contains("token")
        || r.contains("user name is empty")
        || r.contains("permission denied")
}

/// Forwards one stream's messages; ends with an error when the stream ends.
async fn read_stream(i: usize, mut lines: LineReader, tx: mpsc::Sender<Line>, url: String) {
    loop {
        let item = match lines.next_line().await {
            Ok(Some(line)) => parse_watch_line(&line),
            Ok(None) => Err(RegistryError::Transport {
                message: "the watch stream ended".into(),
                url: url.clone(),
            }),
            Err(message) => Err(RegistryError::Transport {
                message,
                url: url.clone(),
            }),
        };
        let done = item.is_err();
        if tx.send((i, item)).await.is_err() || done {
            return;
        }
    }
}

/// Runs one watch session: applies messages, reports snapshots and heartbeats.
async fn pump(
    client: &EtcdClient,
    ctx: &FollowContext,
    view: &mut View,
    mut rx: mpsc::Receiver<Line>,
    index: usize,
    heartbeat: Duration,
    warned: &mut HashSet<String>,
) -> End {
    let mut tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let flush = tokio::time::sleep(FLUSH_DELAY);
    tokio::pin!(flush);
    loop {
        tokio::select! {
            biased;
            () = ctx.out.closed() => return End::Closed,
            line = rx.recv() => {
                let Some((i, item)) = line else {
                    return End::Broken(RegistryError::Decode("watch readers stopped".into()));
                };
                let msg = match item {
                    Ok(msg) => msg,
                    Err(e) => return End::Broken(e),
                };
                if msg.canceled {
                    if msg.compact_revision > 0 {
                        return End::Compacted;
                    }
                    if is_auth_reason(&msg.cancel_reason) {
                        return End::Auth(msg.cancel_reason);
                    }
                    return End::Broken(RegistryError::Http {
                        status: 200,
                        body: format!("watch canceled: {}", msg.cancel_reason),
                        hint: None,
                    });
                }
                if view.apply(i, msg) && !dirty {
                    dirty = true;
                    flush.as_mut().reset(Instant::now() + FLUSH_DELAY);
                }
            }
            () = &mut flush, if dirty => {
                dirty = false;
                let snap = view.snapshot(client, warned);
                if !ctx.report(Ok(Some(snap)), heartbeat).await {
                    return End::Closed;
                }
            }
            () = ctx.refresh.notified() => {
                let snap = view.snapshot(client, warned);
                if !ctx.report(Ok(Some(snap)), heartbeat).await {
                    return End::Closed;
                }
            }
            _ = tick.tick() => {
                // Within one heartbeat, so a member that hangs is left before the UI's
                // freshness deadline (two heartbeats) passes.
                match tokio::time::timeout(heartbeat, client.status_at(index)).await {
                    Ok(Ok(_)) => {
                        if !ctx.report(Ok(None), heartbeat).await {
                            return End::Closed;
                        }
                    }
                    Ok(Err(e)) => return End::Broken(e),
                    Err(_) => {
                        return End::Broken(RegistryError::Transport {
                            message: format!("no status answer within {heartbeat:?}"),
                            url: client.shown(index, "/v3/maintenance/status"),
                        });
                    }
                }
            }
        }
    }
}

/// Reads a streamed body line by line ([`LineBuf`]): each message at most
/// [`MAX_LINE_BYTES`] long and complete within [`LINE_TIMEOUT`] of its first byte.
struct LineReader {
    resp: reqwest::Response,
    buf: LineBuf,
    /// When the first byte of the message in `buf` arrived (`None`: `buf` holds nothing
    /// but white space).
    begun: Option<Instant>,
}

impl LineReader {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: LineBuf::new(MAX_LINE_BYTES),
            begun: None,
        }
    }

    /// The next non-empty line, `None` at the end of the body. Cancel-safe: the buffer is
    /// only changed after a chunk arrived.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        let too_long = |e: TooLong| {
            format!(
                "watch message larger than {}, cut off",
                limits::format_bytes(e.max)
            )
        };
        loop {
            if let Some(line) = self.buf.next_line().map_err(too_long)? {
                self.begun = self.buf.has_begun().then(Instant::now);
                return Ok(Some(line));
            }
            let chunk = match self.begun {
                Some(begun) => {
                    match tokio::time::timeout_at(begun + LINE_TIMEOUT, self.resp.chunk()).await {
                        Ok(chunk) => chunk,
                        Err(_) => {
                            return Err(format!(
                                "no complete watch message within {}",
                                limits::format_duration(LINE_TIMEOUT)
                            ));
                        }
                    }
                }
                None => self.resp.chunk().await,
            };
            match chunk {
                Ok(Some(chunk)) => {
                    self.buf.push(&chunk);
                    if self.begun.is_none() && self.buf.has_begun() {
                        self.begun = Some(Instant::now());
                    }
                }
                Ok(None) => return self.buf.take_rest().map_err(too_long),
                Err(e) => return Err(crate::net::describe_transport(&e)),
            }
        }
    }
}

/// The first line of a streamed answer (lease keepalive), within `timeout`.
pub(super) async fn first_line(
    resp: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut lines = LineReader::new(resp);
    match tokio::time::timeout(timeout, lines.next_line()).await {
        Err(_) => Err(limits::timeout_text(timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Err("empty answer".into()),
        Ok(Ok(Some(line))) => Ok(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(fixture: &str) -> Vec<WatchResponse> {
        fixture
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_watch_line(l.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        assert!(backoff(0, 0.99) <= Duration::from_millis(100));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(30, 0.0), BACKOFF_MAX / 2);
        let r = unit_random();
        assert!((0.0..1.0).contains(&r));
    }

    #[test]
    fn auth_reasons() {
        assert!(is_auth_reason(
            "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
        ));
        assert!(is_auth_reason("etcdserver: invalid auth token"));
        assert!(!is_auth_reason("etcdserver: no leader"));
    }

    #[test]
    fn view_applies_puts_deletes_and_revisions() {
        let mut v = View::new(Vec::new(), 10, &super::super::layout::PREFIXES[..2]);
        let msgs = lines(
            r#"{"result":{"header":{"revision":"14"},"events":[{"kv":{"key":"L2E=","mod_revision":"14","value":"eA=="}}]}}
{"result":{"header":{"revision":"15"},"events":[{"type":"DELETE","kv":{"key":"L2E=","mod_revision":"15"}}]}}
{"result":{"header":{"revision":"16"}}}"#,
        );
        let mut it = msgs.into_iter();
        assert!(v.apply(0, it.next().unwrap()));
        assert_eq!(v.kvs[&b"/a".to_vec()].value, b"x");
        assert!(v.apply(0, it.next().unwrap()));
        assert!(v.kvs.is_empty());
        assert!(!v.apply(1, it.next().unwrap()));
        assert_eq!(v.revisions, vec![15, 16]);
    }

    #[tokio::test]
    async fn line_reader_is_tested_through_the_fixtures_in_the_integration_tests() {
        // The LineReader needs a live response; tests/etcd.rs covers it on a real etcd.
        let err = parse_watch_line(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "HTTP 503: no leader");
    }
}

//! Every size and time bound of the dashboard's HTTP reads, in one place (the README's
//! "Hostile inputs" table is this file). A body is read in chunks against a running
//! limit ([`super::read_body`]); a declared `Content-Length` over the limit is refused
//! before a byte of the body is read. Every exchange, body included, has a deadline.
//!
//! Worst case memory of reads in flight: each holds at most its limit, so e.g. 32 sidecar
//! scrapes that all run into the limit hold 32 × [`SIDECAR_MAX_BODY_BYTES`] at once.

use std::time::Duration;

/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

/// Sidecar `/stats/prometheus` and `/clusters?format=json` bodies (Envoy's unfiltered
/// stats for 120 upstream clusters are ~10 MB).
pub const SIDECAR_MAX_BODY_BYTES: usize = 32 * MIB;
/// Deadline of one sidecar scrape, body included (the default of `IoConfig::scrape_timeout`).
pub const SIDECAR_TIMEOUT: Duration = Duration::from_secs(2);

/// Consul answers (a bulk endpoint of a 2,000-service mesh is a few MB).
pub const CONSUL_MAX_BODY_BYTES: usize = 32 * MIB;
/// Time to open a connection to Consul (or etcd).
pub const REGISTRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one Consul request, body included; a blocking query gets its `wait` plus
/// `wait/16` on top (`registry::consul::blocking_deadline`).
pub const CONSUL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd unary answers (a whole snapshot is one txn answer).
pub const ETCD_MAX_BODY_BYTES: usize = 64 * MIB;
/// Deadline of one etcd unary call, body included; also the time a watch has to confirm
/// that it was created.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message (one line) of an etcd watch stream: the events of one revision (etcd
/// refuses requests over 1.5 MiB by default) or a batch of them; a watch holds one stream
/// per watched prefix, each with a message buffer.
pub const ETCD_MAX_MESSAGE_BYTES: usize = 16 * MIB;
/// A watch message that has begun must be complete (its line ended) within this time. An
/// idle stream (no message begun) may stay open: an idle watch is checked by a status call
/// every heartbeat instead.
pub const ETCD_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Prometheus query answers (a big mesh's bucket rates are a few MB).
pub const PROMETHEUS_MAX_BODY_BYTES: usize = 64 * MIB;
/// Shortest deadline of a Prometheus refresh (its interval, within these bounds).
pub const PROMETHEUS_MIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest deadline of a Prometheus refresh.
pub const PROMETHEUS_MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Error answers (any status other than success) are read up to this size and shown
/// shortened: a huge error page is cut, not refused.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// `answer larger than 32 MiB, cut off`: the text of a body cut at `limit`.
#[must_use]
pub fn too_large_text(limit: usize) -> String {
    format!("answer larger than {}, cut off", format_bytes(limit))
}

/// `no complete answer within 2 s`: the text of an exchange that missed its deadline.
#[must_use]
pub fn timeout_text(deadline: Duration) -> String {
    format!("no complete answer within {}", format_duration(deadline))
}

/// `32 MiB`, `100 KiB`, `12 bytes`.
#[must_use]
pub fn format_bytes(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// `3 s`, `250 ms`, `1.5 s`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else if ms > 1000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            too_large_text(32 * MIB),
            "answer larger than 32 MiB, cut off"
        );
        assert_eq!(
            too_large_text(1000),
            "answer larger than 1000 bytes, cut off"
        );
        assert_eq!(
            timeout_text(Duration::from_secs(2)),
            "no complete answer within 2 s"
        );
        assert_eq!(format_duration(Duration::from_millis(300)), "300 ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(format_bytes(64 * 1024), "64 KiB");
    }
}

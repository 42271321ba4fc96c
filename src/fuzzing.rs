//! The decoders the dashboard points at the outside world, run on arbitrary bytes, with the
//! properties that must hold whatever those bytes are. Each function is one fuzz target
//! (`fuzz/fuzz_targets/`, `scripts/fuzz.sh`) and, on generated inputs, a property test
//! (`tests/fuzz_props.rs`). A function returns normally on any input; it panics only when a
//! decoder panics or a property fails: that is a finding.
//!
//! The properties are what an operator must never see: a negative, infinite or `NaN` rate, an
//! error ratio outside 0..1, a percentile below 0 or beyond the histogram's bounds, a write
//! body that does not read back as what was written.

use crate::metrics::{
    self, ClusterCounters, LaneWindow, MergeOutcome, SidecarScrape, WindowStats, prometheus,
};
use crate::model::types::Split;
use crate::registry::consul::{self, kv};
use crate::registry::etcd::{layout, lines::LineBuf, wire};

/// A byte that splits one input into two scrapes (an earlier and a later one): form feed,
/// which a text-format body never holds.
pub const SCRAPE_SEPARATOR: u8 = 0x0c;

/// Envoy's `/stats/prometheus` parser, and the windows, merges and stats derived from two
/// scrapes (the input split at [`SCRAPE_SEPARATOR`]; without one, a scrape against itself).
///
/// # Panics
/// When a decoder panics or a property fails: a finding.
pub fn envoy_stats(data: &[u8]) {
    let (first, second) = match memchr::memchr(SCRAPE_SEPARATOR, data) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let a = scrape(first);
    let b = scrape(second);
    if let Some(a) = &a {
        check_scrape(a);
        for c in &a.clusters {
            // A scrape against itself: a zero window, or a gap when a value was bad.
            match metrics::window(c, c, 1.0) {
                Some(w) => {
                    assert!(c.bad_values == 0, "a bad value gave a window: {c:?}");
                    assert!(w.rps_completed == 0.0 && !w.latency_unknown, "{w:?}");
                    check_stats(&w.stats(), &w.buckets);
                }
                None => assert!(c.bad_values > 0, "no zero window: {c:?}"),
            }
        }
    }
    if let (Some(a), Some(b)) = (&a, &b) {
        check_scrape(b);
        check_windows(a, b);
    }
}

fn scrape(bytes: &[u8]) -> Option<SidecarScrape> {
    let text = String::from_utf8_lossy(bytes);
    let parsed = metrics::parse_envoy_stats(&text);
    if let Err(e) = &parsed {
        // The message names a line and cannot be empty.
        assert!(!e.to_string().is_empty());
    }
    parsed.ok()
}

fn check_scrape(s: &SidecarScrape) {
    assert!(
        s.clusters.windows(2).all(|w| w[0].id < w[1].id),
        "clusters not sorted and unique"
    );
    for c in &s.clusters {
        assert_eq!(s.cluster(&c.id).map(|x| &x.id), Some(&c.id));
        let les: Vec<f64> = c.rq_time.buckets.iter().map(|b| b.0).collect();
        assert!(
            les.iter().all(|le| !le.is_nan() && le.is_sign_positive()),
            "bucket bound NaN or negative: {les:?}"
        );
        assert!(
            les.windows(2).all(|w| w[0] < w[1]),
            "bounds not ascending: {les:?}"
        );
        let _ = metrics::breaker_state(c, false);
    }
    if let Some(up) = s.uptime_secs {
        assert!(up.is_finite());
    }
}

/// Every window of `b` against `a`, one by one and merged (both ways of merging), and
/// their stats.
fn check_windows(a: &SidecarScrape, b: &SidecarScrape) {
    let mut merged = LaneWindow::default();
    for cb in &b.clusters {
        let ca = a.cluster(&cb.id);
        let w = metrics::paired_window(a, b, ca, cb, 1.0);
        if let Some(w) = &w {
            assert!(cb.bad_values == 0 && ca.is_none_or(|ca| ca.bad_values == 0));
            check_window(w);
            merged.merge(w);
            check_window(&merged);
        }
        let zero = ClusterCounters::default();
        let ca = ca.unwrap_or(&zero);
        let restarted = matches!((a.uptime_secs, b.uptime_secs), (Some(ua), Some(ub)) if ub < ua);
        let mut fast = LaneWindow::default();
        match fast.merge_window(ca, cb, 1.0) {
            MergeOutcome::Merged => {
                let slow = metrics::window(ca, cb, 1.0);
                assert!(slow.is_some(), "merged without a window");
                if !restarted {
                    assert!(w.is_some());
                }
                check_window(&fast);
            }
            MergeOutcome::NoWindow => assert_eq!(metrics::window(ca, cb, 1.0), None),
            MergeOutcome::Slow => {}
        }
    }
}

fn check_window(w: &LaneWindow) {
    for v in [
        w.rps_completed,
        w.rps_upstream_total,
        w.completed,
        w.pending_overflow_per_s,
        w.overflow,
    ]
    .into_iter()
    .chain(w.xx)
    {
        assert!(v.is_finite() && v >= 0.0, "window value {v}: {w:?}");
    }
    check_stats(&w.stats(), &w.buckets);
}

/// What a lane shows: rate finite and ≥ 0, error ratio in 0..1, percentiles ≥ 0, within
/// the largest finite bucket bound (when `buckets` are given) and in order.
fn check_stats(s: &WindowStats, buckets: &[(f64, f64)]) {
    assert!(s.rps.is_finite() && s.rps >= 0.0, "rps {}", s.rps);
    if let Some(r) = s.err5xx_ratio {
        assert!((0.0..=1.0).contains(&r), "error ratio {r}");
    }
    let top = buckets
        .iter()
        .map(|b| b.0)
        .filter(|le| le.is_finite())
        .fold(0.0_f64, f64::max);
    let ps = [s.p50_ms, s.p95_ms, s.p99_ms];
    for p in ps.into_iter().flatten() {
        assert!(p.is_finite() && p >= 0.0, "percentile {p}: {buckets:?}");
        if !buckets.is_empty() {
            assert!(p <= top, "percentile {p} beyond the bounds: {buckets:?}");
        }
    }
    if let [Some(p50), Some(p95), Some(p99)] = ps {
        let slack = 1e-9 * p99.abs().max(1.0);
        assert!(p50 <= p95 + slack && p95 <= p99 + slack, "{ps:?}");
    }
}

/// Envoy's `/clusters?format=json` parser.
///
/// # Panics
/// When a decoder panics or a property fails: a finding.
pub fn envoy_clusters(data: &[u8]) {
    if let Ok(clusters) = metrics::parse_clusters_json(data) {
        for c in &clusters {
            let _ = metrics::cluster_id_from_name(&c.name);
            for h in &c.hosts {
                let _ = h.health.severity();
                let _ = h.health.as_str();
            }
        }
    }
}

/// Every Consul decoder (catalog, health, checks, config entries, KV), the error-answer
/// reader, and the write bodies built from what was read (they must read back the same).
///
/// # Panics
/// When a decoder panics or a property fails: a finding.
pub fn consul_json(data: &[u8]) {
    let status = data.first().map_or(500, |b| 400 + u16::from(*b % 200));
    assert!(
        !consul::error_from_response(status, data)
            .to_string()
            .is_empty()
    );
    let _ = consul::parse_catalog_services(data);
    let _ = consul::parse_health_service(data);
    let _ = consul::parse_health_service_nodes(data);
    let _ = consul::parse_checks(data);
    let _ = consul::parse_connect_metrics(data);
    let _ = consul::parse_resolver_subsets(data);
    let _ = consul::parse_resolver_list(data);
    let _ = consul::parse_service_defaults_list(data);
    let _ = consul::parse_service_defaults_protocol(data);
    let _ = consul::parse_proxy_defaults_protocol(data);
    let _ = consul::parse_proxy_defaults_list(data);
    if let Ok(list) = consul::parse_splitter_list(data) {
        for cfg in list.values() {
            check_split(&cfg.split);
        }
    }
    if let Ok(cfg) = consul::parse_splitter(data) {
        check_split(&cfg.split);
        if let Ok(body) = consul::splitter_request_body("web", &cfg.split) {
            let _ = serde_json::from_slice::<serde_json::Value>(&body)
                .unwrap_or_else(|e| panic!("a splitter body we built is not JSON: {e}"));
        }
    }
    if let Ok(stored) = serde_json::from_slice::<serde_json::Value>(data) {
        let split = Split::default();
        let _ = consul::merge_splitter_body("web", &stored, &split);
        let _ = kv::kv_split_body("web", &split, Some(&stored));
    }
    if let Ok(pairs) = kv::parse_kv_list(data) {
        let _ = kv::splits_from_kv(&pairs);
        for p in &pairs {
            let _ = kv::key_parts(&p.key);
        }
    }
    let _ = kv::decode_service_url(data);
    let _ = kv::key_parts(&String::from_utf8_lossy(data));
    if let Ok(split) = kv::parse_kv_split(data) {
        check_split(&split);
        // What we write reads back as the same split.
        let body = kv::kv_split_body("web", &split, None)
            .unwrap_or_else(|e| panic!("cannot write a split we read: {e}"));
        let back = kv::parse_kv_split(&body)
            .unwrap_or_else(|e| panic!("a split we wrote does not read back: {e}"));
        assert_eq!(back, split);
    }
}

fn check_split(split: &Split) {
    let _ = split.total();
    for e in &split.entries {
        let _ = split.weight_of(&e.subset);
    }
}

/// Every etcd decoder (unary answers, watch stream lines, the dashboard's key layout),
/// the error-answer reader, the stream line splitter, and the split body round trip.
///
/// # Panics
/// When a decoder panics or a property fails: a finding.
pub fn etcd_json(data: &[u8]) {
    let status = data.first().map_or(500, |b| 400 + u16::from(*b % 200));
    assert!(
        !wire::error_from_response(status, data)
            .to_string()
            .is_empty()
    );
    let _ = wire::decode::<wire::TxnResponse>("txn", data);
    let _ = wire::decode::<wire::PutResponse>("put", data);
    let _ = wire::decode::<wire::DeleteRangeResponse>("delete", data);
    let _ = wire::decode::<wire::LeaseGrantResponse>("lease", data);
    let _ = wire::decode::<wire::StreamLine<wire::LeaseKeepAliveResponse>>("keepalive", data);
    let _ = wire::decode::<wire::AuthenticateResponse>("auth", data);
    let _ = wire::decode::<wire::StatusResponse>("status", data);
    if let Ok(range) = wire::decode::<wire::RangeResponse>("range", data) {
        let _ = layout::snapshot_from_kvs(&range.kvs);
    }
    if let Ok(msg) = wire::parse_watch_line(data) {
        let _ = layout::snapshot_from_kvs(msg.events.iter().map(|e| &e.kv));
    }
    let _ = layout::classify(data);
    let _ = layout::parse_instance("web", "web-1", data);
    let _ = layout::parse_simple("web", data);
    if let Ok(split) = layout::parse_split(data) {
        check_split(&split);
        let body = layout::encode_split("web", &split)
            .unwrap_or_else(|e| panic!("cannot write a split we read: {e}"));
        assert_eq!(layout::parse_split(&body).as_ref(), Ok(&split));
    }
    stream_lines(data);
}

/// The stream splitter on `data`, cut into chunks whose sizes come from the data: the
/// lines are the trimmed non-empty segments between line ends, in order, until the first
/// one longer than the limit counted from its first byte that is not white space (an error,
/// and nothing after it); the buffer stays within the limit plus two chunks.
fn stream_lines(data: &[u8]) {
    const MAX: usize = 64;
    const MAX_CHUNK: usize = 97;
    let mut want: Vec<&[u8]> = Vec::new();
    let mut too_long = false;
    for segment in data.split(|b| *b == b'\n') {
        let lead = segment
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(segment.len());
        if segment.len() - lead > MAX {
            too_long = true;
            break;
        }
        let t = segment.trim_ascii();
        if !t.is_empty() {
            want.push(t);
        }
    }
    let mut buf = LineBuf::new(MAX);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut failed = false;
    let mut rest = data;
    let mut size_seed = data.len();
    'chunks: while !rest.is_empty() {
        size_seed = size_seed.wrapping_mul(31).wrapping_add(7);
        let n = (size_seed % MAX_CHUNK + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.push(chunk);
        loop {
            match buf.next_line() {
                Ok(Some(line)) => got.push(line),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'chunks;
                }
            }
        }
        assert!(
            buf.len() <= MAX + 2 * MAX_CHUNK,
            "buffer {} bytes",
            buf.len()
        );
    }
    if !failed {
        match buf.take_rest() {
            Ok(line) => got.extend(line),
            Err(_) => failed = true,
        }
    }
    assert_eq!(failed, too_long, "error iff a message is too long");
    assert!(got.len() <= want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_slice(), *w);
    }
    if !failed {
        assert_eq!(got.len(), want.len());
    }
}

/// The Prometheus HTTP API answer reader and the lanes assembled from its answers.
///
/// # Panics
/// When a decoder panics or a property fails: a finding.
pub fn prometheus_api(data: &[u8]) {
    let status = data.first().map_or(200, |b| 200 + u16::from(*b) * 2);
    let _ = prometheus::hint_for(status);
    if let Err(e) = prometheus::parse_response(status, data) {
        assert!(!e.to_string().is_empty());
    }
    let _ = prometheus::parse_value(&String::from_utf8_lossy(data));
    let _ = prometheus::parse_duration(&String::from_utf8_lossy(data));
    if let Ok(answer) = prometheus::parse_response(200, data) {
        for s in &answer.samples {
            let _ = prometheus::lane_id(s);
        }
        let lanes = prometheus::assemble(&answer, &answer, &answer, &answer, 60.0);
        for lane in &lanes.lanes {
            if let Some(w) = &lane.window {
                check_window(w);
            }
            if let Some(stats) = lane.stats() {
                check_stats(&stats, &[]);
            }
        }
    }
}

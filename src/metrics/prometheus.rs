//! Prometheus as the metrics source: the `PromQL` the dashboard sends to a Prometheus server
//! that scrapes the sidecars, and the answers of its HTTP API (`/api/v1/query`) folded into
//! the same per-lane [`LaneWindow`]s the direct sidecar scrapes give. Pure: no I/O.
//!
//! # Queries
//!
//! Four instant queries per refresh, whatever the number of services ([`QueryKind::ALL`]),
//! each grouped by the lane labels [`LANE_LABELS`] (a lane is caller → callee subset; see
//! `GUIDE.md`, "Derivations"):
//!
//! - [`QueryKind::Rates`]: `sum by (lane) (rate(…[window]))` of completed requests, requests
//!   that reached an upstream, the response classes (`envoy_cluster_upstream_rq_xx`) and the
//!   two overflow counters, in one answer told apart by a `stat` label (`label_replace … or …`);
//! - [`QueryKind::Buckets`]: `sum by (lane, le) (rate(…_bucket[window]))`, the latency
//!   histogram (needed to merge lanes over callers: percentiles are never averaged);
//! - [`QueryKind::Quantiles`]: `histogram_quantile(q, <the same sum>)` for p50, p95 and p99
//!   in one answer told apart by a `quantile` label; these are the lane's percentiles, the
//!   numbers an operator's own Grafana shows;
//! - [`QueryKind::Gauges`]: `max by (__name__, job, instance, lane)` of the breaker gauges
//!   (`circuit_breakers_default_{rq,rq_pending,cx}_open`, `membership_{healthy,total}`,
//!   `outlier_detection_ejections_active`), so the breaker state is folded per sidecar with
//!   the same [`breaker_state`] as the direct path, worst wins over the caller's sidecars.
//!
//! The rates query goes first; the other three are evaluated at its evaluation time (the
//! server's clock, `time=`), so the four answers describe the same window: separate
//! evaluations a few milliseconds apart can straddle a scrape and disagree slightly.
//!
//! A lane seen in any answer but without a completed-requests rate (fewer than two samples
//! in the window) has no window: "no data", never 0 rps.
//!
//! Rates are per second; a window's counts (`completed`, `xx`, `overflow`, bucket counts) are
//! rate × window length, i.e. Prometheus's `increase`, so merged windows weigh lanes by their
//! traffic exactly as merged sidecar deltas do. Prometheus handles counter resets itself.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ClusterCounters, ClusterId, LaneWindow, WindowStats, breaker_state};
use crate::model::types::BreakerState;

/// Default rate window: four scrapes at Prometheus's usual 15 s interval.
pub const DEFAULT_WINDOW: Duration = Duration::from_mins(1);
/// Default interval between two refreshes (four queries each).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The labels a lane is grouped by: Consul's (source, destination service and subset), and
/// for non-Consul Envoys `local_cluster` and `envoy_cluster_name` (one lane per cluster).
/// For a Consul cluster the last two follow from the first three, so they split nothing.
pub const LANE_LABELS: &str = "consul_source_service, local_cluster, consul_destination_service, \
     consul_destination_service_subset, envoy_cluster_name";

/// Where the Prometheus server is and how to query it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusSource {
    /// `http(s)://host:port[/prefix]`, no trailing slash.
    pub base_url: String,
    /// Range of `rate(…[window])`: at least two of Prometheus's scrape intervals.
    pub window: Duration,
    /// Time between two refreshes.
    pub interval: Duration,
}

impl PrometheusSource {
    /// A source with the default window and interval.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            window: DEFAULT_WINDOW,
            interval: DEFAULT_INTERVAL,
        }
    }

    /// The instant-query endpoint, `…/api/v1/query`.
    #[must_use]
    pub fn query_url(&self) -> String {
        format!("{}/api/v1/query", self.base_url)
    }
}

/// The four queries of one refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryKind {
    /// Request, response-class and overflow rates.
    Rates,
    /// Latency bucket rates.
    Buckets,
    /// p50 / p95 / p99 by `histogram_quantile`.
    Quantiles,
    /// Breaker and membership gauges per sidecar.
    Gauges,
}

impl QueryKind {
    /// Every query of one refresh, in the order [`assemble`] takes the answers.
    pub const ALL: [Self; 4] = [Self::Rates, Self::Buckets, Self::Quantiles, Self::Gauges];

    /// Short name for error texts.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Rates => "rates",
            Self::Buckets => "latency buckets",
            Self::Quantiles => "latency quantiles",
            Self::Gauges => "breaker gauges",
        }
    }
}

/// `(stat label, counter family, extra grouping label)` of the rates query.
const RATE_STATS: [(&str, &str, &str); 5] = [
    ("completed", "envoy_cluster_upstream_rq_completed", ""),
    ("upstream_total", "envoy_cluster_upstream_rq_total", ""),
    (
        "xx",
        "envoy_cluster_upstream_rq_xx",
        ", envoy_response_code_class",
    ),
    (
        "pending_overflow",
        "envoy_cluster_upstream_rq_pending_overflow",
        "",
    ),
    ("cx_overflow", "envoy_cluster_upstream_cx_overflow", ""),
];

/// The quantiles of the quantiles query, as its `quantile` label writes them.
const QUANTILES: [(&str, f64); 3] = [("0.5", 0.5), ("0.95", 0.95), ("0.99", 0.99)];

/// The gauge families of the gauges query.
const GAUGES: &str = "envoy_cluster_(membership_healthy|membership_total|\
     outlier_detection_ejections_active|circuit_breakers_default_(rq|rq_pending|cx)_open)";

/// A duration in `PromQL` syntax: `30s`, `1500ms`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a Prometheus-style duration: one or more `<integer><unit>` with units `ms`, `s`,
/// `m`, `h`, `d` (`30s`, `1m30s`, `500ms`). `None` when malformed or zero.
#[must_use]
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (number, tail) = rest.split_at(digits);
        let n: u64 = number.parse().ok()?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
        rest = tail;
    }
    (total_ms > 0).then(|| Duration::from_millis(total_ms))
}

/// `sum by (lane, le) (rate(envoy_cluster_upstream_rq_time_bucket[window]))`.
fn bucket_rates(window: &str) -> String {
    format!("sum by ({LANE_LABELS}, le) (rate(envoy_cluster_upstream_rq_time_bucket[{window}]))")
}

/// The `PromQL` text of one query over `window`.
#[must_use]
pub fn promql(kind: QueryKind, window: Duration) -> String {
    let w = format_duration(window);
    match kind {
        QueryKind::Rates => RATE_STATS
            .iter()
            .map(|(stat, family, extra)| {
                format!(
                    "label_replace(sum by ({LANE_LABELS}{extra}) (rate({family}[{w}])), \
                     \"stat\", \"{stat}\", \"\", \"\")"
                )
            })
            .collect::<Vec<_>>()
            .join(" or "),
        QueryKind::Buckets => bucket_rates(&w),
        QueryKind::Quantiles => QUANTILES
            .iter()
            .map(|(label, q)| {
                format!(
                    "label_replace(histogram_quantile({q}, {}), \"quantile\", \"{label}\", \"\", \"\")",
                    bucket_rates(&w)
                )
            })
            .collect::<Vec<_>>()
            .join(" or "),
        QueryKind::Gauges => {
            format!("max by (__name__, job, instance, {LANE_LABELS}) ({{__name__=~\"{GAUGES}\"}})")
        }
    }
}

/// One element of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VectorSample {
    /// Labels (Prometheus omits empty ones).
    pub labels: BTreeMap<String, String>,
    /// The value; `NaN` and `±Inf` are kept as such.
    pub value: f64,
}

impl VectorSample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A successful answer to an instant query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryAnswer {
    /// The instant vector.
    pub samples: Vec<VectorSample>,
    /// The evaluation time (Unix seconds, the server's clock), from the samples'
    /// timestamps; `None` for an empty vector.
    pub eval_time: Option<f64>,
    /// The server's `warnings` (e.g. a partial answer), to show the operator.
    pub warnings: Vec<String>,
}

/// Why an answer of the Prometheus HTTP API cannot be used. The text is shown as is (the
/// caller adds which query and the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// `{"status":"error","errorType":…,"error":…}`, with the HTTP status it came with.
    #[error("HTTP {status} {error_type}: {error}{}", hint_for(*status).unwrap_or_default())]
    Api {
        /// HTTP status (400 `bad_data`, 422 `execution`, 503 `timeout`…).
        status: u16,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error` text.
        error: String,
    },
    /// A non-2xx answer that is not Prometheus's JSON (a proxy page, a 404 text).
    #[error("HTTP {status}: {body}{}", hint_for(*status).unwrap_or_default())]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// A 2xx answer that is not the API's JSON.
    #[error("not a Prometheus API answer: {detail}: {body}")]
    NotApi {
        /// What is wrong.
        detail: String,
        /// Start of the body.
        body: String,
    },
    /// The query gave a scalar, string or range result instead of an instant vector.
    #[error("expected an instant vector, got a {0} result")]
    NotVector(String),
}

/// A hint for the operator after an HTTP status, if one helps.
#[must_use]
pub fn hint_for(status: u16) -> Option<&'static str> {
    match status {
        401 | 403 => Some(
            " — Prometheus wants credentials; spine-dash sends none (put it behind no auth on a trusted network, or use a read-only proxy)",
        ),
        404 => Some(
            " — is this a Prometheus server? A path prefix (--web.route-prefix) belongs in the URL: prometheus://host:9090/prefix",
        ),
        503 => Some(
            " — the server is busy or the query timed out: a shorter window (?window=30s) makes the queries cheaper",
        ),
        _ => None,
    }
}

/// The most of a body kept in an error text.
const BODY_CHARS: usize = 300;

fn body_snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(BODY_CHARS)
        .collect()
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct ApiSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// A sample value as the API writes it: a decimal string, or `NaN`, `+Inf`, `-Inf`.
#[must_use]
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Parses one answer of `/api/v1/query` given its HTTP status and body.
pub fn parse_response(status: u16, body: &[u8]) -> Result<QueryAnswer, ResponseError> {
    let ok = (200..300).contains(&status);
    let parsed: ApiResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) if ok => {
            return Err(ResponseError::NotApi {
                detail: e.to_string(),
                body: body_snippet(body),
            });
        }
        Err(_) => {
            return Err(ResponseError::Status {
                status,
                body: body_snippet(body),
            });
        }
    };
    if parsed.status != "success" {
        return Err(ResponseError::Api {
            status,
            error_type: parsed.error_type.unwrap_or_else(|| "error".into()),
            error: parsed.error.unwrap_or_else(|| parsed.status.clone()),
        });
    }
    let Some(data) = parsed.data else {
        return Err(ResponseError::NotApi {
            detail: "no `data`".into(),
            body: body_snippet(body),
        });
    };
    if data.result_type != "vector" {
        return Err(ResponseError::NotVector(data.result_type));
    }
    let items: Vec<ApiSample> =
        serde_json::from_value(data.result).map_err(|e| ResponseError::NotApi {
            detail: format!("bad vector: {e}"),
            body: body_snippet(body),
        })?;
    let mut samples = Vec::with_capacity(items.len());
    let eval_time = items.first().map(|i| i.value.0);
    for item in items {
        let Some(value) = parse_value(&item.value.1) else {
            return Err(ResponseError::NotApi {
                detail: format!("sample value {:?} is not a number", item.value.1),
                body: body_snippet(body),
            });
        };
        samples.push(VectorSample {
            labels: item.metric,
            value,
        });
    }
    Ok(QueryAnswer {
        samples,
        eval_time,
        warnings: parsed.warnings,
    })
}

/// The lane a sample belongs to, by the same rules as the text-format fold: the `consul_*`
/// labels when present, else `envoy_cluster_name` (one lane); `None` without either.
#[must_use]
pub fn lane_id(sample: &VectorSample) -> Option<ClusterId> {
    let (service, subset) = if let Some(service) = sample.label("consul_destination_service") {
        (
            service,
            sample
                .label("consul_destination_service_subset")
                .unwrap_or(""),
        )
    } else {
        (sample.label("envoy_cluster_name")?, "")
    };
    let source = sample
        .label("consul_source_service")
        .or_else(|| sample.label("local_cluster"))
        .unwrap_or("");
    Some(ClusterId {
        source: source.to_owned(),
        service: service.to_owned(),
        subset: subset.to_owned(),
    })
}

/// One lane as Prometheus sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromLane {
    /// Caller, callee service, subset.
    pub id: ClusterId,
    /// The window over the query range; `None` = no data (no completed-requests rate).
    pub window: Option<LaneWindow>,
    /// p50, p95, p99 from `histogram_quantile`, ms; `None` when `NaN`/infinite or when
    /// several series groups fed this lane (their quantiles cannot be merged).
    pub quantiles_ms: [Option<f64>; 3],
}

impl PromLane {
    /// The lane's stats: the window's, with Prometheus's own percentiles where it gave them
    /// (they agree with the window's buckets; the test against a real Prometheus checks it).
    #[must_use]
    pub fn stats(&self) -> Option<WindowStats> {
        let mut stats = self.window.as_ref()?.stats();
        let [p50, p95, p99] = self.quantiles_ms;
        stats.p50_ms = p50.or(stats.p50_ms);
        stats.p95_ms = p95.or(stats.p95_ms);
        stats.p99_ms = p99.or(stats.p99_ms);
        Some(stats)
    }
}

/// Every lane of one refresh.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaneSamples {
    /// Lanes sorted by id, Envoy's local clusters (`local_app`…) included.
    pub lanes: Vec<PromLane>,
    /// The range of the rates, seconds.
    pub window_secs: f64,
    /// Warnings of the server, from any of the queries.
    pub warnings: Vec<String>,
}

/// Per-lane accumulator of [`assemble`].
#[derive(Debug, Default)]
struct Acc {
    completed: Option<f64>,
    /// Series groups that gave a completed rate (more than one: quantiles unusable).
    groups: u32,
    upstream_total: f64,
    xx: [f64; 5],
    pending_overflow: f64,
    cx_overflow: f64,
    buckets: Vec<(f64, f64)>,
    quantiles: [Option<f64>; 3],
    quantile_seen: [u32; 3],
    breaker: BreakerState,
}

fn xx_index(class: Option<&str>) -> Option<usize> {
    match class? {
        "1" => Some(0),
        "2" => Some(1),
        "3" => Some(2),
        "4" => Some(3),
        "5" => Some(4),
        _ => None,
    }
}

/// A gauge value as a count (gauges are integers; negatives and `NaN` are absent).
fn gauge_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

/// Folds the answers of one refresh (in [`QueryKind::ALL`] order) into lanes.
/// `window_secs` is the query range.
#[must_use]
pub fn assemble(
    rates: &QueryAnswer,
    buckets: &QueryAnswer,
    quantiles: &QueryAnswer,
    gauges: &QueryAnswer,
    window_secs: f64,
) -> LaneSamples {
    let mut lanes: BTreeMap<ClusterId, Acc> = BTreeMap::new();

    for s in &rates.samples {
        // A rate is never negative: a server that says so is not believed.
        let (Some(id), true) = (lane_id(s), s.value.is_finite() && s.value >= 0.0) else {
            continue;
        };
        let acc = lanes.entry(id).or_default();
        match s.label("stat") {
            Some("completed") => {
                *acc.completed.get_or_insert(0.0) += s.value;
                acc.groups += 1;
            }
            Some("upstream_total") => acc.upstream_total += s.value,
            Some("xx") => {
                if let Some(i) = xx_index(s.label("envoy_response_code_class"))
                    && let Some(slot) = acc.xx.get_mut(i)
                {
                    *slot += s.value;
                }
            }
            Some("pending_overflow") => acc.pending_overflow += s.value,
            Some("cx_overflow") => acc.cx_overflow += s.value,
            _ => {}
        }
    }

    for s in &buckets.samples {
        let Some(id) = lane_id(s) else { continue };
        let Some(le) = s.label("le").and_then(parse_value) else {
            continue;
        };
        if le.is_nan() || le < 0.0 || !(s.value.is_finite() && s.value >= 0.0) {
            continue;
        }
        let le = le + 0.0; // `-0` is the bound 0
        let acc = lanes.entry(id).or_default();
        if let Some(b) = acc.buckets.iter_mut().find(|b| b.0.total_cmp(&le).is_eq()) {
            b.1 += s.value;
        } else {
            acc.buckets.push((le, s.value));
        }
    }

    for s in &quantiles.samples {
        let Some(id) = lane_id(s) else { continue };
        let Some(i) = QUANTILES
            .iter()
            .position(|(label, _)| s.label("quantile") == Some(*label))
        else {
            continue;
        };
        let acc = lanes.entry(id).or_default();
        acc.quantile_seen[i] += 1;
        acc.quantiles[i] = (s.value.is_finite() && s.value >= 0.0).then_some(s.value);
    }

    // Gauges per sidecar (job, instance) and lane, then the breaker state per sidecar.
    let mut per_sidecar: BTreeMap<(ClusterId, &str, &str), ClusterCounters> = BTreeMap::new();
    for s in &gauges.samples {
        let (Some(id), Some(name), Some(n)) =
            (lane_id(s), s.label("__name__"), gauge_count(s.value))
        else {
            continue;
        };
        let key = (
            id,
            s.label("job").unwrap_or(""),
            s.label("instance").unwrap_or(""),
        );
        let c = per_sidecar.entry(key).or_default();
        let add = |slot: &mut Option<u64>| *slot = Some(slot.unwrap_or(0).saturating_add(n));
        match name.strip_prefix("envoy_cluster_").unwrap_or("") {
            "membership_healthy" => add(&mut c.membership_healthy),
            "membership_total" => add(&mut c.membership_total),
            "outlier_detection_ejections_active" => add(&mut c.ejections_active),
            "circuit_breakers_default_rq_open" => c.cb_rq_open = c.cb_rq_open.saturating_add(n),
            "circuit_breakers_default_rq_pending_open" => {
                c.cb_rq_pending_open = c.cb_rq_pending_open.saturating_add(n);
            }
            "circuit_breakers_default_cx_open" => c.cb_cx_open = c.cb_cx_open.saturating_add(n),
            _ => {}
        }
    }
    for ((id, _, _), c) in per_sidecar {
        let acc = lanes.entry(id).or_default();
        acc.breaker = acc.breaker.worst(breaker_state(&c, false));
    }

    let lanes = lanes
        .into_iter()
        .map(|(id, mut acc)| {
            let window = acc.completed.map(|completed| {
                acc.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                let overflow = (acc.pending_overflow + acc.cx_overflow) * window_secs;
                let rose = if overflow > 0.0 {
                    BreakerState::Saturated
                } else {
                    BreakerState::Closed
                };
                LaneWindow {
                    latency_unknown: false,
                    rps_completed: completed,
                    rps_upstream_total: acc.upstream_total,
                    completed: completed * window_secs,
                    xx: acc.xx.map(|r| r * window_secs),
                    pending_overflow_per_s: acc.pending_overflow,
                    overflow,
                    buckets: acc
                        .buckets
                        .iter()
                        .map(|&(le, r)| (le, r * window_secs))
                        .collect(),
                    breaker: acc.breaker.worst(rose),
                }
            });
            // Sums of huge rates can overflow to infinity: no window rather than an
            // infinite rate.
            let window = window.filter(|w| {
                [
                    w.rps_completed,
                    w.rps_upstream_total,
                    w.completed,
                    w.overflow,
                    w.pending_overflow_per_s,
                ]
                .iter()
                .chain(&w.xx)
                .chain(w.buckets.iter().map(|b| &b.1))
                .all(|v| v.is_finite())
            });
            let usable = acc.groups <= 1 && acc.quantile_seen.iter().all(|&n| n <= 1);
            PromLane {
                id,
                window,
                quantiles_ms: if usable { acc.quantiles } else { [None; 3] },
            }
        })
        .collect();
    let warnings = [rates, buckets, quantiles, gauges]
        .iter()
        .flat_map(|a| a.warnings.iter().cloned())
        .collect();
    LaneSamples {
        lanes,
        window_secs,
        warnings,
    }
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "expected values are exact in f64 or compared with a tolerance"
)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64) -> VectorSample {
        VectorSample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }

    fn answer(samples: Vec<VectorSample>) -> QueryAnswer {
        QueryAnswer {
            samples,
            ..QueryAnswer::default()
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_hours(2)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_hours(24)));
        for bad in ["", "0s", "30", "s", "1x", "1.5s", "-1s", "1m 30s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_mins(1)), "60s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn query_texts() {
        let w = Duration::from_secs(30);
        let rates = promql(QueryKind::Rates, w);
        assert_eq!(rates.matches(" or ").count(), 4);
        assert!(rates.starts_with(
            "label_replace(sum by (consul_source_service, local_cluster, consul_destination_service, \
             consul_destination_service_subset, envoy_cluster_name) \
             (rate(envoy_cluster_upstream_rq_completed[30s])), \"stat\", \"completed\", \"\", \"\")"
        ));
        assert!(rates.contains("envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx[30s]))"));
        assert_eq!(
            promql(QueryKind::Buckets, w),
            format!(
                "sum by ({LANE_LABELS}, le) (rate(envoy_cluster_upstream_rq_time_bucket[30s]))"
            )
        );
        let q = promql(QueryKind::Quantiles, w);
        assert!(q.starts_with("label_replace(histogram_quantile(0.5, sum by ("));
        assert!(q.contains("histogram_quantile(0.99, "));
        assert!(q.ends_with("\"quantile\", \"0.99\", \"\", \"\")"));
        let g = promql(QueryKind::Gauges, w);
        assert!(g.starts_with("max by (__name__, job, instance, consul_source_service, "));
        assert!(g.ends_with(
            "({__name__=~\"envoy_cluster_(membership_healthy|membership_total|outlier_detection_ejections_active|circuit_breakers_default_(rq|rq_pending|cx)_open)\"})"
        ));
        assert_eq!(
            PrometheusSource::new("http://p:9090/prom").query_url(),
            "http://p:9090/prom/api/v1/query"
        );
    }

    #[test]
    fn values() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_value("1.5e+03"), Some(1500.0));
        assert_eq!(parse_value("x"), None);
    }

    #[test]
    fn lane_identity_rules() {
        let consul = sample(
            &[
                ("consul_source_service", "gateway"),
                ("local_cluster", "gateway"),
                ("consul_destination_service", "identity"),
                ("consul_destination_service_subset", "v2"),
                ("envoy_cluster_name", "v2"),
            ],
            1.0,
        );
        assert_eq!(
            lane_id(&consul),
            Some(ClusterId {
                source: "gateway".into(),
                service: "identity".into(),
                subset: "v2".into(),
            })
        );
        let plain = sample(
            &[("local_cluster", "web"), ("envoy_cluster_name", "backend")],
            1.0,
        );
        assert_eq!(
            lane_id(&plain),
            Some(ClusterId {
                source: "web".into(),
                service: "backend".into(),
                subset: String::new(),
            })
        );
        assert_eq!(lane_id(&sample(&[("job", "x")], 1.0)), None);
    }

    #[test]
    fn errors_keep_prometheus_text() {
        let e = parse_response(
            400,
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "HTTP 400 bad_data: 1:5: parse error: unexpected"
        );
        let e = parse_response(404, b"404 page not found\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("HTTP 404: 404 page not found — is this a Prometheus server?"),
            "{e}"
        );
        let e = parse_response(200, b"<html>hi</html>").unwrap_err();
        assert!(matches!(e, ResponseError::NotApi { .. }), "{e}");
        let e = parse_response(
            200,
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
        )
        .unwrap_err();
        assert_eq!(e, ResponseError::NotVector("scalar".into()));
        let e = parse_response(
            200,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"zz"]}]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"zz\" is not a number"), "{e}");
        let ok = parse_response(
            200,
            br#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["partial"]}"#,
        )
        .unwrap();
        assert_eq!(ok.warnings, vec!["partial".to_owned()]);
        assert_eq!(ok.eval_time, None);
        let one = parse_response(
            200,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795819097.204,"NaN"]}]}}"#,
        )
        .unwrap();
        assert_eq!(one.eval_time, Some(1_795_819_097.204));
    }

    const GW_ID: [(&str, &str); 3] = [
        ("consul_source_service", "gateway"),
        ("consul_destination_service", "identity"),
        ("consul_destination_service_subset", "v2"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        GW_ID.iter().chain(extra).copied().collect()
    }

    #[test]
    fn assemble_builds_windows_like_the_direct_path() {
        let rates = answer(vec![
            sample(&with(&[("stat", "completed")]), 10.0),
            sample(&with(&[("stat", "upstream_total")]), 9.0),
            sample(
                &with(&[("stat", "xx"), ("envoy_response_code_class", "2")]),
                9.0,
            ),
            sample(
                &with(&[("stat", "xx"), ("envoy_response_code_class", "5")]),
                1.0,
            ),
            sample(&with(&[("stat", "pending_overflow")]), 1.0),
            sample(&with(&[("stat", "cx_overflow")]), 0.0),
        ]);
        let buckets = answer(vec![
            sample(&with(&[("le", "+Inf")]), 10.0),
            sample(&with(&[("le", "10")]), 5.0),
            sample(&with(&[("le", "1.8e+06")]), 10.0),
        ]);
        let quantiles = answer(vec![
            sample(&with(&[("quantile", "0.5")]), 9.5),
            sample(&with(&[("quantile", "0.99")]), f64::NAN),
        ]);
        let gauges = answer(vec![
            sample(
                &with(&[
                    ("__name__", "envoy_cluster_membership_total"),
                    ("instance", "a"),
                ]),
                3.0,
            ),
            sample(
                &with(&[
                    ("__name__", "envoy_cluster_membership_healthy"),
                    ("instance", "a"),
                ]),
                2.0,
            ),
            sample(
                &with(&[
                    (
                        "__name__",
                        "envoy_cluster_outlier_detection_ejections_active",
                    ),
                    ("instance", "a"),
                ]),
                1.0,
            ),
        ]);
        let out = assemble(&rates, &buckets, &quantiles, &gauges, 30.0);
        assert_eq!(out.lanes.len(), 1);
        let lane = &out.lanes[0];
        let w = lane.window.clone().unwrap();
        assert_eq!(
            w,
            LaneWindow {
                latency_unknown: false,
                rps_completed: 10.0,
                rps_upstream_total: 9.0,
                completed: 300.0,
                xx: [0.0, 270.0, 0.0, 0.0, 30.0],
                pending_overflow_per_s: 1.0,
                overflow: 30.0,
                buckets: vec![(10.0, 150.0), (1.8e6, 300.0), (f64::INFINITY, 300.0)],
                // Ejecting 1 of 3 on the gauges, but the overflow rose: saturated wins.
                breaker: BreakerState::Saturated,
            }
        );
        let s = lane.stats().unwrap();
        assert_eq!(s.p50_ms, Some(9.5), "Prometheus's own quantile");
        // NaN from Prometheus: the window's buckets give it.
        assert_eq!(s.p99_ms, crate::metrics::quantile_ms(&w.buckets, 0.99));
        assert!((s.err5xx_ratio.unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn no_rate_is_no_data_and_breakers_fold_per_sidecar() {
        let gauge = |name: &'static str, instance: &'static str, v: f64| {
            sample(&with(&[("__name__", name), ("instance", instance)]), v)
        };
        // Sidecar a: 1 of 2 ejected; sidecar b: nothing healthy. Worst wins: open.
        let gauges = answer(vec![
            gauge("envoy_cluster_membership_total", "a", 2.0),
            gauge("envoy_cluster_membership_healthy", "a", 1.0),
            gauge("envoy_cluster_outlier_detection_ejections_active", "a", 1.0),
            gauge("envoy_cluster_membership_total", "b", 2.0),
            gauge("envoy_cluster_membership_healthy", "b", 0.0),
        ]);
        let empty = answer(Vec::new());
        let out = assemble(&empty, &empty, &empty, &gauges, 30.0);
        assert_eq!(out.lanes.len(), 1);
        assert_eq!(out.lanes[0].window, None, "no rate: no data, not 0 rps");
        assert_eq!(out.lanes[0].stats(), None);

        // With a rate: the breaker is the worst over sidecars (open).
        let rates = answer(vec![sample(&with(&[("stat", "completed")]), 0.0)]);
        let out = assemble(&rates, &empty, &empty, &gauges, 30.0);
        let s = out.lanes[0].stats().unwrap();
        assert_eq!(s.rps, 0.0, "a real zero rate is 0 rps");
        assert_eq!(s.breaker, BreakerState::Open);
        assert_eq!(s.err5xx_ratio, None);

        // Only sidecar a: ejecting 1 of 2 (not summed over sidecars into 1 of 4).
        let only_a = answer(gauges.samples[..3].to_vec());
        let out = assemble(&rates, &empty, &empty, &only_a, 30.0);
        assert_eq!(
            out.lanes[0].stats().unwrap().breaker,
            BreakerState::Ejecting {
                ejected: 1,
                total: 2
            }
        );
    }

    #[test]
    fn two_groups_of_one_lane_merge_and_drop_quantiles() {
        // Two non-Consul clusters named alike after the identity rules: rates add up and
        // quantiles (which cannot be merged) fall back to the summed buckets.
        let g = |name: &'static str, extra: &[(&'static str, &'static str)], v: f64| {
            let mut labels = vec![("local_cluster", "web"), ("envoy_cluster_name", "api")];
            labels.push(("consul_destination_custom_hash", name));
            labels.extend_from_slice(extra);
            sample(&labels, v)
        };
        let rates = answer(vec![
            g("a", &[("stat", "completed")], 2.0),
            g("b", &[("stat", "completed")], 3.0),
        ]);
        let buckets = answer(vec![
            g("a", &[("le", "10")], 2.0),
            g("a", &[("le", "+Inf")], 2.0),
            g("b", &[("le", "10")], 0.0),
            g("b", &[("le", "+Inf")], 3.0),
        ]);
        let quantiles = answer(vec![
            g("a", &[("quantile", "0.5")], 5.0),
            g("b", &[("quantile", "0.5")], 10.0),
        ]);
        let empty = answer(Vec::new());
        let out = assemble(&rates, &buckets, &quantiles, &empty, 10.0);
        assert_eq!(out.lanes.len(), 1);
        let lane = &out.lanes[0];
        assert_eq!(lane.quantiles_ms, [None; 3]);
        let w = lane.window.as_ref().unwrap();
        assert_eq!(w.rps_completed, 5.0);
        assert_eq!(w.buckets, vec![(10.0, 20.0), (f64::INFINITY, 50.0)]);
        assert_eq!(lane.stats().unwrap().p50_ms, Some(10.0));
    }
}

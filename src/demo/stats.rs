//! Envoy-style cluster statistics of a demo sidecar and their rendering as Envoy's
//! `/stats/prometheus` (text format 0.0.4) with Consul Connect's labels: one `# TYPE` line
//! per family, counters then gauges then histograms, each group sorted by name, integer
//! counters and gauges, `upstream_rq_time` with Envoy's default buckets in milliseconds.
//! `?usedonly` and `?filter=<regex>` work as Envoy's ([`StatsQuery`]): the regex is matched
//! (partially, as Envoy's) against each stat's internal dotted name, e.g.
//! `cluster.v1.identity.default.dc1.internal.<td>.consul.upstream_rq_2xx` or `server.uptime`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds (ms) of Envoy's default histogram buckets, as Envoy prints them.
const BUCKETS: [(f64, &str); 19] = [
    (0.5, "0.5"),
    (1.0, "1"),
    (5.0, "5"),
    (10.0, "10"),
    (25.0, "25"),
    (50.0, "50"),
    (100.0, "100"),
    (250.0, "250"),
    (500.0, "500"),
    (1000.0, "1000"),
    (2500.0, "2500"),
    (5000.0, "5000"),
    (10_000.0, "10000"),
    (30_000.0, "30000"),
    (60_000.0, "60000"),
    (300_000.0, "300000"),
    (600_000.0, "600000"),
    (1_800_000.0, "1.8e+06"),
    (3_600_000.0, "3.6e+06"),
];

/// Counters and gauges of one Envoy cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterStats {
    /// Requests that reached an upstream connection.
    pub rq_total: u64,
    /// Responses, including local replies (circuit open, connect failure, timeout).
    pub rq_completed: u64,
    /// Responses by status code; `_xx` classes are derived from it.
    pub rq_by_code: BTreeMap<u16, u64>,
    /// Requests refused by a request limit (`max_requests` or `max_pending_requests`).
    pub rq_pending_overflow: u64,
    /// Requests that had to wait for a slot.
    pub rq_pending_total: u64,
    /// Requests waiting for a slot now (gauge).
    pub rq_pending_active: u64,
    /// Connection attempts that failed.
    pub cx_connect_fail: u64,
    /// Requests answered locally because no host could take them.
    pub cx_none_healthy: u64,
    /// Requests that timed out upstream.
    pub rq_timeout: u64,
    /// Hosts ejected by outlier detection, ever.
    pub ejections_enforced_total: u64,
    /// Requests in flight.
    pub rq_active: u64,
    time_buckets: [u64; BUCKETS.len()],
    time_count: u64,
    time_sum_ms: f64,
}

impl ClusterStats {
    /// Counts one response with `code` (completed, by code, by class).
    pub(crate) fn count_response(&mut self, code: u16) {
        self.rq_completed += 1;
        *self.rq_by_code.entry(code).or_default() += 1;
    }

    /// Records an upstream request time.
    pub(crate) fn record_time(&mut self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.time_count += 1;
        self.time_sum_ms += ms;
        for (count, (bound, _)) in self.time_buckets.iter_mut().zip(BUCKETS) {
            if ms <= bound {
                *count += 1;
            }
        }
    }

    /// Sets the request-time histogram at once: `count` requests taking `sum_ms` in all,
    /// `cdf(bound)` of them at most `bound` ms (the synthetic spine's traffic model).
    pub(crate) fn set_time_histogram(&mut self, count: u64, sum_ms: f64, cdf: impl Fn(f64) -> f64) {
        self.time_count = count;
        self.time_sum_ms = sum_ms;
        for (slot, (bound, _)) in self.time_buckets.iter_mut().zip(BUCKETS) {
            *slot = ((count as f64) * cdf(bound).clamp(0.0, 1.0)).floor() as u64;
        }
    }

    fn by_class(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for (code, n) in &self.rq_by_code {
            *out.entry(code / 100).or_default() += n;
        }
        out
    }
}

/// Gauges computed from the registry at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Membership {
    /// Hosts not critical and not ejected.
    pub healthy: u64,
    /// All hosts of the cluster.
    pub total: u64,
    /// Hosts ejected now.
    pub ejections_active: u64,
}

/// Circuit-breaker gauges of one cluster (default priority).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BreakerGauges {
    /// `max_requests` reached.
    pub rq_open: bool,
    /// `max_pending_requests` reached.
    pub rq_pending_open: bool,
    /// Headroom (`remaining_*`, as with Envoy's `track_remaining`); `None` when not tracked.
    pub remaining: Option<Remaining>,
}

/// Headroom below each default-priority threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Remaining {
    /// `remaining_cx`.
    pub cx: u64,
    /// `remaining_pending`.
    pub pending: u64,
    /// `remaining_retries`.
    pub retries: u64,
    /// `remaining_rq`.
    pub rq: u64,
}

/// The query of a `/stats/prometheus` request: Envoy's `usedonly` and `filter`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsQuery {
    /// `usedonly`: leave out counters that are 0 and histograms without samples.
    pub used_only: bool,
    /// `filter=<regex>`: keep only stats whose internal name matches (partial match).
    pub filter: Option<regex::Regex>,
}

impl StatsQuery {
    /// Parses a raw query string (`usedonly&filter=…`, percent-encoded; `+` stays `+`, as
    /// Envoy reads it). An invalid regex is an error text for a 400 answer, as Envoy's.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut out = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "usedonly" => out.used_only = true,
                "filter" => {
                    let text = percent_decode(value)
                        .ok_or_else(|| format!("Invalid filter encoding: {value}"))?;
                    let re = regex::Regex::new(&text)
                        .map_err(|e| format!("Invalid re2 regex: {text}: {e}"))?;
                    out.filter = Some(re);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether the stat with this internal name is kept by `filter`.
    pub(crate) fn keeps(&self, internal_name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|re| re.is_match(internal_name))
    }
}

/// `%XX` decoding of a query value; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One cluster to render.
pub(crate) struct ClusterView<'a> {
    /// Labels before `envoy_response_code` (fixed + `consul_destination_*`), no braces.
    pub labels: &'a str,
    /// `envoy_cluster_name`: first dot-token of the cluster name.
    pub cluster_name: &'a str,
    /// The whole cluster name (`v1.identity.default.dc1.internal.<td>.consul`, `local_app`):
    /// internal stat names are `cluster.<full_name>.<stat>`.
    pub full_name: &'a str,
    /// Counters.
    pub stats: &'a ClusterStats,
    /// Membership gauges.
    pub membership: Membership,
    /// Whether the cluster has outlier detection (upstreams yes, `local_app` no).
    pub outlier_detection: bool,
    /// Circuit-breaker gauges.
    pub breakers: BreakerGauges,
}

/// Escapes a label value for the text format.
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels every series of a Consul sidecar carries.
pub(crate) fn fixed_labels(source_service: &str, datacenter: &str) -> String {
    let s = escape_label(source_service);
    format!(
        "local_cluster=\"{s}\",consul_source_service=\"{s}\",consul_source_namespace=\"default\",\
         consul_source_partition=\"default\",consul_source_datacenter=\"{}\"",
        escape_label(datacenter)
    )
}

/// Labels of an upstream cluster (fixed + `consul_destination_*`), and its
/// `envoy_cluster_name` (the subset if any, else the service).
pub(crate) fn upstream_labels(
    fixed: &str,
    service: &str,
    subset: &str,
    datacenter: &str,
    trust_domain: &str,
) -> (String, String) {
    let target = if subset.is_empty() {
        format!("{service}.default.{datacenter}")
    } else {
        format!("{subset}.{service}.default.{datacenter}")
    };
    let full_target = format!("{target}.internal.{trust_domain}");
    let labels = format!(
        "{fixed},consul_destination_custom_hash=\"\",consul_destination_service_subset=\"{}\",\
         consul_destination_service=\"{}\",consul_destination_namespace=\"default\",\
         consul_destination_partition=\"\",consul_destination_datacenter=\"{}\",\
         consul_destination_routing_type=\"internal\",consul_destination_trust_domain=\"{}\",\
         consul_destination_target=\"{}\",consul_destination_full_target=\"{}\"",
        escape_label(subset),
        escape_label(service),
        escape_label(datacenter),
        escape_label(trust_domain),
        escape_label(&target),
        escape_label(&full_target),
    );
    let cluster_name = target.split('.').next().unwrap_or_default().to_owned();
    (labels, cluster_name)
}

/// The Consul Connect name of an upstream cluster:
/// `[<subset>.]<service>.default.<dc>.internal.<trust-domain>.consul`.
pub(crate) fn cluster_full_name(
    service: &str,
    subset: &str,
    datacenter: &str,
    trust_domain: &str,
) -> String {
    let service_part = if subset.is_empty() {
        service.to_owned()
    } else {
        format!("{subset}.{service}")
    };
    format!("{service_part}.default.{datacenter}.internal.{trust_domain}.consul")
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

struct Families {
    map: BTreeMap<(Type, &'static str), String>,
}

impl Families {
    fn line(&mut self, ty: Type, name: &'static str, labels: &str, value: impl std::fmt::Display) {
        let body = self.map.entry((ty, name)).or_default();
        let _ = writeln!(body, "{name}{{{labels}}} {value}");
    }
}

/// Renders a whole `/stats/prometheus` page. With `query.used_only`, counters that are 0
/// and histograms without samples are left out (Envoy's `?usedonly`); with
/// `query.filter`, only stats whose internal name matches.
pub(crate) fn render(
    fixed: &str,
    clusters: &[ClusterView<'_>],
    uptime_secs: u64,
    query: &StatsQuery,
) -> String {
    let mut f = Families {
        map: BTreeMap::new(),
    };
    let used_only = query.used_only;
    for c in clusters {
        let base = format!(
            "{},envoy_cluster_name=\"{}\"",
            c.labels,
            escape_label(c.cluster_name)
        );
        let cn = escape_label(c.cluster_name);
        // The internal name of one of this cluster's stats is kept by the filter.
        let keep = |stat: &str| {
            query.filter.is_none() || query.keeps(&format!("cluster.{}.{stat}", c.full_name))
        };
        let s = c.stats;
        let mut counter = |name: &'static str, stat: &str, v: u64| {
            if (v > 0 || !used_only) && keep(stat) {
                f.line(Type::Counter, name, &base, v);
            }
        };
        counter(
            "envoy_cluster_upstream_rq_total",
            "upstream_rq_total",
            s.rq_total,
        );
        counter(
            "envoy_cluster_upstream_rq_completed",
            "upstream_rq_completed",
            s.rq_completed,
        );
        counter(
            "envoy_cluster_upstream_rq_pending_overflow",
            "upstream_rq_pending_overflow",
            s.rq_pending_overflow,
        );
        counter(
            "envoy_cluster_upstream_rq_pending_total",
            "upstream_rq_pending_total",
            s.rq_pending_total,
        );
        counter(
            "envoy_cluster_upstream_cx_connect_fail",
            "upstream_cx_connect_fail",
            s.cx_connect_fail,
        );
        counter(
            "envoy_cluster_upstream_cx_none_healthy",
            "upstream_cx_none_healthy",
            s.cx_none_healthy,
        );
        counter(
            "envoy_cluster_upstream_rq_timeout",
            "upstream_rq_timeout",
            s.rq_timeout,
        );
        if c.outlier_detection {
            counter(
                "envoy_cluster_outlier_detection_ejections_enforced_total",
                "outlier_detection.ejections_enforced_total",
                s.ejections_enforced_total,
            );
        }
        for (class, n) in s.by_class() {
            if !keep(&format!("upstream_rq_{class}xx")) {
                continue;
            }
            let labels = format!(
                "{},envoy_response_code_class=\"{class}\",envoy_cluster_name=\"{cn}\"",
                c.labels
            );
            f.line(Type::Counter, "envoy_cluster_upstream_rq_xx", &labels, n);
        }
        for (code, n) in &s.rq_by_code {
            if !keep(&format!("upstream_rq_{code}")) {
                continue;
            }
            let labels = format!(
                "{},envoy_response_code=\"{code}\",envoy_cluster_name=\"{cn}\"",
                c.labels
            );
            f.line(Type::Counter, "envoy_cluster_upstream_rq", &labels, n);
        }

        let m = c.membership;
        let mut gauge = |name: &'static str, stat: &str, v: u64| {
            if keep(stat) {
                f.line(Type::Gauge, name, &base, v);
            }
        };
        gauge(
            "envoy_cluster_membership_healthy",
            "membership_healthy",
            m.healthy,
        );
        gauge(
            "envoy_cluster_membership_total",
            "membership_total",
            m.total,
        );
        if c.outlier_detection {
            gauge(
                "envoy_cluster_outlier_detection_ejections_active",
                "outlier_detection.ejections_active",
                m.ejections_active,
            );
        }
        let b = c.breakers;
        for (name, stat, open) in [
            (
                "envoy_cluster_circuit_breakers_default_cx_open",
                "circuit_breakers.default.cx_open",
                false,
            ),
            (
                "envoy_cluster_circuit_breakers_default_cx_pool_open",
                "circuit_breakers.default.cx_pool_open",
                false,
            ),
            (
                "envoy_cluster_circuit_breakers_default_rq_open",
                "circuit_breakers.default.rq_open",
                b.rq_open,
            ),
            (
                "envoy_cluster_circuit_breakers_default_rq_pending_open",
                "circuit_breakers.default.rq_pending_open",
                b.rq_pending_open,
            ),
            (
                "envoy_cluster_circuit_breakers_default_rq_retry_open",
                "circuit_breakers.default.rq_retry_open",
                false,
            ),
        ] {
            gauge(name, stat, u64::from(open));
        }
        if let Some(r) = b.remaining {
            for (name, stat, v) in [
                (
                    "envoy_cluster_circuit_breakers_default_remaining_cx",
                    "circuit_breakers.default.remaining_cx",
                    r.cx,
                ),
                (
                    "envoy_cluster_circuit_breakers_default_remaining_pending",
                    "circuit_breakers.default.remaining_pending",
                    r.pending,
                ),
                (
                    "envoy_cluster_circuit_breakers_default_remaining_retries",
                    "circuit_breakers.default.remaining_retries",
                    r.retries,
                ),
                (
                    "envoy_cluster_circuit_breakers_default_remaining_rq",
                    "circuit_breakers.default.remaining_rq",
                    r.rq,
                ),
            ] {
                gauge(name, stat, v);
            }
        }
        gauge(
            "envoy_cluster_upstream_rq_active",
            "upstream_rq_active",
            s.rq_active,
        );
        gauge(
            "envoy_cluster_upstream_rq_pending_active",
            "upstream_rq_pending_active",
            s.rq_pending_active,
        );

        if (s.time_count > 0 || !used_only) && keep("upstream_rq_time") {
            let name = "envoy_cluster_upstream_rq_time";
            let body = f.map.entry((Type::Histogram, name)).or_default();
            for (count, (_, le)) in s.time_buckets.iter().zip(BUCKETS) {
                let _ = writeln!(body, "{name}_bucket{{{base},le=\"{le}\"}} {count}");
            }
            let _ = writeln!(body, "{name}_bucket{{{base},le=\"+Inf\"}} {}", s.time_count);
            let _ = writeln!(body, "{name}_sum{{{base}}} {}", s.time_sum_ms);
            let _ = writeln!(body, "{name}_count{{{base}}} {}", s.time_count);
        }
    }
    if query.keeps("server.uptime") {
        f.line(Type::Gauge, "envoy_server_uptime", fixed, uptime_secs);
    }
    if query.keeps("server.live") {
        f.line(Type::Gauge, "envoy_server_live", fixed, 1);
    }

    let mut out = String::new();
    for ((ty, name), body) in &f.map {
        let _ = writeln!(out, "# TYPE {name} {}", ty.as_str());
        out.push_str(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used_only() -> StatsQuery {
        StatsQuery {
            used_only: true,
            filter: None,
        }
    }

    fn sample() -> String {
        let fixed = fixed_labels("gateway", "dc1");
        let (labels, name) = upstream_labels(&fixed, "identity", "v2", "dc1", "td");
        let mut stats = ClusterStats {
            rq_total: 3,
            ..ClusterStats::default()
        };
        stats.count_response(200);
        stats.count_response(200);
        stats.count_response(503);
        stats.record_time(Duration::from_millis(7));
        let (photo_labels, photo_name) = upstream_labels(&fixed, "photo", "", "dc1", "td");
        let idle = ClusterStats::default();
        let views = [
            ClusterView {
                labels: &labels,
                cluster_name: &name,
                full_name: "v2.identity.default.dc1.internal.td.consul",
                stats: &stats,
                membership: Membership {
                    healthy: 1,
                    total: 1,
                    ejections_active: 0,
                },
                outlier_detection: true,
                breakers: BreakerGauges::default(),
            },
            ClusterView {
                labels: &photo_labels,
                cluster_name: &photo_name,
                full_name: "photo.default.dc1.internal.td.consul",
                stats: &idle,
                membership: Membership::default(),
                outlier_detection: true,
                breakers: BreakerGauges::default(),
            },
        ];
        render(&fixed, &views, 12, &StatsQuery::default())
    }

    #[test]
    fn families_are_grouped_by_type_then_sorted_by_name() {
        let text = sample();
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let rank = |t: &str| {
            ["counter", "gauge", "histogram"]
                .iter()
                .position(|x| *x == t)
        };
        for pair in types.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                (rank(a.1), a.0) < (rank(b.1), b.0),
                "{a:?} must come before {b:?}"
            );
        }
        assert!(types.contains(&("envoy_cluster_upstream_rq_time", "histogram")));
        assert!(types.contains(&("envoy_server_uptime", "gauge")));
    }

    #[test]
    fn labels_follow_consul_and_cluster_name_is_the_first_token() {
        let text = sample();
        let line = text
            .lines()
            .find(|l| l.starts_with("envoy_cluster_upstream_rq{") && l.contains("\"503\""))
            .unwrap();
        assert_eq!(
            line,
            "envoy_cluster_upstream_rq{local_cluster=\"gateway\",consul_source_service=\"gateway\",\
             consul_source_namespace=\"default\",consul_source_partition=\"default\",\
             consul_source_datacenter=\"dc1\",consul_destination_custom_hash=\"\",\
             consul_destination_service_subset=\"v2\",consul_destination_service=\"identity\",\
             consul_destination_namespace=\"default\",consul_destination_partition=\"\",\
             consul_destination_datacenter=\"dc1\",consul_destination_routing_type=\"internal\",\
             consul_destination_trust_domain=\"td\",consul_destination_target=\"v2.identity.default.dc1\",\
             consul_destination_full_target=\"v2.identity.default.dc1.internal.td\",\
             envoy_response_code=\"503\",envoy_cluster_name=\"v2\"} 1"
        );
        assert!(text.contains("envoy_response_code_class=\"2\",envoy_cluster_name=\"v2\"} 2\n"));
        assert!(text.contains(
            "consul_destination_service_subset=\"\",consul_destination_service=\"photo\""
        ));
        assert!(text.contains("envoy_cluster_name=\"photo\"} 0\n"));
    }

    #[test]
    fn histogram_is_cumulative_with_envoy_bounds() {
        let text = sample();
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("envoy_cluster_upstream_rq_time_bucket") && l.contains("\"v2\"")
            })
            .collect();
        assert_eq!(buckets.len(), 20);
        assert!(buckets[2].ends_with("le=\"5\"} 0"));
        assert!(buckets[3].ends_with("le=\"10\"} 1"));
        assert!(buckets[17].ends_with("le=\"1.8e+06\"} 1"));
        assert!(buckets[19].ends_with("le=\"+Inf\"} 1"));
        assert!(text.contains("envoy_cluster_name=\"v2\"} 7\n"), "sum in ms");
    }

    #[test]
    fn breaker_gauges_and_pending_families_render_with_envoy_names() {
        let fixed = fixed_labels("gateway", "dc1");
        let (labels, name) = upstream_labels(&fixed, "payment", "", "dc1", "td");
        let stats = ClusterStats {
            rq_pending_overflow: 7,
            rq_pending_total: 12,
            rq_pending_active: 10,
            rq_active: 10,
            ..ClusterStats::default()
        };
        let views = [ClusterView {
            labels: &labels,
            cluster_name: &name,
            full_name: "payment.default.dc1.internal.td.consul",
            stats: &stats,
            membership: Membership::default(),
            outlier_detection: true,
            breakers: BreakerGauges {
                rq_open: true,
                rq_pending_open: true,
                remaining: Some(Remaining {
                    cx: 1014,
                    pending: 0,
                    retries: 3,
                    rq: 0,
                }),
            },
        }];
        let text = render(&fixed, &views, 1, &used_only());
        let value = |family: &str| -> Option<&str> {
            text.lines()
                .find(|l| l.starts_with(&format!("{family}{{")))
                .and_then(|l| l.rsplit_once(' '))
                .map(|(_, v)| v)
        };
        for (family, want) in [
            ("envoy_cluster_upstream_rq_pending_overflow", "7"),
            ("envoy_cluster_upstream_rq_pending_total", "12"),
            ("envoy_cluster_upstream_rq_pending_active", "10"),
            ("envoy_cluster_circuit_breakers_default_rq_open", "1"),
            (
                "envoy_cluster_circuit_breakers_default_rq_pending_open",
                "1",
            ),
            ("envoy_cluster_circuit_breakers_default_cx_open", "0"),
            ("envoy_cluster_circuit_breakers_default_cx_pool_open", "0"),
            ("envoy_cluster_circuit_breakers_default_rq_retry_open", "0"),
            (
                "envoy_cluster_circuit_breakers_default_remaining_cx",
                "1014",
            ),
            (
                "envoy_cluster_circuit_breakers_default_remaining_pending",
                "0",
            ),
            (
                "envoy_cluster_circuit_breakers_default_remaining_retries",
                "3",
            ),
            ("envoy_cluster_circuit_breakers_default_remaining_rq", "0"),
        ] {
            assert_eq!(value(family), Some(want), "{family}");
        }
        assert!(text.contains("# TYPE envoy_cluster_upstream_rq_pending_overflow counter\n"));
        assert!(text.contains("# TYPE envoy_cluster_circuit_breakers_default_rq_open gauge\n"));
        assert!(
            !text.contains("envoy_cluster_upstream_rq_total{"),
            "overflow is not in upstream_rq_total"
        );
        assert_eq!(
            cluster_full_name("identity", "v2", "dc1", "td"),
            "v2.identity.default.dc1.internal.td.consul"
        );
        assert_eq!(
            cluster_full_name("photo", "", "dc1", "td"),
            "photo.default.dc1.internal.td.consul"
        );
    }

    #[test]
    fn used_only_drops_zero_counters_and_empty_histograms() {
        let fixed = fixed_labels("portal", "dc1");
        let (labels, name) = upstream_labels(&fixed, "gateway", "", "dc1", "td");
        let stats = ClusterStats::default();
        let views = [ClusterView {
            labels: &labels,
            cluster_name: &name,
            full_name: "gateway.default.dc1.internal.td.consul",
            stats: &stats,
            membership: Membership::default(),
            outlier_detection: true,
            breakers: BreakerGauges::default(),
        }];
        let text = render(&fixed, &views, 1, &used_only());
        assert!(!text.contains("envoy_cluster_upstream_rq_total"));
        assert!(!text.contains("upstream_rq_time"));
        assert!(text.contains("envoy_cluster_membership_total"));
    }

    #[test]
    fn filter_matches_internal_names_like_envoy() {
        let q = StatsQuery::parse(Some(
            "usedonly&filter=%5Ecluster%5C..%2B%5C.(upstream_rq_2xx%7Cmembership_total)%24%7Cserver.uptime",
        ))
        .unwrap();
        assert!(q.used_only);
        let text = sample_with(&q);
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            families,
            [
                "envoy_cluster_upstream_rq_xx counter",
                "envoy_cluster_membership_total gauge",
                "envoy_server_uptime gauge",
            ]
        );
        // Only the 2xx class: `upstream_rq_5xx` is another internal name.
        assert!(text.contains("envoy_response_code_class=\"2\""));
        assert!(!text.contains("envoy_response_code_class=\"5\""));
        // Partial match, as Envoy's: `membership` keeps every membership stat.
        let q = StatsQuery::parse(Some("filter=membership")).unwrap();
        let text = sample_with(&q);
        assert!(text.contains("envoy_cluster_membership_healthy{"));
        assert!(!text.contains("envoy_server_uptime"));
        assert!(StatsQuery::parse(Some("filter=(")).is_err());
        assert!(StatsQuery::parse(Some("filter=%zz")).is_err());
        // `+` is a regex `+`, not a space.
        let q = StatsQuery::parse(Some("filter=^server.up+time$")).unwrap();
        assert!(q.keeps("server.uptime"));
    }

    fn sample_with(q: &StatsQuery) -> String {
        let fixed = fixed_labels("gateway", "dc1");
        let (labels, name) = upstream_labels(&fixed, "identity", "v2", "dc1", "td");
        let mut stats = ClusterStats {
            rq_total: 3,
            ..ClusterStats::default()
        };
        stats.count_response(200);
        stats.count_response(503);
        stats.record_time(Duration::from_millis(7));
        let views = [ClusterView {
            labels: &labels,
            cluster_name: &name,
            full_name: "v2.identity.default.dc1.internal.td.consul",
            stats: &stats,
            membership: Membership {
                healthy: 1,
                total: 1,
                ejections_active: 0,
            },
            outlier_detection: true,
            breakers: BreakerGauges::default(),
        }];
        render(&fixed, &views, 12, q)
    }
}

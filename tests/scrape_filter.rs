//! The Envoy `filter` regex the scraper sends (`io::scrape::ENVOY_STATS_FILTER`) against
//! the Envoy fixtures: on the raw dotted names of `/stats?format=json` it keeps exactly the
//! stats the parser folds; applied to the Prometheus fixtures (each sample mapped back to
//! its internal name, as Envoy matches it) it changes nothing the parser returns, while the
//! body shrinks to about a third.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use regex::Regex;
use spine_dash::io::scrape::ENVOY_STATS_FILTER;
use spine_dash::metrics::parse_envoy_stats;

const PROMETHEUS: [(&str, &str); 3] = [
    (
        "stats_prometheus.txt",
        include_str!("fixtures/envoy/stats_prometheus.txt"),
    ),
    (
        "stats_prometheus_t1.txt",
        include_str!("fixtures/envoy/stats_prometheus_t1.txt"),
    ),
    (
        "stats_prometheus_circuit_breakers_track_remaining.txt",
        include_str!("fixtures/envoy/stats_prometheus_circuit_breakers_track_remaining.txt"),
    ),
];
const STATS_JSON: &str = include_str!("fixtures/envoy/stats.json");

fn filter() -> Regex {
    Regex::new(ENVOY_STATS_FILTER).unwrap()
}

/// The per-cluster stats `metrics::parse` folds (API brief §2.3), by internal name.
fn folded(stat: &str) -> bool {
    matches!(
        stat,
        "upstream_rq_total"
            | "upstream_rq_completed"
            | "upstream_rq_1xx"
            | "upstream_rq_2xx"
            | "upstream_rq_3xx"
            | "upstream_rq_4xx"
            | "upstream_rq_5xx"
            | "upstream_rq_pending_overflow"
            | "upstream_cx_overflow"
            | "upstream_rq_time"
            | "membership_healthy"
            | "membership_total"
            | "outlier_detection.ejections_active"
            | "circuit_breakers.default.rq_open"
            | "circuit_breakers.default.rq_pending_open"
            | "circuit_breakers.default.cx_open"
    )
}

#[test]
fn on_raw_names_it_keeps_exactly_the_folded_stats() {
    let re = filter();
    let doc: serde_json::Value = serde_json::from_str(STATS_JSON).unwrap();
    let mut names: Vec<String> = Vec::new();
    for entry in doc["stats"].as_array().unwrap() {
        if let Some(name) = entry["name"].as_str() {
            names.push(name.to_owned());
        }
        if let Some(h) = entry["histograms"]["computed_quantiles"].as_array() {
            names.extend(h.iter().map(|q| q["name"].as_str().unwrap().to_owned()));
        }
    }
    assert!(names.len() > 200, "{}", names.len());
    let mut kept = 0;
    for name in &names {
        // Consul cluster names end in `.consul`; what follows is the stat.
        let want = match name.split_once(".consul.") {
            Some((_, stat)) => folded(stat),
            None => name == "server.uptime",
        };
        assert_eq!(re.is_match(name), want, "{name}");
        kept += usize::from(want);
    }
    assert!(kept >= 30, "{kept} of {} kept", names.len());
}

/// The internal dotted name Envoy matches `filter` against, for one Prometheus sample.
fn internal_name(line: &str, histograms: &[String]) -> String {
    let (family, rest) = line.split_at(line.find(['{', ' ']).unwrap());
    let labels: BTreeMap<&str, &str> = rest
        .strip_prefix('{')
        .and_then(|r| r.split_once('}'))
        .map(|(inner, _)| {
            inner
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k, v.trim_end_matches('"'))
                })
                .collect()
        })
        .unwrap_or_default();
    let family = histograms
        .iter()
        .find(|h| {
            family
                .strip_prefix(h.as_str())
                .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        })
        .map_or(family, String::as_str);
    if let Some(stat) = family.strip_prefix("envoy_server_") {
        return format!("server.{stat}");
    }
    if let Some(stat) = family.strip_prefix("envoy_cluster_manager_") {
        return format!("cluster_manager.{stat}");
    }
    if let Some(stat) = family.strip_prefix("envoy_http_") {
        return format!("http.{}.{stat}", labels["envoy_http_conn_manager_prefix"]);
    }
    let stat = family.strip_prefix("envoy_cluster_").unwrap();
    let cluster = match labels.get("consul_destination_full_target") {
        Some(t) if !t.is_empty() => format!("{t}.consul"),
        _ => labels["envoy_cluster_name"].to_owned(),
    };
    let mut stat = stat.to_owned();
    for (flat, dotted) in [
        ("external_", "external."),
        ("internal_", "internal."),
        ("outlier_detection_", "outlier_detection."),
        ("circuit_breakers_default_", "circuit_breakers.default."),
        ("circuit_breakers_high_", "circuit_breakers.high."),
    ] {
        if let Some(rest) = stat.strip_prefix(flat) {
            stat = format!("{dotted}{rest}");
        }
    }
    if let Some(class) = labels.get("envoy_response_code_class") {
        stat = stat.replace("upstream_rq_xx", &format!("upstream_rq_{class}xx"));
    } else if let Some(code) = labels.get("envoy_response_code") {
        stat = stat.replace("upstream_rq", &format!("upstream_rq_{code}"));
    }
    format!("cluster.{cluster}.{stat}")
}

/// `body` as Envoy would serve it with `filter`: samples of other stats left out.
fn filtered(body: &str, re: &Regex) -> String {
    let histograms: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .map(str::to_owned)
        .collect();
    let mut out = String::new();
    for line in body.lines().filter(|l| {
        l.starts_with('#') || l.is_empty() || re.is_match(&internal_name(l, &histograms))
    }) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn on_the_prometheus_fixtures_it_changes_nothing_the_parser_returns() {
    let re = filter();
    for (name, body) in PROMETHEUS {
        let small = filtered(body, &re);
        let full = parse_envoy_stats(body).unwrap();
        let kept = parse_envoy_stats(&small).unwrap();
        assert!(!full.clusters.is_empty(), "{name}");
        assert_eq!(kept, full, "{name}");
        let ratio = small.len() as f64 / body.len() as f64;
        println!(
            "{name}: {} → {} bytes ({:.0} %)",
            body.len(),
            small.len(),
            ratio * 100.0
        );
        assert!(ratio < 0.5, "{name}: {ratio}");
    }
    // The mapping itself: a few samples by hand.
    let h = ["envoy_cluster_upstream_rq_time".to_owned()];
    assert_eq!(
        internal_name(
            "envoy_cluster_upstream_rq_time_bucket{consul_destination_full_target=\"v1.identity.default.dc1.internal.td\",envoy_cluster_name=\"v1\",le=\"5\"} 3",
            &h
        ),
        "cluster.v1.identity.default.dc1.internal.td.consul.upstream_rq_time"
    );
    assert_eq!(
        internal_name(
            "envoy_cluster_external_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"local_app\"} 3",
            &h
        ),
        "cluster.local_app.external.upstream_rq_2xx"
    );
}

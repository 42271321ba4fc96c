//! Envoy `/stats/prometheus` parse throughput (issue 6, benchmark 1): our parser
//! (`parse_envoy_stats`, parse + fold into per-cluster counters) against the
//! `prometheus-parse` crate (the common Rust choice) on the same bytes, and against a plain
//! `memchr` line scan of those bytes (the ceiling: find every line and its value, nothing
//! more). Prints MB/s, median and p90 per body, and the ratios.
//!
//! The body is the real Envoy fixture (`tests/fixtures/envoy/stats_prometheus.txt`: Consul
//! Connect labels, counters, gauges, `upstream_rq_time` histograms) with every upstream
//! cluster copied under new destination-service names until it passes 10 MB: one sidecar
//! with a few hundred upstream clusters, families grouped as Envoy prints them.
//!
//! `cargo bench --bench parse` runs the full measurement; under `cargo test --all-targets`
//! (no `--bench` argument) it is a smoke run on a small body.

use std::time::{Duration, Instant};

use spine_dash::metrics::parse_envoy_stats;

const FIXTURE: &str = include_str!("../tests/fixtures/envoy/stats_prometheus.txt");

/// The fixture with each destination-service sample repeated `copies` times under the names
/// `identity`, `identity-1`, … (local clusters, comments and server stats once).
fn body(copies: usize) -> String {
    const KEY: &str = "consul_destination_service=\"";
    let mut out = String::with_capacity(FIXTURE.len() * copies);
    for line in FIXTURE.lines() {
        let Some(at) = line.find(KEY) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let value_start = at + KEY.len();
        let Some(len) = line[value_start..].find('"') else {
            continue;
        };
        let (head, tail) = line.split_at(value_start + len);
        for k in 0..copies {
            out.push_str(head);
            if k > 0 {
                out.push('-');
                out.push_str(&k.to_string());
            }
            out.push_str(tail);
            out.push('\n');
        }
    }
    out
}

/// The ceiling: every line found with `memchr`, its value found with `memrchr` (a checksum
/// of value lengths so the work is not optimised away).
fn memchr_scan(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut acc = 0usize;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[start..end];
        if let Some(space) = memchr::memrchr(b' ', line) {
            acc += line.len() - space;
        }
        start = end + 1;
    }
    acc
}

/// `prometheus-parse` as its README uses it: owned lines into `Scrape::parse`.
fn prometheus_parse(text: &str) -> usize {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).map_or(0, |s| s.samples.len())
}

fn ours(text: &str) -> usize {
    parse_envoy_stats(text).map_or(0, |s| s.clusters.len())
}

/// A parser under test: body in, a result count out (so the work is not optimised away).
type Parser = fn(&str) -> usize;

/// Median and p90 of `reps` runs of `f` on `text`.
fn time(reps: usize, text: &str, f: Parser) -> (Duration, Duration, usize) {
    let mut out = 0;
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            out = std::hint::black_box(f(std::hint::black_box(text)));
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() * 9 / 10], out)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (min_bytes, reps): (usize, usize) = if full { (10_000_000, 15) } else { (1, 1) };
    let mut copies = 1;
    let mut text = body(copies);
    while text.len() < min_bytes {
        copies = (copies * min_bytes).div_ceil(text.len()).max(copies + 1);
        text = body(copies);
    }
    let lines = memchr::memchr_iter(b'\n', text.as_bytes()).count();
    println!(
        "parse  body {:.1} MB, {lines} lines: the fixture's 3 upstream services ×{copies}",
        text.len() as f64 / 1e6,
    );
    let mb = text.len() as f64 / 1e6;
    let runs: [(&str, Parser); 3] = [
        ("ours (parse_envoy_stats)", ours),
        ("prometheus-parse 0.2", prometheus_parse),
        ("memchr line scan", memchr_scan),
    ];
    let mut speeds = Vec::new();
    for (name, f) in runs {
        // Fewer runs for the slow peer: its figure is stable well before 15.
        let n = if name.starts_with("prometheus") {
            reps.div_ceil(3)
        } else {
            reps
        };
        let (median, p90, out) = time(n, &text, f);
        let speed = mb / median.as_secs_f64();
        println!(
            "parse  {name:<26} median {:>9.2} ms   p90 {:>9.2} ms   {speed:>8.0} MB/s   (result {out}, {n} runs)",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
        );
        speeds.push(speed);
    }
    println!(
        "parse  ours / prometheus-parse = {:.1}×   ours / memchr scan = {:.1} %",
        speeds[0] / speeds[1],
        100.0 * speeds[0] / speeds[2]
    );
}

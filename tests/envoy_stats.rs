//! Envoy `/stats/prometheus` fixtures (T0, T0+10 s) through the parser and the window maths,
//! compared with the oracle `expected_derived_t0_t1.json` (`API_BRIEF.md` §2.5), plus whole-struct
//! comparisons and a no-panic mutation loop.

use std::collections::BTreeMap;

use serde_json::Value;
use spine_dash::metrics::{
    ClusterCounters, ClusterId, Histogram, SidecarScrape, StatsError, parse_envoy_stats,
    quantile_ms, sidecar_windows, window,
};
use spine_dash::model::types::BreakerState;

const T0: &str = include_str!("fixtures/envoy/stats_prometheus.txt");
const T1: &str = include_str!("fixtures/envoy/stats_prometheus_t1.txt");
const ORACLE: &str = include_str!("fixtures/envoy/expected_derived_t0_t1.json");
const CB_TRACK_REMAINING: &str =
    include_str!("fixtures/envoy/stats_prometheus_circuit_breakers_track_remaining.txt");

/// The oracle's key: `service/subset`, or `service` when there is no subset.
fn key(id: &ClusterId) -> String {
    if id.subset.is_empty() {
        id.service.clone()
    } else {
        format!("{}/{}", id.service, id.subset)
    }
}

fn by_key(scrape: &SidecarScrape) -> BTreeMap<String, &ClusterCounters> {
    scrape.clusters.iter().map(|c| (key(&c.id), c)).collect()
}

/// ±1 % relative, with a small absolute floor for values near 0.
fn assert_close(what: &str, got: f64, want: f64) {
    let tolerance = (want.abs() * 0.01).max(1e-6);
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, oracle {want} (tolerance {tolerance})"
    );
}

/// An oracle number that may be `null`, against an optional value.
fn assert_close_opt(what: &str, got: Option<f64>, want: &Value) {
    match (got, want.as_f64()) {
        (Some(g), Some(w)) => assert_close(what, g, w),
        (None, None) => {}
        _ => panic!("{what}: got {got:?}, oracle {want}"),
    }
}

fn gauge(what: &str, got: Option<u64>, want: &Value) {
    assert_eq!(
        got.map(|g| g as f64),
        want.as_f64(),
        "{what}: got {got:?}, oracle {want}"
    );
}

#[test]
fn windows_t0_t1_match_the_oracle_for_every_cluster() {
    let oracle: Value = serde_json::from_str(ORACLE).unwrap();
    let dt = oracle["scrape_interval_s"].as_f64().unwrap();
    assert!((dt - 10.0).abs() < f64::EPSILON);
    let expected = oracle["clusters"].as_object().unwrap();

    let t0 = parse_envoy_stats(T0).unwrap();
    let t1 = parse_envoy_stats(T1).unwrap();
    let (a, b) = (by_key(&t0), by_key(&t1));
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the parsed clusters are exactly the oracle's"
    );
    assert!(t1.clusters.iter().all(|c| c.id.source == "portal"));

    let breakers: BTreeMap<&str, BreakerState> = [
        ("identity/v1", BreakerState::Closed),
        ("identity/v2", BreakerState::Closed),
        ("local_agent", BreakerState::Closed),
        ("local_app", BreakerState::Closed),
        (
            "payment",
            BreakerState::Ejecting {
                ejected: 1,
                total: 3,
            },
        ),
        ("photo", BreakerState::Saturated),
        ("self_admin", BreakerState::Closed),
    ]
    .into_iter()
    .collect();

    for (name, want) in expected {
        let (Some(ca), Some(cb)) = (a.get(name), b.get(name)) else {
            panic!("{name}: missing in T0 or T1");
        };
        let w = window(ca, cb, dt).unwrap_or_else(|| panic!("{name}: window is a gap"));
        let s = w.stats();
        let field = |f: &str| format!("{name}.{f}");

        assert_close(
            &field("rps_completed"),
            s.rps,
            want["rps_completed"].as_f64().unwrap(),
        );
        assert_close(
            &field("rps_upstream_rq_total"),
            w.rps_upstream_total,
            want["rps_upstream_rq_total"].as_f64().unwrap(),
        );
        assert_close_opt(
            &field("error_rate_5xx_of_completed"),
            s.err5xx_ratio,
            &want["error_rate_5xx_of_completed"],
        );
        let answered: f64 = w.xx.iter().sum();
        assert_close_opt(
            &field("rate_4xx_of_completed"),
            (answered > 0.0).then(|| w.xx[3] / answered),
            &want["rate_4xx_of_completed"],
        );
        assert_close(
            &field("pending_overflow_per_s"),
            w.pending_overflow_per_s,
            want["pending_overflow_per_s"].as_f64().unwrap(),
        );
        assert_close_opt(&field("window_p50_ms"), s.p50_ms, &want["window_p50_ms"]);
        assert_close_opt(&field("window_p95_ms"), s.p95_ms, &want["window_p95_ms"]);
        assert_close_opt(&field("window_p99_ms"), s.p99_ms, &want["window_p99_ms"]);
        let cumulative: Vec<(f64, f64)> = cb
            .rq_time
            .buckets
            .iter()
            .map(|&(le, c)| (le, c as f64))
            .collect();
        assert_close_opt(
            &field("cumulative_p99_ms_t1"),
            quantile_ms(&cumulative, 0.99),
            &want["cumulative_p99_ms_t1"],
        );

        gauge(
            &field("membership_healthy"),
            cb.membership_healthy,
            &want["membership_healthy"],
        );
        gauge(
            &field("membership_total"),
            cb.membership_total,
            &want["membership_total"],
        );
        gauge(
            &field("cb_default_rq_open"),
            Some(cb.cb_rq_open),
            &want["cb_default_rq_open"],
        );
        gauge(
            &field("cb_default_rq_pending_open"),
            Some(cb.cb_rq_pending_open),
            &want["cb_default_rq_pending_open"],
        );
        gauge(
            &field("cb_default_cx_open"),
            Some(cb.cb_cx_open),
            &want["cb_default_cx_open"],
        );
        gauge(
            &field("outlier_ejections_active"),
            cb.ejections_active,
            &want["outlier_ejections_active"],
        );

        assert_eq!(
            Some(&s.breaker),
            breakers.get(name.as_str()),
            "{name}: breaker state"
        );
        assert_eq!(w.breaker, s.breaker);
    }

    // The whole-sidecar helper gives the same windows.
    let all = sidecar_windows(&t0, &t1, dt);
    assert_eq!(all.len(), expected.len());
    for (id, w) in &all {
        assert_eq!(w, &window(a[&key(id)], b[&key(id)], dt), "{}", key(id));
    }
    // Reversed scrapes: every counter that moved went down, so those windows are gaps.
    let photo_back = window(b["photo"], a["photo"], dt);
    assert_eq!(photo_back, None);
}

#[test]
fn uptime_is_read() {
    assert_eq!(parse_envoy_stats(T0).unwrap().uptime_secs, Some(86_412.0));
    let t1 = parse_envoy_stats(T1).unwrap().uptime_secs.unwrap();
    assert!(t1 > 86_412.0, "{t1}");
}

/// identity v1 at T0, written out from the fixture (`grep 'subset="v1",consul_destination_service="identity"'`).
#[test]
fn identity_v1_t0_whole_struct() {
    let t0 = parse_envoy_stats(T0).unwrap();
    let id = ClusterId {
        source: "portal".into(),
        service: "identity".into(),
        subset: "v1".into(),
    };
    let got = t0.cluster(&id).unwrap();
    let les = [
        0.5,
        1.0,
        5.0,
        10.0,
        25.0,
        50.0,
        100.0,
        250.0,
        500.0,
        1000.0,
        2500.0,
        5000.0,
        10000.0,
        30000.0,
        60000.0,
        300_000.0,
        600_000.0,
        1_800_000.0,
        3_600_000.0,
    ];
    let counts = [
        2, 268, 242_565, 745_572, 1_146_819, 1_182_699, 1_184_212, 1_184_230, 1_184_230, 1_184_230,
        1_184_230, 1_184_230, 1_184_230, 1_184_230, 1_184_230, 1_184_230, 1_184_230, 1_184_230,
        1_184_230,
    ];
    let mut buckets: Vec<(f64, u64)> = les.into_iter().zip(counts).collect();
    buckets.push((f64::INFINITY, 1_184_230));
    let want = ClusterCounters {
        bad_values: 0,
        id,
        rq_total: 1_184_233,
        rq_completed: 1_184_230,
        rq_xx: [0, 1_183_902, 0, 291, 37],
        rq_pending_overflow: 0,
        cx_overflow: 0,
        rq_time: Histogram {
            buckets,
            sum: 11_625_801.887_023_877,
            count: 1_184_230,
        },
        membership_healthy: Some(2),
        membership_total: Some(2),
        ejections_active: Some(0),
        cb_rq_open: 0,
        cb_rq_pending_open: 0,
        cb_cx_open: 0,
    };
    assert_eq!(got, &want);
}

/// photo in the `?filter=circuit_breakers` variant with `track_remaining`: the default-priority
/// `*_open` gauges are read; `remaining_*`, `high_*` and the other `*_open` gauges are not.
#[test]
fn photo_circuit_breakers_track_remaining_whole_struct() {
    let scrape = parse_envoy_stats(CB_TRACK_REMAINING).unwrap();
    assert_eq!(scrape.clusters.len(), 7);
    assert_eq!(scrape.uptime_secs, None);
    let id = ClusterId {
        source: "portal".into(),
        service: "photo".into(),
        subset: String::new(),
    };
    let photo = scrape.cluster(&id).unwrap();
    let want = ClusterCounters {
        id,
        cb_rq_open: 1,
        cb_rq_pending_open: 1,
        cb_cx_open: 0,
        ..ClusterCounters::default()
    };
    assert_eq!(photo, &want);
    assert_eq!(
        spine_dash::metrics::breaker_state(photo, false),
        BreakerState::Saturated
    );
    for c in &scrape.clusters {
        if c.id.service != "photo" {
            assert_eq!(
                (c.cb_rq_open, c.cb_rq_pending_open, c.cb_cx_open),
                (0, 0, 0)
            );
        }
    }
}

/// Sidecars of two instances of the caller: windows added, percentiles from summed buckets.
#[test]
fn two_sidecars_merge_into_one_lane() {
    let t0 = parse_envoy_stats(T0).unwrap();
    let t1 = parse_envoy_stats(T1).unwrap();
    let (a, b) = (by_key(&t0), by_key(&t1));
    let one = window(a["identity/v2"], b["identity/v2"], 10.0).unwrap();
    let mut lane = one.clone();
    lane.merge(&one);
    assert!((lane.rps_completed - 2.0 * one.rps_completed).abs() < 1e-9);
    assert_eq!(lane.stats().err5xx_ratio, one.stats().err5xx_ratio);
    assert_eq!(lane.stats().p99_ms, one.stats().p99_ms);
    // Lanes of different versions add up too; the worst breaker wins.
    lane.merge(&window(a["photo"], b["photo"], 10.0).unwrap());
    assert_eq!(lane.stats().breaker, BreakerState::Saturated);
}

#[test]
fn not_a_stats_body_is_an_error_with_its_line() {
    let html = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n";
    let StatsError::Syntax { line, reason } = parse_envoy_stats(html).unwrap_err();
    assert_eq!(line, 1);
    assert!(reason.contains("<!DOCTYPE html>"), "{reason}");
    // The same fixture with its body replaced by JSON after the comments.
    let json = "# TYPE envoy_cluster_upstream_rq_total counter\n{\"stats\":[]}\n";
    let StatsError::Syntax { line, .. } = parse_envoy_stats(json).unwrap_err();
    assert_eq!(line, 2);
}

/// Deterministic pseudo-random generator (xorshift64*), no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates `bytes` a few times: overwrite, insert, delete, with bytes that matter to the
/// grammar as well as arbitrary ones.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    const SPECIAL: &[u8] = b"{}\"\\=, \t\n\r#-+.eE0123456789leInfNa\xff\x00";
    for _ in 0..=rng.below(8) {
        let byte = if rng.below(2) == 0 {
            SPECIAL[rng.below(SPECIAL.len())]
        } else {
            rng.next() as u8
        };
        let at = rng.below(bytes.len() + 1);
        match rng.below(3) {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.push(byte),
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let reference = parse_envoy_stats(T0).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0usize, 0usize);
    for i in 0..4000 {
        // Mostly slices of the fixture (cheap, cut anywhere), now and then the whole body.
        let source = if i % 2 == 0 { T0 } else { T1 }.as_bytes();
        let mut bytes = if i % 500 == 0 {
            source.to_vec()
        } else {
            // Usually from a line start, so that the parse goes past line 1.
            let mut start = rng.below(source.len());
            if rng.below(4) != 0 {
                start = source[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(0, |p| start + p + 1);
            }
            let len = rng.below(12_000);
            source[start..(start + len).min(source.len())].to_vec()
        };
        mutate(&mut rng, &mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        match parse_envoy_stats(&text) {
            Ok(scrape) => {
                ok += 1;
                // Whatever came out must go through the maths without a panic either.
                for c in &scrape.clusters {
                    if let Some(r) = reference.cluster(&c.id) {
                        for w in [window(r, c, 10.0), window(c, r, 10.0)]
                            .into_iter()
                            .flatten()
                        {
                            let mut merged = w.clone();
                            merged.merge(&w);
                            let _ = merged.stats();
                        }
                    }
                }
            }
            Err(_) => err += 1,
        }
    }
    // Both paths were exercised.
    eprintln!("mutations: ok {ok}, err {err}");
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
}

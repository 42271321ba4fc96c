//! The Prometheus adapter's pure parts on real answers of Prometheus 2.42
//! (`tests/fixtures/prometheus/`, see its README): parsing, error texts, and the fold into
//! per-lane windows and stats.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use spine_dash::metrics::prometheus::{
    LaneSamples, PromLane, QueryAnswer, ResponseError, assemble, parse_response,
};
use spine_dash::metrics::{ClusterId, WindowStats, quantile_ms};
use spine_dash::model::types::BreakerState;

const WINDOW_SECS: f64 = 10.0;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/prometheus/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ok(name: &str) -> QueryAnswer {
    parse_response(200, &fixture(name)).unwrap()
}

fn scenario(prefix: &str) -> LaneSamples {
    assemble(
        &ok(&format!("{prefix}_rates.json")),
        &ok(&format!("{prefix}_buckets.json")),
        &ok(&format!("{prefix}_quantiles.json")),
        &ok(&format!("{prefix}_gauges.json")),
        WINDOW_SECS,
    )
}

fn id(source: &str, service: &str, subset: &str) -> ClusterId {
    ClusterId {
        source: source.into(),
        service: service.into(),
        subset: subset.into(),
    }
}

fn lane<'a>(samples: &'a LaneSamples, want: &ClusterId) -> &'a PromLane {
    samples
        .lanes
        .iter()
        .find(|l| &l.id == want)
        .unwrap_or_else(|| panic!("no lane {want:?}"))
}

fn roads(samples: &LaneSamples) -> Vec<(String, String, String)> {
    samples
        .lanes
        .iter()
        .filter(|l| !l.id.is_local())
        .map(|l| {
            (
                l.id.source.clone(),
                l.id.service.clone(),
                l.id.subset.clone(),
            )
        })
        .collect()
}

#[test]
fn steady_state_lanes_as_whole_stats() {
    let s = scenario("steady");
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        roads(&s),
        vec![
            t("gateway", "identity", "v1"),
            t("gateway", "identity", "v2"),
            t("gateway", "payment", ""),
            t("gateway", "photo", ""),
            t("payment", "notification", ""),
            t("portal", "gateway", ""),
        ]
    );
    assert!(s.warnings.is_empty());
    assert_eq!(
        lane(&s, &id("gateway", "identity", "v1")).stats(),
        Some(WindowStats {
            rps: 39.888_888_888_888_89,
            err5xx_ratio: Some(0.0),
            p50_ms: Some(7.5),
            p95_ms: Some(9.970_183_486_238_533),
            p99_ms: Some(21.634_374_999_999_984),
            breaker: BreakerState::Closed,
        })
    );
    assert_eq!(
        lane(&s, &id("gateway", "identity", "v2")).stats(),
        Some(WindowStats {
            rps: 10.0,
            err5xx_ratio: Some(0.0),
            p50_ms: Some(16.867_469_879_518_072),
            p95_ms: Some(24.186_746_987_951_807),
            p99_ms: Some(24.837_349_397_590_362),
            breaker: BreakerState::Closed,
        })
    );
    // 80/20 split observed: 39.9 vs 10.0 rps.
    let w = lane(&s, &id("gateway", "identity", "v1"))
        .window
        .clone()
        .unwrap();
    assert_eq!(w.buckets.len(), 20, "Envoy's 19 bounds + +Inf");
    assert!(w.buckets.last().unwrap().0.is_infinite());
}

#[test]
fn our_quantiles_on_prometheus_buckets_equal_histogram_quantile() {
    // Same semantics as Prometheus, checked on every lane of both captures.
    let mut checked = 0;
    for prefix in ["steady", "fault"] {
        let s = scenario(prefix);
        for l in &s.lanes {
            let Some(w) = &l.window else { continue };
            for (i, q) in [0.5, 0.95, 0.99].into_iter().enumerate() {
                let ours = quantile_ms(&w.buckets, q);
                match (l.quantiles_ms[i], ours) {
                    (Some(theirs), Some(ours)) => {
                        assert!(
                            (theirs - ours).abs() <= 1e-9 * theirs.abs().max(1.0),
                            "{prefix} {:?} q{q}: Prometheus {theirs}, ours {ours}",
                            l.id
                        );
                        checked += 1;
                    }
                    (None, None) => {}
                    other => panic!("{prefix} {:?} q{q}: {other:?}", l.id),
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} quantiles compared");
}

#[test]
fn fault_lanes_fold_breakers_and_nan() {
    let s = scenario("fault");
    // Both payment hosts stopped: nothing healthy, every call 5xx, no latency (NaN).
    assert_eq!(
        lane(&s, &id("gateway", "payment", "")).stats(),
        Some(WindowStats {
            rps: 0.888_888_888_888_889,
            err5xx_ratio: Some(1.0),
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            breaker: BreakerState::Open,
        })
    );
    // One photo host critical (health check, not an ejection): 1 of 2 healthy is closed.
    let photo = lane(&s, &id("gateway", "photo", "")).stats().unwrap();
    assert_eq!(photo.breaker, BreakerState::Closed);
    assert_eq!(photo.err5xx_ratio, Some(0.0));
    let portal = lane(&s, &id("portal", "gateway", "")).stats().unwrap();
    assert_eq!(portal.err5xx_ratio, Some(1.0));
    assert!((portal.rps - 50.0).abs() < 1e-9);
}

#[test]
fn error_answers_keep_the_server_text() {
    assert_eq!(
        parse_response(400, &fixture("error_bad_data.json")),
        Err(ResponseError::Api {
            status: 400,
            error_type: "bad_data".into(),
            error: "invalid parameter \"query\": 1:12: parse error: unexpected \"(\" in grouping opts, expected \",\" or \")\"".into(),
        })
    );
    let exec = parse_response(422, &fixture("error_execution.json")).unwrap_err();
    let text = exec.to_string();
    assert!(
        text.starts_with("HTTP 422 execution: found duplicate series for the match group"),
        "{text}"
    );
    assert!(text.ends_with("matching labels must be unique on one side"));
    assert_eq!(
        parse_response(200, &fixture("scalar.json")),
        Err(ResponseError::NotVector("scalar".into()))
    );
    let nf = parse_response(404, &fixture("not_found.txt")).unwrap_err();
    assert_eq!(
        nf,
        ResponseError::Status {
            status: 404,
            body: "404 page not found".into(),
        }
    );
    assert!(
        nf.to_string().contains("prometheus://host:9090/prefix"),
        "hint: {nf}"
    );
}

#[test]
fn nan_and_infinities_are_parsed() {
    let a = ok("special_values.json");
    let by_case = |case: &str| -> Vec<f64> {
        a.samples
            .iter()
            .filter(|s| s.labels.get("case").map(String::as_str) == Some(case))
            .map(|s| s.value)
            .collect()
    };
    let nan = by_case("no_traffic_nan");
    assert_eq!(nan.len(), 2);
    assert!(nan.iter().all(|v| v.is_nan()));
    assert_eq!(by_case("q_above_1_inf"), vec![f64::INFINITY; 2]);
    assert_eq!(by_case("q_below_0_minus_inf"), vec![f64::NEG_INFINITY; 2]);
}

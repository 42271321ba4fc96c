//! Sidecars that lie (`API_BRIEF.md` §2; issue "hostile inputs"): one test per lie, on the
//! Envoy fixtures (T0, T0 + 10 s) with lines changed. What the operator would see is
//! checked through the same path the dashboard takes: parse → window → stats. A lie gives a
//! gap or an unknown, never a negative, infinite or made-up number.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// test code: a failed unwrap is a failed test
// The same inputs through the same arithmetic must give the same bits: exact on purpose.
#![allow(clippy::float_cmp)]

use spine_dash::metrics::{
    ClusterId, LaneWindow, SidecarScrape, WindowStats, parse_envoy_stats, sidecar_windows,
};
use spine_dash::model::types::{Split, SplitEntry};

const T0: &str = include_str!("fixtures/envoy/stats_prometheus.txt");
const T1: &str = include_str!("fixtures/envoy/stats_prometheus_t1.txt");

/// identity v1, as portal's sidecar sees it.
fn identity_v1() -> ClusterId {
    ClusterId {
        source: "portal".into(),
        service: "identity".into(),
        subset: "v1".into(),
    }
}

fn is_identity_v1(line: &str, family: &str) -> bool {
    line.starts_with(&format!("{family}{{"))
        && line.contains("consul_destination_service=\"identity\"")
        && line.contains("consul_destination_service_subset=\"v1\"")
}

/// `text` with every line of `family` for identity v1 (and containing `also`) passed
/// through `f` (`None` drops the line). Panics when no line matched.
fn edit(text: &str, family: &str, also: &str, mut f: impl FnMut(&str) -> Option<String>) -> String {
    let mut hits = 0;
    let mut out = String::new();
    for line in text.lines() {
        if is_identity_v1(line, family) && line.contains(also) {
            hits += 1;
            if let Some(new) = f(line) {
                out.push_str(&new);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(hits > 0, "no line of {family} {also}");
    out
}

/// The line with its value replaced (`Option` for [`edit`]).
#[allow(clippy::unnecessary_wraps)]
fn value(line: &str, v: &str) -> Option<String> {
    let (series, _) = line.rsplit_once(' ').unwrap();
    Some(format!("{series} {v}"))
}

fn parse(text: &str) -> SidecarScrape {
    parse_envoy_stats(text).unwrap()
}

/// identity v1's window from `a` to `b` (10 s).
fn identity_window(a: &str, b: &str) -> Option<LaneWindow> {
    sidecar_windows(&parse(a), &parse(b), 10.0)
        .into_iter()
        .find(|(id, _)| *id == identity_v1())
        .expect("identity v1 in the later scrape")
        .1
}

fn stats(a: &str, b: &str) -> WindowStats {
    identity_window(a, b).expect("a window").stats()
}

/// What an honest window shows, for comparison.
fn honest() -> WindowStats {
    stats(T0, T1)
}

#[test]
fn the_honest_window_has_numbers_to_lose() {
    let s = honest();
    assert!(s.rps > 1.0, "{s:?}");
    assert!(s.p50_ms.is_some() && s.p99_ms.is_some(), "{s:?}");
}

#[test]
fn a_counter_that_goes_backwards_is_a_gap_not_a_negative_or_huge_rate() {
    // Envoy restarted (or /reset_counters) without its uptime telling: completed dropped.
    let restarted = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
        value(l, "12")
    });
    assert_eq!(identity_window(T0, &restarted), None);
    // The next window, from the restarted scrape, is honest again (and small, not huge).
    let later = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
        value(l, "42")
    });
    let s = stats(&restarted, &later);
    assert!((s.rps - 3.0).abs() < 1e-9, "{s:?}");
    // One response class going back is enough.
    let class_back = edit(
        T1,
        "envoy_cluster_upstream_rq_xx",
        "envoy_response_code_class=\"2\"",
        |l| value(l, "0"),
    );
    assert_eq!(identity_window(T0, &class_back), None);
    // Uptime going back: every lane of that sidecar is a gap.
    let uptime_back = T1.replace("} 86422", "} 3");
    assert_ne!(uptime_back, T1);
    assert!(
        sidecar_windows(&parse(T0), &parse(&uptime_back), 10.0)
            .iter()
            .all(|(_, w)| w.is_none())
    );
}

#[test]
fn nan_and_infinite_counters_are_gaps_on_both_sides() {
    for lie in ["NaN", "+Inf", "-Inf", "-5", "1e300", "18446744073709551616"] {
        let lying = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
            value(l, lie)
        });
        let scrape = parse(&lying);
        assert_eq!(
            scrape.cluster(&identity_v1()).unwrap().bad_values,
            1,
            "{lie}"
        );
        // The window into the lying scrape and the window out of it: gaps, not a drop to
        // zero and then a jump from zero.
        assert_eq!(identity_window(T0, &lying), None, "{lie}");
        assert_eq!(identity_window(&lying, T1), None, "{lie}");
        // Other lanes of the same sidecar keep their numbers.
        let others = sidecar_windows(&parse(T0), &scrape, 10.0);
        assert!(
            others
                .iter()
                .filter(|(id, _)| *id != identity_v1())
                .all(|(_, w)| w.is_some()),
            "{lie}"
        );
    }
    // A latency bucket count that lies: a gap as well.
    let bucket = edit(
        T1,
        "envoy_cluster_upstream_rq_time_bucket",
        "le=\"5\"",
        |l| value(l, "NaN"),
    );
    assert_eq!(identity_window(T0, &bucket), None);
    // A gauge that lies is absent, not a number: no breaker verdict from it.
    let gauge = edit(T1, "envoy_cluster_membership_healthy", "", |l| {
        value(l, "NaN")
    });
    let c = parse(&gauge).cluster(&identity_v1()).cloned().unwrap();
    assert_eq!((c.membership_healthy, c.bad_values), (None, 0));
    assert!(identity_window(T0, &gauge).is_some());
}

#[test]
fn a_histogram_with_missing_buckets_keeps_its_rates_and_never_invents_a_percentile() {
    let h = honest();
    // A bucket missing from both scrapes: percentiles from the others (wider bucket).
    let drop_5 = |t: &str| {
        edit(
            t,
            "envoy_cluster_upstream_rq_time_bucket",
            "le=\"5\"",
            |_| None,
        )
    };
    let s = stats(&drop_5(T0), &drop_5(T1));
    assert_eq!(s.rps, h.rps);
    assert!(s.p50_ms.is_some());
    // A non-empty bucket vanished between the scrapes (the counters did not go back): the
    // histogram contradicts itself, so the rates stay and the percentiles are unknown.
    let w = identity_window(T0, &drop_5(T1)).unwrap();
    assert!(w.latency_unknown);
    let s = w.stats();
    assert_eq!(s.rps, h.rps);
    assert_eq!(s.err5xx_ratio, h.err5xx_ratio);
    assert_eq!((s.p50_ms, s.p95_ms, s.p99_ms), (None, None, None));
    // No +Inf bucket: no total to rank against, percentiles unknown, rates kept.
    let drop_inf = |t: &str| {
        edit(
            t,
            "envoy_cluster_upstream_rq_time_bucket",
            "le=\"+Inf\"",
            |_| None,
        )
    };
    let s = stats(&drop_inf(T0), &drop_inf(T1));
    assert_eq!(s.rps, h.rps);
    assert_eq!((s.p50_ms, s.p99_ms), (None, None));
    // Only +Inf left: no finite bound, percentiles unknown.
    let only_inf = |t: &str| {
        edit(t, "envoy_cluster_upstream_rq_time_bucket", "", |l| {
            l.contains("le=\"+Inf\"").then(|| l.to_owned())
        })
    };
    let s = stats(&only_inf(T0), &only_inf(T1));
    assert_eq!((s.rps, s.p50_ms), (h.rps, None));
}

#[test]
fn odd_bucket_bounds_are_skipped_or_normalised() {
    // `le="NaN"` and a negative `le` are not bounds: skipped. `le="-0"` is 0.
    for (le, kept) in [("NaN", false), ("-1", false), ("-0", true)] {
        let extra = |t: &str| {
            edit(
                t,
                "envoy_cluster_upstream_rq_time_bucket",
                "le=\"0.5\"",
                |l| {
                    Some(format!(
                        "{l}\n{}",
                        l.replace("le=\"0.5\"", &format!("le=\"{le}\""))
                    ))
                },
            )
        };
        let c = parse(&extra(T1)).cluster(&identity_v1()).cloned().unwrap();
        let bounds: Vec<f64> = c.rq_time.buckets.iter().map(|b| b.0).collect();
        assert_eq!(bounds.first() == Some(&0.0), kept, "{le}: {bounds:?}");
        assert!(
            bounds.iter().all(|b| *b >= 0.0 && b.is_sign_positive()),
            "{le}"
        );
        let s = stats(&extra(T0), &extra(T1));
        assert!(s.p50_ms.is_some_and(|p| p >= 0.0), "{le}");
    }
}

#[test]
fn a_repeated_series_counts_once_whatever_its_label_order() {
    let h = honest();
    // The same line twice.
    let twice = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
        Some(format!("{l}\n{l}"))
    });
    let scrape = parse(&twice);
    assert_eq!(scrape.duplicate_series, 1);
    assert_eq!(stats(T0, &twice).rps, h.rps);
    // The same series with its labels in another order, and a different timestamp.
    let reordered = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
        let (series, v) = l.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap();
        let mut parts: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
        parts.reverse();
        Some(format!(
            "{l}\n{name}{{{}}} {v} 1700000000000",
            parts.join(",")
        ))
    });
    assert_eq!(parse(&reordered).duplicate_series, 1);
    assert_eq!(stats(T0, &reordered).rps, h.rps);
    // A whole histogram repeated: percentiles and rates as honest.
    let buckets = edit(T1, "envoy_cluster_upstream_rq_time_bucket", "", |l| {
        Some(format!("{l}\n{l}"))
    });
    let s = stats(T0, &buckets);
    assert_eq!((s.rps, s.p50_ms, s.p99_ms), (h.rps, h.p50_ms, h.p99_ms));
    // A different series (another datacenter) that folds into the same lane is added.
    let other_dc = edit(T1, "envoy_cluster_upstream_rq_completed", "", |l| {
        Some(format!(
            "{l}\n{}",
            l.replace(
                "consul_destination_datacenter=\"dc1\"",
                "consul_destination_datacenter=\"dc2\""
            )
        ))
    });
    let p = parse(&other_dc);
    assert_eq!(p.duplicate_series, 0);
    let honest_total = parse(T1).cluster(&identity_v1()).unwrap().rq_completed;
    assert_eq!(
        p.cluster(&identity_v1()).unwrap().rq_completed,
        2 * honest_total
    );
}

#[test]
fn labels_in_any_order_give_the_same_scrape() {
    let shuffle = |t: &str| -> String {
        t.lines()
            .map(|l| match l.split_once('{') {
                Some((name, rest)) if !l.starts_with('#') => {
                    let (labels, v) = rest.rsplit_once("} ").unwrap();
                    let mut parts: Vec<&str> = labels.split(',').collect();
                    let half = parts.len() / 2;
                    parts.rotate_left(half);
                    format!("{name}{{{}}} {v}\n", parts.join(","))
                }
                _ => format!("{l}\n"),
            })
            .collect()
    };
    assert_ne!(shuffle(T1), T1);
    assert_eq!(parse(&shuffle(T1)), parse(T1));
    assert_eq!(parse(&shuffle(T1)).duplicate_series, 0);
}

#[test]
fn weights_a_registry_lies_about_do_not_overflow() {
    let split = Split {
        entries: vec![
            SplitEntry {
                subset: "v1".into(),
                weight: u32::MAX,
            },
            SplitEntry {
                subset: "v2".into(),
                weight: u32::MAX,
            },
        ],
    };
    assert_eq!(split.total(), u32::MAX);
}

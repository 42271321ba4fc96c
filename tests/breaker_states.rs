//! Breaker-state folding (`GUIDE.md`, shared vocabulary) from Envoy's gauges and counters,
//! on the stats fixtures (T0, T0+10 s) and on copies of them with one gauge changed: every
//! lane's state compared as a whole map, for closed, saturated by an `*_open` gauge,
//! saturated by a rising overflow counter, ejecting n of m, and open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;

use spine_dash::metrics::{ClusterId, parse_envoy_stats, sidecar_windows};
use spine_dash::model::types::BreakerState;

const T0: &str = include_str!("fixtures/envoy/stats_prometheus.txt");
const T1: &str = include_str!("fixtures/envoy/stats_prometheus_t1.txt");

fn key(id: &ClusterId) -> String {
    if id.subset.is_empty() {
        id.service.clone()
    } else {
        format!("{}/{}", id.service, id.subset)
    }
}

/// Breaker state of every cluster over the window `a` → `b` (10 s).
fn states(a: &str, b: &str) -> BTreeMap<String, BreakerState> {
    let (a, b) = (parse_envoy_stats(a).unwrap(), parse_envoy_stats(b).unwrap());
    sidecar_windows(&a, &b, 10.0)
        .into_iter()
        .map(|(id, w)| (key(&id), w.expect("a window").breaker))
        .collect()
}

/// `text` with the value of `family` for destination `service` set to `value`.
fn set(text: &str, family: &str, service: &str, value: u64) -> String {
    let mut hits = 0;
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{family}{{"))
                && l.contains(&format!("consul_destination_service=\"{service}\""))
            {
                hits += 1;
                let (series, _) = l.rsplit_once(' ').unwrap();
                format!("{series} {value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(hits, 1, "{family} for {service}");
    out
}

fn expect(changes: &[(&str, BreakerState)]) -> BTreeMap<String, BreakerState> {
    let mut want: BTreeMap<String, BreakerState> = [
        "identity/v1",
        "identity/v2",
        "local_agent",
        "local_app",
        "payment",
        "photo",
        "self_admin",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), BreakerState::Closed))
    .collect();
    for (k, s) in changes {
        assert!(want.insert((*k).to_owned(), *s).is_some(), "{k}");
    }
    want
}

const EJECTING_1_OF_3: BreakerState = BreakerState::Ejecting {
    ejected: 1,
    total: 3,
};

/// The fixtures as they are: photo's breaker is open (`rq_open` = `rq_pending_open` = 1 and
/// 148 overflows in the window), payment has 1 of 3 hosts ejected, identity v2 has a host
/// out by EDS health only (1 of 2 healthy, none ejected): closed.
#[test]
fn fixture_window_closed_saturated_ejecting() {
    assert_eq!(
        states(T0, T1),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", EJECTING_1_OF_3)
        ])
    );
}

/// Saturated by the gauges alone: the same scrape twice (no counter rose).
#[test]
fn saturated_by_open_gauge_without_overflow() {
    assert_eq!(
        states(T1, T1),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", EJECTING_1_OF_3)
        ])
    );
    // Only `rq_pending_open` is 1.
    let pending_only = set(
        T1,
        "envoy_cluster_circuit_breakers_default_rq_open",
        "photo",
        0,
    );
    assert_eq!(
        states(&pending_only, &pending_only),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", EJECTING_1_OF_3)
        ])
    );
    // `cx_open` alone counts too, and outranks payment's ejection.
    let cx = set(
        T1,
        "envoy_cluster_circuit_breakers_default_cx_open",
        "payment",
        1,
    );
    assert_eq!(
        states(&cx, &cx),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", BreakerState::Saturated)
        ]),
        "saturated outranks ejecting"
    );
}

/// Saturated by the overflow counter rising alone: photo's `*_open` gauges set to 0 at T1.
#[test]
fn saturated_by_rising_overflow_without_gauge() {
    let mut t1 = set(
        T1,
        "envoy_cluster_circuit_breakers_default_rq_open",
        "photo",
        0,
    );
    t1 = set(
        &t1,
        "envoy_cluster_circuit_breakers_default_rq_pending_open",
        "photo",
        0,
    );
    assert_eq!(
        states(T0, &t1),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", EJECTING_1_OF_3)
        ])
    );
    // Nothing rose and no gauge is 1: closed again.
    assert_eq!(states(&t1, &t1), expect(&[("payment", EJECTING_1_OF_3)]));
}

/// Open: no healthy host left, by health or because every host is ejected.
#[test]
fn open_when_no_host_can_take_traffic() {
    let none_healthy = set(T1, "envoy_cluster_membership_healthy", "payment", 0);
    assert_eq!(
        states(T0, &none_healthy),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", BreakerState::Open)
        ])
    );
    let all_ejected = set(
        T1,
        "envoy_cluster_outlier_detection_ejections_active",
        "payment",
        3,
    );
    assert_eq!(
        states(T0, &all_ejected),
        expect(&[
            ("photo", BreakerState::Saturated),
            ("payment", BreakerState::Open)
        ])
    );
    // Open outranks saturated.
    let photo_down = set(T1, "envoy_cluster_membership_healthy", "photo", 0);
    assert_eq!(
        states(T0, &photo_down),
        expect(&[("photo", BreakerState::Open), ("payment", EJECTING_1_OF_3)])
    );
    // Two of three ejected is still "ejecting".
    let two = set(
        T1,
        "envoy_cluster_outlier_detection_ejections_active",
        "payment",
        2,
    );
    assert_eq!(
        states(T0, &two),
        expect(&[
            ("photo", BreakerState::Saturated),
            (
                "payment",
                BreakerState::Ejecting {
                    ejected: 2,
                    total: 3
                }
            )
        ])
    );
}

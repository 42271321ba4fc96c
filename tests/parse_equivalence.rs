//! The optimised Envoy stats parser (`metrics::parse_envoy_stats`) against the parser as it
//! was before the scale work (`support/parse_v1.rs`, verbatim): the same scrape or the same
//! error on every Envoy fixture, on generated bodies of a large mesh, on every truncation of
//! a fixture and on deterministic byte mutations of one.

#![allow(clippy::expect_used)] // test code: a failed expect is a failed test

#[path = "support/parse_v1.rs"]
mod parse_v1;

use spine_dash::metrics::parse_envoy_stats;
use spine_dash::model::synthetic::{LargeSpine, envoy_text};

/// Both parsers on `body`: equal scrapes, or errors with equal text.
fn same(body: &str, what: &str) {
    let new = parse_envoy_stats(body).map_err(|e| e.to_string());
    let old = parse_v1::parse_envoy_stats(body).map_err(|e| e.to_string());
    assert_eq!(new, old, "{what}");
}

fn fixtures() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("fixture");
            (p.display().to_string(), text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_envoy_fixture_parses_the_same() {
    let all = fixtures();
    assert!(all.len() >= 3, "{all:?}");
    for (name, text) in &all {
        same(text, name);
        // CRLF line ends and a missing final newline.
        same(&text.replace('\n', "\r\n"), name);
        same(text.trim_end(), name);
    }
}

#[test]
fn generated_bodies_of_a_large_mesh_parse_the_same() {
    let spine = LargeSpine::mesh(200, 1);
    for service in (0..200).step_by(7) {
        let body = envoy_text(&spine.scrape(service, 3_600 + service as u64));
        same(&body, &format!("svc {service}"));
    }
}

#[test]
fn truncations_and_mutations_give_the_same_result() {
    let all = fixtures();
    let (_, text) = all
        .iter()
        .find(|(n, _)| n.ends_with("stats_prometheus_circuit_breakers_track_remaining.txt"))
        .expect("fixture");
    // Every cut at a line end and in the middle of every tenth line.
    let mut cut = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        cut += line.len();
        same(&text[..cut], &format!("cut after line {i}"));
        if i % 10 == 0 {
            let mid = cut - line.len() / 2;
            if let Some(prefix) = text.get(..mid) {
                same(prefix, &format!("cut inside line {i}"));
            }
        }
    }
    // Byte mutations (a deterministic generator): bytes replaced by syntax characters.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let specials = b"{}\",= \\\n#\t0e+-.Na";
    for round in 0..300 {
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..=(next() % 8) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = specials[(next() % specials.len() as u64) as usize];
        }
        if let Ok(body) = String::from_utf8(bytes) {
            same(&body, &format!("mutation round {round}"));
        }
    }
}

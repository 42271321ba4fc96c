//! The short version of the fuzz targets (`fuzz/`, `scripts/fuzz.sh`): the same entry points
//! (`spine_dash::fuzzing`) and the same properties, on inputs proptest generates from the
//! fixtures: a slice of a fixture, mutated by cuts, splices and tokens that lie (`NaN`,
//! `+Inf`, negative and huge numbers, broken quotes and braces, repeated lines), and on
//! plain random bytes. Each target runs 10,000 cases per test run.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use spine_dash::fuzzing;

/// Fixtures by directory, read once.
fn fixtures(dir: &str) -> &'static [Vec<u8>] {
    static ALL: OnceLock<Vec<(String, Vec<Vec<u8>>)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        ["envoy", "consul", "etcd", "prometheus"]
            .iter()
            .map(|d| {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(d);
                let mut files: Vec<_> = std::fs::read_dir(&path)
                    .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.sort();
                let bodies = files
                    .iter()
                    .filter(|p| p.extension().is_some_and(|x| x != "md"))
                    .filter_map(|p| std::fs::read(p).ok())
                    .collect();
                ((*d).to_owned(), bodies)
            })
            .collect()
    });
    all.iter()
        .find(|(d, _)| d == dir)
        .map_or(&[], |(_, b)| b.as_slice())
}

/// Tokens that make a body lie or break.
const TOKENS: &[&str] = &[
    "NaN",
    "+Inf",
    "-Inf",
    "-1",
    "-0",
    "1e309",
    "1e300",
    "18446744073709551616",
    "0.5",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "\n",
    "\r\n",
    " ",
    "\u{0c}",
    "le=\"",
    "null",
    "true",
    "\"+Inf\"",
    "{}",
    "[]",
    "\"\"",
    "\u{ff}",
    "é",
    "9999999999999999999999",
    "envoy_cluster_upstream_rq_total{consul_destination_service=\"a\"} ",
    "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"a\",le=\"",
    "\"Weight\":",
    "\"kvs\":[{\"key\":\"",
    "\"value\":\"",
    "\"result\":{\"events\":[",
];

/// One edit of a body.
#[derive(Debug, Clone)]
enum Edit {
    /// Insert a token at a position (scaled to the body's length).
    Insert(u16, usize),
    /// Replace a byte.
    Byte(u16, u8),
    /// Cut the body at a position.
    Truncate(u16),
    /// Repeat a range of the body right after itself (repeated series, lines, keys).
    Repeat(u16, u16),
    /// Remove a range.
    Remove(u16, u16),
}

fn at(pos: u16, len: usize) -> usize {
    usize::from(pos) * len / usize::from(u16::MAX).max(1)
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = body.len();
        match *edit {
            Edit::Insert(pos, token) => {
                let i = at(pos, len);
                let t = TOKENS[token % TOKENS.len()].as_bytes();
                body.splice(i..i, t.iter().copied());
            }
            Edit::Byte(pos, b) => {
                if len > 0 {
                    body[at(pos, len - 1)] = b;
                }
            }
            Edit::Truncate(pos) => body.truncate(at(pos, len)),
            Edit::Repeat(a, n) => {
                let i = at(a, len);
                let end = (i + usize::from(n % 512)).min(len);
                let piece = body[i..end].to_vec();
                body.splice(end..end, piece);
            }
            Edit::Remove(a, n) => {
                let i = at(a, len);
                let end = (i + usize::from(n % 64)).min(len);
                body.drain(i..end);
            }
        }
    }
    body
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<u16>(), any::<usize>()).prop_map(|(p, t)| Edit::Insert(p, t)),
        2 => (any::<u16>(), any::<u8>()).prop_map(|(p, b)| Edit::Byte(p, b)),
        1 => any::<u16>().prop_map(Edit::Truncate),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, n)| Edit::Repeat(a, n)),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, n)| Edit::Remove(a, n)),
    ];
    prop::collection::vec(edit, 0..6)
}

/// A slice of at most `max` bytes of one fixture of `dir`, starting at a line start.
fn slice(dir: &'static str, max: usize) -> impl Strategy<Value = Vec<u8>> {
    (any::<usize>(), any::<u16>(), 1..=max).prop_map(move |(f, start, len)| {
        let all = fixtures(dir);
        let Some(body) = all.get(f % all.len().max(1)) else {
            return Vec::new();
        };
        let mut i = at(start, body.len());
        if let Some(nl) = body[..i].iter().rposition(|b| *b == b'\n') {
            i = nl + 1;
        } else {
            i = 0;
        }
        body[i..(i + len).min(body.len())].to_vec()
    })
}

/// A mutated slice of a fixture, or random bytes.
fn input(dir: &'static str, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (slice(dir, max), edits()).prop_map(|(b, e)| apply(b, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Two scrapes in one input: an earlier and a later slice of the Envoy fixtures, each
/// mutated (the later one often the same slice of the `t1` fixture).
fn two_scrapes() -> impl Strategy<Value = Vec<u8>> {
    (input("envoy", 6_000), input("envoy", 6_000), any::<bool>()).prop_map(|(a, b, same)| {
        let mut out = a.clone();
        out.push(fuzzing::SCRAPE_SEPARATOR);
        out.extend(if same { a } else { b });
        out
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are saved by proptest next to this file only when asked for.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn envoy_stats_never_panics_and_never_shows_a_lie(data in two_scrapes()) {
        fuzzing::envoy_stats(&data);
    }

    #[test]
    fn envoy_clusters_never_panics(data in input("envoy", 4_000)) {
        fuzzing::envoy_clusters(&data);
    }

    #[test]
    fn consul_decoders_never_panic_and_writes_read_back(data in input("consul", 4_000)) {
        fuzzing::consul_json(&data);
    }

    #[test]
    fn etcd_decoders_never_panic_and_streams_stay_bounded(data in input("etcd", 4_000)) {
        fuzzing::etcd_json(&data);
    }

    #[test]
    fn prometheus_api_never_panics_and_never_shows_a_lie(data in input("prometheus", 4_000)) {
        fuzzing::prometheus_api(&data);
    }
}

/// The untouched fixtures (whole files, and each line of the etcd streams) pass too.
#[test]
fn the_fixtures_themselves_pass_every_property() {
    for dir in ["envoy", "consul", "etcd", "prometheus"] {
        assert!(fixtures(dir).len() >= 3, "{dir}");
    }
    let t0 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy/stats_prometheus.txt"),
    )
    .unwrap_or_default();
    let t1 = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy/stats_prometheus_t1.txt"),
    )
    .unwrap_or_default();
    let mut both = t0;
    both.push(fuzzing::SCRAPE_SEPARATOR);
    both.extend(t1);
    fuzzing::envoy_stats(&both);
    for body in fixtures("envoy") {
        fuzzing::envoy_clusters(body);
    }
    for body in fixtures("consul") {
        fuzzing::consul_json(body);
    }
    for body in fixtures("etcd") {
        fuzzing::etcd_json(body);
        for line in body.split(|b| *b == b'\n') {
            fuzzing::etcd_json(line);
        }
    }
    for body in fixtures("prometheus") {
        fuzzing::prometheus_api(body);
    }
}

//! Envoy `/clusters?format=json` fixture through `parse_clusters_json`, compared as whole
//! structs, and a no-panic mutation loop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use spine_dash::metrics::{ClusterHost, ClusterHosts, ClusterId, HostHealth, parse_clusters_json};

const CLUSTERS: &str = include_str!("fixtures/envoy/clusters.json");
const TD: &str = "c3f1b6a2-8d4e-4f7a-9b2c-1e5d7a9f3b64";

fn host(address: &str, port: u16, health: HostHealth) -> ClusterHost {
    ClusterHost {
        address: address.into(),
        port,
        health,
    }
}

fn cluster(name: &str, service: &str, subset: &str, hosts: Vec<ClusterHost>) -> ClusterHosts {
    ClusterHosts {
        id: ClusterId {
            source: String::new(),
            service: service.into(),
            subset: subset.into(),
        },
        name: name.into(),
        hosts,
    }
}

#[test]
fn fixture_whole_structs() {
    use HostHealth::{Ejected, Healthy, Unhealthy};
    let got = parse_clusters_json(CLUSTERS.as_bytes()).unwrap();
    let want = vec![
        cluster(
            &format!("v1.identity.default.dc1.internal.{TD}.consul"),
            "identity",
            "v1",
            vec![
                host("10.0.1.11", 21000, Healthy),
                host("10.0.1.12", 21000, Healthy),
            ],
        ),
        cluster(
            &format!("v2.identity.default.dc1.internal.{TD}.consul"),
            "identity",
            "v2",
            vec![
                host("10.0.1.13", 21000, Healthy),
                // EDS-unhealthy: Consul sends UNHEALTHY for a critical instance.
                host("10.0.1.12", 21001, Unhealthy),
            ],
        ),
        cluster(
            &format!("photo.default.dc1.internal.{TD}.consul"),
            "photo",
            "",
            vec![
                host("10.0.2.11", 21000, Healthy),
                host("10.0.2.12", 21000, Healthy),
            ],
        ),
        cluster(
            &format!("payment.default.dc1.internal.{TD}.consul"),
            "payment",
            "",
            vec![
                host("10.0.3.11", 21000, Healthy),
                host("10.0.3.12", 21000, Healthy),
                // failed_outlier_check: ejected by outlier detection.
                host("10.0.3.13", 21000, Ejected),
            ],
        ),
        cluster(
            "local_app",
            "local_app",
            "",
            vec![host("127.0.0.1", 3000, Healthy)],
        ),
        cluster(
            "local_agent",
            "local_agent",
            "",
            vec![host("127.0.0.1", 8502, Healthy)],
        ),
        cluster(
            "self_admin",
            "self_admin",
            "",
            vec![host("127.0.0.1", 19000, Healthy)],
        ),
    ];
    assert_eq!(got, want);
}

/// Envoy's newer chunked renderer prints numbers and an explicit `DEFAULT` priority.
#[test]
fn newer_renderer_variant_reads_the_same() {
    // `"value": "31",` → `"value": 31,` (counters and gauges are the only string values).
    let numbers: String = CLUSTERS
        .lines()
        .map(|l| match l.trim_start().strip_prefix("\"value\": \"") {
            Some(rest) => format!("\"value\": {},\n", rest.trim_end_matches("\",")),
            None => format!("{l}\n"),
        })
        .collect();
    let newer = numbers.replace(
        "\"max_connections\": 1024,\n      \"max_pending_requests\"",
        "\"priority\": \"DEFAULT\", \"max_connections\": 1024,\n      \"max_pending_requests\"",
    );
    assert!(newer.contains("\"value\": 594464,"));
    assert!(newer.contains("\"priority\": \"DEFAULT\""));
    assert_ne!(newer, CLUSTERS, "the variant differs from the fixture");
    assert_eq!(
        parse_clusters_json(newer.as_bytes()).unwrap(),
        parse_clusters_json(CLUSTERS.as_bytes()).unwrap()
    );
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

#[test]
fn mutated_fixture_never_panics() {
    const SPECIAL: &[u8] = b"{}[]\":,.-0123456789etruefalsn \n\\\xff\x00";
    let source = CLUSTERS.as_bytes();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut ok, mut err) = (0usize, 0usize);
    for i in 0..3000 {
        let mut bytes = if i % 3 == 0 {
            source.to_vec()
        } else {
            let start = rng.below(source.len());
            source[start..(start + rng.below(8000)).min(source.len())].to_vec()
        };
        for _ in 0..=rng.below(3) {
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
        match parse_clusters_json(&bytes) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        }
    }
    eprintln!("mutations: ok {ok}, err {err}");
    assert!(ok > 50 && err > 500, "ok {ok}, err {err}");
}

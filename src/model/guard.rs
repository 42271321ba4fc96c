//! Guard rails checked before any split write (the confirm step shows them, a plan runs
//! them before each step): weights sum to exactly 100.00 %, every target version exists
//! (Consul: a subset of the service-resolver; etcd and KV: a version among the
//! instances), a version that gains traffic has a healthy instance (unless overridden),
//! and (Consul) the service's protocol allows splitting. Pure: model in, reasons out.

use super::Model;
use super::types::{
    FULL_WEIGHT, HealthCounts, SPLITTABLE_PROTOCOLS, Split, SplitError, format_pct,
};

/// Why a split must not be written (as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Sum not 100.00 %, duplicate or no entries.
    Invalid(SplitError),
    /// The registry does not know the service.
    UnknownService,
    /// A version the split names does not exist.
    UnknownVersion {
        /// The version.
        version: String,
        /// Where versions come from, for the message.
        source: &'static str,
        /// The ones that exist.
        known: Vec<String>,
    },
    /// A version would gain traffic with no passing instance (needs the override).
    NoHealthyInstance {
        /// The version.
        version: String,
        /// Its instances' health.
        health: HealthCounts,
    },
    /// Consul: the service's protocol does not allow an L7 split.
    Protocol {
        /// The effective protocol.
        protocol: String,
    },
    /// The split is what the registry already holds.
    NoChange,
}

impl Rejection {
    /// Whether the operator may write anyway (an explicit override).
    #[must_use]
    pub fn overridable(&self) -> bool {
        matches!(self, Self::NoHealthyInstance { .. })
    }

    /// The reason, for the confirm step and plan notices.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::Invalid(SplitError::BadSum(total)) => format!(
                "weights sum to {} %, must be exactly 100 % ({} % {})",
                format_pct(*total),
                format_pct(total.abs_diff(FULL_WEIGHT)),
                if *total > FULL_WEIGHT {
                    "too much"
                } else {
                    "left to assign"
                }
            ),
            Self::Invalid(e) => e.to_string(),
            Self::UnknownService => "the registry does not list this service".into(),
            Self::UnknownVersion {
                version,
                source,
                known,
            } => format!(
                "version {version} does not exist: {source} are {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
            Self::NoHealthyInstance { version, health } => format!(
                "{version} would get more traffic but has no passing instance \
                 ({} passing / {} warning / {} critical) — override to write anyway",
                health.passing, health.warning, health.critical
            ),
            Self::Protocol { protocol } => format!(
                "the service's protocol is {protocol:?}: Consul splits only http, http2 or \
                 grpc services (set Protocol in its service-defaults)"
            ),
            Self::NoChange => "the registry already holds this split".into(),
        }
    }
}

/// Every reason `split` must not be written for `service` now. Empty = go.
#[must_use]
pub fn check(model: &Model, service: &str, split: &Split) -> Vec<Rejection> {
    let mut out = Vec::new();
    if let Err(e) = split.validate() {
        out.push(Rejection::Invalid(e));
    }
    let Some(svc) = model.services.get(service) else {
        out.push(Rejection::UnknownService);
        return out;
    };
    if let Some(protocol) = &svc.protocol
        && !SPLITTABLE_PROTOCOLS.contains(&protocol.as_str())
    {
        out.push(Rejection::Protocol {
            protocol: protocol.clone(),
        });
    }
    // Consul's config entries: subsets of the resolver (a split naming another one fails
    // with a 500). Elsewhere the versions the instances carry.
    let (source, known): (&'static str, Vec<String>) = if svc.protocol.is_some() {
        ("the service-resolver's subsets", svc.subsets.clone())
    } else {
        let mut v: Vec<String> = svc.instances.iter().map(|i| i.version.clone()).collect();
        v.sort();
        v.dedup();
        ("the instances' versions", v)
    };
    for e in &split.entries {
        if !known.contains(&e.subset) {
            out.push(Rejection::UnknownVersion {
                version: e.subset.clone(),
                source,
                known: known.clone(),
            });
        }
    }
    for e in &split.entries {
        let before = model.configured_weight(service, &e.subset).unwrap_or(0);
        let health = model.version_health(service, &e.subset);
        if e.weight > before && health.passing == 0 {
            out.push(Rejection::NoHealthyInstance {
                version: e.subset.clone(),
                health,
            });
        }
    }
    if svc
        .split
        .as_ref()
        .is_some_and(|c| same_weights(&c.split, split))
    {
        out.push(Rejection::NoChange);
    }
    out
}

/// Whether the rejections stop the write (`allow_unhealthy`: the operator's override).
#[must_use]
pub fn blocks(rejections: &[Rejection], allow_unhealthy: bool) -> bool {
    rejections
        .iter()
        .any(|r| !(allow_unhealthy && r.overridable()))
}

/// Same weight per subset, whatever the order.
#[must_use]
pub fn same_weights(a: &Split, b: &Split) -> bool {
    a.entries.len() == b.entries.len()
        && a.entries
            .iter()
            .all(|e| b.weight_of(&e.subset) == Some(e.weight))
}

/// Scales the other entries so the sum is 100.00 %, keeping entry `fixed` as it is and the
/// others' proportions (largest remainders get the leftover hundredths). With all others
/// at zero, the remainder is spread evenly.
#[must_use]
pub fn normalise(weights: &[(String, u32)], fixed: usize) -> Vec<(String, u32)> {
    let mut out = weights.to_vec();
    let Some(&(_, keep)) = weights.get(fixed) else {
        return out;
    };
    let keep = keep.min(FULL_WEIGHT);
    out[fixed].1 = keep;
    let others: Vec<usize> = (0..weights.len()).filter(|&i| i != fixed).collect();
    if others.is_empty() {
        out[fixed].1 = FULL_WEIGHT;
        return out;
    }
    let rest = FULL_WEIGHT - keep;
    let sum: u64 = others.iter().map(|&i| u64::from(weights[i].1)).sum();
    let mut shares: Vec<(usize, u64, u64)> = others
        .iter()
        .map(|&i| {
            let num = if sum == 0 {
                u64::from(rest)
            } else {
                u64::from(rest) * u64::from(weights[i].1)
            };
            let den = if sum == 0 { others.len() as u64 } else { sum };
            (i, num / den, num % den)
        })
        .collect();
    let given: u64 = shares.iter().map(|s| s.1).sum();
    let mut left = u64::from(rest) - given;
    shares.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    for s in &mut shares {
        if left == 0 {
            break;
        }
        s.1 += 1;
        left -= 1;
    }
    for (i, w, _) in shares {
        out[i].1 = u32::try_from(w).unwrap_or(FULL_WEIGHT);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoEvent;
    use crate::model::types::{
        Health, Instance, RegistryKind, RegistrySnapshot, ServiceEntry, SplitConfig,
    };
    use crate::model::{Model, RegistryInfo};
    use std::time::{Duration, Instant};

    fn inst(id: &str, version: &str, health: Health) -> Instance {
        Instance {
            id: id.into(),
            service: "identity".into(),
            version: version.into(),
            address: "127.0.0.1".into(),
            port: 1,
            health,
            check_output: String::new(),
            metrics_url: None,
        }
    }

    fn model(protocol: Option<&str>, v2_health: Health) -> Model {
        let mut m = Model::new(
            RegistryInfo {
                kind: RegistryKind::Consul,
                address: "http://x".into(),
                datacenter: None,
                writable: true,
            },
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let entry = ServiceEntry {
            name: "identity".into(),
            instances: vec![
                inst("id-1", "v1", Health::Passing),
                inst("id-2", "v2", v2_health),
            ],
            subsets: if protocol.is_some() {
                vec!["v1".into(), "v2".into()]
            } else {
                Vec::new()
            },
            split: Some(SplitConfig {
                split: Split::from_pairs([("v1", 9_000), ("v2", 1_000)]),
                modify_index: 5,
            }),
            protocol: protocol.map(str::to_owned),
        };
        m.apply(
            IoEvent::Registry {
                at: Instant::now(),
                result: Ok(Some(RegistrySnapshot {
                    services: vec![entry],
                    drivers: Vec::new(),
                })),
                next_within: Duration::from_secs(1),
            },
            Instant::now(),
        );
        m
    }

    fn split(v1: u32, v2: u32) -> Split {
        Split::from_pairs([("v1", v1), ("v2", v2)])
    }

    #[test]
    fn a_good_split_passes() {
        let m = model(Some("http"), Health::Passing);
        assert_eq!(check(&m, "identity", &split(5_000, 5_000)), vec![]);
        let etcd = model(None, Health::Passing);
        assert_eq!(check(&etcd, "identity", &split(5_000, 5_000)), vec![]);
    }

    #[test]
    fn each_rejection_path() {
        let m = model(Some("http"), Health::Passing);
        let r = check(&m, "identity", &split(5_000, 4_999));
        assert_eq!(r, vec![Rejection::Invalid(SplitError::BadSum(9_999))]);
        assert!(
            r[0].text().contains("0.01 % left to assign"),
            "{}",
            r[0].text()
        );
        assert_eq!(
            check(&m, "nobody", &split(5_000, 5_000)),
            vec![Rejection::UnknownService]
        );
        let v3 = Split::from_pairs([("v1", 5_000), ("v3", 5_000)]);
        let r = check(&m, "identity", &v3);
        assert!(
            matches!(&r[0], Rejection::UnknownVersion { version, source, .. }
                if version == "v3" && source.contains("resolver")),
            "{r:?}"
        );
        assert!(r[0].text().contains("v1, v2"));
        // etcd: versions come from the instances.
        let etcd = model(None, Health::Passing);
        let r = check(&etcd, "identity", &v3);
        assert!(
            matches!(&r[0], Rejection::UnknownVersion { source, .. } if source.contains("instances"))
        );
        assert_eq!(
            check(&m, "identity", &split(9_000, 1_000)),
            vec![Rejection::NoChange]
        );
        let tcp = model(Some("tcp"), Health::Passing);
        let r = check(&tcp, "identity", &split(5_000, 5_000));
        assert_eq!(
            r,
            vec![Rejection::Protocol {
                protocol: "tcp".into()
            }]
        );
        assert!(!blocks(&[], false));
        assert!(blocks(&r, true), "a protocol refusal cannot be overridden");
    }

    #[test]
    fn more_traffic_to_a_version_without_a_passing_instance_needs_the_override() {
        let m = model(Some("http"), Health::Critical);
        let r = check(&m, "identity", &split(5_000, 5_000));
        assert!(
            matches!(&r[..], [Rejection::NoHealthyInstance { version, health }]
                if version == "v2" && health.critical == 1)
        );
        assert!(blocks(&r, false));
        assert!(!blocks(&r, true));
        // Taking traffic away from it is always fine.
        assert_eq!(check(&m, "identity", &split(10_000, 0)), vec![]);
    }

    #[test]
    fn normalise_keeps_the_fixed_entry_and_proportions() {
        let w = |v: &[u32]| -> Vec<(String, u32)> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| (format!("v{}", i + 1), x))
                .collect()
        };
        let n = normalise(&w(&[5_000, 2_000, 2_000]), 0);
        assert_eq!(n, w(&[5_000, 2_500, 2_500]));
        let n = normalise(&w(&[1_000, 0, 0]), 0);
        assert_eq!(n, w(&[1_000, 4_500, 4_500]));
        let n = normalise(&w(&[0, 1, 1, 1]), 0);
        assert_eq!(n.iter().map(|e| e.1).sum::<u32>(), FULL_WEIGHT);
        assert_eq!(n, w(&[0, 3_334, 3_333, 3_333]));
        let n = normalise(&w(&[12_000, 1]), 0);
        assert_eq!(n, w(&[10_000, 0]));
    }
}

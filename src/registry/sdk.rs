//! The design's SDK calls — `register`, `lookup`, `deregister` — as a trait each backend
//! implements (Consul catalog form, Consul KV form, etcd), and the pure choice `lookup`
//! makes: a version by the current split, then a healthy instance of it.

use std::time::Duration;

use super::{RegistryError, unit_random};
use crate::model::types::Split;

/// What `spine-dash register <name> <url> [--version v] [--ttl 15s]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Service name.
    pub service: String,
    /// The instance's URL, e.g. `http://127.0.0.1:8001`.
    pub url: String,
    /// Version (`v1`, …); `None` = the backend's default.
    pub version: Option<String>,
    /// With a TTL the registration expires unless kept alive (lease or TTL check).
    pub ttl: Option<Duration>,
}

/// A registration that was made: what `keep_alive` and `deregister` need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Service name.
    pub service: String,
    /// Instance id in the registry (key, service ID…).
    pub instance_id: String,
    /// Lease id (etcd) or check id (Consul TTL check), when a TTL was asked for.
    pub lease: Option<String>,
}

/// One instance `lookup` may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its version (subset).
    pub version: String,
    /// Its URL.
    pub url: String,
    /// Whether it may take traffic (passing health, or registered and alive).
    pub healthy: bool,
}

/// Why `lookup` found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing is registered under that name.
    #[error("'{0}' is not registered")]
    Unknown(String),
    /// Instances exist, none is healthy: the design's circuit-open text.
    #[error("'{service}' temporarily unavailable ({failed}/{total} failures)")]
    Unavailable {
        /// Service name.
        service: String,
        /// Instances that are not healthy.
        failed: usize,
        /// All instances.
        total: usize,
    },
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The design's client calls, per backend.
pub trait ServiceSdk: Send + Sync {
    /// Registers an instance; with `ttl`, it expires unless [`ServiceSdk::keep_alive`] runs.
    fn register(
        &self,
        registration: &Registration,
    ) -> impl std::future::Future<Output = Result<Registered, RegistryError>> + Send;

    /// Renews the lease / TTL check once (call about every `ttl / 3`).
    fn keep_alive(
        &self,
        registered: &Registered,
    ) -> impl std::future::Future<Output = Result<(), RegistryError>> + Send;

    /// Removes a registration made by `register`.
    fn deregister(
        &self,
        registered: &Registered,
    ) -> impl std::future::Future<Output = Result<(), RegistryError>> + Send;

    /// Removes every registration of `service` made through the SDK layout (the design's
    /// `deregister <name>`); returns how many were removed.
    fn deregister_service(
        &self,
        service: &str,
    ) -> impl std::future::Future<Output = Result<usize, RegistryError>> + Send;

    /// Every instance of `service` with its URL, version and health, and the current split.
    fn candidates(
        &self,
        service: &str,
    ) -> impl std::future::Future<Output = Result<(Vec<Candidate>, Option<Split>), RegistryError>> + Send;

    /// One URL of `service`, weighted by the current split, healthy instances only.
    fn lookup(
        &self,
        service: &str,
    ) -> impl std::future::Future<Output = Result<String, LookupError>> + Send {
        async move {
            let (candidates, split) = self.candidates(service).await?;
            choose(
                service,
                &candidates,
                split.as_ref(),
                unit_random(),
                unit_random(),
            )
        }
    }
}

/// The pure choice behind `lookup`: `version_roll` in `[0, 1)` picks a version by the
/// split's weights among versions that have a healthy instance (without a split, every
/// healthy instance is equally likely); `instance_roll` picks one of that version's
/// healthy instances.
pub fn choose(
    service: &str,
    candidates: &[Candidate],
    split: Option<&Split>,
    version_roll: f64,
    instance_roll: f64,
) -> Result<String, LookupError> {
    if candidates.is_empty() {
        return Err(LookupError::Unknown(service.to_owned()));
    }
    let healthy: Vec<&Candidate> = candidates.iter().filter(|c| c.healthy).collect();
    if healthy.is_empty() {
        return Err(LookupError::Unavailable {
            service: service.to_owned(),
            failed: candidates.len(),
            total: candidates.len(),
        });
    }
    let pool: Vec<&Candidate> = match split {
        Some(split) => {
            let weighted: Vec<(&str, u32)> = split
                .entries
                .iter()
                .filter(|e| e.weight > 0 && healthy.iter().any(|c| c.version == e.subset))
                .map(|e| (e.subset.as_str(), e.weight))
                .collect();
            // u64: a registry may hold any weights, their sum must not overflow.
            let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                healthy
            } else {
                let mut point = (version_roll.clamp(0.0, 1.0) * total as f64) as u64;
                let mut version = weighted[weighted.len() - 1].0;
                for (v, w) in &weighted {
                    if point < u64::from(*w) {
                        version = v;
                        break;
                    }
                    point -= u64::from(*w);
                }
                healthy
                    .into_iter()
                    .filter(|c| c.version == version)
                    .collect()
            }
        }
        None => healthy,
    };
    let index = ((instance_roll.clamp(0.0, 1.0) * pool.len() as f64) as usize).min(pool.len() - 1);
    Ok(pool[index].url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(version: &str, url: &str, healthy: bool) -> Candidate {
        Candidate {
            version: version.into(),
            url: url.into(),
            healthy,
        }
    }

    #[test]
    fn split_weights_pick_the_version_and_skip_unhealthy_instances() {
        let split = Split::from_pairs([("v1", 8000), ("v2", 2000)]);
        let cands = [
            c("v1", "http://a", false),
            c("v1", "http://b", true),
            c("v2", "http://c", true),
        ];
        assert_eq!(
            choose("identity", &cands, Some(&split), 0.5, 0.9).unwrap(),
            "http://b"
        );
        assert_eq!(
            choose("identity", &cands, Some(&split), 0.85, 0.0).unwrap(),
            "http://c"
        );
    }

    #[test]
    fn a_version_without_healthy_instances_gets_no_traffic() {
        let split = Split::from_pairs([("v1", 5000), ("v2", 5000)]);
        let cands = [c("v1", "http://a", true), c("v2", "http://c", false)];
        for roll in [0.0, 0.3, 0.6, 0.99] {
            assert_eq!(
                choose("identity", &cands, Some(&split), roll, roll).unwrap(),
                "http://a"
            );
        }
    }

    #[test]
    fn no_healthy_instance_is_the_designs_circuit_open_text() {
        let cands = [c("v1", "http://a", false), c("v1", "http://b", false)];
        let err = choose("photo", &cands, None, 0.1, 0.1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'photo' temporarily unavailable (2/2 failures)"
        );
        assert_eq!(
            choose("photo", &[], None, 0.1, 0.1).unwrap_err(),
            LookupError::Unknown("photo".into())
        );
    }

    #[test]
    fn rolls_are_in_range() {
        for _ in 0..100 {
            let r = unit_random();
            assert!((0.0..1.0).contains(&r));
        }
    }
}

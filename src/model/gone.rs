//! Ghosts: services that vanished from the registry are kept for [`GONE_FOR`] as "gone",
//! so the map can draw a faded ghost in their old slot. A ghost is forgotten after that
//! time, or as soon as the service comes back.

use std::time::{Duration, Instant};

use super::Model;
use super::types::ServiceEntry;

/// How long a vanished service is remembered.
pub const GONE_FOR: Duration = Duration::from_mins(5);

impl Model {
    /// Services that vanished from the registry less than 5 minutes before `now`, with
    /// when they vanished, sorted by name.
    #[must_use]
    pub fn gone_services(&self, now: Instant) -> Vec<(String, Instant)> {
        self.gone
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) < GONE_FOR)
            .map(|(name, at)| (name.clone(), *at))
            .collect()
    }

    /// Notes which services the new registry snapshot (`incoming`, read at `at`) drops or
    /// brings back. Call before replacing `self.services`.
    pub(super) fn track_gone(&mut self, incoming: &[ServiceEntry], at: Instant) {
        let incoming_names: std::collections::HashSet<&str> =
            incoming.iter().map(|s| s.name.as_str()).collect();
        for name in self.services.keys() {
            if !incoming_names.contains(name.as_str()) {
                self.gone.entry(name.clone()).or_insert(at);
            }
        }
        for svc in incoming {
            self.gone.remove(&svc.name);
        }
        self.gone
            .retain(|_, gone_at| at.saturating_duration_since(*gone_at) < GONE_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoEvent;
    use crate::model::tests_support::test_model;
    use crate::model::types::RegistrySnapshot;

    fn registry(m: &mut Model, at: Instant, names: &[&str]) {
        let mut services: Vec<ServiceEntry> = m.services.values().cloned().collect();
        services.extend(m.gone.keys().map(|n| ServiceEntry {
            protocol: None,
            name: n.clone(),
            instances: vec![],
            subsets: vec![],
            split: None,
        }));
        services.retain(|s| names.contains(&s.name.as_str()));
        m.apply(
            IoEvent::Registry {
                at,
                result: Ok(Some(RegistrySnapshot {
                    drivers: Vec::new(),
                    services,
                })),
                next_within: Duration::from_secs(1),
            },
            at,
        );
    }

    #[test]
    fn vanished_services_linger_then_go_or_come_back() {
        let mut m = test_model();
        let t0 = Instant::now();
        let sec = |n: u64| t0 + Duration::from_secs(n);
        registry(&mut m, sec(0), &["gateway", "identity", "photo"]);
        assert_eq!(m.gone_services(sec(0)), vec![]);
        registry(&mut m, sec(1), &["gateway"]);
        registry(&mut m, sec(2), &["gateway"]); // still gone: the time stays
        assert_eq!(
            m.gone_services(sec(2)),
            vec![
                ("identity".to_owned(), sec(1)),
                ("photo".to_owned(), sec(1))
            ]
        );
        registry(&mut m, sec(3), &["gateway", "photo"]); // photo is back
        assert_eq!(
            m.gone_services(sec(3)),
            vec![("identity".to_owned(), sec(1))]
        );
        assert_eq!(
            m.gone_services(sec(1) + GONE_FOR),
            vec![],
            "forgotten after 5 min"
        );
        registry(&mut m, sec(1) + GONE_FOR, &["gateway", "photo"]);
        assert!(m.gone.is_empty(), "and dropped from memory");
        // A registry error keeps everything: nothing vanishes.
        let at = sec(400);
        m.apply(
            IoEvent::Registry {
                at,
                result: Err("refused".into()),
                next_within: Duration::from_secs(1),
            },
            at,
        );
        assert_eq!(m.gone_services(at), vec![]);
    }
}

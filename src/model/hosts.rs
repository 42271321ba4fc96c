//! Which host of a lane is ejected or unhealthy: the latest Envoy `/clusters?format=json`
//! of every sidecar that serves it (keyed by stats URL, like the scrapes), merged over the
//! caller's sidecars. Pure data; time is passed in by the events.
//!
//! Only sidecars whose last stats scrape and last `/clusters` fetch both succeeded count: a
//! failing sidecar's last host list is kept (for when it answers again) but not shown as
//! current. A host is matched to a registry instance by `address:port`. With the demo spine
//! the sidecars' hosts are the instances themselves; with Consul Connect they are the
//! upstream sidecars' public listeners (`Node.Address:<proxy port>`), which the registry
//! snapshot does not list, so [`Model::instance_ejected`] answers `None` (unknown) there.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Model, SourceStatus};
use crate::metrics::{ClusterHosts, HostHealth};
use crate::model::types::{Instance, LaneKey};

/// The host lists of one sidecar.
#[derive(Debug, Clone, Default)]
pub struct SidecarHosts {
    /// Freshness and last error of its `/clusters` fetch.
    pub status: SourceStatus,
    /// The last good answer and when it arrived.
    pub clusters: Option<(Instant, Vec<ClusterHosts>)>,
}

/// Host lists of every sidecar that serves `/clusters`, by stats URL.
#[derive(Debug, Clone, Default)]
pub struct HostsState {
    /// By the sidecar's stats URL (`Meta.metrics_url`).
    pub by_sidecar: BTreeMap<String, SidecarHosts>,
}

/// One host of a lane, merged over the caller's sidecars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// The registry instance at this `address:port` (of the lane's service), if one matches.
    pub instance_id: Option<String>,
    /// The worst any caller sidecar reports (ejected > unhealthy > degraded > healthy).
    pub health: HostHealth,
    /// Caller instances whose sidecar has ejected this host now, sorted.
    pub ejected_by: Vec<String>,
    /// How many caller sidecars list this host.
    pub seen_by: usize,
}

impl Model {
    /// Records one `/clusters` fetch (the `IoEvent::Clusters` arm of [`Model::apply`]);
    /// answers for sidecars the registry no longer lists are dropped.
    pub(super) fn apply_clusters(
        &mut self,
        url: String,
        at: Instant,
        result: Result<Vec<ClusterHosts>, String>,
    ) {
        let sidecars = &self.sidecars;
        self.hosts
            .by_sidecar
            .retain(|u, _| sidecars.contains_key(u));
        if !self.sidecars.contains_key(&url) {
            return;
        }
        let entry = self.hosts.by_sidecar.entry(url).or_default();
        match result {
            Ok(clusters) => {
                entry.status.record_ok(at);
                entry.clusters = Some((at, clusters));
            }
            Err(error) => entry.status.record_err(at, error),
        }
    }

    /// Current host lists: `(caller instance id, caller service, clusters)` of every
    /// sidecar whose last scrape and last `/clusters` fetch both succeeded.
    fn current_hosts(&self) -> impl Iterator<Item = (&str, &str, &[ClusterHosts])> {
        self.hosts.by_sidecar.iter().filter_map(|(url, h)| {
            let sidecar = self.sidecars.get(url)?;
            if sidecar.status.last_error.is_some() || h.status.last_error.is_some() {
                return None;
            }
            let (_, clusters) = h.clusters.as_ref()?;
            Some((
                sidecar.instance_id.as_str(),
                sidecar.service.as_str(),
                clusters.as_slice(),
            ))
        })
    }

    /// Hosts of the lane's callee version as the caller's sidecars see them, sorted by
    /// address and port; empty when no caller sidecar serves `/clusters` (unknown, not
    /// "no hosts"). A host ejected by any caller sidecar shows as ejected, with which.
    #[must_use]
    pub fn lane_hosts(&self, lane: &LaneKey) -> Vec<HostStatus> {
        let mut merged: BTreeMap<(String, u16), HostStatus> = BTreeMap::new();
        for (caller_id, caller, clusters) in self.current_hosts() {
            if caller != lane.caller {
                continue;
            }
            for c in clusters.iter().filter(|c| {
                !c.id.is_local()
                    && c.id.service == lane.service
                    && self.lane_version(&c.id.service, &c.id.subset) == lane.version
            }) {
                for h in &c.hosts {
                    let status = merged
                        .entry((h.address.clone(), h.port))
                        .or_insert_with(|| HostStatus {
                            address: h.address.clone(),
                            port: h.port,
                            instance_id: self.instance_at(&lane.service, &h.address, h.port),
                            health: h.health,
                            ejected_by: Vec::new(),
                            seen_by: 0,
                        });
                    status.seen_by += 1;
                    if h.health.severity() > status.health.severity() {
                        status.health = h.health;
                    }
                    if h.health == HostHealth::Ejected {
                        status.ejected_by.push(caller_id.to_owned());
                    }
                }
            }
        }
        merged
            .into_values()
            .map(|mut s| {
                s.ejected_by.sort();
                s.ejected_by.dedup();
                s
            })
            .collect()
    }

    /// Whether any sidecar calling the instance's service has ejected it now: `Some(true)` /
    /// `Some(false)` when a current host list has its `address:port`, `None` when none does
    /// (no sidecar serves `/clusters`, or the hosts are sidecar addresses).
    #[must_use]
    pub fn instance_ejected(&self, instance: &Instance) -> Option<bool> {
        let mut seen = false;
        for (_, _, clusters) in self.current_hosts() {
            for c in clusters
                .iter()
                .filter(|c| !c.id.is_local() && c.id.service == instance.service)
            {
                for h in c
                    .hosts
                    .iter()
                    .filter(|h| h.address == instance.address && h.port == instance.port)
                {
                    if h.health == HostHealth::Ejected {
                        return Some(true);
                    }
                    seen = true;
                }
            }
        }
        seen.then_some(false)
    }

    /// Id of the registry instance of `service` at `address:port`.
    fn instance_at(&self, service: &str, address: &str, port: u16) -> Option<String> {
        self.services
            .get(service)?
            .instances
            .iter()
            .find(|i| i.address == address && i.port == port)
            .map(|i| i.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::io::IoEvent;
    use crate::metrics::{ClusterHost, ClusterId, SidecarScrape};
    use crate::model::RegistryInfo;
    use crate::model::types::{
        Health, RegistryKind, RegistrySnapshot, ServiceEntry, Split, SplitConfig,
    };

    fn inst(id: &str, service: &str, version: &str, port: u16, url: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            version: version.into(),
            address: "10.0.0.1".into(),
            port,
            health: Health::Passing,
            check_output: String::new(),
            metrics_url: url.map(Into::into),
        }
    }

    /// gateway ×2 (sidecars gw1, gw2), photo ×2 (ports 21, 22), identity v1 / v2 (31, 32).
    fn model() -> Model {
        let info = RegistryInfo {
            kind: RegistryKind::Demo,
            address: "http://x".into(),
            datacenter: None,
            writable: true,
        };
        let mut m = Model::new(info, Duration::from_secs(1), Duration::from_secs(1));
        let snap = RegistrySnapshot {
            drivers: Vec::new(),
            services: vec![
                ServiceEntry {
                    protocol: None,
                    name: "gateway".into(),
                    instances: vec![
                        inst("gateway-1", "gateway", "v1", 11, Some("http://gw1")),
                        inst("gateway-2", "gateway", "v1", 12, Some("http://gw2")),
                    ],
                    subsets: vec![],
                    split: None,
                },
                ServiceEntry {
                    protocol: None,
                    name: "identity".into(),
                    instances: vec![
                        inst("identity-v1-1", "identity", "v1", 31, None),
                        inst("identity-v2-1", "identity", "v2", 32, None),
                    ],
                    subsets: vec!["v1".into(), "v2".into()],
                    split: Some(SplitConfig {
                        split: Split::from_pairs([("v1", 8000), ("v2", 2000)]),
                        modify_index: 1,
                    }),
                },
                ServiceEntry {
                    protocol: None,
                    name: "photo".into(),
                    instances: vec![
                        inst("photo-1", "photo", "v1", 21, None),
                        inst("photo-2", "photo", "v1", 22, None),
                    ],
                    subsets: vec![],
                    split: None,
                },
            ],
        };
        let now = Instant::now();
        m.apply(
            IoEvent::Registry {
                at: now,
                result: Ok(Some(snap)),
                next_within: Duration::from_secs(1),
            },
            now,
        );
        for url in ["http://gw1", "http://gw2"] {
            m.apply(
                IoEvent::Scrape {
                    url: url.into(),
                    at: now,
                    result: Ok(SidecarScrape::default()),
                },
                now,
            );
        }
        m
    }

    fn host(port: u16, health: HostHealth) -> ClusterHost {
        ClusterHost {
            address: "10.0.0.1".into(),
            port,
            health,
        }
    }

    fn cluster(service: &str, subset: &str, hosts: Vec<ClusterHost>) -> ClusterHosts {
        ClusterHosts {
            id: ClusterId {
                source: String::new(),
                service: service.into(),
                subset: subset.into(),
            },
            name: format!("{service}.{subset}"),
            hosts,
        }
    }

    fn clusters(m: &mut Model, url: &str, result: Result<Vec<ClusterHosts>, String>) {
        let at = Instant::now();
        m.apply(
            IoEvent::Clusters {
                url: url.into(),
                at,
                result,
            },
            at,
        );
    }

    fn lane(service: &str, version: &str) -> LaneKey {
        LaneKey {
            caller: "gateway".into(),
            service: service.into(),
            version: version.into(),
        }
    }

    fn photo_hosts(one: HostHealth, two: HostHealth) -> Vec<ClusterHosts> {
        vec![
            cluster("photo", "", vec![host(21, one), host(22, two)]),
            cluster(
                "identity",
                "v1",
                vec![
                    host(31, HostHealth::Healthy),
                    host(99, HostHealth::Unhealthy),
                ],
            ),
            cluster("identity", "v2", vec![host(32, HostHealth::Degraded)]),
            cluster("local_app", "", vec![host(11, HostHealth::Healthy)]),
        ]
    }

    #[test]
    fn an_ejection_in_one_caller_sidecar_shows_with_which() {
        use HostHealth::{Degraded, Ejected, Healthy, Unhealthy};
        let mut m = model();
        assert_eq!(m.lane_hosts(&lane("photo", "v1")), vec![], "unknown yet");
        let photo_1 = m.services["photo"].instances[0].clone();
        assert_eq!(m.instance_ejected(&photo_1), None);

        clusters(&mut m, "http://gw1", Ok(photo_hosts(Ejected, Healthy)));
        clusters(&mut m, "http://gw2", Ok(photo_hosts(Healthy, Healthy)));
        assert_eq!(
            m.lane_hosts(&lane("photo", "v1")),
            vec![
                HostStatus {
                    address: "10.0.0.1".into(),
                    port: 21,
                    instance_id: Some("photo-1".into()),
                    health: Ejected,
                    ejected_by: vec!["gateway-1".into()],
                    seen_by: 2,
                },
                HostStatus {
                    address: "10.0.0.1".into(),
                    port: 22,
                    instance_id: Some("photo-2".into()),
                    health: Healthy,
                    ejected_by: vec![],
                    seen_by: 2,
                },
            ]
        );
        // Subsets are lanes; a host the registry does not list has no instance id.
        assert_eq!(
            m.lane_hosts(&lane("identity", "v1")),
            vec![
                HostStatus {
                    address: "10.0.0.1".into(),
                    port: 31,
                    instance_id: Some("identity-v1-1".into()),
                    health: Healthy,
                    ejected_by: vec![],
                    seen_by: 2,
                },
                HostStatus {
                    address: "10.0.0.1".into(),
                    port: 99,
                    instance_id: None,
                    health: Unhealthy,
                    ejected_by: vec![],
                    seen_by: 2,
                },
            ]
        );
        assert_eq!(m.lane_hosts(&lane("identity", "v2"))[0].health, Degraded);
        assert_eq!(m.instance_ejected(&photo_1), Some(true));
        let photo_2 = m.services["photo"].instances[1].clone();
        assert_eq!(m.instance_ejected(&photo_2), Some(false));
        let gateway_1 = m.services["gateway"].instances[0].clone();
        assert_eq!(
            m.instance_ejected(&gateway_1),
            None,
            "local_app is not a host of the gateway service"
        );

        // Both sidecars eject it: both are named, once each.
        clusters(&mut m, "http://gw2", Ok(photo_hosts(Ejected, Healthy)));
        assert_eq!(
            m.lane_hosts(&lane("photo", "v1"))[0].ejected_by,
            vec!["gateway-1".to_owned(), "gateway-2".to_owned()]
        );
    }

    #[test]
    fn failing_sources_and_unknown_sidecars_do_not_count() {
        use HostHealth::{Ejected, Healthy};
        let mut m = model();
        clusters(&mut m, "http://gw1", Ok(photo_hosts(Ejected, Healthy)));
        clusters(&mut m, "http://nobody", Ok(photo_hosts(Ejected, Ejected)));
        assert!(!m.hosts.by_sidecar.contains_key("http://nobody"));
        let photo_1 = m.services["photo"].instances[0].clone();
        assert_eq!(m.instance_ejected(&photo_1), Some(true));

        // The clusters fetch fails: its last list is kept but not current.
        clusters(
            &mut m,
            "http://gw1",
            Err("HTTP 500: boom (http://gw1)".into()),
        );
        assert_eq!(m.instance_ejected(&photo_1), None);
        assert!(m.hosts.by_sidecar["http://gw1"].clusters.is_some());
        assert_eq!(
            m.hosts.by_sidecar["http://gw1"]
                .status
                .last_error
                .as_deref(),
            Some("HTTP 500: boom (http://gw1)")
        );
        clusters(&mut m, "http://gw1", Ok(photo_hosts(Ejected, Healthy)));
        assert_eq!(m.instance_ejected(&photo_1), Some(true));

        // The sidecar's stats scrape fails: its hosts are not current either.
        let at = Instant::now();
        m.apply(
            IoEvent::Scrape {
                url: "http://gw1".into(),
                at,
                result: Err("connection refused".into()),
            },
            at,
        );
        assert_eq!(m.instance_ejected(&photo_1), None);
        assert_eq!(m.lane_hosts(&lane("photo", "v1")), vec![]);
    }
}

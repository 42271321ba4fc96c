//! Envoy's `/clusters?format=json` (`API_BRIEF.md` §2.6): which hosts each cluster has and
//! whether each can take traffic — in particular which one outlier detection ejected
//! (`failed_outlier_check`). A pure parser: bytes in, clusters out, never a panic.
//!
//! Cluster names become a [`ClusterId`] as the stats parser reads them from Consul's labels
//! (§2.7): `[<hash>~][<subset>.]<service>.<namespace>.[<partition>.]<dc>.<internal|internal-v1>.<td>.consul`;
//! any other name (`local_app`, a non-Consul Envoy) is its first dot-token, as
//! `envoy_cluster_name`. `/clusters` does not say which sidecar it came from: `source` is
//! left empty for the caller to fill in.
//!
//! Proto-JSON leaves defaults out: a missing `health_status` flag is false, a missing
//! `eds_health_status` is `HEALTHY`'s absence (read as healthy), a missing `host_statuses` or
//! `cluster_statuses` is empty. Fields the dashboard does not use are ignored.

use serde::Deserialize;

use super::ClusterId;

/// Why a `/clusters?format=json` body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClustersError {
    /// Not JSON, or not the shape Envoy prints.
    #[error("not Envoy /clusters JSON: {0}")]
    Json(String),
}

/// What a host can do, from Envoy's `health_status`, worst first in [`HostHealth::severity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostHealth {
    /// Takes traffic.
    Healthy,
    /// Takes traffic only when no healthy host is left (`eds_health_status` `DEGRADED` or a
    /// failed active degraded check).
    Degraded,
    /// Out by the registry or active health checking (`eds_health_status` `UNHEALTHY`,
    /// `DRAINING`, `TIMEOUT`, `failed_active_health_check`, `excluded_via_immediate_hc_fail`).
    Unhealthy,
    /// Ejected by outlier detection (`failed_outlier_check`), whatever else is true.
    Ejected,
}

impl HostHealth {
    /// Higher is worse (for "worst wins" over several sidecars).
    #[must_use]
    pub fn severity(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Unhealthy => 2,
            Self::Ejected => 3,
        }
    }

    /// Lowercase name for the UI: `healthy`, `degraded`, `unhealthy`, `ejected`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
        }
    }
}

/// One host of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHost {
    /// IP address (or pipe path for a Unix-socket host).
    pub address: String,
    /// Port (0 for a pipe).
    pub port: u16,
    /// Summary of its `health_status`.
    pub health: HostHealth,
}

/// One cluster of one sidecar with its hosts, in the order Envoy listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHosts {
    /// Service and subset (`source` empty, see the module docs).
    pub id: ClusterId,
    /// The raw cluster name.
    pub name: String,
    /// Its hosts.
    pub hosts: Vec<ClusterHost>,
}

#[derive(Deserialize)]
struct BodyJson {
    #[serde(default)]
    cluster_statuses: Vec<ClusterJson>,
}

#[derive(Deserialize)]
struct ClusterJson {
    name: String,
    #[serde(default)]
    host_statuses: Vec<HostJson>,
}

#[derive(Deserialize)]
struct HostJson {
    #[serde(default)]
    address: AddressJson,
    #[serde(default)]
    health_status: HealthJson,
}

#[derive(Deserialize, Default)]
struct AddressJson {
    socket_address: Option<SocketJson>,
    pipe: Option<PipeJson>,
}

#[derive(Deserialize)]
struct SocketJson {
    #[serde(default)]
    address: String,
    /// A number; older renderers and proto-JSON also allow a string.
    #[serde(default)]
    port_value: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PipeJson {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize, Default)]
#[allow(clippy::struct_excessive_bools)] // Envoy's flags, one bool each
struct HealthJson {
    #[serde(default)]
    failed_outlier_check: bool,
    #[serde(default)]
    failed_active_health_check: bool,
    #[serde(default)]
    failed_active_degraded_check: bool,
    #[serde(default)]
    excluded_via_immediate_hc_fail: bool,
    #[serde(default)]
    eds_health_status: Option<String>,
}

impl HealthJson {
    fn summary(&self) -> HostHealth {
        let eds = self.eds_health_status.as_deref().unwrap_or("");
        if self.failed_outlier_check {
            HostHealth::Ejected
        } else if self.failed_active_health_check
            || self.excluded_via_immediate_hc_fail
            || matches!(eds, "UNHEALTHY" | "DRAINING" | "TIMEOUT")
        {
            HostHealth::Unhealthy
        } else if self.failed_active_degraded_check || eds == "DEGRADED" {
            HostHealth::Degraded
        } else {
            HostHealth::Healthy
        }
    }
}

fn port(value: Option<&serde_json::Value>) -> Result<u16, ClustersError> {
    let n = match value {
        None => return Ok(0),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    n.and_then(|n| u16::try_from(n).ok()).ok_or_else(|| {
        ClustersError::Json(format!(
            "port_value {} is not a port",
            value.map_or_else(String::new, ToString::to_string)
        ))
    })
}

/// The service and subset a cluster name stands for (see the module docs).
#[must_use]
pub fn cluster_id_from_name(name: &str) -> ClusterId {
    let first = name.split('.').next().unwrap_or_default();
    let fallback = || ClusterId {
        source: String::new(),
        service: first.to_owned(),
        subset: String::new(),
    };
    // `<hash>~` or `passthrough~` before the first dot.
    let stripped = match first.find('~') {
        Some(i) => name.get(i + 1..).unwrap_or_default(),
        None => name,
    };
    let parts: Vec<&str> = stripped.split('.').collect();
    let n = parts.len();
    if n < 6 || parts[n - 1] != "consul" {
        return fallback();
    }
    let routing = parts[n - 3];
    let rest = if routing.starts_with("internal-") {
        &parts[..n - 5]
    } else {
        &parts[..n - 4]
    };
    match *rest {
        [subset, service, _namespace] if !service.is_empty() => ClusterId {
            source: String::new(),
            service: service.to_owned(),
            subset: subset.to_owned(),
        },
        [service, _namespace] if !service.is_empty() => ClusterId {
            source: String::new(),
            service: service.to_owned(),
            subset: String::new(),
        },
        _ => fallback(),
    }
}

/// Parses a `/clusters?format=json` body.
pub fn parse_clusters_json(body: &[u8]) -> Result<Vec<ClusterHosts>, ClustersError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ClustersError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ClustersError::Json("expected a JSON object".into()));
    }
    let parsed: BodyJson =
        serde_json::from_value(value).map_err(|e| ClustersError::Json(e.to_string()))?;
    parsed
        .cluster_statuses
        .into_iter()
        .map(|c| {
            let hosts = c
                .host_statuses
                .into_iter()
                .map(|h| {
                    let (address, port) = match (h.address.socket_address, h.address.pipe) {
                        (Some(s), _) => {
                            let p = port(s.port_value.as_ref())?;
                            (s.address, p)
                        }
                        (None, Some(p)) => (p.path, 0),
                        (None, None) => (String::new(), 0),
                    };
                    Ok(ClusterHost {
                        address,
                        port,
                        health: h.health_status.summary(),
                    })
                })
                .collect::<Result<Vec<_>, ClustersError>>()?;
            Ok(ClusterHosts {
                id: cluster_id_from_name(&c.name),
                name: c.name,
                hosts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(service: &str, subset: &str) -> ClusterId {
        ClusterId {
            source: String::new(),
            service: service.into(),
            subset: subset.into(),
        }
    }

    #[test]
    fn consul_cluster_names() {
        let td = "c3f1b6a2-8d4e-4f7a-9b2c-1e5d7a9f3b64";
        for (name, want) in [
            (
                format!("v2.identity.default.dc1.internal.{td}.consul"),
                id("identity", "v2"),
            ),
            (
                format!("photo.default.dc1.internal.{td}.consul"),
                id("photo", ""),
            ),
            (
                format!("a1b2c3d4~v1.identity.default.dc1.internal.{td}.consul"),
                id("identity", "v1"),
            ),
            (
                format!("passthrough~payment.default.dc1.internal.{td}.consul"),
                id("payment", ""),
            ),
            // A partition other than default: routing `internal-v1`, one more segment.
            (
                format!("payments.default.pci.dc1.internal-v1.{td}.consul"),
                id("payments", ""),
            ),
            (
                format!("v1.payments.default.pci.dc1.internal-v1.{td}.consul"),
                id("payments", "v1"),
            ),
            // Peered.
            (
                format!("billing.default.east.external.{td}.consul"),
                id("billing", ""),
            ),
            ("local_app".to_owned(), id("local_app", "")),
            ("self_admin".to_owned(), id("self_admin", "")),
            // Not Consul: the first dot-token, as envoy_cluster_name.
            (
                "outbound|80||web.ns.svc.cluster.local".to_owned(),
                id("outbound|80||web", ""),
            ),
            ("x.consul".to_owned(), id("x", "")),
            (String::new(), id("", "")),
            ("~".to_owned(), id("~", "")),
            ("a~.b.c.d.e.consul".to_owned(), id("a~", "")),
        ] {
            assert_eq!(cluster_id_from_name(&name), want, "{name}");
        }
    }

    #[test]
    fn health_flags_summarize_worst_first() {
        let h = |json: &str| {
            let body = format!(
                r#"{{"cluster_statuses":[{{"name":"x","host_statuses":[{{"address":{{"socket_address":{{"address":"10.0.0.1","port_value":1}}}},"health_status":{json}}}]}}]}}"#
            );
            parse_clusters_json(body.as_bytes()).unwrap()[0].hosts[0].health
        };
        assert_eq!(h(r#"{"eds_health_status":"HEALTHY"}"#), HostHealth::Healthy);
        assert_eq!(h("{}"), HostHealth::Healthy);
        assert_eq!(h(r#"{"eds_health_status":"UNKNOWN"}"#), HostHealth::Healthy);
        assert_eq!(
            h(r#"{"eds_health_status":"DEGRADED"}"#),
            HostHealth::Degraded
        );
        assert_eq!(
            h(r#"{"failed_active_degraded_check":true}"#),
            HostHealth::Degraded
        );
        assert_eq!(
            h(r#"{"eds_health_status":"UNHEALTHY"}"#),
            HostHealth::Unhealthy
        );
        assert_eq!(
            h(r#"{"eds_health_status":"DRAINING"}"#),
            HostHealth::Unhealthy
        );
        assert_eq!(
            h(r#"{"failed_active_health_check":true,"eds_health_status":"HEALTHY"}"#),
            HostHealth::Unhealthy
        );
        assert_eq!(
            h(r#"{"failed_outlier_check":true,"eds_health_status":"UNHEALTHY"}"#),
            HostHealth::Ejected
        );
        assert_eq!(h(r#"{"failed_outlier_check":false}"#), HostHealth::Healthy);
    }

    #[test]
    fn shapes_and_garbage() {
        assert_eq!(parse_clusters_json(b"{}"), Ok(vec![]));
        let pipe = br#"{"cluster_statuses":[{"name":"uds","host_statuses":[{"address":{"pipe":{"path":"/run/app.sock"}}}]}]}"#;
        assert_eq!(
            parse_clusters_json(pipe).unwrap()[0].hosts,
            vec![ClusterHost {
                address: "/run/app.sock".into(),
                port: 0,
                health: HostHealth::Healthy
            }]
        );
        let string_port = br#"{"cluster_statuses":[{"name":"a","host_statuses":[{"address":{"socket_address":{"address":"::1","port_value":"8080"}}}]}]}"#;
        assert_eq!(
            parse_clusters_json(string_port).unwrap()[0].hosts[0].port,
            8080
        );
        for bad in [
            &b""[..],
            b"[]",
            b"null",
            b"<html>404</html>",
            br#"{"cluster_statuses":[{"host_statuses":[]}]}"#,
            br#"{"cluster_statuses":"x"}"#,
            br#"{"cluster_statuses":[{"name":"a","host_statuses":[{"address":{"socket_address":{"port_value":70000}}}]}]}"#,
            br#"{"cluster_statuses":[{"name":"a","host_statuses":[{"address":{"socket_address":{"port_value":-1}}}]}]}"#,
            br#"{"cluster_statuses":[{"name":"a","host_statuses":[{"health_status":{"failed_outlier_check":"yes"}}]}]}"#,
        ] {
            assert!(
                matches!(parse_clusters_json(bad), Err(ClustersError::Json(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

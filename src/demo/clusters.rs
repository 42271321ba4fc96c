//! The demo sidecar's `/clusters?format=json`, shaped as Envoy's admin endpoint prints it
//! (`API_BRIEF.md` §2.6, fixture `envoy/clusters.json`): proto-JSON with `snake_case` keys,
//! default values left out (a zero counter has no `value`, `DEFAULT` priority and false flags
//! are omitted), counters as strings, gauges marked `"type":"GAUGE"`, host stats in Envoy's
//! order (counters, then gauges).

use serde::Serialize;

use super::sidecar::{ENVOY_DEFAULT_MAX, ENVOY_DEFAULT_RETRIES, HostStats};

/// One host of a cluster, to render.
pub(crate) struct HostView<'a> {
    /// IP address.
    pub address: &'a str,
    /// Port.
    pub port: u16,
    /// Per-host counters.
    pub stats: HostStats,
    /// The registry lets it take traffic (`eds_health_status` `HEALTHY`, else `UNHEALTHY`).
    pub eds_healthy: bool,
    /// Outlier detection ejected it (`failed_outlier_check`).
    pub ejected: bool,
}

/// One cluster, to render.
pub(crate) struct ClusterStatusView<'a> {
    /// Full cluster name.
    pub name: &'a str,
    /// Added by CDS (every cluster a Consul sidecar gets from the agent).
    pub added_via_api: bool,
    /// Its hosts.
    pub hosts: Vec<HostView<'a>>,
    /// Default-priority `max_requests`.
    pub max_requests: u32,
    /// Default-priority `max_pending_requests`.
    pub max_pending_requests: u32,
}

#[derive(Serialize)]
struct ClustersJson<'a> {
    cluster_statuses: Vec<ClusterJson<'a>>,
}

#[derive(Serialize)]
struct ClusterJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    added_via_api: bool,
    host_statuses: Vec<HostJson<'a>>,
    circuit_breakers: BreakersJson,
    observability_name: &'a str,
}

#[derive(Serialize)]
struct BreakersJson {
    thresholds: [ThresholdsJson; 2],
}

#[derive(Serialize)]
struct ThresholdsJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'static str>,
    max_connections: u32,
    max_pending_requests: u32,
    max_requests: u32,
    max_retries: u32,
}

#[derive(Serialize)]
struct HostJson<'a> {
    address: AddressJson<'a>,
    stats: Vec<StatJson>,
    health_status: HealthJson,
    weight: u32,
    locality: Empty,
}

#[derive(Serialize)]
struct AddressJson<'a> {
    socket_address: SocketJson<'a>,
}

#[derive(Serialize)]
struct SocketJson<'a> {
    address: &'a str,
    port_value: u16,
}

#[derive(Serialize)]
struct StatJson {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// uint64 as a string, left out when 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    name: &'static str,
}

#[derive(Serialize)]
struct HealthJson {
    #[serde(skip_serializing_if = "is_false")]
    failed_outlier_check: bool,
    eds_health_status: &'static str,
}

#[derive(Serialize)]
struct Empty {}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

fn stat(name: &'static str, value: u64, gauge: bool) -> StatJson {
    StatJson {
        kind: gauge.then_some("GAUGE"),
        value: (value > 0).then(|| value.to_string()),
        name,
    }
}

fn host_json<'a>(h: &HostView<'a>) -> HostJson<'a> {
    let s = h.stats;
    HostJson {
        address: AddressJson {
            socket_address: SocketJson {
                address: h.address,
                port_value: h.port,
            },
        },
        stats: vec![
            stat("cx_connect_fail", s.cx_connect_fail, false),
            // The demo does not track connections: one per request in flight.
            stat("cx_total", 0, false),
            stat("rq_error", s.rq_error, false),
            stat("rq_success", s.rq_success, false),
            stat("rq_timeout", s.rq_timeout, false),
            stat("rq_total", s.rq_total, false),
            stat("cx_active", s.rq_active, true),
            stat("rq_active", s.rq_active, true),
        ],
        health_status: HealthJson {
            failed_outlier_check: h.ejected,
            eds_health_status: if h.eds_healthy {
                "HEALTHY"
            } else {
                "UNHEALTHY"
            },
        },
        weight: 1,
        locality: Empty {},
    }
}

/// The whole `/clusters?format=json` body.
pub(crate) fn render(clusters: &[ClusterStatusView<'_>]) -> String {
    let body = ClustersJson {
        cluster_statuses: clusters
            .iter()
            .map(|c| ClusterJson {
                name: c.name,
                added_via_api: c.added_via_api,
                host_statuses: c.hosts.iter().map(host_json).collect(),
                circuit_breakers: BreakersJson {
                    thresholds: [
                        ThresholdsJson {
                            priority: None,
                            max_connections: ENVOY_DEFAULT_MAX,
                            max_pending_requests: c.max_pending_requests,
                            max_requests: c.max_requests,
                            max_retries: ENVOY_DEFAULT_RETRIES,
                        },
                        ThresholdsJson {
                            priority: Some("HIGH"),
                            max_connections: ENVOY_DEFAULT_MAX,
                            max_pending_requests: ENVOY_DEFAULT_MAX,
                            max_requests: ENVOY_DEFAULT_MAX,
                            max_retries: ENVOY_DEFAULT_RETRIES,
                        },
                    ],
                },
                observability_name: c.name,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ejected_host_reads_like_envoys_fixture() {
        let views = [ClusterStatusView {
            name: "payment.default.dc1.internal.td.consul",
            added_via_api: true,
            hosts: vec![
                HostView {
                    address: "127.0.0.1",
                    port: 4001,
                    stats: HostStats {
                        rq_total: 9379,
                        rq_success: 8518,
                        rq_error: 861,
                        ..HostStats::default()
                    },
                    eds_healthy: true,
                    ejected: true,
                },
                HostView {
                    address: "127.0.0.1",
                    port: 4002,
                    stats: HostStats::default(),
                    eds_healthy: false,
                    ejected: false,
                },
            ],
            max_requests: 10,
            max_pending_requests: 5,
        }];
        let v: serde_json::Value = serde_json::from_str(&render(&views)).unwrap();
        let c = &v["cluster_statuses"][0];
        assert_eq!(c["name"], "payment.default.dc1.internal.td.consul");
        assert_eq!(c["observability_name"], c["name"]);
        assert_eq!(c["added_via_api"], true);
        let ejected = &c["host_statuses"][0];
        assert_eq!(
            ejected["address"],
            serde_json::json!({"socket_address": {"address": "127.0.0.1", "port_value": 4001}})
        );
        assert_eq!(
            ejected["health_status"],
            serde_json::json!({"failed_outlier_check": true, "eds_health_status": "HEALTHY"})
        );
        assert_eq!(
            ejected["stats"],
            serde_json::json!([
                {"name": "cx_connect_fail"},
                {"name": "cx_total"},
                {"value": "861", "name": "rq_error"},
                {"value": "8518", "name": "rq_success"},
                {"name": "rq_timeout"},
                {"value": "9379", "name": "rq_total"},
                {"type": "GAUGE", "name": "cx_active"},
                {"type": "GAUGE", "name": "rq_active"}
            ])
        );
        assert_eq!(ejected["weight"], 1);
        assert_eq!(
            c["host_statuses"][1]["health_status"],
            serde_json::json!({"eds_health_status": "UNHEALTHY"}),
            "false flags are left out"
        );
        assert_eq!(
            c["circuit_breakers"]["thresholds"],
            serde_json::json!([
                {"max_connections": 1024, "max_pending_requests": 5, "max_requests": 10, "max_retries": 3},
                {"priority": "HIGH", "max_connections": 1024, "max_pending_requests": 1024,
                 "max_requests": 1024, "max_retries": 3}
            ])
        );
    }
}

//! Services registered through the agent API (`/v1/agent/service/register`,
//! `/v1/agent/service/deregister/<id>`, `/v1/agent/check/pass/<id>`): what the design's
//! SDK (`spine-dash register`, catalog form) talks to. They show in the catalog, in
//! `/v1/health/service/<name>` and `/v1/health/state/*` like the demo's own instances,
//! with an optional TTL check that turns critical (`TTL expired`) unless passed in time.
//! Time is passed in (`now`); the demo spine calls [`RegistryState::expire`] every second.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::super::filter::Filter;
use super::{ApiError, LOOPBACK, NODE_ID, NODE_NAME, RegistryState, parse_go_duration};
use crate::model::types::Health;

/// A TTL check of an agent service.
#[derive(Debug, Clone)]
struct TtlCheck {
    id: String,
    name: String,
    ttl: Duration,
    status: Health,
    output: String,
    deadline: Instant,
    create_index: u64,
    modify_index: u64,
}

/// A service registered through the agent API.
#[derive(Debug, Clone)]
pub(crate) struct AgentService {
    id: String,
    service: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    check: Option<TtlCheck>,
    create_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterJson {
    #[serde(default, rename = "ID")]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    check: Option<CheckDefJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckDefJson {
    #[serde(default, rename = "CheckID")]
    check_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "TTL")]
    ttl: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl RegistryState {
    /// `PUT /v1/agent/service/register`: adds or replaces the service (by ID, default the
    /// name). Only TTL checks are supported in the demo.
    pub(crate) fn agent_register(&mut self, body: &[u8], now: Instant) -> Result<(), ApiError> {
        let reg: RegisterJson = serde_json::from_slice(body).map_err(ApiError::decoding)?;
        let service = reg.name.unwrap_or_default();
        if service.is_empty() {
            return Err(ApiError {
                status: 400,
                message: "Invalid Service: Missing service name".into(),
            });
        }
        let id = reg.id.filter(|i| !i.is_empty()).unwrap_or(service.clone());
        self.index += 1;
        let existing = self.agent.get(&id);
        let create_index = existing.map_or(self.index, |e| e.create_index);
        let check = match reg.check {
            None => None,
            Some(def) => {
                let Some(ttl_text) = def.ttl.filter(|t| !t.is_empty()) else {
                    return Err(ApiError::decoding(
                        "the demo registry supports only TTL checks on agent services",
                    ));
                };
                let Some(ttl) = parse_go_duration(&ttl_text).filter(|d| !d.is_zero()) else {
                    return Err(ApiError::decoding(format!("invalid TTL {ttl_text:?}")));
                };
                let status = match def.status.as_deref() {
                    None | Some("" | "critical") => Health::Critical,
                    Some("passing") => Health::Passing,
                    Some("warning") => Health::Warning,
                    Some(other) => {
                        return Err(ApiError {
                            status: 400,
                            message: format!("Invalid Check: Status {other:?}"),
                        });
                    }
                };
                Some(TtlCheck {
                    id: def
                        .check_id
                        .filter(|c| !c.is_empty())
                        .unwrap_or_else(|| format!("service:{id}")),
                    name: def
                        .name
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| format!("Service '{service}' check")),
                    ttl,
                    status,
                    output: String::new(),
                    deadline: now + ttl,
                    create_index: self.index,
                    modify_index: self.index,
                })
            }
        };
        let svc = AgentService {
            id: id.clone(),
            service: service.clone(),
            address: reg.address.unwrap_or_default(),
            port: reg.port.unwrap_or(0),
            tags: reg.tags.unwrap_or_default(),
            meta: reg.meta.unwrap_or_default(),
            check,
            create_index,
        };
        let old_service = self.agent.insert(id, svc).map(|old| old.service);
        if let Some(old) = old_service.filter(|o| *o != service) {
            self.touch_service(&old, true);
        }
        self.touch_service(&service, true);
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub(crate) fn agent_deregister(&mut self, id: &str) -> Result<(), ApiError> {
        let Some(old) = self.agent.remove(id) else {
            return Err(ApiError {
                status: 404,
                message: format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                ),
            });
        };
        self.index += 1;
        self.touch_service(&old.service, true);
        Ok(())
    }

    /// `PUT /v1/agent/check/pass/<check id>[?note=…]`: the TTL check passes for another TTL.
    pub(crate) fn agent_check_pass(
        &mut self,
        check_id: &str,
        note: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(svc) = self
            .agent
            .values_mut()
            .find(|s| s.check.as_ref().is_some_and(|c| c.id == check_id))
        else {
            return Err(ApiError {
                status: 404,
                message: format!(
                    "Unknown check ID {check_id:?}. Ensure that the check ID is passed, not the check name."
                ),
            });
        };
        let service = svc.service.clone();
        let Some(check) = svc.check.as_mut() else {
            return Ok(());
        };
        check.deadline = now + check.ttl;
        if check.status == Health::Passing && check.output == note {
            return Ok(());
        }
        self.index += 1;
        check.status = Health::Passing;
        note.clone_into(&mut check.output);
        check.modify_index = self.index;
        self.touch_service(&service, false);
        Ok(())
    }

    /// TTL checks past their deadline turn critical; KV sessions past theirs end.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for svc in self.agent.values_mut() {
            if let Some(check) = svc.check.as_mut()
                && now >= check.deadline
                && check.status != Health::Critical
            {
                self.index += 1;
                check.status = Health::Critical;
                check.output = "TTL expired".into();
                check.modify_index = self.index;
                changed.push(svc.service.clone());
            }
        }
        for service in changed {
            self.touch_service(&service, false);
        }
        self.expire_sessions(now);
    }

    /// `GET /v1/agent/services`: id → service, as the agent lists them.
    pub(crate) fn agent_services_json(&self) -> Result<Vec<u8>, ApiError> {
        let map: BTreeMap<&str, Value> = self
            .agent
            .values()
            .map(|s| {
                (
                    s.id.as_str(),
                    json!({
                        "ID": s.id, "Service": s.service, "Tags": s.tags, "Meta": s.meta,
                        "Port": s.port, "Address": s.address, "Datacenter": self.datacenter,
                        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
                    }),
                )
            })
            .collect();
        serde_json::to_vec(&map).map_err(|e| ApiError::invalid(e.to_string()))
    }

    pub(super) fn agent_catalog(
        &self,
        filter: Option<&Filter>,
        out: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        // Catalog filters are about the demo's own instances; agent services match only
        // the unfiltered list.
        if filter.is_some() {
            return;
        }
        for s in self.agent.values() {
            out.entry(s.service.clone())
                .or_default()
                .extend(s.tags.iter().cloned());
        }
    }

    fn node_json(&self) -> Value {
        json!({
            "ID": NODE_ID, "Node": NODE_NAME, "Address": LOOPBACK, "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": LOOPBACK, "lan_ipv4": LOOPBACK, "wan": LOOPBACK, "wan_ipv4": LOOPBACK},
            "Meta": {"consul-network-segment": "", "spine-demo": "true"},
            "CreateIndex": self.node_index, "ModifyIndex": self.node_index,
        })
    }

    fn serf_check_json(&self) -> Value {
        json!({
            "Node": NODE_NAME, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
            "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
            "CreateIndex": self.node_index, "ModifyIndex": self.node_index,
        })
    }

    fn agent_check_json(s: &AgentService) -> Option<Value> {
        let c = s.check.as_ref()?;
        Some(json!({
            "Node": NODE_NAME, "CheckID": c.id, "Name": c.name, "Status": c.status.as_str(),
            "Notes": "", "Output": c.output, "ServiceID": s.id, "ServiceName": s.service,
            "ServiceTags": s.tags, "Type": "ttl", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {},
            "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
        }))
    }

    pub(super) fn agent_health_entries(
        &self,
        service: &str,
        passing_only: bool,
        filter: Option<&Filter>,
    ) -> Vec<Value> {
        if filter.is_some() {
            return Vec::new();
        }
        self.agent
            .values()
            .filter(|s| s.service == service)
            .filter(|s| {
                !passing_only || s.check.as_ref().is_none_or(|c| c.status == Health::Passing)
            })
            .map(|s| {
                let mut checks = vec![self.serf_check_json()];
                checks.extend(Self::agent_check_json(s));
                json!({
                    "Node": self.node_json(),
                    "Service": {
                        "ID": s.id, "Service": s.service, "Tags": s.tags, "Address": s.address,
                        "Meta": s.meta, "Port": s.port, "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": false, "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                        "Connect": {}, "CreateIndex": s.create_index, "ModifyIndex": s.create_index,
                    },
                    "Checks": checks,
                })
            })
            .collect()
    }

    pub(super) fn agent_checks(&self) -> Vec<Value> {
        self.agent
            .values()
            .filter_map(Self::agent_check_json)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> RegistryState {
        RegistryState::new(
            "dc1",
            vec![],
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn ttl_check_passes_then_expires() {
        let mut st = empty();
        let t0 = Instant::now();
        let body = br#"{"ID":"photo-1","Name":"photo","Address":"127.0.0.1","Port":8002,
            "Tags":["v1"],"Meta":{"version":"v1"},
            "Check":{"CheckID":"service:photo-1","TTL":"2s","Status":"passing"}}"#;
        st.agent_register(body, t0).unwrap();
        assert!(st.catalog_services(None).contains_key("photo"));
        let entries: Value =
            serde_json::from_slice(&st.health_service_json("photo", false, None).unwrap()).unwrap();
        assert_eq!(entries[0]["Service"]["Port"], 8002);
        assert_eq!(entries[0]["Checks"][1]["Status"], "passing");
        let idx = st.checks_index();
        st.expire(t0 + Duration::from_secs(1));
        assert_eq!(st.checks_index(), idx, "not yet");
        st.agent_check_pass("service:photo-1", "", t0 + Duration::from_secs(1))
            .unwrap();
        st.expire(t0 + Duration::from_millis(2500));
        assert_eq!(st.checks_index(), idx, "passing moved the deadline");
        st.expire(t0 + Duration::from_secs(4));
        assert!(st.checks_index() > idx);
        let passing: Value =
            serde_json::from_slice(&st.health_service_json("photo", true, None).unwrap()).unwrap();
        assert_eq!(passing.as_array().unwrap().len(), 0);
        let any: Value =
            serde_json::from_slice(&st.health_state_json("critical").unwrap()).unwrap();
        assert_eq!(any[0]["Output"], "TTL expired");
        assert_eq!(st.agent_check_pass("nope", "", t0).unwrap_err().status, 404);
        st.agent_deregister("photo-1").unwrap();
        assert!(!st.catalog_services(None).contains_key("photo"));
        assert_eq!(st.agent_deregister("photo-1").unwrap_err().status, 404);
    }
}

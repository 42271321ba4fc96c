//! From resolved settings ([`crate::config::resolve::Resolved`]) to running parts: the
//! registry client, the embedded demo spine when it is the registry, the io configuration
//! and an empty model; then the io tasks. `main` uses it at start, the app when the
//! operator switches context (a fresh client, io tasks and model; the old ones are dropped).

use std::sync::Arc;

use crate::config::consul::ConsulSettings;
use crate::config::resolve::{Resolved, check_context_files};
use crate::config::{RegistryChoice, file::ConfigFile, resolve};
use crate::demo::{DemoConfig, DemoSpine};
use crate::io::{self, IoConfig, IoHandle, Wake};
use crate::model::types::RegistryKind;
use crate::model::{Model, RegistryInfo};
use crate::registry::consul::ConsulClient;
use crate::registry::consul::kv::ConsulKvClient;
use crate::registry::etcd::EtcdClient;
use crate::registry::etcd::settings::resolve_credentials;

/// The registry client for the chosen registry.
#[derive(Debug)]
pub enum RegistryClient {
    /// Consul's catalog (also the demo spine's registry).
    Consul(ConsulClient),
    /// Consul in KV mode.
    ConsulKv(ConsulKvClient),
    /// etcd v3.
    Etcd(EtcdClient),
}

/// Everything to start the io tasks with.
pub struct Launch {
    /// The registry client.
    pub client: RegistryClient,
    /// The demo spine, when it is the registry (already started).
    pub demo: Option<DemoSpine>,
    /// Intervals, read-only, metrics source.
    pub config: IoConfig,
    /// An empty model for this registry (context name included).
    pub model: Model,
}

/// How to ask for an etcd password when no file or variable has it.
pub type PromptFn = Box<dyn FnOnce(&str) -> std::io::Result<String> + Send>;

/// What the app needs to switch context while running: the flags and config file of the
/// start; the environment is read again at the switch. A switch is resolved exactly as
/// `--context NAME` with the same other flags would be.
#[derive(Clone)]
pub struct Switcher {
    /// The command line of the start (its `context` is replaced at a switch).
    pub flags: resolve::Flags,
    /// The config file read at start.
    pub file: ConfigFile,
}

impl Switcher {
    /// Resolves `name` (its files are read by [`Launch::prepare`]).
    pub fn resolve(&self, name: &str) -> Result<Resolved, String> {
        let mut flags = self.flags.clone();
        flags.context = Some(name.to_owned());
        resolve::resolve(&flags, &|k| std::env::var(k).ok(), Some(&self.file))
    }
}

impl Launch {
    /// Builds the client (reading the token, TLS and password files now, so an unusable
    /// one is a clear error here), starts the demo spine if it is the registry, and makes
    /// the model. `prompt`: ask for an etcd password on a terminal, if any.
    pub async fn prepare(
        resolved: &Resolved,
        known_contexts: Vec<String>,
        prompt: Option<PromptFn>,
    ) -> Result<Self, String> {
        check_context_files(resolved)?;
        let read_only = resolved.read_only.value;
        let mut config = IoConfig {
            read_only,
            prometheus: resolved.metrics.value.prometheus().cloned(),
            audit_log: audit_log_path(),
            max_scrapes_per_sec: scrape_budget(std::env::var(SCRAPE_BUDGET_VAR).ok().as_deref())?,
            ..IoConfig::default()
        };
        let (client, demo, info) = match &resolved.registry.value {
            RegistryChoice::Etcd(endpoints) => {
                let mut settings = resolved.etcd_settings(endpoints.clone());
                let user = resolved.etcd_user.as_ref().map(|u| u.value.expose());
                let can_prompt = prompt.is_some();
                settings.credentials =
                    resolve_credentials(user, &resolved.password_sources(can_prompt), |q| {
                        match prompt {
                            Some(p) => p(q),
                            None => Err(std::io::Error::other("no terminal")),
                        }
                    })?;
                let client = EtcdClient::new(&settings).map_err(|e| format!("etcd: {e}"))?;
                let info = RegistryInfo {
                    kind: RegistryKind::Etcd,
                    address: endpoints.join(","),
                    datacenter: None,
                    writable: !read_only,
                };
                (RegistryClient::Etcd(client), None, info)
            }
            RegistryChoice::Demo => {
                let demo = DemoSpine::start(DemoConfig::default())
                    .await
                    .map_err(|e| format!("starting the embedded demo spine: {e}"))?;
                let address = demo.registry_url();
                let mut settings = ConsulSettings::new(&address);
                settings.datacenter = resolved.datacenter.as_ref().map(|d| d.value.clone());
                let client = ConsulClient::from_settings(&settings)
                    .map_err(|e| format!("registry settings: {e}"))?;
                let info = RegistryInfo {
                    kind: RegistryKind::Demo,
                    address,
                    datacenter: settings.datacenter.clone(),
                    writable: !read_only,
                };
                (RegistryClient::Consul(client), Some(demo), info)
            }
            RegistryChoice::Consul(address) | RegistryChoice::ConsulKv(address) => {
                let kv_mode = matches!(resolved.registry.value, RegistryChoice::ConsulKv(_));
                let datacenter = resolved.datacenter.as_ref().map(|d| d.value.as_str());
                let settings =
                    ConsulSettings::load(address, kv_mode, datacenter, &resolved.consul_env())?;
                let client = ConsulClient::from_settings(&settings)
                    .map_err(|e| format!("registry settings: {e}"))?;
                let info = RegistryInfo {
                    kind: RegistryKind::Consul,
                    address: address.clone(),
                    datacenter: settings.datacenter.clone(),
                    writable: !read_only,
                };
                let client = if kv_mode {
                    RegistryClient::ConsulKv(ConsulKvClient::new(client))
                } else {
                    RegistryClient::Consul(client)
                };
                (client, None, info)
            }
        };
        config.registry_label = match resolved.context_name() {
            Some(ctx) => format!("{} {} (context {ctx})", info.kind.as_str(), info.address),
            None => format!("{} {}", info.kind.as_str(), info.address),
        };
        let mut model = Model::new(info, config.registry_interval, config.scrape_interval);
        if let Some(p) = &config.prometheus {
            model = model.with_prometheus(p);
        }
        let model = model.with_context(resolved.context_name(), known_contexts);
        Ok(Self {
            client,
            demo,
            config,
            model,
        })
    }

    /// Starts the io tasks on the current tokio runtime; returns the model, the handle and
    /// the demo spine (to shut down when done).
    #[must_use]
    pub fn spawn(self, wake: &Wake) -> (Model, IoHandle, Option<DemoSpine>) {
        let demo = self.demo.clone();
        let io = match self.client {
            RegistryClient::Consul(c) => io::spawn(c, self.demo, &self.config, wake),
            RegistryClient::ConsulKv(c) => io::spawn(c, self.demo, &self.config, wake),
            RegistryClient::Etcd(c) => io::spawn(c, self.demo, &self.config, wake),
        };
        (self.model, io, demo)
    }
}

/// Where weight changes are audited: `SPINE_DASH_AUDIT_LOG` (a file path; empty = no
/// file), else `audit.jsonl` in the platform data directory.
fn audit_log_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("SPINE_DASH_AUDIT_LOG") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p.into()),
        None => io::audit::AuditLog::default_path(),
    }
}

/// Environment variable with the sidecar scrape budget (scrapes per second, over all
/// sidecars; see the README's "Scraping many sidecars").
pub const SCRAPE_BUDGET_VAR: &str = "SPINE_DASH_SCRAPES_PER_SEC";

/// The scrape budget from [`SCRAPE_BUDGET_VAR`]'s value (absent or empty: the default).
pub fn scrape_budget(value: Option<&str>) -> Result<f64, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(io::DEFAULT_SCRAPES_PER_SEC),
        Some(v) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 1.0 => Ok(n),
            _ => Err(format!(
                "{SCRAPE_BUDGET_VAR}: scrapes per second must be a number of at least 1, not {v:?}"
            )),
        },
    }
}

/// A wake callback that does nothing (headless use).
#[must_use]
pub fn no_wake() -> Wake {
    Arc::new(|| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_budget_comes_from_its_variable() {
        assert_eq!(scrape_budget(None), Ok(io::DEFAULT_SCRAPES_PER_SEC));
        assert_eq!(scrape_budget(Some(" ")), Ok(io::DEFAULT_SCRAPES_PER_SEC));
        assert_eq!(scrape_budget(Some("2000")), Ok(2000.0));
        assert!(scrape_budget(Some("0")).is_err());
        assert!(
            scrape_budget(Some("lots"))
                .unwrap_err()
                .contains(SCRAPE_BUDGET_VAR)
        );
    }
}

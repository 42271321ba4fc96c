//! The embedded demo spine: a registry speaking the Consul HTTP API subset, real HTTP
//! services, an Envoy-like sidecar per instance, health checks, traffic and faults, all on
//! 127.0.0.1. A simulator for learning, demos and tests — never a production registry.

// Placeholder until the demo spine lands (same API).
use crate::io::DemoInstanceState;

/// Errors of the demo spine.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Unknown instance id.
    #[error("unknown instance {0}")]
    UnknownInstance(String),
}

/// Handle on the running demo spine.
#[derive(Clone, Debug)]
pub struct DemoSpine;

impl DemoSpine {
    /// Instances and whether they run.
    #[must_use]
    pub fn instances(&self) -> Vec<DemoInstanceState> {
        Vec::new()
    }
    /// Stops an instance.
    pub async fn stop_instance(&self, id: &str) -> Result<(), DemoError> {
        Err(DemoError::UnknownInstance(id.into()))
    }
    /// Starts an instance.
    pub async fn start_instance(&self, id: &str) -> Result<(), DemoError> {
        Err(DemoError::UnknownInstance(id.into()))
    }
}

/// Demo settings (placeholder).
#[derive(Debug, Clone, Default)]
pub struct DemoConfig;

impl DemoSpine {
    /// Starts the spine (placeholder).
    pub async fn start(_cfg: DemoConfig) -> Result<Self, DemoError> {
        Err(DemoError::UnknownInstance("placeholder".into()))
    }
    /// Registry URL (placeholder).
    #[must_use]
    pub fn registry_url(&self) -> String {
        String::new()
    }
    /// Stops everything (placeholder).
    pub fn shutdown(&self) {}
}

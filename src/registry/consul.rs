//! Consul HTTP API client: catalog, health, service-resolver / service-splitter config
//! entries, and CAS writes of the splitter with the entry's `ModifyIndex`.

use super::{Registry, RegistryError, WriteOutcome};
use crate::model::types::{Instance, RegistrySnapshot, Split, SplitConfig};

/// A Consul agent reached over HTTP(S).
#[derive(Debug, Clone)]
pub struct ConsulClient {
    base_url: String,
    http: reqwest::Client,
}

impl ConsulClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8500`).
    pub fn new(base_url: &str) -> Result<Self, RegistryError> {
        let _ = base_url;
        todo!("consul helper")
    }

    /// The base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

impl Registry for ConsulClient {
    async fn snapshot(&self) -> Result<RegistrySnapshot, RegistryError> {
        let _ = &self.http;
        todo!("consul helper")
    }

    async fn write_split(
        &self,
        _service: &str,
        _split: &Split,
        _expected_index: u64,
    ) -> Result<WriteOutcome, RegistryError> {
        todo!("consul helper")
    }
}

/// Parses `GET /v1/catalog/services`: names without `-sidecar-proxy` registrations, sorted.
pub fn parse_catalog_services(_body: &[u8]) -> Result<Vec<String>, RegistryError> {
    todo!("consul helper")
}

/// Parses `GET /v1/health/service/:name` into instances sorted by id.
pub fn parse_health_service(_body: &[u8]) -> Result<Vec<Instance>, RegistryError> {
    todo!("consul helper")
}

/// Parses a `service-resolver` entry into its sorted subset names.
pub fn parse_resolver_subsets(_body: &[u8]) -> Result<Vec<String>, RegistryError> {
    todo!("consul helper")
}

/// Parses a `service-splitter` entry (weights as floats → hundredths, `ModifyIndex`).
pub fn parse_splitter(_body: &[u8]) -> Result<SplitConfig, RegistryError> {
    todo!("consul helper")
}

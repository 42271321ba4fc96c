//! Registry clients (Consul today; etcd comes with the registries issue) and the pure
//! parse functions beside them. Every client reads a whole [`RegistrySnapshot`] and writes
//! splits with compare-and-set.

pub mod consul;

use crate::model::types::{RegistrySnapshot, Split};

/// Result of a compare-and-set split write that reached the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The registry took the write.
    Applied,
    /// Someone changed the entry since `expected_index`: nothing was written.
    Conflict,
}

/// What went wrong talking to a registry. Texts never contain tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS, TLS, timeout…
    #[error("{message} ({url})")]
    Transport {
        /// What failed.
        message: String,
        /// The URL (without secrets), last as the guide asks.
        url: String,
    },
    /// The registry answered with an error status; `body` is its text (Consul errors are text/plain).
    #[error("HTTP {status}: {body}{}", hint.as_deref().map(|h| format!(" — {h}")).unwrap_or_default())]
    Http {
        /// HTTP status code.
        status: u16,
        /// Response body, trimmed and truncated.
        body: String,
        /// A hint for the operator (e.g. which ACL permission is missing).
        hint: Option<String>,
    },
    /// The body could not be decoded.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// Refused locally before sending (e.g. weights not summing to 100).
    #[error("{0}")]
    Invalid(String),
}

/// Address and kind of the configured registry, for the header and `snapshot --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    /// Demo, Consul or etcd.
    pub kind: crate::model::types::RegistryKind,
    /// Base URL, e.g. `http://127.0.0.1:8500`.
    pub address: String,
}

/// Operations every registry backend offers to the io layer.
pub trait Registry: Send + Sync {
    /// Reads every service with instances, health, resolver subsets and split.
    fn snapshot(
        &self,
    ) -> impl std::future::Future<Output = Result<RegistrySnapshot, RegistryError>> + Send;

    /// Writes `split` for `service` if the stored entry still has `expected_index`
    /// (`0` = create only if absent).
    fn write_split(
        &self,
        service: &str,
        split: &Split,
        expected_index: u64,
    ) -> impl std::future::Future<Output = Result<WriteOutcome, RegistryError>> + Send;
}

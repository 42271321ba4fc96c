//! Literal Prometheus text-format parser folded into [`ClusterCounters`].

use super::SidecarScrape;

/// Why a stats body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A line is not valid text format.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses an Envoy `/stats/prometheus` body.
pub fn parse_envoy_stats(_text: &str) -> Result<SidecarScrape, StatsError> {
    todo!("metrics helper")
}

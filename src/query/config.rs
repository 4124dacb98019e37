//! `[query]`: the query API's section of the configuration, with its defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::{duration_str, http_url, serialize_redacted_url};
use crate::config::{ConfigError, Source};

/// `[query]`: local query API and passthrough.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Where `GET /api/*` is forwarded.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub upstream_url: String,
    /// How long traces stay visible locally.
    #[serde(with = "duration_str")]
    pub retention: Duration,
    /// Most run JSON bytes the in-memory trace index keeps (oldest traces are evicted first).
    pub max_bytes: u64,
    /// Whether to keep the local trace index at all (off: no cost on ingest, and the
    /// `/v1/traces` endpoints answer 404).
    pub index: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            upstream_url: "https://api.getdynamiq.ai".into(),
            retention: Duration::from_secs(24 * 3600),
            max_bytes: 64 * 1024 * 1024,
            index: true,
        }
    }
}

impl QueryConfig {
    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        http_url(&self.upstream_url).map_err(|m| at.error("query.upstream_url", m))?;
        Ok(())
    }
}

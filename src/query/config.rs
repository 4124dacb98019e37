//! `[query]`: the query API's section of the configuration, with its defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::{duration_str, http_url, serialize_redacted_url};
use crate::config::{ConfigError, Source};
use crate::secret::KeySource;

/// `[query]`: local query API and passthrough.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// The Dynamiq API: `GET /api/<rest>` is forwarded to `<upstream_url>/<rest>` (the URL's own
    /// path, if any, kept as a prefix).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub upstream_url: String,
    /// File holding a separate token for the passthrough's calls (re-read when it changes).
    /// Empty: `DYNAMIQ_API_TOKEN`, else the sidecar's access key.
    pub api_token_file: String,
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
            api_token_file: String::new(),
            retention: Duration::from_secs(24 * 3600),
            max_bytes: 64 * 1024 * 1024,
            index: true,
        }
    }
}

impl std::fmt::Debug for QueryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::config::values::debug_serialized("QueryConfig", self, f)
    }
}

impl QueryConfig {
    /// Where the passthrough's own token comes from, if it has one (checked every
    /// `reload_interval`, as the access key is).
    pub fn api_token_source(&self, reload_interval: Duration) -> KeySource {
        KeySource {
            config_key: "query.api_token_file",
            file: self.api_token_file.clone(),
            reload_interval,
        }
    }

    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        http_url(&self.upstream_url).map_err(|m| at.error("query.upstream_url", m))?;
        Ok(())
    }
}

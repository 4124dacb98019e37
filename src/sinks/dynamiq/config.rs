//! `[upstream]` and `[forward]`: the Dynamiq sink's sections of the configuration, with their
//! defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::values::{duration_str, http_url, serialize_redacted_url};
use crate::config::{ConfigError, Source};
pub use crate::model::auth_mode::AuthMode;
use crate::secret::KeySource;

/// `[upstream]`: the Dynamiq collector.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of the collector; runs go to `{url}/v1/traces`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// File holding the project-scoped access key (re-read when it changes). Empty: use
    /// `DYNAMIQ_ACCESS_KEY`.
    pub access_key_file: String,
    /// `sidecar-key` (default) or `passthrough`.
    pub auth_mode: AuthMode,
    /// TCP + TLS connect timeout.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (a timeout is retried).
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// How often the key file is checked for changes.
    #[serde(with = "duration_str")]
    pub key_reload_interval: Duration,
    /// `none` (default) or `gzip`: how request bodies toward the collector are encoded.
    pub compression: Compression,
}

/// Encoding of request bodies toward the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Bodies go out as plain JSON (default).
    None,
    /// Bodies are gzip-compressed and sent with `Content-Encoding: gzip`.
    Gzip,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "https://collector.getdynamiq.ai".into(),
            access_key_file: String::new(),
            auth_mode: AuthMode::SidecarKey,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            key_reload_interval: Duration::from_secs(5),
            compression: Compression::None,
        }
    }
}

/// `[forward]`: batching, rate limits and retries toward the collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Most runs in one upstream request.
    pub max_runs: usize,
    /// Most body bytes in one upstream request.
    pub max_bytes: usize,
    /// Longest a non-full batch waits for more runs.
    #[serde(with = "duration_str")]
    pub max_delay: Duration,
    /// Upstream requests per second (0 = unlimited).
    pub requests_per_second: u32,
    /// Burst of requests above the rate.
    pub requests_burst: u32,
    /// Runs per second (0 = unlimited).
    pub runs_per_second: u32,
    /// Burst of runs above the rate (at least `max_runs`).
    pub runs_burst: u32,
    /// First retry delay (ceiling of the full-jitter draw).
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    /// Largest retry delay ceiling.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// Give up on a batch after this many retries and dead-letter it (0 = never give up).
    pub max_retries: u32,
    /// Delay between retries while the collector rejects the key (401/403).
    #[serde(with = "duration_str")]
    pub auth_hold_retry: Duration,
    /// How many delivered runs (their content fingerprints) are remembered so that an identical
    /// copy sent again is not forwarded again (0 = duplicate suppression off).
    pub dedup_entries: usize,
    /// Most bytes the dead-letter files add up to; the oldest files are removed first.
    pub dead_letter_max_bytes: u64,
    /// Passthrough mode: most run bytes of held client keys (401/403) kept in memory while
    /// other keys' runs are delivered; at the bound the forwarder stops reading until a held key
    /// is retried.
    pub auth_hold_max_bytes: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_runs: 500,
            max_bytes: 4 * 1024 * 1024,
            max_delay: Duration::from_millis(200),
            requests_per_second: 50,
            requests_burst: 10,
            runs_per_second: 5000,
            runs_burst: 5000,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_retries: 0,
            auth_hold_retry: Duration::from_secs(300),
            dedup_entries: 100_000,
            dead_letter_max_bytes: 256 * 1024 * 1024,
            auth_hold_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::config::values::debug_serialized("UpstreamConfig", self, f)
    }
}

impl UpstreamConfig {
    /// Where the access key comes from.
    pub fn key_source(&self) -> KeySource {
        KeySource {
            config_key: crate::secret::KEY_FILE_KEY,
            file: self.access_key_file.clone(),
            reload_interval: self.key_reload_interval,
        }
    }

    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        http_url(&self.url).map_err(|m| at.error("upstream.url", m))?;
        Ok(())
    }
}

impl ForwardConfig {
    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        if self.max_runs == 0 {
            return Err(at.error("forward.max_runs", "must be greater than 0"));
        }
        if self.max_bytes < 1024 {
            return Err(at.error("forward.max_bytes", "must be at least 1024"));
        }
        for (key, value) in [
            ("forward.dead_letter_max_bytes", self.dead_letter_max_bytes),
            ("forward.auth_hold_max_bytes", self.auth_hold_max_bytes),
        ] {
            if value < 1024 {
                return Err(at.error(key, "must be at least 1024"));
            }
        }
        if self.runs_per_second > 0 && (self.runs_burst as usize) < self.max_runs {
            return Err(at.error(
                "forward.runs_burst",
                format!("must be at least forward.max_runs ({})", self.max_runs),
            ));
        }
        if self.requests_per_second > 0 && self.requests_burst == 0 {
            return Err(at.error("forward.requests_burst", "must be greater than 0"));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(at.error(
                "forward.retry_max",
                "retry_initial must be > 0 and retry_max >= retry_initial",
            ));
        }
        Ok(())
    }
}

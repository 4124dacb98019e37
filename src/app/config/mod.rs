//! The application's configuration: every component's section, assembled into one [`Config`],
//! loaded from the TOML file and `DYNAMIQ_SIDECAR_<SECTION>_<KEY>` environment overrides (CLI
//! flags arrive as such overrides), and checked once: each section's own rules, then the rules
//! that span sections.
//!
//! Guarantees: a `Config` that leaves [`Config::load`] has been checked (addresses parse, sizes
//! are positive, enumerations are known, cross-section rules hold), so no stage re-validates.
//! Every error names the key and its file line or variable (see [`crate::config`]).
//!
//! Secrets: the access key and the inbound token are never part of `Config` (only the paths of
//! their files), so its `Debug` and `check-config` output hold none; nor do OTLP header values,
//! and URLs are shown with their credentials as `***`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::buffer::config::BufferConfig;
use crate::config::values::duration_str;
use crate::config::{self, ConfigError, EnvOverrides, Source};
use crate::logging::LogConfig;
use crate::query::config::QueryConfig;
use crate::receivers::config::{INGEST_TOKEN_ENV, IngestConfig};
use crate::sinks::dynamiq::config::{AuthMode, ForwardConfig, UpstreamConfig};
use crate::sinks::otlp::config::{OtlpOutputConfig, apply_otel_env};

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "DYNAMIQ_SIDECAR_";
/// Environment variable naming the config file (not a key override).
pub const CONFIG_ENV: &str = "DYNAMIQ_SIDECAR_CONFIG";

/// The whole configuration, validated.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and request limits.
    pub ingest: IngestConfig,
    /// The Dynamiq collector and the key used toward it.
    pub upstream: UpstreamConfig,
    /// The disk buffer.
    pub buffer: BufferConfig,
    /// Batching, rate limits and retries toward the collector.
    pub forward: ForwardConfig,
    /// Query API and passthrough.
    pub query: QueryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Additional outputs (OTLP fan-out).
    #[serde(skip_serializing_if = "OutputsConfig::is_empty")]
    pub outputs: OutputsConfig,
}

/// `[outputs]`: optional outputs besides the Dynamiq collector.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// `[outputs.otlp]`: every run is also exported as an OTLP span. Absent = no OTLP output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpOutputConfig>,
}

impl OutputsConfig {
    /// True when no output is configured.
    pub fn is_empty(&self) -> bool {
        self.otlp.is_none()
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM waits for the buffer to drain upstream before exiting (rest stays on disk).
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Loads `path` (or the built-in defaults when `None`), applies environment overrides from
    /// `env` (normally `std::env::vars()`), and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                origin: Some(p.display().to_string()),
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            })?,
            None => String::new(),
        };
        Self::from_toml_str(&text, path, env)
    }

    /// Parses TOML text (with `file` used only for messages), applies `env`, validates.
    pub fn from_toml_str(
        text: &str,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let overrides = EnvOverrides {
            prefix: ENV_PREFIX,
            except: &[INGEST_TOKEN_ENV, CONFIG_ENV],
        };
        let (mut config, mut env_keys): (Config, _) = config::parse(text, file, &env, &overrides)?;
        if let Some(otlp) = config.outputs.otlp.as_mut() {
            env_keys.extend(apply_otel_env(otlp, &env)?);
        }
        let token_in_env = env.iter().any(|(k, _)| k == INGEST_TOKEN_ENV);
        config.validate(&Source::new(file, text, env_keys), token_in_env)?;
        Ok(config)
    }

    /// Each section's checks, then the rules that span sections.
    fn validate(&self, at: &Source<'_>, token_in_env: bool) -> Result<(), ConfigError> {
        if let Some(otlp) = &self.outputs.otlp {
            otlp.validate(at)?;
        }
        self.ingest.validate(at)?;
        self.upstream.validate(at)?;
        self.query.validate(at)?;
        self.buffer.validate(at)?;
        self.forward.validate(at)?;
        self.log.validate(at)?;
        if self.upstream.auth_mode == AuthMode::Passthrough
            && (!self.ingest.auth_token_file.is_empty() || token_in_env)
        {
            return Err(at.error(
                "upstream.auth_mode",
                "\"passthrough\" reads the project key from the client's Authorization header, which an inbound token would also need; use \"sidecar-key\" with an inbound token",
            ));
        }
        if self.ingest.is_exposed()
            && self.ingest.auth_token_file.is_empty()
            && !self.ingest.allow_unauthenticated
            && !token_in_env
        {
            return Err(at.error(
                "ingest.auth_token_file",
                format!(
                    "a listener is not on loopback, so an inbound token is required: set ingest.auth_token_file or {INGEST_TOKEN_ENV}, or set ingest.allow_unauthenticated = true"
                ),
            ));
        }
        Ok(())
    }

    /// True when any listener is reachable from outside the host.
    pub fn is_exposed(&self) -> bool {
        self.ingest.is_exposed()
    }

    /// The effective configuration as TOML, for `check-config`. Holds no secret: the key and the
    /// token are never part of `Config`, only the paths of their files.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;

//! The sidecar's own logs: the `[log]` section (filter and format) and the subscriber set up
//! from it. `RUST_LOG`, when set, wins over `log.level`.
//!
//! Guarantees: a `log.level` that is not a valid filter is a configuration error naming the
//! key, never a silent fallback; logs go to stderr, text or one JSON object per line.

use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::Targets;

use crate::config::{ConfigError, Source};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive (`info`, `dynamiq_sidecar=debug`, ...). `RUST_LOG` wins if set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    /// Checks the section (`at` locates the keys).
    pub fn validate(&self, at: &Source<'_>) -> Result<(), ConfigError> {
        if parse_log_filter(&self.level).is_none() {
            return Err(at.error("log.level", format!("not a valid filter: {:?}", self.level)));
        }
        Ok(())
    }
}

/// Sets up logging per `[log]` (`RUST_LOG` wins over `log.level`). Logs go to stderr.
/// Filters are `target=level` lists (`info`, `dynamiq_sidecar=debug,warn`), read by
/// `tracing_subscriber`'s `Targets` (no regex engine in the binary).
pub fn init(config: &LogConfig) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| parse_log_filter(&v));
    let filter = from_env
        .or_else(|| parse_log_filter(&config.level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let result = match config.format {
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
        LogFormat::Text => registry
            .with(layer.with_ansi(false).with_filter(filter))
            .try_init(),
    };
    if result.is_err() {
        eprintln!("logging was already initialised");
    }
}

/// A log filter (`info`, `dynamiq_sidecar=debug,warn`, ...), `None` when it is not one.
pub fn parse_log_filter(text: &str) -> Option<Targets> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_log_filter;
    use tracing::Level;

    #[test]
    fn log_filters_are_level_and_target_lists() {
        let f = parse_log_filter("warn,dynamiq_sidecar=debug").unwrap();
        assert!(f.would_enable("dynamiq_sidecar::sinks::dynamiq", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        assert!(
            parse_log_filter(" info ")
                .unwrap()
                .would_enable("x", &Level::INFO)
        );
        assert!(parse_log_filter("dynamiq_sidecar=loud").is_none());
        assert!(parse_log_filter("info,=debug=x").is_none());
    }
}

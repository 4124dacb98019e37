//! Command line (clap): `run`, `check-config`, and the offline `buffer` tools.
//!
//! Flags for the common keys override the environment, which overrides the file. Every
//! command that loads a config reports errors the same way (`file:line: key: problem`) and
//! exits with status 2; runtime failures exit with 1.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::Targets;

use crate::config::{Config, ConfigError, LogFormat};

/// Local agent that buffers Dynamiq traces to disk and forwards them reliably to the collector.
#[derive(Debug, Parser)]
#[command(name = "dynamiq-sidecar", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar (listeners, buffer, forwarder) until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Validate the configuration and print the effective values (secrets are never printed).
    CheckConfig(ConfigArgs),
    /// Offline tools for the disk buffer (run them while the sidecar is stopped).
    Buffer {
        /// Which tool.
        #[command(subcommand)]
        command: BufferCommand,
    },
    /// Convert a file between Dynamiq runs and OTLP (JSON or protobuf), as the sidecar would.
    Convert(ConvertArgs),
}

/// `convert`: formats and files.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Format of IN.
    #[arg(long, value_enum)]
    pub from: crate::convert::files::FileFormat,
    /// Format of OUT.
    #[arg(long, value_enum)]
    pub to: crate::convert::files::FileFormat,
    /// Input file (`-` for standard input).
    pub input: std::path::PathBuf,
    /// Output file (`-` for standard output).
    pub output: std::path::PathBuf,
}

/// Buffer tools.
#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Show segments, records, cursors, pending runs, corrupt records and dead letters.
    Inspect {
        /// Config file (for `buffer.path`).
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move every dead-lettered run back into the buffer so it is forwarded again.
    ReplayDeadLetters {
        /// Config file (for `buffer.path`).
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the runs not yet delivered as one `{"runs": [...]}` JSON document.
    Export {
        /// Config file (for `buffer.path`).
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// TOML config file; without it the built-in defaults apply (the same values as
    /// config/dynamiq-sidecar.toml).
    #[arg(long, short = 'c', env = "DYNAMIQ_SIDECAR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `run` flags: the config plus overrides for the common keys.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Overrides `ingest.http_addr`.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Overrides `upstream.url`.
    #[arg(long, value_name = "URL")]
    pub upstream_url: Option<String>,
    /// Overrides `buffer.path`.
    #[arg(long, value_name = "DIR")]
    pub buffer_path: Option<String>,
    /// Overrides `log.level`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Overrides `log.format` (`text` or `json`).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl RunArgs {
    /// The flags as `DYNAMIQ_SIDECAR_*` overrides, applied after the real environment.
    fn overrides(&self) -> Vec<(String, String)> {
        [
            ("DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR", &self.http_addr),
            ("DYNAMIQ_SIDECAR_UPSTREAM_URL", &self.upstream_url),
            ("DYNAMIQ_SIDECAR_BUFFER_PATH", &self.buffer_path),
            ("DYNAMIQ_SIDECAR_LOG_LEVEL", &self.log_level),
            ("DYNAMIQ_SIDECAR_LOG_FORMAT", &self.log_format),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect()
    }
}

/// Loads the config from the file named by `args`, the process environment and `overrides`.
pub fn load_config(
    args: &ConfigArgs,
    overrides: Vec<(String, String)>,
) -> Result<Config, ConfigError> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.retain(|(k, _)| !overrides.iter().any(|(o, _)| o == k));
    env.extend(overrides);
    Config::load(args.config.as_deref(), env)
}

/// Loads the config for `run`.
pub fn load_run_config(args: &RunArgs) -> Result<Config, ConfigError> {
    load_config(&args.config, args.overrides())
}

/// Sets up logging per `[log]` (`RUST_LOG` wins over `log.level`). Logs go to stderr.
/// Filters are `target=level` lists (`info`, `dynamiq_sidecar=debug,warn`), read by
/// `tracing_subscriber`'s `Targets` (no regex engine in the binary).
pub fn init_logging(config: &Config) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| parse_log_filter(&v));
    let filter = from_env
        .or_else(|| parse_log_filter(&config.log.level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let result = match config.log.format {
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

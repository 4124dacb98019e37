//! Command line (clap): `run`, `check-config`, and the offline `buffer` tools. With no
//! subcommand the binary runs (as `run` with no flags: built-in defaults, or the file named by
//! `DYNAMIQ_SIDECAR_CONFIG`), so an installed `dynamiq-sidecar` starts as it is.
//!
//! Flags for the common keys override the environment, which overrides the file. Every
//! command that loads a config reports errors the same way (`file:line: key: problem`) and
//! exits with status 2; runtime failures exit with 1.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::config::Config;

use crate::config::ConfigError;

/// Local agent that buffers Dynamiq traces to disk and forwards them reliably to the collector.
#[derive(Debug, Parser)]
#[command(name = "dynamiq-sidecar", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do (none: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The subcommand to carry out: the one given, else `run` with no flags.
    pub fn command(self) -> Command {
        self.command.unwrap_or_else(|| {
            Command::Run(RunArgs {
                config: ConfigArgs {
                    config: std::env::var_os(crate::app::config::CONFIG_ENV)
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from),
                },
                http_addr: None,
                upstream_url: None,
                buffer_path: None,
                log_level: None,
                log_format: None,
            })
        })
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar (listeners, buffer, forwarder) until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Validate the configuration and print the effective values (secrets are never printed).
    CheckConfig(ConfigArgs),
    /// Tools for the disk buffer (`inspect` and `export` only read and are safe beside a running
    /// sidecar; `replay-dead-letters` needs it stopped).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_run_with_no_flags() {
        let cli = Cli::try_parse_from(["dynamiq-sidecar"]).unwrap();
        match cli.command() {
            Command::Run(args) => {
                assert!(args.http_addr.is_none() && args.upstream_url.is_none());
                assert!(args.overrides().is_empty());
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dynamiq-sidecar", "check-config"]).unwrap();
        assert!(matches!(cli.command(), Command::CheckConfig(_)));
    }
}

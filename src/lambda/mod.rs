//! AWS Lambda: the binary as an external extension. Lambda runs every executable in
//! `/opt/extensions/`; started with no arguments and `AWS_LAMBDA_RUNTIME_API` set, the sidecar
//! registers for `INVOKE` and `SHUTDOWN`, subscribes its own listener to the Telemetry API's
//! platform events, and runs the whole pipeline (listeners, buffer, forwarder) beside the
//! function.
//!
//! Per invocation: the function's SDK posts its runs to the sidecar and gets the local
//! acknowledgement; when Lambda reports `platform.runtimeDone` for the invocation, the extension
//! waits until the collector has every run acknowledged so far, bounded by the invocation's
//! deadline (less [`INVOKE_MARGIN`]), and only then asks for the next event (after which Lambda may
//! freeze the environment). Runs the collector did not take in time stay buffered and go out
//! during a later invocation. On `SHUTDOWN` it delivers what is left until the shutdown deadline
//! (less [`SHUTDOWN_MARGIN`]), then stops. `/tmp`, where the buffer lives by default here, does
//! not outlive the execution environment: what is still undelivered at shutdown is lost, logged
//! once with its count.
//!
//! Fails: a registration that fails ends the process (Lambda reports the extension as failed);
//! a configuration error, a telemetry listener or subscription that fails, or a listener that
//! cannot bind is reported with `init/error` and a clear reason; an `event/next` that fails with
//! `exit/error`.

pub mod api;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::config::Config;
use crate::app::{self, DYNAMIQ_CONSUMER, EnvSecrets};
use crate::buffer::Buffer;
use crate::config::ConfigError;
use api::{Event, Extension};
use telemetry::RuntimeDone;

/// Set by Lambda in every process of the execution environment.
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";
/// Where the telemetry listener listens (`host:port`; default `sandbox.localdomain:0`).
pub const TELEMETRY_ADDR_ENV: &str = "DYNAMIQ_LAMBDA_TELEMETRY_ADDR";
/// The config file the layer ships (used when `DYNAMIQ_SIDECAR_CONFIG` is unset and it exists).
pub const LAYER_CONFIG: &str = "/opt/dynamiq-sidecar/dynamiq-sidecar.toml";
/// Asked for the next event this long before an invocation's deadline at the latest.
pub const INVOKE_MARGIN: Duration = Duration::from_millis(200);
/// Stopped this long before the shutdown deadline at the latest.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_millis(100);
/// The pipeline's own drain after `SHUTDOWN` (delivery was already waited for).
const FINAL_DRAIN: Duration = Duration::from_millis(100);
/// How often delivery progress is looked at while waiting.
const POLL: Duration = Duration::from_millis(2);

/// Why the extension stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The configuration is invalid (exit status 2).
    #[error("configuration error: {0}")]
    Config(ConfigError),
    /// Anything else (exit status 1).
    #[error("{0}")]
    Failed(String),
}

/// The Lambda defaults of the keys left at their built-in default: the buffer under `/tmp`
/// (the only writable place), a short batch delay (a batch should not wait while the
/// invocation's deadline runs), and a short final drain.
pub fn apply_lambda_defaults(config: &mut Config) {
    let defaults = Config::default();
    if config.buffer.path == defaults.buffer.path {
        config.buffer.path = "/tmp/dynamiq-sidecar/buffer".into();
    }
    if config.forward.max_delay == defaults.forward.max_delay {
        config.forward.max_delay = Duration::from_millis(5);
    }
    config.shutdown.drain_timeout = config.shutdown.drain_timeout.min(FINAL_DRAIN);
}

/// The instant of a deadline in ms since the epoch, less `margin`.
fn deadline(deadline_ms: u64, margin: Duration) -> tokio::time::Instant {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(margin);
    tokio::time::Instant::now() + left
}

/// Waits until the collector took every record through `target` or `until` passes; whether it
/// did.
async fn delivered(buffer: &Buffer, target: u64, until: tokio::time::Instant) -> bool {
    loop {
        if buffer.acked(DYNAMIQ_CONSUMER).unwrap_or(0) >= target {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs as a Lambda extension until `SHUTDOWN`. `load` reads the configuration (after the
/// registration, so that its errors reach `init/error`).
pub async fn run(
    runtime_api: &str,
    load: impl FnOnce() -> Result<Config, ConfigError>,
    secrets: EnvSecrets,
) -> Result<(), LambdaError> {
    crate::sinks::common::http::install_crypto_provider();
    let extension = Extension::register(runtime_api)
        .await
        .map_err(|e| LambdaError::Failed(e.to_string()))?;
    let init_error = |kind: &'static str, message: String| {
        let extension = extension.clone();
        async move {
            tracing::error!(kind, %message, "the Lambda extension cannot start");
            extension.report_error(true, kind, &message).await;
            LambdaError::Failed(message)
        }
    };
    let mut config = match load() {
        Ok(c) => c,
        Err(e) => {
            extension.report_error(true, "Config", &e.to_string()).await;
            return Err(LambdaError::Config(e));
        }
    };
    apply_lambda_defaults(&mut config);

    let stop = CancellationToken::new();
    let telemetry_addr =
        std::env::var(TELEMETRY_ADDR_ENV).unwrap_or_else(|_| "sandbox.localdomain:0".to_string());
    let (telemetry_listener, destination) = match telemetry::bind(&telemetry_addr).await {
        Ok(bound) => bound,
        Err(e) => {
            return Err(init_error(
                "TelemetryListener",
                format!("cannot listen for telemetry on {telemetry_addr}: {e}"),
            )
            .await);
        }
    };
    let done = Arc::new(RuntimeDone::default());
    telemetry::serve(telemetry_listener, done.clone(), stop.clone());
    if let Err(e) = extension.subscribe_telemetry(&destination).await {
        return Err(init_error("TelemetrySubscribe", e.to_string()).await);
    }

    let listener = match TcpListener::bind(config.ingest.http_addr).await {
        Ok(l) => l,
        Err(e) => {
            let addr = config.ingest.http_addr;
            return Err(init_error("Listen", format!("ingest.http_addr {addr}: {e}")).await);
        }
    };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    let mut app_task = tokio::spawn(app::run_reporting(
        config,
        secrets,
        listener,
        shutdown.clone(),
        Some(started_tx),
    ));
    let buffer = match started_rx.await {
        Ok(buffer) => buffer,
        Err(_) => {
            let why = match (&mut app_task).await {
                Ok(Err(e)) => e.to_string(),
                _ => "the pipeline stopped at start".to_string(),
            };
            return Err(init_error("Start", why).await);
        }
    };
    tracing::info!(telemetry = %destination, "registered as a Lambda extension");

    loop {
        let event = match extension.next_event().await {
            Ok(event) => event,
            Err(e) => {
                extension
                    .report_error(false, "NextEvent", &e.to_string())
                    .await;
                shutdown.cancel();
                stop.cancel();
                let _ = app_task.await;
                return Err(LambdaError::Failed(e.to_string()));
            }
        };
        match event {
            Event::Invoke {
                request_id,
                deadline_ms,
            } => {
                let until = deadline(deadline_ms, INVOKE_MARGIN);
                let _ = tokio::time::timeout_at(until, done.wait(&request_id)).await;
                let target = buffer.last_seq();
                if !delivered(&buffer, target, until).await {
                    tracing::warn!(
                        request_id = %request_id,
                        "the collector did not take every run before the invocation's deadline; they stay buffered and go out during a later invocation"
                    );
                }
            }
            Event::Shutdown {
                reason,
                deadline_ms,
            } => {
                let until = deadline(deadline_ms, SHUTDOWN_MARGIN);
                let target = buffer.last_seq();
                if !delivered(&buffer, target, until).await {
                    let acked = buffer.acked(DYNAMIQ_CONSUMER).unwrap_or(0);
                    tracing::error!(
                        undelivered_runs = target.saturating_sub(acked),
                        reason = %reason,
                        "Lambda is shutting down before the collector took these runs; /tmp does not outlive the execution environment, so they are lost"
                    );
                }
                shutdown.cancel();
                let _ =
                    tokio::time::timeout_at(deadline(deadline_ms, Duration::ZERO), app_task).await;
                stop.cancel();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_defaults_change_only_the_keys_left_at_their_defaults() {
        let mut config = Config::default();
        apply_lambda_defaults(&mut config);
        assert_eq!(
            config.buffer.path,
            std::path::PathBuf::from("/tmp/dynamiq-sidecar/buffer")
        );
        assert_eq!(config.forward.max_delay, Duration::from_millis(5));
        assert_eq!(config.shutdown.drain_timeout, FINAL_DRAIN);
        let mut chosen = Config::default();
        chosen.buffer.path = "/mnt/efs/buffer".into();
        chosen.forward.max_delay = Duration::from_millis(50);
        apply_lambda_defaults(&mut chosen);
        assert_eq!(
            chosen.buffer.path,
            std::path::PathBuf::from("/mnt/efs/buffer")
        );
        assert_eq!(chosen.forward.max_delay, Duration::from_millis(50));
    }

    #[test]
    fn a_deadline_in_the_past_is_now() {
        let before = tokio::time::Instant::now();
        let at = deadline(1, INVOKE_MARGIN);
        assert!(at >= before && at <= tokio::time::Instant::now());
    }
}

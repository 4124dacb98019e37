//! The OTLP output: every run in the disk buffer is also exported as an OTLP span to
//! `outputs.otlp.endpoint` (OTLP/HTTP protobuf or OTLP/gRPC), so Dynamiq traces show in
//! Jaeger, Tempo, Phoenix or any OTLP backend.
//!
//! Owns: the buffer consumer [`OTLP_CONSUMER`] and its delivery loop, the HTTP/gRPC client
//! toward the OTLP endpoint, the classification of its answers ([`classify_http`],
//! [`classify_grpc`]) and the `dynamiq_sidecar_otlp_output_*` metrics.
//!
//! # Why the requests are built here and not by `opentelemetry-otlp`
//! The SDK's span exporter takes `SpanData` (SDK spans it converts itself), not the
//! `ExportTraceServiceRequest` our run → span conversion produces, so using it would mean a
//! second, lossy conversion; and its export result does not let us keep a batch until the backend
//! accepted it while retrying forever with our backoff (its retry policy is internal, bounded, and
//! reports failures only after giving up). So the requests are written as protobuf bytes
//! straight from the runs ([`crate::convert::runs_to_request_bytes`], no `opentelemetry-proto`
//! structs) and sent with our own `reqwest` client (HTTP) or a `tonic` client with a codec that
//! sends those bytes as they are (gRPC), reusing the forwarder's full-jitter [`Backoff`] and
//! `Retry-After` parsing; a retry re-sends the same bytes.
//!
//! # Guarantees
//! - Own cursor: the output acknowledges only its own consumer, so the Dynamiq forwarder is never
//!   slowed by it; segments stay on disk until both consumers acknowledged them.
//! - At-least-once toward the backend: records are acknowledged only after the backend answered
//!   (2xx / gRPC OK), or after a permanent verdict that is counted (never silently).
//! - Outcomes: 2xx / OK ack (`partial_success.rejected_spans` counted in `spans_rejected_total`);
//!   HTTP 408/429/502/503/504, transport errors and timeouts, gRPC `UNAVAILABLE`,
//!   `DEADLINE_EXCEEDED`, `ABORTED`, `CANCELLED`, `OUT_OF_RANGE`, `DATA_LOSS`, and
//!   `RESOURCE_EXHAUSTED` carrying `RetryInfo` retry forever with exponential backoff and full
//!   jitter, `Retry-After` / `RetryInfo` being a floor; every other status (as the OTLP spec says)
//!   is permanent: the spans are counted in `dropped_total{reason="rejected"}` and acknowledged —
//!   the Dynamiq collector still gets the runs, so nothing is dead-lettered for OTLP. Runs that
//!   cannot be converted (or records that cannot be decoded) are counted and acknowledged too.
//! - Logs: one line per state change (outage entered with its reason, backend rejecting,
//!   recovered). Header values are never logged (they may carry API keys).
//! - Stop: returns promptly on `stop` (an in-flight request is abandoned and stays
//!   unacknowledged); after `drain`, it stops once nothing is pending.
//!
//! Fails: [`OtlpOutput::new`] fails only when the client cannot be built (bad endpoint).

use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Reader, Record};
use crate::convert::{RunConvertOptions, runs_to_request_bytes};
use crate::model::envelope;
use crate::sinks::common::consumer::{BatchSource, ReadLimits, Stopped, next_records, or_stop};
use crate::sinks::common::retry::Backoff;
use crate::sinks::otlp::config::OtlpOutputConfig;

/// Name of the OTLP output's consumer cursor in the buffer.
pub const OTLP_CONSUMER: &str = "otlp";
/// Path appended to an `http/protobuf` endpoint given without a path.
pub const TRACES_PATH: &str = "/v1/traces";
/// Most run bytes read for one request (backends commonly refuse gRPC messages above 4 MiB).
pub const MAX_REQUEST_RUN_BYTES: usize = 3 * 1024 * 1024;
/// First retry ceiling (doubles up to [`RETRY_MAX`]).
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Largest retry ceiling.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Connect timeout toward the OTLP endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed buffer read.
const LOCAL_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why the output could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpOutputError {
    /// The endpoint or a header cannot be used.
    #[error("outputs.otlp: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("outputs.otlp: cannot build the HTTP client: {0}")]
    Client(String),
}

mod classify;
mod client;
pub mod config;
mod grpc_codec;
mod metrics;
#[cfg(test)]
mod tests;

pub use classify::{Verdict, classify_grpc, classify_http};
use client::Client;
pub use client::http_traces_url;
pub use config::read_ca_file;
pub use grpc_codec::{EXPORT_PATH, PreEncoded};
pub use metrics::{DropReason, OtlpOutputMetrics, ReasonLabels};

/// State of the link, for one log line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Healthy,
    Retrying,
    Rejecting(String),
}

/// Exports buffered runs as OTLP spans. Build with [`OtlpOutput::new`], then
/// [`run`](Self::run).
pub struct OtlpOutput<S: BatchSource = Reader> {
    source: S,
    client: Client,
    config: OtlpOutputConfig,
    options: RunConvertOptions,
    metrics: OtlpOutputMetrics,
    backoff: Backoff,
    state: LinkState,
}

impl<S: BatchSource> OtlpOutput<S> {
    /// Builds the output on `source` (the buffer's [`OTLP_CONSUMER`] reader) and registers its
    /// metrics.
    pub fn new(
        config: &OtlpOutputConfig,
        source: S,
        registry: &mut Registry,
    ) -> Result<Self, OtlpOutputError> {
        Ok(Self {
            source,
            client: Client::new(config)?,
            config: config.clone(),
            options: RunConvertOptions {
                service_name: config.service_name.clone(),
                capture_message_content: config.capture_message_content,
            },
            metrics: OtlpOutputMetrics::register(registry),
            backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX),
            state: LinkState::Healthy,
        })
    }

    /// Exports until `stop` is cancelled (returns promptly; an in-flight request stays
    /// unacknowledged), or, once `drain` is cancelled, until nothing is pending.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken) {
        tracing::info!(
            endpoint = %crate::secret::redact_url(&self.client.endpoint()),
            protocol = ?self.config.protocol,
            headers = ?self.config.headers,
            "OTLP output started"
        );
        self.update_pending();
        match self.run_loop(&drain, &stop).await {
            Ok(()) => tracing::info!("OTLP output drained"),
            Err(Stopped) => tracing::info!(
                pending = self.source.pending_records(),
                "OTLP output stopped; unexported runs stay in the buffer"
            ),
        }
    }

    fn update_pending(&self) {
        self.metrics
            .pending_records
            .set(i64::try_from(self.source.pending_records()).unwrap_or(i64::MAX));
    }

    async fn run_loop(
        &mut self,
        drain: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let limits = ReadLimits {
            max_records: self.config.max_spans,
            max_bytes: MAX_REQUEST_RUN_BYTES,
            max_delay: self.config.max_delay,
            error_pause: LOCAL_ERROR_PAUSE,
        };
        loop {
            if stop.is_cancelled() {
                return Err(Stopped);
            }
            if drain.is_cancelled() && self.source.pending_records() == 0 {
                return Ok(());
            }
            if let Some(records) =
                next_records("otlp", &mut self.source, limits, drain, stop).await?
                && let Some(last) = records.last().map(|r| r.seq)
            {
                self.export(records, stop).await?;
                if let Err(e) = self.source.ack(last) {
                    tracing::warn!(through_seq = last, error = %e, "cannot acknowledge exported runs in the buffer");
                }
                self.update_pending();
            }
        }
    }

    /// Converts and exports one batch until the backend gave a final answer.
    async fn export(
        &mut self,
        records: Vec<Record>,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut runs = Vec::with_capacity(records.len());
        for record in &records {
            match envelope::decode(&record.payload) {
                Ok(env) => runs.push(env.run),
                Err(e) => {
                    self.metrics.drop_spans(DropReason::Undecodable, 1);
                    tracing::warn!(seq = record.seq, error = %e, "buffer record cannot be decoded; not exported over OTLP");
                }
            }
        }
        let converted = runs_to_request_bytes(runs.iter().map(|r| &r[..]), &self.options);
        if let Some((_, reason)) = converted.failed.first() {
            self.metrics
                .drop_spans(DropReason::ConversionFailed, converted.failed.len() as u64);
            tracing::warn!(
                runs = converted.failed.len(),
                first_reason = %reason,
                "runs cannot be converted to spans; not exported over OTLP"
            );
        }
        let spans = converted.spans;
        if spans == 0 {
            return Ok(());
        }
        let body = Bytes::from(converted.bytes);
        loop {
            let verdict = or_stop(stop, self.client.export(&body)).await?;
            tracing::debug!(spans, ?verdict, "OTLP export finished");
            match verdict {
                Verdict::Accepted { rejected_spans } => {
                    let rejected = rejected_spans.min(spans);
                    self.metrics.spans_exported.inc_by(spans - rejected);
                    self.metrics.spans_rejected.inc_by(rejected);
                    if rejected > 0 {
                        tracing::debug!(rejected, "the OTLP backend rejected some spans");
                    }
                    self.backoff.reset();
                    self.set_state(LinkState::Healthy, "");
                    return Ok(());
                }
                Verdict::Retry {
                    retry_after,
                    reason,
                } => {
                    self.metrics.retries.inc();
                    let sleep = self.backoff.next_sleep(retry_after);
                    self.set_state(
                        LinkState::Retrying,
                        &format!("{reason}; retrying in {sleep:?}"),
                    );
                    or_stop(stop, tokio::time::sleep(sleep)).await?;
                }
                Verdict::Drop { reason } => {
                    self.metrics.drop_spans(DropReason::Rejected, spans);
                    self.backoff.reset();
                    let status = reason.split(':').next().unwrap_or_default().to_string();
                    self.set_state(LinkState::Rejecting(status), &reason);
                    return Ok(());
                }
            }
        }
    }

    fn set_state(&mut self, next: LinkState, reason: &str) {
        if self.state == next {
            return;
        }
        match &next {
            LinkState::Healthy => {
                tracing::info!("OTLP output recovered: the backend accepts spans")
            }
            LinkState::Retrying => tracing::warn!(
                %reason,
                "OTLP backend unavailable; spans stay in the buffer and are retried with backoff (the Dynamiq collector is not affected)"
            ),
            LinkState::Rejecting(_) => tracing::warn!(
                %reason,
                "the OTLP backend rejects spans permanently; they are counted as dropped (the Dynamiq collector still receives the runs)"
            ),
        }
        self.state = next;
    }
}

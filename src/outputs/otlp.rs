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
//! reports failures only after giving up). So the requests are built from the
//! `opentelemetry-proto` types ([`crate::convert::runs_to_request`]) and sent with our own
//! `reqwest` client (HTTP) or the generated `tonic` `TraceServiceClient` (gRPC), reusing the
//! forwarder's full-jitter [`Backoff`] and `Retry-After` parsing.
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

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::buffer::{BufferError, Reader, Record};
use crate::config::{OtlpOutputConfig, OtlpProtocol};
use crate::convert::{RunConvertOptions, runs_to_request};
use crate::forward::BatchSource;
use crate::forward::client::{build_http_client, read_response, retry_after, transport};
use crate::forward::retry::{Backoff, MAX_RETRY_AFTER};
use crate::model::envelope;

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
/// Extra time granted to a lingering read when drain begins.
const DRAIN_READ_GRACE: Duration = Duration::from_millis(50);
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

// ---------------------------------------------------------------------------------------------
// Metrics

/// Why spans were dropped by the OTLP output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The backend answered with a permanent error.
    Rejected,
    /// The run could not be converted to a span.
    ConversionFailed,
    /// The buffer record could not be decoded.
    Undecodable,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            DropReason::Rejected => "rejected",
            DropReason::ConversionFailed => "conversion_failed",
            DropReason::Undecodable => "undecodable",
        })
    }
}

/// `{reason=...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: DropReason,
}

/// The `dynamiq_sidecar_otlp_output_*` metrics.
#[derive(Debug, Clone, Default)]
pub struct OtlpOutputMetrics {
    /// Spans the backend accepted.
    pub spans_exported: Counter,
    /// Spans the backend reported as rejected in a partial success.
    pub spans_rejected: Counter,
    /// Spans (runs) dropped, by reason.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Retries (retryable answers and transport errors).
    pub retries: Counter,
    /// Records not yet acknowledged by the OTLP output.
    pub pending_records: Gauge,
}

impl OtlpOutputMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("dynamiq_sidecar_otlp_output");
        r.register(
            "spans_exported",
            "Spans the OTLP backend accepted",
            m.spans_exported.clone(),
        );
        r.register(
            "spans_rejected",
            "Spans the OTLP backend reported as rejected (partial success)",
            m.spans_rejected.clone(),
        );
        r.register(
            "dropped",
            "Spans not exported, by reason (the Dynamiq collector still receives the runs)",
            m.dropped.clone(),
        );
        r.register(
            "retries",
            "Export attempts that failed and are retried",
            m.retries.clone(),
        );
        r.register(
            "pending_records",
            "Buffered records the OTLP output has not acknowledged yet",
            m.pending_records.clone(),
        );
        m
    }

    fn drop_spans(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classification

/// What the output does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted; `rejected_spans` of them were refused individually (partial success).
    Accepted {
        /// `partial_success.rejected_spans`.
        rejected_spans: u64,
    },
    /// Retry after a backoff of at least `retry_after`.
    Retry {
        /// `Retry-After` / `RetryInfo`, capped at [`MAX_RETRY_AFTER`].
        retry_after: Option<Duration>,
        /// For logs.
        reason: String,
    },
    /// Permanent: count the spans as dropped and acknowledge.
    Drop {
        /// For logs (status and the backend's message).
        reason: String,
    },
}

/// Maps an OTLP/HTTP answer to the next action (OTLP spec: 429, 502, 503, 504 are retryable; we
/// add 408; every other non-2xx is permanent).
pub fn classify_http(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Verdict {
    match status.as_u16() {
        200..=299 => {
            let rejected = ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
            Verdict::Accepted {
                rejected_spans: rejected,
            }
        }
        408 | 429 | 502 | 503 | 504 => Verdict::Retry {
            retry_after: retry_after(headers, now),
            reason: format!("HTTP {}", status.as_u16()),
        },
        code => Verdict::Drop {
            reason: format!("HTTP {code}{}", error_message(body)),
        },
    }
}

/// `: message` of a `google.rpc.Status` (or short text) error body, for logs.
fn error_message(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = match RpcStatus::decode(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let text: String = text.chars().filter(|c| !c.is_control()).take(256).collect();
    format!(": {text}")
}

/// Maps an OTLP/gRPC error status to the next action (OTLP spec's retryable codes;
/// `RESOURCE_EXHAUSTED` only when the server sent `RetryInfo`).
pub fn classify_grpc(status: &tonic::Status) -> Verdict {
    use tonic::Code;
    let info = retry_info(status.details());
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Ok => Verdict::Accepted { rejected_spans: 0 },
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss => Verdict::Retry {
            retry_after: info,
            reason,
        },
        Code::ResourceExhausted if info.is_some() => Verdict::Retry {
            retry_after: info,
            reason,
        },
        _ => Verdict::Drop { reason },
    }
}

/// `google.rpc.Status` with its details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `RetryInfo.retry_delay` in a gRPC status' details, capped; `None` if absent or negative.
fn retry_info(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some((Duration::from_secs(secs) + Duration::from_nanos(u64::from(nanos))).min(MAX_RETRY_AFTER))
}

// ---------------------------------------------------------------------------------------------
// Client

/// The full OTLP/HTTP URL: `endpoint` as is when it has a path, else `endpoint + /v1/traces`.
pub fn http_traces_url(endpoint: &str) -> Result<reqwest::Url, OtlpOutputError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| OtlpOutputError::Config(format!("endpoint {endpoint:?}: {e}")))?;
    if url.path().is_empty() || url.path() == "/" {
        let joined = format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'));
        return reqwest::Url::parse(&joined)
            .map_err(|e| OtlpOutputError::Config(format!("endpoint {endpoint:?}: {e}")));
    }
    Ok(url)
}

enum Client {
    Http {
        http: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
    },
    Grpc {
        client: TraceServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        endpoint: String,
    },
}

impl Client {
    fn new(config: &OtlpOutputConfig) -> Result<Self, OtlpOutputError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers.0 {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OtlpOutputError::Config(format!("header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                OtlpOutputError::Config(format!("the value of header {name:?} is not valid"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        match config.protocol {
            OtlpProtocol::HttpProtobuf => {
                let url = http_traces_url(&config.endpoint)?;
                let http = build_http_client(&url, CONNECT_TIMEOUT, config.timeout)
                    .map_err(|e| OtlpOutputError::Client(e.to_string()))?;
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                Ok(Client::Http { http, url, headers })
            }
            OtlpProtocol::Grpc => {
                let url = reqwest::Url::parse(&config.endpoint).map_err(|e| {
                    OtlpOutputError::Config(format!("endpoint {:?}: {e}", config.endpoint))
                })?;
                if url.scheme() == "https" {
                    return Err(OtlpOutputError::Config(
                        "gRPC over TLS (an https:// endpoint) is not available in this version; \
                         use protocol = \"http/protobuf\" for an https endpoint"
                            .into(),
                    ));
                }
                let origin = url.origin().ascii_serialization();
                let channel = tonic::transport::Endpoint::from_shared(origin.clone())
                    .map_err(|e| OtlpOutputError::Config(format!("endpoint {origin:?}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(config.timeout)
                    .tcp_keepalive(Some(Duration::from_secs(30)))
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &headers {
                    let key =
                        tonic::metadata::AsciiMetadataKey::from_bytes(name.as_str().as_bytes())
                            .map_err(|_| {
                                OtlpOutputError::Config(format!("metadata name {name:?}"))
                            })?;
                    let mut value = tonic::metadata::AsciiMetadataValue::try_from(value.as_bytes())
                        .map_err(|_| {
                            OtlpOutputError::Config(format!(
                                "the value of header {name:?} is not valid gRPC metadata"
                            ))
                        })?;
                    value.set_sensitive(true);
                    metadata.insert(key, value);
                }
                Ok(Client::Grpc {
                    client: TraceServiceClient::new(channel),
                    metadata,
                    endpoint: origin,
                })
            }
        }
    }

    fn endpoint(&self) -> String {
        match self {
            Client::Http { url, .. } => url.to_string(),
            Client::Grpc { endpoint, .. } => endpoint.clone(),
        }
    }

    /// One export attempt.
    async fn export(&mut self, request: &ExportTraceServiceRequest) -> Verdict {
        match self {
            Client::Http { http, url, headers } => {
                let body = Bytes::from(request.encode_to_vec());
                let sent = http
                    .post(url.clone())
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(resp) => {
                        let resp = read_response(resp).await;
                        classify_http(resp.status, &resp.headers, &resp.body, SystemTime::now())
                    }
                    Err(e) => Verdict::Retry {
                        retry_after: None,
                        reason: error_chain(&transport(e)),
                    },
                }
            }
            Client::Grpc {
                client, metadata, ..
            } => {
                let mut req = tonic::Request::new(request.clone());
                *req.metadata_mut() = metadata.clone();
                match client.export(req).await {
                    Ok(resp) => Verdict::Accepted {
                        rejected_spans: resp
                            .into_inner()
                            .partial_success
                            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0)),
                    },
                    Err(status) => classify_grpc(&status),
                }
            }
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The loop

/// `stop` was cancelled.
#[derive(Debug)]
struct Stopped;

async fn or_stop<F: Future>(stop: &CancellationToken, f: F) -> Result<F::Output, Stopped> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Err(Stopped),
        v = f => Ok(v),
    }
}

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
            endpoint = %self.client.endpoint(),
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
        loop {
            if stop.is_cancelled() {
                return Err(Stopped);
            }
            if drain.is_cancelled() && self.source.pending_records() == 0 {
                return Ok(());
            }
            if let Some(records) = self.read_batch(drain, stop).await?
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

    async fn read_batch(
        &mut self,
        drain: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, Stopped> {
        let draining = drain.is_cancelled();
        let max_delay = self.config.max_delay;
        let linger = if draining { Duration::ZERO } else { max_delay };
        let result = {
            let read = self
                .source
                .next_batch(self.config.max_spans, MAX_REQUEST_RUN_BYTES, linger);
            tokio::pin!(read);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(Stopped),
                r = &mut read => r,
                _ = drain.cancelled(), if !draining => {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Err(Stopped),
                        r = &mut read => r,
                        _ = tokio::time::sleep(max_delay + DRAIN_READ_GRACE) => return Ok(None),
                    }
                }
            }
        };
        match result {
            Ok(records) => Ok(Some(records)),
            Err(BufferError::Closed) => Err(Stopped),
            Err(e) => {
                tracing::warn!(error = %e, "OTLP output cannot read the buffer; retrying");
                or_stop(stop, tokio::time::sleep(LOCAL_ERROR_PAUSE)).await?;
                Ok(None)
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
        let converted = runs_to_request(runs.iter().map(|r| &r[..]), &self.options);
        if let Some((_, reason)) = converted.failed.first() {
            self.metrics
                .drop_spans(DropReason::ConversionFailed, converted.failed.len() as u64);
            tracing::warn!(
                runs = converted.failed.len(),
                first_reason = %reason,
                "runs cannot be converted to spans; not exported over OTLP"
            );
        }
        let spans = span_count(&converted.request);
        if spans == 0 {
            return Ok(());
        }
        loop {
            let verdict = or_stop(stop, self.client.export(&converted.request)).await?;
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

/// Spans in a request.
fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    fn http(code: u16, headers: &[(&str, &str)], body: &[u8]) -> Verdict {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        classify_http(
            StatusCode::from_u16(code).unwrap(),
            &map,
            body,
            SystemTime::now(),
        )
    }

    #[test]
    fn http_2xx_is_accepted_with_partial_success_counted() {
        assert_eq!(http(200, &[], b""), Verdict::Accepted { rejected_spans: 0 });
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "bad".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            http(200, &[], &body),
            Verdict::Accepted { rejected_spans: 3 }
        );
        // A JSON or garbage body on 2xx is still a success.
        assert_eq!(
            http(202, &[], b"{}"),
            Verdict::Accepted { rejected_spans: 0 }
        );
    }

    #[test]
    fn http_retryable_statuses_retry_with_retry_after() {
        for code in [408, 429, 502, 503, 504] {
            assert!(
                matches!(http(code, &[], b""), Verdict::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(
            http(429, &[("retry-after", "7")], b""),
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(7)),
                reason: "HTTP 429".into()
            }
        );
    }

    #[test]
    fn other_statuses_are_permanent() {
        for code in [400, 401, 403, 404, 413, 500, 501] {
            assert!(
                matches!(http(code, &[], b""), Verdict::Drop { .. }),
                "{code}"
            );
        }
        let body = RpcStatus {
            code: 3,
            message: "bad span".into(),
            details: vec![],
        }
        .encode_to_vec();
        assert_eq!(
            http(400, &[], &body),
            Verdict::Drop {
                reason: "HTTP 400: bad span".into()
            }
        );
    }

    fn status_with_retry_info(code: tonic::Code, secs: i64) -> tonic::Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: secs,
                nanos: 0,
            }),
        };
        let details = RpcStatus {
            code: code as i32,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        }
        .encode_to_vec();
        tonic::Status::with_details(code, "slow down", Bytes::from(details))
    }

    #[test]
    fn grpc_retryable_codes_retry() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Cancelled,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(
                matches!(
                    classify_grpc(&tonic::Status::new(code, "x")),
                    Verdict::Retry {
                        retry_after: None,
                        ..
                    }
                ),
                "{code:?}"
            );
        }
        assert!(matches!(
            classify_grpc(&status_with_retry_info(Code::Unavailable, 3)),
            Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn grpc_resource_exhausted_retries_only_with_retry_info() {
        use tonic::Code;
        assert!(matches!(
            classify_grpc(&tonic::Status::new(Code::ResourceExhausted, "full")),
            Verdict::Drop { .. }
        ));
        assert!(matches!(
            classify_grpc(&status_with_retry_info(Code::ResourceExhausted, 2)),
            Verdict::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        // A hostile delay is capped.
        assert!(matches!(
            classify_grpc(&status_with_retry_info(Code::ResourceExhausted, 10_000_000)),
            Verdict::Retry { retry_after: Some(d), .. } if d == MAX_RETRY_AFTER
        ));
    }

    #[test]
    fn grpc_other_codes_are_permanent() {
        use tonic::Code;
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unimplemented,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(
                matches!(
                    classify_grpc(&tonic::Status::new(code, "x")),
                    Verdict::Drop { .. }
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn http_url_appends_the_traces_path_only_without_a_path() {
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318").unwrap().as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://h:4318/").unwrap().as_str(),
            "http://h:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("https://h/otlp/v1/traces")
                .unwrap()
                .as_str(),
            "https://h/otlp/v1/traces"
        );
    }

    #[test]
    fn metrics_render_with_the_prefix() {
        let mut reg = Registry::default();
        let m = OtlpOutputMetrics::register(&mut reg);
        m.drop_spans(DropReason::Rejected, 2);
        m.spans_exported.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for name in [
            "dynamiq_sidecar_otlp_output_spans_exported_total 1",
            "dynamiq_sidecar_otlp_output_spans_rejected_total",
            "dynamiq_sidecar_otlp_output_dropped_total{reason=\"rejected\"} 2",
            "dynamiq_sidecar_otlp_output_retries_total",
            "dynamiq_sidecar_otlp_output_pending_records",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}

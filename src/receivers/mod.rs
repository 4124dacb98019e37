//! Receivers: the HTTP listener on `ingest.http_addr` and what it accepts.
//!
//! Owns: `POST /v1/traces` (Dynamiq runs and OTLP/HTTP), OTLP/gRPC `TraceService/Export` on
//! `ingest.grpc_addr`, inbound auth, body limits and decompression, and the accept loops with
//! connection limits, header timeouts and graceful shutdown. Guarantees: a client is told
//! "ok" only once its runs are durably buffered; bad input gets a JSON 4xx and affects nothing
//! else; the process never panics on input.

pub mod auth;
pub mod body;
pub mod budget;
pub mod config;
pub mod conn_io;
pub mod decoded_size;
pub mod error;
pub mod fd_limit;
pub mod grpc;
pub mod host_check;
pub mod http;
pub mod ingest;
pub mod linger;
pub mod metrics;
pub mod otlp;
pub mod otlp_metrics;
pub mod traces;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;

use crate::admin::readiness::Readiness;
use crate::buffer::Buffer;
use crate::convert::SpanConvertOptions;
use crate::model::auth_mode::AuthMode;
use auth::InboundAuth;
use ingest::AppendObserver;
use metrics::IngestMetrics;

/// What the ingest handlers share.
#[derive(Clone)]
pub struct IngestState {
    /// Where accepted runs go.
    pub buffer: Buffer,
    /// Inbound token check.
    pub auth: InboundAuth,
    /// Whether the client's key is stored with its runs.
    pub auth_mode: AuthMode,
    /// `ingest.max_body_bytes`.
    pub max_body_bytes: u64,
    /// Largest run the forwarder can send (`forward.max_bytes` less the request framing, see
    /// `sinks::dynamiq::batch::max_run_bytes`): a larger one is refused at ingest.
    pub max_run_bytes: usize,
    /// `ingest.request_timeout`: the whole request must arrive within it.
    pub request_timeout: Duration,
    /// The buffer latch is refreshed after each append.
    pub readiness: Readiness,
    /// Counters.
    pub metrics: IngestMetrics,
    /// How OTLP spans become runs.
    pub span_options: Arc<SpanConvertOptions>,
    /// Told about runs after each successful append (the local trace index; `None`: nobody).
    pub observer: Option<Arc<dyn AppendObserver>>,
    /// Large OTLP requests decoded and converted at once (one per core): more only time-slice
    /// the same cores, hold more decoded requests in memory, and spread allocations over more
    /// threads' heaps.
    pub conversions: Arc<tokio::sync::Semaphore>,
    /// `ingest.max_inflight_bytes`, shared by every request of both listeners.
    pub budget: budget::MemoryBudget,
}

/// The ingest routes (without the admin routes; see [`crate::app::router`]).
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/traces", post(traces::post_traces))
        .route(
            crate::model::otlp::HTTP_METRICS_PATH,
            post(otlp_metrics::post_metrics),
        )
        .with_state(state)
}

//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! `ingest.grpc_addr` (tonic).
//!
//! Guarantees: the same conversion, durability and ack rule as OTLP/HTTP (a response only once
//! the runs are in the disk buffer); gzip requests accepted; messages over
//! `ingest.max_body_bytes` (compressed or decompressed) answered `RESOURCE_EXHAUSTED`; invalid
//! spans reported as a partial success; inbound auth from the `authorization` metadata; on
//! shutdown the listener closes and in-flight calls finish.

use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::IngestState;
use super::error::ApiError;
use super::metrics::RequestLabels;
use super::otlp;

/// The gRPC `TraceService`.
pub struct OtlpGrpc {
    state: IngestState,
}

fn status_of(error: &ApiError) -> Status {
    Status::new(otlp::grpc_code(error.status), error.message.clone())
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let started = std::time::Instant::now();
        let headers = request.metadata().clone().into_headers();
        let result = async {
            if !self.state.auth.check(&headers) {
                return Err(ApiError::unauthorized(
                    "missing or wrong bearer token: send authorization: Bearer <ingest token> metadata",
                ));
            }
            let key = super::traces::client_key(&self.state, &headers)?;
            otlp::export(&self.state, request.into_inner(), key).await
        }
        .await;
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(e) => e.code,
        };
        self.state
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                input: "otlp_grpc",
                outcome,
            })
            .inc();
        match result {
            Ok(outcome) => {
                self.state
                    .metrics
                    .ack_latency
                    .observe(started.elapsed().as_secs_f64());
                Ok(Response::new(otlp::response_message(&outcome)))
            }
            Err(e) => {
                tracing::debug!(code = e.code, message = %e.message, "OTLP/gRPC export rejected");
                Err(status_of(&e))
            }
        }
    }
}

/// HTTP/2 flow-control window per stream (a whole SDK batch fits).
const STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 flow-control window per connection (several concurrent exports).
const CONNECTION_WINDOW: u32 = 8 << 20;

/// Serves OTLP/gRPC on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: IngestState,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let timeout = state.request_timeout;
    let service = TraceServiceServer::new(OtlpGrpc { state })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    // Exporters send one large message per call (an SDK batch is ~0.25 MB): HTTP/2's default
    // 64 KiB windows would make every call wait for window updates, and Nagle would hold the
    // small answers back.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .timeout(timeout)
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .layer(tower::layer::layer_fn(OversizeIsResourceExhausted))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// tonic answers a message whose length prefix is over the limit with `OUT_OF_RANGE`; the OTLP
/// specification (and clients' retry logic) expect `RESOURCE_EXHAUSTED` for a size limit, which
/// tonic already uses when the limit is hit while decompressing. This layer makes both agree.
#[derive(Clone)]
struct OversizeIsResourceExhausted<S>(S);

impl<S, B, RB> tower::Service<HttpRequest<B>> for OversizeIsResourceExhausted<S>
where
    S: tower::Service<HttpRequest<B>, Response = HttpResponse<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(HttpResponse<RB>) -> HttpResponse<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(request).map_ok(rewrite_oversize_status)
    }
}

fn rewrite_oversize_status<RB>(mut response: HttpResponse<RB>) -> HttpResponse<RB> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    let headers = response.headers_mut();
    let is_oversize = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == out_of_range.as_bytes())
        && headers.get("grpc-message").is_some_and(|m| {
            m.to_str()
                .is_ok_and(|m| m.contains("too%20large") || m.contains("too large"))
        });
    if is_oversize {
        let code = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = HeaderValue::from_str(&code) {
            headers.insert("grpc-status", v);
        }
    }
    response
}

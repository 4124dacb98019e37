//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! `ingest.grpc_addr` (tonic), and `MetricsService/Export`, acknowledged and not forwarded
//! (see [`super::otlp_metrics`]).
//!
//! Guarantees: the same conversion, durability and ack rule as OTLP/HTTP (a response only once
//! the runs are in the disk buffer); gzip requests accepted; messages over
//! `ingest.max_body_bytes` (compressed or decompressed) answered `RESOURCE_EXHAUSTED`; invalid
//! spans reported as a partial success; a message that is not an `ExportTraceServiceRequest`
//! answered `INVALID_ARGUMENT`; inbound auth from the `authorization` metadata; on shutdown the
//! listener closes and in-flight calls finish.
//!
//! tonic does the framing, compression, limits and status; the service is written out here
//! (not the generated `TraceServiceServer`) so the request message arrives as bytes and is
//! decoded together with the conversion, on the same thread (see [`otlp::export`]).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::IngestState;
use super::budget::SharedReservation;
use super::error::ApiError;
use super::otlp::{self, OtlpEncoding};
use crate::model::otlp::{GRPC_EXPORT_PATH as EXPORT_PATH, GRPC_METRICS_EXPORT_PATH};

fn status_of(error: &ApiError) -> Status {
    Status::new(otlp::grpc_code(error.status), error.message.clone())
}

/// Handles one `Export` call: the request message arrives as its protobuf bytes and is decoded
/// with the conversion, off the async workers (see [`otlp::export`]).
async fn export(
    state: &IngestState,
    request: Request<Bytes>,
) -> Result<Response<ExportTraceServiceResponse>, Status> {
    let started = std::time::Instant::now();
    let headers = request.metadata().clone().into_headers();
    let result = async {
        if !state.auth.check(&headers) {
            return Err(ApiError::unauthorized(
                "missing or wrong bearer token: send authorization: Bearer <ingest token> metadata",
            ));
        }
        let key = super::ingest::client_key(state, &headers)?;
        let reservation = request
            .extensions()
            .get::<SharedReservation>()
            .cloned()
            .unwrap_or_else(|| SharedReservation::new(state.budget.reservation()));
        let message = request.into_inner();
        // What the body read charged for a compressed message's worst case is given back down
        // to what it really is: the frames received and the inflated message.
        reservation.shrink_to(
            reservation
                .wire_bytes()
                .saturating_add(message.len() as u64),
        );
        otlp::export(state, message, OtlpEncoding::Protobuf, key, &reservation).await
    }
    .await;
    state.metrics.record("otlp_grpc", &result, started);
    match result {
        Ok(outcome) => Ok(Response::new(otlp::response_message(&outcome))),
        Err(e) => {
            tracing::debug!(code = e.code, message = %e.message, "OTLP/gRPC export rejected");
            Err(status_of(&e))
        }
    }
}

/// Handles one `MetricsService/Export` call: the data points are counted on the wire and
/// answered as a partial success (nothing is stored or forwarded).
async fn export_metrics(
    state: &IngestState,
    request: Request<Bytes>,
) -> Result<Response<ExportMetricsServiceResponse>, Status> {
    let started = std::time::Instant::now();
    let headers = request.metadata().clone().into_headers();
    let result = if state.auth.check(&headers) {
        super::otlp_metrics::count_data_points(request.get_ref(), OtlpEncoding::Protobuf)
    } else {
        Err(ApiError::unauthorized(
            "missing or wrong bearer token: send authorization: Bearer <ingest token> metadata",
        ))
    };
    state.metrics.record("otlp_grpc_metrics", &result, started);
    match result {
        Ok(points) => {
            state.metrics.metric_points_dropped.inc_by(points);
            Ok(Response::new(super::otlp_metrics::response_message(points)))
        }
        Err(e) => Err(status_of(&e)),
    }
}

/// The `TraceService` server (and `MetricsService`): routes `Export` through tonic's unary handling (framing,
/// compression, message limits, status) with [`RawRequest`] as the codec.
#[derive(Clone)]
pub struct TraceServer {
    state: Arc<IngestState>,
    max_message_bytes: usize,
    /// `ingest.request_timeout`: the whole call, body included.
    timeout: std::time::Duration,
}

impl NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// One `Export` call, as tonic's unary handler wants it.
struct ExportCall(Arc<IngestState>);

impl UnaryService<Bytes> for ExportCall {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<'static, Result<Response<Self::Response>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move { export(&state, request).await })
    }
}

/// One `MetricsService/Export` call.
struct MetricsCall(Arc<IngestState>);

impl UnaryService<Bytes> for MetricsCall {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<'static, Result<Response<Self::Response>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move { export_metrics(&state, request).await })
    }
}

impl<B> tower::Service<HttpRequest<B>> for TraceServer
where
    B: axum::body::HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = HttpResponse<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        let metrics = match request.uri().path() {
            EXPORT_PATH => false,
            GRPC_METRICS_EXPORT_PATH => true,
            _ => return Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        };
        let reservation = SharedReservation::new(self.state.budget.reservation());
        let inflate_charge = self.max_message_bytes as u64;
        let mut request = request.map(|body| BudgetedBody {
            inner: body,
            reservation: reservation.clone(),
            messages: MessageFraming::default(),
            inflate_charge,
        });
        request.extensions_mut().insert(reservation);
        let mut gzip = EnabledCompressionEncodings::default();
        gzip.enable(CompressionEncoding::Gzip);
        let max = self.max_message_bytes;
        let state = Arc::clone(&self.state);
        let timeout = self.timeout;
        Box::pin(async move {
            let call = async {
                if metrics {
                    Grpc::new(RawRequest::<ExportMetricsServiceResponse>::default())
                        .apply_compression_config(gzip, gzip)
                        .apply_max_message_size_config(Some(max), None)
                        .unary(MetricsCall(state), request)
                        .await
                } else {
                    Grpc::new(RawRequest::<ExportTraceServiceResponse>::default())
                        .apply_compression_config(gzip, gzip)
                        .apply_max_message_size_config(Some(max), None)
                        .unary(ExportCall(state), request)
                        .await
                }
            };
            let response = match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => Status::deadline_exceeded(
                    "the request was not received and stored within ingest.request_timeout",
                )
                .into_http(),
            };
            Ok(rewrite_oversize_status(response))
        })
    }
}

/// A request body whose frames are charged to the request's reservation as they arrive; a
/// frame the budget cannot take ends the body with the refusal as a gRPC status.
///
/// tonic inflates a compressed message once all of it has arrived, up to the message limit:
/// the frame that completes a compressed message is charged that worst case too (`inflate_charge`)
/// before tonic sees it, and [`ExportCall`] gives back what the inflated message did not need.
/// A slow client sending a compressed message holds only the bytes it sent.
struct BudgetedBody<B> {
    inner: B,
    reservation: SharedReservation,
    messages: MessageFraming,
    inflate_charge: u64,
}

/// Where the body is in gRPC's length-prefixed messages (1 byte compressed flag, 4 bytes
/// big-endian length, the message), tracked across frames of any size.
#[derive(Debug, Default)]
struct MessageFraming {
    /// Bytes of the current 5-byte prefix seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come (after a complete prefix).
    remaining: u64,
    /// Whether the current message is compressed.
    compressed: bool,
}

impl MessageFraming {
    /// Feeds `data`; returns how many compressed messages it completed.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut completed = 0;
        while !data.is_empty() {
            if self.prefix_len < 5 {
                let take = (5 - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                data = &data[take..];
                if self.prefix_len < 5 {
                    break;
                }
                self.compressed = self.prefix[0] != 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.remaining = u64::from(len);
            } else {
                let take = self.remaining.min(data.len() as u64);
                self.remaining -= take;
                data = &data[take as usize..];
            }
            if self.prefix_len == 5 && self.remaining == 0 {
                completed += u64::from(self.compressed);
                self.prefix_len = 0;
            }
        }
        completed
    }
}

impl<B> hyper::body::Body for BudgetedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.remaining() as u64;
            if let Err(e) = self.reservation.grow_wire(len) {
                return Poll::Ready(Some(Err(Box::new(status_of(&e)))));
            }
            let this = &mut *self;
            let completed = this.messages.feed(data);
            if completed > 0
                && let Err(e) = this.reservation.grow(
                    completed.saturating_mul(this.inflate_charge),
                    "a compressed message, charged at ingest.max_body_bytes until inflated",
                )
            {
                return Poll::Ready(Some(Err(Box::new(status_of(&e)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The server-side codec: the request message is taken as its bytes (no copy: tonic's decode
/// buffer is split off), the response `R` is encoded with prost.
#[derive(Debug)]
struct RawRequest<R>(PhantomData<fn() -> R>);

impl<R> Default for RawRequest<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: Message + Send + 'static> Codec for RawRequest<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = RawRequest<R>;
    type Decoder = RawRequest<R>;

    fn encoder(&mut self) -> Self::Encoder {
        Self::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Self::default()
    }
}

impl<R: Message + Send + 'static> Encoder for RawRequest<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the export response: {e}")))
    }
}

impl<R: Message + Send + 'static> Decoder for RawRequest<R> {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// HTTP/2 flow-control window per stream (a whole SDK batch fits).
pub const STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 flow-control window per connection (several concurrent exports).
pub const CONNECTION_WINDOW: u32 = 8 << 20;

/// The OTLP/gRPC service, to be served (HTTP/2 only) by [`super::http::serve`], which gives
/// the gRPC listener the same connection cap, timeouts and keepalive as the HTTP one.
/// Exporters send one large message per call (an SDK batch is ~0.25 MB): HTTP/2's default
/// 64 KiB windows would make every call wait for window updates, so the listener is served
/// with [`STREAM_WINDOW`] and [`CONNECTION_WINDOW`].
pub fn service(state: IngestState) -> TraceServer {
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    TraceServer {
        timeout: state.request_timeout,
        state: Arc::new(state),
        max_message_bytes: limit,
    }
}

/// tonic answers a message whose length prefix is over the limit with `OUT_OF_RANGE`; the OTLP
/// specification (and clients' retry logic) expect `RESOURCE_EXHAUSTED` for a size limit, which
/// tonic already uses when the limit is hit while decompressing. This makes both agree.
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

#[cfg(test)]
mod tests {
    use super::MessageFraming;

    fn message(compressed: bool, len: usize) -> Vec<u8> {
        let mut out = vec![u8::from(compressed)];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(9u8, len));
        out
    }

    #[test]
    fn a_compressed_message_counts_once_when_its_last_byte_arrives() {
        let bytes = message(true, 10);
        let mut framing = MessageFraming::default();
        let counts: Vec<u64> = bytes.chunks(1).map(|b| framing.feed(b)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 1);
        assert_eq!(counts.last(), Some(&1), "charged with the completing byte");
    }

    #[test]
    fn plain_and_empty_messages_are_not_charged_and_frames_may_split_anywhere() {
        let mut bytes = message(false, 3);
        bytes.extend(message(true, 0));
        bytes.extend(message(true, 7));
        bytes.extend(message(false, 0));
        for split in 1..bytes.len() {
            let mut framing = MessageFraming::default();
            let (a, b) = bytes.split_at(split);
            assert_eq!(framing.feed(a) + framing.feed(b), 2, "split at {split}");
        }
    }
}

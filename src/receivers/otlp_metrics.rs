//! OTLP metrics (`POST /v1/metrics`, gRPC `MetricsService/Export`): acknowledged and not
//! forwarded. Dynamiq takes traces; an application that points every OpenTelemetry signal at the
//! sidecar (`OTEL_EXPORTER_OTLP_ENDPOINT` alone) must not log an export error every interval.
//!
//! Guarantees: a well-formed request gets 200 / `OK` with a partial success naming how many data
//! points were not accepted and why (so a client neither retries nor believes they were
//! stored), counted in `dynamiq_sidecar_otlp_metric_points_dropped_total`; the same auth, body
//! limits, gzip and memory budget as traces; a body that is not an OTLP metrics request is a 400
//! / `INVALID_ARGUMENT`. Protobuf data points are counted on the wire format (nothing allocated);
//! OTLP/JSON ones with a parse that keeps no data point, charged to the memory budget first.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::IngestState;
use super::body;
use super::error::ApiError;
use super::otlp::{self, OtlpEncoding};
use super::traces::{MediaType, decode, media_type};

/// The partial-success message of every metrics export.
pub const NOT_FORWARDED: &str =
    "dynamiq-sidecar forwards traces to Dynamiq; metrics are acknowledged and not forwarded";

/// How many data points an `ExportMetricsServiceRequest` holds.
pub fn count_data_points(body: &[u8], encoding: OtlpEncoding) -> Result<u64, ApiError> {
    match encoding {
        OtlpEncoding::Protobuf => protobuf_points(body).ok_or_else(|| {
            ApiError::bad_request("the body is not an OTLP ExportMetricsServiceRequest in protobuf")
        }),
        OtlpEncoding::Json => json_points(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not a valid OTLP/JSON ExportMetricsServiceRequest: {e}"
            ))
        }),
    }
}

/// The answer to a metrics export of `points` data points.
pub fn response_message(points: u64) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (points > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(points).unwrap_or(i64::MAX),
            error_message: NOT_FORWARDED.into(),
        }),
    }
}

/// Calls `f` with each length-delimited field (number, bytes) of one protobuf message; `None`
/// when the message is not well-formed or `f` says so. Allocates nothing.
fn each_length_delimited(
    mut buf: &[u8],
    mut f: impl FnMut(u32, &[u8]) -> Option<()>,
) -> Option<()> {
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
            }
            WireType::SixtyFourBit => buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => buf = buf.get(4..)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let value = buf.get(..len)?;
                buf = &buf[len..];
                f(field, value)?;
            }
            // Groups are deprecated and absent from OTLP.
            WireType::StartGroup | WireType::EndGroup => return None,
        }
    }
    Some(())
}

/// How many messages lie at the end of `path` (field numbers per level) below `buf`.
fn count_at(buf: &[u8], path: &[&[u32]]) -> Option<u64> {
    let Some((wanted, rest)) = path.split_first() else {
        return Some(1);
    };
    let mut total = 0u64;
    each_length_delimited(buf, |field, value| {
        if wanted.contains(&field) {
            total = total.saturating_add(count_at(value, rest)?);
        }
        Some(())
    })?;
    Some(total)
}

/// Data points on the wire: request.resource_metrics (1) → scope_metrics (2) → metrics (2) →
/// gauge (5) | sum (7) | histogram (9) | exponential_histogram (10) | summary (11) →
/// data_points (1). Five levels, so the recursion is bounded.
fn protobuf_points(body: &[u8]) -> Option<u64> {
    count_at(body, &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]])
}

#[derive(Deserialize)]
struct JsonRequest {
    #[serde(default, rename = "resourceMetrics", alias = "resource_metrics")]
    resource_metrics: Vec<JsonResource>,
}

#[derive(Deserialize)]
struct JsonResource {
    #[serde(default, rename = "scopeMetrics", alias = "scope_metrics")]
    scope_metrics: Vec<JsonScope>,
}

#[derive(Deserialize)]
struct JsonScope {
    #[serde(default)]
    metrics: Vec<JsonMetric>,
}

#[derive(Deserialize)]
struct JsonMetric {
    #[serde(default)]
    gauge: Option<JsonData>,
    #[serde(default)]
    sum: Option<JsonData>,
    #[serde(default)]
    histogram: Option<JsonData>,
    #[serde(
        default,
        rename = "exponentialHistogram",
        alias = "exponential_histogram"
    )]
    exponential_histogram: Option<JsonData>,
    #[serde(default)]
    summary: Option<JsonData>,
}

#[derive(Deserialize)]
struct JsonData {
    /// `IgnoredAny` is zero-sized: the points are counted, not kept.
    #[serde(default, rename = "dataPoints", alias = "data_points")]
    data_points: Vec<IgnoredAny>,
}

fn json_points(body: &[u8]) -> Result<u64, serde_json::Error> {
    let request: JsonRequest = serde_json::from_slice(body)?;
    let mut points = 0u64;
    for metric in request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        for data in [
            &metric.gauge,
            &metric.sum,
            &metric.histogram,
            &metric.exponential_histogram,
            &metric.summary,
        ]
        .into_iter()
        .flatten()
        {
            points = points.saturating_add(data.data_points.len() as u64);
        }
    }
    Ok(points)
}

/// `POST /v1/metrics`.
pub async fn post_metrics(State(state): State<IngestState>, request: Request) -> Response {
    let started = Instant::now();
    let protobuf_request = media_type(request.headers()) == Ok(MediaType::Protobuf);
    let result = match tokio::time::timeout(state.request_timeout, handle(&state, request)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body was not received within ingest.request_timeout",
        )),
    };
    state.metrics.record("otlp_metrics", &result, started);
    match result {
        Ok((points, encoding)) => {
            let message = response_message(points);
            match encoding {
                OtlpEncoding::Protobuf => (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    message.encode_to_vec(),
                )
                    .into_response(),
                OtlpEncoding::Json => {
                    let body = match &message.partial_success {
                        None => b"{}".to_vec(),
                        Some(_) => serde_json::to_vec(&message).unwrap_or_else(|_| b"{}".to_vec()),
                    };
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
            }
        }
        Err(e) if protobuf_request => otlp::protobuf_error_response(e),
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &IngestState, request: Request) -> Result<(u64, OtlpEncoding), ApiError> {
    let (parts, body) = request.into_parts();
    if !state.auth.check(&parts.headers) {
        return Err(ApiError::unauthorized(
            "missing or wrong bearer token: send Authorization: Bearer <ingest token>",
        ));
    }
    let encoding = match media_type(&parts.headers)? {
        MediaType::Protobuf => OtlpEncoding::Protobuf,
        MediaType::Json => OtlpEncoding::Json,
    };
    let compression = body::encoding(&parts.headers)?;
    let mut reservation = state.budget.reservation();
    let raw =
        body::read_limited(&parts.headers, body, state.max_body_bytes, &mut reservation).await?;
    state.metrics.bytes_received.inc_by(raw.len() as u64);
    let decoded = decode(raw, compression, state.max_body_bytes, &mut reservation).await?;
    if encoding == OtlpEncoding::Json {
        // The parse keeps no data point, but one small struct per resource, scope and metric.
        reservation.grow(
            super::decoded_size::json_estimate(&decoded).heap,
            "the parsed metrics request",
        )?;
    }
    let points = count_data_points(&decoded, encoding)?;
    state.metrics.metric_points_dropped.inc_by(points);
    Ok((points, encoding))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data,
    };

    use super::*;

    fn request() -> ExportMetricsServiceRequest {
        let metric = |data| Metric {
            name: "m".into(),
            data: Some(data),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default(); 3],
                        })),
                        metric(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default(); 2],
                            ..Default::default()
                        })),
                        metric(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default()],
                            ..Default::default()
                        })),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn data_points_are_counted_in_protobuf_and_json_alike() {
        let req = request();
        let pb = req.encode_to_vec();
        assert_eq!(count_data_points(&pb, OtlpEncoding::Protobuf).unwrap(), 6);
        let json = serde_json::to_vec(&req).unwrap();
        assert_eq!(count_data_points(&json, OtlpEncoding::Json).unwrap(), 6);
        assert_eq!(count_data_points(b"", OtlpEncoding::Protobuf).unwrap(), 0);
        assert_eq!(count_data_points(b"{}", OtlpEncoding::Json).unwrap(), 0);
        let snake = br#"{"resource_metrics":[{"scope_metrics":[{"metrics":[{"sum":{"data_points":[{},{}]}}]}]}]}"#;
        assert_eq!(count_data_points(snake, OtlpEncoding::Json).unwrap(), 2);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let pb = request().encode_to_vec();
        for bad in [&pb[..pb.len() - 1], b"\xff\xff\xff", b"\x0a\x05ab"] {
            let e = count_data_points(bad, OtlpEncoding::Protobuf).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
        assert_eq!(
            count_data_points(b"[not json", OtlpEncoding::Json)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn the_answer_is_a_partial_success_naming_the_points() {
        let r = response_message(6).partial_success.unwrap();
        assert_eq!(r.rejected_data_points, 6);
        assert!(r.error_message.contains("not forwarded"));
        assert!(response_message(0).partial_success.is_none());
    }
}

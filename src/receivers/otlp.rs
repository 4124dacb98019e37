//! OTLP ingest shared by OTLP/HTTP (`POST /v1/traces`) and OTLP/gRPC (`TraceService/Export`):
//! decoding, span → run conversion, durable append, and the OTLP response forms.
//!
//! Guarantees: a request is answered only after every run made from its valid spans is in the
//! disk buffer; invalid spans, and spans whose run would be larger than one request to the
//! collector may carry (`forward.max_bytes` less the framing), are counted in
//! `partial_success.rejected_spans` with a reason and never stop the valid ones; an undecodable body is rejected whole (400 / `INVALID_ARGUMENT`)
//! with a message that says what was wrong.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::IngestState;
use super::budget::SharedReservation;
use super::decoded_size;
use super::error::ApiError;
use crate::convert::{self, ConvertedRecord, ConvertedRecords};
use crate::model::envelope;
use crate::model::indexed::IndexedRun;

/// The body encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, integer enums, lowerCamelCase).
    Json,
}

/// What an export request came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Spans converted and stored.
    pub accepted_spans: u64,
    /// Spans rejected as invalid.
    pub rejected_spans: u64,
    /// Why (empty when nothing was rejected).
    pub error_message: String,
}

/// Decodes an OTLP/HTTP body.
pub fn decode_request(
    body: &[u8],
    encoding: OtlpEncoding,
) -> Result<ExportTraceServiceRequest, ApiError> {
    match encoding {
        OtlpEncoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}"
            ))
        }),
        OtlpEncoding::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not a valid OTLP/JSON ExportTraceServiceRequest (ids are hex strings, enums integers, field names lowerCamelCase): {e}"
            ))
        }),
    }
}

/// Bodies at least this large are decoded and converted off the async workers.
const BLOCKING_BODY_BYTES: usize = 32 * 1024;

/// Decodes `body`, converts its spans and stores the runs. `client_key` is stored with each
/// run in passthrough mode.
///
/// A large body is decoded and converted on one blocking thread, and the decoded request is
/// dropped there too: the tens of thousands of small allocations a protobuf decode makes are
/// freed by the thread that made them (a cross-thread free is several times slower), and the
/// async workers stay free for I/O.
pub async fn export(
    state: &IngestState,
    body: Bytes,
    encoding: OtlpEncoding,
    client_key: Option<&str>,
    reservation: &SharedReservation,
) -> Result<ExportOutcome, ApiError> {
    // Runs are written straight into buffer records: envelope header first, then the JSON.
    let prefix = envelope::run_prefix(client_key);
    let prefix_len = prefix.len();
    let converted = if body.len() >= BLOCKING_BODY_BYTES {
        let reservation = reservation.clone();
        let _permit = state.conversions.acquire().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the sidecar is shutting down",
            )
        })?;
        let options = Arc::clone(&state.span_options);
        tokio::task::spawn_blocking(move || {
            decode_and_convert(&body, encoding, &options, &prefix, &reservation)
        })
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "span conversion failed",
            ))
        })?
    } else {
        decode_and_convert(&body, encoding, &state.span_options, &prefix, reservation)?
    };
    let ConvertedRecords {
        buffers,
        mut records,
        mut rejected_spans,
        mut error_message,
    } = converted;
    let unforwardable =
        reject_unforwardable_runs(&buffers, &mut records, prefix_len, state.max_run_bytes);
    if let Some((count, message)) = unforwardable {
        rejected_spans += count;
        if !error_message.is_empty() {
            error_message.push_str("; ");
        }
        error_message.push_str(&message);
    }
    let accepted_spans = records.len() as u64;
    if !records.is_empty() {
        // Buffer payloads (`prefix ‖ run`) and, for the index, the runs: slices of the
        // converter's buffers, no copies.
        let buffers: Vec<Bytes> = buffers.into_iter().map(Bytes::from).collect();
        let payloads: Vec<Bytes> = records
            .iter()
            .map(|record| buffers[record.buffer].slice(record.range.clone()))
            .collect();
        let runs: Vec<Bytes> = match &state.observer {
            Some(_) => payloads.iter().map(|p| p.slice(prefix_len..)).collect(),
            None => Vec::new(),
        };
        let indexed = index_entries(&buffers, &records, &runs);
        super::ingest::store(state, payloads, indexed).await?;
    }
    state.metrics.spans_accepted.inc_by(accepted_spans);
    state.metrics.spans_rejected.inc_by(rejected_spans);
    state.metrics.runs_accepted.inc_by(accepted_spans);
    Ok(ExportOutcome {
        accepted_spans,
        rejected_spans,
        error_message,
    })
}

/// Removes the records whose run is larger than one request to the collector may carry
/// (`max_run_bytes`): stored, they could only be dead-lettered. Their spans are rejected as a
/// partial success, which the OTLP spec prescribes for data a server refuses while accepting the
/// rest (a 413 would make the client drop, or retry, the valid spans too). Returns how many and
/// a message naming the first one's run id.
fn reject_unforwardable_runs(
    buffers: &[Vec<u8>],
    records: &mut Vec<ConvertedRecord>,
    prefix_len: usize,
    max_run_bytes: usize,
) -> Option<(u64, String)> {
    let run_len = |r: &ConvertedRecord| r.range.len().saturating_sub(prefix_len);
    let first = records.iter().find(|r| run_len(r) > max_run_bytes)?;
    let json = Bytes::copy_from_slice(
        &buffers[first.buffer][first.range.start + prefix_len..first.range.end],
    );
    let id = IndexedRun::parse(0, &json)
        .map(|run| run.id.into_owned())
        .unwrap_or_default();
    let message = format!(
        "span converted to run {:?} is {} bytes; a run must fit alone in one request to the collector: at most {max_run_bytes} bytes (forward.max_bytes less the request framing)",
        crate::model::text::truncate(&id, 128),
        run_len(first),
    );
    let before = records.len();
    records.retain(|r| run_len(r) <= max_run_bytes);
    Some(((before - records.len()) as u64, message))
}

/// Bytes of runs (buffer records) the conversion makes at most: the span's fields as JSON
/// (hex ids, quoted keys, escaped strings) plus the record framing of each run.
fn output_estimate(body_len: usize, spans: u64) -> u64 {
    (body_len as u64)
        .saturating_mul(3)
        .saturating_add(spans.saturating_mul(1024))
}

/// What decoding `body` and converting its spans may allocate at most, charged before either
/// starts: the decoded request ([`decoded_size`]) plus the runs made of it. Protobuf that is
/// not even well-formed is refused here (400), before anything is built.
pub fn decoding_charge(body: &[u8], encoding: OtlpEncoding) -> Result<u64, ApiError> {
    let estimate = match encoding {
        OtlpEncoding::Protobuf => decoded_size::protobuf_estimate(body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        OtlpEncoding::Json => decoded_size::json_estimate(body),
    };
    Ok(estimate
        .heap
        .saturating_add(output_estimate(body.len(), estimate.spans)))
}

/// Decodes `body` and converts its spans (the decoded request is dropped here, on the caller's
/// thread). What decoding and converting will build is charged to `reservation` first.
fn decode_and_convert(
    body: &[u8],
    encoding: OtlpEncoding,
    options: &convert::SpanConvertOptions,
    prefix: &[u8],
    reservation: &SharedReservation,
) -> Result<ConvertedRecords, ApiError> {
    reservation.grow(
        decoding_charge(body, encoding)?,
        "the decoded spans and the runs made of them",
    )?;
    let request = decode_request(body, encoding)?;
    Ok(convert::convert_request_to_records(
        &request, options, prefix,
    ))
}

/// What the trace index gets of freshly converted runs (`runs[i]` is `records[i]`'s JSON; none
/// when the index is off): the fields the converter wrote (no parsing), else read from the JSON
/// while it is in cache. A run without a string `id` and `trace_id` is left out; `seq` is the
/// run's position in the append.
fn index_entries<'a>(
    buffers: &'a [Bytes],
    records: &'a [ConvertedRecord],
    runs: &'a [Bytes],
) -> Vec<IndexedRun<'a>> {
    (0..)
        .zip(records.iter().zip(runs))
        .filter_map(|(seq, (record, json))| {
            let Some(keys) = &record.keys else {
                return IndexedRun::parse(seq, json);
            };
            let buffer = &buffers[record.buffer];
            let text = |range: &Range<usize>| std::str::from_utf8(&buffer[range.clone()]).ok();
            Some(IndexedRun {
                seq,
                json: json.clone(),
                trace_id: Cow::Borrowed(text(&keys.trace_id)?),
                id: Cow::Borrowed(text(&keys.id)?),
                is_root: keys.is_root,
                status: keys.status,
                start_ns: Some(keys.start_ns),
                end_ns: keys.end_ns,
            })
        })
        .collect()
}

/// The protobuf/JSON response message of an outcome.
pub fn response_message(outcome: &ExportOutcome) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (outcome.rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(outcome.rejected_spans).unwrap_or(i64::MAX),
            error_message: outcome.error_message.clone(),
        }),
    }
}

/// The OTLP/HTTP success response, in the request's encoding.
pub fn http_response(outcome: &ExportOutcome, encoding: OtlpEncoding) -> Response {
    let message = response_message(outcome);
    match encoding {
        OtlpEncoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            message.encode_to_vec(),
        )
            .into_response(),
        OtlpEncoding::Json => {
            // A full success is `{}` (not `{"partialSuccess":null}`).
            let body = match &message.partial_success {
                None => b"{}".to_vec(),
                Some(_) => serde_json::to_vec(&message).unwrap_or_else(|_| b"{}".to_vec()),
            };
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP prescribes for errors to protobuf requests.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error to an OTLP/protobuf request: the same status and headers as the JSON error, with
/// a `google.rpc.Status` body.
pub fn protobuf_error_response(error: ApiError) -> Response {
    let status = RpcStatus {
        code: grpc_code(error.status) as i32,
        message: error.message.clone(),
    };
    let mut response = error.into_response();
    *response.body_mut() = axum::body::Body::from(status.encode_to_vec());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

/// The gRPC status code that matches an HTTP status, per the OTLP mapping.
pub fn grpc_code(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 | 415 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        408 => tonic::Code::DeadlineExceeded,
        413 => tonic::Code::ResourceExhausted,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_success_only_when_spans_were_rejected() {
        let ok = ExportOutcome {
            accepted_spans: 2,
            ..Default::default()
        };
        assert_eq!(response_message(&ok).partial_success, None);
        let partial = ExportOutcome {
            accepted_spans: 1,
            rejected_spans: 2,
            error_message: "bad ids".into(),
        };
        let msg = response_message(&partial);
        let p = msg.partial_success.unwrap();
        assert_eq!((p.rejected_spans, p.error_message.as_str()), (2, "bad ids"));
    }

    #[test]
    fn snake_case_and_garbage_are_rejected() {
        assert!(decode_request(b"\xff\xff\xff", OtlpEncoding::Protobuf).is_err());
        let base64_ids = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"AAECAwQFBgcICQoLDA0ODw==","spanId":"AAECAwQFBgc="}]}]}]}"#;
        let e = decode_request(base64_ids, OtlpEncoding::Json).unwrap_err();
        assert!(e.message.contains("hex"), "{}", e.message);
    }

    #[test]
    fn runs_too_large_to_forward_are_rejected_spans_naming_the_first_and_the_rest_stay() {
        let prefix = envelope::run_prefix(Some("client-key"));
        let runs = [
            r#"{"id":"small-1","trace_id":"t"}"#.to_string(),
            format!(
                r#"{{"id":"huge","trace_id":"t","pad":"{}"}}"#,
                "x".repeat(200)
            ),
            r#"{"id":"small-2","trace_id":"t"}"#.to_string(),
        ];
        let mut buffer = Vec::new();
        let mut records = Vec::new();
        for run in &runs {
            let start = buffer.len();
            buffer.extend_from_slice(&prefix);
            buffer.extend_from_slice(run.as_bytes());
            records.push(ConvertedRecord {
                buffer: 0,
                range: start..buffer.len(),
                keys: None,
            });
        }
        let buffers = vec![buffer];
        let mut kept = records.clone();
        assert!(reject_unforwardable_runs(&buffers, &mut kept, prefix.len(), 1000).is_none());
        assert_eq!(kept.len(), 3);
        let (count, message) =
            reject_unforwardable_runs(&buffers, &mut kept, prefix.len(), 100).unwrap();
        assert_eq!(count, 1);
        assert!(
            message.contains(r#""huge""#) && message.contains("forward.max_bytes"),
            "{message}"
        );
        assert!(!message.contains("client-key"));
        assert_eq!(kept, [records[0].clone(), records[2].clone()]);
    }

    #[test]
    fn protobuf_errors_carry_a_google_rpc_status() {
        let response = protobuf_error_response(ApiError::bad_request("nope"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-protobuf"
        );
    }
}

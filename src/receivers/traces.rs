//! `POST /v1/traces`: one path for Dynamiq run batches and OTLP/HTTP, told apart by
//! `Content-Type` and, for JSON, by the top-level key (docs/http-contract.md §3–4).
//!
//! Guarantees: `200 {"message":"ok","accepted":N}` is sent only after every run of the batch
//! is in the disk buffer (written, and fsynced under `fsync = "always"`); a batch is stored
//! whole or not at all; a batch with a run larger than one upstream request may carry
//! (`forward.max_bytes` less the framing) is refused with 413 naming the run; every rejection is
//! a JSON error with a 4xx/5xx that says why.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::IngestState;
use super::body::{self, Encoding};
use super::budget::{Reservation, SharedReservation};
use super::error::ApiError;
use super::ingest::{client_key, store};
use super::otlp::{self, OtlpEncoding};
use crate::model::indexed::IndexedRun;
use crate::model::{self, JsonBody, RunBatch, envelope};

/// What the body is, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    Json,
    Protobuf,
}

pub(super) fn media_type(headers: &HeaderMap) -> Result<MediaType, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(MediaType::Json),
        "application/x-protobuf" | "application/protobuf" => Ok(MediaType::Protobuf),
        "" => Err(ApiError::unsupported_media(
            "missing Content-Type: send application/json (Dynamiq runs or OTLP/JSON) or application/x-protobuf (OTLP)",
        )),
        _ => Err(ApiError::unsupported_media(
            "unsupported Content-Type: send application/json (Dynamiq runs or OTLP/JSON) or application/x-protobuf (OTLP)",
        )),
    }
}

/// What a request was acknowledged with.
enum Ack {
    /// A Dynamiq batch: the number of runs.
    Runs(usize),
    /// An OTLP export, answered in the request's encoding.
    Spans(otlp::ExportOutcome, OtlpEncoding),
}

/// The handler.
pub async fn post_traces(State(state): State<IngestState>, request: Request) -> Response {
    let started = Instant::now();
    let protobuf_request = media_type(request.headers()) == Ok(MediaType::Protobuf);
    let (input, result) =
        match tokio::time::timeout(state.request_timeout, handle(&state, request)).await {
            Ok(r) => r,
            Err(_) => (
                "unknown",
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body was not received within ingest.request_timeout",
                )),
            ),
        };
    state.metrics.record(input, &result, started);
    match result {
        Ok(Ack::Runs(accepted)) => {
            state.metrics.runs_accepted.inc_by(accepted as u64);
            let body = format!(r#"{{"message":"ok","accepted":{accepted}}}"#);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Ack::Spans(outcome, encoding)) => otlp::http_response(&outcome, encoding),
        Err(e) => {
            tracing::debug!(status = e.status.as_u16(), code = e.code, message = %e.message, "ingest request rejected");
            if protobuf_request {
                otlp::protobuf_error_response(e)
            } else {
                e.into_response()
            }
        }
    }
}

async fn handle(state: &IngestState, request: Request) -> (&'static str, Result<Ack, ApiError>) {
    let (parts, body) = request.into_parts();
    if !state.auth.check(&parts.headers) {
        return (
            "unknown",
            Err(ApiError::unauthorized(
                "missing or wrong bearer token: send Authorization: Bearer <ingest token>",
            )),
        );
    }
    let media = match media_type(&parts.headers) {
        Ok(m) => m,
        Err(e) => return ("unknown", Err(e)),
    };
    let encoding = match body::encoding(&parts.headers) {
        Ok(e) => e,
        Err(e) => return ("unknown", Err(e)),
    };
    let mut reservation = state.budget.reservation();
    let raw = match body::read_limited(&parts.headers, body, state.max_body_bytes, &mut reservation)
        .await
    {
        Ok(b) => b,
        Err(e) => return ("unknown", Err(e)),
    };
    state.metrics.bytes_received.inc_by(raw.len() as u64);
    let decoded = match decode(raw, encoding, state.max_body_bytes, &mut reservation).await {
        Ok(b) => b,
        Err(e) => return ("unknown", Err(e)),
    };
    let otlp_encoding = match media {
        MediaType::Protobuf => OtlpEncoding::Protobuf,
        MediaType::Json => match model::parse_json_body(&decoded) {
            Ok(JsonBody::Runs(batch)) => {
                // The buffer records are a copy of the runs.
                if let Err(e) = reservation.grow(decoded.len() as u64, "the runs to store") {
                    return ("dynamiq", Err(e));
                }
                let result = ingest_runs(state, &parts.headers, batch).await;
                return ("dynamiq", result.map(Ack::Runs));
            }
            Ok(JsonBody::OtlpJson) => OtlpEncoding::Json,
            Err(e) => return ("unknown", Err(e.into())),
        },
    };
    let result = async {
        let key = client_key(state, &parts.headers)?;
        let reservation = SharedReservation::new(reservation);
        let outcome = otlp::export(state, decoded, otlp_encoding, key, &reservation).await?;
        Ok(Ack::Spans(outcome, otlp_encoding))
    }
    .await;
    ("otlp_http", result)
}

/// Decompression of large bodies runs off the async workers.
pub(super) async fn decode(
    raw: Bytes,
    encoding: Encoding,
    limit: u64,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    if encoding == Encoding::Identity || raw.len() < 64 * 1024 {
        return body::decode(raw, encoding, limit, reservation);
    }
    let mut moved = std::mem::replace(reservation, reservation.empty_twin());
    let (result, moved) = tokio::task::spawn_blocking(move || {
        let result = body::decode(raw, encoding, limit, &mut moved);
        (result, moved)
    })
    .await
    .map_err(|_| ApiError::bad_request("the body could not be decompressed"))?;
    *reservation = moved;
    result
}

/// Appends a validated Dynamiq batch to the buffer; returns the number of runs.
async fn ingest_runs(
    state: &IngestState,
    headers: &HeaderMap,
    batch: RunBatch<'_>,
) -> Result<usize, ApiError> {
    let client_key = client_key(state, headers)?;
    refuse_unforwardable_runs(&batch, state.max_run_bytes)?;
    let payloads: Vec<Bytes> = batch
        .runs
        .iter()
        .map(|run| envelope::encode_run(run.json.as_bytes(), client_key))
        .collect();
    let accepted = payloads.len();
    // The index reuses the validator's fields: nothing is parsed twice.
    let indexed: Vec<IndexedRun<'_>> = match &state.observer {
        Some(_) => batch
            .runs
            .iter()
            .zip(&payloads)
            .zip(0..)
            .filter_map(|((raw, payload), i)| {
                let json = envelope::decode(payload).ok()?.run;
                Some(IndexedRun::from_validated(i, json, raw))
            })
            .collect(),
        None => Vec::new(),
    };
    store(state, payloads, indexed).await?;
    Ok(accepted)
}

/// A batch holding a run larger than one request to the collector may carry is refused whole
/// (413 naming the first such run): stored, the run could only be dead-lettered after the client
/// was told "ok".
fn refuse_unforwardable_runs(batch: &RunBatch<'_>, max_run_bytes: usize) -> Result<(), ApiError> {
    match batch
        .runs
        .iter()
        .enumerate()
        .find(|(_, run)| run.json.len() > max_run_bytes)
    {
        Some((i, run)) => Err(ApiError::run_too_large(
            i,
            &run.id,
            run.json.len(),
            max_run_bytes,
        )),
        None => Ok(()),
    }
}

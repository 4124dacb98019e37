//! What the output does with an answer: accept (with partial success), retry (with the
//! `Retry-After` / `RetryInfo` floor) or drop, for OTLP/HTTP and OTLP/gRPC.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::sinks::common::http::retry_after;
use crate::sinks::common::retry::MAX_RETRY_AFTER;

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
pub(super) fn error_message(body: &[u8]) -> String {
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
pub(super) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(super) code: i32,
    #[prost(string, tag = "2")]
    pub(super) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(super) details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub(super) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(super) value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub(super) retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub(super) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(super) nanos: i32,
}

/// The `RetryInfo.retry_delay` in a gRPC status' details, capped; `None` if absent or negative.
pub(super) fn retry_info(details: &[u8]) -> Option<Duration> {
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

// Client

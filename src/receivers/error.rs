//! The one error type of the HTTP surface: every rejection becomes a JSON body
//! `{"error":{"code":..., "message":..., "details":{...}}}` with the right status, so clients
//! (and the Dynamiq SDK's logs) see why. Messages never echo request headers, so a key sent in
//! `Authorization` can never come back in an error.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::ValidationError;

/// A request that could not be accepted, and how to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (also the metric label).
    pub code: &'static str,
    /// One sentence for humans.
    pub message: String,
    /// Field → problem, for validation errors.
    pub details: BTreeMap<String, String>,
    /// `Retry-After` in seconds, for 429/503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// Builds an error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: BTreeMap::new(),
            retry_after_secs: None,
        }
    }

    /// 400 for an invalid body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: u64, after_decompression: bool) -> Self {
        let when = if after_decompression {
            " after decompression"
        } else {
            ""
        };
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds ingest.max_body_bytes ({limit} bytes){when}"),
        )
    }

    /// 413 for a run too large to ever be forwarded: it must fit in one request to the
    /// collector on its own. `id` is cut to 128 bytes in the message.
    pub fn run_too_large(index: usize, id: &str, size: usize, limit: usize) -> Self {
        let id = crate::model::text::truncate(id, 128);
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "run_too_large",
            format!(
                "run {id:?} is {size} bytes; a run must fit alone in one request to the collector: \
                 at most {limit} bytes (forward.max_bytes less the request framing). Nothing of this batch was stored"
            ),
        );
        e.details.insert(
            format!("runs[{index}]"),
            format!("{size} bytes, more than {limit} (forward.max_bytes)"),
        );
        e
    }

    /// 415 for a content type or encoding the sidecar does not read.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 401 for a missing or wrong inbound token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Adds a `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self {
            details: e.details,
            ..Self::bad_request(e.message)
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: &'a BTreeMap<String, String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        })
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"error"}}"#.to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

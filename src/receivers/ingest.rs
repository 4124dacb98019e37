//! The ingest step every receiver shares once a request is decoded: whose key its runs carry
//! ([`client_key`]), the durable append and how its failures become answers ([`store`]), and
//! who is told about the runs once they are durable ([`AppendObserver`]).
//!
//! Guarantees: [`store`] answers `Ok` only after the buffer's append returned (written, and
//! fsynced under `fsync = "always"`); the observer hears of runs only after that, so it never
//! shows a run a client was not acknowledged for; a full buffer is a 429 with `Retry-After`, a
//! failing one a 503 with `Retry-After`.

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;

use super::IngestState;
use super::error::ApiError;
use crate::admin::readiness::Latch;
use crate::buffer::AppendError;
use crate::model::auth_mode::AuthMode;
use crate::model::indexed::IndexedRun;

/// Told about runs once they are durable (the query index implements it). Called on the
/// request's task, inside the acknowledgement path: it must be quick and must not block.
pub trait AppendObserver: Send + Sync {
    /// `runs` were appended; each one's `seq` is its position in the append, and
    /// `first_seq` the buffer sequence number of position 0.
    fn runs_appended(&self, first_seq: u64, runs: &mut [IndexedRun<'_>]);
}

/// The client's key to store with its runs: `None` unless `auth_mode = "passthrough"`.
pub fn client_key<'h>(
    state: &IngestState,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, ApiError> {
    match state.auth_mode {
        AuthMode::SidecarKey => Ok(None),
        AuthMode::Passthrough => super::auth::bearer(headers).map(Some).ok_or_else(|| {
            ApiError::unauthorized(
                "auth_mode is passthrough: send the project key as Authorization: Bearer <key>",
            )
        }),
    }
}

/// Appends encoded runs to the buffer as one unit; answers once they are durable. Then hands
/// the append observer (when there is one) `indexed`: the runs' index fields, read before the append while
/// the bytes are still in cache, each with its payload's position as `seq`.
pub async fn store(
    state: &IngestState,
    payloads: Vec<Bytes>,
    mut indexed: Vec<IndexedRun<'_>>,
) -> Result<(), ApiError> {
    let result = state.buffer.append(payloads).await;
    state
        .readiness
        .set(Latch::BufferWritable, state.buffer.is_writable());
    match result {
        Ok(appended) => {
            if let Some(observer) = &state.observer {
                observer.runs_appended(appended.first_seq, &mut indexed);
            }
            Ok(())
        }
        Err(AppendError::Full { retry_after }) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "buffer_full",
            "the disk buffer is full (buffer.max_bytes reached under when_full = \"block\", or the disk itself is full); retry later",
        )
        .with_retry_after(retry_after.as_secs().max(1))),
        Err(AppendError::TooLarge { size, limit }) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a run of {size} bytes is larger than buffer.segment_bytes ({limit})"),
        )),
        Err(
            e @ (AppendError::Io(_) | AppendError::Closed | AppendError::SequenceExhausted { .. }),
        ) => {
            tracing::error!(error = %e, "buffer append failed; answering 503");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "buffer_unavailable",
                "the disk buffer cannot store the batch right now; retry later",
            )
            .with_retry_after(5))
        }
    }
}

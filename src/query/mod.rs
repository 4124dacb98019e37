//! The local trace index and query API (docs/http-contract.md §8–9).
//!
//! Owns: the trace index ([`QueryIndex`], in [`index`]), fed by the receivers after each
//! durable append and told by the forwarder, by buffer sequence number, which runs were
//! delivered (2xx) or dead-lettered; its snapshot and restart replay ([`snapshot`]); the
//! summaries the API shows ([`summary`]); the read-only endpoints `GET /v1/traces`,
//! `GET /v1/traces/{trace_id}`, `GET /v1/traces/export` (streamed, see [`export`]), and the
//! `GET /api/*` passthrough to `query.upstream_url` (see [`api`]).
//!
//! Guarantees:
//! - Per trace it keeps the latest version of each run (by run id) as the exact JSON bytes
//!   stored, and a summary derived from them (root name and status, time range, source and
//!   session, run count, delivery state).
//! - Bounded: traces not updated within `query.retention` are dropped, and the run bytes kept
//!   never exceed `query.max_bytes` (least recently updated traces are evicted first).
//! - Cheap on the ingest path: no JSON parse for Dynamiq batches (the validator's fields are
//!   reused), an early-stopping read of the summary fields for converted spans, one short
//!   critical section per request; delivery updates parse nothing.
//! - Survives restarts: a snapshot every 30 s and at shutdown, plus a replay of the buffer
//!   records after it (see [`snapshot`] for exactly what a crash can cost the view).
//! - Never authoritative for delivery: the buffer and the forwarder are.

pub mod api;
pub mod config;
mod export;
mod index;
mod metrics;
pub mod snapshot;
mod summary;
#[cfg(test)]
mod tests;

use serde::Serialize;

pub use index::QueryIndex;
pub use metrics::QueryMetrics;
pub use summary::{Filter, Sort, TraceDetail, TraceSummary};

/// Where a run (or a trace) is in delivery to the Dynamiq collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Buffered, not yet accepted by the collector.
    Pending,
    /// Accepted by the collector (2xx), or an identical copy was.
    Delivered,
    /// Moved to the dead-letter store.
    DeadLettered,
    /// Dropped by the buffer before delivery (`buffer.when_full = "drop_oldest"`, disk full).
    Dropped,
}

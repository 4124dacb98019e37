//! The run model: a Dynamiq batch is kept as the bytes the client sent; only the fields the
//! sidecar needs (ids, type, status, times) are read, borrowed from the body.
//!
//! Owns: validation (docs/http-contract.md §3) and the envelope each buffered record carries. Guarantees:
//! what reaches the collector is byte-for-byte what the client sent for each run; a batch is
//! accepted or rejected whole, with per-field details.

pub mod auth_mode;
pub mod batch;
pub mod envelope;
pub mod indexed;
pub mod json_scan;
pub mod otlp;
pub mod text;
pub mod time;

pub use batch::{
    JsonBody, JsonBodyKind, RawRun, RunBatch, RunStatus, RunType, ValidationError,
    classify_json_body, parse_batch, parse_json_body,
};

//! The fields of a stored run a local index keeps (ids, root, status, times), read once on the
//! ingest path and handed to whoever observes appends (the query index).
//!
//! Guarantees: no full JSON parse: Dynamiq runs reuse the validator's borrowed fields, other
//! runs are read with the validator's early-stopping reader; total on any bytes.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::batch::{RawRun, RunStatus, read_fields};
use super::time::parse_ns;

/// One stored run as the trace index takes it: its JSON and the fields filtering and sorting
/// read, borrowed from the validator or the converter when they already read them.
#[derive(Debug, Clone)]
pub struct IndexedRun<'a> {
    /// Its buffer sequence number (0 when not from the buffer: never matched by delivery);
    /// before it is handed over after the append, its payload's position in the append.
    pub seq: u64,
    /// The run's JSON, as stored.
    pub json: Bytes,
    /// `trace_id`.
    pub trace_id: Cow<'a, str>,
    /// `id`.
    pub id: Cow<'a, str>,
    /// No `parent_run_id` (absent or null).
    pub is_root: bool,
    /// `status`.
    pub status: Option<RunStatus>,
    /// `start_time` in ns since the epoch.
    pub start_ns: Option<u64>,
    /// `end_time` in ns since the epoch.
    pub end_ns: Option<u64>,
}

impl<'a> IndexedRun<'a> {
    /// From a run the ingest validator read (no parsing).
    pub fn from_validated(seq: u64, json: Bytes, run: &'a RawRun<'a>) -> Self {
        let ns = |t: time::OffsetDateTime| u64::try_from(t.unix_timestamp_nanos()).ok();
        Self {
            seq,
            json,
            trace_id: Cow::Borrowed(&run.trace_id),
            id: Cow::Borrowed(&run.id),
            is_root: run.parent_run_id.is_none(),
            status: run.status,
            start_ns: ns(run.start_time),
            end_ns: run.end_time.and_then(ns),
        }
    }

    /// Reads the fields from `json` (runs the converter made, replayed buffer records). `None`
    /// for anything without a string `id` and `trace_id`.
    pub fn parse(seq: u64, json: &'a Bytes) -> Option<Self> {
        let f = read_fields(json).ok()?;
        let time = |raw| string_of(raw).and_then(|t| parse_ns(&t));
        Some(Self {
            seq,
            json: json.clone(),
            trace_id: string_of(f.trace_id)?,
            id: string_of(f.id)?,
            is_root: f.parent_run_id.is_none_or(|p| p.get() == "null"),
            status: string_of(f.status).and_then(|s| RunStatus::parse(&s)),
            start_ns: time(f.start_time),
            end_ns: time(f.end_time),
        })
    }
}

/// A JSON string value, or `None` for anything else (null, numbers, objects).
pub fn string_of<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let raw = raw?;
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

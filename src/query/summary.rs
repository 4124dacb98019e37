//! What the query API shows of a trace: its summary (derived from the runs the index holds),
//! its detail (the runs' JSON), and the listing's filter and sort order.
//!
//! The index keeps only what filtering and sorting need per run (status, times, root flag);
//! the text fields of a summary (name, source, session, the times as written) are read from the
//! runs' JSON when a summary is built, so only listed traces pay for them.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::Delivery;
use crate::model::batch::{RunFields, RunStatus, read_fields};
use crate::model::indexed::string_of;

/// A trace's summary as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    /// Trace id.
    pub id: String,
    /// The root run's name.
    pub name: Option<String>,
    /// The root run's `source_id` (else the first run's that has one).
    pub source_id: Option<String>,
    /// The root run's `session_id` (else the first run's that has one).
    pub session_id: Option<String>,
    /// Earliest `start_time` as received.
    pub started_at: Option<String>,
    /// Latest `end_time` as received; `null` while any run has none.
    pub ended_at: Option<String>,
    /// The root's status; `failed` if the root has none and any run failed.
    pub status: Option<String>,
    /// Number of runs (distinct run ids).
    pub runs: usize,
    /// `dead_lettered` if any run was, else `dropped` if the buffer dropped any, else
    /// `delivered` if every run was, else `pending`.
    pub delivery: Delivery,
}

/// A trace with its runs (JSON bytes, as received, in the order first received).
#[derive(Debug, Clone)]
pub struct TraceDetail {
    /// The summary.
    pub summary: TraceSummary,
    /// Each run's latest JSON bytes.
    pub runs: Vec<Bytes>,
}

/// Sort order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Newest `started_at` first (traces without one last).
    #[default]
    StartedAtDesc,
    /// Oldest `started_at` first (traces without one last).
    StartedAtAsc,
}

/// Filters of a listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Any of these statuses (empty = any).
    pub statuses: Vec<String>,
    /// `started_at >=` (ns).
    pub started_gte: Option<u64>,
    /// `started_at <=` (ns).
    pub started_lte: Option<u64>,
}

impl Filter {
    /// Whether a trace with this status and start passes.
    pub(super) fn matches(&self, status: Option<RunStatus>, started_ns: Option<u64>) -> bool {
        if !self.statuses.is_empty()
            && !status.is_some_and(|st| self.statuses.iter().any(|f| f == st.as_str()))
        {
            return false;
        }
        if self.started_gte.is_some() || self.started_lte.is_some() {
            let Some(ns) = started_ns else { return false };
            if self.started_gte.is_some_and(|g| ns < g) || self.started_lte.is_some_and(|l| ns > l)
            {
                return false;
            }
        }
        true
    }
}

/// The summary fields of a run, read with the ingest validator's early-stopping reader (the
/// runs were validated, or made by the converter, before they reach the index): only the bytes
/// up to the last needed field are scanned, not the run's large input/output/metadata.
pub(super) fn parse_fields(run: &[u8]) -> Option<RunFields<'_>> {
    // No UTF-8 pass over the whole run first: the fields read are checked as they are read.
    read_fields(run).ok()
}

/// Which text field of a run's JSON to read.
#[derive(Clone, Copy)]
pub(super) enum TextField {
    Name,
    SourceId,
    SessionId,
    StartTime,
    EndTime,
}

/// A string field of a run's JSON (`None` if absent, null or not a string).
pub(super) fn text_of(run: &[u8], field: TextField) -> Option<String> {
    let f = parse_fields(run)?;
    let raw = match field {
        TextField::Name => f.name,
        TextField::SourceId => f.source_id,
        TextField::SessionId => f.session_id,
        TextField::StartTime => f.start_time,
        TextField::EndTime => f.end_time,
    };
    string_of(raw).map(Cow::into_owned)
}

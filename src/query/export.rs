//! The body of `GET /v1/traces/export`, streamed: a JSON array with, per matching trace, its
//! summary and its runs (`{...summary, "runs": [run, ...]}`, the runs' JSON as received).
//!
//! Guarantees:
//! - Bounded memory per response, whatever the index holds: the matching traces are selected
//!   once as handles (8 bytes each); then each chunk of about [`EXPORT_CHUNK_BYTES`] is
//!   written from a page of runs taken under the index lock and copied out of it (reference
//!   counts only), so the lock is held briefly per page and a client that reads slowly (or
//!   never) holds neither the lock nor a copy of the index.
//! - The same bytes as serialising every trace's detail at once (checked by the unit tests).
//! - A trace evicted or changed while it is written still leaves valid JSON: it ends with the
//!   runs written so far; runs added after its summary was written are not included (its
//!   `runs` count says how many were there).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::QueryIndex;

/// About how many bytes each chunk of the body holds.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// The trace being written: its handle, the next run to write, its run count as summarised.
struct Writing {
    tid: u64,
    next: usize,
    count: usize,
    wrote_a_run: bool,
}

/// The export body as an iterator of chunks (see the module doc).
pub struct ExportBody {
    index: Arc<QueryIndex>,
    traces: std::vec::IntoIter<u64>,
    writing: Option<Writing>,
    wrote_a_trace: bool,
    done: bool,
    buf: Vec<u8>,
}

impl ExportBody {
    /// The export of the traces behind these handles (from [`QueryIndex::select`]), in order.
    pub(super) fn new(index: Arc<QueryIndex>, traces: Vec<u64>) -> Self {
        Self {
            index,
            traces: traces.into_iter(),
            writing: None,
            wrote_a_trace: false,
            done: false,
            buf: b"[".to_vec(),
        }
    }

    /// Starts the next trace (its summary and `"runs":[`); false when there is none left.
    fn start_trace(&mut self) -> bool {
        for tid in self.traces.by_ref() {
            let Some(summary) = self.index.summary_of(tid) else {
                continue;
            };
            let mark = self.buf.len();
            if self.wrote_a_trace {
                self.buf.push(b',');
            }
            // `{...summary}` becomes `{...summary,"runs":[`.
            if serde_json::to_writer(&mut self.buf, &summary).is_err()
                || self.buf.pop() != Some(b'}')
            {
                self.buf.truncate(mark);
                continue;
            }
            self.buf.extend_from_slice(b",\"runs\":[");
            self.wrote_a_trace = true;
            self.writing = Some(Writing {
                tid,
                next: 0,
                count: summary.runs,
                wrote_a_run: false,
            });
            return true;
        }
        false
    }

    /// Writes the next page of the current trace's runs, or ends the trace.
    fn write_runs(&mut self, w: &mut Writing) -> bool {
        let page = if w.next < w.count {
            self.index.runs_page(w.tid, w.next)
        } else {
            Vec::new()
        };
        if page.is_empty() {
            self.buf.extend_from_slice(b"]}");
            return false;
        }
        for json in page.iter().take(w.count - w.next) {
            // Runs were validated as JSON at ingest; as in the detail view, anything that is not
            // is left out.
            if let Ok(raw) = serde_json::from_slice::<&RawValue>(json) {
                if w.wrote_a_run {
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(raw.get().as_bytes());
                w.wrote_a_run = true;
            }
        }
        w.next = (w.next + page.len()).min(w.count);
        true
    }
}

impl Iterator for ExportBody {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        while self.buf.len() < EXPORT_CHUNK_BYTES {
            match self.writing.take() {
                Some(mut w) => {
                    if self.write_runs(&mut w) {
                        self.writing = Some(w);
                    }
                }
                None => {
                    if !self.start_trace() {
                        self.buf.push(b']');
                        self.done = true;
                        break;
                    }
                }
            }
        }
        let next = if self.done {
            Vec::new()
        } else {
            Vec::with_capacity(EXPORT_CHUNK_BYTES)
        };
        Some(Bytes::from(std::mem::replace(&mut self.buf, next)))
    }
}

//! The dead-letter store: runs the collector will never accept as they are (permanent 4xx,
//! too large for one request, or `forward.max_retries` exhausted), kept on disk for inspection and
//! replay.
//!
//! Owns: the directory (`<buffer.path>/dead-letter`, mode 0700) and its files (mode 0600), named
//! `dead-letter-<UTC time>-<nnn>.jsonl` so that name order is time order, rotated at
//! [`DEFAULT_ROTATE_BYTES`] (or an eighth of the bound, when that is smaller). One JSON object
//! per line, one line per run:
//!
//! ```text
//! {"dead_lettered_at":"2025-01-31T12:00:00.123Z","reason":"rejected","status":422,
//!  "response":"<collector answer, truncated to 64 KiB>","run":<run JSON verbatim>}
//! ```
//!
//! `reason` is `rejected`, `too_large` or `gave_up`; `status` is `null` when there was no answer.
//! Passthrough records also carry `"client_key"` (needed to replay them with their own key); the
//! files are 0600 like the buffer, and [`summarize`] never prints it.
//!
//! Guarantees: [`DeadLetterStore::append`] returns only after the lines are written and
//! fsynced (and, for a new file, its directory entry), so the forwarder may then acknowledge the
//! buffer without losing the run. The files add up to at most `forward.dead_letter_max_bytes`
//! ([`DeadLetterStore::with_max_bytes`]): before a write that would pass the bound, the oldest
//! files are removed (whole files, so up to one rotation size more than needed), and their runs
//! are reported in [`AppendReport::evicted_runs`]; entries that together exceed the whole bound
//! are not written and are reported in [`AppendReport::refused_runs`]. Files already in the
//! directory at start-up count toward the bound. The run bytes are stored verbatim, except that raw CR/LF bytes
//! (which valid JSON only allows as insignificant whitespace) become spaces so that a line is
//! always one run. A run that is not valid JSON is kept as a string in `run_raw`. A write never
//! continues a file after a failed write (a fresh file is started), so a torn line can only be a
//! file's last line, which readers skip and count. [`replay`] removes a file only after all its
//! runs were appended to the buffer (at-least-once: a failure midway may re-append some runs on
//! the next replay).
//!
//! Fails: [`DeadLetterError::Io`] for file-system errors, [`DeadLetterError::Corrupt`] for a
//! damaged line that is not a file's last one (replay stops there and removes nothing of that
//! file), [`DeadLetterError::Append`] when the buffer refuses the replayed runs.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde_json::value::RawValue;

use crate::buffer::Buffer;
use crate::model::envelope;
use crate::model::text::truncate;
use crate::private_fs;

mod offline;
mod store;
#[cfg(test)]
mod tests;

pub use offline::{replay, replay_with, summarize};
pub use store::DeadLetterStore;

/// Why a run was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The collector rejected it permanently (4xx).
    Rejected,
    /// Larger than one request may be.
    TooLarge,
    /// `forward.max_retries` exhausted.
    GaveUp,
}

impl DeadLetterReason {
    /// The `reason` written in dead-letter files and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::GaveUp => "gave_up",
        }
    }
}

impl EncodeLabelValue for DeadLetterReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Size at which a dead-letter file is closed and a new one started.
pub const DEFAULT_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// A bounded store rotates at most at this fraction of its bound, so that evicting the oldest
/// file frees about this share of it, not all of it.
const ROTATIONS_PER_BOUND: u64 = 8;
/// Most bytes of a collector answer kept with a dead-lettered run.
pub const MAX_RESPONSE_CHARS: usize = 64 * 1024;
/// Most runs handed to the buffer in one append during replay.
const REPLAY_CHUNK_RUNS: usize = 500;
/// Most run bytes handed to the buffer in one append during replay.
const REPLAY_CHUNK_BYTES: usize = 8 * 1024 * 1024;
const FILE_PREFIX: &str = "dead-letter-";
const FILE_SUFFIX: &str = ".jsonl";

/// Dead-letter store failures.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// A file-system operation failed.
    #[error("dead-letter I/O error at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line other than a file's last cannot be parsed.
    #[error("dead-letter file {path} is damaged at line {line}; fix or move that line, then retry")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The buffer refused the replayed runs.
    #[error("cannot append the runs of {path} to the buffer: {message}")]
    Append {
        /// The dead-letter file being replayed (kept).
        path: PathBuf,
        /// The buffer's error.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeadLetterError + '_ {
    move |source| DeadLetterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Files replayed and removed.
    pub files: usize,
    /// Runs appended to the buffer.
    pub runs: u64,
    /// Torn last lines skipped (a crash during a dead-letter write; the run was redelivered).
    pub torn_lines: u64,
}

/// What the dead-letter directory holds (for `buffer inspect`). Never includes client keys.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterSummary {
    /// Dead-letter files.
    pub files: usize,
    /// Runs in them.
    pub runs: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Runs by `reason`.
    pub by_reason: BTreeMap<String, u64>,
    /// Runs by collector status (runs without a status are not counted here).
    pub by_status: BTreeMap<u16, u64>,
    /// Lines that could not be parsed (torn or damaged).
    pub damaged_lines: u64,
    /// Time of the oldest dead-lettered run, as written (RFC 3339).
    pub oldest: Option<String>,
    /// Time of the newest dead-lettered run, as written (RFC 3339).
    pub newest: Option<String>,
}

/// What one [`DeadLetterStore::append`] did besides writing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Runs written (and fsynced).
    pub written_runs: u64,
    /// Runs of the oldest files removed to make room under the bound.
    pub evicted_runs: u64,
    /// Runs not written because their lines together are larger than the whole bound.
    pub refused_runs: u64,
    /// Bytes the store's files hold after the append.
    pub store_bytes: u64,
}

/// One run to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Why.
    pub reason: DeadLetterReason,
    /// The collector's status, when it answered.
    pub status: Option<u16>,
    /// The collector's answer body (truncated when written).
    pub response: String,
    /// The run's JSON bytes.
    pub run: Bytes,
    /// The client's key (passthrough records only).
    pub client_key: Option<String>,
}

impl DeadLetter {
    /// One JSON line (with its `\n`) for this run.
    fn to_line(&self, at: &str) -> Vec<u8> {
        let mut line =
            Vec::with_capacity(self.run.len() + self.response.len().min(MAX_RESPONSE_CHARS) + 128);
        line.extend_from_slice(b"{\"dead_lettered_at\":");
        line.extend_from_slice(json_string(at).as_bytes());
        line.extend_from_slice(b",\"reason\":");
        line.extend_from_slice(json_string(self.reason.as_str()).as_bytes());
        line.extend_from_slice(b",\"status\":");
        match self.status {
            Some(s) => line.extend_from_slice(s.to_string().as_bytes()),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"response\":");
        line.extend_from_slice(
            json_string(truncate(&self.response, MAX_RESPONSE_CHARS)).as_bytes(),
        );
        if serde_json::from_slice::<&RawValue>(&self.run).is_ok() {
            line.extend_from_slice(b",\"run\":");
            line.extend(
                self.run
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
        } else {
            line.extend_from_slice(b",\"run\":null,\"run_raw\":");
            line.extend_from_slice(json_string(&String::from_utf8_lossy(&self.run)).as_bytes());
        }
        if let Some(key) = &self.client_key {
            line.extend_from_slice(b",\"client_key\":");
            line.extend_from_slice(json_string(key).as_bytes());
        }
        line.extend_from_slice(b"}\n");
        line
    }
}

/// The dead-letter files in `dir`, oldest first (empty when the directory does not exist).
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, DeadLetterError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX)
            && name.ends_with(FILE_SUFFIX)
            && entry.file_type().map_err(io(dir))?.is_file()
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn sync_dir(dir: &Path) -> Result<(), DeadLetterError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

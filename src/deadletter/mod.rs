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

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[derive(Debug)]
struct Current {
    path: PathBuf,
    file: File,
    size: u64,
}

#[derive(Debug)]
struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    max_bytes: u64,
    current: Option<Current>,
    /// The store's files, oldest first (the current one last), with their sizes; `None` until
    /// the directory was listed (at the first append).
    files: Option<VecDeque<(PathBuf, u64)>>,
    /// Sum of the sizes in `files`.
    total: u64,
}

impl Writer {
    /// Lists the files already in the directory (once), so that they count toward the bound.
    fn scan(&mut self) -> Result<(), DeadLetterError> {
        if self.files.is_some() {
            return Ok(());
        }
        let mut files = VecDeque::new();
        let mut total = 0;
        for path in list_files(&self.dir)? {
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            total += size;
            files.push_back((path, size));
        }
        self.files = Some(files);
        self.total = total;
        Ok(())
    }

    fn append(&mut self, lines: &[u8], runs: u64) -> Result<AppendReport, DeadLetterError> {
        self.scan()?;
        let need = lines.len() as u64;
        let mut report = AppendReport::default();
        if need > self.max_bytes {
            report.refused_runs = runs;
            report.store_bytes = self.total;
            return Ok(report);
        }
        let rotate = self
            .current
            .as_ref()
            .is_some_and(|c| c.size > 0 && c.size + need > self.rotate_bytes);
        if rotate {
            self.current = None;
        }
        report.evicted_runs = self.evict_for(need)?;
        if self.current.is_none() {
            let created = self.create_file()?;
            self.files_mut().push_back((created.path.clone(), 0));
            self.current = Some(created);
        }
        let Some(cur) = self.current.as_mut() else {
            unreachable!("a file was just opened");
        };
        let result = cur
            .file
            .write_all(lines)
            .and_then(|()| cur.file.sync_data());
        match result {
            Ok(()) => {
                cur.size += need;
                self.grow_last(need);
                report.written_runs = runs;
                report.store_bytes = self.total;
                Ok(report)
            }
            Err(source) => {
                let path = cur.path.clone();
                // What a failed write left in the file still counts toward the bound.
                let written = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .unwrap_or(cur.size)
                    .saturating_sub(cur.size);
                self.grow_last(written);
                // Never continue after a failed write: the next append starts a fresh file.
                self.current = None;
                Err(DeadLetterError::Io { path, source })
            }
        }
    }

    /// Removes the oldest files until `need` more bytes fit under the bound; returns the runs
    /// they held.
    fn evict_for(&mut self, need: u64) -> Result<u64, DeadLetterError> {
        let mut evicted = 0;
        let mut removed = false;
        while self.total + need > self.max_bytes {
            let Some((path, size)) = self.files_mut().pop_front() else {
                break;
            };
            if self.current.as_ref().is_some_and(|c| c.path == path) {
                self.current = None;
            }
            let runs = count_lines(&path);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.files_mut().push_front((path.clone(), size));
                    return Err(io(&path)(e));
                }
            }
            self.total -= size;
            evicted += runs;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(evicted)
    }

    fn files_mut(&mut self) -> &mut VecDeque<(PathBuf, u64)> {
        self.files.get_or_insert_with(VecDeque::new)
    }

    /// Adds `bytes` to the newest file's size (the one being written).
    fn grow_last(&mut self, bytes: u64) {
        if let Some(last) = self.files_mut().back_mut() {
            last.1 += bytes;
        }
        self.total += bytes;
    }

    fn create_file(&self) -> Result<Current, DeadLetterError> {
        let stamp: String = humantime::format_rfc3339_millis(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        for n in 0..1000u32 {
            // The counter keeps names unique (and in creation order) within one millisecond.
            let name = format!("{FILE_PREFIX}{stamp}-{n:03}{FILE_SUFFIX}");
            let path = self.dir.join(name);
            match private_fs::file_options()
                .append(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    sync_dir(&self.dir)?;
                    return Ok(Current {
                        path,
                        file,
                        size: 0,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(io(&self.dir)(std::io::Error::other(
            "no free dead-letter file name",
        )))
    }
}

/// Complete lines (runs) in a dead-letter file; 0 when it cannot be read.
fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|text| text.iter().filter(|&&b| b == b'\n').count() as u64)
        .unwrap_or(0)
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

/// Appends dead-lettered runs durably; cheap to clone (clones share the current file).
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

impl DeadLetterStore {
    /// Opens the directory, unbounded (see [`with_max_bytes`](Self::with_max_bytes)): created
    /// 0700, or made 0700 (with its files 0600) if group or others can reach it
    /// ([`private_fs::ensure_private_dir`]). No file is created until the first run.
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        private_fs::ensure_private_dir(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Arc::new(Mutex::new(Writer {
                dir: dir.to_path_buf(),
                rotate_bytes: DEFAULT_ROTATE_BYTES,
                max_bytes: u64::MAX,
                current: None,
                files: None,
                total: 0,
            })),
        })
    }

    /// Changes the rotation size (tests, tools).
    pub fn with_rotate_bytes(self, bytes: u64) -> Self {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rotate_bytes = bytes.max(1);
        self
    }

    /// Bounds the files to `bytes` in all (`forward.dead_letter_max_bytes`), the oldest removed
    /// first; files rotate at an eighth of the bound when that is below the rotation size.
    pub fn with_max_bytes(self, bytes: u64) -> Self {
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.max_bytes = bytes.max(1);
            w.rotate_bytes = w.rotate_bytes.min(w.max_bytes / ROTATIONS_PER_BOUND).max(1);
        }
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and fsyncs the runs (removing the oldest files first if the bound requires it),
    /// blocking the calling thread.
    pub fn append_blocking(&self, entries: &[DeadLetter]) -> Result<AppendReport, DeadLetterError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            return Ok(AppendReport {
                store_bytes: w.total,
                ..AppendReport::default()
            });
        }
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let lines: Vec<u8> = entries.iter().flat_map(|e| e.to_line(&at)).collect();
        w.append(&lines, entries.len() as u64)
    }

    /// [`append_blocking`](Self::append_blocking) on the blocking pool; returns once the runs
    /// are durable.
    pub async fn append(&self, entries: Vec<DeadLetter>) -> Result<AppendReport, DeadLetterError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(&entries))
            .await
            .unwrap_or_else(|e| Err(io(&self.dir)(std::io::Error::other(e.to_string()))))
    }
}

/// One parsed line.
#[derive(Debug, Deserialize)]
struct Line<'a> {
    #[serde(default)]
    dead_lettered_at: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(borrow, default)]
    run: Option<&'a RawValue>,
    #[serde(default)]
    run_raw: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
}

impl Line<'_> {
    fn run_bytes(&self) -> Option<Vec<u8>> {
        match (self.run, &self.run_raw) {
            (Some(raw), _) if raw.get() != "null" => Some(raw.get().as_bytes().to_vec()),
            (_, Some(text)) => Some(text.as_bytes().to_vec()),
            _ => None,
        }
    }
}

/// A file's parsed lines plus the damage found.
struct Parsed<'a> {
    lines: Vec<Line<'a>>,
    torn_last: bool,
    damaged_at: Vec<usize>,
}

fn parse(text: &[u8]) -> Parsed<'_> {
    let mut out = Parsed {
        lines: Vec::new(),
        torn_last: false,
        damaged_at: Vec::new(),
    };
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        if piece.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line<'_>>(piece) {
            Ok(line) => out.lines.push(line),
            // The last piece has no newline after it: a write cut short by a crash.
            Err(_) if i == last => out.torn_last = true,
            Err(_) => out.damaged_at.push(i + 1),
        }
    }
    out
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

/// Counts the dead-letter files, runs and bytes in `dir` (by reason and status). Never reads
/// out or returns client keys. A missing directory is an empty summary.
pub fn summarize(dir: &Path) -> Result<DeadLetterSummary, DeadLetterError> {
    let mut s = DeadLetterSummary::default();
    for path in list_files(dir)? {
        let text = std::fs::read(&path).map_err(io(&path))?;
        s.files += 1;
        s.bytes += text.len() as u64;
        let parsed = parse(&text);
        s.damaged_lines += parsed.damaged_at.len() as u64 + u64::from(parsed.torn_last);
        for line in &parsed.lines {
            s.runs += 1;
            *s.by_reason
                .entry(line.reason.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
            if let Some(status) = line.status {
                *s.by_status.entry(status).or_default() += 1;
            }
            if let Some(at) = &line.dead_lettered_at {
                if s.oldest.as_ref().is_none_or(|o| at < o) {
                    s.oldest = Some(at.clone());
                }
                if s.newest.as_ref().is_none_or(|n| at > n) {
                    s.newest = Some(at.clone());
                }
            }
        }
    }
    Ok(s)
}

/// Re-appends every dead-lettered run in `dir` to `buffer` (client keys restored in the
/// envelope), oldest file first, removing each file once all its runs were appended. Run it while
/// the sidecar is stopped (`dynamiq-sidecar buffer replay-dead-letters`).
pub async fn replay(dir: &Path, buffer: &Buffer) -> Result<ReplayReport, DeadLetterError> {
    replay_with(dir, |payloads| async move {
        buffer
            .append(payloads)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// [`replay`] with any append function (the seam the tests use).
pub async fn replay_with<F, Fut>(dir: &Path, mut append: F) -> Result<ReplayReport, DeadLetterError>
where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut report = ReplayReport::default();
    for path in list_files(dir)? {
        let text = std::fs::read(&path).map_err(io(&path))?;
        let parsed = parse(&text);
        if let Some(&line) = parsed.damaged_at.first() {
            return Err(DeadLetterError::Corrupt { path, line });
        }
        report.torn_lines += u64::from(parsed.torn_last);
        let payloads: Vec<Bytes> = parsed
            .lines
            .iter()
            .filter_map(|l| {
                l.run_bytes()
                    .map(|run| envelope::encode_run(&run, l.client_key.as_deref()))
            })
            .collect();
        let runs = payloads.len() as u64;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for payload in payloads {
            if !chunk.is_empty()
                && (chunk.len() >= REPLAY_CHUNK_RUNS
                    || chunk_bytes + payload.len() > REPLAY_CHUNK_BYTES)
            {
                append(std::mem::take(&mut chunk))
                    .await
                    .map_err(|message| DeadLetterError::Append {
                        path: path.clone(),
                        message,
                    })?;
                chunk_bytes = 0;
            }
            chunk_bytes += payload.len();
            chunk.push(payload);
        }
        if !chunk.is_empty() {
            append(chunk)
                .await
                .map_err(|message| DeadLetterError::Append {
                    path: path.clone(),
                    message,
                })?;
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(dir)?;
        report.files += 1;
        report.runs += runs;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(
        reason: DeadLetterReason,
        status: Option<u16>,
        run: &str,
        key: Option<&str>,
    ) -> DeadLetter {
        DeadLetter {
            reason,
            status,
            response: "bad run".into(),
            run: Bytes::copy_from_slice(run.as_bytes()),
            client_key: key.map(str::to_string),
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        list_files(dir).unwrap()
    }

    #[test]
    fn a_line_holds_the_documented_fields_and_the_run_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(&dir.path().join("dead-letter")).unwrap();
        let run = r#"{"z":1,"a":1.50,"big":123456789012345678901234567890}"#;
        store
            .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), run, None)])
            .unwrap();
        let f = files(store.dir());
        assert_eq!(f.len(), 1);
        let text = std::fs::read_to_string(&f[0]).unwrap();
        assert!(text.ends_with("}\n") && text.lines().count() == 1);
        assert!(text.contains(&format!(r#""run":{run}}}"#)), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["reason"], "rejected");
        assert_eq!(v["status"], 422);
        assert_eq!(v["response"], "bad run");
        assert!(humantime::parse_rfc3339(v["dead_lettered_at"].as_str().unwrap()).is_ok());
        assert!(v.get("client_key").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_0700_and_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(&dir.path().join("dl")).unwrap();
        store
            .append_blocking(&[dl(DeadLetterReason::TooLarge, None, "{}", None)])
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&files(store.dir())[0]), 0o600);
    }

    #[test]
    fn a_multi_line_run_still_takes_one_line_and_a_long_response_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        let mut e = dl(
            DeadLetterReason::Rejected,
            Some(400),
            "{\n  \"a\": 1\r\n}",
            None,
        );
        e.response = "é".repeat(MAX_RESPONSE_CHARS);
        store.append_blocking(&[e]).unwrap();
        let text = std::fs::read_to_string(&files(dir.path())[0]).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["run"]["a"], 1);
        assert!(v["response"].as_str().unwrap().len() <= MAX_RESPONSE_CHARS);
    }

    #[test]
    fn files_rotate_by_size_and_sort_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path())
            .unwrap()
            .with_rotate_bytes(300);
        for i in 0..6 {
            store
                .append_blocking(&[dl(
                    DeadLetterReason::GaveUp,
                    Some(503),
                    &format!(r#"{{"i":{i}}}"#),
                    None,
                )])
                .unwrap();
        }
        let f = files(dir.path());
        assert!(f.len() >= 2, "{f:?}");
        let s = summarize(dir.path()).unwrap();
        assert_eq!(s.runs, 6);
        assert_eq!(s.files, f.len());
        assert_eq!(s.by_reason.get("gave_up"), Some(&6));
        assert_eq!(s.by_status.get(&503), Some(&6));
    }

    #[test]
    fn summarize_counts_runs_by_reason_and_status_and_never_returns_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        store
            .append_blocking(&[
                dl(
                    DeadLetterReason::Rejected,
                    Some(422),
                    "{}",
                    Some("sk-client-secret"),
                ),
                dl(DeadLetterReason::Rejected, Some(400), "[1]", None),
                dl(DeadLetterReason::TooLarge, None, "{}", None),
            ])
            .unwrap();
        let s = summarize(dir.path()).unwrap();
        assert_eq!((s.files, s.runs), (1, 3));
        assert!(s.bytes > 0);
        assert_eq!(s.by_reason.get("rejected"), Some(&2));
        assert_eq!(s.by_reason.get("too_large"), Some(&1));
        assert_eq!(s.by_status.len(), 2);
        assert!(s.oldest.is_some() && s.newest.is_some());
        assert!(!format!("{s:?}").contains("sk-client-secret"));
        assert_eq!(summarize(&dir.path().join("missing")).unwrap().files, 0);
    }

    fn total_bytes(dir: &Path) -> u64 {
        files(dir)
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    }

    fn numbered(i: usize) -> DeadLetter {
        dl(
            DeadLetterReason::Rejected,
            Some(422),
            &format!(r#"{{"id":"run-{i:04}"}}"#),
            None,
        )
    }

    #[test]
    fn the_bound_evicts_the_oldest_files_first_and_reports_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path())
            .unwrap()
            .with_max_bytes(4000);
        let (mut written, mut evicted) = (0, 0);
        for i in 0..200 {
            let r = store.append_blocking(&[numbered(i)]).unwrap();
            assert_eq!((r.written_runs, r.refused_runs), (1, 0));
            written += r.written_runs;
            evicted += r.evicted_runs;
            assert!(r.store_bytes <= 4000, "{r:?}");
            assert_eq!(r.store_bytes, total_bytes(dir.path()));
        }
        assert!(evicted > 0);
        let s = summarize(dir.path()).unwrap();
        assert_eq!(s.runs, written - evicted, "every run is kept or reported");
        // The newest runs are the ones kept, and the bound is used, not left mostly empty.
        let text: String = files(dir.path())
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(text.contains("run-0199") && !text.contains("run-0000"));
        assert!(
            total_bytes(dir.path()) > 3000,
            "{}",
            total_bytes(dir.path())
        );
    }

    #[test]
    fn files_left_from_before_count_toward_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let before = DeadLetterStore::open(dir.path()).unwrap();
        for i in 0..50 {
            before.append_blocking(&[numbered(i)]).unwrap();
        }
        let old_runs = summarize(dir.path()).unwrap().runs;
        let store = DeadLetterStore::open(dir.path())
            .unwrap()
            .with_max_bytes(1500);
        let r = store.append_blocking(&[numbered(50)]).unwrap();
        assert_eq!(r.evicted_runs, old_runs, "the one old file went whole");
        assert!(total_bytes(dir.path()) <= 1500);
        assert_eq!(summarize(dir.path()).unwrap().runs, 1);
    }

    #[test]
    fn entries_larger_than_the_whole_bound_are_refused_and_nothing_is_evicted_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path())
            .unwrap()
            .with_max_bytes(1000);
        store.append_blocking(&[numbered(1)]).unwrap();
        let big = dl(
            DeadLetterReason::TooLarge,
            None,
            &format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000)),
            None,
        );
        let r = store.append_blocking(&[big, numbered(2)]).unwrap();
        assert_eq!((r.written_runs, r.refused_runs, r.evicted_runs), (0, 2, 0));
        assert_eq!(summarize(dir.path()).unwrap().runs, 1);
    }

    #[test]
    fn a_failed_write_is_an_error_and_the_store_works_again_once_the_directory_does() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("dl");
        let store = DeadLetterStore::open(&dir).unwrap().with_max_bytes(10_000);
        // The directory replaced by a file: no file can be created in it (even as root).
        std::fs::remove_dir(&dir).unwrap();
        std::fs::write(&dir, b"").unwrap();
        let e = store.append_blocking(&[numbered(1)]).unwrap_err();
        assert!(matches!(e, DeadLetterError::Io { .. }), "{e}");
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let r = store.append_blocking(&[numbered(2)]).unwrap();
        assert_eq!(r.written_runs, 1);
        assert_eq!(summarize(&dir).unwrap().runs, 1);
    }

    #[tokio::test]
    async fn replay_reappends_every_run_with_its_client_key_then_removes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path())
            .unwrap()
            .with_rotate_bytes(200);
        let runs = [
            r#"{"a":1.50}"#,
            r#"{"b":123456789012345678901234567890}"#,
            "not json",
        ];
        for (i, r) in runs.iter().enumerate() {
            let key = (i == 1).then_some("client-key");
            store
                .append(vec![dl(DeadLetterReason::Rejected, Some(422), r, key)])
                .await
                .unwrap();
        }
        let mut got: Vec<Bytes> = Vec::new();
        let report = replay_with(dir.path(), |p| {
            got.extend(p);
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(report.runs, 3);
        assert!(report.files >= 2);
        assert!(files(dir.path()).is_empty());
        let decoded: Vec<_> = got.iter().map(|p| envelope::decode(p).unwrap()).collect();
        assert_eq!(decoded[0].run.as_ref(), runs[0].as_bytes());
        assert_eq!(decoded[0].client_key, None);
        assert_eq!(decoded[1].run.as_ref(), runs[1].as_bytes());
        assert_eq!(decoded[1].client_key.as_deref(), Some("client-key"));
        assert_eq!(decoded[2].run.as_ref(), b"not json");
    }

    #[tokio::test]
    async fn replay_keeps_a_file_whose_append_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        store
            .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), "{}", None)])
            .unwrap();
        let e = replay_with(dir.path(), |_| async { Err("buffer full".to_string()) })
            .await
            .unwrap_err();
        assert!(matches!(e, DeadLetterError::Append { .. }), "{e}");
        assert_eq!(files(dir.path()).len(), 1);
        assert_eq!(summarize(dir.path()).unwrap().runs, 1);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped_but_damage_in_the_middle_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        store
            .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), "{}", None)])
            .unwrap();
        let path = files(dir.path())[0].clone();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"dead_lettered_at":"2025"#).unwrap();
        drop(f);
        assert_eq!(summarize(dir.path()).unwrap().damaged_lines, 1);
        let mut n = 0;
        let report = replay_with(dir.path(), |p| {
            n += p.len();
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!((report.runs, report.torn_lines, n), (1, 1, 1));

        let bad = dir
            .path()
            .join("dead-letter-20250101T000000.000Z-000.jsonl");
        std::fs::write(&bad, "garbage\n{\"reason\":\"rejected\",\"run\":{}}\n").unwrap();
        let e = replay_with(dir.path(), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert!(matches!(e, DeadLetterError::Corrupt { line: 1, .. }), "{e}");
        assert!(bad.exists());
    }
}

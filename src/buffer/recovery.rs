//! Start-up: lock the directory, scan every segment, repair what a crash or corruption left,
//! read cursors, and work out the next sequence number.
//!
//! Never fails because of buffer contents: a torn tail of the last segment is truncated; a
//! corrupt region anywhere else is counted, copied to `corrupt/` and skipped (an invalid tail
//! of an older segment is copied aside, then truncated); empty older segments are deleted;
//! files that are not segments, cursors or the lock are left alone; a missing or corrupt cursor
//! restarts its consumer from the oldest record. A sequence number above `MAX_SEQ` (in a
//! record header, a cursor, a segment name) is such corruption, so nothing computed from what
//! is on disk can wrap. Only real I/O failures (cannot create or read the directory, permission
//! denied) are errors.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::cursor::{self, CursorError};
use super::io::Fs;
use super::metrics::BufferMetrics;
use super::reader::register_consumer;
use super::record::MAX_SEQ;
use super::scan::{ScanItem, Scanner};
use super::segment::{self, SegmentMeta};
use super::state::State;
use super::writer::ActiveSegment;
use super::{BufferError, RecoveryReport};
use crate::private_fs::{self, create_dir_all, file_options};
use crate::state_dir::{self, CORRUPT_DIR, LOCK_FILE};

/// The directory's entries, classified.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segment ids, ascending.
    pub segments: Vec<u64>,
    /// `(consumer, path)` of cursor files.
    pub cursors: Vec<(String, PathBuf)>,
    /// Leftover temporary cursor files.
    pub tmp_files: Vec<PathBuf>,
    /// Anything else: not the sidecar's (left alone).
    pub ignored: Vec<PathBuf>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lists and classifies `dir`.
pub(crate) fn list(dir: &Path) -> Result<Listing, BufferError> {
    let mut out = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            out.ignored.push(path);
            continue;
        };
        if state_dir::is_reserved(&name) {
            continue;
        }
        if !is_file {
            out.ignored.push(path);
        } else if let Some(id) = segment::parse_file_name(&name) {
            out.segments.push(id);
        } else if cursor::is_tmp_file_name(&name) {
            out.tmp_files.push(path);
        } else if let Some(consumer) = cursor::parse_file_name(&name) {
            out.cursors.push((consumer, path));
        } else {
            out.ignored.push(path);
        }
    }
    out.segments.sort_unstable();
    out.cursors.sort();
    Ok(out)
}

/// Copies `[start, end)` of `file` (segment `seg`) to `corrupt/<seg>-<start>.bin`, once.
pub(crate) fn quarantine(
    dir: &Path,
    seg: u64,
    start: u64,
    end: u64,
    file: &File,
) -> io::Result<()> {
    let qdir = dir.join(CORRUPT_DIR);
    create_dir_all(&qdir)?;
    let path = qdir.join(format!("{seg:020}-{start:020}.bin"));
    let mut out = match file_options().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; usize::try_from((end - start).min(1 << 20)).unwrap_or(1 << 20)];
    let mut at = start;
    while at < end {
        let n = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = file.read_at(&mut buf[..n], at)?;
        if got == 0 {
            break;
        }
        out.write_all(&buf[..got])?;
        at += got as u64;
    }
    out.sync_data()
}

/// What recovery hands to `Buffer::open`.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The held directory lock.
    pub lock: File,
    /// Segments, consumers, corrupt regions seen.
    pub state: State,
    /// The segment to append to.
    pub active: ActiveSegment,
    /// The next sequence number.
    pub next_seq: u64,
    /// What was found.
    pub report: RecoveryReport,
}

/// Takes the exclusive lock on `dir/LOCK`.
fn lock(dir: &Path) -> Result<File, BufferError> {
    let path = dir.join(LOCK_FILE);
    let file = file_options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // `File::try_lock` (flock(LOCK_EX | LOCK_NB) on Unix) is std since Rust 1.89, while the
    // crate still declares rust-version 1.85: building the buffer needs 1.89+ (the toolchain is
    // 1.95). The alternative would be a locking crate for one call.
    #[allow(clippy::incompatible_msrv)]
    let locked = file.try_lock();
    match locked {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(BufferError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(source)) => Err(BufferError::Io { path, source }),
    }
}

/// Counts of one segment scan.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    /// The segment as found (valid records).
    pub meta: Option<SegmentMeta>,
    /// Corrupt regions `(start, end, lost records)`.
    pub corrupt: Vec<(u64, u64, u64)>,
    /// Start of an invalid tail running to the end of the file.
    pub tail: Option<(u64, u64)>,
}

/// Scans segment `id` (whose records must have `seq >= min_seq`); `next_id` is the name of the
/// following segment, used to count records lost in an invalid tail. `on_record` sees every
/// valid record (seq, append time).
pub(crate) fn scan_segment(
    file: &File,
    id: u64,
    min_seq: u64,
    next_id: Option<u64>,
    mut on_record: impl FnMut(u64, u64),
) -> io::Result<SegmentScan> {
    let len = file.metadata()?.len();
    let mut meta = SegmentMeta::new(id);
    let mut out = SegmentScan::default();
    let mut scanner = Scanner::new(file, 0, len, min_seq);
    let mut expected = min_seq;
    let mut pending: Option<(u64, u64)> = None;
    while let Some(item) = scanner.next_item()? {
        match item {
            ScanItem::Record {
                offset,
                len,
                record,
            } => {
                if let Some((s, e)) = pending.take() {
                    out.corrupt
                        .push((s, e, record.seq.saturating_sub(expected).max(1)));
                }
                meta.push(
                    record.seq,
                    record.seq,
                    1,
                    offset,
                    len,
                    record.appended_at_ms,
                );
                on_record(record.seq, record.appended_at_ms);
                expected = record.seq.saturating_add(1);
            }
            ScanItem::Corrupt { start, end } => pending = Some((start, end)),
            ScanItem::Tail { start, end } => {
                out.tail = Some((start, end));
                let lost = next_id.map_or(1, |n| n.saturating_sub(expected)).max(1);
                if next_id.is_some() {
                    out.corrupt.push((start, end, lost));
                }
            }
        }
    }
    meta.len = out.tail.map_or(len, |(start, _)| start);
    out.meta = Some(meta);
    Ok(out)
}

/// Recovers the buffer in `dir` (creating it if missing, making it private) for `consumers`.
pub(crate) fn recover(
    dir: &Path,
    fs: &dyn Fs,
    consumers: &[&str],
    metrics: &BufferMetrics,
) -> Result<Recovered, BufferError> {
    // Created 0700, or tightened to it (with the files in it) if group or others can reach it.
    private_fs::ensure_private_dir(dir).map_err(io_error(dir))?;
    let lock = lock(dir)?;
    let listing = list(dir)?;
    let mut report = RecoveryReport {
        ignored_files: listing.ignored.len() as u64,
        ..RecoveryReport::default()
    };
    for path in &listing.ignored {
        tracing::warn!(path = %path.display(), "unexpected file in the buffer directory left alone");
    }
    for path in &listing.tmp_files {
        if let Err(e) = fs.remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale cursor temp file");
        }
    }

    let mut state = State::default();
    let mut last_seq = 0u64;
    let count = listing.segments.len();
    for (i, &id) in listing.segments.iter().enumerate() {
        let is_last = i + 1 == count;
        let next_id = listing.segments.get(i + 1).copied();
        let path = segment::path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let min_seq = id.max(last_seq.saturating_add(1));
        let scan = scan_segment(&file, id, min_seq, next_id, |_, _| {}).map_err(io_error(&path))?;
        for &(start, end, lost) in &scan.corrupt {
            report.corrupt_records += lost;
            report.corrupt_bytes += end - start;
            metrics.corrupt_records.inc_by(lost);
            state.corrupt_seen.insert((id, start));
            tracing::warn!(
                segment = id,
                offset = start,
                bytes = end - start,
                "corrupt bytes in the buffer skipped"
            );
            if let Err(e) = quarantine(dir, id, start, end, &file) {
                tracing::warn!(error = %e, "cannot copy corrupt buffer bytes aside");
            }
        }
        let Some(meta) = scan.meta else { continue };
        if let Some((start, end)) = scan.tail {
            if is_last {
                report.torn_tail_bytes += end - start;
                tracing::info!(
                    segment = id,
                    bytes = end - start,
                    "truncating a torn tail of the buffer"
                );
            }
            file.set_len(start).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        drop(file);
        if meta.records == 0 && !is_last {
            fs.remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        if meta.records > 0 {
            last_seq = meta.last_seq;
        }
        report.records += meta.records;
        state.total_bytes += meta.len;
        state.total_records += meta.records;
        state.segments.insert(id, meta);
    }

    // Cursors: the listed consumers take part in retention; every cursor file counts for the
    // next sequence number (numbers acknowledged once are never handed out again).
    let mut max_acked = 0u64;
    for (_, path) in &listing.cursors {
        if let Ok(Some(acked)) = cursor::read_path(path) {
            max_acked = max_acked.max(acked);
        }
    }
    for &consumer in consumers {
        let persisted = match cursor::read(dir, consumer) {
            Ok(acked) => acked,
            Err(CursorError::Corrupt { path, reason }) => {
                tracing::warn!(path = %path.display(), reason, "corrupt buffer cursor; consumer restarts from the oldest record");
                report.cursors_reset += 1;
                None
            }
            Err(CursorError::Io { path, source }) => return Err(BufferError::Io { path, source }),
        };
        register_consumer(&mut state, consumer, persisted);
    }

    // Every input is at most MAX_SEQ (larger values were treated as corrupt), so this is at most
    // MAX_SEQ + 1: then the writer refuses appends (`SequenceExhausted`) rather than wrap.
    let last_segment = state.segments.keys().next_back().copied();
    let next_seq = last_seq
        .saturating_add(1)
        .max(max_acked.saturating_add(1))
        .max(last_segment.unwrap_or(1));
    state.last_seq = next_seq.saturating_sub(1);

    let active = match last_segment {
        Some(id) => {
            let path = segment::path(dir, id);
            let file = fs.open_append(&path).map_err(io_error(&path))?;
            let len = state.segments.get(&id).map_or(0, |m| m.len);
            ActiveSegment { id, file, len }
        }
        None => {
            // A segment name is a sequence number too (never above MAX_SEQ).
            let id = next_seq.min(MAX_SEQ);
            let path = segment::path(dir, id);
            let file = fs.open_append(&path).map_err(io_error(&path))?;
            fs.sync_dir(dir).map_err(io_error(dir))?;
            state.segments.insert(id, SegmentMeta::new(id));
            ActiveSegment { id, file, len: 0 }
        }
    };
    report.segments = state.segments.len();
    Ok(Recovered {
        lock,
        state,
        active,
        next_seq,
        report,
    })
}

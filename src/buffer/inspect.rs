//! Read-only access for CLI tools: [`inspect`] summarises a buffer directory, [`export`]
//! iterates over the records not yet acknowledged. Neither takes the lock nor changes anything,
//! so both work while the sidecar runs (the tail of the active segment may then be mid-write and
//! show up as a torn tail).

use std::collections::VecDeque;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::cursor;
use super::recovery::{list, scan_segment};
use super::scan::{ScanItem, Scanner};
use super::segment;
use super::{BufferError, Record};

/// What [`inspect`] found in a buffer directory.
#[derive(Debug, Clone, Default)]
pub struct InspectReport {
    /// The directory.
    pub path: PathBuf,
    /// Segments, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Valid records in all segments.
    pub records: u64,
    /// Records lost to corruption (at least one per corrupt region).
    pub corrupt_records: u64,
    /// Bytes of corrupt regions.
    pub corrupt_bytes: u64,
    /// Bytes of an invalid tail of the last segment (torn write, or a write in progress).
    pub torn_tail_bytes: u64,
    /// Lowest and highest sequence numbers present.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// Append time (ms since the epoch) of the oldest record present.
    pub oldest_record_ms: Option<u64>,
    /// Append time of the newest record present.
    pub newest_record_ms: Option<u64>,
    /// One entry per cursor file.
    pub consumers: Vec<ConsumerReport>,
    /// Files that are neither segments, cursors nor the lock.
    pub ignored_files: Vec<PathBuf>,
}

/// One segment in an [`InspectReport`].
#[derive(Debug, Clone, Default)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its name (the next sequence number when it was created).
    pub id: u64,
    /// File size.
    pub bytes: u64,
    /// Valid records.
    pub records: u64,
    /// First valid sequence number.
    pub first_seq: Option<u64>,
    /// Last valid sequence number.
    pub last_seq: Option<u64>,
    /// Corrupt regions (each may hide several records).
    pub corrupt_regions: u64,
    /// Bytes of corrupt regions, invalid tail included.
    pub corrupt_bytes: u64,
}

/// One consumer cursor in an [`InspectReport`].
#[derive(Debug, Clone, Default)]
pub struct ConsumerReport {
    /// Consumer name.
    pub name: String,
    /// Acknowledged through this sequence number; `None` if the cursor is unreadable.
    pub acked_through: Option<u64>,
    /// Valid records past the acknowledgement (all of them if the cursor is unreadable).
    pub pending_records: u64,
    /// Why the cursor is unreadable.
    pub error: Option<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Summarises the buffer in `path` without locking or modifying it.
///
/// Errors: [`BufferError::Io`] if the directory or a segment cannot be read.
pub fn inspect(path: &Path) -> Result<InspectReport, BufferError> {
    let listing = list(path)?;
    let mut report = InspectReport {
        path: path.to_path_buf(),
        ignored_files: listing.ignored.clone(),
        ..InspectReport::default()
    };
    for (name, cursor_path) in &listing.cursors {
        let (acked_through, error) = match cursor::read_path(cursor_path) {
            Ok(Some(a)) => (Some(a), None),
            Ok(None) => (None, Some("cursor file disappeared".to_owned())),
            Err(e) => (None, Some(e.to_string())),
        };
        report.consumers.push(ConsumerReport {
            name: name.clone(),
            acked_through,
            pending_records: 0,
            error,
        });
    }
    let mut last_seq = 0u64;
    let count = listing.segments.len();
    for (i, &id) in listing.segments.iter().enumerate() {
        let seg_path = segment::path(path, id);
        let file = match File::open(&seg_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&seg_path)(e)),
        };
        let bytes = file.metadata().map_err(io_err(&seg_path))?.len();
        let next_id = listing.segments.get(i + 1).copied();
        let consumers = &mut report.consumers;
        let (mut oldest, mut newest) = (report.oldest_record_ms, report.newest_record_ms);
        let scan = scan_segment(
            &file,
            id,
            id.max(last_seq.saturating_add(1)),
            next_id,
            |seq, ts| {
                for c in consumers.iter_mut() {
                    if seq > c.acked_through.unwrap_or(0) {
                        c.pending_records += 1;
                    }
                }
                oldest = Some(oldest.map_or(ts, |o: u64| o.min(ts)));
                newest = Some(newest.map_or(ts, |n: u64| n.max(ts)));
            },
        )
        .map_err(io_err(&seg_path))?;
        report.oldest_record_ms = oldest;
        report.newest_record_ms = newest;
        let mut seg = SegmentReport {
            path: seg_path,
            id,
            bytes,
            ..SegmentReport::default()
        };
        if let Some(meta) = &scan.meta {
            seg.records = meta.records;
            seg.first_seq = meta.first_seq;
            if meta.records > 0 {
                seg.last_seq = Some(meta.last_seq);
                last_seq = meta.last_seq;
                report
                    .first_seq
                    .get_or_insert(meta.first_seq.unwrap_or(meta.last_seq));
                report.last_seq = Some(meta.last_seq);
            }
        }
        for &(start, end, lost) in &scan.corrupt {
            seg.corrupt_regions += 1;
            seg.corrupt_bytes += end - start;
            report.corrupt_records += lost;
            report.corrupt_bytes += end - start;
        }
        if let (Some((start, end)), true) = (scan.tail, i + 1 == count) {
            seg.corrupt_bytes += end - start;
            report.torn_tail_bytes += end - start;
        }
        report.bytes += bytes;
        report.records += seg.records;
        report.segments.push(seg);
    }
    Ok(report)
}

/// Iterator over the records not yet acknowledged, oldest first (see [`export`]). Corrupt
/// regions are skipped silently ([`inspect`] counts them).
#[derive(Debug)]
pub struct Export {
    dir: PathBuf,
    segments: VecDeque<u64>,
    scanner: Option<(u64, Scanner<File>)>,
    after_seq: u64,
    min_seq: u64,
}

/// The records of the buffer in `path` not yet acknowledged by `consumer` (by every consumer
/// with a cursor file, if `None`; a consumer without a readable cursor has acknowledged
/// nothing). Reads without locking or modifying anything.
///
/// Errors: [`BufferError::Io`] if the directory or the consumer's cursor cannot be read; while
/// iterating, if a segment cannot be read.
pub fn export(path: &Path, consumer: Option<&str>) -> Result<Export, BufferError> {
    let listing = list(path)?;
    let after_seq = match consumer {
        Some(c) => match cursor::read(path, c) {
            Ok(acked) => acked.unwrap_or(0),
            Err(cursor::CursorError::Corrupt { .. }) => 0,
            Err(cursor::CursorError::Io { path, source }) => {
                return Err(BufferError::Io { path, source });
            }
        },
        None => listing
            .cursors
            .iter()
            .map(|(_, p)| cursor::read_path(p).ok().flatten().unwrap_or(0))
            .min()
            .unwrap_or(0),
    };
    Ok(Export {
        dir: path.to_path_buf(),
        segments: listing.segments.into(),
        scanner: None,
        after_seq,
        min_seq: 0,
    })
}

impl Iterator for Export {
    type Item = Result<Record, BufferError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((id, scanner)) = self.scanner.as_mut() else {
                let id = self.segments.pop_front()?;
                let path = segment::path(&self.dir, id);
                let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len())));
                match opened {
                    Ok((file, len)) => {
                        let min_seq = id.max(self.min_seq);
                        self.scanner = Some((id, Scanner::new(file, 0, len, min_seq)));
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Some(Err(io_err(&path)(e))),
                }
                continue;
            };
            match scanner.next_item() {
                Ok(Some(ScanItem::Record { record, .. })) => {
                    self.min_seq = scanner.min_seq();
                    if record.seq > self.after_seq {
                        return Some(Ok(record));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => self.scanner = None,
                Err(e) => {
                    let path = segment::path(&self.dir, *id);
                    self.scanner = None;
                    return Some(Err(io_err(&path)(e)));
                }
            }
        }
    }
}

//! Sequential, verifying scan of a byte range of a segment file: yields valid records, corrupt
//! regions followed by a valid record, and an invalid tail. Used by recovery, readers, `inspect`
//! and `export`, so all of them agree on what is a record.
//!
//! A record is valid when its header decodes (magic and header checksum), its payload fits in
//! the range and matches its checksum, and its `seq` is at least the scan's lower bound (which
//! rises past every record yielded, so sequence numbers are strictly increasing). After an
//! invalid byte the scanner looks for the next [`MAGIC`](super::record::MAGIC) that starts a
//! valid record (re-synchronisation).

use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};

use bytes::Bytes;

use super::Record;
use super::record::{HEADER_LEN, HEADER_LEN_U64, Header, find_magic};

/// Bytes read from the file at a time (more when a single record is larger).
pub(crate) const READ_WINDOW: usize = 1 << 20;

/// One step of a scan.
#[derive(Debug)]
pub(crate) enum ScanItem {
    /// A valid record at `offset`, `len` bytes long (header included).
    Record {
        /// Offset of the record header.
        offset: u64,
        /// Length of the whole record.
        len: u64,
        /// The record; the payload shares the read window.
        record: Record,
    },
    /// Invalid bytes `[start, end)`, followed by a valid record at `end`.
    Corrupt {
        /// First invalid byte.
        start: u64,
        /// Offset of the next valid record.
        end: u64,
    },
    /// Invalid bytes `[start, end)` running to the end of the scanned range.
    Tail {
        /// First invalid byte.
        start: u64,
        /// End of the scanned range (or of the file, if it was shorter).
        end: u64,
    },
}

/// Scans `[start, end)` of a file. `F` is `File` or `&File`; the handle must not be read by
/// anyone else while the scan runs (reads go through its file offset).
#[derive(Debug)]
pub(crate) struct Scanner<F> {
    file: F,
    pos: u64,
    end: u64,
    min_seq: u64,
    win: Bytes,
    win_start: u64,
    window: usize,
}

impl<F: Borrow<File>> Scanner<F> {
    /// A scan of `[start, end)` accepting records with `seq >= min_seq`.
    pub fn new(file: F, start: u64, end: u64, min_seq: u64) -> Self {
        Self {
            file,
            pos: start,
            end: end.max(start),
            min_seq,
            win: Bytes::new(),
            win_start: start,
            window: READ_WINDOW,
        }
    }

    /// Uses a different read window (tests use tiny ones to exercise window boundaries).
    #[cfg(test)]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Offset of the next byte to examine.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Lowest `seq` the next record may have.
    pub fn min_seq(&self) -> u64 {
        self.min_seq
    }

    /// Makes `[at, at + need)` (clamped to the range) available in the window and returns how
    /// many bytes from `at` are available. A file shorter than the range shrinks the range.
    fn fill(&mut self, at: u64, need: usize) -> io::Result<usize> {
        let want_end = self.end.min(at.saturating_add(need as u64));
        let win_end = self.win_start + self.win.len() as u64;
        if at >= self.win_start && want_end <= win_end {
            return Ok(usize::try_from(win_end.min(self.end) - at).unwrap_or(usize::MAX));
        }
        let len = (need.max(self.window) as u64).min(self.end.saturating_sub(at));
        let len = usize::try_from(len).map_err(|_| io::Error::from(ErrorKind::OutOfMemory))?;
        // Read into uninitialised capacity (`read_to_end` on a `File` does not zero it first:
        // zeroing a fresh 1 MiB window cost as much as the read itself). This moves the
        // handle's offset, which is why a scanner's handle is its own.
        let mut buf = Vec::with_capacity(len);
        let mut file = self.file.borrow();
        file.seek(SeekFrom::Start(at))?;
        file.take(len as u64).read_to_end(&mut buf)?;
        let got = buf.len();
        if got < len {
            self.end = at + got as u64;
        }
        self.win = Bytes::from(buf);
        self.win_start = at;
        Ok(got)
    }

    fn window_slice(&self, at: u64, len: usize) -> &[u8] {
        let from = usize::try_from(at - self.win_start).unwrap_or(usize::MAX);
        self.win.get(from..from.saturating_add(len)).unwrap_or(&[])
    }

    /// The valid record starting at `at`, if any.
    fn record_at(&mut self, at: u64) -> io::Result<Option<(Header, Bytes)>> {
        if self.end.saturating_sub(at) < HEADER_LEN_U64 || self.fill(at, HEADER_LEN)? < HEADER_LEN {
            return Ok(None);
        }
        let Ok(header) = Header::decode(self.window_slice(at, HEADER_LEN)) else {
            return Ok(None);
        };
        let total = header.record_len();
        if header.seq < self.min_seq || at.saturating_add(total) > self.end {
            return Ok(None);
        }
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if self.fill(at, total)? < total {
            return Ok(None);
        }
        let from = usize::try_from(at - self.win_start).unwrap_or(usize::MAX);
        let payload = self.win.slice(from + HEADER_LEN..from + total);
        if header.verify_payload(&payload).is_err() {
            return Ok(None);
        }
        Ok(Some((header, payload)))
    }

    /// Offset of the next valid record strictly after `after`, if any.
    fn resync(&mut self, after: u64) -> io::Result<Option<u64>> {
        let mut at = after + 1;
        loop {
            if self.end.saturating_sub(at) < HEADER_LEN_U64 {
                return Ok(None);
            }
            let avail = self.fill(at, self.window.max(HEADER_LEN))?;
            if avail < HEADER_LEN {
                return Ok(None);
            }
            match find_magic(self.window_slice(at, avail)) {
                Some(i) => {
                    let candidate = at + i as u64;
                    if self.record_at(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    at = candidate + 1;
                }
                // Keep the last 3 bytes: a magic may straddle the window boundary.
                None => at += (avail - 3) as u64,
            }
        }
    }

    /// The next item, or `None` at the end of the range.
    pub fn next_item(&mut self) -> io::Result<Option<ScanItem>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        if let Some((header, payload)) = self.record_at(at)? {
            let len = header.record_len();
            self.pos = at + len;
            self.min_seq = header.seq.saturating_add(1);
            return Ok(Some(ScanItem::Record {
                offset: at,
                len,
                record: Record {
                    seq: header.seq,
                    appended_at_ms: header.appended_at_ms,
                    payload,
                },
            }));
        }
        match self.resync(at)? {
            Some(next) => {
                self.pos = next;
                Ok(Some(ScanItem::Corrupt {
                    start: at,
                    end: next,
                }))
            }
            None => {
                let end = self.end.max(at);
                self.pos = end;
                Ok(Some(ScanItem::Tail { start: at, end }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::record::encode_record;
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = f.reopen().unwrap();
        (f, file)
    }

    fn items(file: &File, len: u64, window: usize) -> Vec<String> {
        let mut s = Scanner::new(file, 0, len, 0).with_window(window);
        let mut out = vec![];
        while let Some(item) = s.next_item().unwrap() {
            out.push(match item {
                ScanItem::Record { offset, record, .. } => format!("r{}@{offset}", record.seq),
                ScanItem::Corrupt { start, end } => format!("c{start}-{end}"),
                ScanItem::Tail { start, end } => format!("t{start}-{end}"),
            });
        }
        out
    }

    fn three_records() -> Vec<u8> {
        let mut b = encode_record(1, 0, b"one");
        b.extend(encode_record(2, 0, &[7u8; 100]));
        b.extend(encode_record(3, 0, b"three"));
        b
    }

    #[test]
    fn clean_records_are_yielded_in_order_whatever_the_window() {
        let bytes = three_records();
        let (_t, f) = file_with(&bytes);
        for window in [1, 7, 32, 64, 1 << 20] {
            assert_eq!(
                items(&f, bytes.len() as u64, window),
                ["r1@0", "r2@35", "r3@167"]
            );
        }
    }

    #[test]
    fn a_flipped_byte_mid_file_is_skipped_and_later_records_survive() {
        let mut bytes = three_records();
        bytes[35 + 40] ^= 0xFF; // inside record 2's payload
        let (_t, f) = file_with(&bytes);
        for window in [5, 64, 1 << 20] {
            assert_eq!(
                items(&f, bytes.len() as u64, window),
                ["r1@0", "c35-167", "r3@167"]
            );
        }
    }

    #[test]
    fn garbage_at_the_end_is_a_tail() {
        let mut bytes = three_records();
        let full = bytes.len();
        bytes.extend_from_slice(&encode_record(4, 0, b"torn")[..20]);
        let (_t, f) = file_with(&bytes);
        assert_eq!(
            items(&f, bytes.len() as u64, 1 << 20),
            vec![
                "r1@0".to_string(),
                "r2@35".into(),
                "r3@167".into(),
                format!("t{full}-{}", full + 20)
            ]
        );
    }

    #[test]
    fn records_with_a_sequence_number_going_backwards_are_invalid() {
        let mut bytes = encode_record(5, 0, b"a");
        bytes.extend(encode_record(5, 0, b"b"));
        bytes.extend(encode_record(6, 0, b"c"));
        let (_t, f) = file_with(&bytes);
        assert_eq!(
            items(&f, bytes.len() as u64, 1 << 20),
            ["r5@0", "c33-66", "r6@66"]
        );
    }

    #[test]
    fn a_range_longer_than_the_file_ends_at_the_file() {
        let bytes = three_records();
        let (_t, f) = file_with(&bytes);
        assert_eq!(items(&f, 10_000, 1 << 20), ["r1@0", "r2@35", "r3@167"]);
    }

    #[test]
    fn pure_garbage_is_one_tail() {
        let bytes = vec![0xD9u8; 5000];
        let (_t, f) = file_with(&bytes);
        assert_eq!(items(&f, 5000, 64), ["t0-5000"]);
    }
}

//! Segment files: naming, and the in-memory description of each one (durable length, record
//! count, sequence range, and a small sparse index from sequence number to offset and append
//! time).
//!
//! A segment is named after the `seq` that was next when it was created, zero-padded to 20
//! digits (`00000000000000000001.seg`), so lexical order is sequence order, and every record in a
//! segment has `seq >= ` its name. WARNING: on-disk naming; never change the format.

use std::path::{Path, PathBuf};

use super::record::MAX_SEQ;

/// Suffix of segment files.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
const NAME_DIGITS: usize = 20;

/// Most entries kept in one segment's sparse index before it is thinned.
const INDEX_MAX_ENTRIES: usize = 512;
/// Initial spacing of index entries, in bytes and in milliseconds.
const INDEX_BYTE_GAP: u64 = 1 << 20;
const INDEX_MS_GAP: u64 = 1000;

/// File name of the segment whose name is `id`.
pub(crate) fn file_name(id: u64) -> String {
    format!("{id:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// Path of the segment `id` in `dir`.
pub(crate) fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// The id of a segment file name, or `None` if `name` is not one (exactly 20 digits + `.seg`,
/// at most [`MAX_SEQ`]: a larger name could hold no valid record, and is left alone like any
/// unexpected file).
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id <= MAX_SEQ)
}

/// One sparse index entry: the record `seq` starts at `offset` and was appended at `ts_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Sequence number of a record.
    pub seq: u64,
    /// Offset of its header in the segment.
    pub offset: u64,
    /// Its append time (ms since the epoch).
    pub ts_ms: u64,
}

/// A bounded sparse index: an entry at least every `byte_gap` bytes or `ms_gap` milliseconds of
/// appends; when full, every other entry is dropped and both gaps double. Used to position a
/// reader near a sequence number without scanning the whole segment, and to estimate the append
/// time of the oldest unacknowledged record (by at most one gap too old).
#[derive(Debug, Clone)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
    byte_gap: u64,
    ms_gap: u64,
}

impl Default for SparseIndex {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            byte_gap: INDEX_BYTE_GAP,
            ms_gap: INDEX_MS_GAP,
        }
    }
}

impl SparseIndex {
    /// Notes that record `seq` starts at `offset` with time `ts_ms` (records must be noted in
    /// order; most are skipped).
    pub fn note(&mut self, seq: u64, offset: u64, ts_ms: u64) {
        if let Some(last) = self.entries.last()
            && (seq <= last.seq
                || (offset - last.offset.min(offset) < self.byte_gap
                    && ts_ms.saturating_sub(last.ts_ms) < self.ms_gap))
        {
            return;
        }
        self.entries.push(IndexEntry { seq, offset, ts_ms });
        if self.entries.len() > INDEX_MAX_ENTRIES {
            let mut i = 0;
            self.entries.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.byte_gap = self.byte_gap.saturating_mul(2);
            self.ms_gap = self.ms_gap.saturating_mul(2);
        }
    }

    /// The last entry with `entry.seq <= seq`.
    pub fn floor(&self, seq: u64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.seq <= seq);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The first entry.
    pub fn first(&self) -> Option<IndexEntry> {
        self.entries.first().copied()
    }

    /// Number of entries (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What the buffer knows about one segment. `len` is the durable (published) length: readers
/// never read past it, even if the file is longer (bytes being written or not yet fsynced).
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// Name (first sequence number at creation).
    pub id: u64,
    /// Durable length in bytes.
    pub len: u64,
    /// Valid records in `[0, len)`.
    pub records: u64,
    /// `seq` of the first valid record.
    pub first_seq: Option<u64>,
    /// `seq` of the last valid record (meaningless when `records == 0`).
    pub last_seq: u64,
    /// Sparse index.
    pub index: SparseIndex,
}

impl SegmentMeta {
    /// An empty segment.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            len: 0,
            records: 0,
            first_seq: None,
            last_seq: 0,
            index: SparseIndex::default(),
        }
    }

    /// Records that `count` valid records `first..=last` occupy `[offset, offset + bytes)`
    /// (`offset >= len`; bytes in between are a corrupt region) and were appended at `ts_ms`.
    pub fn push(&mut self, first: u64, last: u64, count: u64, offset: u64, bytes: u64, ts_ms: u64) {
        self.index.note(first, offset, ts_ms);
        self.first_seq.get_or_insert(first);
        self.last_seq = last;
        self.records = self.records.saturating_add(count);
        self.len = self.len.max(offset.saturating_add(bytes));
    }

    /// Records with `seq > acked` (exact unless a corrupt region hides a gap in the middle).
    pub fn unacked(&self, acked: u64) -> u64 {
        match self.first_seq {
            None => 0,
            Some(_) if self.last_seq <= acked => 0,
            Some(first) if first > acked => self.records,
            Some(_) => self.records.min(self.last_seq - acked),
        }
    }

    /// Best estimate (never too recent) of the append time of the first record with
    /// `seq > acked`, if the segment holds one.
    pub fn first_unacked_ts(&self, acked: u64) -> Option<u64> {
        if self.unacked(acked) == 0 {
            return None;
        }
        self.index
            .floor(acked.saturating_add(1))
            .or_else(|| self.index.first())
            .map(|e| e.ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_in_sequence_order() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name(&file_name(MAX_SEQ)), Some(MAX_SEQ));
        assert_eq!(parse_file_name(&file_name(MAX_SEQ + 1)), None);
        assert_eq!(parse_file_name(&file_name(u64::MAX)), None);
        assert!(file_name(9) < file_name(10));
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.seg.tmp",
            "LOCK",
            "00000000000000000001",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(
            parse_file_name("99999999999999999999.seg"),
            None,
            "overflows u64"
        );
    }

    #[test]
    fn the_sparse_index_stays_bounded_and_finds_the_floor() {
        let mut idx = SparseIndex::default();
        for seq in 1..=100_000u64 {
            idx.note(seq, seq * 100_000, seq * 10);
        }
        assert!(idx.len() <= INDEX_MAX_ENTRIES);
        let e = idx.floor(50_000).unwrap();
        assert!(e.seq <= 50_000);
        assert_eq!(idx.floor(0), None);
        assert_eq!(idx.first().unwrap().seq, 1);
    }

    #[test]
    fn unacked_counts_follow_the_acknowledged_sequence() {
        let mut m = SegmentMeta::new(10);
        m.push(10, 19, 10, 0, 1000, 5);
        m.push(20, 29, 10, 1000, 1000, 2000);
        assert_eq!(m.len, 2000);
        assert_eq!(m.unacked(0), 20);
        assert_eq!(m.unacked(14), 15);
        assert_eq!(m.unacked(29), 0);
        assert_eq!(m.first_unacked_ts(0), Some(5));
        assert_eq!(m.first_unacked_ts(25), Some(2000));
        assert_eq!(m.first_unacked_ts(29), None);
        assert_eq!(SegmentMeta::new(3).unacked(0), 0);
    }
}

//! Consumers' readers: batches of published records, in sequence order, with an in-memory read
//! position separate from the persisted acknowledgement.
//!
//! File reads run on tokio's blocking pool (`spawn_blocking`); waiting for new records uses a
//! `watch` channel the writer bumps after each publish (no polling). While a batch lingers for
//! more, a publish triggers a read only when enough is published to fill the batch, else the
//! read waits for the deadline: a few reads per batch, not one per publish. `next_batch` is
//! cancel-safe: the read position only moves when a batch is returned.
//!
//! Records found corrupt at read time are skipped, counted and copied aside (once per region,
//! shared with recovery). Sequence numbers a reader can prove it will never see (corrupt
//! records, records of dropped segments, numbers skipped after a failed write) are remembered
//! as gaps, so acknowledging the record before a gap also acknowledges the gap: cursors never
//! get stuck behind a record that cannot be read.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::housekeeper::HkMsg;
use super::scan::{ScanItem, Scanner};
use super::segment;
use super::state::{ConsumerState, Shared, State};
use super::{BufferError, Record};

/// Where a reader is.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Segment being read; `None` until positioned (then found from `after_seq`).
    seg: Option<u64>,
    /// Offset of the next record in `seg`.
    offset: u64,
    /// Every record with `seq <= after_seq` was delivered (or acknowledged before this reader
    /// started) and is skipped.
    after_seq: u64,
}

/// Reads one consumer's records. Obtained from [`Buffer::reader`](super::Buffer::reader).
///
/// One reader per consumer is intended: two readers of the same consumer each read from the
/// consumer's acknowledgement on and share it (acknowledgements only move forward).
pub struct Reader {
    shared: Arc<Shared>,
    consumer: String,
    pos: Position,
    file: Option<(u64, File)>,
    updates: watch::Receiver<u64>,
    /// Inclusive ranges of sequence numbers that will never be delivered, ascending.
    gaps: VecDeque<(u64, u64)>,
    /// A replay reader ([`Buffer::replay_reader`](super::Buffer::replay_reader)): its
    /// acknowledgements are ignored.
    read_only: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("consumer", &self.consumer)
            .field("segment", &self.pos.seg)
            .field("offset", &self.pos.offset)
            .field("delivered_through", &self.pos.after_seq)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, consumer: String, acked: u64) -> Self {
        let updates = shared.published.subscribe();
        Self {
            shared,
            consumer,
            pos: Position {
                seg: None,
                offset: 0,
                after_seq: acked,
            },
            file: None,
            updates,
            gaps: VecDeque::new(),
            read_only: false,
        }
    }

    /// A reader that reads the records after `after_seq` for no consumer: it does not hold
    /// back deletion (records deleted meanwhile are skipped) and [`ack`](Self::ack) does
    /// nothing.
    pub(crate) fn read_only(shared: Arc<Shared>, after_seq: u64) -> Self {
        let mut r = Self::new(shared, String::from("(replay)"), after_seq);
        r.read_only = true;
        r
    }

    /// The consumer this reader reads for.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Waits until at least one record past this reader's position is readable, then collects
    /// up to `max_records` records and `max_bytes` payload bytes, waiting up to `linger` after
    /// the first record for more while the batch is not full. Always returns at least one
    /// record, even one larger than `max_bytes` (`max_records = 0` counts as 1). Moves the
    /// in-memory read position (not the
    /// acknowledgement): the caller retries a failed batch itself and later calls [`ack`].
    ///
    /// Errors: [`BufferError::Closed`] once the buffer is closed (nothing is lost: unread and
    /// unacknowledged records stay on disk); [`BufferError::Io`] if a segment cannot be read
    /// (retrying may help). Cancel-safe.
    ///
    /// [`ack`]: Reader::ack
    pub async fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> Result<Vec<Record>, BufferError> {
        let max_records = max_records.max(1);
        let mut batch: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        let mut pos = self.pos;
        let mut gaps = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut last_round = false;
        loop {
            if self.shared.closed.load(Ordering::Relaxed) {
                if batch.is_empty() {
                    return Err(BufferError::Closed);
                }
                break;
            }
            self.updates.borrow_and_update();
            let mut job = ReadJob {
                shared: Arc::clone(&self.shared),
                pos,
                file: self.file.take(),
                max_records: max_records - batch.len(),
                max_bytes: max_bytes.saturating_sub(bytes),
                take_oversized: batch.is_empty(),
                records: Vec::new(),
                gaps: Vec::new(),
            };
            let mut job = tokio::task::spawn_blocking(move || {
                let r = job.read();
                (job, r)
            })
            .await
            .map_err(|e| BufferError::Io {
                path: self.shared.dir.clone(),
                source: io::Error::other(format!("buffer read task failed: {e}")),
            })?;
            self.file = job.0.file.take();
            let full = job.1?;
            pos = job.0.pos;
            gaps.append(&mut job.0.gaps);
            for r in job.0.records {
                bytes += r.payload.len();
                batch.push(r);
            }
            if full || batch.len() >= max_records || bytes >= max_bytes {
                break;
            }
            if batch.is_empty() {
                // Nothing yet: wait for a publish (the sender lives as long as `shared`). The
                // segment handle is released first: an open handle keeps a deleted segment's
                // space allocated, and `drop_oldest` on a full disk must really free it.
                self.file = None;
                let _ = self.updates.changed().await;
                continue;
            }
            if last_round {
                break;
            }
            // Linger: wait for publishes without reading each one (a read is a trip to the
            // blocking pool); read again once enough is published to fill the batch, or at
            // the deadline if anything was published meanwhile.
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + linger);
            let wanted = (max_records - batch.len(), max_bytes.saturating_sub(bytes));
            let mut published = false;
            loop {
                match tokio::time::timeout_at(deadline, self.updates.changed()).await {
                    Ok(Ok(())) => {
                        published = true;
                        if self.shared.closed.load(Ordering::Relaxed)
                            || self.enough_published(pos, wanted)
                        {
                            break;
                        }
                    }
                    // The sender is gone: the outer loop sees the buffer closed.
                    Ok(Err(_)) => {
                        published = true;
                        break;
                    }
                    Err(_) => {
                        last_round = true;
                        break;
                    }
                }
            }
            if !published {
                break;
            }
        }
        self.pos = pos;
        for g in gaps {
            self.push_gap(g);
        }
        // Not kept between calls: the caller may hold this batch for a long time (retrying
        // through an outage), and a held handle would pin the segment's disk space after
        // `drop_oldest` deleted it (the full-disk case). Reopening costs one open() per batch.
        self.file = None;
        Ok(batch)
    }

    /// Whether what is published past `pos` can fill `(records, bytes)`: an upper bound
    /// (sequence numbers may have gaps, segment bytes include headers), so a read it triggers
    /// may still come back short, never the reverse.
    fn enough_published(&self, pos: Position, (records, bytes): (usize, usize)) -> bool {
        let st = self.shared.lock();
        let new_records = st.last_seq.saturating_sub(pos.after_seq);
        if new_records >= records as u64 {
            return true;
        }
        let new_bytes: u64 = match pos.seg {
            Some(seg) => st
                .segments
                .range(seg..)
                .map(|(&id, m)| {
                    if id == seg {
                        m.len.saturating_sub(pos.offset)
                    } else {
                        m.len
                    }
                })
                .sum(),
            None => st.total_bytes,
        };
        new_bytes >= bytes as u64
    }

    fn push_gap(&mut self, (from, to): (u64, u64)) {
        match self.gaps.back_mut() {
            Some(last) if last.1.saturating_add(1) >= from => last.1 = last.1.max(to),
            _ => self.gaps.push_back((from, to)),
        }
    }

    /// `through` extended over the known gaps that follow it.
    fn extend_over_gaps(&self, mut through: u64) -> u64 {
        for &(from, to) in &self.gaps {
            if from > through.saturating_add(1) {
                break;
            }
            through = through.max(to);
        }
        through
    }

    /// Acknowledges every record with `seq <= through_seq` for this consumer. Older (or equal)
    /// acknowledgements are ignored; values past the last appended record are clamped. Takes
    /// effect at once for retention and [`pending_records`](Reader::pending_records); the cursor
    /// file is written in the background (coalesced), so a crash right after may redeliver the
    /// last acknowledged records (at-least-once).
    ///
    /// Errors: [`BufferError::Closed`] after close (the acknowledgement is not persisted:
    /// redelivered after restart); [`BufferError::Io`] if persisting an earlier acknowledgement
    /// failed (reported once; the acknowledgement itself was recorded and is retried).
    pub fn ack(&mut self, through_seq: u64) -> Result<(), BufferError> {
        if self.read_only {
            return Ok(());
        }
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(BufferError::Closed);
        }
        let through = self.extend_over_gaps(through_seq);
        while self.gaps.front().is_some_and(|g| g.1 <= through) {
            self.gaps.pop_front();
        }
        let (advanced, error) = {
            let mut st = self.shared.lock();
            let through = through.min(st.last_seq);
            let c = st.consumers.entry(self.consumer.clone()).or_default();
            let advanced = through > c.acked;
            if advanced {
                c.acked = through;
            }
            (advanced, st.persist_error.take())
        };
        if advanced {
            self.shared.wake_housekeeper(HkMsg::Wake);
        }
        match error {
            Some(source) => Err(BufferError::Io {
                path: self.shared.dir.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Records published but not yet acknowledged by this consumer (0 = drained).
    pub fn pending_records(&self) -> u64 {
        let st = self.shared.lock();
        let acked = st.consumers.get(&self.consumer).map_or(0, |c| c.acked);
        st.unacked(self.extend_over_gaps(acked))
    }

    /// The acknowledgement of this consumer (0 = nothing acknowledged).
    pub fn acked(&self) -> u64 {
        let st = self.shared.lock();
        st.consumers.get(&self.consumer).map_or(0, |c| c.acked)
    }
}

/// Registers `consumer` (if new) and returns its acknowledgement.
pub(crate) fn register_consumer(st: &mut State, consumer: &str, persisted: Option<u64>) -> u64 {
    st.consumers
        .entry(consumer.to_owned())
        .or_insert_with(|| {
            let acked = persisted.unwrap_or(0);
            ConsumerState {
                acked,
                persisted: acked,
            }
        })
        .acked
}

/// The blocking part of `next_batch`.
#[derive(Debug)]
struct ReadJob {
    shared: Arc<Shared>,
    pos: Position,
    file: Option<(u64, File)>,
    max_records: usize,
    max_bytes: usize,
    take_oversized: bool,
    records: Vec<Record>,
    gaps: Vec<(u64, u64)>,
}

/// A segment as seen by a reader at one moment.
#[derive(Debug, Clone, Copy)]
struct View {
    seg: u64,
    len: u64,
    last_seq: Option<u64>,
    next: Option<u64>,
}

impl ReadJob {
    /// Where to read: the reader's segment, or (if unpositioned or its segment was deleted)
    /// the segment holding `after_seq + 1`, via the sparse index.
    fn locate(&mut self) -> Option<View> {
        let st = self.shared.lock();
        let seg = match self.pos.seg {
            Some(id) if st.segments.contains_key(&id) => id,
            Some(gone) => {
                let id = *st.segments.range(gone..).next()?.0;
                self.pos.offset = 0;
                id
            }
            None => {
                let target = self.pos.after_seq.saturating_add(1);
                let (id, meta) = st
                    .segments
                    .range(..=target)
                    .next_back()
                    .or_else(|| st.segments.iter().next())?;
                self.pos.offset = meta.index.floor(target).map_or(0, |e| e.offset);
                *id
            }
        };
        self.pos.seg = Some(seg);
        let meta = st.segments.get(&seg)?;
        Some(View {
            seg,
            len: meta.len,
            last_seq: meta.first_seq.map(|_| meta.last_seq),
            next: st
                .segments
                .range(seg.saturating_add(1)..)
                .next()
                .map(|(k, _)| *k),
        })
    }

    /// The cached handle of `seg`, opened if needed; `None` if the file no longer exists.
    fn take_file(&mut self, seg: u64) -> io::Result<Option<File>> {
        match self.file.take() {
            Some((id, f)) if id == seg => Ok(Some(f)),
            _ => match File::open(segment::path(&self.shared.dir, seg)) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    fn note_gap_before(&mut self, seq: u64) {
        if seq > self.pos.after_seq.saturating_add(1) {
            self.gaps
                .push((self.pos.after_seq.saturating_add(1), seq - 1));
        }
    }

    /// Reads what fits. Returns whether the batch is full.
    fn read(&mut self) -> Result<bool, BufferError> {
        let mut bytes = 0usize;
        loop {
            let Some(view) = self.locate() else {
                return Ok(false);
            };
            if self.pos.offset >= view.len {
                // Everything of this segment consumed: numbers it held that were not
                // delivered are gone for good.
                if let Some(last) = view.last_seq.filter(|&l| l > self.pos.after_seq) {
                    self.note_gap_before(last.saturating_add(1));
                    self.pos.after_seq = last;
                }
                match view.next {
                    Some(next) => {
                        self.pos.seg = Some(next);
                        self.pos.offset = 0;
                        continue;
                    }
                    None => return Ok(false),
                }
            }
            let path = segment::path(&self.shared.dir, view.seg);
            let io_err = |source| BufferError::Io { path, source };
            let Some(file) = self.take_file(view.seg).map_err(io_err)? else {
                // Deleted under us (or externally): nothing more to read there.
                self.pos.offset = view.len;
                continue;
            };
            let outcome = self.scan(&file, view, &mut bytes);
            self.file = Some((view.seg, file));
            if outcome? || self.records.len() >= self.max_records {
                return Ok(true);
            }
        }
    }

    /// Reads records of `view` from the position on. Returns whether the batch is full.
    fn scan(&mut self, file: &File, view: View, bytes: &mut usize) -> Result<bool, BufferError> {
        let dir = self.shared.dir.clone();
        let io_err = |source| BufferError::Io {
            path: segment::path(&dir, view.seg),
            source,
        };
        let mut scanner = Scanner::new(file, self.pos.offset, view.len, view.seg);
        loop {
            let item = match scanner.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => return Err(io_err(e)),
            };
            match item {
                ScanItem::Record {
                    offset,
                    len,
                    record,
                } => {
                    if record.seq > self.pos.after_seq {
                        let n = record.payload.len();
                        let fits = self.records.len() < self.max_records
                            && bytes.saturating_add(n) <= self.max_bytes;
                        let alone = self.records.is_empty() && self.take_oversized;
                        if !(fits || alone) {
                            return Ok(true);
                        }
                        *bytes += n;
                        self.note_gap_before(record.seq);
                        self.pos.after_seq = record.seq;
                        self.records.push(record);
                    }
                    self.pos.offset = offset + len;
                }
                ScanItem::Corrupt { start, end } | ScanItem::Tail { start, end } => {
                    self.shared.report_corrupt(view.seg, start, end, file);
                    self.pos.offset = end;
                }
            }
        }
        // The durable part is consumed (a file shorter than it counts as consumed too).
        self.pos.offset = self.pos.offset.max(scanner.position()).max(view.len);
        Ok(false)
    }
}

//! The writer thread: the only code that appends to segments. Appends arrive on a channel;
//! everything queued while the previous group was being written and fsynced forms the next
//! group (group commit), which costs one `writev` per segment touched and, under
//! `fsync = "always"`, one `fdatasync` per segment touched (plus one directory fsync when a
//! segment was created) — however many appends it holds.
//!
//! A group is a small transaction:
//! 1. plan: check bounds (dropping oldest segments or refusing with `Full`; refusing with
//!    `SequenceExhausted` an append whose numbers would pass `MAX_SEQ`), assign sequence
//!    numbers, split records over segments (rotation), encode headers;
//! 2. execute: one vectored write per segment (payloads are not copied);
//! 3. under `always`, fdatasync every segment written (and the directory if one was created);
//! 4. publish: update the shared segment list so readers see the records, then reply.
//!
//! If 2 or 3 fails, every file touched is truncated back to its length before the group (so a
//! partially written record never stays behind) and every append of the group fails. On ENOSPC
//! under `drop_oldest`, the oldest segment is deleted and the write retried once first.

use std::fs::File;
use std::io::{self, IoSlice};
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::housekeeper::HkMsg;
use super::io::{AppendFile, clone_error, is_no_space, write_all_vectored};
use super::metrics::DropReason;
use super::record::{HEADER_LEN, HEADER_LEN_U64, Header, MAX_SEQ};
use super::segment::{self, SegmentMeta};
use super::state::{Shared, now_ms};
use super::{AppendError, Appended};
use crate::buffer::config::{FsyncPolicy, WhenFull};

/// `retry_after` when `max_bytes` is reached under `block`: about the time the forwarder needs
/// to ship and acknowledge a batch or two.
pub(crate) const FULL_RETRY_AFTER: Duration = Duration::from_secs(2);
/// `retry_after` when the disk itself is full: freeing disk space takes longer.
pub(crate) const DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// A group stops collecting appends beyond this many bytes...
const MAX_GROUP_BYTES: u64 = 64 << 20;
/// ...or this many appends.
const MAX_GROUP_APPENDS: usize = 4096;
/// Longest a group waits for appends that are probably on their way (see `gather`).
const GATHER_WAIT: Duration = Duration::from_micros(200);

/// One `Buffer::append` call.
#[derive(Debug)]
pub(crate) struct AppendReq {
    /// The payloads, in order.
    pub payloads: Vec<Bytes>,
    /// Their checksums (computed by the caller, off this thread).
    pub crcs: Vec<u32>,
    /// Bytes on disk, headers included.
    pub bytes: u64,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// A message to the writer.
#[derive(Debug)]
pub(crate) enum WriterMsg {
    /// Append records.
    Append(AppendReq),
    /// fsync everything written so far.
    Flush(oneshot::Sender<io::Result<()>>),
    /// fsync everything and exit.
    Close(Option<oneshot::Sender<io::Result<()>>>),
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    /// Its id (name).
    pub id: u64,
    /// Append handle.
    pub file: Box<dyn AppendFile>,
    /// Bytes written and published.
    pub len: u64,
}

/// Records of one group destined to one segment.
#[derive(Debug)]
struct Chunk {
    seg: u64,
    /// The segment is created by this group.
    create: bool,
    /// Offset of the first record.
    start: u64,
    headers: Vec<[u8; HEADER_LEN]>,
    payloads: Vec<Bytes>,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
}

/// A planned group.
#[derive(Debug)]
struct Plan {
    chunks: Vec<Chunk>,
    accepted: Vec<(oneshot::Sender<Result<Appended, AppendError>>, Appended)>,
    start_seq: u64,
    end_seq: u64,
    ts: u64,
    bytes: u64,
    records: u64,
}

/// The writer thread's state.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: ActiveSegment,
    /// The active segment may hold garbage past `len` (a truncation failed): rotate before
    /// writing again.
    poisoned: bool,
    next_seq: u64,
    /// Sealed segments written since their last fsync (`interval` policy).
    unsynced: Vec<Box<dyn AppendFile>>,
    /// The active segment has bytes not yet fsynced.
    active_dirty: bool,
    /// Segments were created since the directory was last fsynced.
    dir_dirty: bool,
    last_sync: Instant,
    /// Appends in the previous group.
    last_group: usize,
    _lock: Arc<File>,
}

impl Writer {
    /// A writer appending to `active`, numbering from `next_seq`.
    pub fn new(shared: Arc<Shared>, active: ActiveSegment, next_seq: u64, lock: Arc<File>) -> Self {
        Self {
            shared,
            active,
            poisoned: false,
            next_seq,
            unsynced: Vec::new(),
            active_dirty: false,
            dir_dirty: false,
            last_sync: Instant::now(),
            last_group: 0,
            _lock: lock,
        }
    }

    /// The thread's body: runs until `Close` or until every sender is gone.
    pub fn run(mut self, rx: mpsc::Receiver<WriterMsg>) {
        let interval = self.shared.limits.fsync_interval;
        loop {
            let first = if self.shared.limits.fsync == FsyncPolicy::Interval {
                let wait = (self.last_sync + interval).saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.interval_sync();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            let (group, control) = self.gather(first, &rx);
            if !group.is_empty() {
                self.last_group = group.len();
                self.process_group(group);
            }
            match control {
                Some(WriterMsg::Flush(reply)) => {
                    let _ = reply.send(self.sync_all());
                }
                Some(WriterMsg::Close(reply)) => {
                    let result = self.sync_all();
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    return;
                }
                _ => {}
            }
            if self.shared.limits.fsync == FsyncPolicy::Interval
                && self.last_sync.elapsed() >= interval
            {
                self.interval_sync();
            }
        }
        if let Err(e) = self.sync_all() {
            tracing::error!(error = %e, "final fsync of the buffer failed");
        }
    }

    /// Collects the next group: `first` and whatever is queued, up to a control message.
    ///
    /// When the previous group was larger than what is queued now, its appenders are most
    /// likely resubmitting right now (woken by our replies): waiting for them (parked, not spinning,
    /// until the group is as large as the previous one, at most [`GATHER_WAIT`]) saves a whole
    /// fsync. A lone appender is never delayed, and the wait adapts when concurrency drops.
    /// Same idea as PostgreSQL's `commit_delay` with `commit_siblings`.
    fn gather(
        &self,
        first: WriterMsg,
        rx: &mpsc::Receiver<WriterMsg>,
    ) -> (Vec<AppendReq>, Option<WriterMsg>) {
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        let mut deadline: Option<Instant> = None;
        loop {
            match next.take() {
                Some(WriterMsg::Append(req)) => {
                    bytes += req.bytes;
                    group.push(req);
                }
                Some(control) => return (group, Some(control)),
                None => {}
            }
            if bytes >= MAX_GROUP_BYTES || group.len() >= MAX_GROUP_APPENDS {
                return (group, None);
            }
            match rx.try_recv() {
                Ok(msg) => next = Some(msg),
                Err(_) if group.len() >= self.last_group => return (group, None),
                // Waiting only pays when it saves an fsync.
                Err(_) if self.shared.limits.fsync != FsyncPolicy::Always => return (group, None),
                Err(mpsc::TryRecvError::Disconnected) => return (group, None),
                Err(mpsc::TryRecvError::Empty) => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
                    let now = Instant::now();
                    if now >= deadline {
                        return (group, None);
                    }
                    // Park rather than spin: on a small machine the appenders need this CPU.
                    match rx.recv_timeout(deadline - now) {
                        Ok(msg) => next = Some(msg),
                        Err(_) => return (group, None),
                    }
                }
            }
        }
    }

    fn process_group(&mut self, reqs: Vec<AppendReq>) {
        let plan = self.plan(reqs);
        if plan.chunks.is_empty() {
            for (reply, appended) in plan.accepted {
                let _ = reply.send(Ok(appended));
            }
            return;
        }
        let mut new_files = Vec::new();
        let mut result = self.execute(&plan, &mut new_files);
        let mut rolled_back = None;
        if result.as_ref().is_err_and(is_no_space) {
            let clean = self.rollback(&plan, &mut new_files);
            rolled_back = Some(clean);
            if clean
                && (self.release_from_yielding()
                    || (self.shared.limits.when_full == WhenFull::DropOldest
                        && self.drop_oldest(DropReason::DiskFull)))
            {
                result = self.execute(&plan, &mut new_files);
                rolled_back = None;
            }
        }
        if result.is_ok() && self.shared.limits.fsync == FsyncPolicy::Always {
            result = self.sync_group(&plan, &mut new_files);
        }
        match result {
            Ok(()) => self.commit(plan, new_files),
            Err(e) => {
                let clean = match rolled_back {
                    Some(clean) => clean,
                    None => self.rollback(&plan, &mut new_files),
                };
                self.fail(&plan, new_files, clean);
                let no_space = is_no_space(&e);
                self.shared.set_disk_trouble();
                if no_space {
                    self.shared
                        .metrics
                        .full_rejections
                        .inc_by(plan.accepted.len() as u64);
                    tracing::warn!(error = %e, "buffer disk full; appends refused");
                } else {
                    tracing::error!(error = %e, "buffer write failed; appends refused");
                }
                for (reply, _) in plan.accepted {
                    let _ = reply.send(Err(if no_space {
                        AppendError::Full {
                            retry_after: DISK_FULL_RETRY_AFTER,
                        }
                    } else {
                        AppendError::Io(clone_error(&e))
                    }));
                }
            }
        }
    }

    /// Assigns sequence numbers and segments; refuses appends that do not fit.
    fn plan(&mut self, reqs: Vec<AppendReq>) -> Plan {
        let mut plan = Plan {
            chunks: Vec::new(),
            accepted: Vec::with_capacity(reqs.len()),
            start_seq: self.next_seq,
            end_seq: self.next_seq,
            ts: now_ms(),
            bytes: 0,
            records: 0,
        };
        let limit = self.shared.limits.segment_bytes;
        let mut seg = self.active.id;
        let mut seg_len = self.active.len;
        let mut rotate = self.poisoned;
        for req in reqs {
            let count = req.payloads.len() as u64;
            if plan
                .end_seq
                .checked_add(count)
                .is_none_or(|end| end > MAX_SEQ + 1)
            {
                let _ = req.reply.send(Err(AppendError::SequenceExhausted {
                    next_seq: plan.end_seq,
                }));
                continue;
            }
            if let Err(e) = self.make_room(req.bytes, plan.bytes) {
                let _ = req.reply.send(Err(e));
                continue;
            }
            let first_seq = plan.end_seq;
            for (payload, crc) in req.payloads.into_iter().zip(req.crcs) {
                let seq = plan.end_seq;
                let rec_len = HEADER_LEN_U64 + payload.len() as u64;
                if rotate || (seg_len > 0 && seg_len + rec_len > limit) {
                    rotate = false;
                    seg = seq;
                    seg_len = 0;
                    plan.chunks.push(Chunk::new(seg, true, 0, seq));
                } else if plan.chunks.last().is_none_or(|c| c.seg != seg) {
                    plan.chunks.push(Chunk::new(seg, false, seg_len, seq));
                }
                let header = Header {
                    len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                    seq,
                    appended_at_ms: plan.ts,
                    payload_crc: crc,
                };
                if let Some(chunk) = plan.chunks.last_mut() {
                    chunk.headers.push(header.encode());
                    chunk.payloads.push(payload);
                    chunk.last_seq = seq;
                    chunk.bytes += rec_len;
                }
                seg_len += rec_len;
                plan.end_seq += 1;
                plan.bytes += rec_len;
                plan.records += 1;
            }
            plan.accepted.push((
                req.reply,
                Appended {
                    first_seq,
                    last_seq: plan.end_seq - 1,
                },
            ));
        }
        plan
    }

    /// Makes room for `need` more bytes on top of `planned` bytes already accepted in this
    /// group: drops the oldest segments under `drop_oldest`, or refuses with `Full`.
    fn make_room(&self, need: u64, planned: u64) -> Result<(), AppendError> {
        let max = self.shared.limits.max_bytes;
        loop {
            let total = self.shared.lock().total_bytes + planned;
            if total.saturating_add(need) <= max {
                return Ok(());
            }
            if self.release_from_yielding() {
                continue;
            }
            if self.shared.limits.when_full == WhenFull::Block
                || !self.drop_oldest(DropReason::DropOldest)
            {
                self.shared.full.store(true, Ordering::Relaxed);
                self.shared.metrics.full_rejections.inc();
                return Err(AppendError::Full {
                    retry_after: FULL_RETRY_AFTER,
                });
            }
        }
    }

    /// Deletes the oldest (non-active) segment if only yielding consumers still hold it: they
    /// are moved past it, their skipped records counted. Returns whether one was deleted.
    fn release_from_yielding(&self) -> bool {
        let yielding = self
            .shared
            .yielding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if yielding.is_empty() {
            return false;
        }
        let (id, skipped) = {
            let mut st = self.shared.lock();
            let Some(meta) = st.segments.values().next().cloned() else {
                return false;
            };
            let (id, last_seq) = (meta.id, meta.last_seq);
            let held_by_others = st
                .consumers
                .iter()
                .any(|(name, c)| !yielding.contains(name) && meta.unacked(c.acked) > 0);
            if id == self.active.id || held_by_others {
                return false;
            }
            let mut skipped = 0;
            for name in &yielding {
                let n = st.consumers.get(name).map_or(0, |c| meta.unacked(c.acked));
                if let Some(c) = st.consumers.get_mut(name)
                    && c.acked < last_seq
                {
                    c.acked = last_seq;
                }
                skipped += n;
            }
            (id, skipped)
        };
        if skipped > 0 {
            self.shared.metrics.dropped(DropReason::OutputLag, skipped);
            tracing::warn!(
                segment = id,
                records = skipped,
                "buffer full: a lagging output skips the oldest segment (the collector already has it)"
            );
        }
        self.shared.remove_segment(id, None);
        self.shared.wake_housekeeper(HkMsg::Wake);
        true
    }

    /// Deletes the oldest segment unless it is the active one. Returns whether one was deleted.
    fn drop_oldest(&self, reason: DropReason) -> bool {
        let oldest = self.shared.lock().segments.keys().next().copied();
        match oldest {
            Some(id) if id != self.active.id => self.shared.remove_segment(id, Some(reason)),
            _ => false,
        }
    }

    /// Writes the plan's chunks. Segments created are kept in `new_files` (reused on a retry).
    fn execute(
        &mut self,
        plan: &Plan,
        new_files: &mut Vec<(u64, Box<dyn AppendFile>)>,
    ) -> io::Result<()> {
        for chunk in &plan.chunks {
            let file: &mut dyn AppendFile = if chunk.create {
                let i = match new_files.iter().position(|(id, _)| *id == chunk.seg) {
                    Some(i) => i,
                    None => {
                        let path = segment::path(&self.shared.dir, chunk.seg);
                        let f = self.shared.fs.open_append(&path)?;
                        if f.len()? != 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::AlreadyExists,
                                format!("new segment {} already holds data", path.display()),
                            ));
                        }
                        new_files.push((chunk.seg, f));
                        new_files.len() - 1
                    }
                };
                &mut *new_files[i].1
            } else {
                &mut *self.active.file
            };
            let mut slices = Vec::with_capacity(chunk.headers.len() * 2);
            for (h, p) in chunk.headers.iter().zip(&chunk.payloads) {
                slices.push(IoSlice::new(h));
                if !p.is_empty() {
                    slices.push(IoSlice::new(p));
                }
            }
            write_all_vectored(file, &mut slices)?;
        }
        Ok(())
    }

    fn timed_sync(&self, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let started = Instant::now();
        let r = f();
        self.shared.metrics.observe_fsync(started.elapsed());
        r
    }

    /// `always`: fdatasync what the group wrote, and the directory if a segment was created.
    fn sync_group(
        &mut self,
        plan: &Plan,
        new_files: &mut [(u64, Box<dyn AppendFile>)],
    ) -> io::Result<()> {
        if plan.chunks.first().is_some_and(|c| !c.create) {
            let file = &mut self.active.file;
            let started = Instant::now();
            let r = file.sync_data();
            self.shared.metrics.observe_fsync(started.elapsed());
            r?;
        }
        for (_, f) in new_files.iter_mut() {
            self.timed_sync(|| f.sync_data())?;
        }
        if !new_files.is_empty() || self.dir_dirty {
            self.timed_sync(|| self.shared.fs.sync_dir(&self.shared.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Truncates every file the plan touched back to its length before the group. Returns
    /// whether all truncations succeeded.
    fn rollback(&mut self, plan: &Plan, new_files: &mut [(u64, Box<dyn AppendFile>)]) -> bool {
        let mut clean = true;
        if plan.chunks.first().is_some_and(|c| !c.create)
            && let Err(e) = self.active.file.set_len(self.active.len)
        {
            tracing::error!(segment = self.active.id, error = %e, "cannot truncate a failed write");
            clean = false;
        }
        for (id, f) in new_files.iter_mut() {
            if let Err(e) = f.set_len(0) {
                tracing::error!(segment = *id, error = %e, "cannot truncate a failed write");
                clean = false;
            }
        }
        clean
    }

    /// After a failed group: sequence numbers are reused if nothing else changed; otherwise
    /// they are skipped (never reused: a created segment is named after one of them) and the
    /// last created segment (empty) becomes the active one.
    fn fail(&mut self, plan: &Plan, mut new_files: Vec<(u64, Box<dyn AppendFile>)>, clean: bool) {
        if new_files.is_empty() && clean {
            self.next_seq = plan.start_seq;
            return;
        }
        self.next_seq = plan.end_seq;
        self.poisoned = !clean;
        {
            let mut st = self.shared.lock();
            st.last_seq = st.last_seq.max(plan.end_seq - 1);
            for (id, _) in &new_files {
                st.segments
                    .entry(*id)
                    .or_insert_with(|| SegmentMeta::new(*id));
            }
            self.shared.refresh_gauges(&st);
        }
        if let Some((id, file)) = new_files.pop() {
            self.dir_dirty = true;
            self.replace_active(ActiveSegment { id, file, len: 0 });
        }
    }

    /// Makes `next` the active segment; the old one is sealed (and queued for the interval
    /// fsync if it has unsynced bytes).
    fn replace_active(&mut self, next: ActiveSegment) {
        let old = mem::replace(&mut self.active, next);
        if self.active_dirty && self.shared.limits.fsync == FsyncPolicy::Interval {
            self.unsynced.push(old.file);
        }
        self.active_dirty = false;
    }

    /// Publishes a written (and, under `always`, synced) group and replies.
    fn commit(&mut self, plan: Plan, mut new_files: Vec<(u64, Box<dyn AppendFile>)>) {
        {
            let mut st = self.shared.lock();
            for c in &plan.chunks {
                let count = c.last_seq - c.first_seq + 1;
                st.segments
                    .entry(c.seg)
                    .or_insert_with(|| SegmentMeta::new(c.seg))
                    .push(c.first_seq, c.last_seq, count, c.start, c.bytes, plan.ts);
            }
            st.total_bytes += plan.bytes;
            st.total_records += plan.records;
            st.last_seq = st.last_seq.max(plan.end_seq - 1);
            self.shared.refresh_gauges(&st);
        }
        self.shared.metrics.appended_records.inc_by(plan.records);
        self.shared.metrics.appended_bytes.inc_by(plan.bytes);
        self.next_seq = plan.end_seq;
        self.poisoned = false;
        let synced = self.shared.limits.fsync == FsyncPolicy::Always;
        if let Some(first) = plan.chunks.first().filter(|c| !c.create) {
            self.active.len += first.bytes;
            self.active_dirty |= !synced;
        }
        if let Some((id, file)) = new_files.pop() {
            let len = plan.chunks.last().map_or(0, |c| c.bytes);
            for (_, f) in new_files {
                if !synced && self.shared.limits.fsync == FsyncPolicy::Interval {
                    self.unsynced.push(f);
                }
            }
            self.replace_active(ActiveSegment { id, file, len });
            self.active_dirty = !synced;
            self.dir_dirty |= !synced;
            // A segment was sealed: it may already be fully acknowledged.
            self.shared.wake_housekeeper(HkMsg::Wake);
        }
        self.shared.clear_trouble();
        self.shared.notify_readers();
        for (reply, appended) in plan.accepted {
            let _ = reply.send(Ok(appended));
        }
    }

    /// fsyncs everything not yet synced: sealed segments, the active one, the directory.
    fn sync_all(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for mut f in mem::take(&mut self.unsynced) {
            if let Err(e) = self.timed_sync(|| f.sync_data()) {
                first_error.get_or_insert(e);
            }
        }
        if self.active_dirty {
            let started = Instant::now();
            let r = self.active.file.sync_data();
            self.shared.metrics.observe_fsync(started.elapsed());
            match r {
                Ok(()) => self.active_dirty = false,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.dir_dirty {
            match self.timed_sync(|| self.shared.fs.sync_dir(&self.shared.dir)) {
                Ok(()) => self.dir_dirty = false,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.last_sync = Instant::now();
        first_error.map_or(Ok(()), Err)
    }

    fn interval_sync(&mut self) {
        if let Err(e) = self.sync_all() {
            self.shared.set_disk_trouble();
            tracing::error!(error = %e, "periodic fsync of the buffer failed");
        }
    }
}

impl Chunk {
    fn new(seg: u64, create: bool, start: u64, first_seq: u64) -> Self {
        Self {
            seg,
            create,
            start,
            headers: Vec::new(),
            payloads: Vec::new(),
            first_seq,
            last_seq: first_seq,
            bytes: 0,
        }
    }
}

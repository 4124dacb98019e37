//! State shared by the writer thread, the housekeeper thread, readers and `Buffer` handles:
//! the published segment list (what readers may read), consumer acknowledgements, flags.
//!
//! One `std::sync::Mutex` guards [`State`]; it is held only for in-memory bookkeeping, never
//! across file I/O (except unlinking nothing: files are removed after the lock is released) and
//! never across an `.await`.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::housekeeper::HkMsg;
use super::io::Fs;
use super::metrics::{BufferMetrics, DropReason};
use super::recovery::quarantine;
use super::segment::{self, SegmentMeta};
use crate::buffer::config::{BufferConfig, FsyncPolicy, WhenFull};

/// How long `is_writable()` stays false after a disk error (ENOSPC with nothing to drop, EIO):
/// the next append after that probes the disk again.
pub(crate) const DISK_TROUBLE_COOLDOWN: Duration = Duration::from_secs(5);

/// The limits and policies of a buffer (from `BufferConfig`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Bound on the bytes of all segments.
    pub max_bytes: u64,
    /// Rotation size; also the largest record.
    pub segment_bytes: u64,
    /// What to do when full.
    pub when_full: WhenFull,
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// Period of `FsyncPolicy::Interval`.
    pub fsync_interval: Duration,
}

impl From<&BufferConfig> for Limits {
    fn from(c: &BufferConfig) -> Self {
        Self {
            max_bytes: c.max_bytes,
            segment_bytes: c.segment_bytes,
            when_full: c.when_full,
            fsync: c.fsync,
            fsync_interval: c.fsync_interval.max(Duration::from_millis(1)),
        }
    }
}

/// One consumer's acknowledgement.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConsumerState {
    /// Everything `<=` this is done (in memory; 0 = nothing).
    pub acked: u64,
    /// What the cursor file says (the housekeeper catches up with `acked`).
    pub persisted: u64,
}

/// The mutable part of [`Shared`].
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Published segments by id; the last one is the writer's active segment.
    pub segments: BTreeMap<u64, SegmentMeta>,
    /// Σ `len` of `segments`.
    pub total_bytes: u64,
    /// Σ `records` of `segments`.
    pub total_records: u64,
    /// Highest sequence number published or ever used (0 = none).
    pub last_seq: u64,
    /// Consumers taking part in retention.
    pub consumers: BTreeMap<String, ConsumerState>,
    /// Corrupt regions `(segment, start offset)` already counted and copied aside.
    pub corrupt_seen: HashSet<(u64, u64)>,
    /// Last failure to persist a cursor, handed to the next `ack`.
    pub persist_error: Option<io::Error>,
}

impl State {
    /// The lowest acknowledgement over all consumers (0 if there are none: without consumers
    /// nothing is ever considered done).
    pub fn min_acked(&self) -> u64 {
        self.consumers.values().map(|c| c.acked).min().unwrap_or(0)
    }

    /// Records with `seq > acked` in all segments.
    pub fn unacked(&self, acked: u64) -> u64 {
        self.segments.values().map(|m| m.unacked(acked)).sum()
    }

    /// Append time (ms) of the oldest record some consumer has not acknowledged.
    pub fn oldest_unacked_ms(&self) -> Option<u64> {
        let first_ts = |acked: u64| {
            self.segments
                .values()
                .find_map(|m| m.first_unacked_ts(acked))
        };
        if self.consumers.is_empty() {
            return first_ts(0);
        }
        self.consumers
            .values()
            .filter_map(|c| first_ts(c.acked))
            .min()
    }
}

/// Everything the threads and handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The buffer directory.
    pub dir: PathBuf,
    /// Limits and policies.
    pub limits: Limits,
    /// File-system seam.
    pub fs: Arc<dyn Fs>,
    /// Metrics.
    pub metrics: BufferMetrics,
    state: Mutex<State>,
    /// Bumped whenever readers may have something new to look at (records published,
    /// segments dropped, close).
    pub published: watch::Sender<u64>,
    /// Wakes the housekeeper (cursor persistence, deletion of acknowledged segments).
    pub housekeeper: mpsc::Sender<HkMsg>,
    /// A `Wake` is on its way to the housekeeper and it has not started that round yet.
    pub housekeeping_requested: AtomicBool,
    /// An append was refused because `max_bytes` was reached and nothing could be dropped
    /// (always the case under `block`). Cleared by a successful append or a deletion.
    pub full: AtomicBool,
    /// When the disk last failed (ENOSPC with nothing to drop, I/O error).
    pub disk_trouble: Mutex<Option<Instant>>,
    /// `close()` was called or the last `Buffer` handle dropped.
    pub closed: AtomicBool,
    /// Told which sequence numbers a dropped segment held.
    pub drop_observer: std::sync::OnceLock<ObserverSlot>,
    /// Consumers that give way when the buffer is full (see [`Buffer::yield_when_full`](super::Buffer::yield_when_full)).
    pub yielding: Mutex<Vec<String>>,
}

/// A [`DropObserver`](super::DropObserver) (a newtype so that [`Shared`] stays `Debug`).
pub(crate) struct ObserverSlot(pub Arc<dyn super::DropObserver>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DropObserver")
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Shared {
    /// Builds the shared part around a recovered state.
    pub fn new(
        dir: PathBuf,
        limits: Limits,
        fs: Arc<dyn Fs>,
        metrics: BufferMetrics,
        state: State,
        housekeeper: mpsc::Sender<HkMsg>,
    ) -> Self {
        let (published, _) = watch::channel(0);
        let shared = Self {
            dir,
            limits,
            fs,
            metrics,
            state: Mutex::new(state),
            published,
            housekeeper,
            housekeeping_requested: AtomicBool::new(false),
            full: AtomicBool::new(false),
            disk_trouble: Mutex::new(None),
            closed: AtomicBool::new(false),
            drop_observer: std::sync::OnceLock::new(),
            yielding: Mutex::new(Vec::new()),
        };
        shared.refresh_gauges(&shared.lock());
        shared
    }

    /// Locks the state (a panic elsewhere while holding it does not make it unusable: the
    /// bookkeeping is updated in single steps).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every reader waiting for records.
    pub fn notify_readers(&self) {
        self.published.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Asks the housekeeper to persist cursors and collect garbage. A `Wake` is sent only
    /// when none is pending (one wake-up per round, however many acknowledgements).
    pub fn wake_housekeeper(&self, msg: HkMsg) {
        if matches!(msg, HkMsg::Wake) && self.housekeeping_requested.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.housekeeper.send(msg);
    }

    /// Sets the size gauges from `st`.
    pub fn refresh_gauges(&self, st: &State) {
        let m = &self.metrics;
        m.bytes
            .set(i64::try_from(st.total_bytes).unwrap_or(i64::MAX));
        m.records
            .set(i64::try_from(st.total_records).unwrap_or(i64::MAX));
        m.segments
            .set(i64::try_from(st.segments.len()).unwrap_or(i64::MAX));
    }

    /// Recomputes the oldest-unacknowledged-age gauge and returns the age.
    pub fn refresh_age(&self) -> Option<Duration> {
        let ts = self.lock().oldest_unacked_ms();
        let age = ts.map(|ts| Duration::from_millis(now_ms().saturating_sub(ts)));
        self.metrics
            .oldest_unacked_age
            .set(age.map_or(0.0, |a| a.as_secs_f64()));
        age
    }

    /// Removes segment `id` from the published list and unlinks its file. With a `reason`,
    /// the records not acknowledged by every consumer are counted as dropped. Returns whether
    /// the segment was still there.
    pub fn remove_segment(&self, id: u64, reason: Option<DropReason>) -> bool {
        let dropped = {
            let mut st = self.lock();
            let Some(meta) = st.segments.remove(&id) else {
                return false;
            };
            st.total_bytes = st.total_bytes.saturating_sub(meta.len);
            st.total_records = st.total_records.saturating_sub(meta.records);
            st.corrupt_seen.retain(|(seg, _)| *seg != id);
            self.refresh_gauges(&st);
            (meta.unacked(st.min_acked()), meta.first_seq, meta.last_seq)
        };
        let (dropped, first_seq, last_seq) = dropped;
        if let Some(reason) = reason {
            if let (Some(slot), Some(first)) = (self.drop_observer.get(), first_seq) {
                slot.0.records_dropped(first, last_seq);
            }
            self.metrics.dropped(reason, dropped);
            tracing::warn!(
                segment = id,
                records = dropped,
                reason = reason.as_str(),
                "buffer dropped a segment holding unacknowledged records"
            );
        }
        let path = segment::path(&self.dir, id);
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete buffer segment")
            }
        }
        self.notify_readers();
        true
    }

    /// Counts a corrupt region `[start, end)` of segment `seg` found while reading and copies
    /// its bytes to `corrupt/`, once per region.
    pub fn report_corrupt(&self, seg: u64, start: u64, end: u64, file: &File) {
        if !self.lock().corrupt_seen.insert((seg, start)) {
            return;
        }
        self.metrics.corrupt_records.inc();
        tracing::warn!(
            segment = seg,
            offset = start,
            bytes = end - start,
            "corrupt bytes in the buffer skipped"
        );
        if let Err(e) = quarantine(&self.dir, seg, start, end, file) {
            tracing::warn!(error = %e, "cannot copy corrupt buffer bytes aside");
        }
    }

    /// Notes a disk failure (makes `is_writable` false for a while).
    pub fn set_disk_trouble(&self) {
        *self
            .disk_trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Notes that a write succeeded.
    pub fn clear_trouble(&self) {
        self.full.store(false, Ordering::Relaxed);
        *self
            .disk_trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// See `Buffer::is_writable`.
    pub fn is_writable(&self) -> bool {
        let trouble = *self
            .disk_trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        !self.closed.load(Ordering::Relaxed)
            && !self.full.load(Ordering::Relaxed)
            && trouble.is_none_or(|t| t.elapsed() >= DISK_TROUBLE_COOLDOWN)
    }
}

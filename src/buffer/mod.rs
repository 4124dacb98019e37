//! The durable disk buffer: a bounded, segmented, checksummed append-only log with one
//! acknowledgement cursor per consumer. Hand-written; no queue crate.
//!
//! # Files (all in `buffer.path`, created 0700; every file 0600)
//!
//! A `buffer.path` that group or others can reach is made 0700 at open, with the files in it
//! (see [`crate::private_fs`]); open fails with a clear error if that chmod is refused.
//!
//! ```text
//!  LOCK                          flock()ed by the running sidecar (second opener: Locked)
//!  00000000000000000001.seg      segments, named after the seq that was next at creation,
//!  00000000000000004711.seg      20 digits so name order = seq order; the last is "active"
//!  cursor-dynamiq                acknowledgement cursor of consumer "dynamiq" (20 bytes)
//!  cursor-otlp.tmp               transient: a cursor being replaced (deleted at start-up)
//!  corrupt/<seg>-<offset>.bin    copies of corrupt regions found (forensics; never read)
//!  dead-letter/ forward-state/ query-state/   the other owners' state (see crate::state_dir,
//!                                which names every entry; same modes)
//! ```
//!
//! Record (see `record.rs`; 32-byte header, little-endian):
//!
//! ```text
//!  ┌──────────┬─────────┬─────────┬────────────────┬──────────┬──────────┬───────────┐
//!  │ magic 4B │ len u32 │ seq u64 │ appended_at_ms │ pay_crc  │ hdr_crc  │ payload   │
//!  │ D95BF101 │         │         │ u64            │ u32      │ u32      │ len bytes │
//!  └──────────┴─────────┴─────────┴────────────────┴──────────┴──────────┴───────────┘
//! ```
//! `hdr_crc` covers bytes 0..28 (so `pay_crc` too); the magic lets a reader find the next
//! record after corruption. Cursor file (see `cursor.rs`): `"DQCURS01" | acked_through u64 |
//! crc32 u32`. WARNING: both are on-disk formats: never reorder or retype fields; a new format
//! gets a new magic and the old one stays readable.
//!
//! # Who does what
//!
//! - The **writer thread** (`writer.rs`) is the only code that appends to segments, creates
//!   segments (rotation at `segment_bytes`) and deletes segments to make room (`drop_oldest`).
//!   Appends queue on a channel; everything that queued while the previous group was being
//!   written and fsynced forms the next group: one `writev` and (under `always`) one
//!   `fdatasync` per segment touched, whatever the number of appends (group commit). When the
//!   previous group was larger than what is queued, the writer waits up to 200 µs for the
//!   appenders it just answered to resubmit (never for a lone appender).
//! - The **housekeeper thread** (`housekeeper.rs`) writes cursor files (coalesced, at most one
//!   round per 100 ms unless a flush waits; atomically:
//!   temp file, fsync, rename, fsync directory) and deletes segments every consumer has
//!   acknowledged. The active (last) segment is never deleted by anyone.
//! - **Readers** (`reader.rs`) only read (on tokio's blocking pool) and move acknowledgements
//!   in memory. **Recovery** (`recovery.rs`) runs in `open` before the threads start.
//! - `inspect`/`export` (`inspect.rs`) read without the lock and never write.
//!
//! # Invariants
//!
//! - **Durable when `append` returns**: the records were written to the segment file (a
//!   `kill -9` loses nothing acknowledged). Under `fsync = "always"` they were also
//!   fdatasynced, and the directory fsynced if the group created a segment (a power loss loses
//!   nothing acknowledged). Under `"interval"` the writer fsyncs at most `fsync_interval` after
//!   a write (a power loss may lose up to that much); under `"never"` nothing is fsynced
//!   except the active segment at `close`.
//! - **Visibility**: a record becomes readable only after its group is durable per the
//!   policy; readers never read past a segment's published length, so they never see a
//!   partially written record.
//! - **Bounded numbers**: every `seq` is at most [`MAX_SEQ`]; a larger one read from disk
//!   (record, cursor, segment name) is corruption, and an append that would pass it is refused
//!   (`SequenceExhausted`), so no sequence arithmetic wraps.
//! - **Ordering**: `seq` is strictly increasing in log order and never reused, across
//!   restarts too: at open, next seq = max(last valid record + 1, name of the last segment,
//!   highest acknowledgement in any cursor file + 1). The active segment is never deleted, so
//!   its name survives even when everything was acknowledged. A failed group that created a
//!   segment skips its numbers rather than reusing them. Every record of segment `N` has
//!   `seq >= N`. Readers get records in `seq` order; the numbers may have gaps (corruption,
//!   dropped segments, failed groups).
//! - **At-least-once**: a record is deleted only when every consumer acknowledged it (or when
//!   `drop_oldest` makes room, counted in `dropped_records_total`). Acknowledgements are
//!   persisted in the background, so after a crash a consumer may see its last acknowledged
//!   records again; a missing or corrupt cursor restarts the consumer at the oldest record.
//! - **Bounded**: Σ segment bytes ≤ `max_bytes` (checked before every append); a single
//!   record (32-byte header + payload) must fit in `segment_bytes` (else `TooLarge`).
//! - **Disk full** (ENOSPC, EDQUOT, EFBIG) is a full buffer, not a crash: the partial write is
//!   truncated away, then under `drop_oldest` the oldest segment is deleted and the write
//!   retried once; otherwise the appends get `Full`. Deleting never needs free space (whole
//!   files are unlinked; nothing is rewritten).
//!
//! # Crashes, step by step
//!
//! | crash during                   | state after restart                                          |
//! |--------------------------------|--------------------------------------------------------------|
//! | a group's `writev`             | torn tail in the last segment: truncated; appends were not acknowledged |
//! | fsync (`always`)               | records may or may not be there; not acknowledged either way  |
//! | rotation (new segment created) | possibly an empty last segment: becomes the active one       |
//! | a group spanning a rotation    | invalid tail in the older segment: copied aside, counted as corrupt (never acknowledged) |
//! | cursor write                   | old or new cursor (rename is atomic); stale `.tmp` deleted   |
//! | segment deletion               | the segment is there or not; if there, deleted again later   |
//! | torn-tail truncation at open   | same torn tail found again and truncated                     |
//!
//! Corruption (bit rot, manual edits) anywhere but the tail of the last segment is skipped,
//! counted (`corrupt_records_total`, `RecoveryReport`) and copied to `corrupt/`, at start-up
//! and when a reader meets it later; the records after it are still delivered.
//!
//! # Limits
//!
//! Payloads up to `segment_bytes - 32` (and < 4 GiB). `max_bytes` should be at least twice
//! `segment_bytes` (config validation enforces it) so `drop_oldest` can always make room.
//! The append queue is unbounded: callers bound concurrency (the HTTP layer does).

pub mod config;
mod cursor;
mod housekeeper;
mod inspect;
mod io;
mod metrics;
mod reader;
mod record;
mod recovery;
mod scan;
mod segment;
mod state;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

pub use inspect::{ConsumerReport, Export, InspectReport, SegmentReport, export, inspect};
pub use metrics::DropReason;
pub use reader::Reader;
pub use record::MAX_SEQ;

use housekeeper::HkMsg;
use io::{Fs, RealFs};
use metrics::BufferMetrics;
use state::{Limits, Shared};
use writer::{AppendReq, Writer, WriterMsg};

use crate::buffer::config::BufferConfig;

/// Bytes of the header in front of every payload on disk.
pub const RECORD_HEADER_LEN: usize = record::HEADER_LEN;

/// Why the buffer cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A real I/O failure (cannot create or read the directory, permission denied, a read
    /// failed). Not caused by buffer contents. Retrying may help if the cause is transient.
    #[error("buffer I/O error at {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process (or another `Buffer` in this one) holds the directory's `LOCK`. Retry
    /// after it exits.
    #[error("buffer directory {0} is locked by another process")]
    Locked(PathBuf),
    /// The buffer was closed (or its last handle dropped). Not retryable.
    #[error("buffer is closed")]
    Closed,
}

/// Why an append was refused. Nothing of a refused append is acknowledged (some of its
/// records may still have been written: at-least-once).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `max_bytes` reached under `block` (or nothing left to drop), or the disk is full.
    /// Retry after `retry_after` (the caller should answer 429/503 with `Retry-After`).
    #[error("buffer full; retry after {retry_after:?}")]
    Full {
        /// Suggested delay.
        retry_after: Duration,
    },
    /// One record (32-byte header + payload, `size`) is larger than a segment (`limit` =
    /// `segment_bytes`), or the whole batch is larger than the buffer (`limit` = `max_bytes`).
    /// Nothing was written. Never retry.
    #[error("record of {size} bytes exceeds the segment size {limit}")]
    TooLarge {
        /// Header + payload bytes of the offending record (or of the whole batch).
        size: usize,
        /// `segment_bytes` (or `max_bytes`).
        limit: u64,
    },
    /// Writing or fsyncing failed (not for lack of space); the partial write was removed.
    /// Retrying may help; `is_writable()` is false for a few seconds.
    #[error("buffer write failed: {0}")]
    Io(std::io::Error),
    /// The buffer is closed. Not retryable.
    #[error("buffer is closed")]
    Closed,
    /// The append's sequence numbers would pass [`MAX_SEQ`] (reachable only from a crafted or
    /// damaged cursor or record that recovery still found plausible). Nothing was written. Never
    /// retry: move the buffer directory aside (after `buffer export`) to start numbering afresh.
    #[error(
        "buffer sequence numbers exhausted (next would be {next_seq}, the largest is {MAX_SEQ}); move the buffer directory aside to start afresh"
    )]
    SequenceExhausted {
        /// The number the append would have started at.
        next_seq: u64,
    },
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segments after recovery.
    pub segments: usize,
    /// Valid records after recovery.
    pub records: u64,
    /// Bytes of a torn tail truncated from the last segment.
    pub torn_tail_bytes: u64,
    /// Records lost to corruption (at least one per corrupt region), skipped and copied aside.
    pub corrupt_records: u64,
    /// Bytes of corrupt regions.
    pub corrupt_bytes: u64,
    /// Consumers whose cursor was corrupt (restarted from the oldest record).
    pub cursors_reset: u64,
    /// Unexpected files left alone in the directory.
    pub ignored_files: u64,
}

/// Sequence numbers given to one append (`first_seq > last_seq` for an empty one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first payload.
    pub first_seq: u64,
    /// Sequence number of the last payload.
    pub last_seq: u64,
}

/// Told when the buffer drops records before every consumer acknowledged them.
pub trait DropObserver: Send + Sync {
    /// The segment holding `first_seq..=last_seq` was dropped (records in that range some
    /// consumer had not acknowledged are gone).
    fn records_dropped(&self, first_seq: u64, last_seq: u64);
}

/// One buffered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// When the writer appended it (ms since the Unix epoch).
    pub appended_at_ms: u64,
    /// The payload, as appended.
    pub payload: Bytes,
}

/// Size and age of the buffer.
#[derive(Debug, Clone, Default)]
pub struct BufferStats {
    /// Bytes of all segments.
    pub bytes: u64,
    /// Records in all segments (acknowledged ones included until their segment is deleted).
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// Age of the oldest record some consumer has not acknowledged (estimated from a sparse
    /// index: may be too old by up to about a second).
    pub oldest_unacked_age: Option<Duration>,
}

/// The buffer. Cheap to clone (clones share one buffer); `Send + Sync`. The writer and
/// housekeeper threads stop, and the directory lock is released, on [`close`](Buffer::close)
/// or when the last clone is dropped (which waits for them).
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("path", &self.inner.shared.dir)
            .field("closed", &self.inner.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriterMsg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Buffer {
    /// Opens (creating if needed) and recovers the buffer in `config.path` for `consumers`,
    /// registering its metrics into `registry`. Blocks while scanning the segments (every
    /// record's checksum is verified: about a second per GiB).
    ///
    /// A segment is deleted once every consumer acknowledged its records; with no consumers,
    /// nothing is deleted except by `drop_oldest`.
    ///
    /// Errors: [`BufferError::Locked`] if another process holds the directory;
    /// [`BufferError::Io`] on a real I/O failure. Never because of the buffer's contents.
    pub fn open(
        config: &BufferConfig,
        consumers: &[&str],
        registry: &mut Registry,
    ) -> Result<(Buffer, RecoveryReport), BufferError> {
        let metrics = BufferMetrics::register(registry);
        Self::open_with(config, consumers, metrics, Arc::new(RealFs))
    }

    pub(crate) fn open_with(
        config: &BufferConfig,
        consumers: &[&str],
        metrics: BufferMetrics,
        fs: Arc<dyn Fs>,
    ) -> Result<(Buffer, RecoveryReport), BufferError> {
        let dir = config.path.clone();
        let rec = recovery::recover(&dir, &*fs, consumers, &metrics)?;
        let (hk_tx, hk_rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(
            dir.clone(),
            Limits::from(config),
            fs,
            metrics,
            rec.state,
            hk_tx,
        ));
        let lock = Arc::new(rec.lock);
        let (writer_tx, writer_rx) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&shared),
            rec.active,
            rec.next_seq,
            Arc::clone(&lock),
        );
        let spawn_error = |source| BufferError::Io {
            path: dir.clone(),
            source,
        };
        let mut threads = vec![
            std::thread::Builder::new()
                .name("buffer-writer".into())
                .spawn(move || writer.run(writer_rx))
                .map_err(spawn_error)?,
        ];
        let hk_shared = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("buffer-housekeeper".into())
                .spawn(move || housekeeper::run(hk_shared, hk_rx, lock))
                .map_err(spawn_error)?,
        );
        shared.refresh_age();
        let report = rec.report;
        tracing::info!(
            path = %dir.display(),
            segments = report.segments,
            records = report.records,
            torn_tail_bytes = report.torn_tail_bytes,
            corrupt_records = report.corrupt_records,
            "buffer opened"
        );
        let buffer = Buffer {
            inner: Arc::new(Inner {
                shared,
                writer: writer_tx,
                threads: Mutex::new(threads),
            }),
        };
        Ok((buffer, report))
    }

    /// Appends `payloads` as consecutive records and returns once they are durable (see the
    /// module docs for what that means under each fsync policy). Concurrent appends are
    /// grouped into one write and one fsync.
    ///
    /// Errors: `TooLarge` (nothing written), `Full` (retry later), `Io`, `Closed`. An empty
    /// `payloads` writes nothing and returns an empty range.
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Appended, AppendError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return Err(AppendError::Closed);
        }
        let limit = shared.limits.segment_bytes;
        let mut bytes = 0u64;
        let mut crcs = Vec::with_capacity(payloads.len());
        for p in &payloads {
            let size = RECORD_HEADER_LEN.saturating_add(p.len());
            if size as u64 > limit || u32::try_from(p.len()).is_err() {
                return Err(AppendError::TooLarge { size, limit });
            }
            bytes += size as u64;
            crcs.push(record::payload_crc(p));
        }
        if bytes > shared.limits.max_bytes {
            // Could never fit, however much is dropped or acknowledged.
            return Err(AppendError::TooLarge {
                size: usize::try_from(bytes).unwrap_or(usize::MAX),
                limit: shared.limits.max_bytes,
            });
        }
        if payloads.is_empty() {
            let next = shared.lock().last_seq + 1;
            return Ok(Appended {
                first_seq: next,
                last_seq: next - 1,
            });
        }
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            payloads,
            crcs,
            bytes,
            reply,
        };
        self.inner
            .writer
            .send(WriterMsg::Append(req))
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// A reader for `consumer`, starting after its acknowledgement (after a restart: at
    /// cursor + 1; without a cursor: at the oldest record). A consumer not passed to `open` is
    /// registered now (reading its cursor file if one exists) and holds back deletion of
    /// segments from then on, until the process exits.
    pub fn reader(&self, consumer: &str) -> Reader {
        let shared = &self.inner.shared;
        let known = shared.lock().consumers.contains_key(consumer);
        let persisted = if known {
            None
        } else {
            cursor::read(&shared.dir, consumer).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable buffer cursor; consumer starts from the oldest record");
                None
            })
        };
        let acked = reader::register_consumer(&mut shared.lock(), consumer, persisted);
        Reader::new(Arc::clone(shared), consumer.to_owned(), acked)
    }

    /// Tells `observer` the sequence numbers of every segment dropped from now on (under
    /// `when_full = "drop_oldest"` or a full disk). Only the first observer set is kept.
    pub fn set_drop_observer(&self, observer: Arc<dyn DropObserver>) {
        let _ = self
            .inner
            .shared
            .drop_observer
            .set(state::ObserverSlot(observer));
    }

    /// Makes `consumer` give way when the buffer is full: if the oldest segment is then held
    /// only by yielding consumers (every other consumer acknowledged it), they skip its
    /// unacknowledged records (counted as dropped with reason `output_lag`) and it is deleted,
    /// before `when_full` applies. A stalled secondary output (the OTLP output) thus never
    /// makes the buffer refuse or drop what the collector has not received yet.
    pub fn yield_when_full(&self, consumer: &str) {
        let shared = &self.inner.shared;
        let mut yielding = shared
            .yielding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !yielding.iter().any(|c| c == consumer) {
            yielding.push(consumer.to_owned());
        }
    }

    /// A reader of the records after `after_seq` for no consumer (to rebuild in-memory views
    /// such as the trace index): it does not hold back segment deletion and cannot acknowledge.
    pub fn replay_reader(&self, after_seq: u64) -> Reader {
        Reader::read_only(Arc::clone(&self.inner.shared), after_seq)
    }

    /// The sequence number of the newest published record (0 if none ever was).
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.lock().last_seq
    }

    /// `consumer`'s acknowledgement, if it is registered.
    pub fn acked(&self, consumer: &str) -> Option<u64> {
        self.inner
            .shared
            .lock()
            .consumers
            .get(consumer)
            .map(|c| c.acked)
    }

    /// Size, record count, segment count and oldest unacknowledged age (also refreshes the
    /// age gauge).
    pub fn stats(&self) -> BufferStats {
        let shared = &self.inner.shared;
        let age = shared.refresh_age();
        let st = shared.lock();
        BufferStats {
            bytes: st.total_bytes,
            records: st.total_records,
            segments: st.segments.len(),
            oldest_unacked_age: age,
        }
    }

    /// Whether appends are expected to succeed: false after a `Full` under `block` (until
    /// acknowledgements free space), for a few seconds after a disk error, and after close.
    pub fn is_writable(&self) -> bool {
        self.inner.shared.is_writable()
    }

    /// Writes what is queued, fsyncs everything (whatever the policy), persists every cursor,
    /// stops the threads and releases the lock. Later appends, reads and acks get `Closed`.
    ///
    /// Errors: [`BufferError::Io`] if the final fsync or a cursor write failed.
    pub async fn close(&self) -> Result<(), BufferError> {
        let shared = Arc::clone(&self.inner.shared);
        let (tx, rx) = oneshot::channel();
        let flushed = match self.inner.writer.send(WriterMsg::Close(Some(tx))) {
            Ok(()) => rx.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        shared.closed.store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        shared.wake_housekeeper(HkMsg::Shutdown(Some(tx)));
        let persisted = rx.await.unwrap_or(Ok(()));
        shared.notify_readers();
        let threads = std::mem::take(
            &mut *self
                .inner
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        flushed.and(persisted).map_err(|source| BufferError::Io {
            path: shared.dir.clone(),
            source,
        })
    }

    /// fsyncs everything appended so far (whatever the policy) and persists every cursor now.
    ///
    /// Errors: [`BufferError::Closed`] after close; [`BufferError::Io`] if an fsync or a cursor
    /// write failed.
    pub async fn flush(&self) -> Result<(), BufferError> {
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriterMsg::Flush(tx))
            .map_err(|_| BufferError::Closed)?;
        let flushed = rx.await.map_err(|_| BufferError::Closed)?;
        let (tx, rx) = oneshot::channel();
        shared.wake_housekeeper(HkMsg::Flush(tx));
        let persisted = rx.await.map_err(|_| BufferError::Closed)?;
        flushed.and(persisted).map_err(|source| BufferError::Io {
            path: shared.dir.clone(),
            source,
        })
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.writer.send(WriterMsg::Close(None));
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake_housekeeper(HkMsg::Shutdown(None));
        self.shared.notify_readers();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

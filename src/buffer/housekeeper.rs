//! The housekeeper thread: persists acknowledgement cursors (coalescing many acks into one
//! atomic cursor write), deletes segments every consumer has acknowledged, and refreshes the
//! oldest-unacknowledged-age gauge. It runs on its own thread so `Reader::ack` never blocks on
//! file I/O and the writer's group commits never wait for cursor fsyncs.
//!
//! Coalescing: acknowledgements move many times a second under load; the cursor files are
//! written at most once per [`COALESCE`] (each write is a temp file, an fsync and a rename),
//! except when a `flush` or `close` waits, which is served at once. An acknowledgement is thus
//! persisted at most [`COALESCE`] after it was made (plus the write itself); a crash before that
//! only means the consumer sees those records again (at-least-once). Readers wake the thread
//! once per pending round, not once per acknowledgement (`Shared::wake_housekeeper`).
//!
//! Ordering: a segment is unlinked only after it left the published list (under the state lock),
//! so no reader is positioned in it (every reader's position is past its consumer's
//! acknowledgement, which is past the segment). Deleting only ever unlinks whole files, which
//! needs no free space.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cursor;
use super::io::clone_error;
use super::state::Shared;

/// How often the housekeeper wakes up without being asked.
const TICK: Duration = Duration::from_secs(1);
/// Shortest time between two rounds of cursor writes, unless a flush or a close waits.
pub(crate) const COALESCE: Duration = Duration::from_millis(100);

/// A request to the housekeeper.
#[derive(Debug)]
pub(crate) enum HkMsg {
    /// Acknowledgements moved or segments were sealed: persist cursors, collect garbage.
    Wake,
    /// Persist every cursor now and report the outcome.
    Flush(oneshot::Sender<io::Result<()>>),
    /// Persist every cursor and exit.
    Shutdown(Option<oneshot::Sender<io::Result<()>>>),
}

/// The thread's body. Holds the directory lock until it returns.
pub(crate) fn run(shared: Arc<Shared>, rx: mpsc::Receiver<HkMsg>, _lock: Arc<File>) {
    let mut stop = false;
    let mut last_round = Instant::now();
    while !stop {
        let mut replies = Vec::new();
        match rx.recv_timeout(TICK) {
            Ok(msg) => take(msg, &mut replies, &mut stop),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
        }
        // Coalesce: wait out the rest of `COALESCE` since the last round, unless someone
        // waits for the outcome.
        let due = last_round + COALESCE;
        loop {
            while let Ok(msg) = rx.try_recv() {
                take(msg, &mut replies, &mut stop);
            }
            let now = Instant::now();
            if stop || !replies.is_empty() || now >= due {
                break;
            }
            match rx.recv_timeout(due - now) {
                Ok(msg) => take(msg, &mut replies, &mut stop),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
            }
        }
        // Cleared before the state is read, so an acknowledgement made after this point
        // wakes the thread again.
        shared.housekeeping_requested.store(false, Ordering::SeqCst);
        last_round = Instant::now();
        let persisted = persist_cursors(&shared);
        collect_garbage(&shared);
        shared.refresh_age();
        for reply in replies {
            let _ = reply.send(persisted.as_ref().map(|_| ()).map_err(clone_error));
        }
    }
}

/// Notes what `msg` asks of this round.
fn take(msg: HkMsg, replies: &mut Vec<oneshot::Sender<io::Result<()>>>, stop: &mut bool) {
    match msg {
        HkMsg::Wake => {}
        HkMsg::Flush(reply) => replies.push(reply),
        HkMsg::Shutdown(reply) => {
            *stop = true;
            replies.extend(reply);
        }
    }
}

/// Writes every cursor whose acknowledgement moved since it was last written.
pub(crate) fn persist_cursors(shared: &Shared) -> io::Result<()> {
    let dirty: Vec<(String, u64)> = shared
        .lock()
        .consumers
        .iter()
        .filter(|(_, c)| c.acked > c.persisted)
        .map(|(name, c)| (name.clone(), c.acked))
        .collect();
    let mut first_error = None;
    for (name, acked) in dirty {
        match cursor::write(&*shared.fs, &shared.dir, &name, acked) {
            Ok(()) => {
                if let Some(c) = shared.lock().consumers.get_mut(&name) {
                    c.persisted = c.persisted.max(acked);
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "cannot persist buffer cursor");
                shared.lock().persist_error = Some(clone_error(&e));
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes every segment, other than the last (active) one, that is empty or whose records
/// every consumer acknowledged. Returns how many were deleted.
pub(crate) fn collect_garbage(shared: &Shared) -> usize {
    let victims: Vec<u64> = {
        let st = shared.lock();
        let min_acked = st.min_acked();
        let active = st.segments.keys().next_back().copied();
        st.segments
            .values()
            .filter(|m| Some(m.id) != active && (m.records == 0 || m.last_seq <= min_acked))
            .map(|m| m.id)
            .collect()
    };
    let deleted = victims
        .into_iter()
        .filter(|&id| shared.remove_segment(id, None))
        .count();
    if deleted > 0 {
        shared.full.store(false, Ordering::Relaxed);
    }
    deleted
}

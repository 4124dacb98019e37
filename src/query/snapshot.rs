//! The trace index across restarts: a snapshot file saved periodically and at shutdown, and a
//! replay of the buffer records appended after it.
//!
//! The snapshot (`<buffer.path>/query-state/index.snapshot`, written with
//! [`crate::state_file`]: atomic, CRC-checked) holds every trace the index holds, least
//! recently updated first, each with its age and its runs' buffer sequence numbers, delivery
//! states and exact JSON. Its size is bounded by `query.max_bytes` plus a few bytes per run.
//!
//! Guarantees after a restart:
//! - Clean shutdown: the index is what it was (ages carried over, so `query.retention` keeps
//!   counting).
//! - Crash (`kill -9`): the last snapshot (at most [`SNAPSHOT_EVERY`] old) plus every run still in
//!   the buffer with a sequence number after the snapshot's newest one; runs the collector
//!   acknowledged before the restart are shown delivered. What can be missing: traces delivered
//!   and removed from the buffer within the last interval before the crash, and a dead-letter
//!   outcome from that interval (shown as delivered).
//! - A missing, torn or foreign snapshot is logged and ignored (the buffer replay still runs).
//!   The snapshot is a convenience: nothing about delivery depends on it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::index::SavedTrace;
use super::{Delivery, QueryIndex};
use crate::buffer::Buffer;
use crate::state_file;

/// How often a changed index is saved.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

const MAGIC: &[u8; 8] = b"DQSQIDX1";

fn delivery_code(d: Delivery) -> u8 {
    match d {
        Delivery::Pending => 0,
        Delivery::Delivered => 1,
        Delivery::DeadLettered => 2,
        Delivery::Dropped => 3,
    }
}

fn delivery_of(code: u8) -> Option<Delivery> {
    match code {
        0 => Some(Delivery::Pending),
        1 => Some(Delivery::Delivered),
        2 => Some(Delivery::DeadLettered),
        3 => Some(Delivery::Dropped),
        _ => None,
    }
}

/// Writes traces: magic, trace count `u32`, then per trace `id_len u32, id, age_ms u64,
/// run_count u32`, then per run `seq u64, delivery u8, json_len u32, json` (little endian).
fn encode(traces: &[SavedTrace], out: &mut dyn Write) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&(traces.len() as u32).to_le_bytes())?;
    for t in traces {
        out.write_all(&(t.id.len() as u32).to_le_bytes())?;
        out.write_all(t.id.as_bytes())?;
        let age_ms = u64::try_from(t.age.as_millis()).unwrap_or(u64::MAX);
        out.write_all(&age_ms.to_le_bytes())?;
        out.write_all(&(t.runs.len() as u32).to_le_bytes())?;
        for (seq, delivery, json) in &t.runs {
            out.write_all(&seq.to_le_bytes())?;
            out.write_all(&[delivery_code(*delivery)])?;
            out.write_all(&(json.len() as u32).to_le_bytes())?;
            out.write_all(json)?;
        }
    }
    Ok(())
}

/// A cursor over a snapshot body that fails (instead of panicking) past its end.
struct Cursor {
    body: Bytes,
    at: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> Result<Bytes, &'static str> {
        let end = self.at.checked_add(n).ok_or("truncated")?;
        if end > self.body.len() {
            return Err("truncated");
        }
        let b = self.body.slice(self.at..end);
        self.at = end;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Decodes what [`encode`] wrote.
fn decode(body: Vec<u8>) -> Result<Vec<SavedTrace>, &'static str> {
    let mut c = Cursor {
        body: Bytes::from(body),
        at: 0,
    };
    if c.take(MAGIC.len())?.as_ref() != MAGIC {
        return Err("not a trace index snapshot");
    }
    let count = c.u32()?;
    let mut traces = Vec::new();
    for _ in 0..count {
        let id_len = c.u32()? as usize;
        let id = String::from_utf8(c.take(id_len)?.to_vec()).map_err(|_| "bad trace id")?;
        let age = Duration::from_millis(c.u64()?);
        let runs_len = c.u32()?;
        let mut runs = Vec::new();
        for _ in 0..runs_len {
            let seq = c.u64()?;
            if seq > crate::buffer::MAX_SEQ {
                return Err("bad sequence number");
            }
            let delivery = delivery_of(c.take(1)?[0]).ok_or("bad delivery state")?;
            let len = c.u32()? as usize;
            runs.push((seq, delivery, c.take(len)?));
        }
        traces.push(SavedTrace { id, age, runs });
    }
    if c.at != c.body.len() {
        return Err("trailing bytes");
    }
    Ok(traces)
}

/// Saves the index to `path`.
pub fn save(index: &QueryIndex, path: &Path) -> io::Result<()> {
    let traces = index.saved();
    state_file::write_with(path, |w| encode(&traces, w))
}

/// Loads the snapshot at `path` into `index` (expired traces skipped). Returns the highest
/// buffer sequence number it held (0 if none). Problems are logged, never fatal.
pub fn load(index: &QueryIndex, path: &Path) -> u64 {
    let body = match state_file::read(path) {
        Ok(Some(body)) => body,
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "trace index snapshot ignored");
            return 0;
        }
    };
    match decode(body) {
        Ok(traces) => {
            let newest = traces
                .iter()
                .flat_map(|t| t.runs.iter().map(|r| r.0))
                .max()
                .unwrap_or(0);
            let n = traces.len();
            index.restore(traces);
            tracing::info!(traces = n, "trace index restored from its snapshot");
            newest
        }
        Err(reason) => {
            tracing::warn!(path = %path.display(), reason, "trace index snapshot ignored");
            0
        }
    }
}

/// Indexes the records of `buffer` with a sequence number after `after_seq` that were already
/// there when called, then settles as delivered everything the collector's consumer
/// (`consumer`) had acknowledged. Reads without holding back segment deletion; a record that
/// cannot be read is skipped (the forwarder reports it).
pub async fn replay(index: &QueryIndex, buffer: &Buffer, consumer: &str, after_seq: u64) -> u64 {
    let last = buffer.last_seq();
    let mut indexed = 0u64;
    if last > after_seq {
        let mut reader = buffer.replay_reader(after_seq);
        'read: loop {
            // Records deleted meanwhile leave nothing to wait for: stop when idle.
            let batch = tokio::time::timeout(
                Duration::from_secs(1),
                reader.next_batch(4096, 8 << 20, Duration::ZERO),
            )
            .await;
            let Ok(Ok(records)) = batch else { break };
            let mut seq = 0;
            let mut runs = Vec::with_capacity(records.len());
            for r in records {
                if r.seq > last {
                    break;
                }
                seq = r.seq;
                runs.push((r.seq, r.payload));
            }
            index.ingest_envelopes(runs.iter().map(|(seq, p)| (*seq, p)));
            indexed += runs.len() as u64;
            if seq >= last || runs.is_empty() {
                break 'read;
            }
        }
    }
    if let Some(acked) = buffer.acked(consumer) {
        index.settle_through(acked);
    }
    indexed
}

/// Saves `index` every [`SNAPSHOT_EVERY`] when it changed (dropping expired traces first, which
/// also keeps the gauges current), until `stop`; then saves once more.
pub async fn keep_saved(
    index: Arc<QueryIndex>,
    path: PathBuf,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut saved_at = u64::MAX;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(SNAPSHOT_EVERY) => false,
        };
        index.prune();
        let generation = index.generation();
        if generation != saved_at {
            let (ix, p) = (index.clone(), path.clone());
            match tokio::task::spawn_blocking(move || save(&ix, &p)).await {
                Ok(Ok(())) => saved_at = generation,
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save the trace index snapshot");
                }
                Err(e) => tracing::warn!(error = %e, "trace index snapshot task failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, trace: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"{id}","trace_id":"{trace}","parent_run_id":null,"name":"n","status":"succeeded","start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-01T00:00:01Z"}}"#
        ))
    }

    #[test]
    fn a_snapshot_restores_traces_delivery_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state_dir::query_snapshot(dir.path());
        let a = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        a.ingest_json(1, &[run("r1", "t1"), run("r2", "t1")]);
        a.ingest_json(3, &[run("r3", "t2")]);
        a.mark(Delivery::Delivered, &mut [1u64, 2].into_iter());
        a.mark(Delivery::DeadLettered, &mut [3u64].into_iter());
        save(&a, &path).unwrap();

        let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        assert_eq!(load(&b, &path), 3);
        assert_eq!(b.len(), 2);
        assert_eq!(b.bytes(), a.bytes());
        let t1 = b.get("t1").unwrap();
        assert_eq!(t1.summary.delivery, Delivery::Delivered);
        assert_eq!(t1.runs, a.get("t1").unwrap().runs);
        assert_eq!(
            b.get("t2").unwrap().summary.delivery,
            Delivery::DeadLettered
        );
        assert_eq!(b.saved()[0].id, "t1", "least recently updated first");
    }

    #[test]
    fn pending_runs_restored_are_settled_by_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state_dir::query_snapshot(dir.path());
        let a = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        a.ingest_json(7, &[run("r1", "t1"), run("r2", "t2")]);
        save(&a, &path).unwrap();
        let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        load(&b, &path);
        b.settle_through(7);
        assert_eq!(b.get("t1").unwrap().summary.delivery, Delivery::Delivered);
        assert_eq!(b.get("t2").unwrap().summary.delivery, Delivery::Pending);
        b.mark(Delivery::Delivered, &mut [8u64].into_iter());
        assert_eq!(b.get("t2").unwrap().summary.delivery, Delivery::Delivered);
    }

    #[test]
    fn damaged_or_foreign_snapshots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state_dir::query_snapshot(dir.path());
        let a = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        a.ingest_json(1, &[run("r1", "t1")]);
        save(&a, &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        // Every truncation and every flipped byte: ignored (CRC), never a panic.
        for cut in [0, 3, 8, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
            assert_eq!(load(&b, &path), 0);
            assert!(b.is_empty());
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
            assert_eq!(load(&b, &path), 0);
        }
        // A well-formed file with a body that lies about its lengths.
        for body in [
            b"DQSQIDX1\xff\xff\xff\xff".to_vec(),
            b"NOTMAGIC\0\0\0\0".to_vec(),
        ] {
            state_file::write(&path, &body).unwrap();
            let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
            assert_eq!(load(&b, &path), 0);
        }
    }

    #[test]
    fn a_sequence_number_above_the_buffer_maximum_makes_the_snapshot_invalid() {
        let traces = |seq| {
            vec![SavedTrace {
                id: "t".into(),
                age: Duration::ZERO,
                runs: vec![(seq, Delivery::Pending, run("r", "t"))],
            }]
        };
        let body = |seq| {
            let mut body = Vec::new();
            encode(&traces(seq), &mut body).unwrap();
            body
        };
        assert!(decode(body(crate::buffer::MAX_SEQ)).is_ok());
        assert_eq!(
            decode(body(u64::MAX)).map(|_| ()),
            Err("bad sequence number")
        );
    }

    #[test]
    fn expired_traces_are_not_restored() {
        let traces = vec![SavedTrace {
            id: "old".into(),
            age: Duration::from_secs(7200),
            runs: vec![(1, Delivery::Delivered, run("r", "old"))],
        }];
        let b = QueryIndex::unregistered(1 << 20, Duration::from_secs(3600));
        let mut body = Vec::new();
        encode(&traces, &mut body).unwrap();
        b.restore(decode(body).unwrap());
        assert!(b.is_empty());
    }
}

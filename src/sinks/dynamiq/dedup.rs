//! Duplicate suppression: remembers which runs the collector has already accepted, so that an
//! identical copy sent again (the Dynamiq SDK's reused `DynamiqTracingCallbackHandler` re-sends
//! every earlier run on each flush) is acknowledged locally instead of forwarded again.
//!
//! Owns: the run [`fingerprint`], the bounded memory of delivered fingerprints ([`Dedup`]) and
//! its snapshot file.
//!
//! Fingerprint: XXH3-128 of the client key (passthrough records; a separate project must still
//! get its copy) followed by the run's JSON bytes as stored (as the client sent them). So the
//! same run sent again byte for byte is one fingerprint, and a run whose content changed in any
//! way (an `end_time`, a `status`, an `output` added) is another and is forwarded. Nothing is
//! canonicalised (whitespace, key order, number spelling): the Dynamiq SDK writes a run it
//! re-sends with the same bytes (checked on the captured reused-handler flushes, which are
//! compact and byte-identical), and a copy a client re-formats is simply forwarded again (never
//! lost). Hashing the bytes as they are runs at XXH3's speed (BENCHMARKS §4); the version 1
//! fingerprint, which skipped insignificant whitespace, had to walk every string and cost ~10 %
//! of the sidecar's CPU under ingest load.
//!
//! Scope: runs the OTLP converter made from foreign spans (their `id`, written first, is a
//! UUIDv8, see `convert::ids`; [`is_converted_span_run`]) are never suppressed nor fingerprinted:
//! an OTLP exporter sends each span once (a re-export after an error is the exporter's
//! at-least-once retry, which the deterministic run ids already make idempotent at the
//! collector), so only Dynamiq runs (SDK ids are UUIDv4), which a reused handler re-sends, are
//! worth the cost.
//!
//! Guarantees:
//! - A run is suppressed only when a run with the same fingerprint was answered 2xx by the
//!   collector (fingerprints are recorded after the 2xx, never before, so a failed, retried,
//!   dead-lettered or abandoned delivery suppresses nothing), or when an identical copy comes
//!   earlier in the same buffer batch (it is sent in its place; the copy is acknowledged only once
//!   the buffer is acknowledged past the earlier one).
//! - A suppressed run is acknowledged in the buffer like a delivered run and counted in
//!   `dynamiq_sidecar_forward_dedup_suppressed_runs_total` / `..._dedup_saved_bytes_total`.
//! - Memory is bounded by `forward.dedup_entries` fingerprints (16 bytes each plus the LRU's
//!   overhead, about 6 MiB at the default 100 000); the least recently seen one is evicted first
//!   (`..._dedup_evictions_total`). An evicted run sent again is forwarded again: at-least-once
//!   is never traded for deduplication.
//! - Restarts: at a clean stop (drain or drain timeout) the fingerprints are written to
//!   `<buffer.path>/forward-state/dedup.snapshot` (magic, version, a hash of `upstream.url`, the
//!   entries oldest first, CRC32) through a temporary file and a rename, and loaded at the next
//!   start. A snapshot that is missing, truncated, corrupt, of another version or written for
//!   another collector URL is ignored (logged) and memory starts empty. After a crash the last
//!   clean snapshot is loaded; it only names runs that were accepted, so it is still right. So a
//!   restart causes at most one extra copy of each run that was in flight (unacknowledged in the
//!   buffer) or delivered since the last clean stop.
//!
//! Fails: never on input (any bytes have a fingerprint). Snapshot I/O errors are returned to the
//! caller, which logs them.

use std::io;
use std::path::{Path, PathBuf};

use crate::state_file;
use lru::LruCache;
use xxhash_rust::xxh3::Xxh3;

/// Identity of a run's content (and client key), see the module doc.
pub type Fingerprint = u128;

/// Snapshot file magic.
const MAGIC: &[u8; 8] = b"DQSDEDUP";
/// Snapshot format version. 2: fingerprints of the bytes as stored (1 skipped insignificant
/// whitespace; a version 1 snapshot is ignored, which costs at most one extra copy of a run).
const VERSION: u32 = 2;
/// Header: magic, version, url hash, count.
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

/// Whether `run` was made by the OTLP converter from a foreign span: its JSON starts with
/// `{"id":"` and a hyphenated lowercase UUID of version 8 (RFC 9562 variant), as the converter
/// writes it. A client's own run with such an id is merely not deduplicated.
pub fn is_converted_span_run(run: &[u8]) -> bool {
    let Some(id) = run.strip_prefix(br#"{"id":""#) else {
        return false;
    };
    id.len() > 36
        && id[36] == b'"'
        && [8, 13, 18, 23].iter().all(|&i| id[i] == b'-')
        && id[14] == b'8'
        && matches!(id[19], b'8' | b'9' | b'a' | b'b')
}

/// The fingerprint of one run (see the module doc).
pub fn fingerprint(run: &[u8], client_key: Option<&str>) -> Fingerprint {
    let mut h = Xxh3::new();
    match client_key {
        Some(k) => {
            h.update(&[1]);
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k.as_bytes());
        }
        None => h.update(&[0]),
    }
    h.update(run);
    h.digest128()
}

/// Why a snapshot was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// It is not a valid snapshot for this collector.
    #[error("{path} ignored: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The bounded memory of delivered fingerprints. `forward.dedup_entries = 0` gives a disabled
/// one that never suppresses nor remembers.
#[derive(Debug)]
pub struct Dedup {
    /// Grows as fingerprints arrive (`LruCache::new` would allocate, and touch, a table for
    /// the whole capacity at start-up: 2 MiB, 128 KiB of it resident, for the default);
    /// [`Dedup::record`] keeps it within `capacity`.
    lru: Option<LruCache<Fingerprint, ()>>,
    capacity: usize,
}

impl Dedup {
    /// Empty memory for up to `capacity` fingerprints (0 = disabled).
    pub fn new(capacity: usize) -> Self {
        Self {
            lru: (capacity > 0).then(LruCache::unbounded),
            capacity,
        }
    }

    /// Whether suppression is on.
    pub fn enabled(&self) -> bool {
        self.lru.is_some()
    }

    /// Fingerprints remembered.
    pub fn len(&self) -> usize {
        self.lru.as_ref().map_or(0, LruCache::len)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `fp` was delivered; a hit becomes the most recently seen.
    pub fn seen(&mut self, fp: Fingerprint) -> bool {
        self.lru.as_mut().is_some_and(|l| l.get(&fp).is_some())
    }

    /// Remembers a delivered run. Returns whether another fingerprint was evicted for it.
    pub fn record(&mut self, fp: Fingerprint) -> bool {
        let Some(lru) = self.lru.as_mut() else {
            return false;
        };
        let evicted = !lru.contains(&fp) && lru.len() >= self.capacity && lru.pop_lru().is_some();
        lru.put(fp, ());
        evicted
    }

    /// Encodes the memory as a snapshot for the collector whose URL hashes to `url_hash`.
    fn encode(&self, url_hash: u64) -> Vec<u8> {
        let n = self.len();
        let mut out = Vec::with_capacity(HEADER_LEN + n * 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&url_hash.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
        if let Some(lru) = &self.lru {
            // Oldest first, so that loading in order restores the recency order.
            for (fp, ()) in lru.iter().rev() {
                out.extend_from_slice(&fp.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a snapshot into a memory of `capacity` (the newest entries win when the snapshot
    /// holds more).
    fn decode(bytes: &[u8], capacity: usize, url_hash: u64) -> Result<Self, &'static str> {
        let body = bytes;
        if body.len() < HEADER_LEN {
            return Err("too short");
        }
        if &body[..8] != MAGIC {
            return Err("not a dedup snapshot");
        }
        let u32_at = |at: usize| {
            body.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let u64_at = |at: usize| {
            body.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if u32_at(8) != Some(VERSION) {
            return Err("unknown version");
        }
        if u64_at(12) != Some(url_hash) {
            return Err("written for another upstream.url");
        }
        let count = u64_at(20).ok_or("too short")?;
        let entries = &body[HEADER_LEN..];
        if !entries.len().is_multiple_of(16) || (entries.len() / 16) as u64 != count {
            return Err("entry count mismatch");
        }
        let mut dedup = Self::new(capacity);
        for chunk in entries.chunks_exact(16) {
            let fp = u128::from_le_bytes(chunk.try_into().map_err(|_| "bad entry")?);
            dedup.record(fp);
        }
        Ok(dedup)
    }

    /// Writes the snapshot (see [`state_file::write`]). A disabled memory removes any old
    /// snapshot instead.
    pub fn save(&self, path: &Path, url: &str) -> io::Result<()> {
        if !self.enabled() {
            return state_file::remove(path);
        }
        state_file::write(path, &self.encode(url_hash(url)))
    }

    /// Loads the snapshot at `path` into a memory of `capacity`. `Ok(None)` when there is none
    /// (or `capacity` is 0).
    pub fn load(path: &Path, capacity: usize, url: &str) -> Result<Option<Self>, SnapshotError> {
        if capacity == 0 {
            return Ok(None);
        }
        let invalid = |reason| SnapshotError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match state_file::read(path) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(state_file::ReadError::Io(source)) => {
                return Err(SnapshotError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(state_file::ReadError::Checksum) => return Err(invalid("checksum mismatch")),
        };
        Self::decode(&bytes, capacity, url_hash(url))
            .map(Some)
            .map_err(invalid)
    }
}

/// Identity of the collector a snapshot was written for.
fn url_hash(url: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(url.trim_end_matches('/').as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_one_fingerprint_and_any_change_is_another() {
        let a = fingerprint(br#"{"id":"a","x":[1,2],"s":"p q"}"#, None);
        assert_eq!(a, fingerprint(br#"{"id":"a","x":[1,2],"s":"p q"}"#, None));
        // Re-formatted: another fingerprint (forwarded again, never lost).
        assert_ne!(
            a,
            fingerprint(br#"{"id": "a", "x": [1, 2], "s": "p q"}"#, None)
        );
        // Changed content, another id, another client key: all different.
        assert_ne!(a, fingerprint(br#"{"id":"a","x":[1,2],"s":"pq"}"#, None));
        assert_ne!(a, fingerprint(br#"{"id":"a","x":[1,3],"s":"p q"}"#, None));
        assert_ne!(a, fingerprint(br#"{"id":"b","x":[1,2],"s":"p q"}"#, None));
        assert_ne!(
            a,
            fingerprint(br#"{"id":"a","x":[1,2],"s":"p q"}"#, Some("k"))
        );
        assert_ne!(
            fingerprint(b"{}", Some("k1")),
            fingerprint(b"{}", Some("k2"))
        );
        // The key's length is hashed: moving bytes between key and run is another fingerprint.
        assert_ne!(
            fingerprint(b"b{}", Some("a")),
            fingerprint(b"{}", Some("ab"))
        );
    }

    #[test]
    fn the_real_sdk_resends_a_run_with_the_same_bytes() {
        // Flushes 1 and 2 of a reused `DynamiqTracingCallbackHandler` (captured from SDK 0.69):
        // the second repeats the first's runs, which must fingerprint the same.
        let first = crate::model::parse_batch(include_bytes!(
            "../../../tests/fixtures/reused-handler-flush-1.json"
        ))
        .unwrap();
        let second = crate::model::parse_batch(include_bytes!(
            "../../../tests/fixtures/reused-handler-flush-2.json"
        ))
        .unwrap();
        let seen: std::collections::HashSet<Fingerprint> = first
            .runs
            .iter()
            .map(|r| fingerprint(r.json.as_bytes(), None))
            .collect();
        let repeated = second
            .runs
            .iter()
            .filter(|r| seen.contains(&fingerprint(r.json.as_bytes(), None)))
            .count();
        assert_eq!(repeated, first.runs.len());
        assert_eq!(second.runs.len(), 2 * first.runs.len());
    }

    #[test]
    fn runs_converted_from_foreign_spans_are_recognised_and_sdk_runs_are_not() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        for pb in [
            &include_bytes!("../../../tests/fixtures/otlp/genai-semconv.pb")[..],
            &include_bytes!("../../../tests/fixtures/otlp/openinference.pb")[..],
        ] {
            let request = ExportTraceServiceRequest::decode(pb).unwrap();
            let converted = crate::convert::convert_request(
                &request,
                &crate::convert::SpanConvertOptions::default(),
            );
            assert!(!converted.runs.is_empty());
            for run in &converted.runs {
                assert!(
                    is_converted_span_run(run),
                    "{}",
                    String::from_utf8_lossy(&run[..60.min(run.len())])
                );
            }
        }
        let sdk = include_str!("../../../tests/fixtures/reused-handler-flush-4.json");
        let v: serde_json::Value = serde_json::from_str(sdk).unwrap();
        for run in v["runs"].as_array().unwrap() {
            assert!(!is_converted_span_run(
                serde_json::to_string(run).unwrap().as_bytes()
            ));
        }
        for other in [
            &b""[..],
            b"{\"id\":\"",
            br#"{"id":"0196e6a4-1f2b-8c3d-9e4f-5a6b7c8d9e0f""#, // no closing brace needed
            br#"{"id":"0196e6a4-1f2b-4c3d-9e4f-5a6b7c8d9e0f","x":1}"#,
            br#"{"id":"0196e6a4-1f2b-8c3d-7e4f-5a6b7c8d9e0f","x":1}"#,
            br#"{ "id":"0196e6a4-1f2b-8c3d-9e4f-5a6b7c8d9e0f","x":1}"#,
        ] {
            let _ = is_converted_span_run(other);
        }
        assert!(is_converted_span_run(
            br#"{"id":"0196e6a4-1f2b-8c3d-9e4f-5a6b7c8d9e0f","x":1}"#
        ));
        assert!(!is_converted_span_run(
            br#"{"id":"0196e6a4-1f2b-4c3d-9e4f-5a6b7c8d9e0f","x":1}"#
        ));
    }

    #[test]
    fn any_bytes_have_a_fingerprint() {
        for junk in [
            &b""[..],
            b"\"",
            b"\\",
            b"\"\\",
            b"{\"a\":\"\\",
            b" \n ",
            &[0xff, 0xfe, b'"', 0x00],
        ] {
            let _ = fingerprint(junk, None);
        }
    }

    #[test]
    fn fingerprints_are_stable_across_versions() {
        // Snapshots keep fingerprints across upgrades: within a snapshot version the function
        // must not change. Version 2's definition, and values it gave when it was introduced.
        let run = br#"{"id": "a", "s": "x \" y\\", "n" : [1, 2]}"#;
        let mut keyed = vec![1u8];
        keyed.extend_from_slice(&1u64.to_le_bytes());
        keyed.extend_from_slice(b"k");
        keyed.extend_from_slice(run);
        assert_eq!(
            fingerprint(run, None),
            xxhash_rust::xxh3::xxh3_128(&[&[0u8][..], run].concat())
        );
        assert_eq!(
            fingerprint(run, Some("k")),
            xxhash_rust::xxh3::xxh3_128(&keyed)
        );
        assert_eq!(fingerprint(run, None), GOLDEN_NONE);
        assert_eq!(fingerprint(run, Some("k")), GOLDEN_KEYED);
    }

    const GOLDEN_NONE: Fingerprint = 0x149e_2ba2_be1c_a849_42be_4ed5_8b79_7950;
    const GOLDEN_KEYED: Fingerprint = 0x0b83_e42f_330d_f17f_30da_23e0_d351_a775;

    #[test]
    fn memory_is_bounded_and_evicts_the_least_recently_seen() {
        let mut d = Dedup::new(2);
        assert!(!d.record(1));
        assert!(!d.record(2));
        assert!(!d.record(2), "re-recording is not an eviction");
        assert!(d.seen(1)); // 1 is now the most recent
        assert!(d.record(3)); // evicts 2
        assert!(!d.seen(2));
        assert!(d.seen(1) && d.seen(3));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn zero_entries_disables_suppression() {
        let mut d = Dedup::new(0);
        assert!(!d.enabled());
        assert!(!d.record(1));
        assert!(!d.seen(1));
        assert!(d.is_empty());
    }

    #[test]
    fn a_snapshot_round_trips_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state_dir::dedup_snapshot(dir.path());
        let url = "http://collector:1";
        let mut d = Dedup::new(10);
        for fp in 1..=5u128 {
            d.record((fp << 64) | fp);
        }
        d.seen((1 << 64) | 1); // most recent
        d.save(&path, url).unwrap();

        // Loaded into a smaller memory: the most recent entries survive.
        let mut small = Dedup::load(&path, 2, url).unwrap().unwrap();
        assert_eq!(small.len(), 2);
        assert!(small.seen((1 << 64) | 1) && small.seen((5 << 64) | 5));
        let mut all = Dedup::load(&path, 10, &format!("{url}/")).unwrap().unwrap();
        assert_eq!(all.len(), 5);
        assert!((1..=5u128).all(|fp| all.seen((fp << 64) | fp)));

        assert!(matches!(
            Dedup::load(&path, 10, "http://other:1"),
            Err(SnapshotError::Invalid { .. })
        ));
        assert!(Dedup::load(&path, 0, url).unwrap().is_none());
        let good = std::fs::read(&path).unwrap();
        for cut in [0, 3, HEADER_LEN, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                matches!(
                    Dedup::load(&path, 10, url),
                    Err(SnapshotError::Invalid { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(Dedup::load(&path, 10, url).is_err());

        // Disabled: the old snapshot is removed; nothing there is fine too.
        Dedup::new(0).save(&path, url).unwrap();
        assert!(!path.exists());
        assert!(Dedup::load(&path, 10, url).unwrap().is_none());
        Dedup::new(0).save(&path, url).unwrap();
    }
}

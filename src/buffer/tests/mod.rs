//! Behaviour tests of the whole buffer (unit tests of the pure parts live beside them): the
//! helpers they share, and the one place they import the configuration types from.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;

use super::io::testing::FaultFs;
use super::metrics::{BufferMetrics, DropLabels};
use super::record::HEADER_LEN;
use super::*;
use crate::buffer::config::{BufferConfig, FsyncPolicy, WhenFull};

mod basic;
mod batches;
mod corruption;
mod cursors;
mod disk_faults;
mod durability;
mod initialization;
mod invariants;
mod recovery;
mod sequence;
mod size_limits;

const SEG: u64 = 4096;

fn config(dir: &Path) -> BufferConfig {
    BufferConfig {
        path: dir.join("buf"),
        max_bytes: 1 << 20,
        when_full: WhenFull::DropOldest,
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_millis(50),
        segment_bytes: SEG,
    }
}

fn open(cfg: &BufferConfig, consumers: &[&str]) -> (Buffer, RecoveryReport) {
    Buffer::open(cfg, consumers, &mut Registry::default()).expect("open")
}

fn open_fs(cfg: &BufferConfig, consumers: &[&str], fs: &FaultFs) -> (Buffer, RecoveryReport) {
    Buffer::open_with(cfg, consumers, BufferMetrics::new(), Arc::new(fs.clone())).expect("open")
}

/// A payload of exactly `len` bytes identifying `i`.
fn payload(i: u64, len: usize) -> Bytes {
    let mut v = format!("{{\"run\":{i}}}").into_bytes();
    v.resize(len.max(v.len()), b' ');
    Bytes::from(v)
}

fn payloads(range: std::ops::Range<u64>, len: usize) -> Vec<Bytes> {
    range.map(|i| payload(i, len)).collect()
}

async fn append_each(b: &Buffer, range: std::ops::Range<u64>, len: usize) {
    for i in range {
        b.append(vec![payload(i, len)]).await.expect("append");
    }
}

/// Reads until nothing arrives for a short while.
async fn drain(r: &mut Reader) -> Vec<Record> {
    let mut out = Vec::new();
    while let Ok(batch) = tokio::time::timeout(
        Duration::from_millis(150),
        r.next_batch(1000, usize::MAX, Duration::ZERO),
    )
    .await
    {
        out.extend(batch.expect("next_batch"));
    }
    out
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5A;
    f.write_all_at(&b, offset).unwrap();
}

fn dropped(b: &Buffer, reason: DropReason) -> u64 {
    b.shared()
        .metrics
        .dropped_records
        .get_or_create(&DropLabels { reason })
        .get()
}

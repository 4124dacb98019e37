//! Append throughput of the disk buffer, next to a raw baseline on the same disk.
//!
//! - `raw/write_then_fdatasync`: plain `File` writes of 1 MiB then one `fdatasync` (what
//!   `dd bs=1M conv=fdatasync` measures): the disk's streaming bandwidth.
//! - `append/<fsync>/<appenders>x<records per append>`: 18 KiB records appended by concurrent
//!   tasks, each awaiting its append before the next (as HTTP handlers do).
//!
//! Run: `cargo bench --bench buffer -- --warm-up-time 1 --measurement-time 5`. Files go to
//! `target/tmp` (same disk as the build).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::buffer::Buffer;
use dynamiq_sidecar::config::{BufferConfig, FsyncPolicy, WhenFull};
use prometheus_client::registry::Registry;

const RECORD: usize = 18 * 1024;
const MIB: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn open(dir: &Path, fsync: FsyncPolicy) -> Buffer {
    let config = BufferConfig {
        path: dir.join("buffer"),
        max_bytes: 1 << 30,
        when_full: WhenFull::DropOldest,
        fsync,
        fsync_interval: Duration::from_secs(1),
        segment_bytes: 64 * MIB as u64,
    };
    let (buffer, _) = Buffer::open(&config, &["bench"], &mut Registry::default()).expect("open");
    buffer
}

/// Appends `appends` batches of `batch` records from each of `appenders` tasks.
async fn append_all(buffer: &Buffer, appenders: usize, appends: usize, batch: usize) {
    let record = Bytes::from(vec![b'x'; RECORD]);
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let buffer = buffer.clone();
            let record = record.clone();
            tokio::spawn(async move {
                for _ in 0..appends {
                    buffer
                        .append(vec![record.clone(); batch])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("appender");
    }
}

fn raw_baseline(c: &mut Criterion, dir: &Path) {
    const TOTAL: usize = 64 * MIB;
    let chunk = vec![b'x'; MIB];
    let path = dir.join("raw");
    let mut group = c.benchmark_group("raw");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("write_then_fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let mut f = File::create(&path).expect("create");
                let started = Instant::now();
                for _ in 0..TOTAL / MIB {
                    f.write_all(&chunk).expect("write");
                }
                f.sync_data().expect("fdatasync");
                took += started.elapsed();
                drop(f);
                std::fs::remove_file(&path).expect("remove");
            }
            took
        })
    });
    group.finish();
}

fn appends(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let mut group = c.benchmark_group("append");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let cases: [(FsyncPolicy, &str, usize, usize, usize); 6] = [
        // (policy, name, appenders, records per append, MiB per iteration)
        (FsyncPolicy::Always, "always", 1, 1, 2),
        (FsyncPolicy::Always, "always", 32, 1, 32),
        (FsyncPolicy::Always, "always", 32, 16, 64),
        (FsyncPolicy::Never, "never", 1, 1, 32),
        (FsyncPolicy::Never, "never", 32, 1, 64),
        (FsyncPolicy::Never, "never", 32, 16, 64),
    ];
    for (policy, name, appenders, batch, mib) in cases {
        let sub = tempfile::tempdir_in(dir).expect("tempdir");
        let buffer = open(sub.path(), policy);
        let per_appender = (mib * MIB / RECORD / appenders / batch).max(1);
        let bytes = (appenders * per_appender * batch * RECORD) as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{name}/{appenders}x{batch}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        append_all(&buffer, appenders, per_appender, batch).await;
                    }
                    started.elapsed()
                })
            })
        });
        rt.block_on(buffer.close()).expect("close");
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    raw_baseline(c, dir.path());
    appends(c, dir.path());
}

criterion_group!(buffer, benches);
criterion_main!(buffer);

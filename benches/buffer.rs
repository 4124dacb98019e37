//! Append throughput of the disk buffer, next to a raw baseline on the same disk.
//!
//! - `raw/write_then_fdatasync`: plain `File` writes of 1 MiB then one `fdatasync` (what
//!   `dd bs=1M conv=fdatasync` measures): the disk's streaming bandwidth. `raw/fdatasync_every_*`:
//!   the same bytes with an fdatasync at the granularity of the buffer's commit groups.
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

/// Writes `TOTAL` bytes in 1 MiB writes, fdatasyncing every `sync_every` bytes and at the end.
fn raw_write(path: &Path, chunk: &[u8], total: usize, sync_every: usize) -> Duration {
    let mut f = File::create(path).expect("create");
    let started = Instant::now();
    let mut since_sync = 0;
    let mut written = 0;
    while written < total {
        let n = chunk
            .len()
            .min(total - written)
            .min(sync_every - since_sync);
        f.write_all(&chunk[..n]).expect("write");
        written += n;
        since_sync += n;
        if since_sync == sync_every {
            f.sync_data().expect("fdatasync");
            since_sync = 0;
        }
    }
    f.sync_data().expect("fdatasync");
    let took = started.elapsed();
    drop(f);
    std::fs::remove_file(path).expect("remove");
    took
}

/// One measured case.
enum Case {
    /// 64 MiB of plain writes, fdatasync every `sync_every` bytes.
    Raw {
        name: &'static str,
        sync_every: usize,
    },
    /// 18 KiB records from `appenders` tasks, `batch` per append, `mib` MiB per iteration.
    Append {
        policy: FsyncPolicy,
        appenders: usize,
        batch: usize,
        mib: usize,
    },
}

fn benches(c: &mut Criterion) {
    const RAW_TOTAL: usize = 64 * MIB;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let chunk = vec![b'x'; MIB];
    let rt = runtime();
    // Each `always` case runs right after the raw case with the same fsync granularity (the
    // disk of a shared VM drifts), so their ratio is the cost of the buffer itself.
    let cases = [
        Case::Raw {
            name: "raw/write_then_fdatasync",
            sync_every: RAW_TOTAL,
        },
        Case::Raw {
            name: "raw/fdatasync_every_576KiB",
            sync_every: 32 * RECORD,
        },
        Case::Append {
            policy: FsyncPolicy::Always,
            appenders: 32,
            batch: 1,
            mib: 32,
        },
        Case::Raw {
            name: "raw/fdatasync_every_9MiB",
            sync_every: 32 * 16 * RECORD,
        },
        Case::Append {
            policy: FsyncPolicy::Always,
            appenders: 32,
            batch: 16,
            mib: 64,
        },
        Case::Raw {
            name: "raw/fdatasync_every_18KiB",
            sync_every: RECORD,
        },
        Case::Append {
            policy: FsyncPolicy::Always,
            appenders: 1,
            batch: 1,
            mib: 2,
        },
        Case::Append {
            policy: FsyncPolicy::Never,
            appenders: 1,
            batch: 1,
            mib: 32,
        },
        Case::Append {
            policy: FsyncPolicy::Never,
            appenders: 32,
            batch: 1,
            mib: 64,
        },
        Case::Append {
            policy: FsyncPolicy::Never,
            appenders: 32,
            batch: 16,
            mib: 64,
        },
    ];
    let mut group = c.benchmark_group("buffer");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for case in cases {
        match case {
            Case::Raw { name, sync_every } => {
                // Fewer bytes when fsyncing often, so a sample stays short.
                let total = if sync_every < 64 * 1024 {
                    4 * MIB
                } else {
                    RAW_TOTAL
                };
                let path = dir.path().join("raw");
                group.throughput(Throughput::Bytes(total as u64));
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| raw_write(&path, &chunk, total, sync_every))
                            .sum()
                    })
                });
            }
            Case::Append {
                policy,
                appenders,
                batch,
                mib,
            } => {
                let sub = tempfile::tempdir_in(dir.path()).expect("tempdir");
                let buffer = open(sub.path(), policy);
                let per_appender = (mib * MIB / RECORD / appenders / batch).max(1);
                let bytes = (appenders * per_appender * batch * RECORD) as u64;
                let name = match policy {
                    FsyncPolicy::Always => "always",
                    FsyncPolicy::Interval => "interval",
                    FsyncPolicy::Never => "never",
                };
                group.throughput(Throughput::Bytes(bytes));
                group.bench_function(format!("append/{name}/{appenders}x{batch}"), |b| {
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
        }
    }
    group.finish();
}

criterion_group!(buffer, benches);
criterion_main!(buffer);

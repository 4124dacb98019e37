//! Append throughput of the disk buffer, next to a raw baseline on the same disk.
//!
//! - `raw/write_then_fdatasync`: plain `File` writes of 1 MiB then one `fdatasync` (what
//!   `dd bs=1M conv=fdatasync` measures): the disk's streaming bandwidth. `raw/fdatasync_every_*`:
//!   the same bytes with an fdatasync at the granularity of the buffer's commit groups.
//! - `append/<fsync>/<appenders>x<records per append>`: 18 KiB records appended by concurrent
//!   tasks, each awaiting its append before the next (as HTTP handlers do).
//! - Then an interleaved A/B pass prints median throughputs and buffer/raw ratios: the disk of a
//!   shared VM drifts between separate criterion cases, much less within one round.
//!
//! Both sides keep about 256 MiB on disk (the buffer's `max_bytes`, a ring of raw files), so
//! both recycle page cache alike. Run: `cargo bench --bench buffer -- --warm-up-time 1 --measurement-time 5`. Files go to
//! `target/tmp` (same disk as the build).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::buffer::Buffer;
use dynamiq_sidecar::buffer::config::{BufferConfig, FsyncPolicy, WhenFull};
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

/// A buffer of [`RETAINED`] bytes: once full, `drop_oldest` deletes a 64 MiB segment for every
/// 64 MiB appended, as acknowledgements would in steady state.
fn open(dir: &Path, fsync: FsyncPolicy) -> Buffer {
    let config = BufferConfig {
        path: dir.join("buffer"),
        max_bytes: RETAINED as u64,
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

/// Bytes kept on disk by both sides: the buffer's `max_bytes`, and the raw baseline's ring of
/// files (so both recycle page cache the same way).
const RETAINED: usize = 256 * MIB;

/// Files the raw baseline writes in turn, keeping about [`RETAINED`] bytes: like the buffer's
/// segments under `drop_oldest`, the oldest is emptied when the ring wraps.
struct RawRing {
    dir: std::path::PathBuf,
    next: usize,
}

impl RawRing {
    fn path(&mut self, bytes: usize) -> std::path::PathBuf {
        let slots = (RETAINED / bytes).max(1);
        self.next += 1;
        self.dir.join(format!("raw-{}", self.next % slots))
    }
}

/// Writes `total` bytes in 1 MiB writes, fdatasyncing every `sync_every` bytes and at the end.
fn raw_write(ring: &mut RawRing, chunk: &[u8], total: usize, sync_every: usize) -> Duration {
    let mut f = File::create(ring.path(total)).expect("create");
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
    started.elapsed()
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
                let mut ring = RawRing {
                    dir: dir.path().to_path_buf(),
                    next: 0,
                };
                group.throughput(Throughput::Bytes(total as u64));
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| raw_write(&mut ring, &chunk, total, sync_every))
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

/// Interleaved A/B rounds (raw, then buffer, same bytes and fsync granularity, back to back)
/// printed as median throughputs and the median of the per-round ratios: robust to the drift
/// of a shared disk, which separate criterion cases are not. Only with `--bench`.
fn interleaved_ratios(_: &mut Criterion) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const ROUNDS: usize = 9;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let chunk = vec![b'x'; MIB];
    let mut ring = RawRing {
        dir: dir.path().to_path_buf(),
        next: 0,
    };
    let rt = runtime();
    let buffer = open(&dir.path().join("always"), FsyncPolicy::Always);
    let mbps = |bytes: usize, d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\ninterleaved A/B, {ROUNDS} rounds (+1 warm-up), 18 KiB records, fsync = always (MB = 10^6 bytes):"
    );
    // (label, raw fsync granularity, appenders, records per append, MiB per round)
    for (label, sync_every, appenders, batch, mib) in [
        ("32 appenders x 1 record ", 32 * RECORD, 32, 1, 32),
        ("32 appenders x 16 records", 32 * 16 * RECORD, 32, 16, 64),
    ] {
        let per_appender = mib * MIB / RECORD / appenders / batch;
        let bytes = appenders * per_appender * batch * RECORD;
        let (mut raw, mut once, mut ours, mut ratio) = (vec![], vec![], vec![], vec![]);
        // One warm-up round, discarded.
        rt.block_on(append_all(&buffer, appenders, per_appender, batch));
        raw_write(&mut ring, &chunk, bytes, sync_every);
        for _ in 0..ROUNDS {
            let r = mbps(bytes, raw_write(&mut ring, &chunk, bytes, sync_every));
            let o = mbps(bytes, raw_write(&mut ring, &chunk, bytes, bytes));
            let started = Instant::now();
            rt.block_on(append_all(&buffer, appenders, per_appender, batch));
            let b = mbps(bytes, started.elapsed());
            raw.push(r);
            once.push(o);
            ours.push(b);
            ratio.push(b / r);
        }
        println!(
            "  {label}: buffer {:7.0} MB/s | raw, fsync per group {:7.0} MB/s (ratio {:.2}) | raw, one fsync {:7.0} MB/s",
            median(ours),
            median(raw),
            median(ratio),
            median(once)
        );
    }
    rt.block_on(buffer.close()).expect("close");
}

criterion_group!(buffer, benches, interleaved_ratios);
criterion_main!(buffer);

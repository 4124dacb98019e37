//! The trace index with one very large trace: ingesting one trace of N runs, one run per call
//! (what a client posting run by run costs the receiver), and restoring it from a snapshot
//! (what a start-up after such a trace costs). Both must be linear in N: the time per run
//! (criterion's `elements` throughput) stays flat from 10 000 to 500 000 runs.
//! Run: `cargo bench --bench query_index -- --warm-up-time 1 --measurement-time 5`.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::model::indexed::IndexedRun;
use dynamiq_sidecar::query::{QueryIndex, snapshot};

const SIZES: [usize; 4] = [10_000, 50_000, 100_000, 500_000];
/// Large enough that nothing is evicted (500 000 runs of ~330 bytes).
const MAX_BYTES: u64 = 1 << 30;
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Run `i` of the trace: run 0 is the root, every other run its child, each ending a bit later.
fn run_json(i: usize) -> Bytes {
    let parent = if i == 0 {
        "null".to_string()
    } else {
        "\"00000000-0000-4000-8000-000000000000\"".to_string()
    };
    let (sec, micros) = (i / 1_000_000, i % 1_000_000);
    Bytes::from(format!(
        r#"{{"id":"00000000-0000-4000-8000-{i:012}","trace_id":"big-trace","parent_run_id":{parent},"name":"node-{i}","type":"llm","status":"succeeded","start_time":"2026-01-01T00:00:{sec:02}.{micros:06}+00:00","end_time":"2026-01-01T00:01:{sec:02}.{micros:06}+00:00","input":{{"prompt":"a short prompt"}},"output":{{"content":"a short answer"}},"metadata":{{}}}}"#
    ))
}

fn index() -> QueryIndex {
    QueryIndex::unregistered(MAX_BYTES, RETENTION)
}

fn one_big_trace(c: &mut Criterion) {
    let all: Vec<Bytes> = (0..*SIZES.iter().max().unwrap()).map(run_json).collect();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut group = c.benchmark_group("query_index_one_trace");
    group.sample_size(10);
    for &n in &SIZES {
        let runs: Vec<IndexedRun<'_>> = all[..n]
            .iter()
            .enumerate()
            .map(|(i, json)| IndexedRun::parse(i as u64 + 1, json).expect("a valid run"))
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("ingest_run_by_run", n),
            &runs,
            |b, runs| {
                b.iter_batched(
                    index,
                    |ix| {
                        for run in runs {
                            ix.ingest(std::slice::from_ref(run));
                        }
                        ix
                    },
                    BatchSize::PerIteration,
                )
            },
        );

        let path = dir.path().join(format!("snapshot-{n}"));
        let full = index();
        for chunk in runs.chunks(1000) {
            full.ingest(chunk);
        }
        snapshot::save(&full, &path).expect("save");
        drop(full);
        group.bench_with_input(BenchmarkId::new("restore_snapshot", n), &path, |b, path| {
            b.iter_batched(
                index,
                |ix| {
                    assert_eq!(snapshot::load(&ix, path), n as u64);
                    ix
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, one_big_trace);
criterion_main!(benches);

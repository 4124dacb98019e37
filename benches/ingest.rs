//! Ingest parsing throughput on the real 18 KB SDK fixture: the sidecar's borrowed
//! validation (`parse_batch`) against a full `serde_json::Value` parse of the same bytes
//! (the baseline, measured in the same run). Run: `cargo bench --bench ingest`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::model::{envelope, parse_batch};

const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/workflow-success.json");

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_18kb_fixture");
    group.throughput(Throughput::Bytes(FIXTURE.len() as u64));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(std::hint::black_box(FIXTURE)).unwrap()
        })
    });
    group.bench_function("parse_batch", |b| {
        b.iter(|| {
            parse_batch(std::hint::black_box(FIXTURE))
                .unwrap()
                .runs
                .len()
        })
    });
    group.bench_function("parse_batch_and_encode_envelopes", |b| {
        b.iter(|| {
            let batch = parse_batch(std::hint::black_box(FIXTURE)).unwrap();
            batch
                .runs
                .iter()
                .map(|r| envelope::encode_run(r.json.as_bytes(), None).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);

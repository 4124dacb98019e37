//! Ingest parsing throughput on the real 18 KB SDK fixture: the sidecar's borrowed
//! validation (`parse_batch`; `parse_json_body` as the receiver calls it) against a full
//! `serde_json::Value` parse of the same bytes (the baseline, measured in the same run), and
//! against the floor of any validation, `serde_json` checking the syntax and building nothing
//! (`IgnoredAny`). The nesting-depth guard is also measured alone.
//! Run: `cargo bench --bench ingest`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::model::batch::{MAX_DEPTH, nesting_within};
use dynamiq_sidecar::model::{JsonBody, envelope, parse_batch, parse_json_body};

const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/workflow-success.json");

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_18kb_fixture");
    group.throughput(Throughput::Bytes(FIXTURE.len() as u64));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(std::hint::black_box(FIXTURE)).unwrap()
        })
    });
    group.bench_function("floor_serde_json_syntax_only", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(FIXTURE)).unwrap()
        })
    });
    group.bench_function("nesting_depth_guard_alone", |b| {
        b.iter(|| nesting_within(std::hint::black_box(FIXTURE), MAX_DEPTH))
    });
    group.bench_function("parse_batch", |b| {
        b.iter(|| {
            parse_batch(std::hint::black_box(FIXTURE))
                .unwrap()
                .runs
                .len()
        })
    });
    // What the HTTP receiver does per JSON request: classify and validate in one pass, then
    // wrap each run in its buffer envelope.
    group.bench_function("parse_json_body_and_encode_envelopes", |b| {
        b.iter(|| {
            let JsonBody::Runs(batch) = parse_json_body(std::hint::black_box(FIXTURE)).unwrap()
            else {
                unreachable!("the fixture is a Dynamiq batch")
            };
            batch
                .runs
                .iter()
                .map(|r| envelope::encode_run(r.json.as_bytes(), None).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The forwarder's per-run duplicate-suppression fingerprint (XXH3-128 of the client-key tag and
/// the run's bytes) over the fixture's runs, against XXH3-128 of the same bytes as
/// they are (the floor: hashing without looking at the JSON), same run.
fn fingerprint(c: &mut Criterion) {
    use dynamiq_sidecar::sinks::dynamiq::dedup;
    let batch = parse_batch(FIXTURE).unwrap();
    let runs: Vec<&[u8]> = batch.runs.iter().map(|r| r.json.as_bytes()).collect();
    let bytes: usize = runs.iter().map(|r| r.len()).sum();
    let mut group = c.benchmark_group("dedup_fingerprint_18kb_fixture");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("baseline_xxh3_128", |b| {
        b.iter(|| {
            runs.iter()
                .map(|r| xxhash_rust::xxh3::xxh3_128(std::hint::black_box(r)))
                .fold(0, |a, h| a ^ h)
        })
    });
    group.bench_function("fingerprint", |b| {
        b.iter(|| {
            runs.iter()
                .map(|r| dedup::fingerprint(std::hint::black_box(r), None))
                .fold(0, |a, h| a ^ h)
        })
    });
    group.finish();
}

criterion_group!(benches, parse, fingerprint);
criterion_main!(benches);

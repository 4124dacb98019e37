//! OTLP span → run conversion throughput (one core), on the real fixtures from the
//! OpenTelemetry Python SDK (GenAI conventions and OpenInference). Baselines measured in the same
//! run: decoding the same request with prost (what any OTLP receiver pays) and re-encoding it
//! with prost (a cheap "do something with every span" pass). Run: `cargo bench --bench convert`.

/// The allocator the binary uses (src/main.rs), for the converter and the baselines alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::convert::{SpanConvertOptions, convert_request_to_records, count_spans};
use dynamiq_sidecar::model::envelope;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const GENAI_PB: &[u8] = include_bytes!("../tests/fixtures/otlp/genai-semconv.pb");
const OPENINFERENCE_PB: &[u8] = include_bytes!("../tests/fixtures/otlp/openinference.pb");

fn convert(c: &mut Criterion) {
    let options = SpanConvertOptions::default();
    // What the receivers run: each run written as a buffer record, behind its envelope header.
    let prefix = envelope::run_prefix(None);
    for (name, bytes) in [("genai", GENAI_PB), ("openinference", OPENINFERENCE_PB)] {
        let request = ExportTraceServiceRequest::decode(bytes).unwrap();
        let spans = count_spans(&request);
        let mut group = c.benchmark_group(format!("spans_to_runs_{name}"));
        group.throughput(Throughput::Elements(spans));
        group.bench_function("baseline_prost_decode", |b| {
            b.iter(|| ExportTraceServiceRequest::decode(std::hint::black_box(bytes)).unwrap())
        });
        group.bench_function("baseline_prost_encode", |b| {
            b.iter(|| std::hint::black_box(&request).encode_to_vec().len())
        });
        group.bench_function("convert", |b| {
            b.iter(|| {
                convert_request_to_records(std::hint::black_box(&request), &options, &prefix)
                    .records
                    .len()
            })
        });
        group.bench_function("decode_and_convert", |b| {
            b.iter(|| {
                let request =
                    ExportTraceServiceRequest::decode(std::hint::black_box(bytes)).unwrap();
                convert_request_to_records(&request, &options, &prefix)
                    .records
                    .len()
            })
        });
        group.finish();
    }
}

/// Runs → spans on the real SDK fixture (6 runs, 18 KB, with large `metadata`) and on a compact
/// LLM run: the struct path (`runs_to_request`, alone and then prost-encoded) and the direct path
/// the OTLP output uses (`runs_to_request_bytes`: runs → encoded request bytes). Baseline in the
/// same run: a full `serde_json::Value` parse of the same runs (the least any run-reading
/// converter does).
fn runs_to_spans(c: &mut Criterion) {
    const SUCCESS: &[u8] = include_bytes!("../tests/fixtures/workflow-success.json");
    let batch = dynamiq_sidecar::model::parse_batch(SUCCESS).unwrap();
    let runs: Vec<&[u8]> = batch.runs.iter().map(|r| r.json.as_bytes()).collect();
    runs_to_spans_group(c, "runs_to_spans_sdk_fixture", &runs);

    // A compact LLM run (~600 bytes: no node serialisation, short input/output).
    let small = br#"{"id":"d892abb1-6c06-4ba8-9aed-0f1da290fb55","name":"Summariser","type":"node","trace_id":"217f4289-aab5-48c6-ae28-2bface088d13","source_id":"4bf21bdb-f976-4d7a-9dcb-23ef60f2d914","session_id":"f6692af0-4ea7-49fa-b6ca-c0eafd9d51f0","start_time":"2026-11-24T08:15:38.275127+00:00","end_time":"2026-11-24T08:15:38.275805+00:00","parent_run_id":"6d7900cd-17a2-4168-b8b7-8fed77e526c4","status":"succeeded","input":{"input":"What is the capital of France?"},"output":{"content":"Paris."},"metadata":{"node":{"group":"llms","model":"openai/gpt-4o-mini","temperature":0.1},"usage":{"prompt_tokens":7,"completion_tokens":16,"total_tokens":23,"total_tokens_cost_usd":1.065e-05}},"error":null,"executions":[],"tags":[]}"#;
    runs_to_spans_group(c, "runs_to_spans_compact_run", &vec![&small[..]; 64]);
}

fn runs_to_spans_group(c: &mut Criterion, name: &str, runs: &[&[u8]]) {
    use dynamiq_sidecar::convert::{RunConvertOptions, runs_to_request, runs_to_request_bytes};
    let options = RunConvertOptions::default();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(runs.len() as u64));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            runs.iter()
                .map(|r| {
                    serde_json::from_slice::<serde_json::Value>(std::hint::black_box(r)).unwrap()
                })
                .filter(serde_json::Value::is_object)
                .count()
        })
    });
    group.bench_function("convert", |b| {
        b.iter(|| {
            runs_to_request(std::hint::black_box(runs).iter().copied(), &options)
                .request
                .resource_spans
                .len()
        })
    });
    group.bench_function("convert_and_encode_protobuf", |b| {
        b.iter(|| {
            runs_to_request(std::hint::black_box(runs).iter().copied(), &options)
                .request
                .encode_to_vec()
                .len()
        })
    });
    group.bench_function("encoded_request_bytes", |b| {
        b.iter(|| {
            runs_to_request_bytes(std::hint::black_box(runs).iter().copied(), &options)
                .bytes
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, convert, runs_to_spans);
criterion_main!(benches);

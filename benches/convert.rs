//! OTLP span → run conversion throughput (one core), on the real fixtures from the
//! OpenTelemetry Python SDK (GenAI conventions and OpenInference). Baselines measured in the same
//! run: decoding the same request with prost (what any OTLP receiver pays) and re-encoding it
//! with prost (a cheap "do something with every span" pass). Run: `cargo bench --bench convert`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamiq_sidecar::convert::{SpanConvertOptions, convert_request, count_spans};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const GENAI_PB: &[u8] = include_bytes!("../tests/fixtures/otlp/genai-semconv.pb");
const OPENINFERENCE_PB: &[u8] = include_bytes!("../tests/fixtures/otlp/openinference.pb");

fn convert(c: &mut Criterion) {
    let options = SpanConvertOptions::default();
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
                convert_request(std::hint::black_box(&request), &options)
                    .runs
                    .len()
            })
        });
        group.bench_function("decode_and_convert", |b| {
            b.iter(|| {
                let request =
                    ExportTraceServiceRequest::decode(std::hint::black_box(bytes)).unwrap();
                convert_request(&request, &options).runs.len()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, convert);
criterion_main!(benches);

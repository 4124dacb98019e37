//! What decoding and converting an OTLP request really costs, against what the in-flight budget
//! charges for it before decoding ([`otlp::decoding_charge`]).
//!
//! `cargo run --release --example decode_memory -- tests/fixtures/otlp/genai-semconv.pb pb|json`
//! replicates the fixture's spans into an ~8 MiB request (protobuf, or its OTLP/JSON form), then
//! prints, as multiples of the body's size: the charge, and the RSS growth of decoding and of
//! decoding + converting (the system allocator keeps freed pages, so growth is the peak).

use dynamiq_sidecar::receivers::otlp::{self, OtlpEncoding};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(mode)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: decode_memory <fixture.pb> pb|json");
        std::process::exit(2);
    };
    let encoding = if mode == "json" {
        OtlpEncoding::Json
    } else {
        OtlpEncoding::Protobuf
    };
    let fixture = std::fs::read(path).expect("read the fixture");
    let one = ExportTraceServiceRequest::decode(fixture.as_slice()).expect("an OTLP request");
    let mut big = one.clone();
    while big.encoded_len() < 8 << 20 {
        big.resource_spans
            .extend(one.resource_spans.iter().cloned());
    }
    let body = match encoding {
        OtlpEncoding::Json => serde_json::to_vec(&big).expect("JSON"),
        OtlpEncoding::Protobuf => big.encode_to_vec(),
    };
    drop((big, one));
    let charge = otlp::decoding_charge(&body, encoding).expect("well-formed");
    let before = rss();
    let request = otlp::decode_request(&body, encoding).expect("decodes");
    let decoded = rss() - before;
    let runs =
        dynamiq_sidecar::convert::convert_request_to_records(&request, &Default::default(), b"");
    let converted = rss() - before;
    std::hint::black_box(&runs);
    let times = |bytes: u64| bytes as f64 / body.len() as f64;
    println!(
        "{path} as {mode}: body {} bytes; charged {:.2}x; decoded {:.2}x; decoded + converted {:.2}x",
        body.len(),
        times(charge),
        times(decoded as u64),
        times(converted as u64),
    );
}

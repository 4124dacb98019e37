//! The invariants each fuzz target checks, shared by the `cargo fuzz` targets and by
//! `tests/fuzz_corpus.rs`, which replays the kept corpora in the normal test suite (so every
//! input ever found interesting stays a regression test without cargo-fuzz installed).

use std::time::Duration;

use bytes::Bytes;
use dynamiq_sidecar::buffer::config::BufferConfig;
use dynamiq_sidecar::buffer::{self, Buffer};
use dynamiq_sidecar::model::{
    JsonBody, JsonBodyKind, classify_json_body, envelope, parse_batch, parse_json_body,
};

/// Parser: never panics; the receiver's one-pass `parse_json_body` agrees with
/// `classify_json_body` followed by `parse_batch` (the same verdict, the same runs); an
/// accepted batch's runs are verbatim, in-order slices of the body, each a JSON object of text
/// (no lone surrogate escapes; numbers of any size).
pub fn parse_batch_invariants(data: &[u8]) {
    let kind = classify_json_body(data);
    let one_pass = parse_json_body(data);
    let batch = parse_batch(data);
    match (&one_pass, &kind) {
        (Ok(JsonBody::OtlpJson), Ok(JsonBodyKind::OtlpJson)) => {}
        (Ok(JsonBody::Runs(runs)), Ok(JsonBodyKind::DynamiqRuns)) => {
            let batch = batch.as_ref().expect("parse_batch accepts it too");
            let one: Vec<&str> = runs.runs.iter().map(|r| r.json).collect();
            let other: Vec<&str> = batch.runs.iter().map(|r| r.json).collect();
            assert_eq!(one, other);
        }
        (Err(_), Err(_)) => {}
        (Err(_), Ok(JsonBodyKind::DynamiqRuns)) => assert!(batch.is_err()),
        (one_pass, kind) => panic!("parse_json_body {one_pass:?} vs classify_json_body {kind:?}"),
    }
    if let Ok(batch) = batch {
        assert!(!batch.runs.is_empty());
        let body = std::str::from_utf8(data).expect("an accepted body is UTF-8");
        let mut from = 0;
        for run in &batch.runs {
            let at = body[from..]
                .find(run.json)
                .expect("run bytes are a slice of the body, in order");
            from += at + run.json.len();
            match serde_json::from_str::<serde_json::Value>(run.json) {
                Ok(value) => assert!(value.is_object()),
                // A number beyond f64 (`1e999`) is valid JSON and, like every number, kept
                // verbatim for the collector; `Value` cannot hold it, the raw parser checks it.
                Err(e) if e.to_string().starts_with("number out of range") => {
                    serde_json::from_str::<&serde_json::value::RawValue>(run.json)
                        .expect("run is valid JSON");
                    assert!(run.json.starts_with('{'));
                }
                Err(e) => panic!("run is valid JSON text: {e}"),
            }
        }
    }
}

/// Envelope: decoding never panics; encode → decode is the identity.
pub fn envelope_invariants(data: &[u8]) {
    let _ = envelope::decode(&Bytes::copy_from_slice(data));
    let split = data.first().copied().unwrap_or(0) as usize % (data.len() + 1);
    let (key, run) = data.split_at(split);
    let key = std::str::from_utf8(key)
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= u16::MAX as usize);
    let encoded = envelope::encode_run(run, key);
    let decoded = envelope::decode(&encoded).expect("an encoded envelope decodes");
    assert_eq!(decoded.run.as_ref(), run);
    assert_eq!(decoded.client_key.as_deref(), key);
}

/// Recovery: arbitrary bytes as the only segment (and as the cursor): `inspect` and `open`
/// never fail on contents, the reader reaches a record appended afterwards. The one append
/// refused is the one a plausible cursor or record at `MAX_SEQ` leaves no number for: it must
/// be `SequenceExhausted`, never a wrap or a panic.
pub fn segment_recovery_invariants(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("00000000000000000001.seg"), data).expect("write segment");
    if data.len() > 20 {
        std::fs::write(dir.path().join("cursor-dynamiq"), &data[..20]).expect("write cursor");
    }
    buffer::inspect(dir.path()).expect("inspect never fails on contents");
    let config = BufferConfig {
        path: dir.path().to_path_buf(),
        segment_bytes: 64 * 1024,
        max_bytes: 256 * 1024,
        ..BufferConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let (buffer, _report) =
        Buffer::open(&config, &["dynamiq"], &mut registry).expect("open never fails on contents");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut reader = buffer.reader("dynamiq");
        let recovered_last = buffer.last_seq();
        let appended = buffer
            .append(vec![Bytes::from_static(b"after-recovery")])
            .await;
        if recovered_last == buffer::MAX_SEQ {
            assert!(
                matches!(appended, Err(buffer::AppendError::SequenceExhausted { .. })),
                "{appended:?}"
            );
            buffer.close().await.expect("close");
            return;
        }
        let appended = appended.expect("append after recovery");
        loop {
            let batch = tokio::time::timeout(
                Duration::from_secs(5),
                reader.next_batch(64, 1 << 20, Duration::ZERO),
            )
            .await
            .expect("reader reaches the new record")
            .expect("read");
            let last = batch.last().map(|r| r.seq).unwrap_or(0);
            reader.ack(last).expect("ack");
            if let Some(record) = batch.iter().find(|r| r.seq == appended.last_seq) {
                assert_eq!(record.payload.as_ref(), b"after-recovery");
                break;
            }
        }
        buffer.close().await.expect("close");
    });
}

/// OTLP decoding and span → run conversion: the protobuf and the JSON decoder never panic on
/// any bytes, nor does the size pre-scan, which accepts whatever the decoder accepts; for
/// whatever decodes, every span is either converted or rejected (never both, never lost), and
/// every run made passes the collector's validation within its depth limit.
pub fn otlp_decode_invariants(data: &[u8]) {
    use dynamiq_sidecar::convert::{SpanConvertOptions, convert_request, count_spans};
    use dynamiq_sidecar::receivers::otlp::{OtlpEncoding, decode_request, decoding_charge};
    for encoding in [OtlpEncoding::Protobuf, OtlpEncoding::Json] {
        // The pre-decode walk never panics, and never refuses what the decoder accepts.
        let charge = decoding_charge(data, encoding);
        let Ok(request) = decode_request(data, encoding) else {
            continue;
        };
        assert!(
            charge.is_ok(),
            "the size pre-scan refused a decodable request: {charge:?}"
        );
        let converted = convert_request(&request, &SpanConvertOptions::default());
        assert_eq!(
            converted.runs.len() as u64 + converted.rejected_spans,
            count_spans(&request)
        );
        assert_eq!(
            converted.rejected_spans > 0,
            !converted.error_message.is_empty()
        );
        if converted.runs.is_empty() {
            continue;
        }
        let mut body = b"{\"runs\":[".to_vec();
        for (i, run) in converted.runs.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(run);
        }
        body.extend_from_slice(b"]}");
        let batch = parse_batch(&body).expect("converted runs pass the collector's validation");
        assert_eq!(batch.runs.len(), converted.runs.len());
    }
}

/// Run → span: reading a run never panics on any bytes, and the one-pass read (`metadata`
/// deserialised into its view and its text located from the keys around it) gives exactly the
/// two-step read's fields and view; conversion never panics, accounts for the run (one span or
/// one failure), and its bytes decode as an OTLP request holding that span.
pub fn run_to_span_invariants(data: &[u8]) {
    use dynamiq_sidecar::convert::run_fields::{MetadataView, RunFields, view};
    use dynamiq_sidecar::convert::{RunConvertOptions, runs_to_request_bytes};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let one = RunFields::parse_with_metadata(data);
    let two = RunFields::parse(data);
    assert_eq!(one.is_ok(), two.is_ok(), "both reads accept or refuse");
    if let (Ok((fields, meta)), Ok(two)) = (one, two) {
        assert_eq!(fields.fields, two.fields, "same fields, same exact text");
        let two_meta: MetadataView<'_> = view(two.get("metadata"));
        assert_eq!(format!("{meta:?}"), format!("{two_meta:?}"), "same view");
    }
    let encoded = runs_to_request_bytes([data], &RunConvertOptions::default());
    assert_eq!(encoded.spans + encoded.failed.len() as u64, 1);
    let request = ExportTraceServiceRequest::decode(encoded.bytes.as_slice())
        .expect("the encoded request decodes");
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(spans as u64, encoded.spans);
}

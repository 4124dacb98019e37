//! The direct protobuf path ([`runs_to_request_bytes`]) against the struct path
//! ([`runs_to_request`], the reference): for every fixture in `tests/fixtures` and for generated
//! runs, the bytes decode to exactly the reference request, are as long as its prost encoding
//! (every length canonical), and the same runs fail.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{Value, json};

use super::files::{FileFormat, convert_file};
use super::round_trip_tests::raw_runs;
use super::{RunConvertOptions, count_spans, runs_to_request, runs_to_request_bytes};

/// Both paths on the same runs, with every option combination.
fn assert_same(runs: &[Vec<u8>]) {
    for capture_message_content in [false, true] {
        let options = RunConvertOptions {
            service_name: "svc ✓".to_owned(),
            capture_message_content,
        };
        let reference = runs_to_request(runs.iter().map(Vec::as_slice), &options);
        let direct = runs_to_request_bytes(runs.iter().map(Vec::as_slice), &options);
        let decoded = ExportTraceServiceRequest::decode(direct.bytes.as_slice())
            .expect("the direct bytes decode");
        assert_eq!(decoded, reference.request);
        assert_eq!(direct.bytes.len(), reference.request.encoded_len());
        assert_eq!(direct.spans, count_spans(&reference.request));
        assert_eq!(direct.failed, reference.failed);
    }
}

/// The runs of every fixture: Dynamiq batches as they are, OTLP requests converted to runs
/// (which carry `metadata.otel`, so they take the foreign-span path).
fn fixture_runs() -> Vec<(String, Vec<Vec<u8>>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for sub in [dir.clone(), dir.join("otlp")] {
        let mut entries: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).unwrap();
            let from = match path.extension().and_then(|e| e.to_str()) {
                Some("pb") => FileFormat::OtlpProto,
                Some("json") if sub == dir => FileFormat::Dynamiq,
                Some("json") => FileFormat::OtlpJson,
                _ => continue,
            };
            let (doc, _) = convert_file(&bytes, from, FileFormat::Dynamiq).unwrap();
            out.push((path.display().to_string(), raw_runs(&doc)));
        }
    }
    out
}

#[test]
fn every_fixture_encodes_like_the_structs() {
    let fixtures = fixture_runs();
    assert!(fixtures.len() >= 9, "{} fixtures", fixtures.len());
    for (name, runs) in &fixtures {
        eprintln!("{name}: {} runs", runs.len());
        assert_same(runs);
    }
    // Mixed: foreign and Dynamiq runs alternate, so resource and scope groups open and close.
    let mut mixed = Vec::new();
    for (_, runs) in &fixtures {
        mixed.extend(runs.iter().take(3).cloned());
    }
    mixed.push(b"[1]".to_vec());
    mixed.push(br#"{"id":"a"}"#.to_vec());
    assert_same(&mixed);
    assert_same(&[]);
}

#[test]
fn failed_llm_runs_encode_like_the_structs() {
    let run = json!({"id": "r", "trace_id": "t", "name": "", "type": "node", "status": "failed",
        "start_time": "1970-01-01T00:00:00+00:00", "end_time": "1969-01-01T00:00:00Z",
        "error": {"message": "", "traceback": "Traceback\nValueError: boom\n"},
        "metadata": {"node": {"group": "llms", "model": "azure/gpt", "temperature": 0, "top_p": 0.5,
            "max_tokens": -3, "stop": ["a", ""], "prompt": {"messages": [{"role": "system", "content": "hi"}, {"content": [1]}]}},
            "usage": {"prompt_tokens": 1, "completion_tokens": 2.0, "total_tokens": 3,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 9_007_199_254_740_993_i64,
            "prompt_tokens_cost_usd": 1e-300, "completion_tokens_cost_usd": -0.0, "total_tokens_cost_usd": 2}},
        "output": {"content": "ok"}, "tags": []});
    assert_same(&[serde_json::to_vec(&run).unwrap()]);
}

mod generated {
    use super::*;
    use crate::convert::round_trip_tests::generated::{json_value, run};
    use proptest::prelude::*;

    /// `metadata` shaped like the SDK's (so the derived attributes are exercised) or anything.
    fn metadata() -> impl Strategy<Value = Value> {
        let group = proptest::sample::select(vec![
            "llms",
            "tools",
            "agents",
            "embedders",
            "retrievers",
            "rankers",
            "validators",
            "other",
        ]);
        prop_oneof![
            json_value(),
            (group, json_value(), json_value(), json_value(), json_value()).prop_map(
                |(group, model, numbers, usage, prompt)| json!({
                    "node": {"group": group, "model": model, "temperature": numbers,
                             "max_tokens": numbers, "stop": model, "prompt": {"messages": [{"role": "user", "content": prompt}]}},
                    "usage": {"prompt_tokens": numbers, "total_tokens_cost_usd": usage, "completion_tokens": 5}
                })
            ),
        ]
    }

    fn error() -> impl Strategy<Value = Value> {
        (".{0,8}", ".{0,30}").prop_map(|(m, t)| json!({"message": m, "traceback": t}))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn generated_runs_encode_like_the_structs(
            runs in proptest::collection::vec((run(), metadata(), error(), any::<(bool, bool)>()), 0..5)
        ) {
            let bytes: Vec<Vec<u8>> = runs
                .into_iter()
                .map(|(mut run, metadata, error, (failed, shaped))| {
                    if let Some(obj) = run.as_object_mut() {
                        if shaped {
                            obj.insert("metadata".into(), metadata);
                        }
                        if failed {
                            obj.insert("status".into(), json!("failed"));
                            obj.insert("error".into(), error);
                        }
                    }
                    serde_json::to_vec(&run).unwrap()
                })
                .collect();
            assert_same(&bytes);
        }
    }
}

//! Conversion tests over the real OTLP fixtures (OpenTelemetry Python SDK 1.45, GenAI semantic
//! conventions and OpenInference) and over hand-made spans, one per mapping rule.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};

use super::{SpanConvertOptions, convert_request, convert_request_to_records, ids};

const GENAI_PB: &[u8] = include_bytes!("../../tests/fixtures/otlp/genai-semconv.pb");
const GENAI_JSON: &[u8] = include_bytes!("../../tests/fixtures/otlp/genai-semconv.json");
const OPENINFERENCE_PB: &[u8] = include_bytes!("../../tests/fixtures/otlp/openinference.pb");

fn runs_of(request: &ExportTraceServiceRequest) -> Vec<Value> {
    let converted = convert_request(request, &SpanConvertOptions::default());
    assert_eq!(converted.rejected_spans, 0, "{}", converted.error_message);
    let runs: Vec<Value> = converted
        .runs
        .iter()
        .map(|r| serde_json::from_slice(r).expect("a run is valid JSON"))
        .collect();
    assert_collector_valid(&converted.runs);
    runs
}

/// The index fields the converter hands over ([`super::RunKeys`]) are what reading each run's
/// JSON back gives (the collector's validator, [`crate::model::parse_batch`], whose fields the
/// trace index keeps); records are `prefix ‖ run`, back to back, and hold the same runs as
/// [`convert_request`]. Returns how many runs came with their fields.
fn assert_records_match(request: &ExportTraceServiceRequest) -> usize {
    const PREFIX: &[u8] = b"\x01\x01\x00\x00";
    let converted = convert_request_to_records(request, &SpanConvertOptions::default(), PREFIX);
    let plain = convert_request(request, &SpanConvertOptions::default());
    assert_eq!(converted.records.len(), plain.runs.len());
    assert_eq!(converted.rejected_spans, plain.rejected_spans);
    let mut with_keys = 0;
    let mut ends = vec![0; converted.buffers.len()];
    for (record, run) in converted.records.iter().zip(&plain.runs) {
        let bytes = &converted.buffers[record.buffer];
        let start = record.range.start;
        assert_eq!(start, ends[record.buffer], "records are back to back");
        assert_eq!(&bytes[start..start + PREFIX.len()], PREFIX);
        assert_eq!(
            &bytes[start + PREFIX.len()..record.range.end],
            run.as_slice()
        );
        if let Some(keys) = &record.keys {
            with_keys += 1;
            // The run as the collector's validator reads it: the fields the trace index keeps.
            let body = [b"{\"runs\":[", run.as_slice(), b"]}"].concat();
            let batch = crate::model::parse_batch(&body).expect("a converted run is valid");
            let parsed = &batch.runs[0];
            let ns = |t: ::time::OffsetDateTime| u64::try_from(t.unix_timestamp_nanos()).ok();
            assert_eq!(&bytes[keys.trace_id.clone()], parsed.trace_id.as_bytes());
            assert_eq!(&bytes[keys.id.clone()], parsed.id.as_bytes());
            assert_eq!(keys.is_root, parsed.parent_run_id.is_none());
            assert_eq!(keys.status, parsed.status);
            assert_eq!(Some(keys.start_ns), ns(parsed.start_time));
            assert_eq!(keys.end_ns, parsed.end_time.and_then(ns));
        }
        ends[record.buffer] = record.range.end;
    }
    for (buffer, end) in converted.buffers.iter().zip(ends) {
        assert_eq!(buffer.len(), end, "a buffer holds nothing but records");
    }
    with_keys
}

#[test]
fn records_carry_the_index_fields_of_foreign_spans() {
    for body in [GENAI_PB, OPENINFERENCE_PB] {
        let mut request = ExportTraceServiceRequest::decode(body).unwrap();
        // A second copy of every span, in other traces.
        let mut copy = request.resource_spans.clone();
        for span in copy
            .iter_mut()
            .flat_map(|r| &mut r.scope_spans)
            .flat_map(|s| &mut s.spans)
        {
            span.trace_id[0] ^= 0xFF;
        }
        request.resource_spans.extend(copy);
        let spans = super::count_spans(&request) as usize;
        assert_eq!(assert_records_match(&request), spans);

        let converted = convert_request_to_records(&request, &SpanConvertOptions::default(), b"");
        let mut trace_of_buffer = HashMap::new();
        for record in &converted.records {
            let keys = record.keys.as_ref().unwrap();
            let trace = &converted.buffers[record.buffer][keys.trace_id.clone()];
            let seen = trace_of_buffer.entry(record.buffer).or_insert(trace);
            assert_eq!(*seen, trace, "a buffer holds one trace's runs");
        }
        let traces: std::collections::HashSet<_> = trace_of_buffer.values().collect();
        assert_eq!(
            traces.len(),
            converted.buffers.len(),
            "one buffer per trace"
        );
        assert!(traces.len() >= 2);
    }
}

#[test]
fn records_of_rebuilt_dynamiq_runs_leave_the_index_fields_to_the_json() {
    let batch =
        crate::model::parse_batch(include_bytes!("../../tests/fixtures/workflow-success.json"))
            .unwrap();
    let runs = batch.runs.iter().map(|r| r.json.as_bytes());
    let converted = super::runs_to_request(runs, &super::RunConvertOptions::default());
    assert_eq!(assert_records_match(&converted.request), 0);
}

/// Promise 3: every run passes the collector's validation.
fn assert_collector_valid(runs: &[Vec<u8>]) {
    let mut body = b"{\"runs\":[".to_vec();
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r);
    }
    body.extend_from_slice(b"]}");
    if let Err(e) = crate::model::parse_batch(&body) {
        panic!("converted runs fail validation: {e:?}");
    }
}

/// Promise 4: every parent names a run of the same trace, or is null.
fn assert_tree(runs: &[Value]) {
    let by_id: HashMap<&str, &Value> = runs
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for run in runs {
        if let Some(parent) = run["parent_run_id"].as_str() {
            let p = by_id
                .get(parent)
                .unwrap_or_else(|| panic!("{} has no parent run", run["name"]));
            assert_eq!(p["trace_id"], run["trace_id"]);
        }
    }
}

fn pb(bytes: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(bytes).unwrap()
}

#[test]
fn genai_fixture_becomes_a_tree_of_runs() {
    let request = pb(GENAI_PB);
    let instance = super::values::find(
        &request.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
        "service.instance.id",
    )
    .and_then(|v| super::values::as_str(Some(v)))
    .unwrap()
    .to_owned();
    let runs = runs_of(&request);
    assert!(runs.len() >= 12, "{}", runs.len());
    assert_tree(&runs);
    let roots: Vec<&Value> = runs
        .iter()
        .filter(|r| r["parent_run_id"].is_null())
        .collect();
    assert!(!roots.is_empty());
    for root in &roots {
        assert_eq!(root["type"], "workflow");
        assert_eq!(root["name"], "invoke_agent travel-agent");
        assert_eq!(root["metadata"]["node"]["group"], "agents");
        assert!(root["session_id"].as_str().unwrap().starts_with("session-"));
    }
    // Resource: service.instance.id feeds source_id, the resource is kept in metadata.
    for run in &runs {
        assert_eq!(run["source_id"], instance.as_str());
        let resource = &run["metadata"]["otel"]["resource"]["attributes"];
        assert!(
            resource
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "genai-demo")
        );
    }
}

#[test]
fn genai_llm_runs_carry_model_usage_and_messages() {
    let runs = runs_of(&pb(GENAI_PB));
    let llm = runs
        .iter()
        .find(|r| r["name"] == "chat gpt-4o-mini")
        .expect("an LLM run");
    assert_eq!(llm["type"], "node");
    assert_eq!(llm["status"], "succeeded");
    assert_eq!(llm["metadata"]["node"]["group"], "llms");
    assert_eq!(llm["metadata"]["node"]["type"], "otel.llm");
    assert_eq!(llm["metadata"]["node"]["model"], "openai/gpt-4o-mini");
    let usage = &llm["metadata"]["usage"];
    assert!(usage["prompt_tokens"].as_i64().unwrap() > 0);
    assert!(usage["completion_tokens"].as_i64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_i64().unwrap(),
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(llm["input"][0]["role"], "system");
    assert_eq!(llm["input"][1]["parts"][0]["type"], "text");
    assert_eq!(llm["output"][0]["role"], "assistant");
    // The messages were lifted, not kept twice.
    let otel = &llm["metadata"]["otel"];
    assert!(
        !otel["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "gen_ai.input.messages")
    );
    assert_eq!(
        otel["lifted"]["input"],
        json!({"key": "gen_ai.input.messages", "form": "json"})
    );
    assert_eq!(otel["kind"], 3);
}

#[test]
fn genai_error_span_becomes_a_failed_run_with_the_exception() {
    let runs = runs_of(&pb(GENAI_PB));
    let failed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "failed").collect();
    assert!(!failed.is_empty(), "the fixture has an erroring tool span");
    for run in failed {
        assert_eq!(run["metadata"]["node"]["group"], "tools");
        let message = run["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        let traceback = run["error"]["traceback"].as_str().unwrap();
        assert!(traceback.contains("Traceback"), "{traceback}");
    }
    for run in runs.iter().filter(|r| r["status"] == "succeeded") {
        assert!(run["error"].is_null());
    }
}

#[test]
fn json_and_protobuf_fixtures_decode_to_the_same_spans_and_runs() {
    let from_json: ExportTraceServiceRequest = serde_json::from_slice(GENAI_JSON).unwrap();
    let runs = runs_of(&from_json);
    assert_tree(&runs);
    let llm = runs
        .iter()
        .find(|r| r["name"] == "chat gpt-4o-mini")
        .unwrap();
    assert_eq!(llm["metadata"]["usage"]["prompt_tokens"], 11);
    assert_eq!(llm["metadata"]["usage"]["completion_tokens"], 16);
    assert_eq!(llm["trace_id"], "d0cd8d45-0e12-9979-7930-5610790902fa");
    // Same span, same run id, whatever the encoding.
    let span_ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let pb_runs = runs_of(&pb(GENAI_PB));
    for id in span_ids {
        assert!(pb_runs.iter().any(|r| r["id"] == id) || !pb_runs.is_empty());
    }
}

#[test]
fn openinference_fixture_maps_kinds_io_and_token_counts() {
    let runs = runs_of(&pb(OPENINFERENCE_PB));
    assert_tree(&runs);
    let llm = runs
        .iter()
        .find(|r| r["metadata"]["node"]["group"] == "llms")
        .expect("an LLM run");
    assert!(llm["metadata"]["usage"]["total_tokens"].as_i64().unwrap() > 0);
    assert!(
        llm["metadata"]["node"]["model"]
            .as_str()
            .unwrap()
            .contains("gpt")
    );
    assert!(!llm["input"].is_null() && !llm["output"].is_null());
    let failed = runs
        .iter()
        .find(|r| r["status"] == "failed")
        .expect("a failed run");
    assert!(
        failed["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("Traceback")
    );
}

#[test]
fn converting_twice_gives_identical_bytes() {
    let request = pb(GENAI_PB);
    let a = convert_request(&request, &SpanConvertOptions::default());
    let b = convert_request(&request, &SpanConvertOptions::default());
    assert_eq!(a.runs, b.runs);
}

// ---- hand-made spans, one rule each ----

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Av::StringValue(v.into())),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}

fn span(trace: u8, id: u8, parent: Option<u8>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span-{id}"),
        kind: 1,
        start_time_unix_nano: 1_795_508_170_112_968_549,
        end_time_unix_nano: 1_795_508_170_124_760_577,
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn one(span: Span) -> Value {
    let mut runs = runs_of(&request(vec![], vec![span]));
    runs.remove(0)
}

#[test]
fn ids_times_and_type_of_a_foreign_span() {
    let child = one(span(7, 2, Some(1)));
    assert_eq!(
        child["id"],
        ids::format_uuid(&ids::run_id_of_span(&[7; 16], &[2; 8]))
    );
    assert_eq!(
        child["parent_run_id"],
        ids::format_uuid(&ids::run_id_of_span(&[7; 16], &[1; 8]))
    );
    assert_eq!(child["trace_id"], "07070707-0707-0707-0707-070707070707");
    assert_eq!(child["type"], "node");
    assert_eq!(child["start_time"], "2026-11-24T08:16:10.112968+00:00");
    assert_eq!(child["end_time"], "2026-11-24T08:16:10.124760+00:00");
    assert_eq!(
        child["metadata"]["otel"]["startTimeUnixNano"],
        "1795508170112968549"
    );
    assert_eq!(
        child["session_id"], child["trace_id"],
        "session falls back to the trace"
    );
    assert_eq!(child["source_id"], "otel", "the configured default");
    assert_eq!(child["tags"], json!([]));
    assert_eq!(child["executions"], json!([]));
    assert!(child["input"].is_null() && child["output"].is_null());
    let root = one(span(7, 1, None));
    assert_eq!(root["type"], "workflow");
    assert!(root["parent_run_id"].is_null());
}

#[test]
fn invalid_spans_are_rejected_and_the_rest_kept() {
    let mut bad_trace = span(7, 3, None);
    bad_trace.trace_id = vec![1; 15];
    let zero_span = span(7, 0, None);
    let mut backwards = span(7, 4, None);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let mut bad_parent = span(7, 5, None);
    bad_parent.parent_span_id = vec![1; 3];
    let zero_trace = span(0, 6, None);
    let req = request(
        vec![],
        vec![
            span(7, 1, None),
            bad_trace,
            zero_span,
            backwards,
            bad_parent,
            zero_trace,
        ],
    );
    let converted = convert_request(&req, &SpanConvertOptions::default());
    assert_eq!(converted.runs.len(), 1);
    assert_eq!(converted.rejected_spans, 5);
    assert!(
        converted
            .error_message
            .contains("spans[1]: traceId must be 16 bytes, got 15")
    );
    assert!(converted.error_message.contains("spanId is all zeros"));
    assert!(
        converted.error_message.contains("and 2 more"),
        "{}",
        converted.error_message
    );
}

#[test]
fn dynamiq_carriers_win_over_derived_values() {
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv("dynamiq.run.id", s("d892abb1-6c06-4ba8-9aed-0f1da290fb55")),
        kv("dynamiq.trace_id", s("my-trace")),
        kv(
            "dynamiq.parent_run.id",
            s("6d7900cd-17a2-4168-b8b7-8fed77e526c4"),
        ),
        kv("dynamiq.run.type", s("flow")),
        kv("dynamiq.run.status", s("skipped")),
        kv(
            "dynamiq.run.end_time_missing",
            Some(AnyValue {
                value: Some(Av::BoolValue(true)),
            }),
        ),
        kv("dynamiq.session_id", s("sess")),
        kv("dynamiq.source_id", s("src")),
        kv(
            "dynamiq.metadata",
            s(r#"{"node":{"group":"utils"},"big":123456789012345678901234567890}"#),
        ),
        kv("dynamiq.error", s("null")),
        kv("dynamiq.executions", s(r#"[{"id":"x"}]"#)),
    ];
    let run = one(sp);
    assert_eq!(run["id"], "d892abb1-6c06-4ba8-9aed-0f1da290fb55");
    assert_eq!(run["trace_id"], "my-trace");
    assert_eq!(run["parent_run_id"], "6d7900cd-17a2-4168-b8b7-8fed77e526c4");
    assert_eq!(run["type"], "flow");
    assert_eq!(run["status"], "skipped");
    assert!(run["end_time"].is_null());
    assert_eq!(run["session_id"], "sess");
    assert_eq!(run["source_id"], "src");
    assert!(
        run["metadata"]["otel"].is_null(),
        "a Dynamiq run carries its own metadata"
    );
    assert_eq!(run["executions"], json!([{"id": "x"}]));
    // Embedded verbatim: the big integer survives as written.
    let bytes = convert_request(
        &request(
            vec![],
            vec![{
                let mut sp = span(7, 2, None);
                sp.attributes = vec![kv(
                    "dynamiq.metadata",
                    s(r#"{"big":123456789012345678901234567890}"#),
                )];
                sp
            }],
        ),
        &SpanConvertOptions::default(),
    )
    .runs
    .remove(0);
    assert!(
        String::from_utf8(bytes)
            .unwrap()
            .contains(r#""metadata":{"big":123456789012345678901234567890}"#)
    );
}

#[test]
fn input_output_follow_the_precedence_and_mime_type() {
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv("gen_ai.prompt", s("ignored: input.value comes first")),
        kv("input.value", s(r#"{"q": 1}"#)),
        kv("input.mime_type", s("application/json")),
        kv("output.value", s(r#"{"not": "json, no mime"}"#)),
        kv("langfuse.observation.output", s("later")),
    ];
    let run = one(sp);
    assert_eq!(run["input"], json!({"q": 1}));
    assert_eq!(run["output"], json!(r#"{"not": "json, no mime"}"#));
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![kv("traceloop.entity.input", s("not json"))];
    assert_eq!(one(sp)["input"], json!("not json"));
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![kv(
        "gen_ai.completion",
        Some(AnyValue {
            value: Some(Av::IntValue(5)),
        }),
    )];
    assert_eq!(one(sp)["output"], json!(5));
}

#[test]
fn session_source_and_tags_follow_their_precedence() {
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv("langfuse.session.id", s("lf")),
        kv("gen_ai.conversation.id", s("conv")),
        kv("langsmith.span.tags", s("a, b,,c")),
    ];
    let run = runs_of(&request(vec![kv("service.name", s("svc"))], vec![sp])).remove(0);
    assert_eq!(run["session_id"], "conv");
    assert_eq!(run["source_id"], "svc");
    assert_eq!(run["tags"], json!(["a", "b", "c"]));
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv(
            "tag.tags",
            Some(AnyValue {
                value: Some(Av::ArrayValue(ArrayValue {
                    values: vec![s("x").unwrap()],
                })),
            }),
        ),
        kv("langfuse.trace.tags", s(r#"["y"]"#)),
    ];
    assert_eq!(one(sp)["tags"], json!(["x"]));
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![kv("langfuse.trace.tags", s(r#"["y","z"]"#))];
    assert_eq!(one(sp)["tags"], json!(["y", "z"]));
}

#[test]
fn usage_and_costs_from_openinference_counts() {
    let mut sp = span(7, 2, Some(1));
    let int = |n| {
        Some(AnyValue {
            value: Some(Av::IntValue(n)),
        })
    };
    let dbl = |x| {
        Some(AnyValue {
            value: Some(Av::DoubleValue(x)),
        })
    };
    sp.attributes = vec![
        kv("openinference.span.kind", s("LLM")),
        kv("llm.model_name", s("claude-3")),
        kv("llm.provider", s("anthropic")),
        kv("llm.token_count.prompt", int(10)),
        kv("llm.token_count.completion", int(5)),
        kv("llm.token_count.prompt_details.cache_read", int(3)),
        kv("llm.cost.prompt", dbl(0.01)),
        kv("llm.cost.total", dbl(0.02)),
    ];
    let run = one(sp);
    assert_eq!(run["metadata"]["node"]["model"], "anthropic/claude-3");
    assert_eq!(
        run["metadata"]["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
               "cache_read_input_tokens": 3, "prompt_tokens_cost_usd": 0.01,
               "total_tokens_cost_usd": 0.02})
    );
    // No token counts: no usage object.
    assert!(one(span(7, 2, Some(1)))["metadata"]["usage"].is_null());
}

/// The newest GenAI names (schema 1.42) are read, and the older spellings still are.
#[test]
fn newest_genai_usage_and_tool_call_attributes_are_read() {
    let int = |n| {
        Some(AnyValue {
            value: Some(Av::IntValue(n)),
        })
    };
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv("gen_ai.operation.name", s("chat")),
        kv("gen_ai.provider.name", s("openai")),
        kv("gen_ai.request.model", s("o3")),
        kv("gen_ai.usage.input_tokens", int(20)),
        kv("gen_ai.usage.output_tokens", int(9)),
        kv("gen_ai.usage.reasoning.output_tokens", int(6)),
        kv("gen_ai.usage.cache_read.input_tokens", int(4)),
        kv("gen_ai.usage.cache_write.input_tokens", int(2)),
        kv("gen_ai.usage.cache_creation.input_tokens", int(99)),
    ];
    let run = one(sp);
    assert_eq!(run["metadata"]["node"]["model"], "openai/o3");
    assert_eq!(
        run["metadata"]["usage"],
        json!({"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
               "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2,
               "reasoning_tokens": 6})
    );
    // The older `cache_creation` spelling alone is still read.
    let mut sp = span(7, 2, Some(1));
    sp.attributes = vec![
        kv("gen_ai.usage.input_tokens", int(1)),
        kv("gen_ai.usage.cache_creation.input_tokens", int(5)),
    ];
    assert_eq!(
        one(sp)["metadata"]["usage"]["cache_creation_input_tokens"],
        5
    );
    // A tool span's arguments and result are its run's input and output.
    let mut sp = span(7, 3, Some(1));
    sp.attributes = vec![
        kv("gen_ai.operation.name", s("execute_tool")),
        kv("gen_ai.tool.name", s("weather")),
        kv("gen_ai.tool.call.arguments", s(r#"{"city":"Paris"}"#)),
        kv("gen_ai.tool.call.result", s("sunny")),
    ];
    let run = one(sp);
    assert_eq!(run["input"], json!({"city": "Paris"}));
    assert_eq!(run["output"], json!("sunny"));
    assert_eq!(run["metadata"]["node"]["group"], "tools");
    assert_eq!(run["metadata"]["node"]["name"], "weather");
}

#[test]
fn errors_come_from_status_then_the_exception_event() {
    let mut sp = span(7, 2, Some(1));
    sp.status = Some(Status {
        code: 2,
        message: String::new(),
    });
    sp.events = vec![Event {
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", s("ValueError")),
            kv("exception.message", s("boom")),
            kv("exception.stacktrace", s("Traceback ...\nValueError: boom")),
        ],
        ..Default::default()
    }];
    let run = one(sp.clone());
    assert_eq!(run["status"], "failed");
    assert_eq!(
        run["error"],
        json!({"message": "boom", "traceback": "Traceback ...\nValueError: boom"})
    );
    assert_eq!(run["metadata"]["otel"]["events"][0]["name"], "exception");
    sp.status = Some(Status {
        code: 2,
        message: "status says".into(),
    });
    sp.events.clear();
    assert_eq!(
        one(sp)["error"],
        json!({"message": "status says", "traceback": null})
    );
}

#[test]
fn hostile_values_still_make_valid_runs() {
    let mut sp = span(7, 2, Some(1));
    sp.name = String::new();
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    sp.attributes = vec![
        kv("input.value", s(&deep)),
        kv("input.mime_type", s("application/json")),
        kv("output.value", s("\u{0}\u{1f}\"\\ \u{2028}")),
        kv("dynamiq.run.type", s("bogus")),
        kv("dynamiq.run.status", s("bogus")),
        kv("dynamiq.metadata", s("[1]")),
        kv("gen_ai.usage.input_tokens", s("not a number")),
        kv(
            "bytes",
            Some(AnyValue {
                value: Some(Av::BytesValue(vec![0, 255])),
            }),
        ),
        kv("empty", None),
    ];
    let run = one(sp);
    assert_eq!(run["name"], "(unnamed span)");
    assert_eq!(run["input"], json!(deep), "too deep to embed: kept as text");
    assert_eq!(run["output"], json!("\u{0}\u{1f}\"\\ \u{2028}"));
    assert_eq!(run["type"], "node");
    assert_eq!(run["status"], "succeeded");
    assert!(run["metadata"]["node"].is_object());
}

#[test]
fn attributes_nested_past_the_run_depth_limit_reject_only_that_span() {
    let mut value = AnyValue {
        value: Some(Av::StringValue("leaf".into())),
    };
    for _ in 0..60 {
        value = AnyValue {
            value: Some(Av::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut deep = span(7, 2, Some(1));
    deep.attributes = vec![kv("deep", Some(value))];
    let converted = convert_request(
        &request(vec![], vec![deep, span(7, 1, None)]),
        &SpanConvertOptions::default(),
    );
    assert_eq!((converted.runs.len(), converted.rejected_spans), (1, 1));
    assert!(converted.error_message.contains("nested too deeply"));
    assert_collector_valid(&converted.runs);
}

mod generated {
    //! Promise 3 over generated spans: whatever the attributes, every run made is valid.
    use super::*;
    use proptest::prelude::*;

    fn any_value(depth: u32) -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            ".{0,12}".prop_map(Av::StringValue),
            any::<i64>().prop_map(Av::IntValue),
            any::<f64>().prop_map(Av::DoubleValue),
            any::<bool>().prop_map(Av::BoolValue),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(Av::BytesValue),
            Just(Av::StringValue(
                "{\"json\": [1, 2, {\"deep\": null}]}".into()
            )),
        ]
        .prop_map(|v| AnyValue { value: Some(v) });
        leaf.prop_recursive(depth, 64, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                    value: Some(Av::ArrayValue(ArrayValue { values }))
                }),
                proptest::collection::vec(("[a-z.]{1,8}", inner), 0..3).prop_map(|kvs| {
                    AnyValue {
                        value: Some(Av::KvlistValue(
                            opentelemetry_proto::tonic::common::v1::KeyValueList {
                                values: kvs.into_iter().map(|(k, v)| kv(&k, Some(v))).collect(),
                            },
                        )),
                    }
                }),
            ]
        })
    }

    fn attribute() -> impl Strategy<Value = KeyValue> {
        let keys = proptest::sample::select(
            super::super::semconv::KNOWN_KEYS
                .iter()
                .map(|k| k.to_string())
                .chain(["x".to_string(), "exception.message".to_string()])
                .collect::<Vec<_>>(),
        );
        (keys, any_value(40)).prop_map(|(k, v)| kv(&k, Some(v)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn every_converted_run_is_valid(
            attrs in proptest::collection::vec(attribute(), 0..12),
            name in ".{0,8}",
            status in 0i32..4,
            parent in any::<bool>(),
            start in any::<u64>(),
            len in any::<u32>(),
        ) {
            let mut sp = span(9, 2, parent.then_some(1));
            sp.name = name;
            sp.attributes = attrs;
            sp.status = Some(Status { code: status, message: String::new() });
            sp.start_time_unix_nano = start;
            sp.end_time_unix_nano = start.saturating_add(u64::from(len));
            let request = request(vec![], vec![sp]);
            let converted = convert_request(&request, &SpanConvertOptions::default());
            prop_assert_eq!(converted.runs.len() as u64 + converted.rejected_spans, 1);
            assert_collector_valid(&converted.runs);
            assert_records_match(&request);
            for run in &converted.runs {
                prop_assert!(crate::model::batch::nesting_within(run, crate::model::batch::MAX_DEPTH - 2));
            }
        }
    }
}

#[test]
fn the_deepest_accepted_attributes_still_make_a_valid_run() {
    let mut value = AnyValue {
        value: Some(Av::StringValue("leaf".into())),
    };
    for _ in 1..24 {
        value = AnyValue {
            value: Some(Av::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![kv("k", Some(value))],
                },
            )),
        };
    }
    let mut sp = span(7, 2, Some(1));
    sp.events = vec![Event {
        name: "deep".into(),
        attributes: vec![kv("deep", Some(value.clone()))],
        ..Default::default()
    }];
    sp.attributes = vec![kv("tag.tags", Some(value))];
    let converted = convert_request(&request(vec![], vec![sp]), &SpanConvertOptions::default());
    assert_eq!(converted.rejected_spans, 0, "{}", converted.error_message);
    assert_collector_valid(&converted.runs);
}

#[test]
#[ignore]
fn show_a_run() {
    let c = convert_request(&pb(GENAI_PB), &SpanConvertOptions::default());
    for r in c.runs.iter().take(3) {
        println!("{} bytes: {}", r.len(), String::from_utf8_lossy(r));
    }
}

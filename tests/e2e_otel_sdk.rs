//! End to end: the REAL OpenTelemetry Python SDK (`opentelemetry-sdk` and the OTLP exporters,
//! pinned in `scripts/e2e/constraints.txt`) exports GenAI-shaped traces to the sidecar over
//! OTLP/HTTP protobuf, OTLP/HTTP JSON and OTLP/gRPC; the sidecar converts every span to a Dynamiq
//! run (`docs/run-span-mapping.md` §5) and forwards them to a mock collector.
//!
//! Per protocol: a `MockCollector`, a `Sidecar` with a random key, and
//! `scripts/e2e/otel_export.py --iterations 3`, which makes per iteration the tree
//! `invoke_agent travel-agent` → {`chat gpt-4o-mini`, `execute_tool get_weather`} (the tool
//! raising `ValueError` on iteration 0), records every export result and writes a report of every
//! span (ids in hex). Then:
//!
//! - every export succeeded;
//! - the collector received exactly one run per span, each with the run shape (id, name, type,
//!   trace_id, source_id = the resource's `service.instance.id`, times, status);
//! - `metadata.otel` names the span; the run tree mirrors the span tree (`parent_run_id`);
//! - the root is a `workflow`, the rest `node`s; the chat run carries model, usage and messages;
//!   the failing tool run is `failed` with the exception's message and stacktrace;
//! - every upstream request carried `Authorization: Bearer <sidecar key>`, and no log holds it.
//!
//! No timing is asserted. The venv is built on first use (about 2 minutes cold, then cached in
//! `target/e2e-venv`); when that fails (no PyPI) the tests fail, they do not skip.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::collector::run_id;
use support::python::{e2e_python, e2e_script};
use support::{MockCollector, Sidecar, wait_until};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Traces the script makes.
const ITERATIONS: usize = 3;
/// Spans per trace: agent, chat, tool.
const SPANS_PER_ITERATION: usize = 3;
/// How long the script may take (imports the SDK and grpc: a few seconds on 2 cores).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the collector may wait for the sidecar to deliver everything.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What one `otel_export.py` invocation did.
struct ExportRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The `--out` report (Null when it wrote none).
    report: Value,
}

impl ExportRun {
    fn describe(&self) -> String {
        let stderr = &self.stderr;
        let start = (stderr.len().saturating_sub(6000)..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(stderr.len());
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.code,
            self.stdout,
            &stderr[start..]
        )
    }
}

/// Runs `otel_export.py --protocol <protocol> --endpoint <endpoint> --iterations <n>
/// --out <dir>/otel-<protocol>.json` with the venv's python, killing it after `SCRIPT_TIMEOUT`.
fn run_otel_export(protocol: &str, endpoint: &str, iterations: usize, dir: &Path) -> ExportRun {
    let python = e2e_python();
    let tag = protocol.replace('/', "-");
    let out = dir.join(format!("otel-{tag}.json"));
    let stdout_path = dir.join(format!("otel-{tag}.stdout"));
    let stderr_path = dir.join(format!("otel-{tag}.stderr"));
    let mut child = Command::new(&python)
        .arg(e2e_script("otel_export.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint])
        .args(["--iterations", &iterations.to_string()])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
    let code = support::python::wait_or_kill(&mut child, SCRIPT_TIMEOUT, "otel_export.py");
    let report = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    ExportRun {
        code,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        report,
    }
}

/// `0123…` (32 hex) → `01234567-89ab-…` (the run's `trace_id`).
fn hyphenated(trace_hex: &str) -> String {
    uuid::Uuid::parse_str(trace_hex)
        .unwrap_or_else(|e| panic!("trace id {trace_hex:?} is not 32 hex digits: {e}"))
        .hyphenated()
        .to_string()
}

/// The run id docs/run-span-mapping.md §2 gives a foreign span: a UUIDv8 packing the 64-bit span id S and
/// H = the top 58 bits of `sha256("dynamiq-otel-v1" ‖ trace id bytes)`: bits 127..80 = S >> 16,
/// version 8, bits 75..64 = (S >> 4) & 0xFFF, variant 0b10, bits 61..0 = ((S & 0xF) << 58) | H.
/// Written from the spec, independently of `src/convert/ids.rs`.
fn spec_run_id(trace_hex: &str, span_hex: &str) -> String {
    use sha2::{Digest, Sha256};
    let trace = const_hex::decode(trace_hex).expect("trace id hex");
    let span: [u8; 8] = const_hex::decode(span_hex)
        .expect("span id hex")
        .try_into()
        .expect("8-byte span id");
    let s = u64::from_be_bytes(span);
    let digest = Sha256::new()
        .chain_update(b"dynamiq-otel-v1")
        .chain_update(&trace)
        .finalize();
    let h = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 6;
    let id: u128 = (u128::from(s >> 16) << 80)
        | (0x8 << 76)
        | (u128::from((s >> 4) & 0xFFF) << 64)
        | (0b10 << 62)
        | (u128::from(s & 0xF) << 58)
        | u128::from(h);
    uuid::Uuid::from_u128(id).hyphenated().to_string()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Checks a run time: RFC 3339 in UTC (`+00:00`), equal to `ns` truncated to the microsecond.
fn assert_time(run: &Value, field: &str, ns: u64, what: &str) {
    let text = run[field]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {field} is not a string: {run}"));
    assert!(
        text.ends_with("+00:00"),
        "{what}: {field} {text:?} is not in UTC as +00:00"
    );
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|e| panic!("{what}: {field} {text:?} is not RFC 3339: {e}"));
    let expected = i128::from(ns / 1_000 * 1_000);
    assert_eq!(
        parsed.unix_timestamp_nanos(),
        expected,
        "{what}: {field} {text:?} is not the span's time {ns} ns truncated to µs"
    );
}

/// Runs the script over `protocol` against a fresh sidecar and checks everything upstream.
fn export_and_check(protocol: &str) {
    // The venv first, so a setup failure is reported before anything else starts.
    e2e_python();
    let collector = MockCollector::start();
    let key = format!("sk-sidecar-e2e-{}", uuid::Uuid::new_v4().simple());
    let sidecar = Sidecar::start(&collector.url(), &key);
    let endpoint = match protocol {
        "grpc" => format!("http://{}", sidecar.grpc_addr()),
        _ => sidecar.url(),
    };

    let run = run_otel_export(protocol, &endpoint, ITERATIONS, sidecar.dir());
    assert_eq!(
        run.code,
        Some(0),
        "otel_export.py --protocol {protocol} failed\n{}",
        run.describe()
    );
    let report = &run.report;
    let results = report["export_results"]
        .as_array()
        .unwrap_or_else(|| panic!("report without export_results\n{}", run.describe()));
    assert!(!results.is_empty(), "no export call was made");
    assert!(
        results.iter().all(|r| r == "SUCCESS"),
        "{protocol}: export results {results:?}"
    );
    let instance_id = report["service_instance_id"]
        .as_str()
        .expect("service_instance_id in the report");
    let spans = report["spans"].as_array().expect("spans in the report");
    assert_eq!(
        spans.len(),
        ITERATIONS * SPANS_PER_ITERATION,
        "spans the SDK made\n{}",
        run.describe()
    );
    let input_messages = &report["input_messages"];
    let output_messages = &report["output_messages"];

    // Every span arrives upstream as one run.
    let expected = spans.len();
    wait_until(
        &format!("{expected} distinct runs at the collector ({protocol})"),
        DELIVERY_TIMEOUT,
        || {
            collector
                .accepted_runs()
                .iter()
                .filter_map(run_id)
                .collect::<HashSet<_>>()
                .len()
                >= expected
        },
    );
    // Let stragglers (duplicates) arrive before counting.
    std::thread::sleep(Duration::from_millis(300));
    let runs = collector.accepted_runs();
    assert_eq!(
        runs.len(),
        expected,
        "{protocol}: runs upstream != spans exported\n{}",
        collector.summary()
    );

    // Upstream requests carry the sidecar's key.
    let expected_auth = format!("Bearer {key}");
    let requests = collector.trace_requests();
    assert!(!requests.is_empty());
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(
            request.authorization(),
            Some(expected_auth.as_str()),
            "{protocol}: upstream request {i} carried the wrong Authorization"
        );
        assert!(
            request.parse_error.is_none(),
            "{protocol}: upstream request {i} is not a {{\"runs\":[...]}} batch: {:?}",
            request.parse_error
        );
    }
    assert!(
        !sidecar.logs().contains(&key),
        "the sidecar's key appears in its logs"
    );

    // span id (hex) → run, via metadata.otel.spanId.
    let mut by_span: HashMap<String, &Value> = HashMap::new();
    for run in &runs {
        let span_id = str_at(run, "/metadata/otel/spanId")
            .unwrap_or_else(|| panic!("{protocol}: run without metadata.otel.spanId: {run}"));
        assert!(
            by_span.insert(span_id.to_string(), run).is_none(),
            "{protocol}: two runs for span {span_id}"
        );
    }

    let mut ids = HashSet::new();
    for span in spans {
        let span_id = span["span_id"].as_str().expect("span_id");
        let trace_hex = span["trace_id"].as_str().expect("trace_id");
        let name = span["name"].as_str().expect("name");
        let iteration = span["iteration"].as_u64().expect("iteration");
        let what = format!("{protocol}: span {name:?} {span_id} (iteration {iteration})");
        let run = by_span
            .get(span_id)
            .copied()
            .unwrap_or_else(|| panic!("{what}: no run upstream"));
        let is_root = span["parent_span_id"].is_null();

        // Shape.
        let id = run["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: id is not a string: {run}"));
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "{what}: id {id:?} is not a UUID"
        );
        assert_eq!(
            id,
            spec_run_id(trace_hex, span_id),
            "{what}: id is not the spec's UUIDv8 of (trace, span)"
        );
        assert!(ids.insert(id.to_string()), "{what}: duplicate run id {id}");
        assert_eq!(run["name"], name, "{what}: name");
        assert_eq!(
            run["type"],
            if is_root { "workflow" } else { "node" },
            "{what}: type"
        );
        assert_eq!(run["trace_id"], hyphenated(trace_hex), "{what}: trace_id");
        assert_eq!(run["source_id"], instance_id, "{what}: source_id");
        assert_time(
            run,
            "start_time",
            span["start_time_unix_nano"].as_u64().expect("start ns"),
            &what,
        );
        assert_time(
            run,
            "end_time",
            span["end_time_unix_nano"].as_u64().expect("end ns"),
            &what,
        );
        assert!(run["status"].is_string(), "{what}: status: {run}");
        assert!(run["metadata"].is_object(), "{what}: metadata: {run}");

        // The otel envelope names the span.
        assert_eq!(
            str_at(run, "/metadata/otel/traceId"),
            Some(trace_hex),
            "{what}: metadata.otel.traceId"
        );
        assert_eq!(
            run.pointer("/metadata/otel/kind").and_then(Value::as_i64),
            span["kind"].as_i64(),
            "{what}: metadata.otel.kind"
        );
        assert_eq!(
            str_at(run, "/metadata/node/id"),
            Some(span_id),
            "{what}: metadata.node.id"
        );

        // Parent links.
        match span["parent_span_id"].as_str() {
            None => {
                assert!(run["parent_run_id"].is_null(), "{what}: root has a parent");
                let p = run.pointer("/metadata/otel/parentSpanId");
                assert!(
                    matches!(p, None | Some(Value::Null)) || p == Some(&json!("")),
                    "{what}: root with metadata.otel.parentSpanId {p:?}"
                );
            }
            Some(parent_hex) => {
                assert_eq!(
                    str_at(run, "/metadata/otel/parentSpanId"),
                    Some(parent_hex),
                    "{what}: metadata.otel.parentSpanId"
                );
                let parent = by_span
                    .get(parent_hex)
                    .unwrap_or_else(|| panic!("{what}: no run for parent span {parent_hex}"));
                assert_eq!(
                    run["parent_run_id"], parent["id"],
                    "{what}: parent_run_id is not the id of the parent span's run"
                );
            }
        }

        // Session: session.id where set, else (spec) the trace id.
        match span["session_id"].as_str() {
            Some(session) => {
                assert_eq!(session, format!("session-{iteration}"));
                assert_eq!(run["session_id"], session, "{what}: session_id");
            }
            None => assert_eq!(
                run["session_id"],
                hyphenated(trace_hex),
                "{what}: session_id without session.id (spec: falls back to the trace id)"
            ),
        }

        // Status and error.
        let failing = name == "execute_tool get_weather" && iteration == 0;
        assert_eq!(
            span["status"],
            if failing { "ERROR" } else { "UNSET" },
            "{what}: the SDK's span status"
        );
        if failing {
            assert_eq!(run["status"], "failed", "{what}: status");
            let message = str_at(run, "/error/message").unwrap_or_default();
            assert!(
                message.contains("weather service down"),
                "{what}: error.message {message:?}\n{run}"
            );
            let traceback = str_at(run, "/error/traceback").unwrap_or_default();
            assert!(
                traceback.contains("ValueError") && traceback.contains("Traceback"),
                "{what}: error.traceback {traceback:?}"
            );
        } else {
            assert_eq!(run["status"], "succeeded", "{what}: status\n{run}");
            assert!(run["error"].is_null(), "{what}: error {}", run["error"]);
        }

        // Per kind.
        match name {
            "invoke_agent travel-agent" => {
                assert_eq!(
                    str_at(run, "/metadata/node/group"),
                    Some("agents"),
                    "{what}: metadata.node.group (gen_ai.operation.name=invoke_agent)"
                );
            }
            "chat gpt-4o-mini" => {
                assert_eq!(
                    str_at(run, "/metadata/node/group"),
                    Some("llms"),
                    "{what}: metadata.node.group"
                );
                assert_eq!(
                    str_at(run, "/metadata/node/model"),
                    Some("openai/gpt-4o-mini"),
                    "{what}: metadata.node.model"
                );
                let usage = &run["metadata"]["usage"];
                assert_eq!(usage["prompt_tokens"], 11, "{what}: usage {usage}");
                assert_eq!(usage["completion_tokens"], 16, "{what}: usage {usage}");
                assert_eq!(usage["total_tokens"], 27, "{what}: usage {usage}");
                assert_eq!(&run["input"], input_messages, "{what}: input");
                assert_eq!(&run["output"], output_messages, "{what}: output");
            }
            "execute_tool get_weather" => {
                assert_eq!(
                    str_at(run, "/metadata/node/group"),
                    Some("tools"),
                    "{what}: metadata.node.group (gen_ai.operation.name=execute_tool)"
                );
            }
            other => panic!("unexpected span {other:?}"),
        }
    }
    assert_eq!(ids.len(), expected);
}

#[test]
fn otel_sdk_http_protobuf_spans_become_runs() {
    export_and_check("http/protobuf");
}

#[test]
fn otel_sdk_http_json_spans_become_runs() {
    export_and_check("http/json");
}

#[test]
fn otel_sdk_grpc_spans_become_runs() {
    export_and_check("grpc");
}

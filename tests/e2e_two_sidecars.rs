//! End to end, runs → spans → runs with real clients at both ends:
//!
//! 1. the REAL Dynamiq SDK → sidecar A (`[outputs.otlp]`, http/protobuf) → sidecar B (OTLP
//!    input) → B's mock collector: every run B forwards is JSON-equal to a version the SDK sent
//!    for that id, and the last version of every run arrives (the conversion round-trips
//!    exactly through two sidecars). A's own collector gets everything too.
//! 2. the REAL Dynamiq SDK → sidecar A → a REAL OTel receiver (`scripts/e2e/otlp_sink.py`, the
//!    OpenTelemetry Python proto package decoding A's requests): the spans form one tree per
//!    trace and carry the GenAI/OpenInference attributes (model, provider, usage, kinds), and a
//!    failed node is an ERROR span with an `exception` event.
//!
//! No timing is asserted. The venv is the Dynamiq SDK one (`scripts/e2e/setup-venv.sh`).

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::collector::{run_id, split_batch};
use support::python::{e2e_python, e2e_script, run_sdk_workflows};
use support::sidecar::free_port;
use support::{MockCollector, Sidecar, wait_until};

const SDK_TIMEOUT: Duration = Duration::from_secs(300);
const DELIVERY: Duration = Duration::from_secs(60);

/// Every version of each run the SDK sent, in order.
fn sent_runs(sdk: &support::python::SdkRun) -> HashMap<String, Vec<Value>> {
    let mut sent: HashMap<String, Vec<Value>> = HashMap::new();
    for flush in &sdk.flushes {
        assert_eq!(
            flush.status,
            Some(200),
            "flush {}: {:?}",
            flush.seq,
            flush.error
        );
        let (runs, _) = split_batch(flush.body_raw.as_bytes()).unwrap();
        for run in runs {
            sent.entry(run_id(&run).unwrap()).or_default().push(run);
        }
    }
    sent
}

/// Runs the SDK's `llm` and `failure` scenarios (`runs` workflow runs each) against `sidecar`;
/// every version of each run the SDK sent.
fn run_llm_and_failure_workflows(sidecar: &Sidecar, runs: usize) -> HashMap<String, Vec<Value>> {
    let mut sent: HashMap<String, Vec<Value>> = HashMap::new();
    for scenario in ["llm", "failure"] {
        let sdk = run_sdk_workflows(
            &sidecar.url(),
            "client-key",
            scenario,
            runs,
            sidecar.dir(),
            &[],
            SDK_TIMEOUT,
        );
        assert!(sdk.success(), "{}", sdk.report());
        for (id, versions) in sent_runs(&sdk) {
            sent.entry(id).or_default().extend(versions);
        }
    }
    sent
}

#[test]
fn sdk_runs_cross_two_sidecars_over_otlp_unchanged() {
    e2e_python();
    let collector_b = MockCollector::start();
    let b = Sidecar::start(&collector_b.url(), "sk-sidecar-b");
    let collector_a = MockCollector::start();
    let a = Sidecar::builder(&collector_a.url())
        .access_key("sk-sidecar-a")
        .set("outputs.otlp.endpoint", b.url())
        .set("outputs.otlp.protocol", "http/protobuf")
        .start();

    let sent = run_llm_and_failure_workflows(&a, 2);
    let ids: HashSet<String> = sent.keys().cloned().collect();
    collector_a.wait_for_run_ids(&ids, DELIVERY);
    collector_b.wait_for_run_ids(&ids, DELIVERY);

    let through_b = collector_b.runs();
    for run in &through_b {
        let id = run_id(run).unwrap();
        let versions = sent
            .get(&id)
            .unwrap_or_else(|| panic!("B forwarded unknown run {id}"));
        assert!(
            versions.contains(run),
            "run {id} changed on its way through two sidecars:\n got {run}\n sent {versions:?}"
        );
    }
    for (id, versions) in &sent {
        let last = versions.last().unwrap();
        assert!(
            through_b.iter().any(|r| r == last),
            "the last version of run {id} did not reach B's collector"
        );
    }
    for request in collector_b.trace_requests() {
        assert_eq!(request.authorization(), Some("Bearer sk-sidecar-b"));
    }
}

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_otel_receiver_sees_genai_spans_from_sdk_runs() {
    let python = e2e_python();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");
    let _sink = Sink(
        Command::new(&python)
            .arg(e2e_script("otlp_sink.py"))
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(&spans_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP sink"),
    );
    let collector = MockCollector::start();
    let a = Sidecar::builder(&collector.url())
        .access_key("sk-sidecar-a")
        .set("outputs.otlp.endpoint", format!("http://127.0.0.1:{port}"))
        .start();
    let ids: HashSet<String> = run_llm_and_failure_workflows(&a, 1).into_keys().collect();
    let read_spans = || -> Vec<Value> {
        std::fs::read_to_string(&spans_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("the OTel receiver has a span per run", DELIVERY, || {
        let seen: HashSet<String> = read_spans()
            .iter()
            .filter_map(|s| {
                s["attributes"]["dynamiq.run.id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        ids.is_subset(&seen)
    });
    let spans = read_spans();
    let span_ids: HashSet<(&str, &str)> = spans
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap(),
                s["span_id"].as_str().unwrap(),
            )
        })
        .collect();
    for span in &spans {
        if let Some(parent) = span["parent_span_id"].as_str() {
            assert!(
                span_ids.contains(&(span["trace_id"].as_str().unwrap(), parent)),
                "span {} has a parent outside its trace",
                span["name"]
            );
        }
        assert_eq!(span["resource"]["service.name"], "dynamiq");
    }
    let llm = spans
        .iter()
        .find(|s| s["attributes"]["gen_ai.operation.name"] == "chat")
        .expect("an LLM span");
    assert_eq!(llm["kind"], 3, "CLIENT");
    assert_eq!(llm["attributes"]["openinference.span.kind"], "LLM");
    assert!(llm["attributes"]["gen_ai.request.model"].is_string());
    assert!(llm["attributes"]["gen_ai.provider.name"].is_string());
    assert!(
        llm["attributes"]["gen_ai.usage.input_tokens"].is_number()
            || llm["attributes"]["gen_ai.usage.input_tokens"].is_string()
    );
    assert!(
        spans
            .iter()
            .any(|s| s["attributes"]["gen_ai.operation.name"] == "invoke_workflow")
    );
    let failed = spans
        .iter()
        .find(|s| s["status"]["code"] == "STATUS_CODE_ERROR")
        .expect("an ERROR span for the failing node");
    assert!(
        failed["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "exception")
    );
    assert!(failed["attributes"]["error.type"].is_string());
}

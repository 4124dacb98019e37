//! End to end: the REAL Dynamiq Python SDK (`dynamiq` from PyPI, pinned in
//! `scripts/e2e/requirements.txt`) traces real workflows through `DynamiqTracingCallbackHandler`
//! to the sidecar, which forwards them to a mock collector.
//!
//! Per scenario: a `MockCollector`, a `Sidecar` with a random key, and
//! `scripts/e2e/sdk_workflows.py` run against the sidecar with a client key that must never be
//! forwarded. The script records every flush the SDK made (exact body bytes, status). Then:
//!
//! - every flush got 200 `{"message":"ok","accepted":N}` with N = the runs in it;
//! - the collector received every run id the SDK sent, each run JSON-equal to a version the SDK
//!   sent for that id, byte-for-byte verbatim, and the last version of each id arrived;
//! - every upstream request carried `Authorization: Bearer <sidecar key>`, never the client key;
//! - the sidecar's logs contain neither key.
//!
//! No timing is asserted. The venv is built on first use (about 2 minutes cold, then cached in
//! `target/e2e-venv`); when that fails (no PyPI) the tests fail, they do not skip.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use support::collector::{run_id, split_batch};
use support::python::{SdkRun, e2e_python, run_sdk_workflows};
use support::{MockCollector, Sidecar};

/// The key the SDK (the sidecar's client) sends; the sidecar must replace it with its own.
const CLIENT_KEY: &str = "client-key-should-not-be-forwarded";
/// How long the SDK script may take (it imports the SDK: ~10 s on 2 cores).
const SDK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the collector may wait for the sidecar to deliver everything.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The versions of each run the SDK sent, in order: (parsed, exact JSON text).
type SentRuns = HashMap<String, Vec<(Value, String)>>;

struct Outcome {
    /// Kept alive until the test ends (dropping stops it).
    _collector: MockCollector,
    /// Kept alive until the test ends (dropping kills it).
    _sidecar: Sidecar,
    sdk: SdkRun,
    sent: SentRuns,
    /// Runs the collector accepted, in arrival order.
    upstream: Vec<Value>,
}

fn run_scenario(scenario: &str, runs: usize) -> Outcome {
    // The venv first, so a setup failure is reported before anything else starts.
    e2e_python();
    let collector = MockCollector::start();
    let key = format!("sk-sidecar-e2e-{}", uuid::Uuid::new_v4().simple());
    let sidecar = Sidecar::start(&collector.url(), &key);

    let sdk = run_sdk_workflows(
        &sidecar.url(),
        CLIENT_KEY,
        scenario,
        runs,
        sidecar.dir(),
        &[],
        SDK_TIMEOUT,
    );
    assert!(
        sdk.success(),
        "sdk_workflows.py --scenario {scenario} failed\n{}",
        sdk.report()
    );
    assert!(
        sdk.flushes.len() >= runs,
        "{scenario}: {} flushes recorded for {runs} workflow runs\n{}",
        sdk.flushes.len(),
        sdk.report()
    );

    // What the SDK sent, and what the sidecar answered it.
    let mut sent: SentRuns = HashMap::new();
    for flush in &sdk.flushes {
        assert_eq!(
            flush.status,
            Some(200),
            "{scenario} flush {}: status {:?}, error {:?}, answer {}",
            flush.seq,
            flush.status,
            flush.error,
            flush.response
        );
        assert!(
            flush.error.is_none(),
            "flush {}: {:?}",
            flush.seq,
            flush.error
        );
        assert!(
            flush.url.ends_with("/v1/traces"),
            "SDK posted to {}",
            flush.url
        );
        assert_eq!(
            flush.authorization.as_deref(),
            Some(format!("Bearer {CLIENT_KEY}").as_str()),
            "the SDK should send the client key to the sidecar"
        );
        let (runs_in_flush, raw) = split_batch(flush.body_raw.as_bytes())
            .unwrap_or_else(|e| panic!("flush {} body is not a batch: {e}", flush.seq));
        assert_eq!(
            Some(&Value::Array(runs_in_flush.clone())),
            flush.body.get("runs"),
            "recorded body and raw body disagree"
        );
        assert_eq!(
            flush.response.get("message").and_then(Value::as_str),
            Some("ok"),
            "flush {}: sidecar answered {}",
            flush.seq,
            flush.response
        );
        assert_eq!(
            flush.response.get("accepted").and_then(Value::as_u64),
            Some(runs_in_flush.len() as u64),
            "flush {}: sidecar answered {} for {} runs",
            flush.seq,
            flush.response,
            runs_in_flush.len()
        );
        for (run, raw) in runs_in_flush.into_iter().zip(raw) {
            let id = run_id(&run).expect("every run has an id");
            sent.entry(id).or_default().push((run, raw));
        }
    }

    // Everything arrives upstream.
    let ids: HashSet<String> = sent.keys().cloned().collect();
    collector.wait_for_run_ids(&ids, DELIVERY_TIMEOUT);

    // Upstream requests: the sidecar's key, never the client's; every run is one the SDK sent,
    // JSON-equal and byte-for-byte.
    let upstream_requests = collector.trace_requests();
    let expected_auth = format!("Bearer {key}");
    for (i, request) in upstream_requests.iter().enumerate() {
        assert_eq!(
            request.authorization(),
            Some(expected_auth.as_str()),
            "upstream request {i} carried the wrong Authorization"
        );
        for (name, value) in &request.headers {
            assert!(
                !value.contains(CLIENT_KEY),
                "upstream request {i}: header {name} carries the client key"
            );
        }
        assert!(
            !String::from_utf8_lossy(&request.decoded_body).contains(CLIENT_KEY),
            "upstream request {i}: the body carries the client key"
        );
        assert!(
            request.parse_error.is_none(),
            "upstream request {i} is not a {{\"runs\":[...]}} batch: {:?}",
            request.parse_error
        );
        for (run, raw) in request.runs.iter().zip(&request.raw_runs) {
            let id = run_id(run).expect("upstream run without id");
            let versions = sent
                .get(&id)
                .unwrap_or_else(|| panic!("upstream run {id} was never sent by the SDK"));
            assert!(
                versions.iter().any(|(v, _)| v == run),
                "upstream run {id} differs from every version the SDK sent\nupstream: {run}\nlast sent: {}",
                versions
                    .last()
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default()
            );
            assert!(
                versions.iter().any(|(_, r)| r == raw),
                "upstream run {id} is JSON-equal but not byte-for-byte what the SDK sent"
            );
        }
    }
    let upstream = collector.accepted_runs();
    let mut upstream_by_id: HashMap<String, Vec<&Value>> = HashMap::new();
    for run in &upstream {
        upstream_by_id
            .entry(run_id(run).unwrap_or_default())
            .or_default()
            .push(run);
    }
    for (id, versions) in &sent {
        let (last, _) = versions.last().expect("at least one version");
        let got = upstream_by_id.get(id).cloned().unwrap_or_default();
        assert!(
            got.contains(&last),
            "the last version the SDK sent of run {id} never reached the collector"
        );
    }

    // No key in the logs.
    let logs = sidecar.logs();
    assert!(
        !logs.contains(&key),
        "the sidecar's key appears in its logs"
    );
    assert!(
        !logs.contains(CLIENT_KEY),
        "the client's key appears in the sidecar's logs"
    );

    Outcome {
        _collector: collector,
        _sidecar: sidecar,
        sdk,
        sent,
        upstream,
    }
}

fn runs_named<'a>(runs: &'a [Value], name: &str) -> Vec<&'a Value> {
    runs.iter()
        .filter(|r| r.get("name").and_then(Value::as_str) == Some(name))
        .collect()
}

#[test]
fn python_nodes_workflow_reaches_collector_verbatim() {
    let out = run_scenario("python", 3);
    assert_eq!(out.sdk.flushes.len(), 3);
    // workflow + flow + 3 Python nodes per run, all succeeded.
    assert_eq!(out.sent.len(), 15, "distinct runs sent");
    for run in &out.upstream {
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let types: HashSet<&str> = out
        .upstream
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(types, HashSet::from(["workflow", "flow", "node"]));
}

#[test]
fn failing_python_node_reports_error_and_traceback() {
    let out = run_scenario("failure", 2);
    let boom = runs_named(&out.upstream, "Boom");
    assert!(!boom.is_empty(), "no Boom run upstream");
    for run in boom {
        assert_eq!(run["status"], "failed");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("boom in python node"), "{message}");
        let traceback = run["error"]["traceback"].as_str().unwrap_or_default();
        assert!(
            traceback.contains("Traceback") && traceback.contains("ValueError"),
            "{traceback}"
        );
    }
    let failed_workflows = out
        .upstream
        .iter()
        .filter(|r| r["type"] == "workflow" && r["status"] == "failed")
        .count();
    assert!(
        failed_workflows >= 2,
        "{failed_workflows} failed workflow runs upstream"
    );
}

#[test]
fn llm_node_workflow_through_loopback_stub() {
    let out = run_scenario("llm", 2);
    let llm = runs_named(&out.upstream, "LLM");
    assert!(!llm.is_empty(), "no LLM run upstream");
    for run in llm {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert!(
            run["output"].to_string().contains("capital"),
            "LLM output: {}",
            run["output"]
        );
    }
    assert_eq!(
        out.sdk.summary["network_refused"],
        Value::Array(vec![]),
        "the SDK tried to leave loopback"
    );
}

#[test]
fn reused_handler_resends_earlier_runs_and_all_arrive() {
    let runs = 4;
    let out = run_scenario("reused", runs);
    // One handler: flush k carries the runs of workflow runs 1..=k.
    let sizes: Vec<usize> = out
        .sdk
        .flushes
        .iter()
        .map(|f| f.body["runs"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![5, 10, 15, 20], "runs per flush");
    let resent = out.sent.values().filter(|v| v.len() > 1).count();
    assert!(
        resent > 0,
        "the SDK re-sent no run: the scenario lost its point"
    );
    // Every re-sent version of a run is identical to the first.
    for (id, versions) in &out.sent {
        assert!(
            versions.iter().all(|(v, _)| *v == versions[0].0),
            "run {id} changed between flushes"
        );
    }
    assert_eq!(out.sent.len(), 5 * runs);
}

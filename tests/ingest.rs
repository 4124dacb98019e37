//! Ingest contract (docs/http-contract.md §3): the real binary on a loopback port, a mock collector behind it.
//! Every bad input gets a clear JSON 4xx, stores nothing, and leaves the sidecar serving others.

mod support;

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};
use support::{MockCollector, Sidecar};

const KEY: &str = "sk-ingest-test-key-7f3a";
const SUCCESS: &[u8] = include_bytes!("fixtures/workflow-success.json");
const FAILURE: &[u8] = include_bytes!("fixtures/workflow-node-failure.json");

fn post(
    sidecar: &Sidecar,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value, support::http::HttpResponse) {
    let r = sidecar.request("POST", "/v1/traces", headers, body);
    (r.status, r.json(), r)
}

fn json_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer client-key"),
    ]
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Scenario: the real SDK fixture is posted. Guarantees: 200 with the count, and the collector
/// receives every run byte-for-byte with the sidecar's key.
#[test]
fn a_valid_batch_is_acknowledged_and_forwarded_verbatim_with_the_sidecar_key() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let (status, body, _) = post(&sidecar, &json_headers(), SUCCESS);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"message": "ok", "accepted": 6}));

    collector.wait_for_runs(6, Duration::from_secs(10));
    let sent: Value = serde_json::from_slice(SUCCESS).unwrap();
    let received = collector.runs();
    assert_eq!(received, sent["runs"].as_array().unwrap().clone());
    let fixture = std::str::from_utf8(SUCCESS).unwrap();
    for request in collector.trace_requests() {
        assert_eq!(
            request.authorization(),
            Some(format!("Bearer {KEY}").as_str())
        );
        for raw in &request.raw_runs {
            assert!(
                fixture.contains(raw.as_str()),
                "run bytes were rewritten: {raw}"
            );
        }
    }
    assert!(
        !sidecar.logs().contains(KEY),
        "the key appeared in the logs"
    );
}

/// Scenario: unknown fields, big integers and float spellings. Guarantees: they reach the
/// collector exactly as sent.
#[test]
fn unknown_fields_big_numbers_and_float_spellings_reach_the_collector_unchanged() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let run = r#"{"zeta":1,"id":"run-1","name":"n","type":"node","trace_id":"t","source_id":"s","start_time":"2026-11-24T08:15:38Z","end_time":null,"status":null,"big":123456789012345678901234567890,"f":1.50,"e":1E+2,"alpha":{"b":1,"a":2}}"#;
    let body = format!(r#"{{"runs":[{run}]}}"#);
    let (status, _, _) = post(&sidecar, &json_headers(), body.as_bytes());
    assert_eq!(status, 200);
    collector.wait_for_runs(1, Duration::from_secs(10));
    let upstream = String::from_utf8(collector.trace_requests()[0].body.to_vec()).unwrap();
    assert_eq!(upstream, format!(r#"{{"runs":[{run}]}}"#));
}

/// Scenario: gzip-compressed body. Guarantees: accepted like the plain one.
#[test]
fn gzip_bodies_are_accepted() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let mut headers = json_headers();
    headers.push(("Content-Encoding", "gzip"));
    let (status, body, _) = post(&sidecar, &headers, &gzip(FAILURE));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 6);
    collector.wait_for_runs(6, Duration::from_secs(10));
}

/// Scenario: a catalogue of bad requests. Guarantees: each gets its 4xx with a JSON error, none
/// is stored, and a good batch afterwards still goes through.
#[test]
fn bad_inputs_get_clear_json_errors_and_store_nothing() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_body_bytes", 64 * 1024)
        .start();
    let h = json_headers();

    let (s, b, _) = post(&sidecar, &h, b"{\"runs\": [");
    assert_error(s, &b, 400, "bad_request");
    let (s, b, _) = post(&sidecar, &h, b"{\"runs\": []}");
    assert_error(s, &b, 400, "bad_request");
    assert_eq!(b["error"]["details"]["runs"], "must not be empty");
    let (s, b, _) = post(&sidecar, &h, br#"{"runs": [{"id": "x", "name": "n"}]}"#);
    assert_error(s, &b, 400, "bad_request");
    assert_eq!(b["error"]["details"]["runs[0].start_time"], "is required");
    let (s, b, _) = post(
        &sidecar,
        &h,
        br#"{"runs": [{"id": 1, "name": "n", "type": "node", "trace_id": "t", "source_id": "s", "start_time": "2026-01-01T00:00:00Z", "end_time": null, "status": "done"}]}"#,
    );
    assert_error(s, &b, 400, "bad_request");
    assert_eq!(
        b["error"]["details"]["runs[0].id"],
        "must be a string, got a number"
    );
    assert!(
        b["error"]["details"]["runs[0].status"]
            .as_str()
            .unwrap()
            .contains("succeeded")
    );

    // One bad run rejects the whole batch: the good runs before it are not stored either.
    let mut mixed: Value = serde_json::from_slice(SUCCESS).unwrap();
    mixed["runs"][5]["type"] = json!("task");
    let (s, b, _) = post(&sidecar, &h, mixed.to_string().as_bytes());
    assert_error(s, &b, 400, "bad_request");
    assert!(b["error"]["details"]["runs[5].type"].is_string());

    let (s, b, _) = post(&sidecar, &[("Content-Type", "text/plain")], SUCCESS);
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b, _) = post(&sidecar, &[], SUCCESS);
    assert_error(s, &b, 415, "unsupported_media_type");
    let mut br_headers = h.clone();
    br_headers.push(("Content-Encoding", "br"));
    let (s, b, _) = post(&sidecar, &br_headers, SUCCESS);
    assert_error(s, &b, 415, "unsupported_media_type");

    let deep = format!(
        r#"{{"runs":[{{"x":{}1{}}}]}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (s, b, _) = post(&sidecar, &h, deep.as_bytes());
    assert_error(s, &b, 400, "bad_request");

    let mut invalid_utf8 = SUCCESS.to_vec();
    let at = invalid_utf8.windows(5).position(|w| w == b"Paris").unwrap();
    invalid_utf8[at] = 0xff;
    let (s, b, _) = post(&sidecar, &h, &invalid_utf8);
    assert_error(s, &b, 400, "bad_request");

    // A lone UTF-16 surrogate escape is JSON syntax but not text (found by fuzzing).
    let lone = std::str::from_utf8(SUCCESS)
        .unwrap()
        .replacen("Paris", "Par\\ud800is", 1);
    let (s, b, _) = post(&sidecar, &h, lone.as_bytes());
    assert_error(s, &b, 400, "bad_request");
    assert!(b.to_string().contains("surrogate"), "{b}");

    // Oversized on the wire, and a gzip bomb oversized only after decompression.
    let big = vec![b' '; 100 * 1024];
    let (s, b, _) = post(&sidecar, &h, &big);
    assert_error(s, &b, 413, "payload_too_large");
    let mut gz = h.clone();
    gz.push(("Content-Encoding", "gzip"));
    let bomb = gzip(&vec![b' '; 20 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let (s, b, _) = post(&sidecar, &gz, &bomb);
    assert_error(s, &b, 413, "payload_too_large");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after decompression")
    );
    let (s, b, _) = post(&sidecar, &gz, b"\x1f\x8b\x08\x00garbage");
    assert_error(s, &b, 400, "bad_request");

    // snake_case OTLP is not silently taken for an empty request.
    let (s, b, _) = post(&sidecar, &h, br#"{"resource_spans": []}"#);
    assert_error(s, &b, 400, "bad_request");

    // Nothing of the above reached the collector; a good batch still does.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        collector.runs().is_empty(),
        "rejected input was forwarded: {}",
        collector.summary()
    );
    let (s, b, _) = post(&sidecar, &h, SUCCESS);
    assert_eq!(s, 200, "{b}");
    collector.wait_for_runs(6, Duration::from_secs(10));
    let metrics = sidecar.metrics();
    assert!(metrics.contains(r#"outcome="bad_request""#), "{metrics}");
    assert!(
        metrics.contains(r#"outcome="payload_too_large""#),
        "{metrics}"
    );
}

/// Scenario: a wrong method, an unknown path. Guarantees: JSON errors, not HTML or empty bodies.
#[test]
fn unknown_paths_get_a_json_404() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let r = sidecar.request("GET", "/v2/nothing", &[], &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

/// Scenario: the sidecar listens with an inbound token. Guarantees: 401 without it or with a
/// wrong one, and the error never echoes what the client sent.
#[test]
fn an_inbound_token_is_enforced_and_never_echoed() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .env("DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN", "inbound-token-123")
        .start();
    let (s, b, r) = post(
        &sidecar,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer wrong-secret-999"),
        ],
        SUCCESS,
    );
    assert_error(s, &b, 401, "unauthorized");
    assert!(!r.text().contains("wrong-secret-999"));
    let (s, _, _) = post(
        &sidecar,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer inbound-token-123"),
        ],
        SUCCESS,
    );
    assert_eq!(s, 200);
    collector.wait_for_runs(6, Duration::from_secs(10));
    assert!(!sidecar.logs().contains("inbound-token-123"));
}

/// Scenario: the admin endpoints. Guarantees: health, readiness and Prometheus metrics answer,
/// and the metrics never contain the key.
#[test]
fn health_readiness_and_metrics_answer() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let r = sidecar.request("GET", "/healthz", &[], &[]);
    assert_eq!(r.status, 200);
    let r = sidecar.request("GET", "/readyz", &[], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let (s, _, _) = post(&sidecar, &json_headers(), SUCCESS);
    assert_eq!(s, 200);
    collector.wait_for_runs(6, Duration::from_secs(10));
    let metrics = sidecar.metrics();
    for name in [
        "dynamiq_sidecar_ingest_requests_total",
        "dynamiq_sidecar_ingest_runs_accepted_total",
        "dynamiq_sidecar_buffer_",
        "dynamiq_sidecar_forward_",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(!metrics.contains(KEY));
}

/// Scenario: `check-config` on a bad file, and on a good one with the key in the environment.
/// Guarantees: the error names the file line and key; the printed config never has the key.
#[test]
fn check_config_names_the_key_and_never_prints_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[buffer]\npath = \"./x\"\nwhen_full = \"explode\"\n").unwrap();
    let out = std::process::Command::new(support::sidecar::bin())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3"), "{stderr}");
    assert!(stderr.contains("buffer.when_full"), "{stderr}");

    let out = std::process::Command::new(support::sidecar::bin())
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/dynamiq-sidecar.toml"),
        ])
        .env("DYNAMIQ_ACCESS_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("[buffer]"));
    assert!(!all.contains(KEY));
}

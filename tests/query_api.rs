//! Local trace index and query API (docs/http-contract.md §8–9): listing with filters, sort and pagination,
//! one trace's run tree, export, delivery state, parameter errors, and the `/api/*`
//! passthrough that only ever reaches `query.upstream_url` with the sidecar's key.
//! The real binary, a mock collector on loopback (also used as the "API" upstream).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::batches;
use support::{MockCollector, MockResponse, Sidecar, wait_until};

const KEY: &str = "sk-query-test-key-5d1e";
const WAIT: Duration = Duration::from_secs(15);

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn get(sidecar: &Sidecar, path: &str) -> (u16, Value) {
    let r = sidecar.request("GET", path, &[], b"");
    (r.status, r.json())
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {list}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// A one-run trace `id` starting at second `sec`.
fn trace(id: &str, sec: u32, status: &str) -> Value {
    let mut run = batches::run(&format!("{id}-root"), id);
    run["start_time"] = json!(format!("2026-01-01T00:00:{sec:02}+00:00"));
    run["end_time"] = json!(format!("2026-01-01T00:00:{sec:02}.5+00:00"));
    run["status"] = json!(status);
    json!({ "runs": [run] })
}

const OK_TRACE: &str = "217f4289-aab5-48c6-ae28-2bface088d13";
const FAILED_TRACE: &str = "a2cee7db-5362-4b05-a61d-f345587335fd";

#[test]
fn list_filter_sort_paginate_get_and_export() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let success = fixture("workflow-success.json");
    let failure = fixture("workflow-node-failure.json");
    assert_eq!(sidecar.post_batch(&success).status, 200);
    assert_eq!(sidecar.post_batch(&failure).status, 200);
    for i in 0..5 {
        let status = if i == 2 { "canceled" } else { "succeeded" };
        assert_eq!(
            sidecar
                .post_batch(&trace(&format!("gen-{i}"), i, status))
                .status,
            200
        );
    }

    // Newest first by default: fixtures are in 2026-11, generated in 2026-01.
    let (status, list) = get(&sidecar, "/v1/traces");
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        ids(&list),
        [
            FAILED_TRACE,
            OK_TRACE,
            "gen-4",
            "gen-3",
            "gen-2",
            "gen-1",
            "gen-0"
        ]
    );
    assert_eq!(
        list["pagination"],
        json!({"page": 1, "page_size": 50, "page_count": 1, "total_count": 7})
    );
    let ok = &list["data"][1];
    assert_eq!(ok["name"], "Workflow");
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["runs"], 6);
    assert_eq!(ok["source_id"], "4bf21bdb-f976-4d7a-9dcb-23ef60f2d914");
    assert_eq!(ok["session_id"], "f6692af0-4ea7-49fa-b6ca-c0eafd9d51f0");
    assert_eq!(ok["started_at"], "2026-11-24T08:15:38.271234+00:00");
    assert_eq!(ok["ended_at"], "2026-11-24T08:15:38.776932+00:00");
    assert_eq!(list["data"][0]["status"], "failed");

    // Filters.
    assert_eq!(
        ids(&get(&sidecar, "/v1/traces?status=failed").1),
        [FAILED_TRACE]
    );
    assert_eq!(
        ids(&get(&sidecar, "/v1/traces?status=failed,canceled").1),
        [FAILED_TRACE, "gen-2"]
    );
    // A repeated status counts once: the same answer, not an error or a doubled filter.
    assert_eq!(
        ids(&get(&sidecar, "/v1/traces?status=failed,canceled,failed,failed").1),
        [FAILED_TRACE, "gen-2"]
    );
    assert_eq!(
        ids(&get(
            &sidecar,
            "/v1/traces?started_at:gte=2026-01-01T00:00:01Z&started_at:lte=2026-01-01T00:00:03%2B00:00"
        )
        .1),
        ["gen-3", "gen-2", "gen-1"]
    );
    // Sort and pagination.
    let (_, page) = get(&sidecar, "/v1/traces?sort=started_at&page=2&page_size=3");
    assert_eq!(ids(&page), ["gen-3", "gen-4", OK_TRACE]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "page_size": 3, "page_count": 3, "total_count": 7})
    );
    assert_eq!(
        ids(&get(&sidecar, "/v1/traces?page=9&page_size=3").1),
        Vec::<String>::new()
    );

    // One trace with its run tree, runs as received.
    let (status, detail) = get(&sidecar, &format!("/v1/traces/{OK_TRACE}"));
    assert_eq!(status, 200);
    let runs = detail["data"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs, success["runs"].as_array().unwrap());
    assert_eq!(detail["data"]["name"], "Workflow");
    let (status, missing) = get(&sidecar, "/v1/traces/no-such-trace");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found");

    // Export: the static segment wins over {trace_id}.
    let r = sidecar.request(
        "GET",
        "/v1/traces/export?status=failed,succeeded&page_size=500",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"traces.json\"")
    );
    let exported = r.json();
    let exported = exported.as_array().unwrap();
    assert_eq!(exported.len(), 6);
    assert_eq!(exported[0]["id"], FAILED_TRACE);
    assert_eq!(exported[0]["runs"], failure["runs"]);
}

#[test]
fn bad_parameters_are_400_naming_the_parameter() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    for (query, param) in [
        ("status=done", "status"),
        ("started_at:gte=yesterday", "started_at:gte"),
        ("started_at:lte=2026-01-01", "started_at:lte"),
        ("page=0", "page"),
        ("page_size=501", "page_size"),
        ("page_size=0", "page_size"),
        ("sort=name", "sort"),
    ] {
        for path in ["/v1/traces", "/v1/traces/export"] {
            let (status, body) = get(&sidecar, &format!("{path}?{query}"));
            assert_eq!(status, 400, "{path}?{query}: {body}");
            assert_eq!(body["error"]["code"], "invalid_parameter");
            assert!(
                body["error"]["details"].get(param).is_some(),
                "{query}: {body}"
            );
        }
    }
}

fn delivery(sidecar: &Sidecar, trace: &str) -> String {
    get(sidecar, &format!("/v1/traces/{trace}")).1["data"]["delivery"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn delivery_goes_pending_then_delivered_or_dead_lettered() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    assert_eq!(
        sidecar.post_batch(&trace("held", 1, "succeeded")).status,
        200
    );
    assert_eq!(delivery(&sidecar, "held"), "pending");
    collector.resume();
    wait_until("delivered", WAIT, || {
        delivery(&sidecar, "held") == "delivered"
    });

    collector.push_response(MockResponse::status(400));
    assert_eq!(
        sidecar
            .post_batch(&trace("rejected", 2, "succeeded"))
            .status,
        200
    );
    wait_until("dead-lettered", WAIT, || {
        delivery(&sidecar, "rejected") == "dead_lettered"
    });
    assert_eq!(delivery(&sidecar, "held"), "delivered");
    let (_, list) = get(&sidecar, "/v1/traces");
    assert_eq!(list["data"][0]["delivery"], "dead_lettered");
    assert!(
        sidecar
            .metrics()
            .contains("dynamiq_sidecar_query_traces_retained 2")
    );
}

#[test]
fn passthrough_forwards_get_with_the_sidecar_key_to_the_configured_host_only() {
    let collector = MockCollector::start();
    let api = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.upstream_url", api.url())
        .start();
    let r = sidecar.request(
        "GET",
        "/api/v1/projects/p1/traces?limit=5&q=a%20b",
        &[("Authorization", "Bearer client-value")],
        b"",
    );
    // The mock answers 404 with JSON for anything but POST /v1/traces: relayed as is.
    assert_eq!(r.status, 404, "{}", r.text());
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    // The Dynamiq API has no `/api` prefix: `/api/<rest>` goes to `<upstream_url>/<rest>`.
    assert_eq!(requests[0].path, "/v1/projects/p1/traces?limit=5&q=a%20b");
    assert_eq!(
        requests[0].authorization(),
        Some(format!("Bearer {KEY}").as_str())
    );

    let r = sidecar.request("POST", "/api/v1/x", &[], b"{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));

    for path in [
        "/api//evil.com/x",
        "/api/@evil.com",
        "/api/..%2f..%2fadmin",
        "/api/%2e%2e/admin",
        "/api/x/../../admin",
        "/api/http:%2f%2fevil.com",
        "/api/%40evil.com",
        "/api/x%5c..%5cy",
    ] {
        let r = sidecar.request("GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_path", "{path}");
    }
    assert_eq!(api.requests().len(), 1, "the upstream was contacted again");
    assert!(!sidecar.logs().contains(KEY), "the key was logged");

    // Upstream unreachable: 502 JSON.
    let mut api = api;
    api.stop();
    let r = sidecar.request("GET", "/api/v1/x", &[], b"");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");
}

/// A stand-in for the Dynamiq API: it serves `GET /v1/...` only (as `api.getdynamiq.ai` does),
/// answering with the path and the credential it saw.
fn dynamiq_api() -> MockCollector {
    let api = MockCollector::start();
    api.set_api_responder(|request| {
        let path = request.path.split('?').next().unwrap_or("");
        let under = |prefix: &str| path.starts_with(prefix);
        (request.method == "GET" && (under("/v1/") || under("/prefix/v1/"))).then(|| {
            MockResponse::ok()
                .with_header("content-type", "application/json")
                .with_body(&json!({"path": path}).to_string())
        })
    });
    api
}

/// Scenario: a user asks the sidecar for `GET /api/v1/me`, as the README says. Guarantees: it
/// reaches the real API's `/v1/me` (no `/api` prefix upstream), with the upstream URL's own path
/// kept as a prefix, and the answer comes back as the API gave it.
#[test]
fn passthrough_reaches_the_dynamiq_api_paths_without_an_api_prefix() {
    let collector = MockCollector::start();
    let api = dynamiq_api();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.upstream_url", api.url())
        .start();
    let r = sidecar.request("GET", "/api/v1/me", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/v1/me");
    assert_eq!(r.header("content-type"), Some("application/json"));

    let prefixed = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.upstream_url", format!("{}/prefix/", api.url()))
        .start();
    let r = prefixed.request("GET", "/api/v1/me?x=1", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/prefix/v1/me");
    let paths: Vec<String> = api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/me", "/prefix/v1/me?x=1"]);
}

/// Scenario: the deployment's API calls need another credential than the collector's key.
/// Guarantees: `query.api_token_file` (or `DYNAMIQ_API_TOKEN`) is sent instead of the key, a
/// rotated file is picked up, and the token is never logged nor shown by `check-config`.
#[test]
fn passthrough_uses_the_api_token_when_one_is_configured() {
    const TOKEN: &str = "dq-api-token-7c1f";
    const ROTATED: &str = "dq-api-token-rotated-2b9e";
    let collector = MockCollector::start();
    let api = dynamiq_api();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.upstream_url", api.url())
        .set("query.api_token_file", token_file.display().to_string())
        .set("upstream.key_reload_interval", "50ms")
        .start();
    assert_eq!(sidecar.request("GET", "/api/v1/me", &[], b"").status, 200);
    assert_eq!(
        api.requests()[0].authorization(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    std::fs::write(&token_file, ROTATED).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(sidecar.request("GET", "/api/v1/me", &[], b"").status, 200);
        let last = api
            .requests()
            .last()
            .unwrap()
            .authorization()
            .map(str::to_owned);
        if last.as_deref() == Some(format!("Bearer {ROTATED}").as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated token was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The collector still gets the access key.
    assert_eq!(sidecar.post_runs(&batches::batch("api-token", 1)).0, 200);
    let runs = collector.wait_for_runs(1, Duration::from_secs(10));
    assert_eq!(runs.len(), 1);
    assert_eq!(
        collector.trace_requests()[0].authorization(),
        Some(format!("Bearer {KEY}").as_str())
    );
    let check = std::process::Command::new(support::sidecar::bin())
        .args(["check-config", "--config"])
        .arg(sidecar.config_path())
        .output()
        .unwrap();
    assert!(check.status.success());
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(shown.contains("api_token_file"), "{shown}");
    let logs = sidecar.logs();
    for secret in [TOKEN, ROTATED, KEY] {
        assert!(
            !logs.contains(secret) && !shown.contains(secret),
            "{secret} leaked"
        );
    }

    let from_env = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.upstream_url", api.url())
        .env("DYNAMIQ_API_TOKEN", TOKEN)
        .start();
    api.clear();
    assert_eq!(from_env.request("GET", "/api/v1/me", &[], b"").status, 200);
    assert_eq!(
        api.requests()[0].authorization(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

/// Scenario: the API token file is configured but missing. Guarantees: the sidecar refuses to
/// start with an error naming `query.api_token_file`.
#[test]
fn a_missing_api_token_file_is_a_config_error_naming_the_key() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.api_token_file", "/nonexistent/api-token")
        .spawn();
    let status = sidecar
        .wait_exit(Duration::from_secs(20))
        .expect("the sidecar exits");
    assert_eq!(status.code(), Some(2), "{}", sidecar.logs());
    assert!(
        sidecar.logs().contains("query.api_token_file"),
        "{}",
        sidecar.logs()
    );
}

/// Scenario: OTLP/JSON spans posted to `/v1/traces`. Guarantees: the runs they become are
/// indexed like Dynamiq runs (one trace per OTLP trace, every span a run).
#[test]
fn otlp_spans_are_indexed_as_runs() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let body = std::fs::read(format!(
        "{}/tests/fixtures/otlp/genai-semconv.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let r = sidecar.request(
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, list) = get(&sidecar, "/v1/traces");
    assert_eq!(list["pagination"]["total_count"], 3, "{list}");
    let runs: u64 = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["runs"].as_u64().unwrap())
        .sum();
    assert_eq!(runs, 12);
    let first = list["data"][0]["id"].as_str().unwrap().to_string();
    let (status, detail) = get(&sidecar, &format!("/v1/traces/{first}"));
    assert_eq!(status, 200);
    assert_eq!(
        detail["data"]["runs"].as_array().unwrap().len() as u64,
        list["data"][0]["runs"].as_u64().unwrap()
    );
}

#[test]
fn the_index_survives_a_clean_restart_with_its_delivery_states() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::start(&collector.url(), KEY);
    for i in 0..3 {
        let status = if i == 1 { "failed" } else { "succeeded" };
        let body = trace(&format!("kept-{i}"), i, status);
        assert_eq!(sidecar.post_batch(&body).status, 200);
    }
    wait_until("delivered", WAIT, || {
        delivery(&sidecar, "kept-2") == "delivered"
    });
    let (_, before) = get(&sidecar, "/v1/traces");
    let (_, tree_before) = get(&sidecar, "/v1/traces/kept-1");
    sidecar.restart();
    let (_, after) = get(&sidecar, "/v1/traces");
    assert_eq!(after, before);
    assert_eq!(get(&sidecar, "/v1/traces/kept-1").1, tree_before);
    assert_eq!(
        ids(&get(&sidecar, "/v1/traces?status=failed").1),
        ["kept-1"]
    );
    assert!(
        sidecar
            .logs()
            .contains("trace index restored from its snapshot"),
        "{}",
        sidecar.logs()
    );
}

#[test]
fn after_kill_9_buffered_traces_are_listed_again_and_then_delivered() {
    let mut collector = MockCollector::start();
    collector.stop();
    let mut sidecar = Sidecar::start(&collector.url(), KEY);
    for i in 0..4 {
        let body = trace(&format!("crash-{i}"), i, "succeeded");
        assert_eq!(sidecar.post_batch(&body).status, 200);
    }
    assert_eq!(
        get(&sidecar, "/v1/traces").1["pagination"]["total_count"],
        4
    );
    // No snapshot was due yet: the buffer replay alone rebuilds the list.
    sidecar.kill9();
    sidecar.restart();
    wait_until("replayed", WAIT, || {
        get(&sidecar, "/v1/traces").1["pagination"]["total_count"] == 4
    });
    assert_eq!(delivery(&sidecar, "crash-0"), "pending");
    collector.resume();
    wait_until("delivered after the restart", WAIT, || {
        (0..4).all(|i| delivery(&sidecar, &format!("crash-{i}")) == "delivered")
    });
}

#[test]
fn with_the_index_off_the_endpoints_say_so() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("query.index", false)
        .start();
    assert_eq!(sidecar.post_batch(&trace("x", 1, "succeeded")).status, 200);
    collector.wait_for_runs(1, WAIT);
    for path in ["/v1/traces", "/v1/traces/x", "/v1/traces/export"] {
        let (status, body) = get(&sidecar, path);
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "index_disabled", "{path}: {body}");
    }
}

#[test]
fn runs_the_buffer_dropped_are_shown_dropped_not_pending() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .small_buffer()
        .start();
    for i in 0..60 {
        let body = batches::batch(&format!("drop{i}"), 4);
        assert_eq!(sidecar.post_runs(&body).0, 200, "batch {i}");
    }
    assert_eq!(delivery(&sidecar, "drop0"), "dropped");
    assert_eq!(delivery(&sidecar, "drop59"), "pending");
    collector.resume();
    wait_until("the newest delivered", WAIT, || {
        delivery(&sidecar, "drop59") == "delivered"
    });
    assert_eq!(delivery(&sidecar, "drop0"), "dropped");
}

/// Scenario: the index holds ~16 MB of runs; one client asks for the whole export and never
/// reads the answer, with `ingest.write_timeout = "2s"`. Guarantees: the export is streamed, so
/// other clients are served meanwhile (list, ingest, a complete export of their own); once the
/// socket buffers are full and nothing moves for the write timeout, the stalled connection is
/// closed, its answer cut short, and `dynamiq_sidecar_connections_closed_total{reason="write_timeout"}`
/// counts it.
#[test]
fn an_export_the_client_never_reads_is_cut_off_after_the_write_timeout() {
    use std::io::{Read, Write};
    use std::time::Instant;

    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.write_timeout", "2s")
        .start();
    // More than the loopback socket buffers of one connection hold (a few MB).
    for i in 0..16 {
        let runs: Vec<Value> = (0..10)
            .map(|j| {
                let mut run = batches::run(&format!("big-{i}-{j}"), &format!("big-{i}"));
                run["input"] = json!({ "text": "x".repeat(100_000) });
                run
            })
            .collect();
        assert_eq!(sidecar.post_batch(&json!({ "runs": runs })).status, 200);
    }
    let closed = |s: &Sidecar| {
        s.metric_sum(
            "dynamiq_sidecar_connections_closed_total",
            &["reason=\"write_timeout\""],
        )
    };
    assert_eq!(closed(&sidecar), 0.0);

    let mut stalled = std::net::TcpStream::connect(sidecar.http_addr()).unwrap();
    stalled
        .write_all(b"GET /v1/traces/export HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let asked = Instant::now();

    // While it stalls, everyone else is served, including a full export.
    let r = sidecar.request("GET", "/v1/traces/export", &[], b"");
    assert_eq!(r.status, 200);
    let full = r.body.len();
    let exported = r.json();
    assert_eq!(exported.as_array().map(Vec::len), Some(16), "not JSON");
    assert!(full > 16_000_000, "{full} bytes");
    let mut n = 0;
    while closed(&sidecar) < 1.0 {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "the stalled export was never cut off"
        );
        let served = Instant::now();
        assert_eq!(get(&sidecar, "/v1/traces?page_size=1").0, 200);
        assert_eq!(
            sidecar
                .post_batch(&trace(&format!("meanwhile-{n}"), 1, "succeeded"))
                .status,
            200
        );
        assert!(
            served.elapsed() < Duration::from_secs(2),
            "a client waited {:?} behind the stalled export",
            served.elapsed()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "cut off before the write timeout"
    );
    assert!(n > 0);

    // The stalled connection was closed: what was in the socket buffers, then EOF (or a reset),
    // never the whole answer.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    match stalled.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        got.len() < full,
        "the whole export arrived ({} bytes)",
        got.len()
    );
}

//! Upstream outcome table (CONTRACT §4): every collector answer drives the documented action.
//! The real binary forwards to a scripted mock collector on loopback.

mod support;

use std::time::Duration;

use support::batches;
use support::{MockCollector, MockResponse, Sidecar, wait_until};

const KEY: &str = "sk-forward-test-key-91c2";
const WAIT: Duration = Duration::from_secs(15);

fn accepted_ids(collector: &MockCollector) -> Vec<String> {
    collector.accepted_run_ids()
}

/// Scenario: 503, 500, 502, 504, 408 before a 200. Guarantees: retried until delivered, each run
/// delivered once, in order.
#[test]
fn retryable_statuses_are_retried_until_delivered_in_order() {
    let collector = MockCollector::start();
    collector.push_responses([503, 500, 502, 504, 408].map(MockResponse::status));
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let batch = batches::batch("retry", 5);
    assert_eq!(sidecar.post_runs(&batch).0, 200);
    wait_until("delivery", WAIT, || accepted_ids(&collector).len() == 5);
    assert_eq!(accepted_ids(&collector), batches::ids(&batch));
    assert_eq!(collector.trace_requests().len(), 6);
    assert!(
        sidecar
            .metrics()
            .contains("dynamiq_sidecar_forward_retries_total")
    );
}

/// Scenario: 429 with `Retry-After: 2`. Guarantees: no request comes before the floor.
#[test]
fn retry_after_is_a_floor_on_the_next_attempt() {
    let collector = MockCollector::start();
    collector.push_response(MockResponse::status(429).with_header("Retry-After", "2"));
    let sidecar = Sidecar::start(&collector.url(), KEY);
    assert_eq!(sidecar.post_runs(&batches::batch("ra", 2)).0, 200);
    wait_until("delivery", WAIT, || accepted_ids(&collector).len() == 2);
    let requests = collector.trace_requests();
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_millis(1950),
        "retried after {gap:?}, before Retry-After"
    );
}

/// Scenario: 413 for a batch of six. Guarantees: split in halves and retried; every run
/// delivered exactly once.
#[test]
fn a_413_splits_the_batch_and_delivers_every_run() {
    let collector = MockCollector::start();
    collector.push_response(MockResponse::status(413));
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_delay", "300ms")
        .start();
    let batch = batches::batch("split", 6);
    assert_eq!(sidecar.post_runs(&batch).0, 200);
    wait_until("delivery", WAIT, || accepted_ids(&collector).len() == 6);
    let sizes: Vec<usize> = collector
        .trace_requests()
        .iter()
        .map(|r| r.runs.len())
        .collect();
    assert_eq!(sizes[0], 6, "{sizes:?}");
    assert!(sizes[1..].iter().all(|&n| n <= 3), "{sizes:?}");
    assert_eq!(accepted_ids(&collector), batches::ids(&batch));
}

/// Scenario: the collector rejects a batch as invalid (422). Guarantees: not retried, kept in
/// the dead-letter store with the response, counted; later runs still flow.
#[test]
fn permanent_rejections_go_to_the_dead_letter_store() {
    let collector = MockCollector::start();
    collector.push_response(MockResponse::status(422).with_body(r#"{"detail":"bad run"}"#));
    let sidecar = Sidecar::start(&collector.url(), KEY);
    assert_eq!(sidecar.post_runs(&batches::batch("dead", 2)).0, 200);
    wait_until("the 422", WAIT, || !collector.trace_requests().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        collector.trace_requests().len(),
        1,
        "a permanent rejection was retried"
    );
    assert_eq!(sidecar.post_runs(&batches::batch("live", 1)).0, 200);
    wait_until("the next batch", WAIT, || {
        accepted_ids(&collector) == vec!["live-0".to_string()]
    });

    let dead_dir = sidecar.data_dir().join("dead-letter");
    let text: String = std::fs::read_dir(&dead_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("dead-0") && text.contains("dead-1"));
    assert!(text.contains("bad run"), "the response is kept: {text}");
    assert!(!text.contains(KEY));
    let metrics = sidecar.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_forward_dead_lettered"),
        "{metrics}"
    );
}

/// Scenario: the collector answers 401 (a revoked or org-scoped key); then the key file is
/// rotated. Guarantees: delivery holds with nothing lost and readiness failing, one clear log
/// line; the new key resumes delivery and readiness.
#[test]
fn a_401_holds_delivery_until_the_key_file_changes() {
    let collector = MockCollector::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("access-key");
    std::fs::write(&key_file, "old-key-aaaa\n").unwrap();
    collector.set_default_response(MockResponse::status(401));
    let sidecar = Sidecar::builder(&collector.url())
        .no_access_key()
        .set("upstream.access_key_file", key_file.display().to_string())
        .set("upstream.key_reload_interval", "100ms")
        .start();
    let batch = batches::batch("held", 3);
    assert_eq!(sidecar.post_runs(&batch).0, 200);
    wait_until("the hold", WAIT, || {
        sidecar.request("GET", "/readyz", &[], &[]).status == 503
    });
    let ready = sidecar.request("GET", "/readyz", &[], &[]).json();
    assert_eq!(ready["failing"][0], "upstream_authorized", "{ready}");
    let held_requests = collector.trace_requests().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        collector.trace_requests().len(),
        held_requests,
        "kept hammering the collector during the hold"
    );

    collector.set_default_response(MockResponse::ok());
    std::fs::write(&key_file, "new-key-bbbb\n").unwrap();
    wait_until("delivery with the new key", WAIT, || {
        accepted_ids(&collector).len() == 3
    });
    let last = collector.trace_requests().last().cloned().unwrap();
    assert_eq!(last.authorization(), Some("Bearer new-key-bbbb"));
    wait_until("readiness", WAIT, || {
        sidecar.request("GET", "/readyz", &[], &[]).status == 200
    });
    let logs = sidecar.logs();
    assert!(logs.contains("401"), "{logs}");
    assert!(
        !logs.contains("old-key-aaaa") && !logs.contains("new-key-bbbb"),
        "a key leaked into the logs"
    );
}

/// Scenario: the collector is down (connection refused), then comes back. Guarantees: runs
/// acknowledged during the outage are all delivered, oldest first.
#[test]
fn an_outage_is_ridden_out_and_delivery_is_oldest_first() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let mut expected = Vec::new();
    for i in 0..5 {
        let batch = batches::batch(&format!("outage{i}"), 3);
        assert_eq!(sidecar.post_runs(&batch).0, 200);
        expected.extend(batches::ids(&batch));
    }
    std::thread::sleep(Duration::from_millis(700));
    collector.resume();
    wait_until("delivery after the outage", WAIT, || {
        accepted_ids(&collector).len() >= expected.len()
    });
    assert_eq!(accepted_ids(&collector), expected);
}

/// Scenario: the collector hangs longer than `upstream.request_timeout`. Guarantees: the attempt
/// times out and is retried; the runs arrive.
#[test]
fn a_collector_timeout_is_retried() {
    let collector = MockCollector::start();
    collector.push_response(MockResponse::ok().with_delay(Duration::from_secs(3)));
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("upstream.request_timeout", "300ms")
        .start();
    assert_eq!(sidecar.post_runs(&batches::batch("slow", 2)).0, 200);
    wait_until("a second attempt", WAIT, || {
        collector.trace_requests().len() >= 2
    });
    let ids: Vec<String> = collector.trace_requests()[1]
        .runs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["slow-0", "slow-1"]);
}

/// Scenario: a low requests/s limit with one run per request. Guarantees: the collector never
/// sees more requests than the limit allows.
#[test]
fn the_request_rate_limit_is_respected() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_runs", 1)
        .set("forward.runs_burst", 1)
        .set("forward.requests_per_second", 5)
        .set("forward.requests_burst", 1)
        .start();
    assert_eq!(sidecar.post_runs(&batches::batch("rate", 6)).0, 200);
    wait_until("delivery", WAIT, || accepted_ids(&collector).len() == 6);
    let requests = collector.trace_requests();
    let span = requests.last().unwrap().received_at - requests[0].received_at;
    // 6 requests at 5/s with a burst of 1: at least 5 intervals of 200 ms.
    assert!(
        span >= Duration::from_millis(950),
        "6 requests within {span:?}"
    );
}

/// Scenario: `auth_mode = "passthrough"` and no sidecar key; two clients with their own keys.
/// Guarantees: each client's runs reach the collector with that client's key, never mixed.
#[test]
fn passthrough_mode_forwards_each_clients_own_key() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .no_access_key()
        .set("upstream.auth_mode", "passthrough")
        .start();
    for (client, prefix) in [
        ("client-key-a", "pa"),
        ("client-key-b", "pb"),
        ("client-key-a", "pc"),
    ] {
        let body = serde_json::to_vec(&batches::batch(prefix, 2)).unwrap();
        let auth = format!("Bearer {client}");
        let r = sidecar.request(
            "POST",
            "/v1/traces",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let unauthenticated = serde_json::to_vec(&batches::batch("px", 1)).unwrap();
    let r = sidecar.request(
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/json")],
        &unauthenticated,
    );
    assert_eq!(
        r.status,
        401,
        "passthrough without a client key: {}",
        r.text()
    );
    wait_until("delivery", WAIT, || accepted_ids(&collector).len() == 6);
    for request in collector.trace_requests() {
        let auth = request.authorization().unwrap_or_default().to_string();
        for run in &request.runs {
            let id = run["id"].as_str().unwrap();
            let expected = if id.starts_with("pb") {
                "Bearer client-key-b"
            } else {
                "Bearer client-key-a"
            };
            assert_eq!(auth, expected, "run {id} sent with the wrong key");
        }
    }
    let logs = sidecar.logs();
    assert!(!logs.contains("client-key-a") && !logs.contains("client-key-b"));
}

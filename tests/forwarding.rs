//! Upstream outcome table (docs/http-contract.md §7): every collector answer drives the documented action.
//! The real binary forwards to a scripted mock collector on loopback.

mod support;

use std::time::Duration;

use support::batches;
use support::{MockCollector, MockResponse, Sidecar, metric, wait_until};

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

/// Scenario: the collector rejects both runs of a batch as invalid (422). Guarantees: the batch
/// is split to find which runs are rejected, each rejected run is sent alone once (not retried),
/// kept in the dead-letter store with the response, counted; later runs still flow.
#[test]
fn permanent_rejections_go_to_the_dead_letter_store() {
    let collector = MockCollector::start();
    reject_batches_holding(&collector, "dead");
    let sidecar = Sidecar::start(&collector.url(), KEY);
    assert_eq!(sidecar.post_runs(&batches::batch("dead", 2)).0, 200);
    wait_until("the 422s", WAIT, || collector.trace_requests().len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    let sizes: Vec<usize> = collector
        .trace_requests()
        .iter()
        .map(|r| r.runs.len())
        .collect();
    assert_eq!(
        sizes,
        [2, 1, 1],
        "split to single runs, and a rejected single run is not retried"
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
    assert!(text.contains("invalid run"), "the response is kept: {text}");
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
        let r = sidecar.post_batch_as(client, &batches::batch(prefix, 2));
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

/// Every line of the sidecar's dead-letter files, parsed.
fn dead_letters(sidecar: &Sidecar) -> Vec<serde_json::Value> {
    let dir = sidecar.data_dir().join("dead-letter");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Bytes of the sidecar's dead-letter files.
fn dead_letter_bytes(sidecar: &Sidecar) -> u64 {
    std::fs::read_dir(sidecar.data_dir().join("dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The mock answers 422 to any batch holding a run whose id starts with `prefix`.
fn reject_batches_holding(collector: &MockCollector, prefix: &'static str) {
    collector.set_responder(move |request| {
        let poisoned = request
            .runs
            .iter()
            .any(|r| r["id"].as_str().is_some_and(|id| id.starts_with(prefix)));
        poisoned.then(|| MockResponse::status(422).with_body(r#"{"detail":"invalid run"}"#))
    });
}

/// Scenario: two clients' posts coalesce into one upstream batch; the collector answers 422 to
/// any batch holding one marker run. Guarantees: the batch is split until the marker is alone;
/// only the marker goes to the dead-letter store (with the collector's answer); every other run
/// of both clients is delivered; the splits are counted.
#[test]
fn a_poisoned_batch_is_split_until_only_the_rejected_run_is_dead_lettered() {
    let collector = MockCollector::start();
    reject_batches_holding(&collector, "marker");
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_delay", "400ms")
        .start();
    let mut expected = Vec::new();
    for (i, client) in ["client-a", "client-b", "client-a", "client-b"]
        .iter()
        .enumerate()
    {
        let mut batch = batches::batch(&format!("{client}-{i}"), 3);
        if i == 2 {
            batch["runs"]
                .as_array_mut()
                .unwrap()
                .insert(1, batches::run("marker", "client-a-2"));
        }
        expected.extend(batches::ids(&batch).into_iter().filter(|id| id != "marker"));
        assert_eq!(sidecar.post_runs(&batch).0, 200);
    }
    wait_until("every other run delivered", WAIT, || {
        accepted_ids(&collector).len() >= expected.len()
    });
    assert!(
        collector.trace_requests()[0].runs.len() > 3,
        "the posts were coalesced: {}",
        collector.summary()
    );
    let mut delivered = accepted_ids(&collector);
    delivered.sort();
    expected.sort();
    assert_eq!(delivered, expected);
    wait_until("the marker dead-lettered", WAIT, || {
        sidecar
            .data_dir()
            .join("dead-letter")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    });
    let dead = dead_letters(&sidecar);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["run"]["id"], "marker");
    assert_eq!(dead[0]["status"], 422);
    assert_eq!(dead[0]["response"], r#"{"detail":"invalid run"}"#);
    let metrics = sidecar.metrics();
    assert!(
        metric(
            &metrics,
            r#"dynamiq_sidecar_forward_splits_total{cause="rejected"}"#
        ) >= 2,
        "{metrics}"
    );
}

/// Scenario: `forward.max_bytes` = 4 KiB and a batch holding one run of 5 KB. Guarantees: the
/// batch is refused at ingest with a 413 naming the run and `forward.max_bytes`; nothing of it
/// is stored (so nothing is dead-lettered later); the next batch is delivered.
#[test]
fn a_run_larger_than_forward_max_bytes_is_refused_at_ingest() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_bytes", 4096)
        .start();
    let mut big = batches::run("too-big-run", "t");
    big["input"]["text"] = serde_json::json!("x".repeat(5000));
    let mut batch = batches::batch("refused", 2);
    batch["runs"].as_array_mut().unwrap().push(big);
    let (status, answer) = sidecar.post_runs(&batch);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "run_too_large", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too-big-run") && message.contains("forward.max_bytes"),
        "{message}"
    );
    assert!(
        answer["error"]["details"]["runs[2]"].is_string(),
        "{answer}"
    );
    assert_eq!(sidecar.post_runs(&batches::batch("next", 1)).0, 200);
    wait_until("the next batch", WAIT, || {
        accepted_ids(&collector) == vec!["next-0".to_string()]
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(accepted_ids(&collector), vec!["next-0".to_string()]);
    assert!(
        sidecar
            .data_dir()
            .join("dead-letter")
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
}

/// Scenario: `forward.dead_letter_max_bytes` = 4 KiB and a collector that rejects one run of
/// every batch, far more than 4 KiB of dead letters. Guarantees: the store stays under its
/// bound, the newest dead letters are kept, every dropped one is counted; the good runs are all
/// delivered.
#[test]
fn an_overflowing_dead_letter_store_drops_its_oldest_and_delivery_goes_on() {
    let collector = MockCollector::start();
    reject_batches_holding(&collector, "dead");
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.dead_letter_max_bytes", 4096)
        .start();
    let mut live = Vec::new();
    for i in 0..20 {
        let mut batch = batches::batch(&format!("live{i:02}"), 1);
        batch["runs"]
            .as_array_mut()
            .unwrap()
            .push(batches::run(&format!("dead{i:02}"), "t"));
        live.extend(batches::ids(&batch).into_iter().take(1));
        assert_eq!(sidecar.post_runs(&batch).0, 200);
    }
    wait_until("the good runs", WAIT, || {
        accepted_ids(&collector).len() >= live.len()
    });
    let dropped = |m: &str| {
        metric(
            m,
            r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="evicted"}"#,
        )
    };
    wait_until("every dead letter kept or counted", WAIT, || {
        dead_letters(&sidecar).len() as u64 + dropped(&sidecar.metrics()) == 20
    });
    assert_eq!(accepted_ids(&collector), live);
    assert!(dead_letter_bytes(&sidecar) <= 4096);
    let kept = dead_letters(&sidecar);
    assert_eq!(
        kept.last().unwrap()["run"]["id"],
        "dead19",
        "the newest are kept"
    );
    assert!(dropped(&sidecar.metrics()) > 0);
    assert!(sidecar.logs().contains("forward.dead_letter_max_bytes"));
}

/// Scenario: the dead-letter directory cannot hold a file (replaced by a plain file while the
/// sidecar runs). Guarantees: rejected runs are logged and counted as lost dead letters, and
/// the good runs posted after them are still delivered.
#[test]
fn a_failing_dead_letter_write_does_not_stop_delivery() {
    let collector = MockCollector::start();
    reject_batches_holding(&collector, "dead");
    let sidecar = Sidecar::start(&collector.url(), KEY);
    let dir = sidecar.data_dir().join("dead-letter");
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    let mut live = Vec::new();
    for i in 0..3 {
        let dead = serde_json::json!({"runs": [batches::run(&format!("dead{i}"), "t")]});
        assert_eq!(sidecar.post_runs(&dead).0, 200);
        let batch = batches::batch(&format!("live{i}"), 2);
        live.extend(batches::ids(&batch));
        assert_eq!(sidecar.post_runs(&batch).0, 200);
    }
    wait_until("the good runs", WAIT, || {
        accepted_ids(&collector).len() >= live.len()
    });
    assert_eq!(accepted_ids(&collector), live);
    wait_until("the lost dead letters counted", WAIT, || {
        metric(
            &sidecar.metrics(),
            r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="write_failed"}"#,
        ) == 3
    });
    assert!(
        sidecar
            .logs()
            .contains("cannot write the dead-letter store")
    );
}

/// Scenario: passthrough mode, two client keys; the collector answers 401 to key A, then starts
/// accepting it. Guarantees: key B's runs are delivered while A's are held (readiness stays up:
/// one client's key is not the sidecar's problem); the held runs are counted; once A is
/// accepted its runs arrive, in order; nothing is lost or dead-lettered; no key is logged.
#[test]
fn passthrough_a_401_for_one_key_holds_only_that_keys_runs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let collector = MockCollector::start();
    let reject_a = Arc::new(AtomicBool::new(true));
    let flag = reject_a.clone();
    collector.set_responder(move |request| {
        (request.authorization() == Some("Bearer client-key-a") && flag.load(Ordering::SeqCst))
            .then(|| MockResponse::status(401))
    });
    let sidecar = Sidecar::builder(&collector.url())
        .no_access_key()
        .set("upstream.auth_mode", "passthrough")
        .set("forward.auth_hold_retry", "300ms")
        .start();
    let post_as = |client: &str, batch: &serde_json::Value| {
        let r = sidecar.post_batch_as(client, batch);
        assert_eq!(r.status, 200, "{}", r.text());
        batches::ids(batch)
    };
    let (mut a_ids, mut b_ids) = (Vec::new(), Vec::new());
    for i in 0..3 {
        a_ids.extend(post_as(
            "client-key-a",
            &batches::batch(&format!("a{i}"), 2),
        ));
        b_ids.extend(post_as(
            "client-key-b",
            &batches::batch(&format!("b{i}"), 2),
        ));
    }
    wait_until("B delivered while A is held", WAIT, || {
        accepted_ids(&collector) == b_ids
    });
    wait_until("A retried", WAIT, || {
        collector
            .trace_requests()
            .iter()
            .filter(|r| r.authorization() == Some("Bearer client-key-a"))
            .count()
            >= 2
    });
    let metrics = sidecar.metrics();
    assert_eq!(metric(&metrics, "dynamiq_sidecar_forward_held_keys"), 1);
    assert_eq!(metric(&metrics, "dynamiq_sidecar_forward_held_runs"), 6);
    assert_eq!(sidecar.request("GET", "/readyz", &[], &[]).status, 200);

    reject_a.store(false, Ordering::SeqCst);
    wait_until("A delivered", WAIT, || {
        accepted_ids(&collector).len() >= a_ids.len() + b_ids.len()
    });
    let a_delivered: Vec<String> = accepted_ids(&collector)
        .into_iter()
        .filter(|id| id.starts_with('a'))
        .collect();
    assert_eq!(a_delivered, a_ids, "held runs arrive in order, each once");
    wait_until("the hold ended", WAIT, || {
        metric(&sidecar.metrics(), "dynamiq_sidecar_forward_held_keys") == 0
    });
    assert_eq!(sidecar.request("GET", "/readyz", &[], &[]).status, 200);
    assert!(dead_letters(&sidecar).is_empty(), "nothing dead-lettered");
    let logs = sidecar.logs();
    assert!(logs.contains("other keys' runs keep flowing"), "{logs}");
    assert!(!logs.contains("client-key-a") && !logs.contains("client-key-b"));
}

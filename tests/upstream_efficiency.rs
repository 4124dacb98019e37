//! Upstream efficiency (issue 6): duplicate suppression of the runs a reused Dynamiq SDK handler
//! re-sends on every flush, coalescing of many small client posts into few upstream requests,
//! gzip request bodies. The real binary forwards to a mock collector on loopback.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use support::{MockCollector, MockResponse, Sidecar, batches, metric, wait_until};

const KEY: &str = "sk-efficiency-test-key-5d1e";
const WAIT: Duration = Duration::from_secs(20);

fn fixture(k: usize) -> Value {
    let path = format!(
        "{}/tests/fixtures/reused-handler-flush-{k}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// How many times each run id was accepted.
fn accepted_counts(collector: &MockCollector) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in collector.accepted_run_ids() {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Scenario: the four flushes of a reused handler (3, 6, 9, 12 runs, each re-sending all earlier
/// runs) are posted in order, each after the previous one was delivered; then a copy of one run
/// with a changed output; then, after a clean restart, the last flush again.
/// Guarantees: each distinct run reaches the collector exactly once (12, not 30); a changed run
/// is forwarded again; the suppressed copies are counted; the memory survives a clean restart.
#[test]
fn a_reused_handlers_repeated_runs_are_forwarded_once_and_a_changed_run_again() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::start(&collector.url(), KEY);
    for k in 1..=4 {
        let flush = fixture(k);
        assert_eq!(batches::ids(&flush).len(), 3 * k);
        assert_eq!(sidecar.post_runs(&flush).0, 200);
        wait_until(&format!("flush {k}"), WAIT, || {
            collector.accepted_runs().len() >= k * 3
        });
    }
    let last = fixture(4);
    let all_ids: HashSet<String> = batches::ids(&last).into_iter().collect();
    assert_eq!(all_ids.len(), 12);
    // Give a wrongly forwarded copy time to show up.
    std::thread::sleep(Duration::from_millis(500));
    let counts = accepted_counts(&collector);
    assert_eq!(counts.len(), 12, "{}", collector.summary());
    assert!(
        counts.values().all(|&n| n == 1),
        "a run was forwarded twice: {counts:?}"
    );
    assert_eq!(collector.runs().len(), 12, "{}", collector.summary());
    let metrics = sidecar.metrics();
    assert_eq!(
        metric(
            &metrics,
            "dynamiq_sidecar_forward_dedup_suppressed_runs_total"
        ),
        18,
        "{metrics}"
    );
    assert!(metric(&metrics, "dynamiq_sidecar_forward_dedup_saved_bytes_total") > 18 * 800);
    assert_eq!(
        metric(&metrics, "dynamiq_sidecar_forward_dedup_evictions_total"),
        0
    );

    // The same run with a changed output (e.g. a handler that re-ran a node) is forwarded.
    let mut changed = last["runs"][0].clone();
    changed["output"] = serde_json::json!({"content": "changed"});
    let changed_id = changed["id"].as_str().unwrap().to_string();
    let mut flush5 = last.clone();
    flush5["runs"][0] = changed.clone();
    assert_eq!(sidecar.post_runs(&flush5).0, 200);
    wait_until("the changed run", WAIT, || {
        collector.accepted_runs().len() == 13
    });
    std::thread::sleep(Duration::from_millis(300));
    let runs = collector.accepted_runs();
    assert_eq!(runs.len(), 13, "{}", collector.summary());
    assert_eq!(runs[12]["id"].as_str(), Some(changed_id.as_str()));
    assert_eq!(runs[12]["output"], changed["output"]);

    // A clean restart keeps the memory: the same flush again sends nothing.
    let status = sidecar.terminate();
    assert!(status.success(), "{status:?}");
    sidecar.restart();
    assert_eq!(sidecar.post_runs(&flush5).0, 200);
    wait_until("the flush is suppressed", WAIT, || {
        metric(
            &sidecar.metrics(),
            "dynamiq_sidecar_forward_dedup_suppressed_runs_total",
        ) == 12
    });
    assert_eq!(
        collector.accepted_runs().len(),
        13,
        "{}",
        collector.summary()
    );
    assert!(!sidecar.logs().contains(KEY));
    assert!(!sidecar.metrics().contains(KEY));
}

/// Scenario: 200 client posts of one run each, forward.max_delay 300ms, forward.max_runs 50.
/// Guarantees: coalesced into few upstream requests (≤ 20), none over max_runs, every run
/// delivered once, in posting order.
#[test]
fn many_small_posts_are_coalesced_into_few_upstream_requests() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_delay", "300ms")
        .set("forward.max_runs", 50)
        .start();
    let mut ids = Vec::new();
    for i in 0..200 {
        let batch = batches::batch(&format!("small{i}"), 1);
        assert_eq!(sidecar.post_runs(&batch).0, 200);
        ids.extend(batches::ids(&batch));
    }
    wait_until("delivery", WAIT, || collector.accepted_runs().len() >= 200);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(collector.accepted_run_ids(), ids, "once each, in order");
    let requests = collector.trace_requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.runs.len()).collect();
    assert!(
        requests.len() <= 20,
        "{} upstream requests for 200 posts: {sizes:?}",
        requests.len()
    );
    assert!(sizes.iter().all(|&n| n <= 50), "{sizes:?}");
}

/// Scenario: `upstream.compression = "gzip"`.
/// Guarantees: bodies carry `Content-Encoding: gzip`, are smaller on the wire, and decompress to
/// the runs, byte for byte.
#[test]
fn gzip_compression_sends_compressed_bodies_that_decode_to_the_runs() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("upstream.compression", "gzip")
        .start();
    let flush = fixture(4);
    assert_eq!(sidecar.post_runs(&flush).0, 200);
    wait_until("delivery", WAIT, || collector.accepted_runs().len() >= 12);
    let requests = collector.trace_requests();
    for r in &requests {
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.parse_error.is_none(), "{:?}", r.parse_error);
        assert!(
            r.body.len() * 3 < r.decoded_body.len(),
            "{} wire bytes for {}",
            r.body.len(),
            r.decoded_body.len()
        );
    }
    let raw: Vec<String> = requests.iter().flat_map(|r| r.raw_runs.clone()).collect();
    let posted: Vec<String> = flush["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(raw, posted);
    let metrics = sidecar.metrics();
    assert!(
        metric(&metrics, "dynamiq_sidecar_forward_wire_bytes_total") * 3
            < metric(&metrics, "dynamiq_sidecar_forward_bytes_total"),
        "{metrics}"
    );
}

/// Scenario: the collector answers 503 to the first four attempts while the reused handler's
/// flushes keep coming. Guarantees: nothing is lost nor suppressed because of a failed
/// delivery; once the collector recovers every distinct run is delivered exactly once.
#[test]
fn runs_whose_delivery_failed_are_retried_not_suppressed() {
    let collector = MockCollector::start();
    collector.push_responses([503, 503, 503, 503].map(MockResponse::status));
    let sidecar = Sidecar::start(&collector.url(), KEY);
    for k in 1..=3 {
        assert_eq!(sidecar.post_runs(&fixture(k)).0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let ids: HashSet<String> = batches::ids(&fixture(3)).into_iter().collect();
    collector.wait_for_run_ids(&ids, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let counts = accepted_counts(&collector);
    assert_eq!(counts.len(), 9, "{}", collector.summary());
    assert!(
        counts.values().all(|&n| n == 1),
        "{counts:?}\n{}",
        collector.summary()
    );
    let failed: usize = collector
        .trace_requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert_eq!(failed, 4);
    // The runs refused with 503 were sent again, not taken for delivered.
    let refused: HashSet<String> = collector
        .trace_requests()
        .iter()
        .filter(|r| r.status == 503)
        .flat_map(|r| r.runs.iter().filter_map(support::collector::run_id))
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|id| counts.get(id) == Some(&1)));
    let metrics = sidecar.metrics();
    assert_eq!(
        metric(
            &metrics,
            "dynamiq_sidecar_forward_dedup_suppressed_runs_total"
        ),
        9 // 3 + 6 copies of earlier runs in flushes 2 and 3
    );
}

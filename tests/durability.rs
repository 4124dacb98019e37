//! Durability (docs/http-contract.md §6): restarts, SIGTERM drains, corrupted segments and both full-buffer
//! policies, with the real binary and a mock collector on loopback. (`kill -9` under load is
//! `tests/reliability.rs::kill_9_loop_under_load_loses_nothing`.)

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::batches;
use support::{MockCollector, Sidecar};

const KEY: &str = "sk-durability-test-key-55e1";
const WAIT: Duration = Duration::from_secs(20);

fn delivered_ids(collector: &MockCollector) -> HashSet<String> {
    collector.accepted_run_ids().into_iter().collect()
}

fn wait_for_ids(collector: &MockCollector, expected: &HashSet<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = delivered_ids(collector);
        let missing: Vec<&String> = expected.difference(&got).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged runs never delivered, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn segment_files(sidecar: &Sidecar) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = walk(sidecar.data_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Scenario: runs are acknowledged while the collector is down, the sidecar is stopped with
/// SIGTERM, the collector comes back, the sidecar restarts. Guarantees: every run is delivered.
#[test]
fn acknowledged_runs_survive_a_restart_and_are_delivered_after_it() {
    let mut collector = MockCollector::start();
    collector.stop();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("shutdown.drain_timeout", "300ms")
        .start();
    let expected = sidecar.post_generated("restart", 4, 5);
    let status = sidecar.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    collector.resume();
    sidecar.restart();
    wait_for_ids(&collector, &expected);
}

/// Scenario: SIGTERM with a reachable collector. Guarantees: the buffer drains before exit.
#[test]
fn sigterm_drains_the_buffer_before_exiting() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.max_delay", "2s")
        .set("shutdown.drain_timeout", "5s")
        .start();
    let batch = batches::batch("drain", 4);
    assert_eq!(sidecar.post_runs(&batch).0, 200);
    let status = sidecar.terminate();
    assert!(status.success());
    let expected: HashSet<String> = batches::ids(&batch).into_iter().collect();
    assert_eq!(delivered_ids(&collector), expected);
}

/// Scenario: bytes in the middle of a segment are flipped while the sidecar is stopped.
/// Guarantees: start-up succeeds, the corrupt record is counted and set aside, the other
/// records are delivered.
#[test]
fn a_corrupted_segment_does_not_stop_start_up_and_the_rest_is_delivered() {
    let mut collector = MockCollector::start();
    collector.stop();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("shutdown.drain_timeout", "100ms")
        .start();
    let expected = sidecar.post_generated("corrupt", 10, 1);
    sidecar.terminate();
    let segments = segment_files(&sidecar);
    assert!(
        !segments.is_empty(),
        "no segment files under {}",
        sidecar.data_dir().display()
    );
    let seg = &segments[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xA5;
    }
    std::fs::write(seg, &bytes).unwrap();

    collector.resume();
    sidecar.restart();
    // One (maybe two, if the flip spans a boundary) runs are lost to corruption; the rest arrive.
    let deadline = Instant::now() + WAIT;
    while delivered_ids(&collector).len() < expected.len() - 2 {
        assert!(
            Instant::now() < deadline,
            "only {} delivered",
            delivered_ids(&collector).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered = delivered_ids(&collector);
    assert!(delivered.is_subset(&expected));
    let metrics = sidecar.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dynamiq_sidecar_buffer_corrupt") && !l.ends_with(" 0")),
        "corruption not counted:\n{metrics}"
    );
    let aside = walk(sidecar.data_dir())
        .into_iter()
        .any(|p| p.to_string_lossy().contains("corrupt"));
    assert!(aside, "corrupt bytes were not copied aside");
}

/// Scenario: a tiny buffer under `when_full = "block"` while the collector is down.
/// Guarantees: ingest answers 429 with Retry-After once full, readiness fails, and nothing
/// acknowledged is dropped.
#[test]
fn a_full_buffer_under_block_answers_429_with_retry_after() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .small_buffer()
        .set("buffer.when_full", "block")
        .start();
    let mut acked = HashSet::new();
    let mut rejected = None;
    for i in 0..100 {
        let batch = batches::batch(&format!("block{i}"), 4);
        let r = sidecar.post_batch(&batch);
        if r.status == 200 {
            acked.extend(batches::ids(&batch));
        } else {
            rejected = Some(r);
            break;
        }
    }
    let r = rejected.expect("the buffer never filled");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"]["code"], "buffer_full");
    let deadline = Instant::now() + Duration::from_secs(3);
    while sidecar.request("GET", "/readyz", &[], &[]).status != 503 {
        assert!(
            Instant::now() < deadline,
            "readiness did not reflect the full buffer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut collector = collector;
    collector.resume();
    wait_for_ids(&collector, &acked);
}

/// Scenario: a tiny buffer under `drop_oldest` while the collector is down. Guarantees: ingest
/// keeps answering 200, the oldest runs are dropped and counted, the newest are delivered.
#[test]
fn a_full_buffer_under_drop_oldest_keeps_accepting_and_counts_drops() {
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .small_buffer()
        .start();
    let mut last = Vec::new();
    for i in 0..60 {
        let batch = batches::batch(&format!("drop{i}"), 4);
        assert_eq!(sidecar.post_runs(&batch).0, 200, "batch {i}");
        last = batches::ids(&batch);
    }
    let metrics = sidecar.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dynamiq_sidecar_buffer_dropped") && !l.ends_with(" 0")),
        "drops not counted:\n{metrics}"
    );
    collector.resume();
    wait_for_ids(&collector, &last.into_iter().collect());
}

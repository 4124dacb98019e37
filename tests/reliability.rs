//! The reliability suite: crash loops, a collector fault mix and a really full disk, each ending
//! with "every acknowledged run was delivered" (duplicates counted, never losses).
//!
//! Short by default (CI runs it in the normal suite); `scripts/reliability.sh --full` sets
//! `RELIABILITY_ROUNDS`/`RELIABILITY_BATCHES` for the long version. Results go to stderr as one
//! line per scenario (`reliability: <scenario> acked=… delivered=… lost=0 duplicates=…`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::batches;
use support::{MockCollector, MockResponse, Sidecar};

const KEY: &str = "sk-reliability-key-c0ffee";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until every acknowledged id was delivered; returns (delivered unique, duplicates).
fn assert_all_delivered(
    scenario: &str,
    collector: &MockCollector,
    acked: &HashSet<String>,
    timeout: Duration,
) -> (usize, usize) {
    let deadline = Instant::now() + timeout;
    loop {
        let ids = collector.accepted_run_ids();
        let unique: HashSet<&String> = ids.iter().collect();
        let lost = acked.iter().filter(|id| !unique.contains(id)).count();
        if lost == 0 {
            let duplicates = ids.len() - unique.len();
            eprintln!(
                "reliability: {scenario} acked={} delivered={} lost=0 duplicates={duplicates}",
                acked.len(),
                unique.len()
            );
            return (unique.len(), duplicates);
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: {lost} of {} acknowledged runs were never delivered",
            acked.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts batches from `writers` threads until `stop`; records the ids of every 200.
fn start_writers(
    url: &str,
    tag: &str,
    writers: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<HashSet<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (stop, acked, url, tag) = (
                stop.clone(),
                acked.clone(),
                url.to_string(),
                tag.to_string(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = batches::batch(&format!("{tag}w{w}b{i}"), 3);
                    let body = serde_json::to_vec(&batch).unwrap();
                    let answer = support::http::request(
                        "POST",
                        &format!("{url}/v1/traces"),
                        &[("Content-Type", "application/json")],
                        &body,
                        Duration::from_secs(5),
                    );
                    if answer.is_ok_and(|r| r.status == 200) {
                        acked.lock().unwrap().extend(batches::ids(&batch));
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// Scenario: `RELIABILITY_ROUNDS` (default 5; 50 in the full run) SIGKILLs at random moments
/// while four writers post and the forwarder delivers, with a restart after each.
/// Guarantees: no acknowledged run is lost; redelivery is bounded (duplicates are reported).
#[test]
fn kill_9_loop_under_load_loses_nothing() {
    let rounds = env_usize("RELIABILITY_ROUNDS", 5);
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::start(&collector.url(), KEY);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = start_writers(&sidecar.url(), &format!("k{round}"), 4, &stop, &acked);
        std::thread::sleep(Duration::from_millis(50 + fastrand::u64(0..400)));
        sidecar.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        sidecar.restart();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= rounds * 10,
        "too few acknowledgements ({}) to mean anything",
        acked.len()
    );
    assert_all_delivered("kill_9_loop", &collector, &acked, Duration::from_secs(60));
}

/// Scenario: the collector answers with a fault mix — 30 % 503, 10 % 429 with `Retry-After: 1`,
/// 5 % hangs past the request timeout, 5 % connection resets after the headers, 5 % bodies
/// trickled past the timeout, the rest 200 — while batches keep coming.
/// Guarantees: everything acknowledged is delivered, and no request follows a 429 sooner than
/// its Retry-After.
#[test]
fn a_collector_fault_mix_loses_nothing_and_honours_retry_after() {
    let batches_n = env_usize("RELIABILITY_BATCHES", 40);
    let collector = MockCollector::start();
    let script: Vec<MockResponse> = (0..batches_n * 3)
        .map(|_| match fastrand::u32(0..100) {
            0..30 => MockResponse::status(503),
            30..40 => MockResponse::status(429).with_header("Retry-After", "1"),
            40..45 => MockResponse::ok().with_delay(Duration::from_secs(2)),
            45..50 => MockResponse::ok().reset_after_headers(),
            50..55 => MockResponse::ok().trickled(8, Duration::from_millis(100)),
            _ => MockResponse::ok(),
        })
        .collect();
    collector.push_responses(script);
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("upstream.request_timeout", "500ms")
        .set("forward.retry_initial", "20ms")
        .set("forward.retry_max", "200ms")
        .set("forward.max_runs", 6)
        .start();
    let acked = sidecar.post_generated("fault", batches_n, 3);
    assert_all_delivered("fault_mix", &collector, &acked, Duration::from_secs(120));
    let requests = collector.trace_requests();
    for pair in requests.windows(2) {
        if pair[0].status == 429 {
            let gap = pair[1].received_at - pair[0].received_at;
            assert!(
                gap >= Duration::from_millis(980),
                "a request came {gap:?} after a 429 with Retry-After: 1"
            );
        }
    }
}

/// A tmpfs of `size` mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Mounts a 1 MiB tmpfs, or says why the scenario cannot run (needs root to mount). As root (CI)
/// a failure to mount is a test failure, never a silent skip.
fn small_disk() -> Option<Tmpfs> {
    match Tmpfs::mount("1m") {
        Some(fs) => Some(fs),
        None if is_root() => {
            panic!("running as root but cannot mount a tmpfs for the disk-full scenario")
        }
        None => {
            eprintln!("reliability: disk_full NOT RUN: mounting a tmpfs needs root");
            None
        }
    }
}

/// Scenario: the buffer lives on a 1 MiB filesystem while `buffer.max_bytes` allows 64 MiB and
/// the collector is down, under `drop_oldest`. Guarantees: ENOSPC is treated as a full buffer:
/// ingest keeps answering 200, drops are counted as `disk_full`, the process stays up, and when
/// the collector returns the newest runs are delivered and the disk is freed.
#[test]
fn a_full_disk_under_drop_oldest_drops_counted_oldest_and_keeps_running() {
    let Some(disk) = small_disk() else { return };
    let mut collector = MockCollector::start();
    collector.stop();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set(
            "buffer.path",
            disk.dir.path().join("buffer").display().to_string(),
        )
        .set("buffer.segment_bytes", 128 * 1024)
        .set("buffer.max_bytes", 64 * 1024 * 1024)
        .start();
    let mut last = Vec::new();
    for i in 0..120 {
        let batch = batches::batch(&format!("full{i}"), 20);
        let (status, body) = sidecar.post_runs(&batch);
        assert_eq!(status, 200, "batch {i}: {body}");
        last = batches::ids(&batch);
    }
    assert!(sidecar.is_running(), "the sidecar died on a full disk");
    let metrics = sidecar.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("dropped") && l.contains("disk_full") && !l.ends_with(" 0")),
        "disk-full drops not counted:\n{metrics}"
    );
    collector.resume();
    assert_all_delivered(
        "disk_full_drop_oldest",
        &collector,
        &last.into_iter().collect(),
        Duration::from_secs(30),
    );
}

/// Scenario: the same full disk under `block`. Guarantees: once the disk is full, ingest answers
/// 429 + Retry-After (never a crash, never a lost acknowledged run); when the collector returns
/// and space is freed, ingest accepts again and everything acknowledged is delivered.
#[test]
fn a_full_disk_under_block_refuses_then_recovers_when_space_returns() {
    let Some(disk) = small_disk() else { return };
    let mut collector = MockCollector::start();
    collector.stop();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set(
            "buffer.path",
            disk.dir.path().join("buffer").display().to_string(),
        )
        .set("buffer.segment_bytes", 128 * 1024)
        .set("buffer.max_bytes", 64 * 1024 * 1024)
        .set("buffer.when_full", "block")
        .start();
    let mut acked = HashSet::new();
    let mut refusals: HashMap<u16, usize> = HashMap::new();
    for i in 0..150 {
        let batch = batches::batch(&format!("blk{i}"), 20);
        let r = sidecar.post_batch(&batch);
        match r.status {
            200 => acked.extend(batches::ids(&batch)),
            429 | 503 => {
                assert!(
                    r.header("retry-after").is_some(),
                    "{} without Retry-After",
                    r.status
                );
                *refusals.entry(r.status).or_default() += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(!refusals.is_empty(), "a 1 MiB disk never filled");
    collector.resume();
    assert_all_delivered(
        "disk_full_block",
        &collector,
        &acked,
        Duration::from_secs(30),
    );
    // Space came back: new batches are accepted again.
    let accepted = AtomicUsize::new(0);
    support::wait_until("ingest to accept again", Duration::from_secs(20), || {
        let batch = batches::batch(&format!("after{}", accepted.load(Ordering::Relaxed)), 1);
        accepted.fetch_add(1, Ordering::Relaxed);
        sidecar.post_runs(&batch).0 == 200
    });
}

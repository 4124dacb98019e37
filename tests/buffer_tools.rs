//! The offline buffer tools (`buffer inspect|export|replay-dead-letters`) against a buffer the
//! real sidecar wrote.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::batches;
use support::{MockCollector, MockResponse, Sidecar};

const KEY: &str = "sk-tools-test-key-0d4e";

fn tool(sidecar: &Sidecar, args: &[&str]) -> Output {
    Command::new(support::sidecar::bin())
        .args(args)
        .arg("--config")
        .arg(sidecar.config_path())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Scenario: runs wait in the buffer while the collector is down. Guarantees: `inspect` counts
/// them as pending and `export` prints them verbatim, without the key; both only read.
#[test]
fn inspect_and_export_show_what_is_not_yet_delivered() {
    let mut collector = MockCollector::start();
    collector.stop();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("shutdown.drain_timeout", "100ms")
        .start();
    let batch = batches::batch("pending", 7);
    assert_eq!(sidecar.post_runs(&batch).0, 200);
    sidecar.terminate();

    let report: Value =
        serde_json::from_str(&stdout(&tool(&sidecar, &["buffer", "inspect", "--json"]))).unwrap();
    assert_eq!(report["records"], 7, "{report}");
    assert_eq!(report["consumers"][0]["name"], "dynamiq", "{report}");
    assert_eq!(report["consumers"][0]["pending_records"], 7, "{report}");
    let text = stdout(&tool(&sidecar, &["buffer", "inspect"]));
    assert!(text.contains("7 pending"), "{text}");

    let exported: Value =
        serde_json::from_str(&stdout(&tool(&sidecar, &["buffer", "export"]))).unwrap();
    assert_eq!(exported, batch);
    assert!(!exported.to_string().contains(KEY));

    // Still delivered afterwards: the tools changed nothing.
    collector.resume();
    sidecar.restart();
    collector.wait_for_runs(7, Duration::from_secs(15));
}

/// Scenario: the collector rejects a batch (422), the operator fixes the cause and replays.
/// Guarantees: inspect reports the dead letters by status; replay puts them back and the next
/// start forwards them; replay refuses to run next to a running sidecar.
#[test]
fn dead_letters_are_reported_and_replayed() {
    let collector = MockCollector::start();
    // The batch of two, then each run alone once the 422 splits it: three rejections.
    for _ in 0..3 {
        collector.push_response(MockResponse::status(422).with_body(r#"{"detail":"schema"}"#));
    }
    let mut sidecar = Sidecar::start(&collector.url(), KEY);
    assert_eq!(sidecar.post_runs(&batches::batch("dl", 2)).0, 200);
    support::wait_until("the three 422s", Duration::from_secs(15), || {
        collector.trace_requests().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(300));

    let running = tool(&sidecar, &["buffer", "replay-dead-letters"]);
    assert!(
        !running.status.success(),
        "replay ran next to a live sidecar"
    );
    assert!(String::from_utf8_lossy(&running.stderr).contains("stop the sidecar"));

    sidecar.terminate();
    let report: Value =
        serde_json::from_str(&stdout(&tool(&sidecar, &["buffer", "inspect", "--json"]))).unwrap();
    assert_eq!(report["dead_letters"]["runs"], 2, "{report}");
    assert_eq!(report["dead_letters"]["by_status"]["422"], 2, "{report}");

    let out = tool(&sidecar, &["buffer", "replay-dead-letters"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&stdout(&tool(&sidecar, &["buffer", "inspect", "--json"]))).unwrap();
    assert_eq!(report["dead_letters"]["runs"], 0, "{report}");

    sidecar.restart();
    support::wait_until("the replayed runs", Duration::from_secs(15), || {
        collector.accepted_run_ids() == ["dl-0", "dl-1"]
    });
}

/// Scenario: a sidecar that ran with the trace index and duplicate suppression left its own
/// state beside the segments (`dead-letter/`, `forward-state/`, `query-state/`), and someone
/// dropped a stray file there. Guarantees: a restart warns about the stray file only, and
/// `inspect` lists only it under `ignored_files`: the sidecar's own directories are not
/// "unexpected".
#[test]
fn the_sidecars_own_state_is_not_reported_as_unexpected_files() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::builder(&collector.url()).access_key(KEY).start();
    assert_eq!(sidecar.post_runs(&batches::batch("own-state", 3)).0, 200);
    collector.wait_for_runs(3, Duration::from_secs(10));
    sidecar.terminate();
    for own in ["dead-letter", "forward-state", "query-state"] {
        assert!(sidecar.data_dir().join(own).is_dir(), "{own} missing");
    }
    std::fs::write(sidecar.data_dir().join("notes.txt"), b"left by hand").unwrap();

    sidecar.restart();
    sidecar.terminate();
    let logs = sidecar.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("unexpected file in the buffer directory"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("notes.txt"), "{warnings:#?}");

    let report: Value =
        serde_json::from_str(&stdout(&tool(&sidecar, &["buffer", "inspect", "--json"]))).unwrap();
    let ignored = report["ignored_files"].as_array().unwrap();
    assert_eq!(ignored.len(), 1, "{report}");
    assert!(
        ignored[0].as_str().unwrap().ends_with("notes.txt"),
        "{report}"
    );
}

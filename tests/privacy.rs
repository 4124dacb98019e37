//! What the sidecar keeps and prints stays private: every file under `buffer.path` is the
//! sidecar user's alone (0600 files, 0700 directories, a loose directory tightened at start),
//! and credentials inside configured URLs never reach logs or `check-config`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::batches;
use support::{MockCollector, MockResponse, Sidecar};

/// Every entry below `root` with its permission bits.
fn tree(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.permissions().mode() & 0o7777));
        }
    }
    out.sort();
    out
}

/// Scenario: `buffer.path` exists with mode 0755 (a hand-made `mkdir`, an image's directory);
/// the sidecar runs, dead-letters a batch (422), delivers another, saves its state files,
/// stops; a byte is flipped in the segment and it runs again (copying the corrupt region
/// aside) and stops.
/// Guarantees: the directory was made 0700 with a warning, and every file and directory below
/// it (segments, cursors, LOCK, dead letters, the trace-index and duplicate-suppression
/// snapshots, corrupt copies) is 0600 / 0700.
#[test]
fn every_file_under_the_buffer_path_is_private_and_a_loose_directory_is_tightened() {
    let root = tempfile::tempdir().unwrap();
    let buffer = root.path().join("buffer");
    std::fs::create_dir(&buffer).unwrap();
    std::fs::set_permissions(&buffer, std::fs::Permissions::from_mode(0o755)).unwrap();

    let collector = MockCollector::start();
    collector.push_response(MockResponse::status(422).with_body(r#"{"detail":"rejected"}"#));
    let mut sidecar = Sidecar::builder(&collector.url())
        .set("buffer.path", buffer.display().to_string())
        .start();
    assert_eq!(sidecar.post_runs(&batches::batch("rejected", 2)).0, 200);
    support::wait_until("the 422 answer", Duration::from_secs(20), || {
        !collector.trace_requests().is_empty()
    });
    assert_eq!(sidecar.post_runs(&batches::batch("kept", 2)).0, 200);
    support::wait_until("delivery", Duration::from_secs(20), || {
        collector.accepted_run_ids().contains(&"kept-1".to_string())
    });
    assert!(sidecar.terminate().success(), "{}", sidecar.logs());
    assert!(
        sidecar.logs().contains("made private"),
        "the tightening is logged\n{}",
        sidecar.logs()
    );

    // Corruption in the segment: the next start copies it into corrupt/.
    let segment = tree(&buffer)
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0x5A;
    std::fs::write(&segment, &bytes).unwrap();
    sidecar.restart();
    assert!(sidecar.terminate().success(), "{}", sidecar.logs());

    assert_eq!(
        std::fs::metadata(&buffer).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let entries = tree(&buffer);
    for want in [
        "LOCK",
        "cursor-dynamiq",
        "corrupt",
        "dead-letter",
        "query-state",
        "forward-state",
    ] {
        assert!(
            entries
                .iter()
                .any(|(p, _)| p.file_name().is_some_and(|n| n == want)),
            "{want} was not created, so its mode is untested: {entries:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|(p, _)| p.parent().is_some_and(|d| d.ends_with("dead-letter"))),
        "no dead-letter file: {entries:?}"
    );
    for (path, mode) in &entries {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }
}

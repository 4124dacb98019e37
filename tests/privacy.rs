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
    // One run: a 422 for a batch of several would split it and retry each run alone.
    assert_eq!(sidecar.post_runs(&batches::batch("rejected", 1)).0, 200);
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

const URL_PASSWORD: &str = "s3cretURLpass";

/// Scenario: `upstream.url`, `query.upstream_url` and `outputs.otlp.endpoint` carry
/// `user:password@` and point at a closed loopback port; `check-config` prints the config (and
/// rejects a broken variant); the sidecar runs, retries a batch against the closed port for a
/// while (connection errors logged at debug), answers a passthrough request, and stops.
/// Guarantees: the password appears nowhere in `check-config`'s output, its error, or the
/// sidecar's stdout/stderr, while the URLs themselves (host and port) are still shown.
#[test]
fn credentials_in_configured_urls_never_reach_logs_or_check_config() {
    let port = support::sidecar::free_port(); // nothing listens there
    let url = format!("http://user:{URL_PASSWORD}@127.0.0.1:{port}");
    let mut sidecar = Sidecar::builder(&url)
        .set("shutdown.drain_timeout", "1s")
        .merge_str(&format!(
            "[outputs.otlp]\nendpoint = \"{url}\"\ntimeout = \"1s\"\n"
        ))
        .start();
    let mut shown = Vec::new();
    let check = |config: &Path| {
        let out = std::process::Command::new(support::sidecar::bin())
            .args(["check-config", "--config"])
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = check(sidecar.config_path());
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("http://***@127.0.0.1:{port}")),
        "{text}"
    );
    shown.push(text);
    let broken = sidecar.dir().join("broken.toml");
    let config = std::fs::read_to_string(sidecar.config_path()).unwrap();
    std::fs::write(
        &broken,
        config.replacen(&format!("127.0.0.1:{port}"), "127.0.0.1:notaport", 1),
    )
    .unwrap();
    let (code, text) = check(&broken);
    assert_eq!(code, Some(2), "{text}");
    shown.push(text);

    assert_eq!(sidecar.post_runs(&batches::batch("held", 2)).0, 200);
    shown.push(sidecar.request("GET", "/api/v1/projects", &[], &[]).text());
    let hostport = format!("127.0.0.1:{port}");
    support::wait_until(
        "connection errors naming the upstream in the log",
        Duration::from_secs(20),
        || {
            let logs = sidecar.logs();
            logs.matches(&hostport).count() >= 4 && logs.contains("OTLP output started")
        },
    );
    sidecar.terminate();
    shown.push(sidecar.logs());
    for (i, text) in shown.iter().enumerate() {
        assert!(
            !text.contains(URL_PASSWORD),
            "the URL password surfaced in output #{i}:\n{text}"
        );
    }
}

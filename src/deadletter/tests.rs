//! The dead-letter store: durable appends, the bound, torn and corrupt lines, summary and
//! replay.

use super::*;

fn dl(reason: DeadLetterReason, status: Option<u16>, run: &str, key: Option<&str>) -> DeadLetter {
    DeadLetter {
        reason,
        status,
        response: "bad run".into(),
        run: Bytes::copy_from_slice(run.as_bytes()),
        client_key: key.map(str::to_string),
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    list_files(dir).unwrap()
}

#[test]
fn a_line_holds_the_documented_fields_and_the_run_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(&dir.path().join("dead-letter")).unwrap();
    let run = r#"{"z":1,"a":1.50,"big":123456789012345678901234567890}"#;
    store
        .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), run, None)])
        .unwrap();
    let f = files(store.dir());
    assert_eq!(f.len(), 1);
    let text = std::fs::read_to_string(&f[0]).unwrap();
    assert!(text.ends_with("}\n") && text.lines().count() == 1);
    assert!(text.contains(&format!(r#""run":{run}}}"#)), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["reason"], "rejected");
    assert_eq!(v["status"], 422);
    assert_eq!(v["response"], "bad run");
    assert!(humantime::parse_rfc3339(v["dead_lettered_at"].as_str().unwrap()).is_ok());
    assert!(v.get("client_key").is_none());
}

#[cfg(unix)]
#[test]
fn the_directory_is_0700_and_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(&dir.path().join("dl")).unwrap();
    store
        .append_blocking(&[dl(DeadLetterReason::TooLarge, None, "{}", None)])
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(&files(store.dir())[0]), 0o600);
}

#[test]
fn a_multi_line_run_still_takes_one_line_and_a_long_response_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    let mut e = dl(
        DeadLetterReason::Rejected,
        Some(400),
        "{\n  \"a\": 1\r\n}",
        None,
    );
    e.response = "é".repeat(MAX_RESPONSE_CHARS);
    store.append_blocking(&[e]).unwrap();
    let text = std::fs::read_to_string(&files(dir.path())[0]).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["run"]["a"], 1);
    assert!(v["response"].as_str().unwrap().len() <= MAX_RESPONSE_CHARS);
}

#[test]
fn files_rotate_by_size_and_sort_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path())
        .unwrap()
        .with_rotate_bytes(300);
    for i in 0..6 {
        store
            .append_blocking(&[dl(
                DeadLetterReason::GaveUp,
                Some(503),
                &format!(r#"{{"i":{i}}}"#),
                None,
            )])
            .unwrap();
    }
    let f = files(dir.path());
    assert!(f.len() >= 2, "{f:?}");
    let s = summarize(dir.path()).unwrap();
    assert_eq!(s.runs, 6);
    assert_eq!(s.files, f.len());
    assert_eq!(s.by_reason.get("gave_up"), Some(&6));
    assert_eq!(s.by_status.get(&503), Some(&6));
}

#[test]
fn summarize_counts_runs_by_reason_and_status_and_never_returns_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    store
        .append_blocking(&[
            dl(
                DeadLetterReason::Rejected,
                Some(422),
                "{}",
                Some("sk-client-secret"),
            ),
            dl(DeadLetterReason::Rejected, Some(400), "[1]", None),
            dl(DeadLetterReason::TooLarge, None, "{}", None),
        ])
        .unwrap();
    let s = summarize(dir.path()).unwrap();
    assert_eq!((s.files, s.runs), (1, 3));
    assert!(s.bytes > 0);
    assert_eq!(s.by_reason.get("rejected"), Some(&2));
    assert_eq!(s.by_reason.get("too_large"), Some(&1));
    assert_eq!(s.by_status.len(), 2);
    assert!(s.oldest.is_some() && s.newest.is_some());
    assert!(!format!("{s:?}").contains("sk-client-secret"));
    assert_eq!(summarize(&dir.path().join("missing")).unwrap().files, 0);
}

fn total_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

fn numbered(i: usize) -> DeadLetter {
    dl(
        DeadLetterReason::Rejected,
        Some(422),
        &format!(r#"{{"id":"run-{i:04}"}}"#),
        None,
    )
}

#[test]
fn the_bound_evicts_the_oldest_files_first_and_reports_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path())
        .unwrap()
        .with_max_bytes(4000);
    let (mut written, mut evicted) = (0, 0);
    for i in 0..200 {
        let r = store.append_blocking(&[numbered(i)]).unwrap();
        assert_eq!((r.written_runs, r.refused_runs), (1, 0));
        written += r.written_runs;
        evicted += r.evicted_runs;
        assert!(r.store_bytes <= 4000, "{r:?}");
        assert_eq!(r.store_bytes, total_bytes(dir.path()));
    }
    assert!(evicted > 0);
    let s = summarize(dir.path()).unwrap();
    assert_eq!(s.runs, written - evicted, "every run is kept or reported");
    // The newest runs are the ones kept, and the bound is used, not left mostly empty.
    let text: String = files(dir.path())
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(text.contains("run-0199") && !text.contains("run-0000"));
    assert!(
        total_bytes(dir.path()) > 3000,
        "{}",
        total_bytes(dir.path())
    );
}

#[test]
fn files_left_from_before_count_toward_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let before = DeadLetterStore::open(dir.path()).unwrap();
    for i in 0..50 {
        before.append_blocking(&[numbered(i)]).unwrap();
    }
    let old_runs = summarize(dir.path()).unwrap().runs;
    let store = DeadLetterStore::open(dir.path())
        .unwrap()
        .with_max_bytes(1500);
    let r = store.append_blocking(&[numbered(50)]).unwrap();
    assert_eq!(r.evicted_runs, old_runs, "the one old file went whole");
    assert!(total_bytes(dir.path()) <= 1500);
    assert_eq!(summarize(dir.path()).unwrap().runs, 1);
}

#[test]
fn entries_larger_than_the_whole_bound_are_refused_and_nothing_is_evicted_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path())
        .unwrap()
        .with_max_bytes(1000);
    store.append_blocking(&[numbered(1)]).unwrap();
    let big = dl(
        DeadLetterReason::TooLarge,
        None,
        &format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000)),
        None,
    );
    let r = store.append_blocking(&[big, numbered(2)]).unwrap();
    assert_eq!((r.written_runs, r.refused_runs, r.evicted_runs), (0, 2, 0));
    assert_eq!(summarize(dir.path()).unwrap().runs, 1);
}

#[test]
fn a_failed_write_is_an_error_and_the_store_works_again_once_the_directory_does() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("dl");
    let store = DeadLetterStore::open(&dir).unwrap().with_max_bytes(10_000);
    // The directory replaced by a file: no file can be created in it (even as root).
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    let e = store.append_blocking(&[numbered(1)]).unwrap_err();
    assert!(matches!(e, DeadLetterError::Io { .. }), "{e}");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let r = store.append_blocking(&[numbered(2)]).unwrap();
    assert_eq!(r.written_runs, 1);
    assert_eq!(summarize(&dir).unwrap().runs, 1);
}

#[tokio::test]
async fn replay_reappends_every_run_with_its_client_key_then_removes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path())
        .unwrap()
        .with_rotate_bytes(200);
    let runs = [
        r#"{"a":1.50}"#,
        r#"{"b":123456789012345678901234567890}"#,
        "not json",
    ];
    for (i, r) in runs.iter().enumerate() {
        let key = (i == 1).then_some("client-key");
        store
            .append(vec![dl(DeadLetterReason::Rejected, Some(422), r, key)])
            .await
            .unwrap();
    }
    let mut got: Vec<Bytes> = Vec::new();
    let report = replay_with(dir.path(), |p| {
        got.extend(p);
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(report.runs, 3);
    assert!(report.files >= 2);
    assert!(files(dir.path()).is_empty());
    let decoded: Vec<_> = got.iter().map(|p| envelope::decode(p).unwrap()).collect();
    assert_eq!(decoded[0].run.as_ref(), runs[0].as_bytes());
    assert_eq!(decoded[0].client_key, None);
    assert_eq!(decoded[1].run.as_ref(), runs[1].as_bytes());
    assert_eq!(decoded[1].client_key.as_deref(), Some("client-key"));
    assert_eq!(decoded[2].run.as_ref(), b"not json");
}

#[tokio::test]
async fn replay_keeps_a_file_whose_append_failed() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    store
        .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), "{}", None)])
        .unwrap();
    let e = replay_with(dir.path(), |_| async { Err("buffer full".to_string()) })
        .await
        .unwrap_err();
    assert!(matches!(e, DeadLetterError::Append { .. }), "{e}");
    assert_eq!(files(dir.path()).len(), 1);
    assert_eq!(summarize(dir.path()).unwrap().runs, 1);
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_but_damage_in_the_middle_stops_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    store
        .append_blocking(&[dl(DeadLetterReason::Rejected, Some(422), "{}", None)])
        .unwrap();
    let path = files(dir.path())[0].clone();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"dead_lettered_at":"2025"#).unwrap();
    drop(f);
    assert_eq!(summarize(dir.path()).unwrap().damaged_lines, 1);
    let mut n = 0;
    let report = replay_with(dir.path(), |p| {
        n += p.len();
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!((report.runs, report.torn_lines, n), (1, 1, 1));

    let bad = dir
        .path()
        .join("dead-letter-20250101T000000.000Z-000.jsonl");
    std::fs::write(&bad, "garbage\n{\"reason\":\"rejected\",\"run\":{}}\n").unwrap();
    let e = replay_with(dir.path(), |_| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(matches!(e, DeadLetterError::Corrupt { line: 1, .. }), "{e}");
    assert!(bad.exists());
}

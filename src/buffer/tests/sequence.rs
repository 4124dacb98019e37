//! Sequence numbers: they continue across reopens, are never reused and stop at `MAX_SEQ`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_continue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    drop(b); // drop without close also flushes and releases the lock
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 3);
    assert_eq!(b.append(vec![payload(3, 10)]).await.unwrap().first_seq, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_are_not_reused_after_everything_was_acknowledged_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    append_each(&b, 0..40, 500).await; // ~5 segments
    let mut r = b.reader("dynamiq");
    assert_eq!(drain(&mut r).await.len(), 40);
    r.ack(40).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        segment_files(&cfg.path).len(),
        1,
        "only the active segment remains"
    );
    drop(r);
    b.close().await.unwrap();
    // Even with the cursor gone, the active segment's name keeps the numbering going.
    fs::remove_file(cfg.path.join("cursor-dynamiq")).unwrap();
    let (b, _) = open(&cfg, &["dynamiq"]);
    assert!(b.append(vec![payload(0, 1)]).await.unwrap().first_seq > 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_are_not_reused_when_segments_are_deleted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..10, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(10).unwrap();
    drop(r);
    b.close().await.unwrap();
    for f in segment_files(&cfg.path) {
        fs::remove_file(f).unwrap();
    }
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 0);
    assert_eq!(b.append(vec![payload(0, 1)]).await.unwrap().first_seq, 11);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [11]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_max_seq_are_refused_and_nothing_wraps_across_a_reopen() {
    use super::record::MAX_SEQ;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // A plausible cursor two short of the end: the numbering resumes after it.
    crate::private_fs::create_dir_all(&cfg.path).unwrap();
    fs::write(cfg.path.join("cursor-dynamiq"), cursor::encode(MAX_SEQ - 2)).unwrap();
    let (b, _) = open(&cfg, &["dynamiq"]);
    let r = b.append(payloads(0..3, 10)).await;
    assert!(
        matches!(r, Err(AppendError::SequenceExhausted { next_seq }) if next_seq == MAX_SEQ - 1),
        "{r:?}"
    );
    let last = b.append(payloads(0..2, 10)).await.unwrap();
    assert_eq!((last.first_seq, last.last_seq), (MAX_SEQ - 1, MAX_SEQ));
    let e = b.append(vec![payload(9, 10)]).await.unwrap_err();
    assert!(e.to_string().contains("exhausted"), "{e}");
    // An empty append needs no number.
    b.append(Vec::new()).await.unwrap();
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [MAX_SEQ - 1, MAX_SEQ]);
    r.ack(MAX_SEQ).unwrap();
    drop(r);
    b.close().await.unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.cursors_reset, 0);
    assert!(matches!(
        b.append(vec![payload(9, 10)]).await,
        Err(AppendError::SequenceExhausted { .. })
    ));
    let mut r = b.reader("dynamiq");
    assert!(drain(&mut r).await.is_empty());
    assert_eq!(r.acked(), MAX_SEQ);
}

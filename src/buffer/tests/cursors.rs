//! Consumers and their cursors: acknowledgements, restarts, independent progress, segment deletion.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_resumes_after_the_cursor_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    append_each(&b, 0..20, 300).await;
    let mut r = b.reader("dynamiq");
    let got = r.next_batch(7, usize::MAX, Duration::ZERO).await.unwrap();
    assert_eq!(seqs(&got), (1..=7).collect::<Vec<_>>());
    r.ack(5).unwrap();
    r.ack(3).unwrap(); // older: ignored
    drop(r);
    b.close().await.unwrap();
    assert_eq!(cursor::read(&cfg.path, "dynamiq").unwrap(), Some(5));

    let (b, _) = open(&cfg, &["dynamiq"]);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), (6..=20).collect::<Vec<_>>());
    assert_eq!(r.pending_records(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_acknowledgements_cost_few_cursor_writes_and_a_flush_is_served_at_once() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..300, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    let got = r.next_batch(300, usize::MAX, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 300);
    let before = fs.synced_writes.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for seq in (5..=300).step_by(5) {
        r.ack(seq).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every acknowledgement moved the cursor (60 in ≥ 300 ms); the cursor is written about
    // once per `COALESCE`, not once per acknowledgement.
    let acked_in = started.elapsed();
    let rounds = acked_in.as_millis() / housekeeper::COALESCE.as_millis() + 2;
    let writes_after_burst = fs.synced_writes.load(Ordering::SeqCst) - before;
    assert!(
        u128::from(writes_after_burst) <= rounds,
        "{writes_after_burst} cursor writes for 60 acknowledgements in {acked_in:?}"
    );
    // The last acknowledgement reaches the file within a round, without a flush...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cursor::read(&cfg.path, "dynamiq").unwrap() != Some(300) {
        assert!(
            std::time::Instant::now() < deadline,
            "cursor never persisted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and a flush persists a new one before it returns.
    b.append(payloads(300..301, 10)).await.unwrap();
    let got = r.next_batch(1, usize::MAX, Duration::ZERO).await.unwrap();
    r.ack(got[0].seq).unwrap();
    b.flush().await.unwrap();
    assert_eq!(cursor::read(&cfg.path, "dynamiq").unwrap(), Some(301));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cursor_restarts_the_consumer_from_the_oldest_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..5, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(4).unwrap();
    drop(r);
    b.close().await.unwrap();
    fs::remove_file(cfg.path.join("cursor-dynamiq")).unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.cursors_reset, 0);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cursor_restarts_the_consumer_from_the_oldest_record_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..5, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(4).unwrap();
    drop(r);
    b.close().await.unwrap();
    flip_byte(&cfg.path.join("cursor-dynamiq"), 9);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.cursors_reset, 1);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_deleted_only_when_every_consumer_acknowledged_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq", "otlp"]);
    b.append(payloads(0..10, 1000)).await.unwrap(); // segments 1, 4, 7, 10
    let mut d = b.reader("dynamiq");
    let mut o = b.reader("otlp");
    assert_eq!(drain(&mut d).await.len(), 10);
    d.ack(10).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        segment_files(&cfg.path).len(),
        4,
        "otlp has acknowledged nothing"
    );
    assert_eq!(o.pending_records(), 10);
    assert_eq!(d.pending_records(), 0);

    assert_eq!(
        o.next_batch(5, usize::MAX, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        5
    );
    o.ack(5).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        segment_files(&cfg.path).len(),
        3,
        "segment 1 (records 1-3) is done for both"
    );
    o.ack(10).unwrap();
    b.flush().await.unwrap();
    assert_eq!(
        segment_files(&cfg.path).len(),
        1,
        "the active segment is never deleted"
    );
    assert_eq!(cursor::read(&cfg.path, "otlp").unwrap(), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_progress_independently() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq", "otlp"]);
    b.append(payloads(0..6, 10)).await.unwrap();
    let mut d = b.reader("dynamiq");
    let mut o = b.reader("otlp");
    assert_eq!(
        seqs(&d.next_batch(4, usize::MAX, Duration::ZERO).await.unwrap()),
        [1, 2, 3, 4]
    );
    assert_eq!(
        seqs(&o.next_batch(2, usize::MAX, Duration::ZERO).await.unwrap()),
        [1, 2]
    );
    d.ack(4).unwrap();
    o.ack(1).unwrap();
    assert_eq!((d.pending_records(), o.pending_records()), (2, 5));
    assert_eq!(
        seqs(&o.next_batch(10, usize::MAX, Duration::ZERO).await.unwrap()),
        [3, 4, 5, 6]
    );
    drop((d, o));
    b.close().await.unwrap();
    let (b, _) = open(&cfg, &["dynamiq", "otlp"]);
    let mut d = b.reader("dynamiq");
    let mut o = b.reader("otlp");
    assert_eq!(seqs(&drain(&mut d).await), [5, 6]);
    assert_eq!(seqs(&drain(&mut o).await), [2, 3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_not_named_at_open_still_gets_a_working_reader() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    let mut r = b.reader("late/comer");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3]);
    r.ack(2).unwrap();
    b.flush().await.unwrap();
    assert_eq!(cursor::read(&cfg.path, "late/comer").unwrap(), Some(2));
    drop(r);
    b.close().await.unwrap();
    let (b, _) = open(&cfg, &["dynamiq"]);
    let mut r = b.reader("late/comer");
    assert_eq!(seqs(&drain(&mut r).await), [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_past_the_last_record_are_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    b.append(payloads(0..2, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    r.ack(1000).unwrap();
    assert_eq!(r.acked(), 2);
    b.append(vec![payload(2, 10)]).await.unwrap();
    assert_eq!(r.pending_records(), 1);
}

//! Appending and reading back: order and sequence numbers, stats, inspect/export, close.

use super::*;

#[test]
fn buffers_are_shareable_and_readers_can_move_to_tasks() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<Buffer>();
    send::<Reader>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_are_read_back_in_order_with_their_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (b, report) = open(&config(dir.path()), &["dynamiq"]);
    assert_eq!(report.records, 0);
    let a = b.append(payloads(0..3, 10)).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq), (1, 3));
    let a = b.append(vec![payload(3, 10)]).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq), (4, 4));
    let mut r = b.reader("dynamiq");
    let got = drain(&mut r).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4]);
    assert_eq!(got[2].payload, payload(2, 10));
    assert!(got[0].appended_at_ms > 1_600_000_000_000);
    assert_eq!(r.pending_records(), 4);
    r.ack(4).unwrap();
    assert_eq!(r.pending_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_append_writes_nothing_and_returns_an_empty_range() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    b.append(vec![payload(0, 5)]).await.unwrap();
    let a = b.append(vec![]).await.unwrap();
    assert!(a.first_seq > a.last_seq);
    assert_eq!(a.first_seq, 2);
    assert_eq!(b.append(vec![payload(1, 5)]).await.unwrap().first_seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_size_and_the_age_of_the_oldest_unacknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    assert_eq!(b.stats().oldest_unacked_age, None);
    b.append(payloads(0..2, 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let s = b.stats();
    assert_eq!(
        (s.records, s.segments, s.bytes),
        (2, 1, 2 * (10 + HEADER_LEN as u64))
    );
    assert!(s.oldest_unacked_age.unwrap() >= Duration::from_millis(30));
    assert!(b.shared().metrics.oldest_unacked_age.get() >= 0.03);
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(2).unwrap();
    assert_eq!(b.stats().oldest_unacked_age, None);
    assert_eq!(b.shared().metrics.appended_records.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_export_read_a_live_buffer_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq", "otlp"]);
    b.append(payloads(0..10, 1000)).await.unwrap();
    let mut d = b.reader("dynamiq");
    drain(&mut d).await;
    d.ack(6).unwrap();
    let mut o = b.reader("otlp");
    o.next_batch(2, usize::MAX, Duration::ZERO).await.unwrap();
    o.ack(2).unwrap();
    b.flush().await.unwrap();
    let seg = segment_files(&cfg.path)[1].clone();
    flip_byte(&seg, 100);
    let before: Vec<_> = segment_files(&cfg.path)
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();

    let report = inspect(&cfg.path).unwrap();
    assert_eq!(report.segments.len(), 4);
    assert_eq!(report.records, 9);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.last_seq, Some(10));
    assert!(report.oldest_record_ms.is_some());
    let c: Vec<_> = report
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.acked_through, c.pending_records))
        .collect();
    assert_eq!(c, [("dynamiq", Some(6), 4), ("otlp", Some(2), 7)]);

    let all: Vec<u64> = export(&cfg.path, None)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(all, [3, 5, 6, 7, 8, 9, 10], "record 4 is corrupt");
    let d_left: Vec<u64> = export(&cfg.path, Some("dynamiq"))
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(d_left, [7, 8, 9, 10]);
    let after: Vec<_> = segment_files(&cfg.path)
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(before == after, "inspect and export changed nothing");
    assert!(!cfg.path.join("corrupt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_and_later_calls_get_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        fsync: FsyncPolicy::Never,
        ..config(dir.path())
    };
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..3, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(2).unwrap();
    assert_eq!(
        fs.syncs.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never: no fsync"
    );
    b.close().await.unwrap();
    assert!(
        fs.syncs.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "close fsyncs"
    );
    assert!(matches!(
        b.append(vec![payload(0, 1)]).await,
        Err(AppendError::Closed)
    ));
    assert!(matches!(
        r.next_batch(1, 1, Duration::ZERO).await,
        Err(BufferError::Closed)
    ));
    assert!(matches!(r.ack(3), Err(BufferError::Closed)));
    assert!(!b.is_writable());
    assert_eq!(cursor::read(&cfg.path, "dynamiq").unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_for_records_is_released_by_close() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    let mut r = b.reader("dynamiq");
    let waiting = tokio::spawn(async move { r.next_batch(1, 1, Duration::ZERO).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.close().await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(res, Err(BufferError::Closed)));
}

//! Disk faults injected through `FaultFs`: full disks, short and failed writes, failed fsyncs.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_drop_oldest_drops_the_oldest_segment_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..9, 1000)).await.unwrap(); // segments 1, 4, 7 (full)
    fs.with(|f| f.space_left = Some(500)); // the disk is nearly full
    let a = b.append(vec![payload(9, 1000)]).await.unwrap();
    assert_eq!(a.first_seq, 10);
    assert_eq!(
        dropped(&b, DropReason::DiskFull),
        3,
        "segment 1 (records 1-3) was dropped"
    );
    assert!(!cfg.path.join(segment::file_name(1)).exists());
    drop(b);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!((report.torn_tail_bytes, report.corrupt_records), (0, 0));
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), (4..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_block_refuses_the_append_and_leaves_the_segment_valid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        when_full: WhenFull::Block,
        ..config(dir.path())
    };
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..2, 100)).await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs.with(|f| f.space_left = Some(50)); // the next record is written in part, then ENOSPC
    let err = b.append(vec![payload(2, 100)]).await.unwrap_err();
    assert!(
        matches!(err, AppendError::Full { retry_after } if retry_after >= Duration::from_secs(1))
    );
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        len,
        "the partial record was truncated away"
    );
    assert!(!b.is_writable());
    assert_eq!(b.shared().metrics.full_rejections.get(), 1);

    fs.with(|f| f.space_left = None); // space freed
    assert_eq!(b.append(vec![payload(2, 100)]).await.unwrap().first_seq, 3);
    assert!(b.is_writable());
    drop(b);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!((report.torn_tail_bytes, report.records), (0, 3));
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_rotation_keeps_every_segment_valid_and_never_reuses_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        when_full: WhenFull::Block,
        ..config(dir.path())
    };
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..2, 1000)).await.unwrap();
    fs.with(|f| f.space_left = Some(1500));
    // Record 3 fits the segment, 4 goes to a new segment 4 and runs out of space.
    let err = b.append(payloads(2..4, 1000)).await.unwrap_err();
    assert!(matches!(err, AppendError::Full { .. }));
    fs.with(|f| f.space_left = None);
    let a = b.append(vec![payload(9, 10)]).await.unwrap();
    assert!(
        a.first_seq > 4,
        "numbers of the failed group are not reused: {a:?}"
    );
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, a.first_seq]);
    drop(r);
    drop(b);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(
        (
            report.torn_tail_bytes,
            report.corrupt_records,
            report.records
        ),
        (0, 0, 3)
    );
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, a.first_seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let fs = FaultFs::default();
    fs.with(|f| f.max_write = Some(7));
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..5, 100)).await.unwrap();
    let mut r = b.reader("dynamiq");
    let got = drain(&mut r).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    assert_eq!(got[4].payload, payload(4, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_truncated_away_and_reported_as_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..2, 100)).await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs.with(|f| f.eio_after = Some(40)); // part of the record gets written, then EIO
    let err = b.append(vec![payload(2, 100)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Io(_)), "{err:?}");
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        len,
        "the partial record was truncated away"
    );
    assert!(
        !b.is_writable(),
        "not writable for a while after a disk error"
    );
    assert_eq!(b.append(vec![payload(2, 100)]).await.unwrap().first_seq, 3);
    assert!(b.is_writable());
    drop(b);
    let (_, report) = open(&cfg, &["dynamiq"]);
    assert_eq!((report.torn_tail_bytes, report.records), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_appends_and_removes_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    b.append(payloads(0..2, 100)).await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs.with(|f| f.fail_syncs = 1);
    assert!(matches!(
        b.append(vec![payload(2, 100)]).await,
        Err(AppendError::Io(_))
    ));
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    let mut r = b.reader("dynamiq");
    assert_eq!(
        seqs(&drain(&mut r).await),
        [1, 2],
        "unacknowledged bytes are never visible"
    );
    assert_eq!(b.append(vec![payload(2, 100)]).await.unwrap().first_seq, 3);
}

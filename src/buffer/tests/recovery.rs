//! Recovery at open: torn tails, empty segments and stray files never prevent a start.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_truncated_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..5, 20)).await.unwrap();
    b.close().await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let good_len = fs::metadata(&seg).unwrap().len();
    // Half a record, as a crash in the middle of a write leaves it.
    let torn = &record::encode_record(6, 0, &payload(5, 20))[..30];
    let f = OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut &f, torn).unwrap();
    drop(f);

    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.torn_tail_bytes, 30);
    assert_eq!(report.records, 5);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(b.append(vec![payload(5, 20)]).await.unwrap().first_seq, 6);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_segments_and_garbage_files_do_not_prevent_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    b.close().await.unwrap();
    fs::write(cfg.path.join("00000000000000000000.seg"), b"").unwrap(); // empty, older
    fs::write(cfg.path.join("notes.txt"), b"hello").unwrap();
    fs::write(cfg.path.join("0000000000000000000x.seg"), b"junk").unwrap();
    fs::create_dir(cfg.path.join("00000000000000000099.seg")).unwrap();
    fs::write(
        cfg.path.join("99999999999999999999.seg"),
        b"overflowing name",
    )
    .unwrap();
    fs::write(cfg.path.join("cursor-dynamiq.tmp"), b"half written").unwrap();

    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 3);
    assert_eq!(report.ignored_files, 4);
    assert!(
        !cfg.path.join("00000000000000000000.seg").exists(),
        "empty older segment removed"
    );
    assert!(
        !cfg.path.join("cursor-dynamiq.tmp").exists(),
        "stale temp cursor removed"
    );
    assert!(
        cfg.path.join("notes.txt").exists(),
        "unknown files left alone"
    );
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_last_segment_becomes_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    b.close().await.unwrap();
    // As a crash right after rotation leaves it.
    fs::write(cfg.path.join(segment::file_name(4)), b"").unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.segments, 2);
    assert_eq!(b.append(vec![payload(3, 10)]).await.unwrap().first_seq, 4);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_of_pure_garbage_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    fs::create_dir_all(&cfg.path).unwrap();
    fs::write(cfg.path.join(segment::file_name(1)), vec![0xD9u8; 10_000]).unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.torn_tail_bytes, 10_000);
    assert_eq!(b.append(vec![payload(0, 1)]).await.unwrap().first_seq, 1);
}

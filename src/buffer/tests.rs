//! Behaviour tests of the whole buffer (unit tests of the pure parts live beside them).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::registry::Registry;

use super::io::testing::FaultFs;
use super::metrics::{BufferMetrics, DropLabels};
use super::record::HEADER_LEN;
use super::*;
use crate::buffer::config::{BufferConfig, FsyncPolicy, WhenFull};

const SEG: u64 = 4096;

fn config(dir: &Path) -> BufferConfig {
    BufferConfig {
        path: dir.join("buf"),
        max_bytes: 1 << 20,
        when_full: WhenFull::DropOldest,
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_millis(50),
        segment_bytes: SEG,
    }
}

fn open(cfg: &BufferConfig, consumers: &[&str]) -> (Buffer, RecoveryReport) {
    Buffer::open(cfg, consumers, &mut Registry::default()).expect("open")
}

fn open_fs(cfg: &BufferConfig, consumers: &[&str], fs: &FaultFs) -> (Buffer, RecoveryReport) {
    Buffer::open_with(cfg, consumers, BufferMetrics::new(), Arc::new(fs.clone())).expect("open")
}

/// A payload of exactly `len` bytes identifying `i`.
fn payload(i: u64, len: usize) -> Bytes {
    let mut v = format!("{{\"run\":{i}}}").into_bytes();
    v.resize(len.max(v.len()), b' ');
    Bytes::from(v)
}

fn payloads(range: std::ops::Range<u64>, len: usize) -> Vec<Bytes> {
    range.map(|i| payload(i, len)).collect()
}

async fn append_each(b: &Buffer, range: std::ops::Range<u64>, len: usize) {
    for i in range {
        b.append(vec![payload(i, len)]).await.expect("append");
    }
}

/// Reads until nothing arrives for a short while.
async fn drain(r: &mut Reader) -> Vec<Record> {
    let mut out = Vec::new();
    while let Ok(batch) = tokio::time::timeout(
        Duration::from_millis(150),
        r.next_batch(1000, usize::MAX, Duration::ZERO),
    )
    .await
    {
        out.extend(batch.expect("next_batch"));
    }
    out
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5A;
    f.write_all_at(&b, offset).unwrap();
}

fn dropped(b: &Buffer, reason: DropReason) -> u64 {
    b.shared()
        .metrics
        .dropped_records
        .get_or_create(&DropLabels { reason })
        .get()
}

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
async fn a_flipped_byte_mid_segment_is_skipped_counted_copied_aside_and_later_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..5, 20)).await.unwrap();
    b.close().await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let rec = (HEADER_LEN + 20) as u64;
    flip_byte(&seg, rec + HEADER_LEN as u64 + 3); // payload of record 2

    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.corrupt_bytes, rec);
    assert_eq!(report.records, 4);
    assert_eq!(b.shared().metrics.corrupt_records.get(), 1);
    let copies: Vec<_> = fs::read_dir(cfg.path.join("corrupt")).unwrap().collect();
    assert_eq!(copies.len(), 1);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 3, 4, 5]);
    // Met again by the reader: not counted twice.
    assert_eq!(b.shared().metrics.corrupt_records.get(), 1);
    r.ack(5).unwrap();
    assert_eq!(r.pending_records(), 0);
    assert_eq!(b.append(vec![payload(9, 1)]).await.unwrap().first_seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_header_byte_in_an_older_segment_does_not_stop_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    append_each(&b, 0..30, 400).await;
    b.close().await.unwrap();
    let segs = segment_files(&cfg.path);
    assert!(segs.len() >= 3);
    flip_byte(&segs[0], 9); // seq field of the first record's header
    flip_byte(&segs[1], fs::metadata(&segs[1]).unwrap().len() - 1); // last byte: invalid tail of a sealed segment

    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.corrupt_records, 2);
    assert_eq!(report.torn_tail_bytes, 0);
    let mut r = b.reader("dynamiq");
    let got = seqs(&drain(&mut r).await);
    assert_eq!(got.len(), 28);
    assert_eq!(got[0], 2);
    assert_eq!(*got.last().unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_appearing_after_start_is_skipped_by_the_reader_and_copied_aside() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..5, 20)).await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    let rec = (HEADER_LEN + 20) as u64;
    flip_byte(&seg, 2 * rec + 40); // record 3
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 4, 5]);
    assert_eq!(b.shared().metrics.corrupt_records.get(), 1);
    assert!(
        cfg.path
            .join("corrupt")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_last_record_does_not_keep_the_drain_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 20)).await.unwrap();
    let seg = segment_files(&cfg.path).pop().unwrap();
    flip_byte(&seg, fs::metadata(&seg).unwrap().len() - 1);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2]);
    assert_eq!(r.pending_records(), 3);
    r.ack(2).unwrap();
    assert_eq!(
        r.pending_records(),
        0,
        "the unreadable record 3 is acknowledged with record 2"
    );
    assert_eq!(r.acked(), 3);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        segment_bytes: 1 << 20,
        ..config(dir.path())
    };
    let fs = FaultFs::default();
    fs.with(|f| f.sync_delay = Some(Duration::from_millis(20)));
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.append(vec![payload(i, 100), payload(i, 100)]).await })
        })
        .collect();
    let mut firsts = Vec::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert_eq!(
            a.last_seq,
            a.first_seq + 1,
            "a batch gets consecutive numbers"
        );
        firsts.push(a.first_seq);
    }
    firsts.sort_unstable();
    firsts.dedup();
    assert_eq!(firsts.len(), 64);
    let syncs = fs.syncs.load(std::sync::atomic::Ordering::SeqCst);
    assert!(syncs < 64, "{syncs} fsyncs for 64 appends: no group commit");
    assert!(syncs >= 1);
    drop(b);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 128);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), (1..=128).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_at_segment_bytes_and_are_named_by_their_first_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    // 1000-byte payloads: 4 records (4128 bytes) do not fit in 4096, so 3 per segment.
    b.append(payloads(0..10, 1000)).await.unwrap();
    let names: Vec<String> = segment_files(&cfg.path)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [1, 4, 7, 10].map(segment::file_name),
        "3 records per segment"
    );
    for p in segment_files(&cfg.path) {
        assert!(fs::metadata(&p).unwrap().len() <= SEG);
    }
    let s = b.stats();
    assert_eq!((s.records, s.segments), (10, 4));
    assert_eq!(s.bytes, 10 * (1000 + HEADER_LEN as u64));
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
async fn drop_oldest_deletes_whole_segments_counts_them_and_moves_the_reader_forward() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        max_bytes: 3 * SEG,
        ..config(dir.path())
    };
    let (b, _) = open(&cfg, &["dynamiq"]);
    let mut r = b.reader("dynamiq");
    // The reader exists (positioned at the start) before the drops happen.
    append_each(&b, 0..30, 1000).await; // 10 segments' worth into a 3-segment buffer
    let s = b.stats();
    assert!(s.bytes <= cfg.max_bytes, "{} > {}", s.bytes, cfg.max_bytes);
    let dropped = dropped(&b, DropReason::DropOldest);
    assert_eq!(dropped + s.records, 30);
    assert!(dropped >= 21);
    assert!(b.is_writable());
    let got = seqs(&drain(&mut r).await);
    assert_eq!(
        got.first().copied(),
        Some(dropped + 1),
        "the reader skipped the dropped records"
    );
    assert_eq!(*got.last().unwrap(), 30);
    r.ack(30).unwrap();
    assert_eq!(r.pending_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_returns_full_and_recovers_after_acknowledgements_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        max_bytes: 3 * SEG,
        when_full: WhenFull::Block,
        ..config(dir.path())
    };
    let (b, _) = open(&cfg, &["dynamiq"]);
    let mut accepted = 0u64;
    let err = loop {
        match b.append(vec![payload(accepted, 1000)]).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    let AppendError::Full { retry_after } = err else {
        panic!("expected Full, got {err:?}");
    };
    assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(5));
    assert_eq!(accepted, 11, "12 records of 1032 bytes exceed 3 * 4096");
    assert!(!b.is_writable());
    assert_eq!(b.shared().metrics.full_rejections.get(), 1);
    assert_eq!(dropped(&b, DropReason::DropOldest), 0);

    let mut r = b.reader("dynamiq");
    assert_eq!(drain(&mut r).await.len() as u64, accepted);
    r.ack(accepted).unwrap();
    b.flush().await.unwrap(); // the housekeeper deletes what was acknowledged
    assert!(b.is_writable());
    assert_eq!(
        b.append(vec![payload(99, 1000)]).await.unwrap().first_seq,
        accepted + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_a_segment_is_refused_as_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    let ok = SEG as usize - HEADER_LEN;
    b.append(vec![payload(0, ok)]).await.unwrap();
    let err = b
        .append(vec![payload(1, 10), payload(2, ok + 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::TooLarge { size, limit } if size == SEG as usize + 1 && limit == SEG)
    );
    assert_eq!(
        b.stats().records,
        1,
        "nothing of the refused batch was written"
    );
    let err = b.append(payloads(0..2000, 1000)).await.unwrap_err();
    assert!(
        matches!(err, AppendError::TooLarge { limit, .. } if limit == 1 << 20),
        "a batch over max_bytes"
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_batch_respects_max_records_and_max_bytes_and_returns_an_oversized_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    b.append(payloads(0..10, 100)).await.unwrap();
    b.append(vec![payload(10, 900)]).await.unwrap();
    b.append(payloads(11..13, 100)).await.unwrap();
    let mut r = b.reader("dynamiq");
    let z = Duration::ZERO;
    assert_eq!(
        seqs(&r.next_batch(3, usize::MAX, z).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(seqs(&r.next_batch(100, 250, z).await.unwrap()), [4, 5]);
    assert_eq!(
        seqs(&r.next_batch(100, 1000, z).await.unwrap()),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(
        seqs(&r.next_batch(100, 500, z).await.unwrap()),
        [11],
        "alone, though over max_bytes"
    );
    assert_eq!(
        seqs(&r.next_batch(0, 0, z).await.unwrap()),
        [12],
        "at least one record"
    );
    assert_eq!(seqs(&r.next_batch(100, usize::MAX, z).await.unwrap()), [13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_batch_waits_for_records_and_lingers_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    let mut r = b.reader("dynamiq");
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.append(vec![payload(0, 10)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.append(vec![payload(1, 10)]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            b.append(vec![payload(2, 10)]).await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    let got = r
        .next_batch(100, usize::MAX, Duration::from_millis(300))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        seqs(&got),
        [1, 2],
        "the second record arrived within the linger"
    );
    assert!(
        took >= Duration::from_millis(340) && took < Duration::from_millis(650),
        "{took:?}"
    );
    let got = r.next_batch(100, usize::MAX, Duration::ZERO).await.unwrap();
    assert_eq!(seqs(&got), [3], "waited for the third record");
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_batch_returns_once_publishes_can_fill_it_by_records_or_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    let trickle = |range: std::ops::Range<u64>| {
        let b = b.clone();
        tokio::spawn(async move {
            for i in range {
                b.append(vec![payload(i, 50)]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let linger = Duration::from_secs(30);
    let mut r = b.reader("dynamiq");
    // By records: 20 wanted, published one at a time.
    let writer = trickle(0..20);
    let started = std::time::Instant::now();
    let mut got = r.next_batch(20, usize::MAX, linger).await.unwrap();
    while got.len() < 20 {
        // An upper-bound estimate may trigger a read that comes back short: the next call
        // still finds the rest (nothing is skipped).
        got.extend(
            r.next_batch(20 - got.len(), usize::MAX, linger)
                .await
                .unwrap(),
        );
    }
    assert_eq!(seqs(&got), (1..=20).collect::<Vec<_>>());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    writer.await.unwrap();
    // By bytes: 200 payload bytes wanted, 50 per record.
    let writer = trickle(20..30);
    let started = std::time::Instant::now();
    let got = r.next_batch(1000, 200, linger).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!got.is_empty());
    assert_eq!(got[0].seq, 21);
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_returns_without_lingering() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    let mut r = b.reader("dynamiq");
    let started = std::time::Instant::now();
    let got = r
        .next_batch(3, usize::MAX, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_next_batch_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(&config(dir.path()), &["dynamiq"]);
    b.append(vec![payload(0, 10)]).await.unwrap();
    let mut r = b.reader("dynamiq");
    // Cancelled while lingering after having read record 1.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        r.next_batch(10, usize::MAX, Duration::from_secs(5)),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(
        seqs(&r.next_batch(10, usize::MAX, Duration::ZERO).await.unwrap()),
        [1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    let second = Buffer::open(&cfg, &["dynamiq"], &mut Registry::default());
    assert!(
        matches!(second, Err(BufferError::Locked(ref p)) if *p == cfg.path),
        "{second:?}"
    );
    b.close().await.unwrap();
    let (_b, _) = open(&cfg, &["dynamiq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(vec![payload(0, 10)]).await.unwrap();
    let mut r = b.reader("dynamiq");
    drain(&mut r).await;
    r.ack(1).unwrap();
    b.flush().await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cfg.path), 0o700);
    for entry in fs::read_dir(&cfg.path).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_makes_a_loose_buffer_directory_and_its_files_private() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(vec![payload(0, 10)]).await.unwrap();
    b.close().await.unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let seg = segment_files(&cfg.path)[0].clone();
    fs::set_permissions(&cfg.path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&seg, fs::Permissions::from_mode(0o644)).unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 1);
    assert_eq!(mode(&cfg.path), 0o700);
    assert_eq!(mode(&seg), 0o600);
    b.close().await.unwrap();
}

#[test]
fn open_reports_a_real_io_problem_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let cfg = BufferConfig {
        path: file.join("buf"),
        ..config(dir.path())
    };
    let r = Buffer::open(&cfg, &["dynamiq"], &mut Registry::default());
    assert!(matches!(r, Err(BufferError::Io { .. })), "{r:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_policy_fsyncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        fsync: FsyncPolicy::Interval,
        fsync_interval: Duration::from_millis(50),
        ..config(dir.path())
    };
    let fs = FaultFs::default();
    let (b, _) = open_fs(&cfg, &["dynamiq"], &fs);
    for i in 0..20 {
        b.append(vec![payload(i, 10)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let syncs = fs.syncs.load(std::sync::atomic::Ordering::SeqCst);
    assert!(syncs >= 1, "background fsync happened");
    assert!(syncs < 20, "not one per append: {syncs}");
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
async fn drop_oldest_never_deletes_the_active_segment_and_says_full_when_nothing_can_go() {
    let dir = tempfile::tempdir().unwrap();
    // Misconfigured on purpose (config validation requires max_bytes >= 2 * segment_bytes).
    let cfg = BufferConfig {
        max_bytes: 2000,
        ..config(dir.path())
    };
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(vec![payload(0, 1000)]).await.unwrap();
    let err = b.append(vec![payload(1, 1000)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Full { .. }), "{err:?}");
    assert_eq!(b.stats().records, 1);
    assert!(!b.is_writable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_kill_at_any_moment() {
    // A copy of the directory taken while appends are running is what a `kill -9` at that
    // moment leaves behind (the page cache is shared): every append that returned before the
    // copy started must be in it, even with fsync = "never".
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 64 * 1024,
        ..config(dir.path())
    };
    let (b, _) = open(&cfg, &["dynamiq"]);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let (b, acked) = (b.clone(), Arc::clone(&acked));
            tokio::spawn(async move {
                for i in 0..300 {
                    let a = b.append(vec![payload(t * 1000 + i, 300)]).await.unwrap();
                    acked.fetch_max(a.last_seq, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let copy = dir.path().join("copy");
    fs::create_dir(&copy).unwrap();
    let mut before = acked.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        // Everything acknowledged before this point must survive (numbers are handed out in
        // order, so all of 1..=before were acknowledged or are in the same group).
        before = acked.load(std::sync::atomic::Ordering::SeqCst);
        for f in segment_files(&cfg.path) {
            fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
        if before > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cfg2 = BufferConfig {
        path: copy,
        ..cfg.clone()
    };
    let (b2, report) = open(&cfg2, &["dynamiq"]);
    assert_eq!(report.corrupt_records, 0, "only a torn tail is possible");
    let mut r = b2.reader("dynamiq");
    let got = seqs(&drain(&mut r).await);
    assert!(before > 0);
    assert!(
        got.len() as u64 >= before,
        "{} records survived, {before} were acknowledged",
        got.len()
    );
    assert_eq!(got[..before as usize], (1..=before).collect::<Vec<_>>()[..]);
}

mod model {
    //! Random append / read / ack / reopen sequences checked against a plain in-memory queue.

    use proptest::prelude::*;

    use super::*;

    const CONSUMERS: [&str; 2] = ["dynamiq", "otlp"];

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<usize>),
        Read {
            consumer: usize,
            max: usize,
        },
        /// Acknowledge the `back`-th last delivered record (0 = the last one).
        Ack {
            consumer: usize,
            back: usize,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec(0usize..700, 1..5).prop_map(Op::Append),
            3 => (0..2usize, 1..8usize).prop_map(|(consumer, max)| Op::Read { consumer, max }),
            2 => (0..2usize, 0..3usize).prop_map(|(consumer, back)| Op::Ack { consumer, back }),
            1 => Just(Op::Reopen),
        ]
    }

    fn body(i: usize, len: usize) -> Bytes {
        if len == 0 {
            Bytes::new()
        } else {
            payload(i as u64, len)
        }
    }

    async fn run(ops: Vec<Op>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            segment_bytes: 1024,
            fsync: FsyncPolicy::Never,
            ..config(dir.path())
        };
        let mut records: Vec<(u64, Bytes)> = Vec::new();
        let mut acked = [0u64; 2];
        let mut delivered = [0u64; 2];
        let mut last_seq = 0u64;
        let (mut b, _) = open(&cfg, &CONSUMERS);
        let mut readers = CONSUMERS.map(|c| b.reader(c));
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let batch: Vec<Bytes> = sizes
                        .iter()
                        .enumerate()
                        .map(|(k, &n)| body(records.len() + k, n))
                        .collect();
                    let a = b.append(batch.clone()).await.unwrap();
                    assert_eq!(a.first_seq, last_seq + 1, "numbers continue without gaps");
                    assert_eq!(a.last_seq, last_seq + batch.len() as u64);
                    for (k, p) in batch.into_iter().enumerate() {
                        records.push((a.first_seq + k as u64, p));
                    }
                    last_seq = a.last_seq;
                }
                Op::Read { consumer, max } => {
                    let expected: Vec<(u64, Bytes)> = records
                        .iter()
                        .filter(|(s, _)| *s > delivered[consumer])
                        .take(max)
                        .cloned()
                        .collect();
                    if expected.is_empty() {
                        continue; // would wait for an append
                    }
                    let got = readers[consumer]
                        .next_batch(max, usize::MAX, Duration::ZERO)
                        .await
                        .unwrap();
                    let got: Vec<(u64, Bytes)> =
                        got.into_iter().map(|r| (r.seq, r.payload)).collect();
                    assert_eq!(got, expected);
                    delivered[consumer] = got.last().map_or(0, |r| r.0);
                }
                Op::Ack { consumer, back } => {
                    let target = records
                        .iter()
                        .rev()
                        .filter(|(s, _)| *s <= delivered[consumer])
                        .nth(back)
                        .map(|(s, _)| *s);
                    if let Some(target) = target {
                        readers[consumer].ack(target).unwrap();
                        acked[consumer] = acked[consumer].max(target);
                    }
                }
                Op::Reopen => {
                    drop(readers);
                    b.close().await.unwrap();
                    (b, _) = open(&cfg, &CONSUMERS);
                    readers = CONSUMERS.map(|c| b.reader(c));
                    delivered = acked;
                }
            }
            for c in 0..2 {
                let pending = records.iter().filter(|(s, _)| *s > acked[c]).count() as u64;
                assert_eq!(
                    readers[c].pending_records(),
                    pending,
                    "pending of {}",
                    CONSUMERS[c]
                );
            }
        }
        // Acknowledged segments may be gone; nothing unacknowledged is.
        b.flush().await.unwrap();
        let min_acked = acked.iter().copied().filter(|&a| a > 0).min().unwrap_or(0);
        let exported: Vec<(u64, Bytes)> = export(&cfg.path, None)
            .unwrap()
            .map(|r| r.map(|r| (r.seq, r.payload)).unwrap())
            .collect();
        let expected: Vec<(u64, Bytes)> = records
            .into_iter()
            .filter(|(s, _)| *s > min_acked)
            .collect();
        assert_eq!(exported, expected);
        let report = inspect(&cfg.path).unwrap();
        assert_eq!((report.corrupt_records, report.torn_tail_bytes), (0, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn the_buffer_behaves_like_one_queue_per_consumer(ops in prop::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run(ops));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_a_lagging_yielding_consumer_skip_instead_of_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        max_bytes: 3 * SEG,
        when_full: WhenFull::Block,
        ..config(dir.path())
    };
    let (b, _) = open(&cfg, &["dynamiq", "otlp"]);
    b.yield_when_full("otlp");
    let mut primary = b.reader("dynamiq");
    let mut lagging = b.reader("otlp");
    // The primary keeps up; the yielding consumer never acknowledges.
    for i in 0..30 {
        b.append(vec![payload(i, 1000)])
            .await
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        let got = drain(&mut primary).await;
        primary.ack(*seqs(&got).last().unwrap()).unwrap();
    }
    let skipped = dropped(&b, DropReason::OutputLag);
    assert!(skipped >= 21, "skipped {skipped}");
    assert_eq!(dropped(&b, DropReason::DropOldest), 0);
    assert!(b.stats().bytes <= cfg.max_bytes);
    // The lagging consumer resumes with what is left, in order, up to the newest.
    let got = seqs(&drain(&mut lagging).await);
    assert_eq!(got.first().copied(), Some(skipped + 1));
    assert_eq!(*got.last().unwrap(), 30);

    // Once the primary falls behind, the yielding consumer no longer frees anything: `block`
    // refuses as before and nothing the primary has not read is lost.
    let mut refused = None;
    for i in 30..60 {
        if let Err(e) = b.append(vec![payload(i, 1000)]).await {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(AppendError::Full { .. })),
        "{refused:?}"
    );
    let pending = seqs(&drain(&mut primary).await);
    assert_eq!(pending.first().copied(), Some(31));
}

/// Writes `bytes` as segment `id` of a fresh buffer directory (created like the buffer does).
fn craft_segment(cfg: &BufferConfig, id: u64, bytes: &[u8]) {
    crate::private_fs::create_dir_all(&cfg.path).unwrap();
    fs::write(segment::path(&cfg.path, id), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intact_headers_with_an_impossible_sequence_number_or_length_are_corruption() {
    use super::record::{HEADER_LEN_U64, Header, MAX_SEQ, encode_record};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // Checksums right, values wrong: seq u64::MAX and MAX_SEQ + 1 (the next number would
    // wrap), and a length of u32::MAX running far past the file.
    let huge_len = Header {
        len: u32::MAX,
        seq: 3,
        appended_at_ms: 0,
        payload_crc: 0,
    }
    .encode();
    let mut bytes = encode_record(1, 0, b"one");
    bytes.extend(encode_record(u64::MAX, 0, b"wraps"));
    bytes.extend(encode_record(MAX_SEQ + 1, 0, b"too far"));
    bytes.extend(huge_len);
    bytes.extend(encode_record(2, 0, b"two"));
    craft_segment(&cfg, 1, &bytes);
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.records, 2);
    assert!(report.corrupt_records >= 1);
    assert_eq!(
        report.corrupt_bytes,
        bytes.len() as u64 - 2 * (HEADER_LEN_U64 + 3)
    );
    assert!(cfg.path.join("corrupt").is_dir(), "copied aside");
    assert_eq!(b.append(vec![payload(9, 5)]).await.unwrap().first_seq, 3);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_or_segment_name_beyond_max_seq_is_corruption_not_the_next_number() {
    use super::record::MAX_SEQ;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (b, _) = open(&cfg, &["dynamiq"]);
    b.append(payloads(0..3, 10)).await.unwrap();
    b.close().await.unwrap();
    fs::write(cfg.path.join("cursor-dynamiq"), cursor::encode(u64::MAX)).unwrap();
    fs::write(cfg.path.join("cursor-other"), cursor::encode(MAX_SEQ + 1)).unwrap();
    fs::write(segment::path(&cfg.path, u64::MAX), b"").unwrap();
    fs::write(segment::path(&cfg.path, MAX_SEQ + 1), b"").unwrap();
    let (b, report) = open(&cfg, &["dynamiq"]);
    assert_eq!(report.cursors_reset, 1);
    assert_eq!(
        report.ignored_files, 2,
        "segments named past MAX_SEQ left alone"
    );
    assert_eq!(b.append(vec![payload(3, 10)]).await.unwrap().first_seq, 4);
    let mut r = b.reader("dynamiq");
    assert_eq!(seqs(&drain(&mut r).await), [1, 2, 3, 4]);
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

//! Corrupt records, headers, cursors and file names: skipped, counted, copied aside, never fatal.

use super::*;

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

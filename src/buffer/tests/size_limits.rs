//! Size limits: segment rotation, record and batch limits, and the `when_full` policies.

use super::*;

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

//! `Reader::next_batch`: record and byte limits, waiting, lingering and cancellation.

use super::*;

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

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
                let got: Vec<(u64, Bytes)> = got.into_iter().map(|r| (r.seq, r.payload)).collect();
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

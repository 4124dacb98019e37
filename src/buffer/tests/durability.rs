//! Durability: group commit of concurrent appends, the `interval` policy, surviving a kill.

use super::*;

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

//! Splitting a refused request (413, or 400/422 for several runs) until the refused runs are alone.

use super::*;

#[tokio::test]
async fn a_413_halves_the_request_until_it_fits() {
    let m = mock(|req, _| reply(if req.runs().len() > 2 { 413 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["1", "2", "3", "4", "5"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    let sizes: Vec<usize> = m.requests().iter().map(|r| r.runs().len()).collect();
    assert_eq!(sizes, [5, 2, 3, 1, 2]);
    let delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.runs().len() <= 2)
        .flat_map(Req::ids)
        .collect();
    assert_eq!(delivered, ["1", "2", "3", "4", "5"]);
    assert!(h.dead_letters().is_empty());
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains(r#"dynamiq_sidecar_forward_requests_total{outcome="split"} 2"#)
    );
}

fn accepted_ids(m: &Mock) -> Vec<String> {
    m.requests()
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(Req::ids)
        .collect()
}

#[tokio::test]
async fn a_422_for_a_coalesced_batch_isolates_the_rejected_run_and_delivers_every_other() {
    let m = mock(|req, _| {
        if req.ids().iter().any(|id| id.contains("poison")) {
            let mut r = reply(422);
            r.body = r#"{"detail":"bad run"}"#.into();
            r
        } else {
            reply(200)
        }
    })
    .await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.max_delay = Duration::from_millis(50)
    });
    // Two clients interleaved in one buffer batch; the poisoned run is client a's.
    let runs = [
        ("a1", "key-a"),
        ("b1", "key-b"),
        ("a2", "key-a"),
        ("poison", "key-a"),
        ("b2", "key-b"),
        ("a3", "key-a"),
        ("b3", "key-b"),
        ("a4", "key-a"),
    ];
    for (id, key) in runs {
        h.buffer.push(&run(id), Some(key));
    }
    wait_until("all acked", || h.buffer.acked() == 8).await;
    let mut delivered = accepted_ids(&m);
    delivered.sort();
    assert_eq!(delivered, ["a1", "a2", "a3", "a4", "b1", "b2", "b3"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["run"]["id"], "poison");
    assert_eq!(dl[0]["status"], 422);
    assert_eq!(dl[0]["response"], r#"{"detail":"bad run"}"#);
    // Bounded: a request of n runs costs at most 2n - 1 requests.
    let requests = m.requests().len();
    assert!(requests < 2 * 8, "{requests}");
    let h = h.stop().await;
    assert!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_splits_total{cause="rejected"}"#
        ) >= 2
    );
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"}"#
        ),
        1
    );
}

#[tokio::test]
async fn the_split_sub_requests_go_through_the_retry_policy() {
    // The first single-run request of the split meets a 503 once: it is retried, not dropped.
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = failed_once.clone();
    let m = mock(move |req, _| {
        let ids = req.ids();
        if ids.len() > 1 && ids.iter().any(|id| id == "poison") {
            return reply(400);
        }
        if ids == ["good"] && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return reply(503);
        }
        reply(if ids == ["poison"] { 400 } else { 200 })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_delay = Duration::from_millis(50)
    });
    h.buffer.push(&run("good"), None);
    h.buffer.push(&run("poison"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let sent: Vec<Vec<String>> = m.requests().iter().map(Req::ids).collect();
    assert_eq!(
        sent,
        [
            vec!["good", "poison"],
            vec!["good"],
            vec!["good"],
            vec!["poison"]
        ]
    );
    assert_eq!(h.dead_letters().len(), 1);
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_retries_total"), 1);
}

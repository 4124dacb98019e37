//! Holds for the key: the sidecar key refused or missing, and per client key in passthrough mode.

use super::*;

#[tokio::test]
async fn a_401_holds_delivery_until_the_key_changes_then_resumes() {
    let m = mock(|req, _| {
        reply(if req.auth.as_deref() == Some("Bearer good") {
            200
        } else {
            401
        })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("revoked"), |_| {});
    h.buffer.push(&run("1"), None);
    h.buffer.push(&run("2"), None);
    wait_until("readiness cleared", || {
        !h.readiness.is_set(Latch::UpstreamAuthorized)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        m.requests().len(),
        1,
        "held: no retry before auth_hold_retry or a key change"
    );
    assert_eq!(h.buffer.acked(), 0, "nothing acked while held");
    assert!(
        h.dead_letters().is_empty(),
        "nothing dead-lettered while held"
    );
    assert!(h.metrics().contains("dynamiq_sidecar_forward_auth_hold 1"));

    h.key.set(Some(Secret::new("good".into())));
    wait_until("all acked", || h.buffer.acked() == 2).await;
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].ids(), ["1", "2"]);
    let h = h.stop().await;
    assert!(h.metrics().contains("dynamiq_sidecar_forward_auth_hold 0"));
}

#[tokio::test]
async fn a_403_hold_retries_after_auth_hold_retry_even_without_a_key_change() {
    let m = mock(|_, n| reply(if n == 0 { 403 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.auth_hold_retry = Duration::from_millis(100)
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(100));
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    h.stop().await;
}

#[tokio::test]
async fn no_key_at_all_holds_delivery_until_a_key_appears() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, None, |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("readiness cleared", || {
        !h.readiness.is_set(Latch::UpstreamAuthorized)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(m.requests().is_empty());
    h.key.set(Some(Secret::new("new".into())));
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(m.requests()[0].auth.as_deref(), Some("Bearer new"));
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    h.stop().await;
}

/// A mock that answers 401 to `Bearer key-a` while `reject_a` is set, 200 otherwise.
async fn mock_rejecting_key_a(reject_a: Arc<std::sync::atomic::AtomicBool>) -> Mock {
    mock(move |req, _| {
        let a = req.auth.as_deref() == Some("Bearer key-a");
        reply(if a && reject_a.load(std::sync::atomic::Ordering::SeqCst) {
            401
        } else {
            200
        })
    })
    .await
}

fn ids_sent_with(m: &Mock, auth: &str, status_ok: impl Fn(&Req) -> bool) -> Vec<String> {
    m.requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some(auth) && status_ok(r))
        .flat_map(Req::ids)
        .collect()
}

#[tokio::test]
async fn passthrough_a_401_holds_only_that_keys_runs_and_releases_them_in_order() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(80);
    });
    for (id, key) in [
        ("a1", "key-a"),
        ("b1", "key-b"),
        ("a2", "key-a"),
        ("b2", "key-b"),
    ] {
        h.buffer.push(&run(id), Some(key));
    }
    wait_until("b's runs delivered", || {
        ids_sent_with(&m, "Bearer key-b", |_| true) == ["b1", "b2"]
    })
    .await;
    // More of both while a is held: b's flow, a's wait behind a1 and a2.
    h.buffer.push(&run("a3"), Some("key-a"));
    h.buffer.push(&run("b3"), Some("key-b"));
    wait_until("b3 delivered", || {
        ids_sent_with(&m, "Bearer key-b", |_| true).len() == 3
    })
    .await;
    wait_until("a retried with backoff", || {
        m.requests()
            .iter()
            .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
            .count()
            >= 3
    })
    .await;
    assert_eq!(h.buffer.acked(), 0, "nothing passes the first held run");
    assert!(
        h.readiness.is_set(Latch::UpstreamAuthorized),
        "one client's bad key does not fail readiness"
    );
    assert!(h.dead_letters().is_empty());
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_keys"), 1);
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_runs"), 3);
    // A probe is one request, not one per parked run.
    let a_requests: Vec<usize> = m
        .requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
        .map(|r| r.runs().len())
        .collect();
    assert!(a_requests.iter().skip(1).all(|&n| n >= 2), "{a_requests:?}");

    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("all acked", || h.buffer.acked() == 6).await;
    let a_delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
        .last()
        .map(Req::ids)
        .unwrap();
    assert_eq!(
        a_delivered,
        ["a1", "a2", "a3"],
        "held runs leave in buffer order"
    );
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_keys"), 0);
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_runs"), 0);
    assert!(!h.metrics().contains("key-a"));
}

#[tokio::test]
async fn held_runs_at_their_bound_pause_reading_until_the_key_works_again() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(50);
        f.auth_hold_max_bytes = 200;
        f.max_runs = 5;
    });
    // 10 runs of a (~20 bytes each) fill the bound; b's runs behind them must wait.
    for i in 0..12 {
        h.buffer.push(&run(&format!("a{i:02}")), Some("key-a"));
    }
    wait_until("the pause", || {
        metric(&h, "dynamiq_sidecar_forward_auth_hold_bound_pauses_total") == 1
    })
    .await;
    h.buffer.push(&run("b1"), Some("key-b"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        ids_sent_with(&m, "Bearer key-b", |_| true).is_empty(),
        "nothing more is read at the bound"
    );
    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("all acked", || h.buffer.acked() == 13).await;
    let accepted_a = ids_sent_with(&m, "Bearer key-a", |r| r.status == 200);
    let expected: Vec<String> = (0..12).map(|i| format!("a{i:02}")).collect();
    assert_eq!(accepted_a, expected, "nothing lost, buffer order kept");
    assert_eq!(ids_sent_with(&m, "Bearer key-b", |_| true), ["b1"]);
    h.stop().await;
}

#[tokio::test]
async fn drain_waits_for_a_held_key_and_returns_once_it_is_released() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let mut h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(50);
    });
    h.buffer.push(&run("a1"), Some("key-a"));
    h.buffer.push(&run("b1"), Some("key-b"));
    wait_until("b delivered", || {
        !ids_sent_with(&m, "Bearer key-b", |_| true).is_empty()
    })
    .await;
    h.drain.cancel();
    let mut handle = h.handle.take().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut handle)
            .await
            .is_err(),
        "drain does not return while a run is held"
    );
    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("drain returns once the key works")
        .unwrap();
    assert_eq!(h.buffer.acked(), 2);
}

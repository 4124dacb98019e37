//! Retryable failures (503, 429 with `Retry-After`, refused connections, timeouts) and `forward.max_retries`.

use super::*;

#[tokio::test]
async fn a_503_is_retried_until_200_and_delivered_exactly_once_in_order() {
    let m = mock(|_, n| reply(if n < 3 { 503 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["1", "2", "3"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 4, "three 503s then one 200");
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "the same request is retried"
    );
    assert_eq!(reqs[3].ids(), ["1", "2", "3"]);
    assert_eq!(h.buffer.ack_calls(), vec![3]);

    // Later runs follow, in order, and nothing is sent twice once accepted.
    for id in ["4", "5"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    let reqs = m.requests();
    let delivered: Vec<String> = reqs[3..].iter().flat_map(Req::ids).collect();
    assert_eq!(delivered, ["1", "2", "3", "4", "5"]);
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_forward_retries_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dynamiq_sidecar_forward_requests_total{outcome="retry"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_429_retry_after_is_a_floor_on_the_next_attempt() {
    let m = mock(|_, n| {
        if n == 0 {
            let mut r = reply(429);
            r.headers.push(("retry-after", "2".into()));
            r
        } else {
            reply(200)
        }
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before the Retry-After floor"
    );
    assert!(gap < Duration::from_millis(2500), "{gap:?}");
    h.stop().await;
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_collector_appears() {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let h = start(
        &format!("http://{addr}"),
        AuthMode::SidecarKey,
        Some("k"),
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    h.buffer.push(&run("2"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.buffer.acked(), 0);
    let m = mock_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| reply(200),
    )
    .await;
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].ids(), ["1", "2"]);
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        !metrics.contains("dynamiq_sidecar_forward_retries_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn max_retries_dead_letters_as_gave_up_then_acks() {
    let m = mock(|_, _| reply(503)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_retries = 2
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(m.requests().len(), 3, "one attempt plus two retries");
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "gave_up");
    assert_eq!(dl[0]["status"], 503);
    h.stop().await;
}

#[tokio::test]
async fn a_request_timeout_is_retried() {
    let m = mock(|_, n| {
        let mut r = reply(200);
        if n == 0 {
            r.delay = Duration::from_millis(600);
        }
        r
    })
    .await;
    let upstream_timeout = Duration::from_millis(150);
    let h = start_with(
        &m.url(),
        AuthMode::SidecarKey,
        Some("k"),
        upstream_timeout,
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2, "the timed-out request is sent again");
    assert_eq!(reqs[1].ids(), ["1"]);
    h.stop().await;
}

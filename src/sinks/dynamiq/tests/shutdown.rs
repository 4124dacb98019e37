//! Drain and stop: what returns when, and that nothing unresolved is acknowledged.

use super::*;

#[tokio::test]
async fn drain_returns_once_nothing_is_pending() {
    let m = mock(|_, n| {
        let mut r = reply(if n == 0 { 503 } else { 200 });
        r.delay = Duration::from_millis(20);
        r
    })
    .await;
    let mut h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for i in 0..3 {
        h.buffer.push(&run(&i.to_string()), None);
    }
    h.drain.cancel();
    let handle = h.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("drain returns")
        .unwrap();
    assert_eq!(
        h.buffer.acked(),
        3,
        "drain delivered everything before returning"
    );
}

#[tokio::test]
async fn drain_on_an_idle_forwarder_returns_without_waiting_for_stop() {
    let m = mock(|_, _| reply(200)).await;
    let mut h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_delay = Duration::from_millis(100)
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await; // now waiting in an empty read
    let began = Instant::now();
    h.drain.cancel();
    let handle = h.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("drain returns")
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(400),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn stop_returns_promptly_in_the_middle_of_a_retry_sleep() {
    let m = mock(|_, _| reply(503)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.retry_initial = Duration::from_secs(30);
        f.retry_max = Duration::from_secs(60);
    });
    h.buffer.push(&run("1"), None);
    wait_until("first attempt", || !m.requests().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let began = Instant::now();
    let h = h.stop().await;
    assert!(began.elapsed() < Duration::from_millis(500));
    assert_eq!(
        h.buffer.acked(),
        0,
        "an undelivered run stays in the buffer"
    );
}

#[tokio::test]
async fn stop_abandons_an_in_flight_request_without_acking() {
    let m = mock(|_, _| {
        let mut r = reply(200);
        r.delay = Duration::from_secs(10);
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("request in flight", || !m.requests().is_empty()).await;
    let began = Instant::now();
    let h = h.stop().await;
    assert!(began.elapsed() < Duration::from_millis(500));
    assert_eq!(h.buffer.acked(), 0);
}

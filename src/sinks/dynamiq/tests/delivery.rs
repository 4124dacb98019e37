//! Delivery on the happy path: acknowledgement, byte-identical bodies, keys per mode, request limits, undecodable records.

use super::*;

#[test]
fn the_forwarder_future_is_send_so_the_app_can_spawn_it() {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(clippy::diverging_sub_expression, unreachable_code, unused_variables)]
    fn check(f: Forwarder) {
        let fut = f.run(CancellationToken::new(), CancellationToken::new());
        assert_send(&fut);
    }
    let _ = check;
}

#[tokio::test]
async fn a_2xx_acks_the_batch_and_the_body_is_byte_identical() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("sidecar-key"), |_| {});
    let runs = [
        r#"{"id":"a","x":1.50,"big":123456789012345678901234567890,"unknown":{"z":1,"a":[1E+300,2.0e-0]}}"#,
        r#"{ "id" : "b" , "f": -0.0 }"#,
        r#"{"id":"c"}"#,
    ];
    for r in runs {
        h.buffer.push(r, None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    let body: Vec<u8> = reqs.iter().flat_map(|r| r.body.to_vec()).collect();
    if reqs.len() == 1 {
        assert_eq!(
            body,
            format!(r#"{{"runs":[{},{},{}]}}"#, runs[0], runs[1], runs[2]).into_bytes()
        );
    }
    let ids: Vec<String> = reqs.iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for r in &reqs {
        assert_eq!(r.auth.as_deref(), Some("Bearer sidecar-key"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_forward_runs_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dynamiq_sidecar_forward_requests_total{outcome="success"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("sidecar-key"));
}

#[tokio::test]
async fn passthrough_groups_runs_by_client_key_and_sends_each_clients_key() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |_| {});
    h.buffer.push(&run("a1"), Some("key-a"));
    h.buffer.push(&run("b1"), Some("key-b"));
    h.buffer.push(&run("a2"), Some("key-a"));
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let mut by_key: Vec<(String, Vec<String>)> = m
        .requests()
        .iter()
        .map(|r| (r.auth.clone().unwrap(), r.ids()))
        .collect();
    by_key.sort();
    // (The first read may hold only the first run; either way every request has one key.)
    let merged = |k: &str| -> Vec<String> {
        by_key
            .iter()
            .filter(|(a, _)| a == k)
            .flat_map(|(_, ids)| ids.clone())
            .collect()
    };
    assert_eq!(merged("Bearer key-a"), ["a1", "a2"]);
    assert_eq!(merged("Bearer key-b"), ["b1"]);
    assert_eq!(by_key.len(), m.requests().len());
    h.stop().await;
}

#[tokio::test]
async fn sidecar_key_mode_sends_the_sidecar_key_not_the_clients() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("sidecar"), |_| {});
    h.buffer.push(&run("1"), Some("client-key"));
    h.buffer.push(&run("2"), Some("other-client"));
    wait_until("all acked", || h.buffer.acked() == 2).await;
    for r in m.requests() {
        assert_eq!(r.auth.as_deref(), Some("Bearer sidecar"));
    }
    h.stop().await;
}

#[tokio::test]
async fn requests_respect_max_runs() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 2
    });
    for i in 0..5 {
        h.buffer.push(&run(&i.to_string()), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    assert!(m.requests().iter().all(|r| r.runs().len() <= 2));
    let ids: Vec<String> = m.requests().iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    h.stop().await;
}

#[tokio::test]
async fn an_undecodable_record_is_skipped_and_acked_past() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push_raw(b"\x09garbage");
    h.buffer.push(&run("2"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let ids: Vec<String> = m.requests().iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["2"]);
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains("dynamiq_sidecar_forward_corrupt_records_total 1")
    );
}

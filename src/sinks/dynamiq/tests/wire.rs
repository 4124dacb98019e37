//! On the wire: gzip bodies and one pooled connection.

use super::*;

#[tokio::test]
async fn gzip_bodies_carry_content_encoding_and_limits_count_uncompressed_bytes() {
    let m = mock(|_, n| reply(if n == 0 { 413 } else { 200 })).await;
    let h = start_opts(
        &m.url(),
        Some("k"),
        |u| u.compression = Compression::Gzip,
        |f| f.max_bytes = 200,
        None,
    );
    let runs: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"id":"r{i}","pad":"{}"}}"#, "x".repeat(40)))
        .collect();
    for r in &runs {
        h.buffer.push(r, None);
    }
    wait_until("acked", || h.buffer.acked() == 6).await;
    let reqs = m.requests();
    for r in &reqs {
        assert_eq!(r.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        // The uncompressed body respects max_bytes although the wire body is far smaller.
        assert!(r.json_body().len() <= 200, "{}", r.json_body().len());
    }
    // The first request was refused with 413 and split; every run arrived, in order.
    let accepted: Vec<String> = reqs[1..].iter().flat_map(Req::ids).collect();
    assert_eq!(accepted, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    assert!(reqs[1].runs().len() < reqs[0].runs().len());
    let h = h.stop().await;
    assert!(
        metric(&h, "dynamiq_sidecar_forward_wire_bytes_total")
            < metric(&h, "dynamiq_sidecar_forward_bytes_total")
    );
}

#[tokio::test]
async fn one_pooled_connection_is_reused_across_requests() {
    use axum::extract::ConnectInfo;
    let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = peers.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(peer);
                "{}"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let h = start(
        &format!("http://{addr}"),
        AuthMode::SidecarKey,
        Some("k"),
        |_| {},
    );
    for i in 0..5u64 {
        h.buffer.push(&run(&i.to_string()), None);
        wait_until("acked", || h.buffer.acked() == i + 1).await;
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 5);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "a new connection per request: {peers:?}"
    );
}

//! Duplicate suppression: runs already delivered are acknowledged without being sent, and never lost.

use super::*;

#[tokio::test]
async fn a_run_already_delivered_is_acked_without_being_sent_and_a_changed_one_is_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b"}"#, None);
    wait_until("first flush acked", || h.buffer.acked() == 2).await;
    // The SDK's next flush: the same runs again (the same bytes), one of them finished now,
    // plus a new one.
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b","status":"succeeded"}"#, None);
    h.buffer.push(r#"{"id":"c"}"#, None);
    wait_until("second flush acked", || h.buffer.acked() == 5).await;
    // And the same again: nothing new at all, acked without a request.
    let requests_before = m.requests().len();
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b","status":"succeeded"}"#, None);
    wait_until("third flush acked", || h.buffer.acked() == 7).await;
    assert_eq!(m.requests().len(), requests_before, "nothing new to send");
    // A copy formatted differently is not recognised: it is sent again, never lost.
    h.buffer
        .push("{ \"id\" : \"a\",\n \"status\" : null }", None);
    wait_until("re-formatted copy acked", || h.buffer.acked() == 8).await;
    assert_eq!(sent_ids(&m), ["a", "b", "b", "c", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_suppressed_runs_total"),
        3
    );
    // Each suppressed run counts its bytes plus the comma it would have cost.
    let saved: usize = [
        r#"{"id":"a","status":null}"#,
        r#"{"id":"a","status":null}"#,
        r#"{"id":"b","status":"succeeded"}"#,
    ]
    .iter()
    .map(|r| r.len() + 1)
    .sum();
    let saved = saved as u64;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_saved_bytes_total"),
        saved
    );
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_runs_total"), 5);
}

#[tokio::test]
async fn identical_copies_inside_one_batch_are_sent_once() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    // Pushed before the forwarder task first runs: one batch.
    for r in [
        r#"{"id":"a"}"#,
        r#"{"id":"a"}"#,
        r#"{"id":"b"}"#,
        r#"{"id":"a"}"#,
    ] {
        h.buffer.push(r, None);
    }
    wait_until("all acked", || h.buffer.acked() == 4).await;
    assert_eq!(m.requests().len(), 1);
    assert_eq!(sent_ids(&m), ["a", "b"]);
}

#[tokio::test]
async fn an_undelivered_copy_suppresses_nothing_retries_and_rejections_alike() {
    // 503 twice, then 422 (dead-lettered), then 200.
    let m = mock(|_, n| {
        reply(match n {
            0 | 1 => 503,
            2 => 422,
            _ => 200,
        })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("dead-lettered and acked", || h.buffer.acked() == 1).await;
    // Never accepted: the same run again is sent again.
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    assert_eq!(sent_ids(&m), ["a", "a", "a", "a"]);
    // Now accepted: a third copy is suppressed.
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(m.requests().len(), 4);
    let h = h.stop().await;
    assert_eq!(h.dead_letters().len(), 1);
}

#[tokio::test]
async fn an_abandoned_request_records_nothing() {
    let m = mock(|_, n| {
        let mut r = reply(200);
        if n == 0 {
            r.delay = Duration::from_secs(10);
        }
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("dedup.snapshot");
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("request in flight", || !m.requests().is_empty()).await;
    let _ = h.stop().await;
    // The restarted forwarder (same snapshot) delivers the run again.
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap));
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(sent_ids(&m), ["a", "a"]);
}

#[tokio::test]
async fn dedup_entries_zero_forwards_every_copy() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.dedup_entries = 0;
    });
    h.buffer.push(r#"{"id":"a"}"#, None);
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(sent_ids(&m), ["a", "a", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_suppressed_runs_total"),
        0
    );
}

#[tokio::test]
async fn the_memory_is_bounded_evictions_are_counted_and_an_evicted_run_is_sent_again() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.dedup_entries = 2;
    });
    for id in ["a", "b", "c"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("acked", || h.buffer.acked() == 3).await;
    h.buffer.push(&run("c"), None); // remembered
    h.buffer.push(&run("a"), None); // evicted: sent again
    wait_until("acked", || h.buffer.acked() == 5).await;
    assert_eq!(sent_ids(&m), ["a", "b", "c", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_evictions_total"),
        2
    );
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_dedup_entries"), 2);
}

#[tokio::test]
async fn passthrough_copies_under_different_client_keys_are_both_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::Passthrough, None, |_| {});
    h.buffer.push(&run("a"), Some("key-1"));
    wait_until("acked", || h.buffer.acked() == 1).await;
    h.buffer.push(&run("a"), Some("key-2"));
    h.buffer.push(&run("a"), Some("key-1"));
    wait_until("acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert_eq!(sent_ids(&m), ["a", "a"]);
    assert_eq!(reqs[1].auth.as_deref(), Some("Bearer key-2"));
    let h = h.stop().await;
    assert!(!h.metrics().contains("key-1") && !h.metrics().contains("key-2"));
}

#[tokio::test]
async fn the_memory_survives_a_restart_through_its_snapshot_and_a_corrupt_one_is_ignored() {
    let m = mock(|_, _| reply(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("state").join("dedup.snapshot");
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("a"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let _ = h.stop().await;
    assert!(snap.exists(), "saved when run returns");

    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("a"), None);
    h.buffer.push(&run("b"), None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    assert_eq!(sent_ids(&m), ["a", "b"]);
    let _ = h.stop().await;

    // Damaged: ignored, memory starts empty, the run is sent again (never lost).
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("b"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(sent_ids(&m), ["a", "b", "b"]);
}

#[tokio::test]
async fn runs_converted_from_otlp_spans_are_never_suppressed() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    // A UUIDv8 id written first: what the converter makes of a foreign span.
    let converted = r#"{"id":"0196e6a4-1f2b-8c3d-9e4f-5a6b7c8d9e0f","name":"chat"}"#;
    h.buffer.push(converted, None);
    h.buffer.push(converted, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    h.buffer.push(converted, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(sent_ids(&m).len(), 3);
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_dedup_entries"), 0);
}

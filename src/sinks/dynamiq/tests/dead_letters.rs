//! Dead letters: what is written, with which reason and answer, and delivery going on when the store fails or fills.

use super::*;

#[tokio::test]
async fn a_413_for_a_single_run_dead_letters_it_as_too_large() {
    let m = mock(|req, _| {
        let mut r = reply(if req.ids().contains(&"big".to_string()) {
            413
        } else {
            200
        });
        r.body = "payload too large".into();
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["a", "big", "c"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.auth.is_some())
        .flat_map(|r| {
            if r.ids().contains(&"big".to_string()) {
                vec![]
            } else {
                r.ids()
            }
        })
        .collect();
    assert_eq!(delivered, ["a", "c"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "too_large");
    assert_eq!(dl[0]["status"], 413);
    assert_eq!(dl[0]["run"]["id"], "big");
    h.stop().await;
}

#[tokio::test]
async fn a_run_larger_than_max_bytes_is_dead_lettered_without_being_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_bytes = 1024
    });
    h.buffer.push(&run("1"), None);
    h.buffer.push(
        &format!(r#"{{"id":"huge","pad":"{}"}}"#, "x".repeat(2000)),
        None,
    );
    h.buffer.push(&run("3"), None);
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert!(reqs.iter().all(|r| r.body.len() <= 1024));
    let sent: Vec<String> = reqs.iter().flat_map(Req::ids).collect();
    assert_eq!(sent, ["1", "3"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "too_large");
    assert!(dl[0]["status"].is_null());
    h.stop().await;
}

#[tokio::test]
async fn a_422_dead_letters_the_runs_with_the_answer_then_acks() {
    let m = mock(|_, _| {
        let mut r = reply(422);
        r.body = r#"{"error":"invalid run"}"#.into();
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    let exact = r#"{"id":"1","n":1.50,"big":123456789012345678901234567890}"#;
    h.buffer.push(exact, None);
    h.buffer.push(&run("2"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let sizes: Vec<usize> = m.requests().iter().map(|r| r.runs().len()).collect();
    assert_eq!(
        sizes,
        [2, 1, 1],
        "split down to single runs, and a rejected single run is not retried"
    );
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 2);
    for d in &dl {
        assert_eq!(d["reason"], "rejected");
        assert_eq!(d["status"], 422);
        assert_eq!(d["response"], r#"{"error":"invalid run"}"#);
    }
    let file = std::fs::read_dir(h.dl_dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(&format!(r#""run":{exact}"#)),
        "run stored verbatim: {text}"
    );
    let summary = crate::deadletter::summarize(h.dl_dir.path()).unwrap();
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.by_status.get(&422), Some(&2));
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains(r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"} 2"#)
    );
}

#[tokio::test]
async fn a_collector_echoing_the_key_does_not_leak_it_into_the_dead_letter_store() {
    let m = mock(|req, _| {
        let mut r = reply(400);
        r.body = format!("bad request from {}", req.auth.clone().unwrap_or_default());
        r
    })
    .await;
    let h = start(
        &m.url(),
        AuthMode::SidecarKey,
        Some("sk-top-secret"),
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let dl = h.dead_letters();
    assert_eq!(dl[0]["response"], "bad request from Bearer [redacted]");
    h.stop().await;
}

/// A mock that answers 422 to any request holding a run whose id starts with `prefix`.
async fn mock_rejecting_runs_named(prefix: &'static str) -> Mock {
    mock(move |req, _| {
        reply(if req.ids().iter().any(|id| id.starts_with(prefix)) {
            422
        } else {
            200
        })
    })
    .await
}

#[tokio::test]
async fn a_failing_dead_letter_write_is_counted_and_delivery_goes_on() {
    let m = mock_rejecting_runs_named("bad").await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 1
    });
    // The dead-letter directory replaced by a file: no dead-letter file can be created.
    let dir = h.dl_dir.path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    for id in ["good1", "bad1", "good2", "bad2", "good3"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    assert_eq!(sent_ids(&m).len(), 5, "every run was sent once");
    let good: Vec<String> = sent_ids(&m)
        .into_iter()
        .filter(|id| id.starts_with("good"))
        .collect();
    assert_eq!(good, ["good1", "good2", "good3"]);
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    h.buffer.push(&run("bad3"), None);
    wait_until("acked", || h.buffer.acked() == 6).await;
    assert_eq!(
        h.dead_letters().len(),
        1,
        "written again once the store works"
    );
    let h = h.stop().await;
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="write_failed"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"}"#
        ),
        3
    );
}

#[tokio::test]
async fn an_overflowing_dead_letter_store_drops_its_oldest_and_delivery_goes_on() {
    let m = mock_rejecting_runs_named("bad").await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 1;
        f.dead_letter_max_bytes = 2048;
    });
    for i in 0..60 {
        h.buffer.push(&run(&format!("bad{i:02}")), None);
        h.buffer.push(&run(&format!("good{i:02}")), None);
    }
    wait_until("all acked", || h.buffer.acked() == 120).await;
    let good = sent_ids(&m)
        .into_iter()
        .filter(|id| id.starts_with("good"))
        .count();
    assert_eq!(good, 60);
    let kept = h.dead_letters();
    let bytes: u64 = std::fs::read_dir(h.dl_dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 2048, "{bytes}");
    assert_eq!(
        kept.last().unwrap()["run"]["id"],
        "bad59",
        "the newest are kept"
    );
    let h = h.stop().await;
    let evicted = metric(
        &h,
        r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="evicted"}"#,
    );
    assert_eq!(
        evicted + kept.len() as u64,
        60,
        "every dead letter kept or counted"
    );
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dead_letter_bytes"),
        bytes
    );
}

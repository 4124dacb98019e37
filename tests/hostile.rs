//! Hostile clients and the secrets sweep: slowloris headers, trickled bodies, connection floods,
//! and a run through every error path with a recognisable key that must never surface.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::batches;
use support::{MockCollector, MockResponse, Sidecar};

const KEY: &str = "sk-HOSTILE-RECOGNISABLE-KEY-4242";

fn good_post(sidecar: &Sidecar) -> u16 {
    sidecar
        .post_runs(&batches::batch(&format!("g{}", fastrand::u32(..)), 1))
        .0
}

/// Scenario: 40 clients send half a request line and then nothing, while a normal client posts.
/// Guarantees: the normal client is served at once; the silent connections are closed once the
/// header timeout passes.
#[test]
fn slowloris_clients_neither_block_others_nor_stay_forever() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.request_timeout", "1s")
        .start();
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(sidecar.http_addr()).unwrap();
            s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    assert_eq!(good_post(&sidecar), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal request waited behind slow clients"
    );
    std::thread::sleep(Duration::from_millis(2500));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        // Closed by the server: EOF (0), or a 408 response then EOF; never a hang.
        let n = s
            .read(&mut buf)
            .expect("the slow connection was closed, not left hanging");
        if n > 0 {
            assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
}

/// Scenario: a client declares a body and trickles it slower than the request timeout allows.
/// Guarantees: it gets a JSON 408 (or is cut off), nothing is stored, others are unaffected.
#[test]
fn a_trickled_body_times_out_without_storing_anything() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.request_timeout", "1s")
        .start();
    let body = serde_json::to_vec(&batches::batch("trickle", 1)).unwrap();
    let mut s = TcpStream::connect(sidecar.http_addr()).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..10]).unwrap();
    assert_eq!(good_post(&sidecar), 200, "others are served meanwhile");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    if !text.is_empty() {
        assert!(text.contains(r#""code":"request_timeout""#), "{text}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !collector
            .accepted_run_ids()
            .iter()
            .any(|id| id.starts_with("trickle")),
        "a half-received batch was forwarded"
    );
}

/// Scenario: 300 idle connections against `max_connections = 64`. Guarantees: the process stays
/// up and a normal request is served once idle connections time out.
#[test]
fn a_connection_flood_is_bounded_and_the_sidecar_recovers() {
    let collector = MockCollector::start();
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("ingest.max_connections", 64)
        .set("ingest.request_timeout", "1s")
        .start();
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(sidecar.http_addr()).ok())
        .collect();
    assert!(flood.len() > 64);
    let started = Instant::now();
    assert_eq!(good_post(&sidecar), 200);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(sidecar.is_running());
    drop(flood);
    assert_eq!(good_post(&sidecar), 200);
}

/// Scenario: one sidecar walks every error path with a recognisable key — bad input, 401 from
/// the collector, a 422 dead letter, 503 retries, a restart, the buffer tools.
/// Guarantees: the key appears in no log line, metric, error body, admin answer, tool output or
/// file on disk.
#[test]
fn the_key_never_appears_in_logs_metrics_errors_tool_output_or_files() {
    let collector = MockCollector::start();
    collector.push_responses([
        MockResponse::status(503),
        MockResponse::status(401).with_body(&format!(r#"{{"detail":"bad key {KEY}"}}"#)),
        MockResponse::status(422).with_body(&format!(r#"{{"detail":"echo {KEY}"}}"#)),
    ]);
    let mut sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .set("forward.auth_hold_retry", "200ms")
        .start();
    let mut surfaced = Vec::new();
    for body in [
        &b"{not json"[..],
        br#"{"runs":[]}"#,
        br#"{"runs":[{"id":1}]}"#,
    ] {
        let r = sidecar.request(
            "POST",
            "/v1/traces",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {KEY}")),
            ],
            body,
        );
        assert_eq!(r.status, 400);
        surfaced.push(r.text());
    }
    for i in 0..3 {
        assert_eq!(
            sidecar
                .post_runs(&batches::batch(&format!("sweep{i}"), 2))
                .0,
            200
        );
    }
    support::wait_until(
        "the scripted answers to be used",
        Duration::from_secs(20),
        || collector.trace_requests().len() >= 3,
    );
    assert_eq!(sidecar.post_runs(&batches::batch("after", 1)).0, 200);
    support::wait_until("delivery after the errors", Duration::from_secs(20), || {
        collector
            .accepted_run_ids()
            .contains(&"after-0".to_string())
    });
    for path in ["/metrics", "/readyz", "/healthz", "/nope"] {
        surfaced.push(sidecar.request("GET", path, &[], &[]).text());
    }
    sidecar.terminate();
    for args in [
        &["check-config"][..],
        &["buffer", "inspect", "--json"],
        &["buffer", "export"],
    ] {
        let out = std::process::Command::new(support::sidecar::bin())
            .args(args)
            .arg("--config")
            .arg(sidecar.config_path())
            .env("DYNAMIQ_ACCESS_KEY", KEY)
            .output()
            .unwrap();
        surfaced.push(String::from_utf8_lossy(&out.stdout).to_string());
        surfaced.push(String::from_utf8_lossy(&out.stderr).to_string());
    }
    surfaced.push(sidecar.logs());
    for (i, text) in surfaced.iter().enumerate() {
        assert!(
            !text.contains(KEY),
            "the key surfaced in output #{i}:\n{text}"
        );
    }
    let mut files = vec![sidecar.data_dir().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "the key is stored in {}",
                path.display()
            );
        }
    }
}

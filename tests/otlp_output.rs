//! OTLP output (docs/http-contract.md §11): every run is also exported as an OTLP span from the same disk
//! buffer through its own cursor. A second sidecar (B) plays the OTLP backend: it converts the
//! spans back into runs and forwards them to its own mock collector, so the round trip is
//! checked end to end (run → span → run is exact).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::sidecar::free_port;
use support::tls_proxy::{TlsProxy, tls_fixture};
use support::{MockCollector, MockResponse, Sidecar, wait_until};

const KEY: &str = "sk-otlp-output-test-key-5e27";
const SUCCESS: &[u8] = include_bytes!("fixtures/workflow-success.json");
const WAIT: Duration = Duration::from_secs(30);

fn fixture() -> Value {
    serde_json::from_slice(SUCCESS).expect("fixture is JSON")
}

fn by_id(runs: &[Value]) -> HashMap<String, Value> {
    runs.iter()
        .map(|r| (r["id"].as_str().expect("run id").to_string(), r.clone()))
        .collect()
}

fn posted_runs() -> Vec<Value> {
    fixture()["runs"].as_array().expect("runs").clone()
}

/// A's Dynamiq collector gets the runs, B's collector gets the same runs back from the spans.
fn assert_round_trip(a_collector: &MockCollector, b_collector: &MockCollector) {
    let posted = posted_runs();
    wait_until("delivery to A's Dynamiq collector", WAIT, || {
        a_collector.accepted_runs().len() >= posted.len()
    });
    assert_eq!(by_id(&a_collector.accepted_runs()), by_id(&posted));
    wait_until("runs exported over OTLP to B", WAIT, || {
        b_collector.accepted_runs().len() >= posted.len()
    });
    let received = b_collector.accepted_runs();
    assert_eq!(received.len(), posted.len(), "{}", b_collector.summary());
    assert_eq!(by_id(&received), by_id(&posted));
}

#[test]
fn runs_are_exported_over_otlp_http_and_round_trip_exactly() {
    let b_collector = MockCollector::start();
    let b = Sidecar::builder(&b_collector.url()).access_key(KEY).start();
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set("outputs.otlp.endpoint", b.url())
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    assert_round_trip(&a_collector, &b_collector);
    let metrics = a.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_otlp_output_spans_exported_total 6"),
        "{metrics}"
    );
    assert!(!a.logs().contains(KEY));
}

#[test]
fn runs_are_exported_over_otlp_grpc_and_round_trip_exactly() {
    let b_collector = MockCollector::start();
    let b = Sidecar::builder(&b_collector.url()).access_key(KEY).start();
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set("outputs.otlp.endpoint", format!("http://{}", b.grpc_addr()))
        .set("outputs.otlp.protocol", "grpc")
        .set("outputs.otlp.headers.x-test-header", "header-secret-value")
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    assert_round_trip(&a_collector, &b_collector);
    assert!(!a.logs().contains("header-secret-value"));
    assert!(!a.logs().contains(KEY));
}

/// Sidecar A exports to sidecar B through a TLS proxy whose certificate only the test CA
/// vouches for; `configure` points A at it and says how A learns the CA.
fn round_trip_over_tls(
    grpc: bool,
    configure: impl FnOnce(support::SidecarBuilder, &str, String) -> support::SidecarBuilder,
) {
    let b_collector = MockCollector::start();
    let b = Sidecar::builder(&b_collector.url()).access_key(KEY).start();
    let proxy = if grpc {
        TlsProxy::start(b.grpc_addr(), &[b"h2"])
    } else {
        TlsProxy::start(b.http_addr(), &[b"http/1.1"])
    };
    let ca = tls_fixture("ca.pem").display().to_string();
    let a_collector = MockCollector::start();
    let a = configure(Sidecar::builder(&a_collector.url()), &ca, proxy.https_url())
        .access_key(KEY)
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    assert_round_trip(&a_collector, &b_collector);
}

#[test]
fn runs_are_exported_over_grpc_with_tls_trusting_a_private_ca_from_the_otel_variable() {
    round_trip_over_tls(true, |a, ca, url| {
        a.set("outputs.otlp.endpoint", url)
            .set("outputs.otlp.protocol", "grpc")
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)
    });
}

#[test]
fn runs_are_exported_over_https_trusting_a_private_ca_from_ca_file() {
    round_trip_over_tls(false, |a, ca, url| {
        a.set("outputs.otlp.endpoint", url)
            .set("outputs.otlp.ca_file", ca)
    });
}

#[test]
fn without_the_ca_a_tls_backend_is_retried_and_the_dynamiq_collector_is_unaffected() {
    let b_collector = MockCollector::start();
    let b = Sidecar::builder(&b_collector.url()).access_key(KEY).start();
    let proxy = TlsProxy::start(b.grpc_addr(), &[b"h2"]);
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set("outputs.otlp.endpoint", proxy.https_url())
        .set("outputs.otlp.protocol", "grpc")
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    wait_until("delivery to A's Dynamiq collector", WAIT, || {
        a_collector.accepted_runs().len() >= posted_runs().len()
    });
    wait_until("a retried OTLP attempt", WAIT, || {
        a.metrics().lines().any(|line| {
            line.strip_prefix("dynamiq_sidecar_otlp_output_retries_total ")
                .is_some_and(|n| n != "0")
        })
    });
    assert!(b_collector.accepted_runs().is_empty());
    let logs = a.logs().to_lowercase();
    assert!(
        logs.contains("certificate"),
        "the outage line says why: {logs}"
    );
}

#[test]
fn a_stalled_otlp_backend_never_blocks_the_dynamiq_collector_and_its_backlog_drains_later() {
    // B's ports are chosen now; B itself starts only later.
    let b_http = format!("127.0.0.1:{}", free_port());
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set("outputs.otlp.endpoint", format!("http://{b_http}"))
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    let posted = posted_runs();
    wait_until("delivery to A's Dynamiq collector", WAIT, || {
        a_collector.accepted_runs().len() >= posted.len()
    });
    assert_eq!(by_id(&a_collector.accepted_runs()), by_id(&posted));
    wait_until("the OTLP output to retry", WAIT, || {
        a.metrics().lines().any(|l| {
            l.starts_with("dynamiq_sidecar_otlp_output_retries_total") && !l.ends_with(" 0")
        })
    });

    let b_collector = MockCollector::start();
    let _b = Sidecar::builder(&b_collector.url())
        .access_key(KEY)
        .set("ingest.http_addr", b_http.as_str())
        .start();
    // The backoff ceiling may have grown while B was down (full jitter up to 1 min).
    wait_until(
        "the backlog to drain into B",
        Duration::from_secs(120),
        || b_collector.accepted_runs().len() >= posted.len(),
    );
    assert_eq!(by_id(&b_collector.accepted_runs()), by_id(&posted));
    // Nothing was delivered twice to A's collector.
    assert_eq!(a_collector.accepted_runs().len(), posted.len());
}

#[test]
fn permanent_otlp_rejections_are_counted_and_skipped() {
    let otlp = MockCollector::start();
    otlp.set_default_response(MockResponse::status(400));
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set("outputs.otlp.endpoint", otlp.url())
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    wait_until("delivery to A's Dynamiq collector", WAIT, || {
        a_collector.accepted_runs().len() >= 6
    });
    wait_until("the rejection to be counted", WAIT, || {
        a.metrics()
            .contains("dynamiq_sidecar_otlp_output_dropped_total{reason=\"rejected\"} 6")
    });
    let requests = otlp.trace_requests();
    assert_eq!(requests.len(), 1, "a permanent rejection is not retried");
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/x-protobuf")
    );
}

#[test]
fn otel_environment_overrides_the_section_but_never_enables_the_output_alone() {
    let otlp = MockCollector::start();
    // Without [outputs.otlp], the application's own OTEL settings do not turn the output on.
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.url())
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    wait_until("delivery to A's Dynamiq collector", WAIT, || {
        a_collector.accepted_runs().len() >= 6
    });
    assert!(!a.metrics().contains("otlp_output"));
    assert!(otlp.requests().is_empty());
    drop(a);

    // With the section, the variable overrides its endpoint (and the headers variable adds
    // headers, never logged).
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .set(
            "outputs.otlp.endpoint",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.url())
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=otlp-secret%2Dvalue",
        )
        .start();
    assert_eq!(a.post_batch(&fixture()).status, 200);
    wait_until(
        "an export to the OTLP endpoint from the environment",
        WAIT,
        || !otlp.trace_requests().is_empty(),
    );
    let request = &otlp.trace_requests()[0];
    assert_eq!(request.header("x-api-key"), Some("otlp-secret-value"));
    assert!(!a.logs().contains("otlp-secret-value"));
}

#[test]
fn a_full_buffer_under_block_skips_the_stalled_otlp_backlog_instead_of_refusing_ingest() {
    let a_collector = MockCollector::start();
    let a = Sidecar::builder(&a_collector.url())
        .access_key(KEY)
        .small_buffer()
        .set("buffer.when_full", "block")
        .set(
            "outputs.otlp.endpoint",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .start();
    // ~10 buffers' worth: the OTLP output never acknowledges any of it.
    let mut sent = 0;
    for i in 0..40 {
        let body = support::batches::batch(&format!("lag{i}"), 4);
        let mut answer = a.post_runs(&body).0;
        // The collector drains between posts; a 429 may only be momentary.
        for _ in 0..50 {
            if answer != 429 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            answer = a.post_runs(&body).0;
        }
        assert_eq!(answer, 200, "batch {i}");
        sent += 4;
    }
    wait_until("everything reached the collector", WAIT, || {
        a_collector.accepted_runs().len() >= sent
    });
    let metrics = a.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("reason=\"output_lag\"") && !l.ends_with(" 0")),
        "the skipped OTLP backlog is counted:\n{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.contains("reason=\"drop_oldest\"") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

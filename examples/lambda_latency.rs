//! What a Lambda function waits for at the end of a workflow: the Dynamiq SDK's synchronous post
//! of its runs, straight to a collector 80 ms away, or to the sidecar extension beside it (which
//! acknowledges once the runs are durable in `/tmp` and delivers after the function returned).
//! Both in the same run, sequential posts of the 18 KB SDK fixture, medians and p95.
//!
//! Run: `cargo run --profile reliability --example lambda_latency -- [posts]` (default 200).
//! The sidecar runs in-process with the Lambda defaults (`lambda::apply_lambda_defaults`:
//! `forward.max_delay = 5ms`) and `fsync = "always"`; at the end every run must have reached the
//! stub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use dynamiq_sidecar::app::config::Config;
use dynamiq_sidecar::app::{EnvSecrets, run_with};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BODY: &[u8] = include_bytes!("../tests/fixtures/workflow-success.json");
const COLLECTOR_LATENCY: Duration = Duration::from_millis(80);

/// A collector 80 ms away: answers every post after the latency, counting the runs.
async fn stub(runs: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let runs = runs.clone();
            async move {
                tokio::time::sleep(COLLECTOR_LATENCY).await;
                let n = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["runs"].as_array().map(Vec::len))
                    .unwrap_or(0);
                runs.fetch_add(n, Ordering::Relaxed);
                r#"{"message":"ok"}"#
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn posts(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success(), "{}", r.status());
        let _ = r.bytes().await;
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    dynamiq_sidecar::sinks::common::http::install_crypto_provider();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let runs_per_post = serde_json::from_slice::<serde_json::Value>(BODY).unwrap()["runs"]
        .as_array()
        .unwrap()
        .len();
    let received = Arc::new(AtomicUsize::new(0));
    let collector = stub(received.clone()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    dynamiq_sidecar::lambda::apply_lambda_defaults(&mut config);
    config.buffer.path = dir.path().join("buffer");
    config.upstream.url = format!("http://{collector}");
    config.ingest.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.forward.dedup_entries = 0; // every run really goes out
    config.forward.requests_per_second = 0;
    config.forward.runs_per_second = 0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let secrets = EnvSecrets {
        access_key: Some("sk-bench".into()),
        ingest_token: None,
        api_token: None,
    };
    let token = shutdown.clone();
    let app = tokio::spawn(async move { run_with(config, secrets, listener, token).await });

    // Warm both paths (connections, page cache), then measure.
    posts(&client, &format!("http://{collector}/v1/traces"), 5).await;
    posts(&client, &sidecar, 5).await;
    let direct = posts(&client, &format!("http://{collector}/v1/traces"), n).await;
    let via = posts(&client, &sidecar, n).await;

    let expected = (2 * n + 10) * runs_per_post;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let _ = app.await;
    let got = received.load(Ordering::Relaxed);
    assert!(
        got >= expected,
        "the stub received {got} of {expected} runs"
    );

    let pick = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!("| path | median | p95 | |");
    println!("|---|---|---|---|");
    println!(
        "| straight to the collector ({} ms away) | {:.2} ms | {:.2} ms | |",
        COLLECTOR_LATENCY.as_millis(),
        ms(pick(&direct, 0.5)),
        ms(pick(&direct, 0.95))
    );
    println!(
        "| to the sidecar extension (fsync always) | {:.2} ms | {:.2} ms | {:.3} of direct |",
        ms(pick(&via, 0.5)),
        ms(pick(&via, 0.95)),
        ms(pick(&via, 0.5)) / ms(pick(&direct, 0.5))
    );
    println!("every run delivered afterwards: {got} of {expected}");
}

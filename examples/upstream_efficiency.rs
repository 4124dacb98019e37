//! Upstream efficiency benchmark (BENCHMARKS.md, "Upstream efficiency"): bytes and requests that
//! reach the collector through the sidecar, against what the clients would have sent directly.
//!
//! Run: `cargo run --release --example upstream_efficiency [-- FLUSHES]` (default 100 flushes).
//!
//! 1. Reused handler: the Dynamiq SDK's reused `DynamiqTracingCallbackHandler` re-sends every
//!    earlier run on each flush. Flush k carries the runs of flushes 1..k, each flush adding the
//!    three runs of `tests/fixtures/reused-handler-flush-1.json` with new ids. Direct = the sum of
//!    the flush bodies (one request each); through the sidecar = what the mock collector received.
//! 2. Small posts: 8 concurrent workers post batches of N runs until 1000 runs were posted.
//!    Direct = one request per post.
//!
//! Everything runs in this process: a counting mock collector, the sidecar (`app::run_with`
//! with the default configuration except the addresses and a temporary buffer directory) and
//! the clients, on loopback. Request bodies are counted, not HTTP headers.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use dynamiq_sidecar::app::config::Config;
use dynamiq_sidecar::app::{EnvSecrets, run_with};
use dynamiq_sidecar::sinks::dynamiq::config::Compression;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Counts {
    requests: u64,
    wire_bytes: u64,
    runs: u64,
    ids: HashSet<String>,
}

type Shared = Arc<Mutex<Counts>>;

async fn collect(State(counts): State<Shared>, headers: HeaderMap, body: Bytes) -> &'static str {
    let json = if headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip")
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("gzip body");
        out
    } else {
        body.to_vec()
    };
    let v: serde_json::Value = serde_json::from_slice(&json).expect("a runs batch");
    let mut c = counts.lock().unwrap();
    c.requests += 1;
    c.wire_bytes += body.len() as u64;
    for run in v["runs"].as_array().expect("runs") {
        c.runs += 1;
        c.ids
            .insert(run["id"].as_str().unwrap_or_default().to_string());
    }
    r#"{"message":"ok"}"#
}

struct Setup {
    counts: Shared,
    sidecar_url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(compression: Compression) -> Setup {
    let counts: Shared = Arc::default();
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(counts.clone());
    tokio::spawn(async move { axum::serve(collector, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.ingest.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.upstream.url = collector_url.clone();
    config.upstream.compression = compression;
    config.query.upstream_url = collector_url;
    config.buffer.path = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let secrets = EnvSecrets {
        access_key: Some("sk-bench".into()),
        ingest_token: None,
        api_token: None,
    };
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        run_with(config, secrets, listener, token)
            .await
            .expect("sidecar runs");
    });
    Setup {
        counts,
        sidecar_url,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Setup {
    /// Waits until `ids` distinct runs arrived and nothing more came for 500 ms.
    async fn settle(&self, ids: usize) -> (u64, u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (0, 0, 0);
        let mut quiet_since = Instant::now();
        loop {
            let now = {
                let c = self.counts.lock().unwrap();
                (c.requests, c.wire_bytes, c.runs, c.ids.len())
            };
            let triple = (now.0, now.1, now.2);
            if triple != last {
                last = triple;
                quiet_since = Instant::now();
            }
            if now.3 >= ids && quiet_since.elapsed() > Duration::from_millis(500) {
                return last;
            }
            assert!(Instant::now() < deadline, "runs did not arrive: {now:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// The three runs of the first fixture flush, as JSON text.
fn base_runs() -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reused-handler-flush-1.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

/// The bodies a reused handler sends over `flushes` flushes.
fn reused_handler_bodies(flushes: usize) -> (Vec<String>, usize) {
    let base = base_runs();
    let base_ids: Vec<String> = base
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut all_runs: Vec<String> = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..flushes {
        let fresh: Vec<String> = base_ids
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        for run in &base {
            let mut r = run.clone();
            for (old, new) in base_ids.iter().zip(&fresh) {
                r = r.replace(old, new);
            }
            all_runs.push(r);
        }
        bodies.push(format!(r#"{{"runs":[{}]}}"#, all_runs.join(",")));
    }
    (bodies, all_runs.len())
}

async fn post(client: &reqwest::Client, url: &str, body: String) {
    let resp = client
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post to the sidecar");
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn reused_handler(flushes: usize, compression: Compression) {
    let (bodies, distinct) = reused_handler_bodies(flushes);
    let direct_bytes: usize = bodies.iter().map(String::len).sum();
    let direct_runs: usize = (1..=flushes).map(|k| 3 * k).sum();
    let setup = start(compression).await;
    let client = reqwest::Client::new();
    for body in bodies {
        post(&client, &setup.sidecar_url, body).await;
    }
    let (requests, bytes, runs) = setup.settle(distinct).await;
    setup.stop().await;
    println!(
        "| reused handler, {flushes} flushes, compression = {compression:?} | {flushes} req, {direct_runs} runs, {direct_bytes} B | {requests} req, {runs} runs, {bytes} B | **{:.2} %** |",
        bytes as f64 * 100.0 / direct_bytes as f64
    );
}

async fn small_posts(runs_per_post: usize, compression: Compression) {
    const WORKERS: usize = 8;
    const TOTAL: usize = 1000;
    let posts_each = TOTAL / WORKERS / runs_per_post;
    let setup = start(compression).await;
    let client = reqwest::Client::new();
    let templates: Vec<serde_json::Value> = base_runs()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let mut direct_bytes = 0usize;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut bodies = Vec::new();
        for p in 0..posts_each {
            // The fixture's runs with fresh ids.
            let runs: Vec<String> = (0..runs_per_post)
                .map(|i| {
                    let mut v = templates[(w + p + i) % templates.len()].clone();
                    v["id"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
                    serde_json::to_string(&v).unwrap()
                })
                .collect();
            let body = format!(r#"{{"runs":[{}]}}"#, runs.join(","));
            direct_bytes += body.len();
            bodies.push(body);
        }
        let client = client.clone();
        let url = setup.sidecar_url.clone();
        workers.push(tokio::spawn(async move {
            for body in bodies {
                post(&client, &url, body).await;
            }
        }));
    }
    let started = Instant::now();
    for w in workers {
        w.await.unwrap();
    }
    let posting = started.elapsed();
    let posts = WORKERS * posts_each;
    let total = posts * runs_per_post;
    let (requests, bytes, runs) = setup.settle(total).await;
    setup.stop().await;
    println!(
        "| {WORKERS} workers × {posts_each} posts of {runs_per_post} run(s) ({:.0} ms), compression = {compression:?} | {posts} req, {total} runs, {direct_bytes} B | {requests} req, {runs} runs, {bytes} B | **{:.1}× fewer requests** ({:.1} per 1000 runs) |",
        posting.as_secs_f64() * 1000.0,
        posts as f64 / requests as f64,
        requests as f64 * 1000.0 / runs as f64,
    );
}

/// Fingerprinting cost per run against serde_json merely scanning the same bytes (baseline).
fn fingerprint_speed() {
    let runs: Vec<Vec<u8>> = base_runs().into_iter().map(String::into_bytes).collect();
    let bytes_per_round: usize = runs.iter().map(Vec::len).sum();
    let rounds = 200_000_000 / bytes_per_round;
    let time = |f: &dyn Fn(&[u8]) -> u128| {
        let started = Instant::now();
        let mut acc = 0u128;
        for _ in 0..rounds {
            for r in &runs {
                acc = acc.wrapping_add(f(std::hint::black_box(r)));
            }
        }
        std::hint::black_box(acc);
        (rounds * bytes_per_round) as f64 / started.elapsed().as_secs_f64() / 1e6
    };
    let baseline = time(&|r| {
        serde_json::from_slice::<serde::de::IgnoredAny>(r).unwrap();
        0
    });
    let fp = time(&|r| dynamiq_sidecar::sinks::dynamiq::dedup::fingerprint(r, None));
    println!(
        "\nfingerprint (whitespace-insensitive XXH3-128): {fp:.0} MB/s; serde_json scan without building anything (baseline): {baseline:.0} MB/s; ratio {:.2}",
        fp / baseline
    );
}

#[tokio::main]
async fn main() {
    // The clients below use rustls too: the provider must be in place before any is built.
    dynamiq_sidecar::sinks::common::http::install_crypto_provider();
    let flushes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    println!("| scenario | direct | through the sidecar | sidecar / direct |");
    println!("|---|---|---|---|");
    for compression in [Compression::None, Compression::Gzip] {
        reused_handler(flushes, compression).await;
    }
    for runs_per_post in [1, 5] {
        small_posts(runs_per_post, Compression::None).await;
    }
    fingerprint_speed();
}

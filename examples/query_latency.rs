//! `GET /v1/traces` latency with many traces retained, against a running sidecar (see
//! `scripts/query-latency.sh`, which starts one on loopback).
//!
//! Usage: `query_latency <sidecar base URL> <traces> <requests per query>`
//!
//! Posts `<traces>` two-run traces (one start second each, every 7th failed) in batches of 1000
//! runs, waits until the index lists them all, then times each query kind sequentially and
//! prints p50 / p99 / max in ms, with `GET /healthz` on the same connection as the baseline.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn run(id: String, trace: &str, parent: Option<&str>, sec: u64, failed: bool) -> Value {
    let t = |s: u64| {
        let (d, h, m, s) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
        format!("2026-01-{:02}T{h:02}:{m:02}:{s:02}.250000+00:00", d + 1)
    };
    json!({
        "id": id, "name": format!("workflow {trace}"), "type": "workflow", "trace_id": trace,
        "source_id": "bench", "session_id": "bench-session", "start_time": t(sec),
        "end_time": t(sec + 1), "parent_run_id": parent,
        "status": if failed { "failed" } else { "succeeded" },
        "input": {"q": "what is the capital of France?"}, "output": {"a": "Paris"},
        "metadata": {}, "error": null, "executions": [], "tags": []
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn time_get(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).send().await.expect("GET");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.expect("body");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, traces, per_query] = &args[..] else {
        eprintln!("usage: query_latency <sidecar base URL> <traces> <requests per query>");
        std::process::exit(2);
    };
    let traces: u64 = traces.parse().expect("traces");
    let per_query: usize = per_query.parse().expect("requests per query");
    dynamiq_sidecar::sinks::common::http::install_crypto_provider();
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut runs = Vec::new();
    for i in 0..traces {
        let trace = format!("00000000-0000-4000-8000-{i:012}");
        let root = format!("10000000-0000-4000-8000-{i:012}");
        runs.push(run(root.clone(), &trace, None, i, i % 7 == 0));
        runs.push(run(
            format!("20000000-0000-4000-8000-{i:012}"),
            &trace,
            Some(&root),
            i,
            false,
        ));
        if runs.len() >= 1000 || i + 1 == traces {
            let body = json!({ "runs": std::mem::take(&mut runs) });
            let r = client
                .post(format!("{base}/v1/traces"))
                .json(&body)
                .send()
                .await
                .expect("POST");
            assert!(r.status().is_success(), "POST: {}", r.status());
        }
    }
    let total = loop {
        let v: Value = client
            .get(format!("{base}/v1/traces?page_size=1"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let total = v["pagination"]["total_count"].as_u64().unwrap_or(0);
        if total >= traces || started.elapsed() > Duration::from_secs(120) {
            break total;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "{total} traces indexed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        total, traces,
        "the index must hold every trace (raise query.max_bytes)"
    );

    let queries = [
        ("GET /healthz (baseline)", "/healthz".to_string()),
        ("default: newest first, page 1 of 50", "/v1/traces".to_string()),
        ("status=failed", "/v1/traces?status=failed".to_string()),
        (
            "date range (1 day), oldest first",
            "/v1/traces?started_at:gte=2026-01-01T00:00:00Z&started_at:lte=2026-01-01T23:59:59Z&sort=started_at".to_string(),
        ),
        ("page 1000 of 50", "/v1/traces?page=1000".to_string()),
        ("page_size=500", "/v1/traces?page_size=500".to_string()),
    ];
    println!("| query | p50 ms | p99 ms | max ms | p99 / baseline p99 |");
    println!("|---|---|---|---|---|");
    let mut baseline = None;
    for (name, path) in queries {
        let url = format!("{base}{path}");
        time_get(&client, &url, per_query / 10 + 1).await; // warm-up
        let lat = time_get(&client, &url, per_query).await;
        let p99 = percentile(&lat, 0.99);
        let base_p99 = *baseline.get_or_insert(p99);
        println!(
            "| {name} | {:.2} | {p99:.2} | {:.2} | {:.1} |",
            percentile(&lat, 0.5),
            percentile(&lat, 1.0),
            p99 / base_p99
        );
    }
}

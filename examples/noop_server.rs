//! Baseline for the load benchmarks: a hyper server that reads each request body completely
//! and answers `200 {"message":"ok"}` without doing anything else. It also serves as a
//! black-hole collector for the sidecar during ingest benchmarks.
//!
//! Run: `cargo run --release --example noop_server -- 127.0.0.1:9000`

#[path = "support/baseline_server.rs"]
mod baseline_server;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    Ok(baseline_server::json_response(
        StatusCode::OK,
        br#"{"message":"ok"}"#,
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    baseline_server::serve(&addr, "noop server", handle).await
}

//! Floor for the ingest load benchmark: the no-op hyper server of `noop_server.rs` plus the one
//! piece of per-request work no conforming receiver can skip, checking the body. Nothing is
//! stored, indexed or forwarded. Its req/s under the same load bounds what any receiver that
//! validates each batch (CONTRACT §2) can reach on the machine, whatever it does after.
//!
//! Modes (second argument):
//! - `sidecar` (default): `model::parse_json_body`, the sidecar's own one-pass check (syntax,
//!   nesting depth, surrogates, the required fields of every run), answered 200 or 400.
//! - `syntax`: `serde_json` skipping the whole body (`IgnoredAny`): JSON syntax only, the least
//!   any validation with the field's standard parser costs.
//!
//! Run: `cargo run --release --example validating_server -- 127.0.0.1:9000 sidecar`

#[path = "support/baseline_server.rs"]
mod baseline_server;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

// The sidecar binary's allocator, so the floor pays what the sidecar pays for allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy)]
enum Mode {
    Sidecar,
    Syntax,
}

fn valid(mode: Mode, body: &[u8]) -> bool {
    match mode {
        Mode::Sidecar => dynamiq_sidecar::model::batch::parse_json_body(body).is_ok(),
        Mode::Syntax => serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
    }
}

async fn check(mode: Mode, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    Ok(match body {
        Ok(body) if valid(mode, &body) => {
            baseline_server::json_response(StatusCode::OK, br#"{"message":"ok"}"#)
        }
        _ => baseline_server::json_response(StatusCode::BAD_REQUEST, br#"{"message":"invalid"}"#),
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let mode = match args.next().as_deref() {
        None | Some("sidecar") => Mode::Sidecar,
        Some("syntax") => Mode::Syntax,
        Some(other) => {
            eprintln!("unknown mode {other:?}: use sidecar or syntax");
            std::process::exit(2);
        }
    };
    baseline_server::serve(&addr, "validating server", move |req| check(mode, req)).await
}

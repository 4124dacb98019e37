//! OTLP load tool for `scripts/load-otlp.sh` (loopback only):
//!
//! - `otlp_load body OUT [REPEAT]`: writes an OTLP/protobuf request made of the GenAI fixture's
//!   spans repeated REPEAT times (default 25 → 500 spans, the OTel SDKs' default batch size),
//!   each copy with its own span ids so that every span is distinct.
//! - `otlp_load grpc http://127.0.0.1:4317 BODY CONCURRENCY SECONDS`: sends BODY with
//!   `TraceService/Export` (pre-encoded once, like `wrk`'s body) from CONCURRENCY concurrent
//!   callers for SECONDS, then prints
//!   `requests spans seconds errors` on one line.
//! - `otlp_load noop-grpc 127.0.0.1:PORT`: a gRPC TraceService that decodes each request and
//!   answers success without doing anything else (the gRPC baseline).
//! - `otlp_load noop-http 127.0.0.1:PORT`: the same over OTLP/HTTP protobuf, on hyper (the HTTP
//!   baseline: an OTLP receiver that does nothing but read and decode).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynamiq_sidecar::sinks::otlp::{EXPORT_PATH, PreEncoded};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

const GENAI_PB: &[u8] = include_bytes!("../tests/fixtures/otlp/genai-semconv.pb");

fn usage() -> ! {
    eprintln!(
        "usage: otlp_load body OUT [REPEAT] | grpc URL BODY CONCURRENCY SECONDS | noop-grpc ADDR | noop-http ADDR"
    );
    std::process::exit(2)
}

fn make_body(repeat: u32) -> ExportTraceServiceRequest {
    let fixture = ExportTraceServiceRequest::decode(GENAI_PB).expect("fixture decodes");
    let mut out = ExportTraceServiceRequest::default();
    for copy in 0..repeat {
        let mut part = fixture.clone();
        for rs in &mut part.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    // A distinct trace per copy keeps the tree intact and every span unique.
                    span.trace_id[0] ^= (copy & 0xFF) as u8;
                    span.trace_id[1] ^= (copy >> 8) as u8;
                }
            }
        }
        out.resource_spans.extend(part.resource_spans);
    }
    out
}

fn spans_in(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

struct Noop;

#[tonic::async_trait]
impl TraceService for Noop {
    async fn export(
        &self,
        _request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn load_grpc(url: String, body: bytes::Bytes, concurrency: usize, secs: u64) {
    let spans = spans_in(&ExportTraceServiceRequest::decode(body.clone()).expect("body decodes"));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("valid url")
        .connect()
        .await
        .expect("connect");
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    // The sidecar's own pre-encoded codec: the body is sent as is (like wrk's), never cloned
    // into structs or re-encoded per call.
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = tonic::client::Grpc::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (requests, errors, body, path) =
            (requests.clone(), errors.clone(), body.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let sent = async {
                    client
                        .ready()
                        .await
                        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
                    client
                        .unary(tonic::Request::new(body.clone()), path.clone(), PreEncoded)
                        .await
                };
                match sent.await {
                    Ok(r) if r.get_ref().partial_success.is_none() => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = requests.load(Ordering::Relaxed);
    println!(
        "{n} {} {elapsed:.3} {}",
        n * spans,
        errors.load(Ordering::Relaxed)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("body") => {
            let out = args.get(1).unwrap_or_else(|| usage());
            let repeat = args
                .get(2)
                .map_or(25, |r| r.parse().unwrap_or_else(|_| usage()));
            let body = make_body(repeat);
            std::fs::write(out, body.encode_to_vec()).expect("write body");
            eprintln!("{} spans, {} bytes", spans_in(&body), body.encoded_len());
        }
        Some("grpc") if args.len() == 5 => {
            let body = bytes::Bytes::from(std::fs::read(&args[2]).expect("read body"));
            let concurrency = args[3].parse().unwrap_or_else(|_| usage());
            let secs = args[4].parse().unwrap_or_else(|_| usage());
            load_grpc(args[1].clone(), body, concurrency, secs).await;
        }
        Some("noop-grpc") if args.len() == 2 => {
            let addr = args[1].parse().unwrap_or_else(|_| usage());
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Noop).max_decoding_message_size(64 << 20))
                .serve(addr)
                .await
                .expect("serve");
        }
        Some("noop-http") if args.len() == 2 => noop_http(&args[1]).await,
        _ => usage(),
    }
}

async fn noop_http(addr: &str) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let ok = body
                        .ok()
                        .and_then(|b| ExportTraceServiceRequest::decode(b).ok())
                        .is_some();
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    let mut response = hyper::Response::new(Full::new(bytes::Bytes::from(answer)));
                    if !ok {
                        *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
                    }
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/x-protobuf"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

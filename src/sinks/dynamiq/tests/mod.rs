//! End-to-end tests of the delivery loop: a real HTTP mock collector on `127.0.0.1:0` (axum), an
//! in-memory batch source, a temporary dead-letter directory. This file holds that harness; the
//! tests are in the files beside it, one per concern.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::Notify;

use super::*;
use std::future::Future;

use crate::admin::readiness::Latch;
use crate::buffer::{BufferError, Record};
use crate::model::envelope;
use crate::secret::Secret;
use crate::sinks::dynamiq::config::Compression;

mod auth_hold;
mod dead_letters;
mod dedup;
mod delivery;
mod retries;
mod shutdown;
mod splitting;
mod wire;

#[derive(Default)]
struct SourceState {
    records: Vec<Record>,
    next: usize,
    acked: u64,
    ack_calls: Vec<u64>,
}

/// Shared view of the fake buffer (the forwarder owns a `MemSource` over the same state).
#[derive(Clone, Default)]
struct MemBuffer {
    state: Arc<Mutex<SourceState>>,
    notify: Arc<Notify>,
}

impl MemBuffer {
    fn push(&self, run: &str, client_key: Option<&str>) {
        {
            let mut st = self.state.lock().unwrap();
            let seq = st.records.len() as u64 + 1;
            st.records.push(Record {
                seq,
                appended_at_ms: 0,
                payload: envelope::encode_run(run.as_bytes(), client_key),
            });
        }
        self.notify.notify_waiters();
    }

    fn push_raw(&self, payload: &'static [u8]) {
        {
            let mut st = self.state.lock().unwrap();
            let seq = st.records.len() as u64 + 1;
            st.records.push(Record {
                seq,
                appended_at_ms: 0,
                payload: Bytes::from_static(payload),
            });
        }
        self.notify.notify_waiters();
    }

    fn acked(&self) -> u64 {
        self.state.lock().unwrap().acked
    }

    fn ack_calls(&self) -> Vec<u64> {
        self.state.lock().unwrap().ack_calls.clone()
    }
}

struct MemSource(MemBuffer);

impl BatchSource for MemSource {
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        _linger: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, BufferError>> + Send {
        let buf = self.0.clone();
        async move {
            loop {
                let notified = buf.notify.notified();
                {
                    let mut st = buf.state.lock().unwrap();
                    if st.next < st.records.len() {
                        let mut out = Vec::new();
                        let mut bytes = 0;
                        while st.next < st.records.len() && out.len() < max_records {
                            let r = st.records[st.next].clone();
                            if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                                break;
                            }
                            bytes += r.payload.len();
                            out.push(r);
                            st.next += 1;
                        }
                        return Ok(out);
                    }
                }
                notified.await;
            }
        }
    }

    fn ack(&mut self, through_seq: u64) -> Result<(), BufferError> {
        let mut st = self.0.state.lock().unwrap();
        assert!(through_seq > st.acked, "acks only move forward");
        assert!(
            through_seq as usize <= st.next,
            "ack of a record never read"
        );
        st.acked = through_seq;
        st.ack_calls.push(through_seq);
        Ok(())
    }

    fn pending_records(&self) -> u64 {
        let st = self.0.state.lock().unwrap();
        st.records.len() as u64 - st.acked
    }
}

#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    auth: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: Bytes,
    /// The status the mock answered.
    status: u16,
}

impl Req {
    /// The body, gunzipped when it came with `Content-Encoding: gzip`.
    fn json_body(&self) -> Vec<u8> {
        if self.content_encoding.as_deref() == Some("gzip") {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            self.body.to_vec()
        }
    }
    fn runs(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.json_body()).unwrap();
        v["runs"].as_array().unwrap().clone()
    }
    fn ids(&self) -> Vec<String> {
        self.runs()
            .iter()
            .map(|r| r["id"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

type Responder = Box<dyn Fn(&Req, usize) -> Reply + Send + Sync>;

struct MockState {
    requests: Mutex<Vec<Req>>,
    responder: Responder,
}

#[derive(Clone)]
struct Mock {
    addr: SocketAddr,
    state: Arc<MockState>,
}

impl Mock {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn handle(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = Req {
        at: Instant::now(),
        auth: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        content_type: headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string()),
        content_encoding: headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string()),
        body,
        status: 0,
    };
    let r = {
        let mut reqs = state.requests.lock().unwrap();
        let r = (state.responder)(&req, reqs.len());
        reqs.push(Req {
            status: r.status,
            ..req
        });
        r
    };
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    let mut resp = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

async fn mock_on(
    listener: tokio::net::TcpListener,
    responder: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static,
) -> Mock {
    let state = Arc::new(MockState {
        requests: Mutex::new(Vec::new()),
        responder: Box::new(responder),
    });
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(handle))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Mock { addr, state }
}

async fn mock(responder: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Mock {
    mock_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        responder,
    )
    .await
}

struct Harness {
    buffer: MemBuffer,
    key: KeyProvider,
    readiness: Readiness,
    registry: Registry,
    dl_dir: tempfile::TempDir,
    drain: CancellationToken,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

fn fast_forward_config() -> ForwardConfig {
    ForwardConfig {
        max_runs: 100,
        max_bytes: 1024 * 1024,
        max_delay: Duration::from_millis(10),
        requests_per_second: 0,
        requests_burst: 0,
        runs_per_second: 0,
        runs_burst: 0,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
        max_retries: 0,
        auth_hold_retry: Duration::from_secs(60),
        dedup_entries: 1000,
        dead_letter_max_bytes: 1024 * 1024,
        auth_hold_max_bytes: 1024 * 1024,
    }
}

fn start(
    url: &str,
    mode: AuthMode,
    key: Option<&str>,
    tweak: impl FnOnce(&mut ForwardConfig),
) -> Harness {
    start_with(url, mode, key, Duration::from_secs(5), tweak)
}

fn start_with(
    url: &str,
    mode: AuthMode,
    key: Option<&str>,
    request_timeout: Duration,
    tweak: impl FnOnce(&mut ForwardConfig),
) -> Harness {
    start_opts(
        url,
        key,
        |u| {
            u.auth_mode = mode;
            u.request_timeout = request_timeout;
        },
        tweak,
        None,
    )
}

/// The most general harness: tweak both config sections, optionally keep the dedup memory in
/// `snapshot`.
fn start_opts(
    url: &str,
    key: Option<&str>,
    tweak_upstream: impl FnOnce(&mut UpstreamConfig),
    tweak: impl FnOnce(&mut ForwardConfig),
    snapshot: Option<PathBuf>,
) -> Harness {
    // Log lines show up in a failing test's output.
    {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let only_ours = tracing_subscriber::filter::Targets::new()
            .with_target("dynamiq_sidecar", tracing::Level::DEBUG);
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(only_ours),
            )
            .try_init();
    }
    let mut upstream = UpstreamConfig {
        url: url.to_string(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        ..UpstreamConfig::default()
    };
    tweak_upstream(&mut upstream);
    let mut forward = fast_forward_config();
    tweak(&mut forward);
    let buffer = MemBuffer::default();
    let key = KeyProvider::fixed(key.map(|k| Secret::new(k.to_string())));
    let readiness = Readiness::default();
    let mut registry = Registry::default();
    let dl_dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dl_dir.path())
        .unwrap()
        .with_max_bytes(forward.dead_letter_max_bytes);
    let fwd = Forwarder::with_source(
        &upstream,
        &forward,
        MemSource(buffer.clone()),
        key.clone(),
        store,
        readiness.clone(),
        &mut registry,
    )
    .unwrap();
    let fwd = match snapshot {
        Some(path) => fwd.with_dedup_snapshot(path),
        None => fwd,
    };
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(fwd.run(drain.clone(), stop.clone()));
    Harness {
        buffer,
        key,
        readiness,
        registry,
        dl_dir,
        drain,
        stop,
        handle: Some(handle),
    }
}

impl Harness {
    async fn stop(mut self) -> Self {
        self.stop.cancel();
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .expect("run returns promptly after stop")
            .unwrap();
        self
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(self.dl_dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn run(id: &str) -> String {
    format!(r#"{{"id":"{id}","x":1.50}}"#)
}

fn metric(h: &Harness, name: &str) -> u64 {
    h.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn sent_ids(m: &Mock) -> Vec<String> {
    m.requests().iter().flat_map(Req::ids).collect()
}

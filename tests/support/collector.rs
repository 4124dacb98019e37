//! `MockCollector`: a stand-in for the Dynamiq collector on `127.0.0.1:0`.
//!
//! It records every request (method, path, headers, raw and decoded body, the runs in it, the
//! arrival time, the status it answered) and answers `POST /v1/traces` from a programmable
//! script: a responder looking at the request, when set and it answers; else a queue of
//! [`MockResponse`]s consumed one per request, then a default (200 `{"message":"ok"}` unless
//! changed). Any other path answers 404 (and is recorded too), unless an API responder
//! ([`MockCollector::set_api_responder`]) answers it: the mock then stands in for the Dynamiq API.
//!
//! It runs on its own tokio runtime, so it works from `#[test]` and `#[tokio::test]` alike; the
//! accessors are synchronous. `stop()` / `resume()` take it off the air and back on the same
//! port (a collector outage with connection refused).

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct MockResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (e.g. `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// Body (sent as `application/json`).
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
    /// How the body goes out.
    pub mode: BodyMode,
}

/// How a scripted response's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// All at once.
    Full,
    /// Status and headers, then the connection is broken mid-body (a reset as the client sees it).
    Reset,
    /// In `chunks` pieces, `every` apart (a slow body).
    Trickle {
        /// Number of pieces.
        chunks: usize,
        /// Pause before each piece.
        every: Duration,
    },
}

impl MockResponse {
    /// 200 `{"message":"ok"}`.
    pub fn ok() -> Self {
        Self::status(200).with_body(r#"{"message":"ok"}"#)
    }

    /// A response with this status and a small JSON body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: format!(r#"{{"message":"mock status {status}"}}"#),
            delay: Duration::ZERO,
            mode: BodyMode::Full,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }

    /// Breaks the connection after the headers.
    pub fn reset_after_headers(mut self) -> Self {
        self.mode = BodyMode::Reset;
        self
    }

    /// Sends the body in `chunks` pieces, `every` apart.
    pub fn trickled(mut self, chunks: usize, every: Duration) -> Self {
        self.mode = BodyMode::Trickle { chunks, every };
        self
    }

    /// Answers after `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as it came on the wire.
    pub body: Bytes,
    /// The body after `Content-Encoding: gzip` was undone (else the same as `body`).
    pub decoded_body: Bytes,
    /// The runs of a `{"runs":[...]}` body, parsed.
    pub runs: Vec<Value>,
    /// The same runs as their exact JSON text in the body (to check bytes are forwarded
    /// verbatim).
    pub raw_runs: Vec<String>,
    /// Why the body was not a `{"runs":[...]}` batch, if it was not.
    pub parse_error: Option<String>,
    /// When it arrived.
    pub received_at: Instant,
    /// The status the mock answered (or is about to answer, during a delay).
    pub status: u16,
}

impl RecordedRequest {
    /// First value of a header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Authorization` header.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    /// Whether the mock answered 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether this is a `POST /v1/traces`.
    pub fn is_traces(&self) -> bool {
        self.method == "POST" && self.path.split('?').next() == Some("/v1/traces")
    }
}

/// Answers a request from its content (`None`: fall back to the script and the default).
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> Option<MockResponse> + Send + Sync>;

#[derive(Default)]
struct Shared {
    requests: Vec<RecordedRequest>,
    script: VecDeque<MockResponse>,
    default: Option<MockResponse>,
    responder: Option<Responder>,
    api_responder: Option<Responder>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(state: &SharedState) -> MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mock collector. Dropping it stops it.
pub struct MockCollector {
    addr: SocketAddr,
    state: SharedState,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MockCollector {
    /// Starts on `127.0.0.1:0`.
    pub fn start() -> Self {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind mock collector on loopback");
        let addr = std_listener.local_addr().expect("mock collector address");
        let mut mock = Self {
            addr,
            state: Arc::new(Mutex::new(Shared::default())),
            runtime: None,
        };
        mock.serve(std_listener);
        mock
    }

    fn serve(&mut self, std_listener: std::net::TcpListener) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-collector")
            .enable_all()
            .build()
            .expect("mock collector runtime");
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).expect("tokio listener")
        };
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.state));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.runtime = Some(runtime);
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the sidecar's `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the mock off the air: the port refuses connections, open connections are dropped.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Serves again on the same port after `stop()` (retries the bind for a few seconds).
    pub fn resume(&mut self) {
        if self.runtime.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("mock collector cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Queues one scripted response (used before the default).
    pub fn push_response(&self, response: MockResponse) {
        lock(&self.state).script.push_back(response);
    }

    /// Queues several scripted responses, in order.
    pub fn push_responses(&self, responses: impl IntoIterator<Item = MockResponse>) {
        lock(&self.state).script.extend(responses);
    }

    /// The response used once the script is empty (initially 200 `{"message":"ok"}`).
    pub fn set_default_response(&self, response: MockResponse) {
        lock(&self.state).default = Some(response);
    }

    /// Answers each `POST /v1/traces` with `responder(request)` when it returns `Some` (e.g. 422
    /// for any batch holding a marker run, 401 for one key), before the script and the default.
    pub fn set_responder(
        &self,
        responder: impl Fn(&RecordedRequest) -> Option<MockResponse> + Send + Sync + 'static,
    ) {
        lock(&self.state).responder = Some(Arc::new(responder));
    }

    /// Answers every request other than `POST /v1/traces` with `responder(request)` when it
    /// returns `Some` (404 otherwise): a stand-in for the Dynamiq API behind `/api/*`.
    pub fn set_api_responder(
        &self,
        responder: impl Fn(&RecordedRequest) -> Option<MockResponse> + Send + Sync + 'static,
    ) {
        lock(&self.state).api_responder = Some(Arc::new(responder));
    }

    /// Removes the responder.
    pub fn clear_responder(&self) {
        lock(&self.state).responder = None;
    }

    /// Forgets the recorded requests (not the script).
    pub fn clear(&self) {
        lock(&self.state).requests.clear();
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// The `POST /v1/traces` requests received.
    pub fn trace_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_traces())
            .collect()
    }

    /// Every run received in `POST /v1/traces`, whatever the answer, in arrival order.
    pub fn runs(&self) -> Vec<Value> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.is_traces())
            .flat_map(|r| r.runs.iter().cloned())
            .collect()
    }

    /// The runs of the requests the mock answered 2xx (delivered runs), in arrival order.
    pub fn accepted_runs(&self) -> Vec<Value> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.is_traces() && r.accepted())
            .flat_map(|r| r.runs.iter().cloned())
            .collect()
    }

    /// The `id` of every delivered run (answered 2xx), in arrival order, repeats kept.
    pub fn accepted_run_ids(&self) -> Vec<String> {
        self.accepted_runs().iter().filter_map(run_id).collect()
    }

    /// The `id` of every run received (whatever the answer), in arrival order, repeats kept.
    pub fn run_ids(&self) -> Vec<String> {
        self.runs().iter().filter_map(run_id).collect()
    }

    /// Waits until at least `n` runs were accepted (answered 2xx); returns the accepted runs.
    /// Panics on timeout with what did arrive.
    pub fn wait_for_runs(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.accepted_runs();
            if runs.len() >= n {
                return runs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mock collector: {} runs accepted after {timeout:?}, expected {n}\n{}",
                    runs.len(),
                    self.summary()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every id in `ids` was accepted at least once. Panics on timeout, naming the
    /// missing ids.
    pub fn wait_for_run_ids(&self, ids: &HashSet<String>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got: HashSet<String> = self.accepted_runs().iter().filter_map(run_id).collect();
            let missing: Vec<&String> = ids.iter().filter(|id| !got.contains(*id)).collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mock collector: {} of {} run ids still missing after {timeout:?}: {:?}\n{}",
                    missing.len(),
                    ids.len(),
                    missing.iter().take(10).collect::<Vec<_>>(),
                    self.summary()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `wait_for_runs` for async tests (polls with `tokio::time::sleep`).
    pub async fn wait_for_runs_async(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.accepted_runs();
            if runs.len() >= n || Instant::now() >= deadline {
                assert!(
                    runs.len() >= n,
                    "mock collector: {} runs accepted after {timeout:?}, expected {n}\n{}",
                    runs.len(),
                    self.summary()
                );
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A short human-readable account of what arrived (for panic messages).
    pub fn summary(&self) -> String {
        let requests = self.requests();
        let mut out = format!("{} requests:\n", requests.len());
        for r in requests.iter().take(50) {
            out.push_str(&format!(
                "  {} {} -> {} ({} runs, {} bytes{})\n",
                r.method,
                r.path,
                r.status,
                r.runs.len(),
                r.body.len(),
                r.parse_error
                    .as_deref()
                    .map(|e| format!(", not a batch: {e}"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

impl Drop for MockCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `id` of a run, as a string.
pub fn run_id(run: &Value) -> Option<String> {
    match run.get("id")? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    runs: Vec<&'a RawValue>,
}

/// Splits a `{"runs":[...]}` body into its runs: parsed, and as their exact text.
pub fn split_batch(body: &[u8]) -> Result<(Vec<Value>, Vec<String>), String> {
    let batch: RawBatch<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut runs = Vec::with_capacity(batch.runs.len());
    let mut raw = Vec::with_capacity(batch.runs.len());
    for r in batch.runs {
        runs.push(serde_json::from_str(r.get()).map_err(|e| e.to_string())?);
        raw.push(r.get().to_string());
    }
    Ok((runs, raw))
}

fn next_response(state: &SharedState, request: &RecordedRequest) -> MockResponse {
    let mut s = lock(state);
    if let Some(response) = s.responder.as_ref().and_then(|r| r(request)) {
        return response;
    }
    match s.script.pop_front() {
        Some(r) => r,
        None => s.default.clone().unwrap_or_else(MockResponse::ok),
    }
}

async fn handle(State(state): State<SharedState>, request: Request) -> Response {
    let received_at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let gzip = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let decoded = if gzip {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            Ok(_) => Bytes::from(out),
            Err(_) => Bytes::new(),
        }
    } else {
        body.clone()
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let mut recorded = RecordedRequest {
        method: parts.method.as_str().to_string(),
        path,
        headers,
        body,
        decoded_body: decoded.clone(),
        runs: Vec::new(),
        raw_runs: Vec::new(),
        parse_error: None,
        received_at,
        status: 404,
    };
    let response = if recorded.is_traces() {
        match split_batch(&decoded) {
            Ok((runs, raw)) => {
                recorded.runs = runs;
                recorded.raw_runs = raw;
            }
            Err(e) => recorded.parse_error = Some(e),
        }
        next_response(&state, &recorded)
    } else {
        let api = lock(&state).api_responder.clone();
        api.and_then(|r| r(&recorded))
            .unwrap_or_else(|| MockResponse::status(404))
    };
    recorded.status = response.status;
    lock(&state).requests.push(recorded);
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    let mut builder = Response::builder()
        .status(response.status)
        .header("content-type", "application/json");
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = match response.mode {
        BodyMode::Full => Body::from(response.body),
        BodyMode::Reset => Body::from_stream(futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("mock collector: connection reset"))
        })),
        BodyMode::Trickle { chunks, every } => {
            let text = response.body.into_bytes();
            let size = text.len().div_ceil(chunks.max(1)).max(1);
            let pieces: Vec<Bytes> = text.chunks(size).map(Bytes::copy_from_slice).collect();
            Body::from_stream(futures_util::stream::unfold(
                pieces.into_iter(),
                move |mut rest| async move {
                    let piece = rest.next()?;
                    tokio::time::sleep(every).await;
                    Some((Ok::<Bytes, std::io::Error>(piece), rest))
                },
            ))
        }
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

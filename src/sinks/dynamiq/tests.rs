//! End-to-end tests of the delivery loop: a real HTTP mock collector on `127.0.0.1:0` (axum), an
//! in-memory batch source, a temporary dead-letter directory.

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

use crate::buffer::{BufferError, Record};
use crate::sinks::dynamiq::config::Compression;

// ---------------------------------------------------------------------------------------------
// In-memory batch source

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

// ---------------------------------------------------------------------------------------------
// Mock collector

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

// ---------------------------------------------------------------------------------------------
// Harness

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

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn the_forwarder_future_is_send_so_the_app_can_spawn_it() {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(clippy::diverging_sub_expression, unreachable_code, unused_variables)]
    fn check(f: Forwarder) {
        let fut = f.run(CancellationToken::new(), CancellationToken::new());
        assert_send(&fut);
    }
    let _ = check;
}

#[tokio::test]
async fn a_2xx_acks_the_batch_and_the_body_is_byte_identical() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("sidecar-key"), |_| {});
    let runs = [
        r#"{"id":"a","x":1.50,"big":123456789012345678901234567890,"unknown":{"z":1,"a":[1E+300,2.0e-0]}}"#,
        r#"{ "id" : "b" , "f": -0.0 }"#,
        r#"{"id":"c"}"#,
    ];
    for r in runs {
        h.buffer.push(r, None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    let body: Vec<u8> = reqs.iter().flat_map(|r| r.body.to_vec()).collect();
    if reqs.len() == 1 {
        assert_eq!(
            body,
            format!(r#"{{"runs":[{},{},{}]}}"#, runs[0], runs[1], runs[2]).into_bytes()
        );
    }
    let ids: Vec<String> = reqs.iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for r in &reqs {
        assert_eq!(r.auth.as_deref(), Some("Bearer sidecar-key"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_forward_runs_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dynamiq_sidecar_forward_requests_total{outcome="success"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("sidecar-key"));
}

#[tokio::test]
async fn a_503_is_retried_until_200_and_delivered_exactly_once_in_order() {
    let m = mock(|_, n| reply(if n < 3 { 503 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["1", "2", "3"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 4, "three 503s then one 200");
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "the same request is retried"
    );
    assert_eq!(reqs[3].ids(), ["1", "2", "3"]);
    assert_eq!(h.buffer.ack_calls(), vec![3]);

    // Later runs follow, in order, and nothing is sent twice once accepted.
    for id in ["4", "5"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    let reqs = m.requests();
    let delivered: Vec<String> = reqs[3..].iter().flat_map(Req::ids).collect();
    assert_eq!(delivered, ["1", "2", "3", "4", "5"]);
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        metrics.contains("dynamiq_sidecar_forward_retries_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dynamiq_sidecar_forward_requests_total{outcome="retry"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_429_retry_after_is_a_floor_on_the_next_attempt() {
    let m = mock(|_, n| {
        if n == 0 {
            let mut r = reply(429);
            r.headers.push(("retry-after", "2".into()));
            r
        } else {
            reply(200)
        }
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before the Retry-After floor"
    );
    assert!(gap < Duration::from_millis(2500), "{gap:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_413_halves_the_request_until_it_fits() {
    let m = mock(|req, _| reply(if req.runs().len() > 2 { 413 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["1", "2", "3", "4", "5"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    let sizes: Vec<usize> = m.requests().iter().map(|r| r.runs().len()).collect();
    assert_eq!(sizes, [5, 2, 3, 1, 2]);
    let delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.runs().len() <= 2)
        .flat_map(Req::ids)
        .collect();
    assert_eq!(delivered, ["1", "2", "3", "4", "5"]);
    assert!(h.dead_letters().is_empty());
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains(r#"dynamiq_sidecar_forward_requests_total{outcome="split"} 2"#)
    );
}

#[tokio::test]
async fn a_413_for_a_single_run_dead_letters_it_as_too_large() {
    let m = mock(|req, _| {
        let mut r = reply(if req.ids().contains(&"big".to_string()) {
            413
        } else {
            200
        });
        r.body = "payload too large".into();
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for id in ["a", "big", "c"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.auth.is_some())
        .flat_map(|r| {
            if r.ids().contains(&"big".to_string()) {
                vec![]
            } else {
                r.ids()
            }
        })
        .collect();
    assert_eq!(delivered, ["a", "c"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "too_large");
    assert_eq!(dl[0]["status"], 413);
    assert_eq!(dl[0]["run"]["id"], "big");
    h.stop().await;
}

#[tokio::test]
async fn a_run_larger_than_max_bytes_is_dead_lettered_without_being_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_bytes = 1024
    });
    h.buffer.push(&run("1"), None);
    h.buffer.push(
        &format!(r#"{{"id":"huge","pad":"{}"}}"#, "x".repeat(2000)),
        None,
    );
    h.buffer.push(&run("3"), None);
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert!(reqs.iter().all(|r| r.body.len() <= 1024));
    let sent: Vec<String> = reqs.iter().flat_map(Req::ids).collect();
    assert_eq!(sent, ["1", "3"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "too_large");
    assert!(dl[0]["status"].is_null());
    h.stop().await;
}

#[tokio::test]
async fn a_422_dead_letters_the_runs_with_the_answer_then_acks() {
    let m = mock(|_, _| {
        let mut r = reply(422);
        r.body = r#"{"error":"invalid run"}"#.into();
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    let exact = r#"{"id":"1","n":1.50,"big":123456789012345678901234567890}"#;
    h.buffer.push(exact, None);
    h.buffer.push(&run("2"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let sizes: Vec<usize> = m.requests().iter().map(|r| r.runs().len()).collect();
    assert_eq!(
        sizes,
        [2, 1, 1],
        "split down to single runs, and a rejected single run is not retried"
    );
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 2);
    for d in &dl {
        assert_eq!(d["reason"], "rejected");
        assert_eq!(d["status"], 422);
        assert_eq!(d["response"], r#"{"error":"invalid run"}"#);
    }
    let file = std::fs::read_dir(h.dl_dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(&format!(r#""run":{exact}"#)),
        "run stored verbatim: {text}"
    );
    let summary = crate::deadletter::summarize(h.dl_dir.path()).unwrap();
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.by_status.get(&422), Some(&2));
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains(r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"} 2"#)
    );
}

#[tokio::test]
async fn a_401_holds_delivery_until_the_key_changes_then_resumes() {
    let m = mock(|req, _| {
        reply(if req.auth.as_deref() == Some("Bearer good") {
            200
        } else {
            401
        })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("revoked"), |_| {});
    h.buffer.push(&run("1"), None);
    h.buffer.push(&run("2"), None);
    wait_until("readiness cleared", || {
        !h.readiness.is_set(Latch::UpstreamAuthorized)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        m.requests().len(),
        1,
        "held: no retry before auth_hold_retry or a key change"
    );
    assert_eq!(h.buffer.acked(), 0, "nothing acked while held");
    assert!(
        h.dead_letters().is_empty(),
        "nothing dead-lettered while held"
    );
    assert!(h.metrics().contains("dynamiq_sidecar_forward_auth_hold 1"));

    h.key.set(Some(Secret::new("good".into())));
    wait_until("all acked", || h.buffer.acked() == 2).await;
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].ids(), ["1", "2"]);
    let h = h.stop().await;
    assert!(h.metrics().contains("dynamiq_sidecar_forward_auth_hold 0"));
}

#[tokio::test]
async fn a_403_hold_retries_after_auth_hold_retry_even_without_a_key_change() {
    let m = mock(|_, n| reply(if n == 0 { 403 } else { 200 })).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.auth_hold_retry = Duration::from_millis(100)
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(100));
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    h.stop().await;
}

#[tokio::test]
async fn no_key_at_all_holds_delivery_until_a_key_appears() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, None, |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("readiness cleared", || {
        !h.readiness.is_set(Latch::UpstreamAuthorized)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(m.requests().is_empty());
    h.key.set(Some(Secret::new("new".into())));
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(m.requests()[0].auth.as_deref(), Some("Bearer new"));
    assert!(h.readiness.is_set(Latch::UpstreamAuthorized));
    h.stop().await;
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_collector_appears() {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let h = start(
        &format!("http://{addr}"),
        AuthMode::SidecarKey,
        Some("k"),
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    h.buffer.push(&run("2"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.buffer.acked(), 0);
    let m = mock_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        |_, _| reply(200),
    )
    .await;
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].ids(), ["1", "2"]);
    let h = h.stop().await;
    let metrics = h.metrics();
    assert!(
        !metrics.contains("dynamiq_sidecar_forward_retries_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn passthrough_groups_runs_by_client_key_and_sends_each_clients_key() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |_| {});
    h.buffer.push(&run("a1"), Some("key-a"));
    h.buffer.push(&run("b1"), Some("key-b"));
    h.buffer.push(&run("a2"), Some("key-a"));
    wait_until("all acked", || h.buffer.acked() == 3).await;
    let mut by_key: Vec<(String, Vec<String>)> = m
        .requests()
        .iter()
        .map(|r| (r.auth.clone().unwrap(), r.ids()))
        .collect();
    by_key.sort();
    // (The first read may hold only the first run; either way every request has one key.)
    let merged = |k: &str| -> Vec<String> {
        by_key
            .iter()
            .filter(|(a, _)| a == k)
            .flat_map(|(_, ids)| ids.clone())
            .collect()
    };
    assert_eq!(merged("Bearer key-a"), ["a1", "a2"]);
    assert_eq!(merged("Bearer key-b"), ["b1"]);
    assert_eq!(by_key.len(), m.requests().len());
    h.stop().await;
}

#[tokio::test]
async fn sidecar_key_mode_sends_the_sidecar_key_not_the_clients() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("sidecar"), |_| {});
    h.buffer.push(&run("1"), Some("client-key"));
    h.buffer.push(&run("2"), Some("other-client"));
    wait_until("all acked", || h.buffer.acked() == 2).await;
    for r in m.requests() {
        assert_eq!(r.auth.as_deref(), Some("Bearer sidecar"));
    }
    h.stop().await;
}

#[tokio::test]
async fn max_retries_dead_letters_as_gave_up_then_acks() {
    let m = mock(|_, _| reply(503)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_retries = 2
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(m.requests().len(), 3, "one attempt plus two retries");
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["reason"], "gave_up");
    assert_eq!(dl[0]["status"], 503);
    h.stop().await;
}

#[tokio::test]
async fn requests_respect_max_runs() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 2
    });
    for i in 0..5 {
        h.buffer.push(&run(&i.to_string()), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    assert!(m.requests().iter().all(|r| r.runs().len() <= 2));
    let ids: Vec<String> = m.requests().iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    h.stop().await;
}

#[tokio::test]
async fn an_undecodable_record_is_skipped_and_acked_past() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push_raw(b"\x09garbage");
    h.buffer.push(&run("2"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let ids: Vec<String> = m.requests().iter().flat_map(Req::ids).collect();
    assert_eq!(ids, ["2"]);
    let h = h.stop().await;
    assert!(
        h.metrics()
            .contains("dynamiq_sidecar_forward_corrupt_records_total 1")
    );
}

#[tokio::test]
async fn drain_returns_once_nothing_is_pending() {
    let m = mock(|_, n| {
        let mut r = reply(if n == 0 { 503 } else { 200 });
        r.delay = Duration::from_millis(20);
        r
    })
    .await;
    let mut h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    for i in 0..3 {
        h.buffer.push(&run(&i.to_string()), None);
    }
    h.drain.cancel();
    let handle = h.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("drain returns")
        .unwrap();
    assert_eq!(
        h.buffer.acked(),
        3,
        "drain delivered everything before returning"
    );
}

#[tokio::test]
async fn drain_on_an_idle_forwarder_returns_without_waiting_for_stop() {
    let m = mock(|_, _| reply(200)).await;
    let mut h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_delay = Duration::from_millis(100)
    });
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await; // now waiting in an empty read
    let began = Instant::now();
    h.drain.cancel();
    let handle = h.handle.take().unwrap();
    tokio::time::timeout(Duration::from_secs(2), handle)
        .await
        .expect("drain returns")
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(400),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn stop_returns_promptly_in_the_middle_of_a_retry_sleep() {
    let m = mock(|_, _| reply(503)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.retry_initial = Duration::from_secs(30);
        f.retry_max = Duration::from_secs(60);
    });
    h.buffer.push(&run("1"), None);
    wait_until("first attempt", || !m.requests().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let began = Instant::now();
    let h = h.stop().await;
    assert!(began.elapsed() < Duration::from_millis(500));
    assert_eq!(
        h.buffer.acked(),
        0,
        "an undelivered run stays in the buffer"
    );
}

#[tokio::test]
async fn stop_abandons_an_in_flight_request_without_acking() {
    let m = mock(|_, _| {
        let mut r = reply(200);
        r.delay = Duration::from_secs(10);
        r
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(&run("1"), None);
    wait_until("request in flight", || !m.requests().is_empty()).await;
    let began = Instant::now();
    let h = h.stop().await;
    assert!(began.elapsed() < Duration::from_millis(500));
    assert_eq!(h.buffer.acked(), 0);
}

#[tokio::test]
async fn a_request_timeout_is_retried() {
    let m = mock(|_, n| {
        let mut r = reply(200);
        if n == 0 {
            r.delay = Duration::from_millis(600);
        }
        r
    })
    .await;
    let upstream_timeout = Duration::from_millis(150);
    let h = start_with(
        &m.url(),
        AuthMode::SidecarKey,
        Some("k"),
        upstream_timeout,
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2, "the timed-out request is sent again");
    assert_eq!(reqs[1].ids(), ["1"]);
    h.stop().await;
}

#[tokio::test]
async fn a_collector_echoing_the_key_does_not_leak_it_into_the_dead_letter_store() {
    let m = mock(|req, _| {
        let mut r = reply(400);
        r.body = format!("bad request from {}", req.auth.clone().unwrap_or_default());
        r
    })
    .await;
    let h = start(
        &m.url(),
        AuthMode::SidecarKey,
        Some("sk-top-secret"),
        |_| {},
    );
    h.buffer.push(&run("1"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let dl = h.dead_letters();
    assert_eq!(dl[0]["response"], "bad request from Bearer [redacted]");
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Upstream efficiency: duplicate suppression, compression

fn metric(h: &Harness, name: &str) -> u64 {
    h.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn sent_ids(m: &Mock) -> Vec<String> {
    m.requests().iter().flat_map(Req::ids).collect()
}

#[tokio::test]
async fn a_run_already_delivered_is_acked_without_being_sent_and_a_changed_one_is_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b"}"#, None);
    wait_until("first flush acked", || h.buffer.acked() == 2).await;
    // The SDK's next flush: the same runs again (the same bytes), one of them finished now,
    // plus a new one.
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b","status":"succeeded"}"#, None);
    h.buffer.push(r#"{"id":"c"}"#, None);
    wait_until("second flush acked", || h.buffer.acked() == 5).await;
    // And the same again: nothing new at all, acked without a request.
    let requests_before = m.requests().len();
    h.buffer.push(r#"{"id":"a","status":null}"#, None);
    h.buffer.push(r#"{"id":"b","status":"succeeded"}"#, None);
    wait_until("third flush acked", || h.buffer.acked() == 7).await;
    assert_eq!(m.requests().len(), requests_before, "nothing new to send");
    // A copy formatted differently is not recognised: it is sent again, never lost.
    h.buffer
        .push("{ \"id\" : \"a\",\n \"status\" : null }", None);
    wait_until("re-formatted copy acked", || h.buffer.acked() == 8).await;
    assert_eq!(sent_ids(&m), ["a", "b", "b", "c", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_suppressed_runs_total"),
        3
    );
    // Each suppressed run counts its bytes plus the comma it would have cost.
    let saved: usize = [
        r#"{"id":"a","status":null}"#,
        r#"{"id":"a","status":null}"#,
        r#"{"id":"b","status":"succeeded"}"#,
    ]
    .iter()
    .map(|r| r.len() + 1)
    .sum();
    let saved = saved as u64;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_saved_bytes_total"),
        saved
    );
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_runs_total"), 5);
}

#[tokio::test]
async fn identical_copies_inside_one_batch_are_sent_once() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    // Pushed before the forwarder task first runs: one batch.
    for r in [
        r#"{"id":"a"}"#,
        r#"{"id":"a"}"#,
        r#"{"id":"b"}"#,
        r#"{"id":"a"}"#,
    ] {
        h.buffer.push(r, None);
    }
    wait_until("all acked", || h.buffer.acked() == 4).await;
    assert_eq!(m.requests().len(), 1);
    assert_eq!(sent_ids(&m), ["a", "b"]);
}

#[tokio::test]
async fn an_undelivered_copy_suppresses_nothing_retries_and_rejections_alike() {
    // 503 twice, then 422 (dead-lettered), then 200.
    let m = mock(|_, n| {
        reply(match n {
            0 | 1 => 503,
            2 => 422,
            _ => 200,
        })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("dead-lettered and acked", || h.buffer.acked() == 1).await;
    // Never accepted: the same run again is sent again.
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    assert_eq!(sent_ids(&m), ["a", "a", "a", "a"]);
    // Now accepted: a third copy is suppressed.
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(m.requests().len(), 4);
    let h = h.stop().await;
    assert_eq!(h.dead_letters().len(), 1);
}

#[tokio::test]
async fn an_abandoned_request_records_nothing() {
    let m = mock(|_, n| {
        let mut r = reply(200);
        if n == 0 {
            r.delay = Duration::from_secs(10);
        }
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("dedup.snapshot");
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("request in flight", || !m.requests().is_empty()).await;
    let _ = h.stop().await;
    // The restarted forwarder (same snapshot) delivers the run again.
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap));
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(sent_ids(&m), ["a", "a"]);
}

#[tokio::test]
async fn dedup_entries_zero_forwards_every_copy() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.dedup_entries = 0;
    });
    h.buffer.push(r#"{"id":"a"}"#, None);
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    h.buffer.push(r#"{"id":"a"}"#, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(sent_ids(&m), ["a", "a", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_suppressed_runs_total"),
        0
    );
}

#[tokio::test]
async fn the_memory_is_bounded_evictions_are_counted_and_an_evicted_run_is_sent_again() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.dedup_entries = 2;
    });
    for id in ["a", "b", "c"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("acked", || h.buffer.acked() == 3).await;
    h.buffer.push(&run("c"), None); // remembered
    h.buffer.push(&run("a"), None); // evicted: sent again
    wait_until("acked", || h.buffer.acked() == 5).await;
    assert_eq!(sent_ids(&m), ["a", "b", "c", "a"]);
    let h = h.stop().await;
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dedup_evictions_total"),
        2
    );
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_dedup_entries"), 2);
}

#[tokio::test]
async fn passthrough_copies_under_different_client_keys_are_both_sent() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::Passthrough, None, |_| {});
    h.buffer.push(&run("a"), Some("key-1"));
    wait_until("acked", || h.buffer.acked() == 1).await;
    h.buffer.push(&run("a"), Some("key-2"));
    h.buffer.push(&run("a"), Some("key-1"));
    wait_until("acked", || h.buffer.acked() == 3).await;
    let reqs = m.requests();
    assert_eq!(sent_ids(&m), ["a", "a"]);
    assert_eq!(reqs[1].auth.as_deref(), Some("Bearer key-2"));
    let h = h.stop().await;
    assert!(!h.metrics().contains("key-1") && !h.metrics().contains("key-2"));
}

#[tokio::test]
async fn the_memory_survives_a_restart_through_its_snapshot_and_a_corrupt_one_is_ignored() {
    let m = mock(|_, _| reply(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("state").join("dedup.snapshot");
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("a"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    let _ = h.stop().await;
    assert!(snap.exists(), "saved when run returns");

    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("a"), None);
    h.buffer.push(&run("b"), None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    assert_eq!(sent_ids(&m), ["a", "b"]);
    let _ = h.stop().await;

    // Damaged: ignored, memory starts empty, the run is sent again (never lost).
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    let h = start_opts(&m.url(), Some("k"), |_| {}, |_| {}, Some(snap.clone()));
    h.buffer.push(&run("b"), None);
    wait_until("acked", || h.buffer.acked() == 1).await;
    assert_eq!(sent_ids(&m), ["a", "b", "b"]);
}

#[tokio::test]
async fn gzip_bodies_carry_content_encoding_and_limits_count_uncompressed_bytes() {
    let m = mock(|_, n| reply(if n == 0 { 413 } else { 200 })).await;
    let h = start_opts(
        &m.url(),
        Some("k"),
        |u| u.compression = Compression::Gzip,
        |f| f.max_bytes = 200,
        None,
    );
    let runs: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"id":"r{i}","pad":"{}"}}"#, "x".repeat(40)))
        .collect();
    for r in &runs {
        h.buffer.push(r, None);
    }
    wait_until("acked", || h.buffer.acked() == 6).await;
    let reqs = m.requests();
    for r in &reqs {
        assert_eq!(r.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        // The uncompressed body respects max_bytes although the wire body is far smaller.
        assert!(r.json_body().len() <= 200, "{}", r.json_body().len());
    }
    // The first request was refused with 413 and split; every run arrived, in order.
    let accepted: Vec<String> = reqs[1..].iter().flat_map(Req::ids).collect();
    assert_eq!(accepted, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    assert!(reqs[1].runs().len() < reqs[0].runs().len());
    let h = h.stop().await;
    assert!(
        metric(&h, "dynamiq_sidecar_forward_wire_bytes_total")
            < metric(&h, "dynamiq_sidecar_forward_bytes_total")
    );
}

#[tokio::test]
async fn one_pooled_connection_is_reused_across_requests() {
    use axum::extract::ConnectInfo;
    let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = peers.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(peer);
                "{}"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let h = start(
        &format!("http://{addr}"),
        AuthMode::SidecarKey,
        Some("k"),
        |_| {},
    );
    for i in 0..5u64 {
        h.buffer.push(&run(&i.to_string()), None);
        wait_until("acked", || h.buffer.acked() == i + 1).await;
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 5);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "a new connection per request: {peers:?}"
    );
}

#[tokio::test]
async fn runs_converted_from_otlp_spans_are_never_suppressed() {
    let m = mock(|_, _| reply(200)).await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |_| {});
    // A UUIDv8 id written first: what the converter makes of a foreign span.
    let converted = r#"{"id":"0196e6a4-1f2b-8c3d-9e4f-5a6b7c8d9e0f","name":"chat"}"#;
    h.buffer.push(converted, None);
    h.buffer.push(converted, None);
    wait_until("acked", || h.buffer.acked() == 2).await;
    h.buffer.push(converted, None);
    wait_until("acked", || h.buffer.acked() == 3).await;
    assert_eq!(sent_ids(&m).len(), 3);
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_dedup_entries"), 0);
}

// ---------------------------------------------------------------------------------------------
// The shared buffer read (`next_records`)

/// A source answering each read from a script.
struct ScriptedSource(std::collections::VecDeque<Result<Vec<Record>, BufferError>>);

impl BatchSource for ScriptedSource {
    fn next_batch(
        &mut self,
        _max_records: usize,
        _max_bytes: usize,
        _linger: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, BufferError>> + Send {
        let next = self.0.pop_front();
        async move {
            match next {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }
    }

    fn ack(&mut self, _through_seq: u64) -> Result<(), BufferError> {
        Ok(())
    }

    fn pending_records(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn next_records_skips_empty_reads_pauses_after_errors_and_stops_on_a_closed_buffer() {
    let record = Record {
        seq: 7,
        appended_at_ms: 0,
        payload: Bytes::from_static(b"x"),
    };
    let io_error = BufferError::Io {
        path: "segment".into(),
        source: std::io::Error::other("disk gone"),
    };
    let mut source = ScriptedSource(
        [
            Ok(vec![]),
            Err(io_error),
            Ok(vec![record]),
            Err(BufferError::Closed),
        ]
        .into(),
    );
    let limits = ReadLimits {
        max_records: 10,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(5),
        error_pause: Duration::from_millis(300),
    };
    let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
    let mut read = async || next_records("test", &mut source, limits, &drain, &stop).await;

    assert!(
        matches!(read().await, Ok(None)),
        "an empty read is nothing to deliver"
    );
    let started = Instant::now();
    assert!(
        matches!(read().await, Ok(None)),
        "a read error is logged, not returned"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "then the loop pauses"
    );
    match read().await {
        Ok(Some(records)) => assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7]),
        other => panic!("expected the record, got {other:?}"),
    }
    assert!(
        matches!(read().await, Err(Stopped)),
        "a closed buffer ends the loop"
    );
}

#[tokio::test]
async fn next_records_is_abandoned_when_stop_is_cancelled_during_the_error_pause() {
    let mut source = ScriptedSource(
        [Err(BufferError::Io {
            path: "segment".into(),
            source: std::io::Error::other("disk gone"),
        })]
        .into(),
    );
    let limits = ReadLimits {
        max_records: 10,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(5),
        error_pause: Duration::from_secs(3600),
    };
    let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
    let cancel = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let read = next_records("test", &mut source, limits, &drain, &stop).await;
    assert!(matches!(read, Err(Stopped)));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not after the whole pause"
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery hardening: poisoned batches, the bounded dead-letter store, per-key holds

fn accepted_ids(m: &Mock) -> Vec<String> {
    m.requests()
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(Req::ids)
        .collect()
}

#[tokio::test]
async fn a_422_for_a_coalesced_batch_isolates_the_rejected_run_and_delivers_every_other() {
    let m = mock(|req, _| {
        if req.ids().iter().any(|id| id.contains("poison")) {
            let mut r = reply(422);
            r.body = r#"{"detail":"bad run"}"#.into();
            r
        } else {
            reply(200)
        }
    })
    .await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.max_delay = Duration::from_millis(50)
    });
    // Two clients interleaved in one buffer batch; the poisoned run is client a's.
    let runs = [
        ("a1", "key-a"),
        ("b1", "key-b"),
        ("a2", "key-a"),
        ("poison", "key-a"),
        ("b2", "key-b"),
        ("a3", "key-a"),
        ("b3", "key-b"),
        ("a4", "key-a"),
    ];
    for (id, key) in runs {
        h.buffer.push(&run(id), Some(key));
    }
    wait_until("all acked", || h.buffer.acked() == 8).await;
    let mut delivered = accepted_ids(&m);
    delivered.sort();
    assert_eq!(delivered, ["a1", "a2", "a3", "a4", "b1", "b2", "b3"]);
    let dl = h.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["run"]["id"], "poison");
    assert_eq!(dl[0]["status"], 422);
    assert_eq!(dl[0]["response"], r#"{"detail":"bad run"}"#);
    // Bounded: a request of n runs costs at most 2n - 1 requests.
    let requests = m.requests().len();
    assert!(requests < 2 * 8, "{requests}");
    let h = h.stop().await;
    assert!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_splits_total{cause="rejected"}"#
        ) >= 2
    );
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"}"#
        ),
        1
    );
}

#[tokio::test]
async fn the_split_sub_requests_go_through_the_retry_policy() {
    // The first single-run request of the split meets a 503 once: it is retried, not dropped.
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = failed_once.clone();
    let m = mock(move |req, _| {
        let ids = req.ids();
        if ids.len() > 1 && ids.iter().any(|id| id == "poison") {
            return reply(400);
        }
        if ids == ["good"] && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return reply(503);
        }
        reply(if ids == ["poison"] { 400 } else { 200 })
    })
    .await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_delay = Duration::from_millis(50)
    });
    h.buffer.push(&run("good"), None);
    h.buffer.push(&run("poison"), None);
    wait_until("all acked", || h.buffer.acked() == 2).await;
    let sent: Vec<Vec<String>> = m.requests().iter().map(Req::ids).collect();
    assert_eq!(
        sent,
        [
            vec!["good", "poison"],
            vec!["good"],
            vec!["good"],
            vec!["poison"]
        ]
    );
    assert_eq!(h.dead_letters().len(), 1);
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_retries_total"), 1);
}

/// A mock that answers 422 to any request holding a run whose id starts with `prefix`.
async fn mock_rejecting_runs_named(prefix: &'static str) -> Mock {
    mock(move |req, _| {
        reply(if req.ids().iter().any(|id| id.starts_with(prefix)) {
            422
        } else {
            200
        })
    })
    .await
}

#[tokio::test]
async fn a_failing_dead_letter_write_is_counted_and_delivery_goes_on() {
    let m = mock_rejecting_runs_named("bad").await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 1
    });
    // The dead-letter directory replaced by a file: no dead-letter file can be created.
    let dir = h.dl_dir.path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"").unwrap();
    for id in ["good1", "bad1", "good2", "bad2", "good3"] {
        h.buffer.push(&run(id), None);
    }
    wait_until("all acked", || h.buffer.acked() == 5).await;
    assert_eq!(sent_ids(&m).len(), 5, "every run was sent once");
    let good: Vec<String> = sent_ids(&m)
        .into_iter()
        .filter(|id| id.starts_with("good"))
        .collect();
    assert_eq!(good, ["good1", "good2", "good3"]);
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    h.buffer.push(&run("bad3"), None);
    wait_until("acked", || h.buffer.acked() == 6).await;
    assert_eq!(
        h.dead_letters().len(),
        1,
        "written again once the store works"
    );
    let h = h.stop().await;
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="write_failed"}"#
        ),
        2
    );
    assert_eq!(
        metric(
            &h,
            r#"dynamiq_sidecar_forward_dead_lettered_runs_total{reason="rejected"}"#
        ),
        3
    );
}

#[tokio::test]
async fn an_overflowing_dead_letter_store_drops_its_oldest_and_delivery_goes_on() {
    let m = mock_rejecting_runs_named("bad").await;
    let h = start(&m.url(), AuthMode::SidecarKey, Some("k"), |f| {
        f.max_runs = 1;
        f.dead_letter_max_bytes = 2048;
    });
    for i in 0..60 {
        h.buffer.push(&run(&format!("bad{i:02}")), None);
        h.buffer.push(&run(&format!("good{i:02}")), None);
    }
    wait_until("all acked", || h.buffer.acked() == 120).await;
    let good = sent_ids(&m)
        .into_iter()
        .filter(|id| id.starts_with("good"))
        .count();
    assert_eq!(good, 60);
    let kept = h.dead_letters();
    let bytes: u64 = std::fs::read_dir(h.dl_dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 2048, "{bytes}");
    assert_eq!(
        kept.last().unwrap()["run"]["id"],
        "bad59",
        "the newest are kept"
    );
    let h = h.stop().await;
    let evicted = metric(
        &h,
        r#"dynamiq_sidecar_forward_dead_letters_dropped_total{reason="evicted"}"#,
    );
    assert_eq!(
        evicted + kept.len() as u64,
        60,
        "every dead letter kept or counted"
    );
    assert_eq!(
        metric(&h, "dynamiq_sidecar_forward_dead_letter_bytes"),
        bytes
    );
}

/// A mock that answers 401 to `Bearer key-a` while `reject_a` is set, 200 otherwise.
async fn mock_rejecting_key_a(reject_a: Arc<std::sync::atomic::AtomicBool>) -> Mock {
    mock(move |req, _| {
        let a = req.auth.as_deref() == Some("Bearer key-a");
        reply(if a && reject_a.load(std::sync::atomic::Ordering::SeqCst) {
            401
        } else {
            200
        })
    })
    .await
}

fn ids_sent_with(m: &Mock, auth: &str, status_ok: impl Fn(&Req) -> bool) -> Vec<String> {
    m.requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some(auth) && status_ok(r))
        .flat_map(Req::ids)
        .collect()
}

#[tokio::test]
async fn passthrough_a_401_holds_only_that_keys_runs_and_releases_them_in_order() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(80);
    });
    for (id, key) in [
        ("a1", "key-a"),
        ("b1", "key-b"),
        ("a2", "key-a"),
        ("b2", "key-b"),
    ] {
        h.buffer.push(&run(id), Some(key));
    }
    wait_until("b's runs delivered", || {
        ids_sent_with(&m, "Bearer key-b", |_| true) == ["b1", "b2"]
    })
    .await;
    // More of both while a is held: b's flow, a's wait behind a1 and a2.
    h.buffer.push(&run("a3"), Some("key-a"));
    h.buffer.push(&run("b3"), Some("key-b"));
    wait_until("b3 delivered", || {
        ids_sent_with(&m, "Bearer key-b", |_| true).len() == 3
    })
    .await;
    wait_until("a retried with backoff", || {
        m.requests()
            .iter()
            .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
            .count()
            >= 3
    })
    .await;
    assert_eq!(h.buffer.acked(), 0, "nothing passes the first held run");
    assert!(
        h.readiness.is_set(Latch::UpstreamAuthorized),
        "one client's bad key does not fail readiness"
    );
    assert!(h.dead_letters().is_empty());
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_keys"), 1);
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_runs"), 3);
    // A probe is one request, not one per parked run.
    let a_requests: Vec<usize> = m
        .requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
        .map(|r| r.runs().len())
        .collect();
    assert!(a_requests.iter().skip(1).all(|&n| n >= 2), "{a_requests:?}");

    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("all acked", || h.buffer.acked() == 6).await;
    let a_delivered: Vec<String> = m
        .requests()
        .iter()
        .filter(|r| r.auth.as_deref() == Some("Bearer key-a"))
        .last()
        .map(Req::ids)
        .unwrap();
    assert_eq!(
        a_delivered,
        ["a1", "a2", "a3"],
        "held runs leave in buffer order"
    );
    let h = h.stop().await;
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_keys"), 0);
    assert_eq!(metric(&h, "dynamiq_sidecar_forward_held_runs"), 0);
    assert!(!h.metrics().contains("key-a"));
}

#[tokio::test]
async fn held_runs_at_their_bound_pause_reading_until_the_key_works_again() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(50);
        f.auth_hold_max_bytes = 200;
        f.max_runs = 5;
    });
    // 10 runs of a (~20 bytes each) fill the bound; b's runs behind them must wait.
    for i in 0..12 {
        h.buffer.push(&run(&format!("a{i:02}")), Some("key-a"));
    }
    wait_until("the pause", || {
        metric(&h, "dynamiq_sidecar_forward_auth_hold_bound_pauses_total") == 1
    })
    .await;
    h.buffer.push(&run("b1"), Some("key-b"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        ids_sent_with(&m, "Bearer key-b", |_| true).is_empty(),
        "nothing more is read at the bound"
    );
    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("all acked", || h.buffer.acked() == 13).await;
    let accepted_a = ids_sent_with(&m, "Bearer key-a", |r| r.status == 200);
    let expected: Vec<String> = (0..12).map(|i| format!("a{i:02}")).collect();
    assert_eq!(accepted_a, expected, "nothing lost, buffer order kept");
    assert_eq!(ids_sent_with(&m, "Bearer key-b", |_| true), ["b1"]);
    h.stop().await;
}

#[tokio::test]
async fn drain_waits_for_a_held_key_and_returns_once_it_is_released() {
    let reject_a = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let m = mock_rejecting_key_a(reject_a.clone()).await;
    let mut h = start(&m.url(), AuthMode::Passthrough, Some("sidecar"), |f| {
        f.auth_hold_retry = Duration::from_millis(50);
    });
    h.buffer.push(&run("a1"), Some("key-a"));
    h.buffer.push(&run("b1"), Some("key-b"));
    wait_until("b delivered", || {
        !ids_sent_with(&m, "Bearer key-b", |_| true).is_empty()
    })
    .await;
    h.drain.cancel();
    let mut handle = h.handle.take().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut handle)
            .await
            .is_err(),
        "drain does not return while a run is held"
    );
    reject_a.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .expect("drain returns once the key works")
        .unwrap();
    assert_eq!(h.buffer.acked(), 2);
}

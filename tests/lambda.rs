//! The binary as an AWS Lambda extension, against a fake Lambda Runtime API on loopback
//! (Extensions API: register, `event/next` serving `INVOKE` and `SHUTDOWN` with deadlines,
//! `init/error`, `exit/error`; Telemetry API: the subscription, then `platform.runtimeDone`
//! posted to the extension's own listener, as Lambda does).

mod support;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use support::python::wait_or_kill;
use support::{MockCollector, batches, wait_until};

const KEY: &str = "sk-lambda-e2e-8e41";

#[derive(Default)]
struct FakeState {
    fail_register: bool,
    fail_subscribe: bool,
    events: VecDeque<Value>,
    /// When each `event/next` call arrived.
    next_calls: Vec<Instant>,
    destination: Option<String>,
    /// (path, error type header, body) of `init/error` and `exit/error` calls.
    errors: Vec<(String, String, Value)>,
}

type Shared = Arc<Mutex<FakeState>>;

/// The fake Runtime API: its own runtime on its own thread.
struct FakeLambda {
    addr: SocketAddr,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, FakeState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn register(State(state): State<Shared>, headers: HeaderMap) -> Response {
    assert_eq!(
        headers
            .get("lambda-extension-name")
            .and_then(|v| v.to_str().ok()),
        Some("dynamiq-sidecar")
    );
    if lock(&state).fail_register {
        return (StatusCode::INTERNAL_SERVER_ERROR, "register refused").into_response();
    }
    ([("lambda-extension-identifier", "ext-1")], "{}").into_response()
}

async fn subscribe(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let mut s = lock(&state);
    if s.fail_subscribe {
        return (StatusCode::BAD_REQUEST, "telemetry refused").into_response();
    }
    s.destination = body["destination"]["URI"].as_str().map(str::to_owned);
    StatusCode::OK.into_response()
}

async fn next_event(State(state): State<Shared>, headers: HeaderMap) -> Response {
    assert_eq!(
        headers
            .get("lambda-extension-identifier")
            .and_then(|v| v.to_str().ok()),
        Some("ext-1")
    );
    lock(&state).next_calls.push(Instant::now());
    loop {
        if let Some(event) = lock(&state).events.pop_front() {
            return axum::Json(event).into_response();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn report_error(
    State(state): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let kind = headers
        .get("lambda-extension-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lock(&state)
        .errors
        .push((uri.path().to_string(), kind, body));
    StatusCode::ACCEPTED
}

impl FakeLambda {
    fn start(configure: impl FnOnce(&mut FakeState)) -> Self {
        let state = Shared::default();
        configure(&mut lock(&state));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = Router::new()
            .route("/2020-01-01/extension/register", post(register))
            .route("/2020-01-01/extension/event/next", get(next_event))
            .route("/2020-01-01/extension/init/error", post(report_error))
            .route("/2020-01-01/extension/exit/error", post(report_error))
            .route("/2022-07-01/telemetry", put(subscribe))
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            state,
            _runtime: runtime,
        }
    }

    fn next_calls(&self) -> Vec<Instant> {
        lock(&self.state).next_calls.clone()
    }

    /// Serves `event` to the next `event/next`; returns the instant of its deadline.
    fn push(&self, mut event: Value, deadline_in: Duration) -> Instant {
        let deadline_ms = (SystemTime::now() + deadline_in)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        event["deadlineMs"] = json!(deadline_ms);
        lock(&self.state).events.push_back(event);
        Instant::now() + deadline_in
    }

    fn wait_next_calls(&self, n: usize, within: Duration) -> Instant {
        wait_until(&format!("event/next call #{n}"), within, || {
            self.next_calls().len() >= n
        });
        self.next_calls()[n - 1]
    }
}

/// Runs the binary as Lambda would: no arguments, `AWS_LAMBDA_RUNTIME_API` set.
fn extension(fake: &FakeLambda, collector_url: &str, dir: &std::path::Path, http: u16) -> Child {
    extension_from(support::sidecar::bin(), fake, collector_url, dir, http, &[])
}

fn extension_from(
    program: std::path::PathBuf,
    fake: &FakeLambda,
    collector_url: &str,
    dir: &std::path::Path,
    http: u16,
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    let mut command = Command::new(program);
    if !env.iter().any(|(k, _)| *k == "DYNAMIQ_SIDECAR_CONFIG") {
        command.env_remove("DYNAMIQ_SIDECAR_CONFIG");
    }
    command
        .envs(env.iter().copied())
        .env("AWS_LAMBDA_RUNTIME_API", fake.addr.to_string())
        .env("DYNAMIQ_LAMBDA_TELEMETRY_ADDR", "127.0.0.1:0")
        .env("DYNAMIQ_ACCESS_KEY", KEY)
        .env(
            "DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR",
            format!("127.0.0.1:{http}"),
        )
        .env(
            "DYNAMIQ_SIDECAR_INGEST_GRPC_ADDR",
            format!("127.0.0.1:{}", support::sidecar::free_port()),
        )
        .env("DYNAMIQ_SIDECAR_UPSTREAM_URL", collector_url)
        .env("DYNAMIQ_SIDECAR_BUFFER_PATH", dir.join("buffer"))
        .env("DYNAMIQ_SIDECAR_FORWARD_RETRY_INITIAL", "50ms")
        .env("DYNAMIQ_SIDECAR_FORWARD_RETRY_MAX", "200ms")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn the extension")
}

/// What the function does in an invocation: post a batch to the sidecar, as the SDK would.
fn function_posts(http: u16, batch: &Value) {
    let r = support::http::request(
        "POST",
        &format!("http://127.0.0.1:{http}/v1/traces"),
        &[("Content-Type", "application/json")],
        batch.to_string().as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// What Lambda does when the function's code is done: `platform.runtimeDone` to the listener.
fn runtime_done(fake: &FakeLambda, request_id: &str) {
    let destination = lock(&fake.state).destination.clone().unwrap();
    let body = json!([{"time": "2026-12-03T00:00:00Z", "type": "platform.runtimeDone",
                       "record": {"requestId": request_id, "status": "success"}}]);
    let r = support::http::request(
        "POST",
        &destination,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

/// One invocation (`r1`, the first): the function posts `runs` runs, Lambda reports the code
/// done, and by the extension's second `event/next` the collector has all of them.
fn invocation_is_delivered_before_the_next_event(
    fake: &FakeLambda,
    collector: &MockCollector,
    http: u16,
    prefix: &str,
    runs: usize,
) {
    fake.push(
        json!({"eventType": "INVOKE", "requestId": "r1"}),
        Duration::from_secs(10),
    );
    let batch = batches::batch(prefix, runs);
    function_posts(http, &batch);
    runtime_done(fake, "r1");
    fake.wait_next_calls(2, Duration::from_secs(10));
    let delivered: HashSet<String> = collector.accepted_run_ids().into_iter().collect();
    assert!(
        ids(&batch).is_subset(&delivered),
        "the invocation's runs were not delivered before the next event"
    );
}

fn ids(batch: &Value) -> HashSet<String> {
    batch["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Scenario: three invocations and a shutdown. Guarantees: every run of an invocation is at the
/// collector before the extension asks for the next event; during a collector outage it still
/// asks by the deadline and delivers the runs during a later invocation; `SHUTDOWN` ends the
/// process in time; nothing goes to `init/error`.
#[test]
fn each_invocations_runs_are_delivered_before_the_next_event_and_shutdown_is_in_time() {
    let mut collector = MockCollector::start();
    let fake = FakeLambda::start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let http = support::sidecar::free_port();
    let mut child = extension(&fake, &collector.url(), dir.path(), http);
    fake.wait_next_calls(1, Duration::from_secs(20));
    assert!(
        lock(&fake.state)
            .destination
            .as_deref()
            .is_some_and(|d| d.starts_with("http://127.0.0.1:")),
        "the telemetry listener was subscribed"
    );

    // Invocation 1: delivered before event/next.
    invocation_is_delivered_before_the_next_event(&fake, &collector, http, "lambda-inv1", 5);

    // Invocation 2, the collector down: event/next still comes before the deadline.
    collector.stop();
    let deadline = fake.push(
        json!({"eventType": "INVOKE", "requestId": "r2"}),
        Duration::from_millis(1500),
    );
    let second = batches::batch("lambda-inv2", 3);
    function_posts(http, &second);
    runtime_done(&fake, "r2");
    let asked = fake.wait_next_calls(3, Duration::from_secs(5));
    assert!(
        asked < deadline,
        "event/next came after the invocation's deadline"
    );

    // Invocation 3, the collector back: the runs of r2 go out now.
    collector.resume();
    fake.push(
        json!({"eventType": "INVOKE", "requestId": "r3"}),
        Duration::from_secs(10),
    );
    runtime_done(&fake, "r3");
    fake.wait_next_calls(4, Duration::from_secs(10));
    let delivered: HashSet<String> = collector.accepted_run_ids().into_iter().collect();
    assert!(
        ids(&second).is_subset(&delivered),
        "runs of r2 were not delivered in r3"
    );
    for request in collector.trace_requests() {
        if request.accepted() {
            assert_eq!(
                request.authorization(),
                Some(format!("Bearer {KEY}").as_str())
            );
        }
    }

    // Shutdown: gone before its deadline, cleanly.
    let deadline = fake.push(
        json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown"}),
        Duration::from_secs(2),
    );
    let status = wait_or_kill(&mut child, Duration::from_secs(5), "the extension");
    assert_eq!(status, Some(0));
    assert!(Instant::now() < deadline + Duration::from_millis(500));
    assert!(
        lock(&fake.state).errors.is_empty(),
        "{:?}",
        lock(&fake.state).errors
    );
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!logs.contains(KEY), "the key was logged");
}

/// Scenario: runs still undelivered at `SHUTDOWN` (collector down). Guarantees: the extension
/// leaves within the deadline and says once how many runs are lost with `/tmp`.
#[test]
fn a_shutdown_during_an_outage_ends_in_time_and_counts_what_is_lost() {
    let mut collector = MockCollector::start();
    collector.stop();
    let fake = FakeLambda::start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let http = support::sidecar::free_port();
    let mut child = extension(&fake, &collector.url(), dir.path(), http);
    fake.wait_next_calls(1, Duration::from_secs(20));
    fake.push(
        json!({"eventType": "INVOKE", "requestId": "r1"}),
        Duration::from_millis(800),
    );
    function_posts(http, &batches::batch("lambda-lost", 4));
    runtime_done(&fake, "r1");
    fake.wait_next_calls(2, Duration::from_secs(5));
    let deadline = fake.push(
        json!({"eventType": "SHUTDOWN", "shutdownReason": "timeout"}),
        Duration::from_millis(1000),
    );
    assert_eq!(
        wait_or_kill(&mut child, Duration::from_secs(5), "the extension"),
        Some(0)
    );
    assert!(Instant::now() < deadline + Duration::from_millis(500));
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let lost: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("they are lost"))
        .collect();
    assert_eq!(lost.len(), 1, "{logs}");
    assert!(lost[0].contains("undelivered_runs=4"), "{logs}");
}

/// Scenario: Lambda refuses the registration, or the telemetry subscription. Guarantees: the
/// process exits with an error naming the call; a failed subscription is reported with
/// `init/error` and its reason.
#[test]
fn registration_and_subscription_failures_are_clear() {
    let collector = MockCollector::start();
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeLambda::start(|s| s.fail_register = true);
    let mut child = extension(
        &fake,
        &collector.url(),
        dir.path(),
        support::sidecar::free_port(),
    );
    let status = wait_or_kill(&mut child, Duration::from_secs(10), "the extension");
    assert_eq!(status, Some(1));
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(logs.contains("register") && logs.contains("500"), "{logs}");

    let fake = FakeLambda::start(|s| s.fail_subscribe = true);
    let mut child = extension(
        &fake,
        &collector.url(),
        dir.path(),
        support::sidecar::free_port(),
    );
    let status = wait_or_kill(&mut child, Duration::from_secs(10), "the extension");
    assert_eq!(status, Some(1));
    let errors = lock(&fake.state).errors.clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "/2020-01-01/extension/init/error");
    assert_eq!(errors[0].1, "Extension.TelemetrySubscribe");
    assert!(
        errors[0].2["errorMessage"]
            .as_str()
            .unwrap()
            .contains("telemetry refused"),
        "{errors:?}"
    );
}

/// Scenario: the layer as `scripts/lambda-layer.sh` builds it (dev profile here), unpacked as
/// Lambda unpacks it under `/opt`. Guarantees: `extensions/dynamiq-sidecar` is executable and,
/// with the layer's config, registers, delivers an invocation's runs and stops on `SHUTDOWN`.
#[test]
fn the_layer_zip_holds_a_working_extension_and_its_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/lambda-layer.sh"))
        .env("LAYER_PROFILE", "dev")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/lambda-layer.sh failed");
    let zip = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let opt = tempfile::tempdir().unwrap();
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor i in z.infolist(): print(i.filename, oct(i.external_attr >> 16))\nz.extractall(sys.argv[2])\nimport os\nfor i in z.infolist(): os.chmod(os.path.join(sys.argv[2], i.filename), (i.external_attr >> 16) & 0o777)",
            &zip,
        ])
        .arg(opt.path())
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("extensions/dynamiq-sidecar 0o100755"),
        "{listing}"
    );
    assert!(
        listing.contains("dynamiq-sidecar/dynamiq-sidecar.toml 0o100644"),
        "{listing}"
    );

    let collector = MockCollector::start();
    let fake = FakeLambda::start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let http = support::sidecar::free_port();
    let config = opt.path().join("dynamiq-sidecar/dynamiq-sidecar.toml");
    let mut child = extension_from(
        opt.path().join("extensions/dynamiq-sidecar"),
        &fake,
        &collector.url(),
        dir.path(),
        http,
        &[("DYNAMIQ_SIDECAR_CONFIG", config.as_os_str())],
    );
    let started = Instant::now();
    while fake.next_calls().is_empty() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the layer's extension exited ({status}): {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no event/next");
        std::thread::sleep(Duration::from_millis(20));
    }
    invocation_is_delivered_before_the_next_event(&fake, &collector, http, "lambda-layer", 2);
    fake.push(
        json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown"}),
        Duration::from_secs(2),
    );
    assert_eq!(
        wait_or_kill(&mut child, Duration::from_secs(5), "the layer's extension"),
        Some(0)
    );
}

//! `Sidecar`: runs the real `dynamiq-sidecar` binary as a child process with a generated config
//! in a temp dir, for black-box tests.
//!
//! ```ignore
//! let collector = MockCollector::start();
//! let sidecar = Sidecar::builder(&collector.url())
//!     .access_key("sk-test")
//!     .set("forward.max_runs", 10)
//!     .merge_str("[buffer]\nfsync = \"never\"")
//!     .start();                       // waits for GET /healthz == 200
//! let (status, json) = sidecar.post_runs(&serde_json::json!({"runs": [...]}));
//! sidecar.kill9();                    // SIGKILL
//! sidecar.restart();                  // same config, same data dir
//! assert!(!sidecar.logs().contains("sk-test"));
//! ```
//!
//! The generated config (every key can be overridden):
//!
//! ```toml
//! [ingest]   http_addr = "127.0.0.1:<free>", grpc_addr = "127.0.0.1:<free>"
//! [upstream] url = <collector url>
//! [query]    upstream_url = <collector url>     # nothing may leave loopback
//! [buffer]   path = "<tempdir>/data"
//! [forward]  max_delay = "20ms", retry_initial = "50ms", retry_max = "500ms"
//! [log]      level = "dynamiq_sidecar=debug,info"   # more log lines to catch a leaked key
//! ```
//!
//! The access key goes in the environment (`DYNAMIQ_ACCESS_KEY`); inherited `DYNAMIQ_SIDECAR_*`,
//! `OTEL_EXPORTER_OTLP_*`, `DYNAMIQ_ACCESS_KEY` and `RUST_LOG` are removed so the host cannot
//! change the test. Stdout and
//! stderr go (appended, across restarts) to `<tempdir>/stdout.log` and `<tempdir>/stderr.log`.
//! On drop the process is killed; when the test is panicking the temp dir is kept and the log
//! tail printed.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{self, HttpResponse};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dynamiq-sidecar");

/// The program `Sidecar` runs: `$E2E_SIDECAR_BIN` when set (e.g. a release build, or a stand-in
/// while validating the harness), else [`BIN`].
pub fn bin() -> PathBuf {
    std::env::var_os("E2E_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// Client token `post_runs` sends (the sidecar must not forward it in `sidecar-key` mode).
pub const TEST_CLIENT_TOKEN: &str = "client-token-for-tests";

/// How long `start()`/`restart()` wait for `GET /healthz` to answer 200.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback port (bound then released; another process could take it, rarely). Never
/// the same port twice in one test process: the kernel may hand a just-released port out again,
/// which would give a sidecar the same HTTP and gRPC port.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port on loopback");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Deep-merges `overlay` into `base` (tables merge key by key; other values replace).
pub fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Builds a [`Sidecar`].
#[derive(Debug, Clone)]
pub struct SidecarBuilder {
    upstream_url: String,
    access_key: Option<String>,
    overrides: toml::Table,
    env: Vec<(String, String)>,
    health_timeout: Duration,
    nofile: Option<u64>,
}

impl SidecarBuilder {
    /// A sidecar forwarding to `upstream_url` (e.g. `MockCollector::url()`), with key
    /// `sk-sidecar-test`.
    pub fn new(upstream_url: &str) -> Self {
        Self {
            upstream_url: upstream_url.trim_end_matches('/').to_string(),
            access_key: Some("sk-sidecar-test".to_string()),
            overrides: toml::Table::new(),
            env: Vec::new(),
            health_timeout: HEALTH_TIMEOUT,
            nofile: None,
        }
    }

    /// The sidecar's own key (`DYNAMIQ_ACCESS_KEY`).
    pub fn access_key(mut self, key: &str) -> Self {
        self.access_key = Some(key.to_string());
        self
    }

    /// Starts without `DYNAMIQ_ACCESS_KEY` (e.g. with `upstream.access_key_file` instead).
    pub fn no_access_key(mut self) -> Self {
        self.access_key = None;
        self
    }

    /// Sets one key by dotted path, e.g. `set("forward.max_runs", 10)`.
    pub fn set(mut self, dotted: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = dotted.split('.').collect();
        let last = parts.pop().expect("non-empty key");
        let mut table = toml::Table::new();
        table.insert(last.to_string(), value.into());
        for part in parts.into_iter().rev() {
            let mut outer = toml::Table::new();
            outer.insert(part.to_string(), toml::Value::Table(table));
            table = outer;
        }
        merge_tables(&mut self.overrides, table);
        self
    }

    /// Merges a table over the generated config.
    pub fn merge(mut self, table: toml::Table) -> Self {
        merge_tables(&mut self.overrides, table);
        self
    }

    /// Merges a TOML snippet (e.g. `"[buffer]\nfsync = \"never\""`) over the generated config.
    pub fn merge_str(self, snippet: &str) -> Self {
        let table: toml::Table = snippet
            .parse()
            .unwrap_or_else(|e| panic!("invalid TOML override {snippet:?}: {e}"));
        self.merge(table)
    }

    /// An extra environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A buffer that fills fast: 16 KiB segments, 64 KiB in all (about 60 small batches).
    pub fn small_buffer(self) -> Self {
        self.set("buffer.segment_bytes", 16 * 1024)
            .set("buffer.max_bytes", 64 * 1024)
    }

    /// Runs the process with this file-descriptor limit, soft and hard (`ulimit -n` in `sh`,
    /// which then `exec`s the binary: the pid is the sidecar's).
    pub fn nofile_limit(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// How long to wait for `/healthz`.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    fn prepare(self) -> Sidecar {
        let dir = tempfile::Builder::new()
            .prefix("dynamiq-sidecar-test-")
            .tempdir()
            .expect("temp dir");
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let data_dir = dir.path().join("data");
        let mut config: toml::Table = format!(
            r#"
[ingest]
http_addr = "{http_addr}"
grpc_addr = "{grpc_addr}"

[upstream]
url = "{upstream}"

[query]
upstream_url = "{upstream}"

[buffer]
path = {data_dir}

[forward]
max_delay = "20ms"
retry_initial = "50ms"
retry_max = "500ms"

[log]
level = "dynamiq_sidecar=debug,info"
"#,
            upstream = self.upstream_url,
            data_dir = toml::Value::String(data_dir.display().to_string()),
        )
        .parse()
        .expect("generated config is TOML");
        merge_tables(&mut config, self.overrides);
        // The listeners may have been overridden (e.g. a port chosen before the sidecar starts).
        let addr_of = |key: &str, default: SocketAddr| {
            config
                .get("ingest")
                .and_then(|i| i.get(key))
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let http_addr = addr_of("http_addr", http_addr);
        let grpc_addr = addr_of("grpc_addr", grpc_addr);
        let config_path = dir.path().join("config.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).expect("config to TOML"),
        )
        .expect("write config");
        Sidecar {
            child: None,
            config_path,
            data_dir,
            http_addr,
            grpc_addr,
            access_key: self.access_key,
            env: self.env,
            health_timeout: self.health_timeout,
            nofile: self.nofile,
            starts: 0,
            dir: Some(dir),
        }
    }

    /// Spawns the sidecar and waits until `GET /healthz` answers 200 (panics with the logs if
    /// it exits or times out).
    pub fn start(self) -> Sidecar {
        let mut sidecar = self.prepare();
        sidecar.spawn();
        sidecar.wait_healthy();
        sidecar
    }

    /// Spawns the sidecar without waiting for health (for tests of start-up failures).
    pub fn spawn(self) -> Sidecar {
        let mut sidecar = self.prepare();
        sidecar.spawn();
        sidecar
    }
}

/// A running (or stopped) sidecar process and its temp dir.
pub struct Sidecar {
    child: Option<Child>,
    config_path: PathBuf,
    data_dir: PathBuf,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    access_key: Option<String>,
    env: Vec<(String, String)>,
    health_timeout: Duration,
    nofile: Option<u64>,
    starts: u32,
    dir: Option<tempfile::TempDir>,
}

impl Sidecar {
    /// A builder forwarding to `upstream_url`.
    pub fn builder(upstream_url: &str) -> SidecarBuilder {
        SidecarBuilder::new(upstream_url)
    }

    /// Starts with the default config and this key.
    pub fn start(upstream_url: &str, access_key: &str) -> Self {
        SidecarBuilder::new(upstream_url)
            .access_key(access_key)
            .start()
    }

    /// The temp dir holding config, data and logs.
    pub fn dir(&self) -> &Path {
        self.config_path.parent().expect("config has a parent dir")
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `buffer.path`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener (the SDK's `base_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The OTLP/gRPC listener's address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// How many times the process was spawned.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    fn log_file(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(name))
            .expect("open log file")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "sidecar already running");
        let program = bin();
        let mut cmd = match self.nofile {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&program);
                sh
            }
            None => Command::new(&program),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(self.log_file("stdout.log")))
            .stderr(Stdio::from(self.log_file("stderr.log")));
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("DYNAMIQ_SIDECAR_")
                || k.starts_with("OTEL_EXPORTER_OTLP_")
                || k == "DYNAMIQ_ACCESS_KEY"
                || k == "RUST_LOG"
            {
                cmd.env_remove(&key);
            }
        }
        if let Some(key) = &self.access_key {
            cmd.env("DYNAMIQ_ACCESS_KEY", key);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        self.starts += 1;
        self.child = Some(child);
    }

    /// Waits until `GET /healthz` answers 200; panics with the logs if the process exits or
    /// the health timeout passes.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + self.health_timeout;
        let url = format!("{}/healthz", self.url());
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "dynamiq-sidecar exited with {status} before becoming healthy\n{}",
                    self.log_report()
                );
            }
            if http::get(&url, Duration::from_millis(500)).is_ok_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "dynamiq-sidecar not healthy (GET /healthz != 200) after {:?}\n{}",
                    self.health_timeout,
                    self.log_report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait();
        self.child.is_some()
    }

    /// SIGKILL, then reap. No-op when not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// SIGTERM (via `kill -TERM <pid>`), then wait for the exit (up to drain time + margin).
    /// Panics, after a SIGKILL, if it does not exit within 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(30))
    }

    /// SIGTERM, then wait up to `timeout`; panics (after SIGKILL) when it does not exit.
    pub fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid().expect("sidecar not running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!(
                    "dynamiq-sidecar did not exit within {timeout:?} of SIGTERM\n{}",
                    self.log_report()
                );
            }
        }
    }

    /// Starts the process again with the same config and data dir (terminating it first if it
    /// is running) and waits for health.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.terminate();
        }
        self.spawn();
        self.wait_healthy();
    }

    /// Stdout then stderr of every start so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    fn log_report(&self) -> String {
        let logs = self.logs();
        let tail: String = {
            let start = logs.len().saturating_sub(8000);
            let start = (start..logs.len())
                .find(|i| logs.is_char_boundary(*i))
                .unwrap_or(logs.len());
            logs[start..].to_string()
        };
        format!(
            "--- config {} ---\n{}\n--- logs (tail) ---\n{tail}",
            self.config_path.display(),
            std::fs::read_to_string(&self.config_path).unwrap_or_default()
        )
    }

    /// A request to the sidecar's HTTP listener (`path` like `/v1/traces`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let url = format!("{}{path}", self.url());
        http::request(method, &url, headers, body, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// `POST /v1/traces` with `body` as JSON and `Authorization: Bearer TEST_CLIENT_TOKEN`;
    /// the whole response (status, headers, body).
    pub fn post_batch(&self, body: &Value) -> HttpResponse {
        self.post_batch_as(TEST_CLIENT_TOKEN, body)
    }

    /// `POST /v1/traces` with `body` as JSON and `Authorization: Bearer <token>` (e.g. a
    /// client's own key in passthrough mode).
    pub fn post_batch_as(&self, token: &str, body: &Value) -> HttpResponse {
        let bytes = serde_json::to_vec(body).expect("serialize body");
        let auth = format!("Bearer {token}");
        self.request(
            "POST",
            "/v1/traces",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            &bytes,
        )
    }

    /// [`Sidecar::post_batch`], returning the status and the parsed answer (`Value::Null` when
    /// not JSON).
    pub fn post_runs(&self, body: &Value) -> (u16, Value) {
        let r = self.post_batch(body);
        (r.status, r.json())
    }

    /// Posts `count` generated batches of `runs_each` runs (ids `{prefix}{i}-{j}`), asserting
    /// each is acknowledged; returns every acknowledged run id.
    pub fn post_generated(
        &self,
        prefix: &str,
        count: usize,
        runs_each: usize,
    ) -> std::collections::HashSet<String> {
        let mut acked = std::collections::HashSet::new();
        for i in 0..count {
            let batch = super::batches::batch(&format!("{prefix}{i}"), runs_each);
            let (status, answer) = self.post_runs(&batch);
            assert_eq!(status, 200, "batch {prefix}{i}: {answer}");
            acked.extend(super::batches::ids(&batch));
        }
        acked
    }

    /// The sum of every `/metrics` series named `name` whose labels include each of `labels`
    /// (`k="v"` strings); 0 when there is none.
    pub fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (series_name, series_labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest),
                    None => (series, ""),
                };
                (series_name == name && labels.iter().all(|want| series_labels.contains(want)))
                    .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// The process's peak resident set (`VmHWM` in `/proc/<pid>/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let pid = self.pid().expect("sidecar running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("VmHWM")
            * 1024
    }

    /// `GET /metrics` body (panics unless 200).
    pub fn metrics(&self) -> String {
        let r = self.request("GET", "/metrics", &[], &[]);
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            return;
        }
        if let Some(dir) = self.dir.take() {
            let report = self.log_report();
            let kept = dir.keep();
            eprintln!(
                "dynamiq-sidecar test dir kept at {}\n{report}",
                kept.display()
            );
        }
    }
}

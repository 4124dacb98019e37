//! Drives the Python side of the end-to-end tests: the venv with the real Dynamiq SDK
//! (`scripts/e2e/setup-venv.sh`, once per test binary) and `scripts/e2e/sdk_workflows.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/e2e/<name>`.
pub fn e2e_script(name: &str) -> PathBuf {
    repo_root().join("scripts").join("e2e").join(name)
}

static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The venv's python, creating the venv on first use in this process (cached on disk across
/// runs). Panics with the setup's output when it fails (e.g. PyPI unreachable): these tests
/// never skip silently.
pub fn e2e_python() -> PathBuf {
    let result = PYTHON.get_or_init(|| {
        let started = Instant::now();
        let script = e2e_script("setup-venv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): the e2e tests need a venv with the Dynamiq SDK, installed from \
                 PyPI by that script.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                script.display(),
                out.status
            ));
        }
        let python = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("{} printed no python path", script.display()))?;
        if !python.exists() {
            return Err(format!(
                "{} printed {}, which does not exist",
                script.display(),
                python.display()
            ));
        }
        if started.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "e2e venv built in {:.0?}: {}\n{stderr}",
                started.elapsed(),
                python.display()
            );
        }
        Ok(python)
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// One flush the SDK made, as `sdk_workflows.py` recorded it.
#[derive(Debug, Clone)]
pub struct Flush {
    /// Scenario that made it.
    pub scenario: String,
    /// Index over the whole script run.
    pub seq: u64,
    /// URL the SDK posted to.
    pub url: String,
    /// `Authorization` header the SDK sent.
    pub authorization: Option<String>,
    /// The body, parsed.
    pub body: Value,
    /// The exact body bytes (UTF-8).
    pub body_raw: String,
    /// HTTP status the SDK got (None when the send raised).
    pub status: Option<u16>,
    /// The answer, parsed (or a string).
    pub response: Value,
    /// Time the SDK's caller waited for this flush, ms.
    pub elapsed_ms: f64,
    /// Exception or problem, if any.
    pub error: Option<String>,
}

impl Flush {
    fn from_json(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Self {
            scenario: s("scenario").unwrap_or_default(),
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or_default(),
            url: s("url").unwrap_or_default(),
            authorization: s("authorization"),
            body: v.get("body").cloned().unwrap_or(Value::Null),
            body_raw: s("body_raw").unwrap_or_default(),
            status: v
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok()),
            response: v.get("response").cloned().unwrap_or(Value::Null),
            elapsed_ms: v
                .get("elapsed_ms")
                .and_then(Value::as_f64)
                .unwrap_or_default(),
            error: s("error"),
        }
    }
}

/// What one `sdk_workflows.py` invocation did.
#[derive(Debug)]
pub struct SdkRun {
    /// Exit code (None: killed).
    pub code: Option<i32>,
    /// The one-line JSON summary it printed.
    pub summary: Value,
    /// Everything it printed.
    pub stdout: String,
    /// Its stderr (SDK warnings/errors, check failures).
    pub stderr: String,
    /// Every flush, in order.
    pub flushes: Vec<Flush>,
}

impl SdkRun {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout and stderr, for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.code,
            self.stdout,
            tail(&self.stderr, 6000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Waits for `child` up to `timeout`, killing it then; its exit code (`None`: killed or by a
/// signal).
pub fn wait_or_kill(child: &mut std::process::Child, timeout: Duration, what: &str) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        match child
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for {what}: {e}"))
        {
            Some(status) => return status.code(),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs `sdk_workflows.py --base-url <base_url> --access-key <key> --scenario <scenario>
/// --runs <runs> --out <out_dir>/<scenario>.jsonl` (plus `extra` args) with the venv's python,
/// killing it after `timeout`.
pub fn run_sdk_workflows(
    base_url: &str,
    access_key: &str,
    scenario: &str,
    runs: usize,
    out_dir: &Path,
    extra: &[&str],
    timeout: Duration,
) -> SdkRun {
    let python = e2e_python();
    let out = out_dir.join(format!("sdk-{scenario}.jsonl"));
    let stdout_path = out_dir.join(format!("sdk-{scenario}.stdout"));
    let stderr_path = out_dir.join(format!("sdk-{scenario}.stderr"));
    let mut child = Command::new(&python)
        .arg("-W")
        .arg("ignore")
        .arg(e2e_script("sdk_workflows.py"))
        .args(["--base-url", base_url, "--access-key", access_key])
        .args(["--scenario", scenario, "--runs", &runs.to_string()])
        .arg("--out")
        .arg(&out)
        .args(extra)
        .env_remove("DYNAMIQ_ACCESS_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
    let code = wait_or_kill(&mut child, timeout, "sdk_workflows.py");
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let flushes = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad line in {}: {e}", out.display()));
            Flush::from_json(&v)
        })
        .collect();
    SdkRun {
        code,
        summary,
        stdout,
        stderr,
        flushes,
    }
}

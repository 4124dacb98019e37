//! The Python wheel, as its users get it: `scripts/wheel/build.sh` builds it with maturin
//! (`bindings = "bin"`, the dev profile so the test build is reused) and installs it into a fresh
//! venv. The `dynamiq-sidecar` found on that venv's `PATH` then runs with no arguments (built-in
//! defaults plus environment overrides), is driven by the real Dynamiq SDK end to end, and the
//! package's own module (`find_sidecar_bin`, `local_sidecar`) starts one for a script.
//!
//! maturin comes from PyPI on first use (cached in `target/wheel/maturin-venv`); the SDK from
//! the end-to-end venv (`scripts/e2e/setup-venv.sh`). When either cannot be installed the test
//! fails, it does not skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::collector::split_batch;
use support::python::{e2e_python, run_sdk_workflows, wait_or_kill};
use support::{MockCollector, batches, wait_until};

const KEY: &str = "sk-wheel-e2e-5d0a";

/// Builds and installs the wheel; the fresh venv's directory.
fn installed_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/wheel/build.sh"))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/wheel/build.sh");
    assert!(out.status.success(), "scripts/wheel/build.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("the venv path").trim())
}

fn free_port() -> u16 {
    support::sidecar::free_port()
}

/// Waits for `GET /healthz` on `base_url` to answer 200.
fn wait_healthy(base_url: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = support::http::get(&format!("{base_url}/healthz"), Duration::from_secs(1))
            && r.status == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the wheel's dynamiq-sidecar exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "no /healthz within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_wheel_puts_a_working_sidecar_on_the_venv_path() {
    // The SDK venv first, so a setup failure is reported before anything else starts.
    e2e_python();
    let venv = installed_venv();
    let bin_dir = venv.join("bin");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // `--version` from the venv's PATH: Cargo.toml's version.
    let version = Command::new("dynamiq-sidecar")
        .arg("--version")
        .env("PATH", &path)
        .output()
        .expect("dynamiq-sidecar on the venv's PATH");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("dynamiq-sidecar {}", env!("CARGO_PKG_VERSION"))
    );

    // No arguments, no config file: the built-in defaults, with the environment's overrides.
    let collector = MockCollector::start();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let base_url = format!("http://127.0.0.1:{http}");
    let mut child = Command::new("dynamiq-sidecar")
        .env("PATH", &path)
        .env("DYNAMIQ_ACCESS_KEY", KEY)
        .env(
            "DYNAMIQ_SIDECAR_INGEST_HTTP_ADDR",
            format!("127.0.0.1:{http}"),
        )
        .env(
            "DYNAMIQ_SIDECAR_INGEST_GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("DYNAMIQ_SIDECAR_UPSTREAM_URL", collector.url())
        .env("DYNAMIQ_SIDECAR_BUFFER_PATH", dir.path().join("buffer"))
        .env("DYNAMIQ_SIDECAR_FORWARD_MAX_DELAY", "20ms")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn the wheel's dynamiq-sidecar");
    wait_healthy(&base_url, &mut child);

    // The real Dynamiq SDK, pointed at it with only `base_url` changed.
    let sdk = run_sdk_workflows(
        &base_url,
        "sk-client",
        "python",
        2,
        dir.path(),
        &[],
        Duration::from_secs(120),
    );
    assert!(sdk.success(), "sdk_workflows.py failed\n{}", sdk.report());
    let mut sent = std::collections::HashSet::new();
    for flush in &sdk.flushes {
        assert_eq!(
            flush.status,
            Some(200),
            "flush {}: {:?}",
            flush.seq,
            flush.error
        );
        let (runs, _) = split_batch(flush.body_raw.as_bytes()).unwrap();
        sent.extend(runs.iter().filter_map(support::collector::run_id));
    }
    assert!(!sent.is_empty(), "the SDK sent no run");
    collector.wait_for_run_ids(&sent, Duration::from_secs(30));
    for request in collector.trace_requests() {
        assert_eq!(
            request.authorization(),
            Some(format!("Bearer {KEY}").as_str()),
            "every delivery carries the sidecar's key"
        );
    }
    // SIGTERM: a clean stop.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(
        wait_or_kill(&mut child, Duration::from_secs(30), "the wheel's sidecar"),
        Some(0)
    );
    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!logs.contains(KEY), "the key was logged");

    // The package's module: find the binary, and run one for a script.
    collector.clear();
    let script = r#"
import json, sys, urllib.request
from dynamiq_sidecar import find_sidecar_bin, local_sidecar
print(find_sidecar_bin())
with local_sidecar(access_key=sys.argv[1], upstream_url=sys.argv[2],
                   env={"DYNAMIQ_SIDECAR_FORWARD_MAX_DELAY": "20ms"}) as base_url:
    request = urllib.request.Request(base_url + "/v1/traces", data=sys.stdin.buffer.read(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        print(answer.status, base_url)
"#;
    let batch = batches::batch("wheel-module", 3);
    let mut python = Command::new(bin_dir.join("python"))
        .args(["-c", script, KEY, &collector.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        python
            .stdin
            .take()
            .unwrap()
            .write_all(batch.to_string().as_bytes())
            .unwrap();
    }
    let out = python.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        Path::new(lines.next().unwrap().trim()),
        bin_dir.join("dynamiq-sidecar")
    );
    assert!(
        lines.next().unwrap().starts_with("200 http://127.0.0.1:"),
        "{stdout}"
    );
    // Leaving the `with` block stopped it with SIGTERM, which drained the runs first.
    wait_until(
        "the module's sidecar delivered",
        Duration::from_secs(10),
        || collector.accepted_run_ids().len() >= 3,
    );
}

//! The trace viewer (`GET /`): the page itself (self-contained, no external URLs, served as
//! HTML with a strict CSP), `GET /favicon.ico` → 204, and a headless-Chromium run of the page
//! against a real sidecar (`scripts/browser/viewer_check.mjs`, prepared by
//! `scripts/browser/setup.sh`: Debian's chromium via apt-get when missing, playwright-core via
//! npm into `target/browser-node`).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::python::repo_root;
use support::{MockCollector, Sidecar, wait_until};

const KEY: &str = "sk-viewer-test-key-7c21";
const WAIT: Duration = Duration::from_secs(15);
const OK_TRACE: &str = "217f4289-aab5-48c6-ae28-2bface088d13";
const FAILED_TRACE: &str = "a2cee7db-5362-4b05-a61d-f345587335fd";
/// The failing node's (Counter) `error.message` in workflow-node-failure.json.
const FAILED_NODE_ERROR: &str = "Code execution error: boom in python node";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A sidecar holding the two workflow fixtures, once `GET /v1/traces` lists both.
fn sidecar_with_fixtures(collector: &MockCollector) -> Sidecar {
    let sidecar = Sidecar::start(&collector.url(), KEY);
    for name in ["workflow-success.json", "workflow-node-failure.json"] {
        let r = sidecar.post_batch(&fixture(name));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    wait_until("both fixtures listed by GET /v1/traces", WAIT, || {
        let r = sidecar.request("GET", "/v1/traces", &[], b"");
        r.status == 200 && {
            let list = r.json();
            let ids: Vec<&str> = list["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t["id"].as_str()).collect())
                .unwrap_or_default();
            ids.contains(&OK_TRACE) && ids.contains(&FAILED_TRACE)
        }
    });
    sidecar
}

#[test]
fn the_page_is_self_contained_html() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::start(&collector.url(), KEY);

    let r = sidecar.request("GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r.header("content-type").unwrap_or_default().to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = r
        .header("content-security-policy")
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    let page = r.text();
    for marker in [
        "<!doctype html>",
        "<style>",
        "<script>",
        "data-testid=\"trace-list\"",
        "data-testid=\"status-filter\"",
        "data-testid=\"from-filter\"",
        "data-testid=\"to-filter\"",
        "data-testid=\"prev\"",
        "data-testid=\"next\"",
        "data-testid=\"page-info\"",
        "data-testid=\"trace-panel\"",
        "data-testid=\"download\"",
        "/v1/traces?",
        "/v1/traces/export?",
        "started_at:gte",
        "started_at:lte",
        "parent_run_id",
        "Download JSON",
    ] {
        assert!(page.contains(marker), "the page lacks {marker:?}");
    }
    // Offline: nothing is loaded from anywhere else, and no data goes through innerHTML.
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!page.contains(external), "the page contains {external:?}");
    }
    assert!(!page.contains("innerHTML"), "the page uses innerHTML");
    assert!(!page.contains("insertAdjacentHTML"));

    let favicon = sidecar.request("GET", "/favicon.ico", &[], b"");
    assert_eq!(favicon.status, 204);
    assert!(favicon.body.is_empty());
}

#[test]
fn the_page_needs_no_token_but_its_data_does() {
    let collector = MockCollector::start();
    let sidecar = Sidecar::builder(&collector.url())
        .access_key(KEY)
        .env("DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN", "viewer-token")
        .start();
    assert_eq!(sidecar.request("GET", "/", &[], b"").status, 200);
    assert_eq!(sidecar.request("GET", "/v1/traces", &[], b"").status, 401);
    let ok = sidecar.request(
        "GET",
        "/v1/traces",
        &[("Authorization", "Bearer viewer-token")],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// `scripts/browser/setup.sh`: chromium (apt-get, when missing) and playwright-core; returns the
/// node_modules dir. Panics with the script's output when it fails: this test never skips.
fn browser_setup() -> PathBuf {
    let script = repo_root().join("scripts/browser/setup.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}): the viewer's browser test needs /usr/bin/chromium (apt-get install \
         chromium chromium-driver) and playwright-core (npm).\n--- stdout ---\n{stdout}\n--- \
         stderr ---\n{stderr}",
        script.display(),
        out.status
    );
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("{} printed no node_modules path", script.display()));
    assert!(dir.join("playwright-core").is_dir(), "{}", dir.display());
    dir
}

#[test]
fn headless_chromium_filters_and_opens_the_failing_trace() {
    let node_modules = browser_setup();
    let collector = MockCollector::start();
    let sidecar = sidecar_with_fixtures(&collector);

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    std::fs::create_dir_all(&target).unwrap();
    let screenshot = target.join("viewer-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = repo_root().join("scripts/browser/viewer_check.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("{}/", sidecar.url()))
        .arg(FAILED_TRACE)
        .arg(FAILED_NODE_ERROR)
        .arg(&screenshot)
        .env("NODE_PATH", &node_modules)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "viewer_check.mjs failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
        out.status,
        sidecar.logs()
    );
    assert!(stdout.contains("viewer_check: ok"), "{stdout}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

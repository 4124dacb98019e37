//! Shared helpers for the integration tests (`mod support;` in a test file).
//!
//! - [`collector::MockCollector`]: a scriptable stand-in for the Dynamiq collector.
//! - [`sidecar::Sidecar`]: the real binary as a child process with a generated config.
//! - [`http`]: a tiny blocking HTTP/1.1 client for loopback URLs.
//! - [`tls_proxy::TlsProxy`]: TLS in front of a loopback server, with a test CA.
//! - [`python`]: the e2e venv with the real Dynamiq SDK and `scripts/e2e/sdk_workflows.py`.
//!
//! Each test binary uses a subset of these, hence `dead_code` and `unused_imports` are allowed here.
#![allow(dead_code, unused_imports)]

pub mod batches;
pub mod collector;
pub mod http;
pub mod python;
pub mod sidecar;
pub mod tls_proxy;

pub use collector::{MockCollector, MockResponse, RecordedRequest};
pub use sidecar::{Sidecar, SidecarBuilder};

/// The value of the sample `name` (labels included, e.g. `x_total{reason="a"}`) in a
/// `/metrics` text; 0 when absent.
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls `ok` every 25 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

//! The Helm chart (`helm/dynamiq-sidecar`): runs `scripts/helm-test.sh`, which lints the chart,
//! renders every mode with its `ci/*.yaml` values for Kubernetes 1.28/1.29/1.33, validates every
//! manifest with `kubernetes-validate --strict`, asserts the essentials (native sidecar and its
//! fallback, probes, Secrets mounted as files, securityContext, PVC per gateway pod, inbound
//! token required off loopback), shows that `values.schema.json` rejects typos and wrong types,
//! and runs this build's binary on what the chart renders (`check-config` on every config, the
//! sidecar-mode exec probes against a running sidecar, SIGTERM within the grace period).
//!
//! The script's Python venv (helm-python-sdk, kubernetes-validate; pinned in
//! `helm/test/requirements.txt`) is built on first use under `target/helm-venv` and then reused;
//! when it cannot be built (no PyPI) the test fails, it does not skip.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn helm_chart_lints_renders_validates_and_matches_the_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("scripts/helm-test.sh"))
        .current_dir(root)
        .env("DYNAMIQ_SIDECAR_BIN", env!("CARGO_BIN_EXE_dynamiq-sidecar"))
        .output()
        .expect("cannot run bash scripts/helm-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/helm-test.sh failed ({}) after {:.1?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        started.elapsed()
    );
    // The script ends with "helm-chart: N passed, 0 failed"; make sure it really ran its checks
    // against this build's binary.
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("helm-chart: "))
        .unwrap_or_else(|| panic!("no summary line in the script's output\n{stdout}"));
    let passed: usize = summary
        .trim_start_matches("helm-chart: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {summary:?}"));
    assert!(
        summary.ends_with(" 0 failed") && passed >= 50,
        "{summary}\n{stdout}"
    );
    assert!(
        stdout.contains("== the real binary"),
        "the checks against the binary did not run\n{stdout}"
    );
}

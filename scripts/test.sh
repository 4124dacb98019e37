#!/usr/bin/env bash
# The whole test suite: formatting and lints, unit tests, integration tests (the real binary
# against a mock collector on loopback), the reliability short suite and the end-to-end tests
# with the real Dynamiq SDK (its Python venv is created under target/ on first use).
# CI runs exactly this (.ci/run). Extra arguments go to `cargo test`.
set -uo pipefail
set -e
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs)" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets --quiet -- -D warnings
echo "== cargo check (the library and binary alone: no dev-dependency features)"
cargo check --locked --lib --bins --quiet
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --all-targets "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

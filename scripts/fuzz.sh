#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on its kept corpus, then minimises
# the corpus. Needs cargo-fuzz (installed here if missing) and works with the stable toolchain
# through RUSTC_BOOTSTRAP=1. Crashes land in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(parse_batch envelope_decode segment_recovery otlp_decode)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${TARGETS[@]}"; do
  echo "== $t for ${SECONDS_EACH}s"
  cargo fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 2>&1 \
    | grep -E "^Done|ERROR|SUMMARY|panicked" || true
  cargo fuzz cmin -O "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
done

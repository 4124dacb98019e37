#!/usr/bin/env bash
# The reliability suite (tests/reliability.rs plus the durability and forwarding scenarios).
#   scripts/reliability.sh          short version (what CI runs inside scripts/test.sh)
#   scripts/reliability.sh --full   50 kill -9 rounds, 400-batch fault mix, optimised build
# Prints one "reliability: <scenario> acked=… delivered=… lost=0 duplicates=…" line per scenario.
# The disk-full scenarios mount a 1 MiB tmpfs and need root.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${1:-}" = "--full" ]; then
  export RELIABILITY_ROUNDS=50 RELIABILITY_BATCHES=400
  # Optimised like release but without fat LTO (minutes of linking per test binary).
  profile=(--profile reliability)
fi
cargo test --locked "${profile[@]}" --test reliability --test durability --test forwarding -- --nocapture --test-threads 2 2>&1 \
  | grep -E "^reliability:|^test |test result|panicked|lost"

#!/usr/bin/env bash
# SDK-visible flush time, Dynamiq SDK -> collector stub (80 ms) vs. SDK -> sidecar -> same stub.
#
#   scripts/e2e/bench_flush.sh <path/to/dynamiq-sidecar> [--runs 200] [--warmup 10] [--delay-ms 80] [--keep]
#
# Builds/reuses the e2e venv, then runs bench_flush.py with it (see that file). Prints a JSON
# report on stdout (means, p50, p99, ratios, delivery check) and a small table on stderr.
# Use a release build for numbers that mean something: cargo build --release.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 <path/to/dynamiq-sidecar> [--runs N] [--warmup N] [--delay-ms MS] [--keep]" >&2
  exit 2
fi
python="$("$here/setup-venv.sh" | tail -n 1)"
exec "$python" -W ignore "$here/bench_flush.py" --python "$python" "$@"

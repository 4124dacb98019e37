#!/usr/bin/env bash
# Idle RSS of the sidecar (BENCHMARKS §9): starts BIN with config/dynamiq-sidecar.toml in a
# scratch directory N times, reads VmRSS, RssAnon and RssFile after 2.5 s idle, stops it.
# With --cold, drops the page cache before each start (needs root): RssFile is the binary's and
# libc's code mapped from the page cache, and how much a start maps depends on the cache's state.
#
# Usage: scripts/rss-idle.sh [BIN] [N] [--cold]
#        (default BIN: target/release/dynamiq-sidecar, built if missing; N: 5)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-target/release/dynamiq-sidecar}"
N="${2:-5}"
COLD="${3:-}"
[ -x "$BIN" ] || cargo build --release --quiet --bin dynamiq-sidecar
BIN="$(realpath "$BIN")"
CONFIG="$(realpath config/dynamiq-sidecar.toml)"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
echo "VmRSS_KiB RssAnon_KiB RssFile_KiB"
for _ in $(seq "$N"); do
  if [ "$COLD" = --cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  "$BIN" run --config "$CONFIG" >/dev/null 2>&1 &
  PID=$!
  sleep 2.5
  awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print r, a, f}' "/proc/$PID/status"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"/*
  sleep 0.5
done

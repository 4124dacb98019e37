#!/usr/bin/env bash
# Ingest load benchmark: requests/s with the real 18 KB SDK fixture body, wrk with 2 threads and
# 32 connections, against (1) a no-op hyper server (the baseline, same run), (2) two validating
# floors: the no-op server plus the sidecar's own body check, and plus a serde_json syntax check
# only (examples/validating_server.rs: what any receiver that validates pays before it stores
# anything), (3) the sidecar with fsync = "always", (4) with fsync = "never", (5) with "never" and
# duplicate suppression off, so that every run is also forwarded (wrk posts one body over and
# over; with suppression on, the forwarder reads each copy back but sends only the first).
# Also prints the disk's own fdatasync ceiling (dd), the CPU time (user + system) each server
# spends per request, and the sidecar's RSS idle and under load. Loopback only.
#
# Usage: scripts/load.sh [DURATION_SECONDS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
BODY=tests/fixtures/workflow-success.json
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null || ! command -v bc >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk bc) >/dev/null
fi
cargo build --release --quiet --bin dynamiq-sidecar --example noop_server --example validating_server
BIN=target/release/dynamiq-sidecar
NOOP=target/release/examples/noop_server
VALIDATING=target/release/examples/validating_server

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer client"
local f = io.open("$BODY", "rb"); wrk.body = f:read("*a"); f:close()
LUA

wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
# CPU time (user + system, clock ticks) a process has used so far, and per request of the last
# wrk run: what a server spends on each request, whatever wrk takes of the shared cores.
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
TICKS_PER_S=$(getconf CLK_TCK)
cpu_us_per_req() { echo "($2 - $1) * 1000000 / $TICKS_PER_S / $(awk '/requests in/ {print $1}' "$WORK/wrk.out")" | bc -l; }
run_wrk() { wrk -t2 -c32 -d"${DURATION}s" -s "$WORK/post.lua" "$1" | tee "$WORK/wrk.out" >&2; awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out"; }

# Collector black hole for the sidecar (not loaded by wrk).
"$NOOP" 127.0.0.1:19001 2>/dev/null & wait_port 19001

echo "== baseline: no-op hyper server" >&2
"$NOOP" 127.0.0.1:19000 2>/dev/null & NOOP_PID=$!; wait_port 19000
T0=$(cpu_ticks $NOOP_PID)
BASE=$(run_wrk http://127.0.0.1:19000/v1/traces)
BASE_CPU=$(cpu_us_per_req "$T0" "$(cpu_ticks $NOOP_PID)")
kill $NOOP_PID; wait $NOOP_PID 2>/dev/null || true

declare -A FLOOR FLOOR_CPU
for MODE in sidecar syntax; do
  echo "== floor: no-op server + $MODE check" >&2
  "$VALIDATING" 127.0.0.1:19000 $MODE 2>/dev/null & FLOOR_PID=$!; wait_port 19000
  T0=$(cpu_ticks $FLOOR_PID)
  FLOOR[$MODE]=$(run_wrk http://127.0.0.1:19000/v1/traces)
  FLOOR_CPU[$MODE]=$(cpu_us_per_req "$T0" "$(cpu_ticks $FLOOR_PID)")
  grep -q Non-2xx "$WORK/wrk.out" && { echo "the validating server refused the fixture" >&2; exit 1; }
  kill $FLOOR_PID; wait $FLOOR_PID 2>/dev/null || true
done

# "noindex": fsync = always with query.index = false (the trace index's cost, same run).
# "forward-all": fsync = never with forward.dedup_entries = 0 (every copy forwarded).
VARIANTS=(always noindex never forward-all)
declare -A RPS IDLE LOADED CPU
for V in "${VARIANTS[@]}"; do
  FSYNC=$V; INDEX=true; DEDUP=100000
  [ "$V" = noindex ] && { FSYNC=always; INDEX=false; }
  [ "$V" = forward-all ] && { FSYNC=never; DEDUP=0; }
  echo "== sidecar $V" >&2
  rm -rf "$WORK/data"
  cat > "$WORK/sidecar.toml" <<TOML
[ingest]
http_addr = "127.0.0.1:19002"
grpc_addr = "127.0.0.1:19003"
[upstream]
url = "http://127.0.0.1:19001"
[buffer]
path = "$WORK/data"
fsync = "$FSYNC"
max_bytes = 4294967296
[forward]
requests_per_second = 0
runs_per_second = 0
dedup_entries = $DEDUP
[query]
index = $INDEX
[log]
level = "warn"
TOML
  DYNAMIQ_ACCESS_KEY=bench-key "$BIN" run --config "$WORK/sidecar.toml" & PID=$!; wait_port 19002
  sleep 1; IDLE[$V]=$(rss_kib $PID)
  ( sleep $((DURATION / 2)); rss_kib $PID > "$WORK/rss" ) &
  T0=$(cpu_ticks $PID)
  RPS[$V]=$(run_wrk http://127.0.0.1:19002/v1/traces)
  CPU[$V]=$(cpu_us_per_req "$T0" "$(cpu_ticks $PID)")
  LOADED[$V]=$(cat "$WORK/rss")
  kill -TERM $PID; wait $PID 2>/dev/null || true
done

echo "== disk: dd bs=1M count=1000 conv=fdatasync" >&2
DD=$(dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1000 conv=fdatasync 2>&1 | tail -1); rm -f "$WORK/dd.bin"
echo "$DD" >&2

BODY_BYTES=$(stat -c %s "$BODY")
echo
# row LABEL REQ_PER_S CPU_US [RATIO_TO_FLOOR] [RSS_IDLE_KIB] [RSS_LOADED_KIB]
row() {
  printf "| %s | %.0f | %.2f | %s | %.0f | %.0f | %s | %s |\n" "$1" "$2" "$(echo "$2/$BASE" | bc -l)" "${4:-}" \
    "$(echo "$2*$BODY_BYTES/1000000" | bc -l)" "$3" "${5:+$5 KiB}" "${6:+$6 KiB}"
}
echo "| target | req/s | ratio to no-op | ratio to the validating floor | MB/s of body | CPU µs/request | RSS idle | RSS under load |"
echo "|---|---|---|---|---|---|---|---|"
row "no-op hyper server (baseline)" "$BASE" "$BASE_CPU"
row "floor: no-op + the sidecar's body check" "${FLOOR[sidecar]}" "${FLOOR_CPU[sidecar]}" 1.00
row "floor: no-op + serde_json syntax check only" "${FLOOR[syntax]}" "${FLOOR_CPU[syntax]}"
for V in "${VARIANTS[@]}"; do
  case $V in
    noindex) LABEL="fsync=always, query.index=false" ;;
    forward-all) LABEL="fsync=never, forward.dedup_entries=0 (every copy forwarded)" ;;
    *) LABEL="fsync=$V" ;;
  esac
  row "sidecar $LABEL" "${RPS[$V]}" "${CPU[$V]}" "$(printf %.2f "$(echo "${RPS[$V]}/${FLOOR[sidecar]}" | bc -l)")" "${IDLE[$V]}" "${LOADED[$V]}"
done
printf "trace index cost (fsync=always, index on vs off): %.1f %%\n" "$(echo "(1-${RPS[always]}/${RPS[noindex]})*100" | bc -l)"
echo
echo "disk: $DD"

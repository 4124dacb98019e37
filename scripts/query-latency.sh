#!/usr/bin/env bash
# GET /v1/traces latency with TRACES traces retained (default 100000): starts a no-op collector
# and the sidecar on loopback (query.max_bytes raised so every trace stays), then runs
# examples/query_latency, which posts the traces and times each query kind against the
# GET /healthz baseline on the same connection.
#
# Usage: scripts/query-latency.sh [TRACES] [REQUESTS_PER_QUERY]   (defaults 100000, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
TRACES="${1:-100000}"
REQUESTS="${2:-500}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin dynamiq-sidecar --example noop_server --example query_latency
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }

target/release/examples/noop_server 127.0.0.1:19301 2>/dev/null & wait_port 19301
cat > "$WORK/sidecar.toml" <<TOML
[ingest]
http_addr = "127.0.0.1:19302"
grpc_addr = "127.0.0.1:19303"
[upstream]
url = "http://127.0.0.1:19301"
[buffer]
path = "$WORK/data"
[forward]
requests_per_second = 0
runs_per_second = 0
[query]
max_bytes = 1073741824
[log]
level = "warn"
TOML
DYNAMIQ_ACCESS_KEY=bench-key target/release/dynamiq-sidecar run --config "$WORK/sidecar.toml" & PID=$!
wait_port 19302
target/release/examples/query_latency http://127.0.0.1:19302 "$TRACES" "$REQUESTS"
echo "sidecar RSS with the traces held: $(awk '/VmRSS/ {print $2}' /proc/$PID/status) KiB"

#!/usr/bin/env bash
# OTLP ingest load benchmark: spans/s with durable acknowledgement, 2 cores, loopback only.
# Body: the GenAI fixture's spans repeated into one 500-span OTLP/protobuf request (the OTel
# SDKs' default batch size). Measured in the same run:
#   OTLP/HTTP protobuf (wrk -t2 -c32): a no-op OTLP/HTTP receiver on hyper that reads and
#     decodes each request (baseline), and a hyper server that only reads the body, vs the sidecar
#   OTLP/gRPC (examples/otlp_load, 32 callers): a no-op tonic TraceService (baseline) vs the sidecar
# The sidecar runs with fsync = "always" (the default: every ack is fsynced) and "never", and
# forwards everything to a no-op collector meanwhile.
#
# Usage: scripts/load-otlp.sh [DURATION_SECONDS]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null || ! command -v bc >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  (apt-get update -qq && apt-get install -y -qq wrk bc) >/dev/null
fi
cargo build --release --quiet --bin dynamiq-sidecar --example noop_server --example otlp_load
BIN=target/release/dynamiq-sidecar
NOOP=target/release/examples/noop_server
LOAD=target/release/examples/otlp_load
BODY="$WORK/body.pb"
"$LOAD" body "$BODY" 25
SPANS=500

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-protobuf"
local f = io.open("$BODY", "rb"); wrk.body = f:read("*a"); f:close()
LUA

wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
# Prints spans/s; fails loudly when any response was not 2xx.
http_spans() {
  wrk -t2 -c32 -d"${DURATION}s" -s "$WORK/post.lua" "$1" | tee "$WORK/wrk.out" >&2
  if grep -q "Non-2xx" "$WORK/wrk.out"; then echo "non-2xx responses: the run is invalid" >&2; exit 1; fi
  awk -v s=$SPANS '/Requests\/sec/ {print $2 * s}' "$WORK/wrk.out"
}
grpc_spans() {
  read -r reqs spans secs errors < <("$LOAD" grpc "$1" "$BODY" 32 "$DURATION")
  echo "grpc: $reqs requests, $spans spans in ${secs}s, $errors errors" >&2
  if [ "$errors" != 0 ]; then echo "gRPC errors: the run is invalid" >&2; exit 1; fi
  echo "$spans / $secs" | bc -l
}

"$NOOP" 127.0.0.1:19101 2>/dev/null & wait_port 19101   # collector black hole for the sidecar

echo "== baseline: no-op OTLP/HTTP receiver (reads and decodes), protobuf" >&2
"$LOAD" noop-http 127.0.0.1:19105 & P=$!; wait_port 19105
BASE_HTTP=$(http_spans http://127.0.0.1:19105/v1/traces); kill $P; wait $P 2>/dev/null || true
echo "== reference: hyper server that only reads the body" >&2
"$NOOP" 127.0.0.1:19100 2>/dev/null & P=$!; wait_port 19100
READ_ONLY=$(http_spans http://127.0.0.1:19100/v1/traces); kill $P; wait $P 2>/dev/null || true
echo "== baseline: no-op tonic TraceService, OTLP/gRPC" >&2
"$LOAD" noop-grpc 127.0.0.1:19104 & P=$!; wait_port 19104
BASE_GRPC=$(grpc_spans http://127.0.0.1:19104); kill $P; wait $P 2>/dev/null || true

# "noindex": fsync = always with query.index = false (the trace index's cost, same run).
VARIANTS=(always noindex never)
declare -A HTTP GRPC
for V in "${VARIANTS[@]}"; do
  FSYNC=$V; INDEX=true
  [ "$V" = noindex ] && { FSYNC=always; INDEX=false; }
  for PROTO in http grpc; do
    echo "== sidecar $V $PROTO" >&2
    rm -rf "$WORK/data"
    cat > "$WORK/sidecar.toml" <<TOML
[ingest]
http_addr = "127.0.0.1:19102"
grpc_addr = "127.0.0.1:19103"
[upstream]
url = "http://127.0.0.1:19101"
[buffer]
path = "$WORK/data"
fsync = "$FSYNC"
max_bytes = 4294967296
[forward]
requests_per_second = 0
runs_per_second = 0
[query]
index = $INDEX
[log]
level = "warn"
TOML
    DYNAMIQ_ACCESS_KEY=bench-key "$BIN" run --config "$WORK/sidecar.toml" & PID=$!; wait_port 19102; wait_port 19103
    if [ $PROTO = http ]; then HTTP[$V]=$(http_spans http://127.0.0.1:19102/v1/traces)
    else GRPC[$V]=$(grpc_spans http://127.0.0.1:19103); fi
    kill -TERM $PID; wait $PID 2>/dev/null || true
  done
done

echo
echo "| target | OTLP/HTTP protobuf spans/s | ratio | OTLP/gRPC spans/s | ratio |"
echo "|---|---|---|---|---|"
printf "| body-reading hyper server (reference) | %.0f | %.2f | | |\n" "$READ_ONLY" "$(echo "$READ_ONLY/$BASE_HTTP" | bc -l)"
printf "| no-op OTLP receiver (baseline: hyper+prost / tonic) | %.0f | 1.00 | %.0f | 1.00 |\n" "$BASE_HTTP" "$BASE_GRPC"
for V in "${VARIANTS[@]}"; do
  case $V in noindex) LABEL="fsync=always, query.index=false" ;; *) LABEL="fsync=$V" ;; esac
  printf "| sidecar %s | %.0f | %.2f | %.0f | %.2f |\n" "$LABEL" "${HTTP[$V]}" "$(echo "${HTTP[$V]}/$BASE_HTTP" | bc -l)" \
    "${GRPC[$V]}" "$(echo "${GRPC[$V]}/$BASE_GRPC" | bc -l)"
done
printf "trace index cost (fsync=always, index on vs off): HTTP %.1f %%, gRPC %.1f %%\n" \
  "$(echo "(1-${HTTP[always]}/${HTTP[noindex]})*100" | bc -l)" "$(echo "(1-${GRPC[always]}/${GRPC[noindex]})*100" | bc -l)"

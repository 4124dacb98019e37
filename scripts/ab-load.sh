#!/usr/bin/env bash
# Alternating A/B load runs of the sidecar under two settings (same binary, same moments): this
# machine's throughput drifts by tens of percent, so only pairs run back to back compare.
# Loopback only; the sidecar (fsync = "always") forwards to a no-op collector.
#
# Usage: scripts/ab-load.sh MODE ROUNDS SECONDS 'SETTINGS A' 'SETTINGS B'
#   MODE: otlp-http (500-span protobuf bodies, wrk), otlp-grpc (examples/otlp_load), sdk (the 18 KB
#   SDK fixture, wrk). SETTINGS: space-separated configuration overrides from the environment
#   (DYNAMIQ_SIDECAR_<SECTION>_<KEY>=value), or '' for the defaults. Example, the trace index's
#   cost (BENCHMARKS §10):
#   scripts/ab-load.sh sdk 5 7 '' 'DYNAMIQ_SIDECAR_QUERY_INDEX=false'
# BIN=path uses that sidecar binary instead of building target/release/dynamiq-sidecar; a
# BIN=path word inside SETTINGS uses that binary for that side only (two builds compared:
#   scripts/ab-load.sh otlp-grpc 5 7 'BIN=/tmp/old-sidecar' '').
# PROFILE=reliability builds with that cargo profile instead of release (no fat LTO: minutes
# less to build; compare only builds of the same profile).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 5 ] || { sed -n 2,10p "$0"; exit 2; }
MODE=$1 ROUNDS=$2 SECS=$3 A=$4 B=$5
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PROFILE="${PROFILE:-release}"
cargo build --profile "$PROFILE" --quiet --example noop_server --example otlp_load
if [ -z "${BIN:-}" ]; then cargo build --profile "$PROFILE" --quiet --bin dynamiq-sidecar; BIN=target/$PROFILE/dynamiq-sidecar; fi
LOAD=target/$PROFILE/examples/otlp_load
"$LOAD" body "$WORK/body.pb" 25 2>/dev/null
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
target/$PROFILE/examples/noop_server 127.0.0.1:19601 2>/dev/null & wait_port 19601
lua() { printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "%s"\nlocal f = io.open("%s", "rb"); wrk.body = f:read("*a"); f:close()\n' "$1" "$2"; }
lua application/x-protobuf "$WORK/body.pb" > "$WORK/pb.lua"
lua application/json tests/fixtures/workflow-success.json > "$WORK/sdk.lua"

one() { # $1 = settings; prints the rate
  rm -rf "$WORK/data"
  printf '[ingest]\nhttp_addr = "127.0.0.1:19602"\ngrpc_addr = "127.0.0.1:19603"\n[upstream]\nurl = "http://127.0.0.1:19601"\n[buffer]\npath = "%s"\nmax_bytes = 4294967296\n[forward]\nrequests_per_second = 0\nruns_per_second = 0\n[log]\nlevel = "warn"\n' "$WORK/data" > "$WORK/s.toml"
  local bin=$BIN w
  for w in $1; do case $w in BIN=*) bin=${w#BIN=} ;; esac; done
  # shellcheck disable=SC2086 # the settings are words on purpose
  env $1 DYNAMIQ_ACCESS_KEY=bench-key "$bin" run --config "$WORK/s.toml" & local pid=$!
  wait_port 19602; wait_port 19603
  case $MODE in
    otlp-http) wrk -t2 -c32 -d"${SECS}s" -s "$WORK/pb.lua" http://127.0.0.1:19602/v1/traces | awk '/Requests\/sec/ {print $2 * 500}' ;;
    sdk) wrk -t2 -c32 -d"${SECS}s" -s "$WORK/sdk.lua" http://127.0.0.1:19602/v1/traces | awk '/Requests\/sec/ {print $2}' ;;
    otlp-grpc) "$LOAD" grpc http://127.0.0.1:19603 "$WORK/body.pb" 32 "$SECS" | awk '{print $2 / $3}' ;;
    *) echo "unknown mode $MODE" >&2; exit 2 ;;
  esac
  kill -TERM $pid; wait $pid 2>/dev/null || true
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
: > "$WORK/a"; : > "$WORK/b"
for r in $(seq "$ROUNDS"); do
  a=$(one "$A"); b=$(one "$B")
  echo "round $r: A $a  B $b" >&2
  echo "$a" >> "$WORK/a"; echo "$b" >> "$WORK/b"
done
ma=$(median < "$WORK/a"); mb=$(median < "$WORK/b")
unit=$([ "$MODE" = sdk ] && echo "req/s" || echo "spans/s")
printf "%s: median A %.0f %s, median B %.0f %s, A/B = %.3f\n" "$MODE" "$ma" "$unit" "$mb" "$unit" "$(echo "$ma / $mb" | bc -l)"

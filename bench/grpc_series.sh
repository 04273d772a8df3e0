#!/usr/bin/env bash
# The gRPC door over time (docs/ENVOY.md, "Speed"): one tallyd (2 I/O
# threads) with a rules file, then PAIRS times: tally-load --grpc floor (a
# descriptor no rule matches) and decided calls, SECONDS each, 64 in flight
# over 4 connections, then the Cap'n Proto UDP door for SECONDS. One line per
# pair, with the time, so that runs on a shared machine can be read against
# each other: calls/s and p50 us of each, and the load average.
#
# usage: bench/grpc_series.sh BUILD_DIR [PAIRS] [SECONDS] [GRPC_CLIENT]
set -euo pipefail
build=${1:?usage: grpc_series.sh BUILD_DIR [PAIRS] [SECONDS] [GRPC_CLIENT]}
pairs=${2:-30}
seconds=${3:-5}
client=${4:-nghttp2}
dir=$(mktemp -d)
cat >"$dir/rules.yaml" <<'RULES'
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 100000000
RULES
"$build/bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --threads 2 \
  --stats-interval-s 0 --state-dir none --grpc 127.0.0.1:0 --http none \
  --rules "$dir/rules.yaml" >"$dir/out" 2>"$dir/err" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
grpc=$(grep -o 'grpc=[^ ]*' "$dir/out" | head -1 | cut -d= -f2)
udp=$(grep -o 'udp=[^ ]*' "$dir/out" | head -1 | cut -d= -f2)
summary='import json,sys; r=json.load(sys.stdin); t=r.get("tallyd", r); print("%d/%d" % (t["throughput_rps"], t["p50_us"]))'
grpc_run() {  # DESCRIPTOR_KEY
  "$build/bin/tally-load" --grpc "$grpc" --grpc-client "$client" --in-flight 64 --channels 4 \
    --duration-s "$seconds" --keys 100000 --descriptor-key "$1" --json | python3 -c "$summary"
}
echo "time floor(calls/s/p50us) decided(calls/s/p50us) udp(checks/s/p50us) load"
for _ in $(seq "$pairs"); do
  floor=$(grpc_run nothing)
  decided=$(grpc_run remote_address)
  capnp=$("$build/bin/tally-load" --udp "$udp" --in-flight 64 --duration-s "$seconds" --json |
    python3 -c "$summary")
  echo "$(date -u +%H:%M:%S) $floor $decided $capnp $(cut -d' ' -f1 /proc/loadavg)"
done

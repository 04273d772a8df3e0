#!/usr/bin/env bash
# The Envoy doors' speed (docs/ENVOY.md, "Speed"; docs/PERFORMANCE.md): one
# tallyd (2 I/O threads) with a rules file, then ROUNDS rounds, alternating:
# gRPC ShouldRateLimit floor (a descriptor no rule matches: gRPC and the
# rules lookup, no decision) and decided calls (tally-load --grpc), each with
# tally-load's two gRPC clients (nghttp2, the default, and gRPC's C++
# client, which costs the shared cores about three times the CPU), the same
# two through the HTTP door's POST /v1/check (tally-load --http), and the
# Cap'n Proto UDP door (tally-load --udp), each for SECONDS with IN_FLIGHT
# calls outstanding, over CHANNELS gRPC channels. TALLY_GRPC_SERVER=grpc runs
# tallyd's gRPC door on gRPC's own server instead of nghttp2 (--grpc-server);
# TALLY_RLS_CLIENTS="nghttp2" leaves out the grpc++ client.
#
# usage: bench/rls_speed.sh BUILD_DIR [ROUNDS] [SECONDS] [IN_FLIGHT] [CHANNELS]
set -euo pipefail
build=${1:?usage: rls_speed.sh BUILD_DIR [ROUNDS] [SECONDS] [IN_FLIGHT] [CHANNELS]}
rounds=${2:-2}
seconds=${3:-5}
in_flight=${4:-64}
channels=${5:-2}
dir=$(mktemp -d)
cat >"$dir/rules.yaml" <<'RULES'
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 1000000
RULES
"$build/bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --threads 2 \
  --stats-interval-s 0 --state-dir none --grpc 127.0.0.1:0 --http 127.0.0.1:0 \
  --rules "$dir/rules.yaml" --grpc-server "${TALLY_GRPC_SERVER:-nghttp2}" >"$dir/out" 2>"$dir/err" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
line=$(cat "$dir/out")
udp=$(grep -o 'udp=[^ ]*' <<<"$line" | cut -d= -f2)
grpc=$(grep -o 'grpc=[^ ]*' <<<"$line" | cut -d= -f2)
http=$(grep -o 'http=[^ ]*' <<<"$line" | cut -d= -f2)
echo "grpc server: ${TALLY_GRPC_SERVER:-nghttp2}; uptime before: $(uptime)"
rls() {  # DOOR ADDRESS [tally-load args...]: one tally-load --grpc/--http run's result line
  "$build/bin/tally-load" "--$1" "$2" --in-flight "$in_flight" --duration-s "$seconds" \
    --keys 100000 "${@:3}"
}
for round in $(seq "$rounds"); do
  for client in ${TALLY_RLS_CLIENTS:-nghttp2 grpc++}; do
    echo "round=$round grpc $client floor:   $(rls grpc "$grpc" --channels "$channels" \
      --grpc-client "$client" --descriptor-key nothing)"
    echo "round=$round grpc $client decided: $(rls grpc "$grpc" --channels "$channels" \
      --grpc-client "$client" --descriptor-key remote_address)"
  done
  echo "round=$round http floor:   $(rls http "$http" --descriptor-key nothing)"
  echo "round=$round http decided: $(rls http "$http" --descriptor-key remote_address)"
  echo "round=$round udp capnp:    $("$build/bin/tally-load" --udp "$udp" --in-flight "$in_flight" \
    --duration-s "$seconds" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); t=r.get("tallyd", r); print("checks_per_s=%.0f p50_us=%s p99_us=%s" % (t["throughput_rps"], t["p50_us"], t["p99_us"]))')"
done
echo "uptime after: $(uptime)"

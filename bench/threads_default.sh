#!/usr/bin/env bash
# The default I/O thread count (docs/PERFORMANCE.md, "Default thread count"):
# tallyd on its defaults (unpinned), with --threads 2 (unpinned) and with
# --threads 1 on cpu 0, each against tally-load's plain echo server on cpu 0
# in the same run, the client on cpu 1; 64 then 1 checks in flight, 10,000
# uniform keys, 3 s per cell, the three alternated over 3 rounds.
# usage: bench/threads_default.sh [BIN_DIR]   (default build/bin; needs taskset, 2+ CPUs)
set -euo pipefail
bin=${1:-build/bin}
dir=$(mktemp -d)
pid=""
trap 'if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$dir"' EXIT
run_one() {  # label, tallyd prefix/args...
  local label=$1; shift
  "$@" --udp 127.0.0.1:0 --unix none --unix-seq none --grpc none --http none --state-dir none \
    --stats-interval-s 0 >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
  local udp; udp=$(grep -o ' udp=[^ ]*' "$dir/out" | cut -d= -f2)
  for inflight in 64 1; do
    taskset -c 1 "$bin/tally-load" --udp "$udp" --compare-echo --echo-cpu 0 --in-flight $inflight \
      --keys 10000 --duration-s 3 --json > "$dir/j" || true
    python3 - "$label" "$inflight" "$dir/j" <<'PY'
import json,sys
label,inflight,path=sys.argv[1:]
j=json.load(open(path))
e=j["echo"]; t=j["tallyd"]
print(f'{label:24s} inflight={inflight:>2s} echo {e["throughput_rps"]:>9.0f}/s p99 {e["p99_us"]:>7} | tallyd {t["throughput_rps"]:>9.0f}/s p50 {t["p50_us"]:>6} p99 {t["p99_us"]:>7} | ratio {t["throughput_rps"]/e["throughput_rps"]:.3f} p99x {t["p99_us"]/e["p99_us"]:.2f}')
PY
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=""
}
echo "load before: $(cat /proc/loadavg)"
for round in 1 2 3; do
  run_one "defaults(unpinned)" "$bin/tallyd"
  run_one "threads2(unpinned)" "$bin/tallyd" --threads 2
  run_one "threads1(cpu0)" taskset -c 0 "$bin/tallyd" --threads 1
done
echo "load after: $(cat /proc/loadavg)"

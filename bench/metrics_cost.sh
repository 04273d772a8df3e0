#!/usr/bin/env bash
# What serving GET /metrics costs the checks (docs/PERFORMANCE.md, "Serving
# /metrics"): tally-load against one tallyd with no scraper, then with
# bench/scrape_metrics.py scraping 10/s and 100/s, alternating, ROUNDS times;
# then the cost of one scrape (bytes, microseconds) beside a /healthz round
# trip (the HTTP floor). MODE: single (default) or cluster (a cluster of one:
# --gossip, so each scrape takes the Node's lock for the status snapshot).
#
# usage: bench/metrics_cost.sh BUILD_DIR [single|cluster] [ROUNDS] [SECONDS]
set -euo pipefail
build=${1:?usage: metrics_cost.sh BUILD_DIR [single|cluster] [ROUNDS] [SECONDS]}
mode=${2:-single}
rounds=${3:-2}
seconds=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
extra=()
if [[ $mode == cluster ]]; then extra=(--gossip 127.0.0.1:0 --node-id bench); fi
"$build/bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --threads 2 \
  --stats-interval-s 0 --http 127.0.0.1:0 --grpc none "${extra[@]}" >"$dir/out" 2>"$dir/err" &
pid=$!
scraper=""
cleanup() {
  [[ -n $scraper ]] && kill "$scraper" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
line=$(cat "$dir/out")
udp=$(grep -o 'udp=[^ ]*' <<<"$line" | cut -d= -f2)
http=$(grep -o 'http=[^ ]*' <<<"$line" | cut -d= -f2)
echo "mode=$mode uptime: $(uptime)"
load() {
  "$build/bin/tally-load" --udp "$udp" --in-flight 64 --duration-s "$seconds" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); t=r.get("tallyd", r); print("%.0f %s %s" % (t["throughput_rps"], t["p50_us"], t["p99_us"]))'
}
for round in $(seq "$rounds"); do
  for rate in 0 10 100; do
    if ((rate > 0)); then
      python3 "$here/scrape_metrics.py" "$http" --rate "$rate" --seconds $((seconds + 2)) >"$dir/scr" &
      scraper=$!
    fi
    result=$(load)
    if ((rate > 0)); then wait "$scraper"; scraper=""; fi
    echo "round=$round scrapes_per_s=$rate checks_per_s,p50_us,p99_us=$result"
  done
done
python3 "$here/scrape_metrics.py" "$http" --measure 500
python3 "$here/scrape_metrics.py" "$http" --measure 500 --path /healthz
echo "uptime after: $(uptime)"

#!/usr/bin/env bash
# Does a full key table cost other clients anything? (issue 9, item 4;
# docs/PERFORMANCE.md, "A full key table"). One tallyd with --max-keys
# MAX_KEYS; a measured client checks 10,000 keys of its own (created first)
# at 16 in flight while a second client runs beside it, ROUNDS times,
# alternating:
#   floor: the second client checks keys that exist (same load, no new key);
#   full:  the second client asks for new keys only, into the full table
#          (each refused over capacity).
# The table is filled to MAX_KEYS before the first round. The ratio of the
# measured client's p99 (full : floor) is what the full table costs it.
#
# usage: bench/full_table.sh BUILD_DIR [ROUNDS] [SECONDS] [MAX_KEYS]
set -euo pipefail
build=${1:?usage: full_table.sh BUILD_DIR [ROUNDS] [SECONDS] [MAX_KEYS]}
rounds=${2:-3}
seconds=${3:-5}
max_keys=${4:-100000}
dir=$(mktemp -d)
"$build/bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --threads 2 \
  --stats-interval-s 0 --state-dir none --max-keys "$max_keys" >"$dir/out" 2>"$dir/err" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
udp=$(grep -o 'udp=[^ ]*' "$dir/out" | cut -d= -f2)
load() {  # tally-load args... -> "checks_per_s p50_us p99_us errors"
  "$build/bin/tally-load" --udp "$udp" --window-ms 600000 --limit 1000000000 --json "$@" |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["tallyd"]; print("%.0f %s %s %d" % (t["throughput_rps"], t["p50_us"], t["p99_us"], t["errors"]))'
}
echo "uptime before: $(uptime)"
# The measured client's keys (seed 1), and the floor's (seed 2), exist first.
load --keys 10000 --seed 1 --in-flight 16 --duration-s 2 >/dev/null
load --keys 10000 --seed 2 --in-flight 16 --duration-s 2 >/dev/null
# Then new keys until the table is full (keys live 10 minutes).
load --keys 100000000 --seed 3 --in-flight 32 --duration-s $((max_keys / 20000 + 2)) >/dev/null
echo "live keys: $("$build/bin/tally" status --udp "$udp" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_keys"])') of $max_keys"
for round in $(seq "$rounds"); do
  for mode in floor full; do
    if [[ $mode == floor ]]; then
      other=(--keys 10000 --seed 2)
    else
      other=(--keys 100000000 --seed $((100 + round)))
    fi
    load "${other[@]}" --in-flight 16 --duration-s $((seconds + 1)) >"$dir/other" &
    other_pid=$!
    sleep 0.3
    measured=$(load --keys 10000 --seed 1 --in-flight 16 --duration-s "$seconds")
    wait "$other_pid"
    echo "round=$round $mode measured(checks/s p50 p99 errors)=$measured other=$(cat "$dir/other")"
  done
done
echo "uptime after: $(uptime)"

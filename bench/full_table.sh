#!/usr/bin/env bash
# Does a full key table cost other clients anything? (issue 9, item 4;
# docs/PERFORMANCE.md, "A full key table"). tallyd with --max-keys MAX_KEYS;
# a measured client checks 10,000 keys of its own (created first) at 16 in
# flight while a second client runs beside it, ROUNDS times, alternating:
#   floor: the second client checks keys that exist (same load, no new key);
#   full:  the second client asks for new keys only, into the full table
#          (each refused over capacity).
# The table is filled to MAX_KEYS before the first round. The ratio of the
# measured client's p99 (full : floor) is what the full table costs it.
#
# MODE `single` (the default) runs one tallyd; `cluster` runs three members on
# 127.0.0.1 (a; b and c join a), each with --max-keys MAX_KEYS, and both
# clients talk to a: with three members every key is on every member's list,
# so the fill takes every table to the cap together, replicas included. In
# that mode the script also reports the peer traffic (UDP + TCP bytes per
# second summed over the members, and anti-entropy repairs and state pushes)
# idle before the fill and idle after the rounds: a replica at capacity must
# not loop anti-entropy or push the same keys forever.
#
# usage: bench/full_table.sh BUILD_DIR [ROUNDS] [SECONDS] [MAX_KEYS] [single|cluster]
set -euo pipefail
build=${1:?usage: full_table.sh BUILD_DIR [ROUNDS] [SECONDS] [MAX_KEYS] [single|cluster]}
rounds=${2:-3}
seconds=${3:-5}
max_keys=${4:-100000}
mode_of_run=${5:-single}
[[ $mode_of_run == single || $mode_of_run == cluster ]] || {
  echo "full_table.sh: MODE is single or cluster" >&2
  exit 2
}
dir=$(mktemp -d)
pids=()
declare -A udp_of gossip_of
# start NAME ARGS...: one tallyd, waits for its listening line.
start() {
  local name=$1
  shift
  "$build/bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --threads 2 \
    --grpc none --http none --stats-interval-s 0 --state-dir none --max-keys "$max_keys" \
    "$@" >"$dir/$name.out" 2>"$dir/$name.err" &
  pids+=("$!")
  for _ in $(seq 100); do grep -q '^tallyd listening' "$dir/$name.out" && break; sleep 0.05; done
  grep -q '^tallyd listening' "$dir/$name.out" || {
    echo "full_table.sh: tallyd $name did not start" >&2
    cat "$dir/$name.err" >&2
    exit 1
  }
  udp_of[$name]=$(grep -o ' udp=[^ ]*' "$dir/$name.out" | head -1 | cut -d= -f2)
  gossip_of[$name]=$(grep -o ' gossip=[^ ]*' "$dir/$name.out" | head -1 | cut -d= -f2 || true)
}
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
status() { "$build/bin/tally" status --udp "${udp_of[$1]}" --json; }
if [[ $mode_of_run == single ]]; then
  start a
  members=(a)
else
  start a --node-id a --gossip 127.0.0.1:0
  start b --node-id b --gossip 127.0.0.1:0 --join "${gossip_of[a]}"
  start c --node-id c --gossip 127.0.0.1:0 --join "${gossip_of[a]}"
  members=(a b c)
  formed() {
    local n
    for n in a b c; do
      status "$n" 2>/dev/null | python3 -c 'import json,sys
s=json.load(sys.stdin)
sys.exit(0 if s.get("owning") and sum(m["state"]=="alive" for m in s["members"])==3 else 1)' ||
        return 1
    done
  }
  for _ in $(seq 300); do formed && break; sleep 0.1; done
  formed || { echo "full_table.sh: the cluster did not form in 30 s" >&2; exit 1; }
fi
udp=${udp_of[a]}
# peer_totals: "bytes repairs pushes store_full" summed over the members.
peer_totals() {
  local n
  for n in "${members[@]}"; do status "$n"; echo; done | python3 -c 'import json,sys
t=[0,0,0,0]
for line in sys.stdin:
  if not line.strip(): continue
  c=json.loads(line).get("counters",{})
  for i,k in enumerate(("gossip_bytes_out","anti_entropy_repairs","state_pushes","rejected_peer_state_store_full")):
    t[i]+=int(c.get(k,0))
  t[0]+=int(c.get("stream_bytes_out",0))
print(*t)'
}
# idle SECONDS LABEL: the members' peer traffic over SECONDS with no load.
idle() {
  local t0 t1
  read -r -a t0 <<<"$(peer_totals)"
  sleep "$1"
  read -r -a t1 <<<"$(peer_totals)"
  echo "idle $2: peer bytes/s $(((t1[0] - t0[0]) / $1)) (all members)," \
    "anti-entropy repairs $((t1[1] - t0[1])), state pushes $((t1[2] - t0[2]))," \
    "peer state refused as store full $((t1[3] - t0[3])) in $1 s"
}
load() {  # tally-load args... -> "checks_per_s p50_us p99_us errors"
  "$build/bin/tally-load" --udp "$udp" --window-ms 600000 --limit 1000000000 --json "$@" |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["tallyd"]; print("%.0f %s %s %d" % (t["throughput_rps"], t["p50_us"], t["p99_us"], t["errors"]))'
}
echo "uptime before: $(uptime)"
[[ $mode_of_run == cluster ]] && idle 10 "before the fill"
# The measured client's keys (seed 1), and the floor's (seed 2), exist first.
load --keys 10000 --seed 1 --in-flight 16 --duration-s 2 >/dev/null
load --keys 10000 --seed 2 --in-flight 16 --duration-s 2 >/dev/null
# Then new keys until the table is full (keys live 10 minutes).
live_keys() { status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_keys"])'; }
for i in $(seq 60); do  # forwarded new keys go slower: fill until every table is at the cap
  load --keys 100000000 --seed $((1000 + i)) --in-flight 32 --duration-s 2 >/dev/null
  full=1
  for n in "${members[@]}"; do (($(live_keys "$n") >= max_keys * 99 / 100)) || full=0; done
  ((full)) && break
done
for n in "${members[@]}"; do
  echo "live keys on $n: $(live_keys "$n") of $max_keys"
done
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
if [[ $mode_of_run == cluster ]]; then
  idle 10 "after the rounds (tables full)"
  idle 30 "30 s later"
fi
echo "uptime after: $(uptime)"

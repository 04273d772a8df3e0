#!/usr/bin/env bash
# A rolling upgrade's middle, on 127.0.0.1: three tallyd members of two builds
# (member a runs OLD, b and c run NEW; --swap: a runs NEW, b and c OLD), so
# members of neighbouring peer protocols talk to each other (docs/OPERATIONS.md,
# "Rolling upgrade"). Through each member in turn, tally-load checks 100 keys
# with limit 50 in a window of its own for 3 s, and the script requires:
#
#   * every key admitted exactly its limit (5,000 admits a round: one owner
#     decides each key, whichever build it runs) and no errors;
#   * the three members' copies of 20 of the keys equal (`tally owner`'s state
#     hash), half a second after the load;
#   * no peer message refused as malformed on any member.
#
# usage: bench/mixed_versions.sh --old DIR --new DIR [--swap]
#   DIR holds tallyd, tally and tally-load (NEW's tally and tally-load are used).
# Ports are 0; only the processes started here are stopped (by pid). Needs jq.
# Exit status 0 when every requirement held.
set -euo pipefail
old="" new="" swap=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --old) old="$2"; shift 2 ;;
    --new) new="$2"; shift 2 ;;
    --swap) swap=1; shift ;;
    *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[[ -n "$old" && -n "$new" ]] || { echo "mixed_versions.sh: --old and --new are required" >&2; exit 2; }
keys=100 limit=50
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
declare -A udp gossip bin
bin[a]="$old" bin[b]="$new" bin[c]="$new"
if ((swap)); then bin[a]="$new" bin[b]="$old" bin[c]="$old"; fi
start() {
  local n="$1" line=""
  shift
  "${bin[$n]}/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --stats-interval-s 0 \
    --grpc none --http none --node-id "$n" --gossip 127.0.0.1:0 "$@" >"$work/$n.out" 2>"$work/$n.err" &
  pids+=($!)
  for _ in $(seq 100); do
    line="$(grep -m1 '^tallyd listening' "$work/$n.out" || true)"
    [[ -n "$line" ]] && break
    sleep 0.1
  done
  [[ -n "$line" ]] || { echo "mixed_versions.sh: $n did not start:" >&2; cat "$work/$n.err" >&2; exit 1; }
  udp[$n]="$(sed -n 's/.* udp=\([^ ]*\).*/\1/p' <<<"$line")"
  gossip[$n]="$(sed -n 's/.* gossip=\([^ ]*\).*/\1/p' <<<"$line")"
}
start a
start b --join "${gossip[a]}"
start c --join "${gossip[a]}"
tally="$new/tally"
formed=0
for _ in $(seq 150); do
  formed=1
  for n in a b c; do
    s="$("$tally" status --json --udp "${udp[$n]}" 2>/dev/null)" || { formed=0; break; }
    [[ $(jq '[.members[] | select(.state == "alive")] | length' <<<"$s") == 3 &&
       $(jq .owning <<<"$s") == true ]] || formed=0
  done
  ((formed)) && break
  sleep 0.2
done
((formed)) || { echo "mixed_versions.sh: the cluster did not form" >&2; exit 1; }
echo "members: a=${bin[a]} b=${bin[b]} c=${bin[c]}"
failed=0
window_ms=60000
for via in a b c; do
  window_ms=$((window_ms + 60000))  # keys of their own each round
  out="$("$new/tally-load" --udp "${udp[$via]}" --keys "$keys" --limit "$limit" \
    --window-ms "$window_ms" --in-flight 64 --duration-s 3 --json)"
  allowed="$(jq .tallyd.allowed <<<"$out")"
  errors="$(jq .tallyd.errors <<<"$out")"
  echo "through $via: $(jq .tallyd.completed <<<"$out") checks, $allowed admitted" \
    "(want $((keys * limit))), $errors errors, $(jq .tallyd.timeouts <<<"$out") timeouts"
  [[ "$allowed" == $((keys * limit)) && "$errors" == 0 ]] || failed=1
  sleep 0.5  # replication rounds
  agree=0
  for k in $(seq 0 19); do
    hashes="$(for n in a b c; do
      "$tally" owner --json --udp "${udp[$n]}" "u$k" /load $((window_ms / 1000)) | jq -r .state_hash
    done | sort -u | wc -l)"
    [[ "$hashes" == 1 ]] && agree=$((agree + 1))
  done
  echo "  the members' copies agree on $agree of 20 keys"
  [[ "$agree" == 20 ]] || failed=1
done
for n in a b c; do
  malformed="$("$tally" status --json --udp "${udp[$n]}" | jq .counters.malformed_peer)"
  echo "$n: malformed_peer $malformed"
  [[ "$malformed" == 0 ]] || failed=1
done
if ((failed)); then echo "FAIL"; else echo "PASS"; fi
exit "$failed"

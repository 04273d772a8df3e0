#!/usr/bin/env bash
# Three tallyd cluster members on 127.0.0.1, measured from one of them
# (docs/PERFORMANCE.md, "Cluster (3 nodes on this machine)"):
#
#   * idle traffic per node between members: status counters over --idle-s
#     seconds, before any load and again after the loads;
#   * checks decided locally (tally-load --owner-filter local: keys the node
#     the client talks to owns) and checks forwarded to their owner
#     (--owner-filter remote), each at 1 in flight (latency) and 64 in flight
#     (throughput), --repeats times, with the load average beside each run and
#     the target's own "forwarded" counter as a check of the split.
#
# usage: bench/cluster3.sh [--bin DIR] [--repeats N] [--duration-s S] [--keys K]
#                          [--idle-s S] [--tallyd-threads N] [--single]
#                          [--paths P[,P...]] [--limit N] [-- EXTRA_TALLYD_ARGS...]
#
#   --bin DIR           where tallyd, tally, tally-load are (default: build/bin)
#   --paths             which loads through a (default local,forwarded):
#                       local, forwarded, and uniform (every key, so about
#                       1/3 decided by a and 2/3 forwarded)
#   --limit N           tally-load's limit per key (default 1000 per 1 s window;
#                       a hot key, --keys 1, needs more to keep admitting)
#   --single            also run the same loads against a single-node tallyd
#                       (no --gossip) started after the cluster is stopped
#   EXTRA_TALLYD_ARGS   appended to every member's command line (e.g. test
#                       timings: --probe-interval-ms 200 --gossip-interval-ms 50)
#
# Ports: every socket is bound to port 0 and the addresses are read from each
# tallyd's "tallyd listening ..." line. Only the processes this script starts
# are stopped (by pid, on any exit). Needs jq.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/bin"
repeats=3
duration_s=5
keys=20000
idle_s=10
tallyd_threads=0
single=0
paths=local,forwarded
limit=1000
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --duration-s) duration_s="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --idle-s) idle_s="$2"; shift 2 ;;
    --tallyd-threads) tallyd_threads="$2"; shift 2 ;;
    --single) single=1; shift ;;
    --paths) paths="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster3.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for p in tallyd tally tally-load; do
  [[ -x "$bin/$p" ]] || { echo "cluster3.sh: $bin/$p not found (see --bin)" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "cluster3.sh: needs jq (apt-get install jq)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tally-cluster3-XXXXXX")"
pids=()
# Stops the tallyd processes this script started (SIGTERM, then SIGKILL
# after 5 s; tallyd gossips its leave for up to --leave-grace-ms on SIGTERM).
stop_started() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_started
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
now_s() { date +%s.%N; }
# per_s DELTA T0 T1: DELTA / (T1 - T0), rounded.
per_s() { awk -v d="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.0f", d / (t1 - t0) }'; }

# start_tallyd NAME ARGS...: starts tallyd in the background, waits for its
# listening line, sets udp_of[NAME] and gossip_of[NAME].
declare -A udp_of gossip_of
start_tallyd() {
  local name="$1"; shift
  # The Envoy doors are on by default (8081, 8080): three members would
  # collide on them. Off unless the extra arguments name a door.
  local grpc_door=(--grpc none) http_door=(--http none)
  for arg in "$@"; do
    case "$arg" in
      --grpc | --grpc=* | --grpc-listen | --grpc-listen=*) grpc_door=() ;;
      --http | --http=* | --http-listen | --http-listen=*) http_door=() ;;
    esac
  done
  "$bin/tallyd" --udp 127.0.0.1:0 --unix none --unix-seq none --stats-interval-s 0 \
    --threads "$tallyd_threads" "${grpc_door[@]}" "${http_door[@]}" "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=("$!")
  local line=""
  for _ in $(seq 100); do
    line="$(grep -m1 '^tallyd listening ' "$work/$name.out" || true)"
    [[ -n "$line" ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$line" ]]; then
    echo "cluster3.sh: tallyd $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
  fi
  udp_of[$name]="$(sed -n 's/.* udp=\([^ ]*\).*/\1/p' <<<"$line")"
  gossip_of[$name]="$(sed -n 's/.* gossip=\([^ ]*\).*/\1/p' <<<"$line")"
}

status_json() { "$bin/tally" status --json --udp "${udp_of[$1]}"; }
counter() { jq -r --arg n "$2" '.counters[$n] // 0' <<<"$1"; }

# True when every member sees all three alive and owns keys.
formed() {
  local n s
  for n in a b c; do
    s="$(status_json "$n" 2>/dev/null)" || return 1
    [[ "$(jq '[.members[] | select(.state == "alive")] | length' <<<"$s")" == 3 ]] || return 1
    [[ "$(jq '.owning' <<<"$s")" == true ]] || return 1
  done
}

# ---- the cluster ----
start_tallyd a --node-id a --gossip 127.0.0.1:0 "${extra[@]}"
start_tallyd b --node-id b --gossip 127.0.0.1:0 --join "${gossip_of[a]}" "${extra[@]}"
start_tallyd c --node-id c --gossip 127.0.0.1:0 --join "${gossip_of[a]}" "${extra[@]}"
echo "cluster: a udp=${udp_of[a]} gossip=${gossip_of[a]}; b udp=${udp_of[b]};" \
  "c udp=${udp_of[c]}; pids ${pids[*]}; tallyd --threads $tallyd_threads ${extra[*]}"
formed_by=$((SECONDS + 30))
until formed; do
  if ((SECONDS > formed_by)); then
    echo "cluster3.sh: the cluster did not form in 30 s" >&2
    for n in a b c; do status_json "$n" >&2 || true; done
    exit 1
  fi
  sleep 0.2
done
echo "formed: all 3 alive and owning in every member's view"

# ---- idle membership traffic ----
# gossip_bytes_out/in: the UDP gossip socket (probes, acks, rumors);
# stream_bytes_out: the TCP peer streams (push-pull, anti-entropy digests,
# replication, forwarded checks); peer_bytes_sent: every peer message the
# Node emitted. idle_traffic TITLE: one table over --idle-s seconds.
idle_traffic() {
  local n name d after t0 t1 row
  local -A before
  for n in a b c; do before[$n]="$(status_json "$n")"; done
  t0=$(now_s)
  sleep "$idle_s"
  t1=$(now_s)
  echo
  echo "$1 over $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s" \
    "(load average $(loadavg)):"
  printf '%-5s %16s %15s %17s %16s\n' node gossip_out_B/s gossip_in_B/s stream_out_B/s \
    peer_sent_B/s
  for n in a b c; do
    after="$(status_json "$n")"
    row=("$n")
    for name in gossip_bytes_out gossip_bytes_in stream_bytes_out peer_bytes_sent; do
      d=$(($(counter "$after" "$name") - $(counter "${before[$n]}" "$name")))
      row+=("$(per_s "$d" "$t0" "$t1")")
    done
    printf '%-5s %16s %15s %17s %16s\n' "${row[@]}"
  done
}
idle_traffic "idle traffic before any load"

# ---- loads through member a ----
# peer_bytes NAMES...: "UDP TCP REPL", the bytes those members have sent each
# other so far on the gossip socket (SWIM, forwarded checks and their replies,
# replication) and on the TCP streams (state pushes: anti-entropy repairs,
# handoff, push-pull), and of those the replication messages (whole states
# and deltas, replicate_bytes_sent).
peer_bytes() {
  local n s udp=0 tcp=0 repl=0
  for n in "$@"; do
    s="$(status_json "$n")"
    udp=$((udp + $(counter "$s" gossip_bytes_out)))
    tcp=$((tcp + $(counter "$s" stream_bytes_out)))
    repl=$((repl + $(counter "$s" replicate_bytes_sent)))
  done
  echo "$udp $tcp $repl"
}

# run_load LABEL FILTER IN_FLIGHT TARGET RUN MEMBERS...: one tally-load run
# through TARGET; prints a row: throughput, latency, the share of the
# answered checks TARGET forwarded (its "forwarded" counter; a forward
# unanswered within --forward-timeout-ms is sent on to the next member and
# counted again, and those are the fwd_timeouts column), and the bytes
# MEMBERS sent each other per answered check (UDP, TCP).
results="$work/results.tsv"
: >"$results"
run_load() {
  local label="$1" filter="$2" in_flight="$3" target="$4" run="$5"
  shift 5
  local la before after out fwd fto completed udp0 tcp0 udp1 tcp1 repl0 repl1
  la="$(loadavg)"
  before="$(status_json "$target")"
  read -r udp0 tcp0 repl0 < <(peer_bytes "$@")
  out="$("$bin/tally-load" --udp "${udp_of[$target]}" --owner-filter "$filter" --keys "$keys" \
    --limit "$limit" --in-flight "$in_flight" --duration-s "$duration_s" --json 2>"$work/load.err")" || {
    echo "cluster3.sh: tally-load failed:" >&2; cat "$work/load.err" >&2; exit 1; }
  after="$(status_json "$target")"
  read -r udp1 tcp1 repl1 < <(peer_bytes "$@")
  fwd=$(($(counter "$after" forwarded) - $(counter "$before" forwarded)))
  fto=$(($(counter "$after" forward_timeouts) - $(counter "$before" forward_timeouts)))
  completed="$(jq '.tallyd.completed' <<<"$out")"
  jq -r --arg path "$label" --arg run "$run" --arg la "$la" --arg fwd "$fwd" \
    --arg inf "$in_flight" --arg udp "$((udp1 - udp0))" --arg tcp "$((tcp1 - tcp0))" \
    --arg fto "$fto" --arg repl "$((repl1 - repl0))" '[$path, $inf, $run, (.tallyd.throughput_rps | round),
      .tallyd.p50_us, .tallyd.p99_us, .tallyd.p999_us, .tallyd.timeouts,
      (if .tallyd.completed > 0 then (($fwd | tonumber) / .tallyd.completed * 100 | round)
       else 0 end),
      (if .tallyd.completed > 0 then (($udp | tonumber) / .tallyd.completed | round)
       else 0 end),
      (if .tallyd.completed > 0 then (($tcp | tonumber) / .tallyd.completed | round)
       else 0 end), $fto, $la,
      (if .tallyd.completed > 0 then (($repl | tonumber) / .tallyd.completed | round)
       else 0 end)] | @tsv' <<<"$out" | tee -a "$results" |
    awk -F'\t' '{printf "%-9s %9s %3s %10s %9s %9s %9s %8s %6s%% %9s %9s %10s %12s  %s\n",
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14, $12, $13}'
  [[ -n "$completed" && "$completed" -gt 0 ]]
}

header() {
  printf '%-9s %9s %3s %10s %9s %9s %9s %8s %7s %9s %9s %10s %12s  %s\n' path in_flight run \
    checks/s p50_us p99_us p999_us timeouts fwd% udp_B/chk tcp_B/chk repl_B/chk fwd_timeouts \
    'load average (1/5/15 min)'
}

echo
echo "loads through a (udp ${udp_of[a]}), $keys keys each, ${duration_s} s per run;" \
  "tally-load --owner-filter local|remote|all --keys $keys --in-flight N --duration-s $duration_s"
header
for in_flight in 1 64; do
  for run in $(seq "$repeats"); do
    # Alternate, so drift in the machine's load hits every path alike.
    for path in ${paths//,/ }; do
      case "$path" in
        local) run_load local local "$in_flight" a "$run" a b c ;;
        forwarded) run_load forwarded remote "$in_flight" a "$run" a b c ;;
        uniform) run_load uniform all "$in_flight" a "$run" a b c ;;
        *) echo "cluster3.sh: unknown path '$path' (local, forwarded, uniform)" >&2; exit 2 ;;
      esac
    done
  done
done

# The keys of the last load stay live for a window and a sweep, and until
# then anti-entropy still finds differences to push: wait for them to go.
drained_by=$((SECONDS + 30))
until (( SECONDS > drained_by )) ||
  [[ "$(for n in a b c; do status_json "$n" | jq .live_keys; done | sort -u)" == 0 ]]; do
  sleep 0.5
done
idle_traffic "idle traffic after the loads (all keys expired)"

if ((single)); then
  stop_started
  start_tallyd s --node-id s
  echo
  echo "single node (no --gossip), udp ${udp_of[s]}, pid ${pids[*]}:"
  header
  for in_flight in 1 64; do
    for run in $(seq "$repeats"); do run_load single all "$in_flight" s "$run" s; done
  done
fi

echo
echo "medians over $repeats runs:"
printf '%-9s %9s %10s %9s %9s %9s %9s %9s %10s\n' path in_flight checks/s p50_us p99_us p999_us \
  udp_B/chk tcp_B/chk repl_B/chk
sort -t$'\t' -k1,1 -k2,2n "$results" | awk -F'\t' '
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++)
        for (j = i + 1; j <= n; j++)
          if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function flush() {
      if (n == 0) return
      printf "%-9s %9s %10.0f %9.1f %9.1f %9.1f %9.0f %9.0f %10.0f\n", key1, key2, median(tp, n),
             median(p50, n), median(p99, n), median(p999, n), median(ub, n), median(tb, n),
             median(rb, n)
      n = 0; delete tp; delete p50; delete p99; delete p999; delete ub; delete tb; delete rb
    }
    { if ($1 != key1 || $2 != key2) { flush(); key1 = $1; key2 = $2 }
      n++; tp[n] = $4; p50[n] = $5; p99[n] = $6; p999[n] = $7; ub[n] = $10; tb[n] = $11
      rb[n] = $14 }
    END { flush() }'

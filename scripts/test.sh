#!/usr/bin/env bash
# Builds tally and runs its tests. With TALLY_SANITIZE unset this is the whole
# gate, as CI (.ci/run) runs it, stage after stage:
#   1. none               build/       every test (unit, property, socket,
#                                      multi-process, simulator, benchmark smoke)
#   2. address,undefined  build-asan/  every test under ASan + UBSan (+ LSan)
#   3. thread             build-tsan/  the daemon, client and cluster tests under TSan
#   4. fuzz               build-fuzz/  every libFuzzer target from its seeds, briefly
# TALLY_SANITIZE=none|address,undefined|thread|fuzz runs that one stage; extra
# arguments then go to ctest (e.g. -R name), or to the fuzz smoke (seconds).
# Under ASan the swarm label is replaced by a reduced swarm run:
# TALLY_SANITIZE_SWARM_SEEDS (seeds 1..N) and TALLY_SANITIZE_SWARM_MAX_NODES.
# Each stage's cost on the 2-core machine: docs/RELIABILITY.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Sanitizer reports name file:line only if llvm-symbolizer is found (llvm-14).
export PATH="/usr/lib/llvm-14/bin:$PATH"
jobs="${TALLY_TEST_JOBS:-2}"

# Tests that wait for other processes (cluster formation, failover) may wait
# this many times longer under a sanitizer; what they assert stays the same.
wait_scale() { export TALLY_TEST_WAIT_SCALE="$1"; }

# Sanitizer reports of every process (tests and the tallyd children they
# start) go to one folder; any report fails the stage even if the process that
# wrote it was killed by its test afterwards.
report_dir() {
  local dir="$1/sanitizer-reports"
  rm -rf "$dir" && mkdir -p "$dir"
  echo "$dir"
}
check_reports() {
  local dir="$1" found
  found=$(find "$dir" -type f -size +0 | head -20)
  if [[ -n "$found" ]]; then
    echo "test.sh: sanitizer reports:" >&2
    for f in $found; do echo "== $f" >&2; head -60 "$f" >&2; done
    return 1
  fi
}

# What each failed assertion said, printed last: a failing test's own output
# (seven tallyd logging) can be thousands of lines, and a log viewer that
# keeps only the head and tail of a run would show neither assertion.
failure_summary() {
  local log="$1/Testing/Temporary/LastTest.log"
  [[ -f "$log" ]] || return 0
  echo "=== test.sh: failed assertions (from $log):" >&2
  grep -E -A6 '(: Failure$|^\[  FAILED  \] .*\(|Sanitizer:)' "$log" | grep -v ' info \[' |
    head -120 >&2 || true
}

# A sanitizer stage tests an instrumented tallyd or fails: a tree that lost
# its sanitizer flags (scripts/build.sh says how that happened) passed every
# test while checking nothing.
require_instrumented() {
  local binary="$1" symbol="$2" symbols
  # Read whole, not piped into grep -q: grep's early exit would fail nm with
  # SIGPIPE, and pipefail the check.
  symbols=$(nm "$binary" 2>/dev/null) || true
  if ! grep -q "$symbol" <<<"$symbols"; then
    echo "test.sh: $binary is not instrumented ($symbol missing); not testing it" >&2
    return 1
  fi
}

stage_none() {
  TALLY_SANITIZE=none "$root/scripts/build.sh"
  (cd "$root/build" && ctest --output-on-failure --timeout 600 -j"$jobs" "$@") ||
    { failure_summary "$root/build"; return 1; }
}

stage_asan() {
  TALLY_SANITIZE=address,undefined "$root/scripts/build.sh"
  require_instrumented "$root/build-asan/bin/tallyd" __asan_init || return 1
  require_instrumented "$root/build-asan/bin/tally_core_tests" __ubsan_handle || return 1
  local reports status=0
  reports=$(report_dir "$root/build-asan")
  wait_scale 3
  export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1:log_path=$reports/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
  # The swarm label (hundreds of simulated clusters) would take hours under the
  # sanitizers: without arguments this stage runs every other test, then a
  # reduced swarm (docs/SIMULATION.md, "Swarm"). Arguments go to ctest as given.
  local filter=()
  (($# == 0)) && filter=(-LE swarm)
  (cd "$root/build-asan" &&
    ctest --output-on-failure --timeout 900 -j"$jobs" "${filter[@]}" "$@") ||
    { status=$?; failure_summary "$root/build-asan"; }
  if (($# == 0)); then
    "$root/build-asan/bin/tally-sim" --swarm --seeds "1..${TALLY_SANITIZE_SWARM_SEEDS:-50}" \
      --max-nodes "${TALLY_SANITIZE_SWARM_MAX_NODES:-64}" || status=$?
  fi
  unset ASAN_OPTIONS UBSAN_OPTIONS
  check_reports "$reports" || status=1
  return "${status:-0}"
}

stage_tsan() {
  TALLY_SANITIZE=thread "$root/scripts/build.sh" tally_daemon_tests tally_client_tests \
    tally_cluster_tests tallyd tally tally-load
  require_instrumented "$root/build-tsan/bin/tallyd" __tsan_init || return 1
  local reports status=0
  reports=$(report_dir "$root/build-tsan")
  wait_scale 5
  # Suppressions: only what uninstrumented Debian libraries (gRPC, Abseil) do
  # through interceptors (scripts/tsan-suppressions.txt says why).
  # ClusterClockFaultTest preloads libfaketime (an uninstrumented clock shim)
  # into a tallyd; under TSan and load that process's timers once stopped for
  # minutes. It runs in the plain and ASan stages (docs/RELIABILITY.md).
  (cd "$root/build-tsan" &&
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$root/scripts/tsan-suppressions.txt" \
      ctest --output-on-failure --timeout 1200 -j"$jobs" -L '^(daemon_io|client|cluster)$' \
        -E '^ClusterClockFaultTest\.' "$@") ||
    { status=$?; failure_summary "$root/build-tsan"; }
  check_reports "$reports" || status=1
  return "${status:-0}"
}

stage_fuzz() {
  "$root/scripts/fuzz.sh" --smoke "${1:-${TALLY_FUZZ_SMOKE_SECONDS:-20}}"
}

run_stage() {
  local name="$1"
  shift
  local start=$SECONDS
  echo "=== test.sh: stage $name" >&2
  case "$name" in
    none) stage_none "$@" ;;
    address,undefined | undefined,address) stage_asan "$@" ;;
    thread) stage_tsan "$@" ;;
    fuzz) stage_fuzz "$@" ;;
    *) echo "test.sh: TALLY_SANITIZE must be none, address,undefined, thread or fuzz" >&2; exit 2 ;;
  esac
  echo "=== test.sh: stage $name passed in $((SECONDS - start)) s" >&2
}

if [[ -n "${TALLY_SANITIZE:-}" ]]; then
  run_stage "$TALLY_SANITIZE" "$@"
else
  for stage in none address,undefined thread; do run_stage "$stage" "$@"; done
  run_stage fuzz
fi

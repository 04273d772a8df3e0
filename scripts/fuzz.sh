#!/usr/bin/env bash
# libFuzzer harnesses (fuzz/): build and run them.
#   scripts/fuzz.sh --list                  the targets
#   scripts/fuzz.sh TARGET SECONDS [FLAGS]  build if needed, fuzz TARGET for SECONDS
#                                           (0: until a finding or -runs=N); FLAGS go to libFuzzer
#   scripts/fuzz.sh --smoke [SECONDS]       every target SECONDS each (default 20; CI);
#                                           TALLY_FUZZ_SMOKE_TARGETS="a b" picks some
#   scripts/fuzz.sh --make-corpus           rewrite fuzz/corpus/ from the real encoders
#                                           (the targets tally-fuzz-corpus writes)
# Builds into build-fuzz/ (clang, -fsanitize=fuzzer,address,undefined). Seeds come
# from fuzz/corpus/TARGET (kept in git, small); what the fuzzer learns goes to
# build-fuzz/corpus/TARGET, findings to build-fuzz/artifacts/TARGET/ (the file name
# says crash-, leak-, timeout- or oom-; rerun one with build-fuzz/fuzz/TARGET FILE).
# Reproducers of fixed findings in fuzz/regressions/TARGET are seeds as well.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Sanitizer reports name file:line only if llvm-symbolizer is found (llvm-14).
export PATH="/usr/lib/llvm-14/bin:$PATH"
build="$root/build-fuzz"
targets=(client_codec_fuzz peer_codec_fuzz node_codec_fuzz stream_frames_fuzz config_fuzz node_fuzz
         rules_fuzz peer_open_fuzz snapshot_fuzz http_json_fuzz grpc_h2_fuzz)

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

configure() {
  "$root/scripts/install-deps.sh"
  if [[ -f "$build/build.ninja" ]]; then return; fi
  local launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DTALLY_FUZZ=ON \
    -DTALLY_BUILD_TESTS=OFF -DTALLY_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
}

build_targets() {
  configure
  cmake --build "$build" -j"$(nproc)" --target "$@"
}

# Runs one target; prints a one-line summary. Returns libFuzzer's status.
run() {
  local target="$1" seconds="$2"
  shift 2
  local seeds="$root/fuzz/corpus/$target" work="$build/corpus/$target"
  # Reproducers of fixed findings (fuzz/regressions/TARGET) run as seeds too.
  local regressions=()
  if [[ -d "$root/fuzz/regressions/$target" ]]; then regressions=("$root/fuzz/regressions/$target"); fi
  local artifacts="$build/artifacts/$target/" log="$build/logs/$target.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")" "$seeds"
  local flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
               -artifact_prefix="$artifacts")
  local dict=""
  case "$target" in
    client_codec_fuzz | peer_codec_fuzz | node_codec_fuzz | node_fuzz) dict=capnp.dict ;;
    config_fuzz) dict=config.dict ;;
  esac
  if [[ -n "$dict" ]]; then flags+=(-dict="$root/fuzz/dict/$dict"); fi
  local start status=0
  start=$(date +%s.%N)
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$build/fuzz/$target" "${flags[@]}" "$@" "$work" "$seeds" "${regressions[@]}" >"$log" 2>&1 ||
    status=$?
  local elapsed execs rate cov
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  if ((status == 0)); then
    echo "fuzz $target: ok, ${execs:-?} runs in ${elapsed} s (${rate:-?}/s), ${cov:-cov: ?}"
  else
    echo "fuzz $target: FAILED (status $status) after ${elapsed} s; log: $log" >&2
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*property failed|.*runtime error|Test unit written)' "$log" \
      | head -20 >&2 || true
  fi
  return "$status"
}

case "${1:-}" in
  --list)
    printf '%s\n' "${targets[@]}"
    ;;
  --make-corpus)
    build_targets tally-fuzz-corpus
    # Only the targets the tool writes are replaced: the rules seeds are
    # kept by hand.
    fresh=$(mktemp -d)
    "$build/bin/tally-fuzz-corpus" "$fresh" "$root"
    for dir in "$fresh"/*/; do
      target=$(basename "$dir")
      rm -rf "$root/fuzz/corpus/$target"
      mv "$dir" "$root/fuzz/corpus/$target"
    done
    rm -rf "$fresh"
    du -sh "$root/fuzz/corpus"
    ;;
  --smoke)
    seconds="${2:-20}"
    read -r -a smoke <<<"${TALLY_FUZZ_SMOKE_TARGETS:-${targets[*]}}"
    build_targets "${smoke[@]}"
    failed=0
    for t in "${smoke[@]}"; do run "$t" "$seconds" || failed=$((failed + 1)); done
    total=${#smoke[@]}
    echo "fuzz: $((total - failed)) passed, $failed failed"
    ((failed == 0))
    ;;
  -h | --help | "")
    usage
    ;;
  *)
    target="$1"
    seconds="${2:-}"
    [[ -n "$seconds" ]] || usage
    if [[ ! " ${targets[*]} " =~ " $target " ]]; then
      echo "fuzz.sh: no target '$target' (--list shows them)" >&2
      exit 2
    fi
    shift 2
    build_targets "$target"
    run "$target" "$seconds" "$@"
    ;;
esac

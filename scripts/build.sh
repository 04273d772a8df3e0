#!/usr/bin/env bash
# Configures and builds tally; programs land in <build dir>/bin/.
#   scripts/build.sh [TARGET...]     (no target: everything)
# The build directory depends on TALLY_SANITIZE:
#   unset or none       build/       the release build (TALLY_BUILD_TYPE, default RelWithDebInfo)
#   address,undefined   build-asan/  ASan + UBSan, clang, -O1, no benchmarks
#   thread              build-tsan/  TSan, clang, -O1, no benchmarks
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-deps.sh"
sanitize="${TALLY_SANITIZE:-none}"
args=(-G Ninja -DCMAKE_BUILD_TYPE="${TALLY_BUILD_TYPE:-RelWithDebInfo}")
case "$sanitize" in
  none | "") dir="$root/build" ;;
  address,undefined | undefined,address) dir="$root/build-asan" ;;
  thread) dir="$root/build-tsan" ;;
  *) echo "build.sh: TALLY_SANITIZE must be none, address,undefined or thread" >&2; exit 2 ;;
esac
want_sanitize=""
if [[ "$sanitize" != none && -n "$sanitize" ]]; then
  want_sanitize="$sanitize"
  # clang: its sanitizer runtimes and llvm-symbolizer come as one set. By full
  # path: a bare name resolves differently under test.sh's PATH (llvm-14's
  # bin first), and CMake takes a changed compiler as a reason to wipe the
  # cache and configure again WITHOUT the other -D options, sanitizers
  # included.
  args+=(-DTALLY_SANITIZE="$sanitize" -DTALLY_BUILD_BENCH=OFF
         -DCMAKE_C_COMPILER=/usr/bin/clang-14 -DCMAKE_CXX_COMPILER=/usr/bin/clang++-14)
fi
# A tree configured otherwise (another compiler, or the sanitizers lost as
# above) starts afresh: a sanitizer stage must never test an uninstrumented
# build.
cache="$dir/CMakeCache.txt"
if [[ -f "$cache" ]]; then
  have_sanitize=$(sed -n 's/^TALLY_SANITIZE:STRING=//p' "$cache")
  have_compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$cache")
  if [[ "$have_sanitize" != "$want_sanitize" ||
        (-n "$want_sanitize" && "$have_compiler" != /usr/bin/clang++-14) ]]; then
    echo "build.sh: $dir was configured with sanitizers '$have_sanitize' and $have_compiler;" \
      "configuring it afresh" >&2
    rm -rf "$cache" "$dir/CMakeFiles"
  fi
fi
# A compiler cache, when the machine has one, makes rebuilds of other trees cheap.
if command -v ccache >/dev/null; then args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$dir" "${args[@]}" >/dev/null
if (($# > 0)); then
  cmake --build "$dir" -j"$(nproc)" --target "$@"
else
  cmake --build "$dir" -j"$(nproc)"
fi

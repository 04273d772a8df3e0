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
if [[ "$sanitize" != none && -n "$sanitize" ]]; then
  # clang: its sanitizer runtimes and llvm-symbolizer come as one set.
  args+=(-DTALLY_SANITIZE="$sanitize" -DTALLY_BUILD_BENCH=OFF
         -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14)
fi
# A compiler cache, when the machine has one, makes rebuilds of other trees cheap.
if command -v ccache >/dev/null; then args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$dir" "${args[@]}" >/dev/null
if (($# > 0)); then
  cmake --build "$dir" -j"$(nproc)" --target "$@"
else
  cmake --build "$dir" -j"$(nproc)"
fi

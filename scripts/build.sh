#!/usr/bin/env bash
# Configures and builds tally into build/ (programs land in build/bin/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-deps.sh"
launcher=()
# A compiler cache, when the machine has one, makes rebuilds of other trees cheap.
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE="${TALLY_BUILD_TYPE:-RelWithDebInfo}" \
  "${launcher[@]}" >/dev/null
cmake --build "$root/build" -j"$(nproc)"

#!/usr/bin/env bash
# Builds tally and runs the whole test suite (unit, property, socket and
# multi-process tests, plus tiny runs of the benchmarks so they never rot).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh"
cd "$root/build"
# sim_open_bug: simulator scenarios that expose open Node defects (see CMakeLists.txt).
ctest --output-on-failure --timeout 600 -j"${TALLY_TEST_JOBS:-2}" -LE sim_open_bug "$@"

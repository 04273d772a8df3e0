#!/usr/bin/env bash
# Builds tally and runs the whole test suite (unit, property, socket and
# multi-process tests, plus tiny runs of the benchmarks so they never rot).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure --timeout 600 -j"${TALLY_TEST_JOBS:-2}" "$@"

#!/usr/bin/env bash
# Builds tally and runs tallyd in the foreground on its embedded defaults.
# Extra arguments go to tallyd (e.g. --udp 127.0.0.1:0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/build.sh"
exec "$root/build/bin/tallyd" "$@"

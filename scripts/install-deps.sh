#!/usr/bin/env bash
# Installs the Debian packages tally needs to build, test and benchmark.
# Idempotent: does nothing (no apt-get update) when everything is present.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libboost1.81-dev libboost-program-options1.81-dev libboost-serialization1.81-dev
  libcapnp-dev capnproto libspdlog-dev libfmt-dev libxxhash-dev libsystemd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev
  # the Envoy rate limit service door (docs/ENVOY.md) and its Python client test
  protobuf-compiler libprotobuf-dev libgrpc++-dev protobuf-compiler-grpc
  python3-grpcio python3-protobuf python3-grpc-tools
  # tally-load's gRPC client on HTTP/2 without gRPC's library (bench/rls_load_h2.cc)
  libnghttp2-dev
  # peer authentication (daemon/io/keyring.h, peer_seal.h)
  libsodium-dev
  iproute2 nftables procps
  # stacks of a daemon that did not stop in time (tests/support/daemon_process.h)
  gdb
  # sanitizer builds and fuzzing (scripts/test.sh stages, scripts/fuzz.sh)
  clang-14 libclang-rt-14-dev llvm-14
  # per-process wall-clock offsets and steps (tests/cluster/clock_fault_test.cc)
  faketime libfaketime
  # the .deb check (tests/packaging/deb_test.sh) and its man pages (help2man)
  lintian help2man
  # the Kubernetes manifest check (tests/packaging/kubernetes_test.py)
  python3-yaml
  # promtool checks GET /metrics (tests/daemon/rls/http_ops_test.cc)
  prometheus
  # the status page in a real browser (tests/daemon/rls/status_page_browser_test.cc)
  chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then exit 0; fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

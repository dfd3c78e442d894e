#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds everything and runs the test suites
# (a clang 14 warning check, each libFuzzer target briefly, then ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/configure.sh
cmake --build build -j"$(nproc)"
scripts/check-clang.sh
if [ -x tests/fuzz/run_fuzz.sh ]; then
  tests/fuzz/run_fuzz.sh build-fuzz "${LCKV_FUZZ_SECONDS:-15}"
fi
ctest --test-dir build --output-on-failure -j"$(nproc)"

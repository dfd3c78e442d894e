#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds lckv and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
LCKV_NO_CUDA=${LCKV_NO_CUDA:-1} scripts/configure.sh -DLCKV_BUILD_TESTS=OFF
cmake --build build -j"$(nproc)" --target lckv_cli
build/bin/lckv compare "$@"

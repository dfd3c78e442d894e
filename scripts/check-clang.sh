#!/usr/bin/env bash
# The library, tests, examples and benchmarks compile without warnings under
# clang 14 too (the build itself uses g++): a -fsyntax-only pass with -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang++ >/dev/null || { echo "check-clang: clang++ not installed"; exit 1; }
flags=(-std=c++20 -fopenmp -Wall -Wextra -Werror -fsyntax-only -Iinclude -Itests -Itests/io -Iexamples/lckv
       -isystem /usr/include/eigen3 -DLCKV_HAVE_SENTENCEPIECE -DLCKV_TEST_DATA_DIR='"."' -DLCKV_GOLDEN_DIR='"."' -DLCKV_GOLDEN_CUDA_DIR='"."')
sources=(tests/test_*.cpp tests/io/test_*.cpp examples/quickstart.cpp examples/lckv/*.cpp bench/*.cpp)
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -I{} clang++ "${flags[@]}" {}
echo "check-clang: ${#sources[@]} files compile cleanly with $(clang++ --version | head -1)"

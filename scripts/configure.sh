#!/usr/bin/env bash
# Configures build/ (Release). The CUDA backend is compiled whenever nvcc exists,
# so its targets are always checked; its tests skip themselves without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=()
nvcc_path=$(command -v nvcc || true)
[ -n "$nvcc_path" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc_path=/usr/local/cuda/bin/nvcc; }
if [ -n "$nvcc_path" ] && [ "${LCKV_NO_CUDA:-0}" != 1 ]; then
  cuda=(-DLCKV_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path" -DCMAKE_CUDA_ARCHITECTURES=90)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cuda[@]}" "$@"

#!/usr/bin/env bash
# One device call: configure, build, test (+ compute-sanitizer memcheck and
# racecheck), measure the ceilings and run the CUDA benchmarks; logs go to
# $OUT (or ./device-out), a short table is printed last.
#
#   ../shared/device/deps.sh                    # once, on the development machine
#   bash bench/cuda/run_device.sh [quick]       # on the GPU machine, from the repo root
#
# "quick" runs a reduced benchmark set. Environment: PREBUILT=dir (run test_cuda, bench_cuda and
# runner_smoke built elsewhere instead of building), SKIP_TESTS=1, SKIP_SAN=1 (no sanitizers),
# PROFILE=1 (Nsight Compute: kernels timed alone), TIMELINE=1 (CUPTI: kernels overlapped in a step),
# SAN_TOOLS="memcheck racecheck" (default), RACE_FILTER (doctest filter for racecheck; default
# the op suite), SAN_STRIDE (under the sanitizers the long decode sweep runs every SAN_STRIDE-th
# combination; default 8), BENCH_FILTER (overrides the mode's benchmark filter), SAN_TIMEOUT, BENCH_TIMEOUT. Needs CUDA 12+ (nvcc, cuBLAS, CUB),
# CMake >= 3.25, Ninja, and .device-deps/ from deps.sh (doctest, Google
# Benchmark, nlohmann-json, Eigen).
set -uo pipefail
mode="${1:-full}"
root="$(pwd)"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
deps="$root/.device-deps/usr"
export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"
export LCKV_GOLDEN_CUDA_DIR="$root/tests/golden/fixtures_cuda"  # test_cuda's fixtures, wherever it was built
log() { echo "== $*" | tee -a "$out/summary.txt"; }

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader
  nvcc --version | tail -1
} | tee "$out/summary.txt"

# Bench wiring: bench/CMakeLists.txt adds cuda/ when LCKV_CUDA (added here on this copy if missing).
if ! grep -q "add_subdirectory(cuda)" bench/CMakeLists.txt 2>/dev/null; then
  echo 'if(LCKV_CUDA AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/cuda/CMakeLists.txt)
  add_subdirectory(cuda)
endif()' >> bench/CMakeLists.txt
fi

build=build-device
t0=$(date +%s)
if [ -n "${PREBUILT:-}" ]; then
  # Binaries built on the development machine (same CUDA, sm_90), carried over: no device time on compiling.
  mkdir -p $build/bin && cp "$PREBUILT"/test_cuda "$PREBUILT"/bench_cuda "$PREBUILT"/runner_smoke $build/bin/
  log "build: prebuilt binaries from $PREBUILT"
else
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLCKV_CUDA=ON -DLCKV_BUILD_BENCHMARKS=ON \
    -DLCKV_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$deps" >"$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; exit 1; }
  cmake --build $build -j"$(nproc)" --target test_cuda bench_cuda runner_smoke >>"$out/build.log" 2>&1 || { grep -m20 -B2 -A8 "error" "$out/build.log"; exit 1; }
  log "build: $(( $(date +%s) - t0 )) s"
fi

test_rc=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_TIMEOUT:-300}" $build/bin/test_cuda >"$out/test_cuda.log" 2>&1 || test_rc=$?
  log "test_cuda rc=$test_rc: $(grep -E '^\[doctest\] (test cases|assertions)' "$out/test_cuda.log" | tr '\n' ' ')"
  [ $test_rc -ne 0 ] && grep -B3 -A12 "ERROR\|FATAL" "$out/test_cuda.log" | head -60

  smoke_rc=0
  $build/bin/runner_smoke >>"$out/test_cuda.log" 2>&1 || smoke_rc=$?
  log "runner_smoke (lckv compare/generate --device cuda paths) rc=$smoke_rc: $(tail -1 "$out/test_cuda.log")"
fi

san_filter="${SAN_FILTER:-}"
[ "${SKIP_SAN:-0}" = 1 ] && tools="" || tools="${SAN_TOOLS:-memcheck racecheck}"
for tool in $tools; do
  t0=$(date +%s)
  rc=0
  # The two tests that provoke CUDA errors on purpose (a bad cudaMemcpy, an impossible
  # cudaMalloc) are left out: the sanitizer counts those API errors. racecheck is slow:
  # it runs the op suite (every custom kernel: both attention kernels, all masks, sampling).
  if [ $tool = racecheck ]; then filt="${RACE_FILTER:---test-suite=cuda ops}"; else filt='--test-suite=*'; fi
  filt2='--test-case-exclude=*error messages*,*out of device memory*'
  LCKV_TEST_STRIDE="${SAN_STRIDE:-8}" timeout "${SAN_TIMEOUT:-240}" compute-sanitizer --tool $tool --error-exitcode 99 $build/bin/test_cuda "$filt" "$filt2" $san_filter \
    >"$out/sanitizer.tmp" 2>&1 || rc=$?
  log "compute-sanitizer $tool rc=$rc ($(( $(date +%s) - t0 )) s): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.tmp" | tail -1) $(grep -E '^\[doctest\] test cases' "$out/sanitizer.tmp")"
  { echo "=== $tool"; cat "$out/sanitizer.tmp"; } >>"$out/sanitizers.log"
  rm -f "$out/sanitizer.tmp"
done

[ "$mode" = none ] && exit $test_rc
if [ "$mode" = quick ]; then
  filter='BM_CopyBandwidth|BM_GemmBf16|BM_DecodeAttention/context:(4096|32768)/batch:(1|32)/|BM_DecodeOps|BM_TinyLlamaDecodeStep/batch:(1|32)/context:1024'
else
  filter='.'
fi
filter="${BENCH_FILTER:-$filter}"
t0=$(date +%s)
timeout "${BENCH_TIMEOUT:-330}" $build/bin/bench_cuda --benchmark_filter="$filter" --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json \
  --benchmark_counters_tabular=true >"$out/bench_cuda.log" 2>&1 || log "bench_cuda failed: $(tail -3 "$out/bench_cuda.log")"
log "benchmarks: $(( $(date +%s) - t0 )) s"

# Where a decode step's time goes: every kernel of one replayed step timed alone under
# Nsight Compute (profile_step.sh; Nsight Systems is not on the GPU machines).
if [ "${PROFILE:-0}" = 1 ]; then
  BIN=$build/bin/bench_cuda bash "$root/bench/cuda/profile_step.sh" "batch:1/context:1024/lckv:1/variant:2" \
    "batch:32/context:1024/lckv:1/variant:2" | tee -a "$out/summary.txt"
fi

# The same steps with their kernels overlapped as in production: CUPTI timeline, marginal time
# per kernel (timeline_step.sh; needs libcuda_timeline.so, built here or carried with PREBUILT).
if [ "${TIMELINE:-0}" = 1 ]; then
  lib="${PREBUILT:+$PREBUILT/../bench/cuda/libcuda_timeline.so}"
  [ -n "$lib" ] || { cmake --build $build --target cuda_timeline >>"$out/build.log" 2>&1; lib=$build/bench/cuda/libcuda_timeline.so; }
  BIN=$build/bin/bench_cuda LIB="$lib" bash "$root/bench/cuda/timeline_step.sh" "batch:1/context:1024/lckv:0/variant:2" \
    "batch:32/context:1024/lckv:0/variant:2" | tee -a "$out/summary.txt"
  rm -f "$out"/timeline_*.csv
fi

# Nsight Compute on one decode-attention launch, when ncu is there.
ncu_bin="$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
if [ "${PROFILE:-0}" = 1 ] && [ -n "$ncu_bin" ]; then
  timeout 180 "$ncu_bin" --kernel-name regex:decode_kernel --launch-skip 40 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    $build/bin/bench_cuda --benchmark_filter='BM_DecodeAttention/context:4096/batch:32/lckv:0' 2>&1 \
    | grep -E "Throughput|Duration|Occupancy|Stall|Registers|Warp Cycles|Hit Rate|Bandwidth|Block Limit|Eligible|Issued" \
    | head -60 >>"$out/bench_cuda.log"
  log "ncu ($ncu_bin): see bench_cuda.log"
else
  log "ncu: not run (PROFILE=${PROFILE:-0}, ncu='${ncu_bin}')"
fi

python3 "$root/bench/cuda/summarize.py" "$out/bench_cuda.json" | tee -a "$out/summary.txt"

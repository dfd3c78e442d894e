#!/usr/bin/env bash
# Where one decode step's time goes with its kernels overlapped as in
# production: replays BM_TinyLlamaDecodeStep configurations under the CUPTI
# tracer (timeline.cpp) and prints timeline.py's marginal times. Run on the GPU
# machine with bench_cuda and libcuda_timeline.so built (BIN=, LIB= override):
#
#   bash bench/cuda/timeline_step.sh "batch:1/context:1024/lckv:0/variant:2" ...
#
# Writes $OUT/timeline_<n>.csv per configuration.
set -uo pipefail
root="$(pwd)"
out="${OUT:-$root/device-out}"
bin="${BIN:-build-device/bin/bench_cuda}"
lib="$(realpath "${LIB:-build-device/bench/cuda/libcuda_timeline.so}")"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64:${LD_LIBRARY_PATH:-}"
i=0
for cfg in "$@"; do
  i=$((i + 1))
  CUDA_INJECTION64_PATH="$lib" LCKV_TIMELINE="$out/timeline_$i.csv" timeout 120 "$bin" \
    --benchmark_filter="^BM_TinyLlamaDecodeStep/$cfg/" >"$out/timeline_$i.log" 2>&1 \
    || echo "timeline rc=$? for $cfg: $(tail -2 "$out/timeline_$i.log")"
  echo "== $cfg: $(grep -m1 "BM_TinyLlamaDecodeStep" "$out/timeline_$i.log" | tr -s " " | cut -c1-160)"
  python3 "$root/bench/cuda/timeline.py" "$out/timeline_$i.csv" 20 "${FIRST:-12}"
done

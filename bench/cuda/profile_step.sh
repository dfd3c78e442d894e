#!/usr/bin/env bash
# Where one decode step's time goes: Nsight Compute times every kernel of a
# replayed decode-step graph one by one (serialised, caches as the step leaves
# them, clocks unlocked), and breakdown.py sums them per kernel kind next to the
# step's own graph time. Run on the GPU machine after run_device.sh built (or
# PREBUILT= brought) build-device/bin/bench_cuda:
#
#   bash bench/cuda/profile_step.sh "batch:1/context:1024/lckv:0/variant:2" ...
#
# Writes $OUT/ncu_<n>.csv per configuration and prints the breakdowns.
set -uo pipefail
root="$(pwd)"
out="${OUT:-$root/device-out}"
bin="${BIN:-build-device/bin/bench_cuda}"
ncu_bin="$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
[ -n "$ncu_bin" ] || { echo "profile_step: no ncu on this machine"; exit 0; }
i=0
for cfg in "$@"; do
  i=$((i + 1))
  # The benchmark runs 3 warm-up forwards (eager, capture, first replay) and then replays; the
  # first 700 kernels cover the eager step and at least two replays at any layer count here.
  timeout 240 "$ncu_bin" --graph-profiling node --cache-control none --clock-control none \
    --metrics gpu__time_duration.sum --launch-count 700 --csv --print-units base \
    "$bin" --benchmark_filter="^BM_TinyLlamaDecodeStep/$cfg/" \
    >"$out/ncu_$i.csv" 2>"$out/ncu_$i.err" || echo "ncu rc=$? for $cfg: $(tail -2 "$out/ncu_$i.err")"
  echo "== $cfg"
  python3 "$root/bench/cuda/breakdown.py" "$out/ncu_$i.csv"
done

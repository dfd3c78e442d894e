#!/usr/bin/env bash
# Builds lckv's libFuzzer targets with clang into DIR and runs each for SECONDS.
#   tests/fuzz/run_fuzz.sh DIR SECONDS
# Seeds: tests/fuzz/corpus/<target>/; the growing corpus and any crash files stay in DIR.
# Exits non-zero when a target finds a crash, leak, or undefined behaviour.
set -euo pipefail
dir="${1:?usage: run_fuzz.sh DIR SECONDS}"
seconds="${2:?usage: run_fuzz.sh DIR SECONDS}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cxx="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}"
cmake -S "$root" -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLCKV_FUZZ=ON -DLCKV_BUILD_EXAMPLES=OFF -DLCKV_BUILD_TESTS=ON >/dev/null
targets=(fuzz_safetensors_header fuzz_config_json fuzz_layer_types)
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"
declare -A seeds=([fuzz_safetensors_header]=safetensors [fuzz_config_json]=config_json [fuzz_layer_types]=layer_types)
status=0
for t in "${targets[@]}"; do
  corpus="$dir/corpus/$t"
  mkdir -p "$corpus" "$dir/artifacts/$t"
  echo "== $t: ${seconds}s"
  if ! "$dir/bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$dir/artifacts/$t/" -print_final_stats=1 \
      "$corpus" "$root/tests/fuzz/corpus/${seeds[$t]}" 2>"$dir/$t.log"; then
    echo "!! $t found a problem; see $dir/$t.log and $dir/artifacts/$t/"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|NEW_FUNC|cov:" "$dir/$t.log" | tail -3 || true
done
exit $status

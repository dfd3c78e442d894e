#!/usr/bin/env bash
# Installs everything lckv needs to build, test and benchmark on Debian 12,
# from Debian's packages only. Uses sudo when not run as root.
set -euo pipefail
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
packages=(
  cmake make g++ pkg-config                      # build
  libeigen3-dev nlohmann-json3-dev libcli11-dev  # library and program
  doctest-dev libbenchmark-dev                   # tests and benchmarks
  libsentencepiece-dev                           # optional tokenizer
  clang libclang-rt-14-dev                       # libFuzzer targets
  python3-matplotlib                             # plots in docs/
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all dependencies present"
fi

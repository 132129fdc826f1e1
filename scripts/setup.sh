#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs loralab's dependencies from Debian's packages (only what is missing) and builds Release into build/.
# Idempotent: a second run finds everything installed and rebuilds nothing that is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libeigen3-dev libopenblas-openmp-dev libfmt-dev nlohmann-json3-dev
  libboost-program-options-dev libboost-test-dev
  libsentencepiece-dev sentencepiece
  gnuplot-nox fortunes fortunes-min
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null  # recommends: fonts for gnuplot's PNGs
fi

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${LORALAB_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$jobs"
echo "setup: build/ is ready"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs loralab's dependencies from Debian's packages (only what is missing) and builds Release into build/:
# by default only the main job, build/experiments/lora_vs_qlora; with --all (or LORALAB_SETUP_ALL=1) every
# program, bench and test suite. LORALAB_CMAKE_ARGS adds arguments to the configure step. --fuzz (or
# LORALAB_SETUP_FUZZ=1) also installs what scripts/fuzz.sh needs: clang, libFuzzer and LLVM's OpenMP runtime.
# Idempotent: a second run finds everything installed and rebuilds nothing that is up to date.
# Output: one line per stage; the compiler's own lines (warnings, errors) still come through, its progress does not.
set -euo pipefail
cd "$(dirname "$0")/.."

all="${LORALAB_SETUP_ALL:-0}"
fuzz="${LORALAB_SETUP_FUZZ:-0}"
for arg in "$@"; do
  case "$arg" in
    --all) all=1 ;;
    --fuzz) fuzz=1 ;;
    -h|--help)
      echo "usage: scripts/setup.sh [--all] [--fuzz]"
      echo "  installs the Debian packages loralab needs and builds Release into build/:"
      echo "  lora_vs_qlora only (the main job), or with --all (or LORALAB_SETUP_ALL=1) every program and test suite."
      echo "  --fuzz (or LORALAB_SETUP_FUZZ=1): also clang, libFuzzer and libomp for scripts/fuzz.sh."
      echo "  LORALAB_CMAKE_ARGS: more arguments for cmake's configure step."
      exit 0 ;;
    *) echo "setup: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
start=$SECONDS

packages=(
  build-essential cmake pkg-config
  libeigen3-dev libopenblas-openmp-dev libdnnl-dev libfmt-dev nlohmann-json3-dev
  libboost-program-options-dev libboost-test-dev
  libsentencepiece-dev sentencepiece
  gnuplot-nox fortunes fortunes-min
)
# scripts/fuzz.sh: clang++ -fsanitize=fuzzer (libFuzzer is in libclang-rt-14-dev) with -fopenmp (LLVM's libomp).
[ "$fuzz" = 1 ] && packages+=(clang libclang-rt-14-dev libomp-dev)
# --all: Open MPI too (sweeps over ranks, data-parallel training; the MPI tests run under mpirun). The main job alone
# does not need it.
[ "$all" = 1 ] && packages+=(libopenmpi-dev openmpi-bin)
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
else
  echo "setup: the Debian packages are installed"
fi

echo "setup: configuring build/ (Release)"
# stdout is CMake's "-- Found ..." chatter; its warnings and errors go to stderr and stay visible.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${LORALAB_CMAKE_ARGS:-} >/dev/null

# Build times measured from scratch on 2 cores (AMD EPYC Zen 4, GCC 12): the main job is one translation unit.
jobs=$(nproc)
if [ "$all" = 1 ]; then
  echo "setup: building every program, bench and test suite (about 40 min from scratch on 2 cores)"
  targets=()
else
  echo "setup: building lora_vs_qlora (about 3½ min from scratch; scripts/setup.sh --all builds everything)"
  targets=(--target lora_vs_qlora)
fi
# Drops the progress lines of make and ninja; whatever else the build prints (warnings, errors) passes through.
quiet() { grep -Ev '^\[ *[0-9]+%\] |^\[[0-9]+/[0-9]+\] |^Consolidate compiler generated|^ninja: no work to do' || true; }
if ! cmake --build build -j"$jobs" "${targets[@]}" 2>&1 | quiet; then
  echo "setup: the build failed (the compiler's messages are above)" >&2
  exit 1
fi

echo "setup: build/ is ready in $((SECONDS - start)) s"

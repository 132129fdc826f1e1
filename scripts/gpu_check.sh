#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The GPU checks in one command, for a session that has a device: builds the CUDA kernels, their tests and the CUDA
# bench (Release, build/), runs the tests (every kernel against the CPU path) and the bench, and prints both.
#   scripts/gpu_check.sh          (about 2 minutes from a configured build/ on 16 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "gpu_check: nvidia-smi failed"
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLORALAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
cmake --build build -j"$(nproc)" --target test_kernels cuda_bench
build/tests/kernels/test_kernels --log_level=test_suite
build/bench/cuda_bench

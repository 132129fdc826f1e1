#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The GPU checks in one command, for a session that has a device: builds the CUDA kernels, their tests, the CUDA
# bench and finetune (Release, build/), runs the tests (every kernel against the CPU path; the device model against
# the host model: one step, and 20 trainer steps' losses), the bench (kernels, then whole 30M steps LoRA vs QLoRA)
# and finetune, perplexity and generate --device cuda against the CPU (programs.device_cli), and prints all of it.
#   scripts/gpu_check.sh          (about 5 minutes from a fresh checkout on 16 cores; the build dominates)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "gpu_check: nvidia-smi failed"
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLORALAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
cmake --build build -j"$(nproc)" --target test_kernels cuda_bench finetune rank_ablation quant_ablation generate perplexity fixtures
status=0
build/tests/kernels/test_kernels --log_level=test_suite || status=1
build/bench/cuda_bench || status=1
bash tests/programs/device_cli.sh build "" ../shared || status=1
exit $status

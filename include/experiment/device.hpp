// SPDX-License-Identifier: MIT
#pragma once
// --device cpu | cuda: where a program's models train and run. Every program takes the flag (experiment/cli.hpp);
// those whose work has a CUDA path say so (command_line::allow_device), the others refuse cuda naming the ones that
// have one. cuda needs a build with the CUDA toolkit (LORALAB_HAVE_CUDA: the program links loralab::cuda) and a
// device; either missing is a usage error that says which and what to do.
#include <string>

#ifdef LORALAB_HAVE_CUDA
#include <cuda_runtime.h>

#include "quant_4bit.cuh"  // cuda::device_available
#endif

namespace loralab::experiment {

/// The --device values.
inline bool is_device_name(const std::string& d) { return d == "cpu" || d == "cuda"; }

/// The programs with a CUDA path, for the refusal of the others.
inline constexpr const char* device_programs =
    "finetune, lora_vs_qlora and the ablations (rank, target, scheme, optimizer) train on CUDA; generate and perplexity "
    "run there";

/// Empty when --device cuda can run here; else why not, and what to do.
inline std::string cuda_unavailable() {
#ifdef LORALAB_HAVE_CUDA
  std::string why;
  if (!cuda::device_available(&why)) return "no CUDA device is usable here (" + why + "); run with --device cpu";
  return "";
#else
  return "this build has no CUDA (nvcc was not found when CMake configured it, or -DLORALAB_CUDA=OFF); rebuild with the "
         "CUDA toolkit installed, or run with --device cpu";
#endif
}

/// Under several ranks, rank r uses device r mod (the devices this process sees).
inline void select_cuda_device([[maybe_unused]] int rank) {
#ifdef LORALAB_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) (void)cudaSetDevice(rank % n);
#endif
}

}  // namespace loralab::experiment

// SPDX-License-Identifier: MIT
#pragma once
// The one portability macro: per-element math compiled for both the CPU and CUDA kernels.
#if defined(__CUDACC__)
#define LORALAB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LORALAB_HOST_DEVICE inline
#endif

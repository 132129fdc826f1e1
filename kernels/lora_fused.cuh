// SPDX-License-Identifier: MIT
#pragma once
// The LoRA branch with its dropout fused into the passes over x (the unfused path of linear.cuh writes drop(x) to an
// (M, K) buffer, and in backward also g = dh·A, before the products):
//
//   lora_forward_fused   h = drop(x) · Aᵀ in one pass over x (one CUDA block per row, the mask hashed in registers,
//                        a shared-memory tree over the block), then y += s · h · Bᵀ by cuBLAS (k = r: nothing to fuse)
//   lora_backward_fused  dh = s · dy · B and dB += s · dyᵀ · h by cuBLAS (r columns); dA += dhᵀ · drop(x) in one pass
//                        over x (columns × chunks of 64 rows, each chunk's partial kept, then the chunks added in order:
//                        no atomics, the same bits every run); dx += drop'(dh · A) one thread per element
//
// The same mask as the CPU for the same seed (lora/dropout_mask.hpp), so results match linear.cuh's and the CPU's
// within float32 reordering; the per-thread sums are lora_fused_threads.hpp's, which the CPU tests run in the
// kernels' order. Saves 2 · M · K floats of scratch per adapted layer and two passes over them.
// Layouts (device, float32, row-major): x (M, K), dy, y (M, N), A (r, K), B (N, r), h, dh (M, r).
// Limits: r ≤ 64; the dA partials (ceil(M/64) · r · K floats) are allocated per call (cudaMallocAsync on `stream`).
// Benchmark: build/bench/cuda_bench (fused vs unfused forward + backward at the 30M and 7B shapes, dropout 0.05 and 0).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "linear.cuh"

namespace loralab::cuda {

cudaError_t lora_forward_fused(cublasHandle_t h, const float* x, int M, int K, int N, int r, const float* A, const float* B, float scaling,
                               const dropout_mask& drop, float* hbuf, float* y, cudaStream_t stream = nullptr);
/// dA, dB, dx accumulated; needs lora_forward_fused's h; dh (M, r) is scratch.
cudaError_t lora_backward_fused(cublasHandle_t h, const float* x, const float* dy, int M, int K, int N, int r, const float* A, const float* B,
                                float scaling, const dropout_mask& drop, const float* hbuf, float* dh, float* dA, float* dB, float* dx,
                                cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

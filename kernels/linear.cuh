// SPDX-License-Identifier: MIT
#pragma once
// The linear layers of a LoRA/QLoRA step on the GPU, through cuBLAS (float32 storage, float32 accumulation):
//
//   frozen_linear_forward     y (M, N) = x (M, K) · Wᵀ, W (N, K) a 4-bit blockwise weight dequantized in tiles of
//                             `tile_rows` rows into `tile` (tile_rows · K floats), each tile one SGEMM into y's columns
//   frozen_linear_backward    dx (M, K) = dy (M, N) · W, the same tiles, accumulated (the frozen W gets no gradient)
//   lora_forward              y += s · (drop(x) · Aᵀ) · Bᵀ, A (r, K), B (N, r); h = drop(x)·Aᵀ (M, r) kept for backward
//   lora_backward             dh = s · dy · B; dB += s · dyᵀ · h; dA += dhᵀ · drop(x); dx += drop'(dh · A)
//
// Row-major everywhere (cuBLAS is column-major: a row-major (R, C) matrix is its column-major transpose, so every
// product below is the transposed one with the operands swapped). Dropout: the mask of lora/dropout_mask.hpp, element
// i of drop(x) at index first + i, so it equals the CPU's mask for the same seed; drop(x) is recomputed in backward
// into `xd` (M·K floats) rather than kept, as the CPU does. With dropout 0 (or eval) xd may be null.
// Limits: tile_rows · K a multiple of the quantization block (every tile starts on a block; 128 · 1376 at block 64
// is), or one tile; plain (not double-quantized) absmax;
// the fused LoRA passes (dropout inside the passes over x, no (M, K) buffers) are lora_fused.cuh; cuda_bench times both.
// Benchmark: build/bench/cuda_bench (frozen linear TFLOP/s next to plain SGEMM on the same shapes; LoRA's share).
#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "quant_4bit.cuh"

namespace loralab::cuda {

/// Row-major C (m, n) = alpha · op(A) · op(B) + beta · C, op(A) (m, k), op(B) (k, n); lda, ldb, ldc the row strides
/// (cuBLAS SGEMM on the transposed problem).
cudaError_t gemm_rm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
                    float beta, float* C, int ldc);

/// A 4-bit blockwise weight in device memory: codes [(N·K+1)/2], absmax [ceil(N·K/block)].
struct weight_4bit {
  code4 type = code4::nf4;
  int block = 64;
  const std::uint8_t* codes = nullptr;
  const float* absmax = nullptr;
  int N = 0, K = 0;
};

/// The dropout of an adapter's input for one step: p = 0 (or eval) leaves x as it is.
struct dropout_mask {
  double p = 0;
  std::uint64_t seed = 0, first = 0;
};

cudaError_t frozen_linear_forward(cublasHandle_t h, const weight_4bit& w, const float* x, int M, float* y, float* tile, int tile_rows,
                                  cudaStream_t stream = nullptr);
cudaError_t frozen_linear_backward(cublasHandle_t h, const weight_4bit& w, const float* dy, int M, float* dx, float* tile, int tile_rows,
                                   cudaStream_t stream = nullptr);

/// y += s · (drop(x) Aᵀ) Bᵀ; fills h (M, r) and, with dropout, xd (M, K).
cudaError_t lora_forward(cublasHandle_t h, const float* x, int M, int K, int N, int r, const float* A, const float* B, float scaling,
                         const dropout_mask& drop, float* xd, float* hbuf, float* y, cudaStream_t stream = nullptr);
/// dA, dB accumulated; dx += the adapter's part. Needs lora_forward's h; dh (M, r) and g (M, K, with dropout) are scratch.
cudaError_t lora_backward(cublasHandle_t h, const float* x, const float* dy, int M, int K, int N, int r, const float* A, const float* B,
                          float scaling, const dropout_mask& drop, float* xd, const float* hbuf, float* dh, float* g, float* dA, float* dB,
                          float* dx, cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

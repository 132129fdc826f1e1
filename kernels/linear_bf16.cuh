// SPDX-License-Identifier: MIT
#pragma once
// The frozen 4-bit linear of kernels/linear.cuh with bfloat16 operands and float32 accumulation (cublasGemmEx,
// CUDA_R_16BF inputs, CUDA_R_32F output, CUBLAS_COMPUTE_32F): what bitsandbytes runs with compute_dtype=bfloat16.
//
//   to_bf16                          out[i] = bf16 bits of x[i], round to nearest even (core/bf16.hpp, as the CPU)
//   frozen_linear_forward_bf16       y (M, N, float32) = bf16(x) (M, K) · bf16(W)ᵀ; bf16(x) into `xb` (M·K), W's tiles
//                                    dequantized straight to bf16 (dequantize_4bit_bf16) into `tile` (tile_rows · K)
//   frozen_linear_backward_bf16      dx (M, K, float32) = bf16(dy) (M, N) · bf16(W); bf16(dy) into `dyb` (M·N)
//
// Products of two bfloat16 values are exact in float32, so against the CPU over the same bf16-rounded operands the
// only difference is the order of the float32 sums (tests/kernels: 1e-5 relative). The activations stay float32
// between layers; only the products' operands are rounded, as torch.autocast does.
// Limits: the tiles of linear.cuh (tile_rows · K a multiple of the block, or one tile); plain absmax.
// Benchmark: build/bench/cuda_bench (bf16 frozen linear TFLOP/s next to the float32 one and a dense bf16 GEMM).
#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "linear.cuh"

namespace loralab::cuda {

cudaError_t to_bf16(const float* x, std::size_t n, std::uint16_t* out, cudaStream_t stream = nullptr);

/// Row-major C (m, n, float32) = alpha · op(A) · op(B) + beta · C with A, B bfloat16 bits, float32 accumulation.
cudaError_t gemm_rm_bf16(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const std::uint16_t* A, int lda,
                         const std::uint16_t* B, int ldb, float beta, float* C, int ldc);

cudaError_t frozen_linear_forward_bf16(cublasHandle_t h, const weight_4bit& w, const float* x, int M, float* y, std::uint16_t* xb,
                                       std::uint16_t* tile, int tile_rows, cudaStream_t stream = nullptr);
cudaError_t frozen_linear_backward_bf16(cublasHandle_t h, const weight_4bit& w, const float* dy, int M, float* dx, std::uint16_t* dyb,
                                        std::uint16_t* tile, int tile_rows, cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// Causal attention forward as one tiled kernel (FlashAttention's online softmax, without its tensor-core tricks): the
// straightforward alternative to attention.cuh's cuBLAS batched GEMMs + softmax kernel, measured against it.
//   out (B·T, H·D) = softmax(q kᵀ / √D, causal) v for grouped-query heads, never writing the (B·H·T, T) probabilities:
//   one CUDA block per (32 query rows, b·H + h), one thread per row; keys and values staged 16 rows at a time in
//   shared memory (with the block's queries), each thread's running max / sum / output in registers
//   (attention_tiled_row.hpp), tiles past the block's last row skipped (the causal half is never computed).
// What it costs against the batched GEMMs: no probabilities in memory (B·H·T² floats: 64 MiB at B 4, H 8, T 1024) and
// half the products at large T, but CUDA cores instead of cuBLAS's tuned SGEMM; cuda_bench prints both at T 256 … 2048.
// The training step keeps attention.cuh: its backward reads the probabilities this kernel does not keep.
// Layouts (device, float32, row-major): q, out (B·T, H·D); k, v (B·T, Hkv·D). Limits: head_dim ≤ 128, H % Hkv == 0.
// Benchmark: build/bench/cuda_bench (tiled vs batched-GEMM attention forward).
#include <cuda_runtime.h>

#include "attention.cuh"

namespace loralab::cuda {

cudaError_t attention_forward_tiled(const attention_dims& a, const float* q, const float* k, const float* v, float* out,
                                    cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

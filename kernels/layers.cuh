// SPDX-License-Identifier: MIT
#pragma once
// The Llama layers' element-wise and row-wise parts on the GPU, forward and backward: RMSNorm, SwiGLU, RoPE,
// cross-entropy, the embedding's rows and the residual add (the products are cuBLAS's). Each is checked against the CPU layer (include/nn/) on fresh random
// inputs within 1e-5 relative (tests/kernels): the CPU sums rows with Eigen's vectorized order and its exp is
// Eigen's, so the bits differ; nothing here is stored quantized, so no bit-exact reference applies.
//
// Layouts (device pointers, float32, row-major): x, y, dx, dy (M, C); gain g (C); rstd (M); gate, up, h (M, F);
// q or k (M, heads·D) with cos, sin (max_pos, D/2) and pos (M) int32; logits, dlogits (M, V), targets (M) int32
// (−100 ignored), row_loss (M) (0 for ignored rows; the loss is Σ row_loss / denominator, summed on the host).
// Limits: one CUDA block per row for the row-wise kernels (C, V any size); no fusion with the products yet.
// Benchmark: none of its own (memory-bound row passes); cuda_bench times them inside the whole 30M step.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace loralab::cuda {

cudaError_t rms_norm_forward(const float* x, const float* g, float eps, int M, int C, float* y, float* rstd, cudaStream_t stream = nullptr);
/// dx = rstd · (g·dy − n · mean(g·dy·n)), n = x·rstd (the gain frozen, as in LoRA).
cudaError_t rms_norm_backward(const float* x, const float* g, const float* rstd, const float* dy, int M, int C, float* dx,
                              cudaStream_t stream = nullptr);
/// h = silu(gate) ⊙ up.
cudaError_t swiglu_forward(const float* gate, const float* up, std::size_t n, float* h, cudaStream_t stream = nullptr);
cudaError_t swiglu_backward(const float* gate, const float* up, const float* dh, std::size_t n, float* dgate, float* dup,
                            cudaStream_t stream = nullptr);
/// Rotates every head of x in place (inverse: the backward pass, rotation by −θ).
cudaError_t rotary(float* x, int M, int heads, int head_dim, const float* cos, const float* sin, const int* pos, bool inverse,
                   cudaStream_t stream = nullptr);
/// row_loss[i] = lse_i − logit[i, t_i]; dlogits = (softmax − onehot) / denominator (zero rows where t = −100).
cudaError_t cross_entropy(const float* logits, const int* targets, int M, int V, float denominator, float* row_loss, float* dlogits,
                          cudaStream_t stream = nullptr);

/// out (M, C) = the rows ids[0..M) of table (V, C) (ids checked on the host: 0 ≤ id < V).
cudaError_t embedding_rows(const float* table, const int* ids, int M, int C, float* out, cudaStream_t stream = nullptr);
/// y += x over n floats (the residual stream, gradient sums).
cudaError_t add_into(float* y, const float* x, std::size_t n, cudaStream_t stream = nullptr);
}  // namespace loralab::cuda

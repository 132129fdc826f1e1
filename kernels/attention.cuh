// SPDX-License-Identifier: MIT
#pragma once
// Causal scaled-dot-product attention with grouped-query heads on the GPU, forward and backward, as nn/attention.hpp
// computes it (rows b·T + t; query head h reads key/value head h / (H / Hkv)):
//   forward:  S = q kᵀ / √D (causal), P = softmax(S), out = P v                     P kept: (B·H·T, T)
//   backward: dP = dout vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √D, dq = dS k, dk = Σ_group dSᵀ q, dv = Σ_group Pᵀ dout
// The products are cuBLAS batched SGEMMs over every (b, h) (pointer arrays: GQA's shared heads are no constant
// stride); the causal softmax and its backward are one CUDA block per row. Full T × T products: the entries above
// the diagonal are computed and then masked, twice the work of the CPU's causal blocks at large T — what a tiled
// (flash-style) kernel would save, measured against this one in cuda_bench when written.
// Layouts (device, float32, row-major): q, out, dq (B·T, H·D); k, v, dk, dv (B·T, Hkv·D); probs, dP (B·H·T, T).
// Limits: H a multiple of Hkv; T ≤ 65535; pointer tables are allocated per call (cudaMallocAsync on `stream`).
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace loralab::cuda {

struct attention_dims {
  int batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0;
};

cudaError_t attention_forward(cublasHandle_t h, const attention_dims& a, const float* q, const float* k, const float* v, float* probs,
                              float* out, cudaStream_t stream = nullptr);
/// dq, dk, dv overwritten; dP (B·H·T, T) is scratch.
cudaError_t attention_backward(cublasHandle_t h, const attention_dims& a, const float* q, const float* k, const float* v,
                               const float* probs, const float* dout, float* dP, float* dq, float* dk, float* dv,
                               cudaStream_t stream = nullptr);

/// Inference over a KV cache: att (M, H·D) for the M query rows of q (M, H·D) at positions pos0 … pos0 + M − 1,
/// attending causally to the cached keys and values kc, vc (rows 0 … pos0 + M − 1 of (max_seq_len, Hkv·D)), as
/// nn::cached_attention computes it. One CUDA block per (row, head): the scores in shared memory (one float per
/// position seen), a block max and sum, then each output element a sum over positions. A straightforward kernel for
/// one-token decoding (M = 1: H blocks), not tuned for long prompts; limit: 4 · (pos0 + M) bytes of scores within the
/// device's shared memory per block (opted into past 46 KiB; 227 KiB on sm_90, ~58k positions).
cudaError_t cached_attention(const float* q, const float* kc, const float* vc, int M, int pos0, int heads, int kv_heads, int head_dim,
                             float* att, cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

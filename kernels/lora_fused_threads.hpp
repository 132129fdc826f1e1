// SPDX-License-Identifier: MIT
#pragma once
// The arithmetic of the fused LoRA kernels (kernels/lora_fused.cu) as host/device functions, one per thread's work,
// so the CPU tests (tests/kernels/kernel_twins_test.cpp) run the kernels' own sums in their order and a device
// result is compared with the CPU bit for bit. drop(x) is the CPU's mask (lora/dropout_mask.hpp): element (m, k) of
// the step's (M, K) input has index first + m·K + k; factor · x as apply_dropout_mask computes it.
//
//   lora_down_thread   thread t of T in row m: partial[j] = Σ_{k ≡ t (mod T), k ascending} drop(x)[m, k] · A[j, k]
//                      (the block then sums the T partials in a tree, block_tree_sum's order)
//   lora_dx_element    g = Σ_j dh[m, j] · A[j, k] (j ascending); the kernel adds factor · g into dx[m, k]
//   lora_dA_thread     column k, rows m0 … m1−1: partial[j] = Σ_m dh[m, j] · drop(x)[m, k] (m ascending); the chunks'
//                      partials are then added in chunk order into dA[j, k]
// R is the largest rank a kernel instance holds in registers; r ≤ R is the adapter's.
#include <cstdint>

#include "core/host_device.hpp"
#include "lora/dropout_mask.hpp"

namespace loralab::cuda {

/// The kernels' shapes, which fix their sums' order: threads per row in lora_down, rows per chunk in lora_dA.
constexpr int lora_down_threads = 128, lora_dA_chunk = 64;

/// One step's dropout in integers: threshold 0 keeps every element as it is (no hash computed).
struct lora_drop {
  std::uint64_t seed = 0, threshold = 0, first = 0;
  float keep = 1.0f;
};

/// The step's dropout at probability p (p ≤ 0: none), as lora_linear draws it.
inline lora_drop make_lora_drop(double p, std::uint64_t seed, std::uint64_t first) {
  if (p <= 0) return {};
  return {seed, lora::drop_threshold(p), first, float(1.0 / (1.0 - p))};
}

LORALAB_HOST_DEVICE float dropped_value(const lora_drop& d, std::uint64_t index, float x) {
  return d.threshold == 0 ? x : lora::dropout_factor(d.seed, d.first + index, d.threshold, d.keep) * x;
}

template <int R>
LORALAB_HOST_DEVICE void lora_down_thread(const float* x, const float* A, int K, int r, int m, int t, int T, const lora_drop& d,
                                          float (&partial)[R]) {
  for (int j = 0; j < R; ++j) partial[j] = 0.0f;
  const std::uint64_t row = std::uint64_t(m) * std::uint64_t(K);
  for (int k = t; k < K; k += T) {
    const float v = dropped_value(d, row + k, x[row + k]);
    for (int j = 0; j < R; ++j)
      if (j < r) partial[j] += v * A[std::uint64_t(j) * K + k];
  }
}

/// The block's tree over T (a power of two) partials in shared memory, as the kernel runs it: s[i] += s[i + o] for
/// o = T/2 … 1. `s` holds T values; s[0] is the sum.
LORALAB_HOST_DEVICE void tree_step(float* s, int i, int o) {
  if (i < o) s[i] += s[i + o];
}

LORALAB_HOST_DEVICE float lora_dx_element(const float* dh, const float* A, int K, int r, int m, int k) {
  float g = 0.0f;
  for (int j = 0; j < r; ++j) g += dh[std::uint64_t(m) * r + j] * A[std::uint64_t(j) * K + k];
  return g;
}

template <int R>
LORALAB_HOST_DEVICE void lora_dA_thread(const float* x, const float* dh, int K, int r, int k, int m0, int m1, const lora_drop& d,
                                        float (&partial)[R]) {
  for (int j = 0; j < R; ++j) partial[j] = 0.0f;
  for (int m = m0; m < m1; ++m) {
    const std::uint64_t i = std::uint64_t(m) * std::uint64_t(K) + k;
    const float v = dropped_value(d, i, x[i]);
    for (int j = 0; j < R; ++j)
      if (j < r) partial[j] += dh[std::uint64_t(m) * r + j] * v;
  }
}

}  // namespace loralab::cuda

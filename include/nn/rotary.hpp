// SPDX-License-Identifier: MIT
#pragma once
// Rotary position embeddings (Su et al. 2021) in HF's rotate-half layout: within each head of D dims,
// dimension i pairs with i + D/2 and rotates by θ = pos · theta^(-2i/D).
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

/// cos/sin of pos·θ_i for pos < max_pos, i < D/2, computed the way llama2.c's run.c does (float freq and angle).
template <class S>
struct rotary_table {
  int half = 0;
  matrix<S> cos, sin;  // (max_pos, D/2)

  rotary_table() = default;
  rotary_table(int head_dim, int max_pos, double theta) : half(head_dim / 2), cos(max_pos, head_dim / 2), sin(max_pos, head_dim / 2) {
    for (int p = 0; p < max_pos; ++p)
      for (int i = 0; i < half; ++i) {
        const S freq = S(1) / std::pow(S(theta), S(2 * i) / S(head_dim));
        const S angle = S(p) * freq;
        cos(p, i) = std::cos(angle);
        sin(p, i) = std::sin(angle);
      }
  }
};

/// Rotates every head of x (M, n_heads·D) in place; row r sits at position pos[r]. inverse = backward pass
/// (the transpose of a rotation is the rotation by −θ).
template <class S>
void apply_rotary(matrix<S>& x, int n_heads, const rotary_table<S>& rt, const std::vector<int>& pos, bool inverse = false) {
  const int half = rt.half, D = 2 * half;
  const S sign = inverse ? S(-1) : S(1);
#pragma omp parallel for schedule(static) if (core::worth_parallel(std::size_t(x.size())))
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const int p = pos[std::size_t(r)];
    for (int h = 0; h < n_heads; ++h) {
      S* v = x.row(r).data() + std::ptrdiff_t(h) * D;
      for (int i = 0; i < half; ++i) {
        const S c = rt.cos(p, i), s = sign * rt.sin(p, i);
        const S a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace loralab::nn

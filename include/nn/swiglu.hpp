// SPDX-License-Identifier: MIT
#pragma once
// The SwiGLU gate of Llama's MLP (Shazeer 2020): h = silu(gate) ⊙ up, silu(a) = a·σ(a).
//
// Rows run in parallel and the sigmoid uses Eigen's vectorized exp: as a scalar single-threaded expression this was
// 12 % of a 30M-parameter training step (docs/model_bench.md). Eigen's exp differs from expf by ≤ 3e-7 relative.
#include <cmath>

#include "core/parallel.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

template <class S>
S sigmoid(S a) { return S(1) / (S(1) + std::exp(-a)); }

/// h (M, F) = silu(gate) ⊙ up
template <class S>
void swiglu_forward(const matrix<S>& gate, const matrix<S>& up, matrix<S>& h) {
  h.resize(gate.rows(), gate.cols());
  const Eigen::Index rows = gate.rows();
#pragma omp parallel for schedule(static) if (core::worth_parallel(4 * std::size_t(gate.size())))  // an exp per element
  for (Eigen::Index i = 0; i < rows; ++i) {
    const auto a = gate.row(i).array();
    h.row(i).array() = a / (S(1) + (-a).exp()) * up.row(i).array();
  }
}

/// dgate = dh ⊙ up ⊙ σ(a)(1 + a(1 − σ(a))), dup = dh ⊙ silu(gate); one sigmoid per element.
template <class S>
void swiglu_backward(const matrix<S>& gate, const matrix<S>& up, const matrix<S>& dh, matrix<S>& dgate, matrix<S>& dup) {
  dgate.resize(gate.rows(), gate.cols());
  dup.resize(gate.rows(), gate.cols());
  const Eigen::Index rows = gate.rows();
#pragma omp parallel for schedule(static) if (core::worth_parallel(4 * std::size_t(gate.size())))  // an exp per element
  for (Eigen::Index i = 0; i < rows; ++i) {
    const auto a = gate.row(i).array();
    const Eigen::Array<S, 1, Eigen::Dynamic> s = S(1) / (S(1) + (-a).exp());
    const auto g = dh.row(i).array();
    dup.row(i).array() = a * s * g;
    dgate.row(i).array() = s * (S(1) + a * (S(1) - s)) * up.row(i).array() * g;
  }
}

}  // namespace loralab::nn

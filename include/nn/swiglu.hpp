// SPDX-License-Identifier: MIT
#pragma once
// The SwiGLU gate of Llama's MLP (Shazeer 2020): h = silu(gate) ⊙ up, silu(a) = a·σ(a).
#include <cmath>

#include "nn/tensor.hpp"

namespace loralab::nn {

template <class S>
S sigmoid(S a) { return S(1) / (S(1) + std::exp(-a)); }

/// h (M, F) = silu(gate) ⊙ up
template <class S>
void swiglu_forward(const matrix<S>& gate, const matrix<S>& up, matrix<S>& h) {
  h.resize(gate.rows(), gate.cols());
  h = gate.unaryExpr([](S a) { return a * sigmoid(a); }).cwiseProduct(up);
}

/// dgate = dh ⊙ up ⊙ σ(a)(1 + a(1 − σ(a))), dup = dh ⊙ silu(gate)
template <class S>
void swiglu_backward(const matrix<S>& gate, const matrix<S>& up, const matrix<S>& dh, matrix<S>& dgate, matrix<S>& dup) {
  dgate.resize(gate.rows(), gate.cols());
  dup.resize(gate.rows(), gate.cols());
  dup = gate.unaryExpr([](S a) { return a * sigmoid(a); }).cwiseProduct(dh);
  dgate = gate.unaryExpr([](S a) { const S s = sigmoid(a); return s * (S(1) + a * (S(1) - s)); })
              .cwiseProduct(up)
              .cwiseProduct(dh);
}

}  // namespace loralab::nn

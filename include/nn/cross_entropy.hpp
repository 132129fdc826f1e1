// SPDX-License-Identifier: MIT
#pragma once
// Cross-entropy over the vocabulary with HF's ignore index −100: the loss is the mean over non-ignored rows.
// Forward and backward are fused: one pass computes the loss and dlogits = (softmax − onehot) / count.
#include <cmath>
#include <vector>

#include "core/check.hpp"
#include "core/parallel.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

inline constexpr int ignore_index = -100;

/// Returns the mean loss and, when dlogits is given, fills it (M, V). A batch with no target is an error.
/// `denominator` > 0 divides by it instead of this batch's target count: gradient accumulation divides every
/// micro-batch by the whole window's count, so the step's gradient is the token mean over the window.
template <class S>
double cross_entropy(const matrix<S>& logits, const std::vector<int>& targets, matrix<S>* dlogits, int* counted = nullptr,
                     double denominator = 0) {
  const Eigen::Index M = logits.rows(), V = logits.cols();
  LORALAB_CHECK(Eigen::Index(targets.size()) == M, "cross_entropy: ", targets.size(), " targets for ", M, " rows");
  int n = 0;
  for (int t : targets) {
    LORALAB_CHECK(t == ignore_index || (t >= 0 && t < V), "cross_entropy: target ", t, " outside the vocabulary of ", V);
    n += t != ignore_index;
  }
  LORALAB_CHECK(n > 0, "cross_entropy: every target is the ignore index -100: nothing to learn from");
  if (counted) *counted = n;
  const S div = denominator > 0 ? S(denominator) : S(n);
  if (dlogits) dlogits->resize(M, V);
  double loss = 0;
#pragma omp parallel for schedule(static) reduction(+ : loss) if (core::worth_parallel(std::size_t(M * V)))
  for (Eigen::Index i = 0; i < M; ++i) {
    const int t = targets[std::size_t(i)];
    if (t == ignore_index) {
      if (dlogits) dlogits->row(i).setZero();
      continue;
    }
    const S mx = logits.row(i).maxCoeff();
    const S sum = (logits.row(i).array() - mx).exp().sum();
    const S lse = mx + std::log(sum);
    loss += double(lse - logits(i, t));
    if (dlogits) {
      dlogits->row(i) = ((logits.row(i).array() - lse).exp() / div).matrix();
      (*dlogits)(i, t) -= S(1) / div;
    }
  }
  return loss / double(div);
}

}  // namespace loralab::nn

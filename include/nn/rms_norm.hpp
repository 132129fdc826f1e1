// SPDX-License-Identifier: MIT
#pragma once
// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x²) + eps) · g, per row.
#include <cmath>

#include "core/parallel.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

/// y (M, C) and rstd (M) = 1/sqrt(mean(x²)+eps) from x (M, C) and the gain g (C).
template <class S>
void rms_norm_forward(const matrix<S>& x, const vector<S>& g, S eps, matrix<S>& y, vector<S>& rstd) {
  const Eigen::Index M = x.rows(), C = x.cols();
  y.resize(M, C), rstd.resize(M);
#pragma omp parallel for schedule(static) if (core::worth_parallel(std::size_t(M * C)))
  for (Eigen::Index i = 0; i < M; ++i) {
    const S ms = x.row(i).squaredNorm() / S(C);
    rstd(i) = S(1) / std::sqrt(ms + eps);
    y.row(i) = (x.row(i) * rstd(i)).cwiseProduct(g.transpose());
  }
}

/// dx (M, C) from dy; dg (C) += Σ_rows dy · x · rstd when dg is non-empty (a trainable gain).
/// With n = x·rstd: dx = rstd · (g·dy − n · mean(g·dy·n)).
template <class S>
void rms_norm_backward(const matrix<S>& x, const vector<S>& g, const vector<S>& rstd, const matrix<S>& dy,
                       matrix<S>& dx, vector<S>* dg) {
  const Eigen::Index M = x.rows(), C = x.cols();
  dx.resize(M, C);
#pragma omp parallel for schedule(static) if (core::worth_parallel(std::size_t(4 * M * C)))
  for (Eigen::Index i = 0; i < M; ++i) {
    const row_vector<S> gdy = dy.row(i).cwiseProduct(g.transpose());
    const row_vector<S> n = x.row(i) * rstd(i);
    const S mean = gdy.dot(n) / S(C);
    dx.row(i) = rstd(i) * (gdy - n * mean);
  }
  if (dg)
    for (Eigen::Index i = 0; i < M; ++i) *dg += (dy.row(i).cwiseProduct(x.row(i)) * rstd(i)).transpose();
}

}  // namespace loralab::nn

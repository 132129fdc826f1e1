// SPDX-License-Identifier: MIT
#pragma once
// How far a dequantized tensor is from the original: MSE, max |error|, SQNR. Accumulated in double.
#include <cmath>
#include <limits>
#include <ostream>
#include <span>

#include <Eigen/Core>

#include "core/check.hpp"

namespace loralab::quant {

struct error_metrics {
  double mse = 0;            ///< mean of (x - y)^2
  double max_abs_error = 0;  ///< max |x - y|
  double sqnr_db = 0;        ///< 10 log10(sum x^2 / sum (x - y)^2); +inf for an exact copy
  friend std::ostream& operator<<(std::ostream& os, const error_metrics& m) {
    return os << "mse=" << m.mse << " max_abs_error=" << m.max_abs_error << " sqnr_db=" << m.sqnr_db;
  }
};

/// Metrics of `approx` against `reference`; non-finite elements propagate (a NaN anywhere gives NaN).
inline error_metrics measure_error(std::span<const float> reference, std::span<const float> approx) {
  LORALAB_CHECK(reference.size() == approx.size(), "measure_error: ", reference.size(), " vs ", approx.size(), " elements");
  LORALAB_CHECK(!reference.empty(), "measure_error: empty tensors");
  using vec = Eigen::Map<const Eigen::ArrayXf>;
  const Eigen::ArrayXd x = vec(reference.data(), Eigen::Index(reference.size())).cast<double>();
  const Eigen::ArrayXd e = x - vec(approx.data(), Eigen::Index(approx.size())).cast<double>();
  const double signal = x.square().sum(), noise = e.square().sum();
  error_metrics m;
  m.mse = noise / static_cast<double>(x.size());
  m.max_abs_error = e.abs().maxCoeff();
  m.sqnr_db = noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
  return m;
}

}  // namespace loralab::quant

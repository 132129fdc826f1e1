// SPDX-License-Identifier: MIT
#pragma once
// Matrix aliases for include/nn/: row-major Eigen matrices, rows = tokens (B*T), columns = features.
#include <cstddef>

#include <Eigen/Core>

namespace loralab::nn {

template <class S>
using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using row_vector = Eigen::Matrix<S, 1, Eigen::Dynamic>;

/// Bytes an Eigen object holds (its allocation).
template <class Derived>
std::size_t bytes_of(const Eigen::PlainObjectBase<Derived>& m) {
  return static_cast<std::size_t>(m.size()) * sizeof(typename Derived::Scalar);
}

}  // namespace loralab::nn

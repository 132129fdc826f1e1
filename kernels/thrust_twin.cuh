// SPDX-License-Identifier: MIT
#pragma once
// kernels/thrust_twin.hpp's checks on the GPU, callable from g++-built host code (g: device memory).
#include <cstddef>

namespace loralab::cuda {

/// Σ g[i]² in double.
double thrust_sum_of_squares(const float* g, std::size_t n);
/// The index of the first NaN or ±Inf of g, −1 if none.
std::ptrdiff_t thrust_first_non_finite(const float* g, std::size_t n);

}  // namespace loralab::cuda

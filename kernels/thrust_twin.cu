// SPDX-License-Identifier: MIT
// The Thrust checks on the GPU (Thrust's CUDA system), behind plain functions for host code built with g++.
#include "thrust_twin.cuh"

#include "thrust_twin.hpp"

namespace loralab::cuda {

double thrust_sum_of_squares(const float* g, std::size_t n) { return thrust_twin::cuda_system::sum_of_squares(g, n); }
std::ptrdiff_t thrust_first_non_finite(const float* g, std::size_t n) { return thrust_twin::cuda_system::first_non_finite(g, n); }

}  // namespace loralab::cuda

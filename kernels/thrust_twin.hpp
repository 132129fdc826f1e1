// SPDX-License-Identifier: MIT
#pragma once
// Two checks of a gradient written once with Thrust, for both systems it targets:
//
//   sum_of_squares(g, n)     Σ g[i]² in double (thrust::transform_reduce): the global gradient norm's sum
//   first_non_finite(g, n)   the index of the first NaN or ±Inf, −1 if none (thrust::find_if): the trainer's check
//
// Compiled by nvcc (kernels/thrust_twin.cu: Thrust's CUDA system, g a device pointer) they run on the GPU; compiled
// by g++ with THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP (tests/kernels/thrust_twin_test.cpp) the same source
// runs on the CPU through Thrust's OpenMP system, g a host pointer — the CPU twin the tests check against
// train::detail::first_non_finite and a plain double sum wherever no GPU exists. Each system's functions live in a
// namespace of their own (cuda_system, omp_system), so both link into one program.
// Limits: n < 2^63; the sum's order is Thrust's (a tree): within 1e-12 relative of the sequential sum, not bit equal.
#include <cstddef>

#include <thrust/device_ptr.h>
#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/functional.h>
#include <thrust/transform_reduce.h>

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#define LORALAB_THRUST_SYSTEM cuda_system
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#define LORALAB_THRUST_SYSTEM omp_system
#else
#error "thrust_twin.hpp: Thrust's device system is CUDA (nvcc) or OpenMP (THRUST_DEVICE_SYSTEM_OMP)"
#endif

namespace loralab::thrust_twin::LORALAB_THRUST_SYSTEM {

struct square_as_double {
  __host__ __device__ double operator()(float x) const { return double(x) * double(x); }
};
struct not_finite {
  __host__ __device__ bool operator()(float x) const { return !(x - x == 0.0f); }  // NaN and ±Inf give x − x = NaN
};

inline double sum_of_squares(const float* g, std::size_t n) {
  const thrust::device_ptr<const float> p(g);
  return thrust::transform_reduce(thrust::device, p, p + n, square_as_double{}, 0.0, thrust::plus<double>());
}

inline std::ptrdiff_t first_non_finite(const float* g, std::size_t n) {
  const thrust::device_ptr<const float> p(g);
  const auto at = thrust::find_if(thrust::device, p, p + n, not_finite{});
  return at == p + n ? -1 : std::ptrdiff_t(at - p);
}

}  // namespace loralab::thrust_twin::LORALAB_THRUST_SYSTEM

// SPDX-License-Identifier: MIT
#pragma once
// What the kernel test files share: the skip-with-reason precondition, device buffers and copies, fresh random
// inputs, and the layers' tolerance measure.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <cuda_runtime.h>

#include "nn/tensor.hpp"
#include "quant_4bit.cuh"
#include "test_support.hpp"

namespace loralab::kernel_testing {

/// A suite's precondition: true where a CUDA device exists, otherwise false with the runtime's reason.
inline boost::test_tools::assertion_result has_device(boost::unit_test::test_unit_id) {
  std::string why;
  if (cuda::device_available(&why)) return true;
  boost::test_tools::assertion_result r(false);
  r.message() << "no CUDA device (" << why << ")";
  return r;
}

template <class T>
struct device_buffer {
  T* p = nullptr;
  explicit device_buffer(std::size_t n) { BOOST_TEST_REQUIRE(cudaMalloc(&p, n * sizeof(T) + 1) == cudaSuccess); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

inline std::vector<float> normal_values(std::size_t n, std::uint64_t salt, float sd) {
  auto g = testing::rng(salt);
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(g);
  return x;
}

template <class T>
std::vector<T> host_copy(const T* d, std::size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}
template <class T>
T* device_copy(const std::vector<T>& h) {
  T* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(T) + 1);
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

/// max |a − b| / max |b| over n elements: the layers' tolerance measure.
inline double relative_error(const float* a, const float* b, std::size_t n) {
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, double(std::abs(a[i] - b[i]))), scale = std::max(scale, double(std::abs(b[i])));
  return worst / std::max(scale, 1e-30);
}
inline double relative_error(const std::vector<float>& a, const float* b, std::size_t n) { return relative_error(a.data(), b, n); }
using fmat = nn::matrix<float>;
inline fmat random_matrix(int rows, int cols, std::uint64_t salt, float sd = 1.0f) {
  const auto v = normal_values(std::size_t(rows) * cols, salt, sd);
  return Eigen::Map<const fmat>(v.data(), rows, cols);
}
inline std::vector<float> values_of(const fmat& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

}  // namespace loralab::kernel_testing

// SPDX-License-Identifier: MIT
// kernels/thrust_twin.hpp on the CPU: this file is compiled with THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP, so the
// Thrust source the GPU runs (kernels/thrust_twin.cu) runs here through Thrust's OpenMP system, on every machine.
// Checked against the trainer's own first_non_finite and a sequential double sum; where a device exists, the CUDA
// system's results against these.
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <cuda_runtime.h>

#include "quant_4bit.cuh"
#include "test_support.hpp"
#include "thrust_twin.cuh"
#include "thrust_twin.hpp"
#include "train/trainer.hpp"

namespace twin = loralab::thrust_twin::omp_system;

namespace {
std::vector<float> values(std::size_t n, std::uint64_t salt) {
  auto g = loralab::testing::rng(salt);
  std::normal_distribution<float> d(0.0f, 1e-2f);
  std::vector<float> x(n);
  for (auto& v : x) v = d(g);
  return x;
}
}  // namespace

BOOST_AUTO_TEST_CASE(thrust_twin_on_the_cpu_is_the_trainers_arithmetic) {
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(1000), std::size_t(1) << 20}) {
    std::vector<float> g = values(n, 500 + n);
    double expect = 0;
    for (float x : g) expect += double(x) * double(x);
    const double got = twin::sum_of_squares(g.data(), n);
    BOOST_TEST(std::abs(got - expect) <= 1e-12 * std::max(expect, 1e-300), "n " << n << ": " << got << " vs " << expect);
    BOOST_TEST(twin::first_non_finite(g.data(), n) == -1, "n " << n);
    if (n < 1000) continue;
    const float inf = std::numeric_limits<float>::infinity();
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), inf, -inf}) {
      std::vector<float> h = g;
      h[n - 7] = bad, h[n / 2] = bad;
      BOOST_TEST(twin::first_non_finite(h.data(), n) == loralab::train::detail::first_non_finite(h.data(), n).index, "bad " << bad);
      BOOST_TEST(twin::first_non_finite(h.data(), n) == std::ptrdiff_t(n / 2));
    }
  }
  const float tiny = std::numeric_limits<float>::denorm_min(), big = std::numeric_limits<float>::max();
  const std::vector<float> edge{tiny, -0.0f, big, -big};
  BOOST_TEST(twin::first_non_finite(edge.data(), edge.size()) == -1, "subnormal, -0 and ±FLT_MAX are finite");
}

BOOST_AUTO_TEST_CASE(thrust_twin_on_the_gpu_equals_the_cpu_twin) {
  std::string why;
  if (!loralab::cuda::device_available(&why)) {
    BOOST_TEST_MESSAGE("thrust twin on the GPU: SKIPPED, no CUDA device (" << why << ")");
    return;
  }
  const std::size_t n = (std::size_t(1) << 20) + 3;
  std::vector<float> g = values(n, 77);
  g[12345] = std::numeric_limits<float>::quiet_NaN();
  float* d = nullptr;
  BOOST_TEST_REQUIRE(cudaMalloc(&d, n * 4) == cudaSuccess);
  cudaMemcpy(d, g.data(), n * 4, cudaMemcpyHostToDevice);
  BOOST_TEST(loralab::cuda::thrust_first_non_finite(d, n) == twin::first_non_finite(g.data(), n));
  g[12345] = 0.0f;
  cudaMemcpy(d, g.data(), n * 4, cudaMemcpyHostToDevice);
  const double gpu = loralab::cuda::thrust_sum_of_squares(d, n), cpu = twin::sum_of_squares(g.data(), n);
  BOOST_TEST(std::abs(gpu - cpu) <= 1e-12 * cpu);
  cudaFree(d);
}

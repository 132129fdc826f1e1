// SPDX-License-Identifier: MIT
// CUDA kernels against the CPU reference, bit for bit. Every case is skipped, with the reason, where no CUDA
// device exists (CI and the development machines have none).
#define BOOST_TEST_MODULE kernels
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <cuda_runtime.h>

#include "quant/blockwise_tensor.hpp"
#include "quant_4bit.cuh"
#include "test_support.hpp"

namespace {
boost::test_tools::assertion_result has_device(boost::unit_test::test_unit_id) {
  std::string why;
  if (loralab::cuda::device_available(&why)) return true;
  boost::test_tools::assertion_result r(false);
  r.message() << "no CUDA device (" << why << ")";
  return r;
}

/// Says once, on stdout, why the suite does not run here.
struct announce_skip {
  announce_skip() {
    std::string why;
    if (!loralab::cuda::device_available(&why))
      std::cout << "kernels: SKIPPED every GPU test: no CUDA device (" << why << ")\n";
  }
};
BOOST_TEST_GLOBAL_FIXTURE(announce_skip);

template <class T>
struct device_buffer {
  T* p = nullptr;
  explicit device_buffer(std::size_t n) { BOOST_TEST_REQUIRE(cudaMalloc(&p, n * sizeof(T) + 1) == cudaSuccess); }
  ~device_buffer() { cudaFree(p); }
};

template <class S>
void check_against_reference(loralab::cuda::code4 type, std::size_t n) {
  auto g = loralab::testing::rng(900 + n);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(g);
  x[0] = 0.0f;  // and a value on a code point
  const auto ref = loralab::quant::blockwise_tensor<S>::template quantize_ref<float>(x, {std::int64_t(n)});

  device_buffer<float> dx(n), dabs(ref.num_blocks()), dout(n);
  device_buffer<std::uint8_t> dcodes(ref.code_bytes());
  cudaMemcpy(dx.p, x.data(), n * 4, cudaMemcpyHostToDevice);
  BOOST_TEST_REQUIRE(loralab::cuda::quantize_4bit(type, S::block_size, dx.p, n, dcodes.p, dabs.p) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::dequantize_4bit(type, S::block_size, dcodes.p, dabs.p, n, dout.p) == cudaSuccess);
  std::vector<std::uint8_t> codes(ref.code_bytes());
  std::vector<float> absmax(ref.num_blocks()), out(n), expect(n);
  cudaMemcpy(codes.data(), dcodes.p, codes.size(), cudaMemcpyDeviceToHost);
  cudaMemcpy(absmax.data(), dabs.p, absmax.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(out.data(), dout.p, n * 4, cudaMemcpyDeviceToHost);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  ref.template dequantize_ref<float>(expect);
  BOOST_TEST(std::memcmp(codes.data(), ref.codes().data(), codes.size()) == 0, "codes n=" << n);
  BOOST_TEST(std::memcmp(absmax.data(), ref.absmax().data(), absmax.size() * 4) == 0, "absmax n=" << n);
  BOOST_TEST(std::memcmp(out.data(), expect.data(), n * 4) == 0, "dequantized n=" << n);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(quant_4bit_kernels, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(nf4_matches_cpu_reference) {
  for (std::size_t n : {1u, 63u, 64u, 1001u, 1u << 20}) check_against_reference<loralab::quant::nf4<64>>(loralab::cuda::code4::nf4, n);
}

BOOST_AUTO_TEST_CASE(fp4_matches_cpu_reference) {
  for (std::size_t n : {3u, 4096u, 70001u}) check_against_reference<loralab::quant::fp4<256>>(loralab::cuda::code4::fp4, n);
}

BOOST_AUTO_TEST_SUITE_END()

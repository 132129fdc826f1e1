// SPDX-License-Identifier: MIT
// LLM.int8 row-wise weights: fp16 rounding, round-half-even codes, SCB, outlier columns, exact storage.
#include <cmath>
#include <random>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::quant;

BOOST_AUTO_TEST_SUITE(int8_rowwise_suite)

BOOST_AUTO_TEST_CASE(known_codes_round_half_to_even) {
  // row absmax 127 -> scale 1: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
  const std::vector<float> w = {127.0f, 2.5f, 3.5f, -2.5f, 0.0f, 0.0f, 0.0f, 0.0f};
  const auto q = rowwise_int8_tensor::quantize<float>(w, 2, 4);
  BOOST_TEST(q.codes()[0] == 127);
  BOOST_TEST(q.codes()[1] == 2);
  BOOST_TEST(q.codes()[2] == 4);
  BOOST_TEST(q.codes()[3] == -2);
  BOOST_TEST(q.row_absmax()[0] == 127.0f);
  BOOST_TEST(q.row_absmax()[1] == 0.0f, "an all-zero row stores SCB 0 and codes 0");
  for (int c = 4; c < 8; ++c) BOOST_TEST(q.codes()[c] == 0);
}

BOOST_AUTO_TEST_CASE(weights_are_rounded_to_fp16_first) {
  const float w = 1.0f + 1e-4f;  // not representable in fp16: rounds to 1.0
  const std::vector<float> x = {w, 0.5f};
  const auto q = rowwise_int8_tensor::quantize<float>(x, 1, 2);
  BOOST_TEST(q.row_absmax()[0] == 1.0f);
}

BOOST_AUTO_TEST_CASE(round_trip_within_half_a_step_per_row) {
  auto g = loralab::testing::rng(600);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t rows = 33, cols = 77;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = normal(g);
  const auto q = rowwise_int8_tensor::quantize<float>(w, rows, cols);
  std::vector<float> y(rows * cols);
  q.dequantize<float>(y);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const float w16 = static_cast<float>(Eigen::half(w[r * cols + c]));
      // half a code step, plus the fp16 rounding of the weight
      const float bound = q.row_absmax()[r] / 127.0f * 0.5f * 1.0001f + std::fabs(w16 - w[r * cols + c]);
      BOOST_TEST_REQUIRE(std::fabs(y[r * cols + c] - w[r * cols + c]) <= bound);
    }
  BOOST_TEST(q.storage_bytes() == int8_rowwise::storage_bytes(rows, cols));
  BOOST_TEST(q.measured_bits_per_param() == int8_rowwise::bits_per_param(cols), boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(outlier_columns_are_kept_exactly) {
  auto g = loralab::testing::rng(601);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t rows = 8, cols = 16;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = normal(g) * 0.1f;
  w[3 * cols + 5] = 20.0f;   // column 5 is an outlier column
  w[6 * cols + 11] = -9.0f;  // column 11 too
  const auto q = rowwise_int8_tensor::quantize<float>(w, rows, cols, 6.0f);
  BOOST_TEST_REQUIRE(q.outlier_columns().size() == 2u);
  BOOST_TEST(q.outlier_columns()[0] == 5);
  BOOST_TEST(q.outlier_columns()[1] == 11);
  BOOST_TEST(q.row_absmax()[3] < 1.0f, "outliers do not enter the row absmax");
  for (std::size_t r = 0; r < rows; ++r) BOOST_TEST(q.codes()[r * cols + 5] == 0);
  std::vector<float> y(rows * cols);
  q.dequantize<float>(y);
  for (std::size_t r = 0; r < rows; ++r) {
    BOOST_TEST(y[r * cols + 5] == static_cast<float>(Eigen::half(w[r * cols + 5])));
    BOOST_TEST(y[r * cols + 11] == static_cast<float>(Eigen::half(w[r * cols + 11])));
  }
  BOOST_TEST(q.storage_bytes() == int8_rowwise::storage_bytes(rows, cols, 2));
}

BOOST_AUTO_TEST_CASE(bad_inputs) {
  std::vector<float> w(6, 1.0f);
  BOOST_CHECK_THROW(rowwise_int8_tensor::quantize<float>(w, 4, 2), loralab::error);
  BOOST_CHECK_THROW(rowwise_int8_tensor::quantize<float>(std::span<const float>(), 0, 0), loralab::error);
  BOOST_CHECK_THROW(rowwise_int8_tensor::quantize<float>(w, 2, 3, -1.0f), loralab::error);
}

BOOST_AUTO_TEST_SUITE_END()

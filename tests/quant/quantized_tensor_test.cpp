// SPDX-License-Identifier: MIT
// One interface for every scheme's storage (quant/quantized_tensor.hpp): quant::quantize<S>(data, rows, cols) gives
// the bits of the scheme's own entry point, and every tensor splits its bytes into codes and statistics the way its
// formula says, so code outside quant/ never asks which scheme it holds.
#include <algorithm>
#include <random>
#include <span>
#include <string_view>
#include <tuple>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::quant;

namespace {
using uniform_schemes = std::tuple<nf4<64>, double_quant<nf4<64>>, fp4<128>, double_quant<fp4<64>>, dynamic8<256>, int8_rowwise>;
}

BOOST_AUTO_TEST_SUITE(quantized_tensor_interface)

BOOST_AUTO_TEST_CASE_TEMPLATE(every_scheme_answers_the_same_questions, S, uniform_schemes) {
  auto g = loralab::testing::rng(700);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const std::size_t rows = 37, cols = 95;  // odd element count: a 4-bit tensor pads its last nibble
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = normal(g);
  const std::span<const float> x(w);

  const quantized_tensor<S> q = quantize<S>(x, rows, cols);
  BOOST_TEST(q.numel() == rows * cols);
  BOOST_TEST(q.code_bytes() + q.stats_bytes() == q.storage_bytes());
  BOOST_TEST(q.code_bytes() == quantized_tensor<S>::planned_code_bytes(rows, cols));
  BOOST_TEST(q.stats_bytes() == quantized_tensor<S>::planned_stats_bytes(rows, cols));
  BOOST_TEST(q.code_elements() == q.code_bytes(), "uint8 and int8 codes: one element per byte");
  BOOST_TEST((std::string_view(quantized_tensor<S>::storage_dtype) == (std::same_as<S, int8_rowwise> ? "int8" : "uint8")));

  // the same bits as the scheme's own entry point
  const auto own = [&] {
    if constexpr (std::same_as<S, int8_rowwise>) return rowwise_int8_tensor::quantize<float>(x, rows, cols);
    else return blockwise_tensor<S>::template quantize<float>(x, {std::int64_t(rows), std::int64_t(cols)});
  }();
  BOOST_TEST(std::ranges::equal(q.codes(), own.codes()));
  std::vector<float> a(w.size()), b(w.size());
  q.template dequantize_rows<float>(0, rows, a);
  own.template dequantize_rows<float>(0, rows, b);
  BOOST_TEST((a == b));
}

BOOST_AUTO_TEST_SUITE_END()

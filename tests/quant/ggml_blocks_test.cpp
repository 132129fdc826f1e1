// SPDX-License-Identifier: MIT
// ggml's block formats (quant/ggml_blocks.hpp, quant/ggml_tensor.hpp) against ggml's own numbers:
// tests/data/ggml_quant_golden.safetensors was written by gguf-py's numpy quantizers, which match ggml-quants.c's
// _ref functions bit for bit (tests/reference/make_ggml_quant_golden.py). Our quantize_row_ref must give those bytes,
// both dequantizers those floats; on fresh random rows the vectorized paths equal the _ref ones bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "io/safetensors.hpp"
#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::quant;
namespace io = loralab::io;

namespace {
using ggml_tags = std::tuple<ggml_q4_0, ggml_q4_1, ggml_q8_0>;

const io::safetensors_file& golden() {
  static const auto f = io::safetensors_file::open(LORALAB_TEST_DATA_DIR "/ggml_quant_golden.safetensors");
  return f;
}

/// Same float bits, except that any NaN equals any NaN (the payload of inf·0 is the platform's default NaN).
bool same_value_bits(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}
std::size_t value_mismatches(std::span<const float> a, std::span<const float> b) {
  std::size_t n = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += !same_value_bits(a[i], b[i]);
  return n;
}
template <class S>
std::vector<std::uint8_t> bytes_of(const ggml_tensor<S>& q) {
  const auto b = q.bytes();
  std::vector<std::uint8_t> out(b.size());
  std::memcpy(out.data(), b.data(), b.size());
  return out;
}

/// Rows that test every corner: random, zeros, constant, huge (d overflows fp16), tiny (d rounds to 0 in fp16),
/// subnormal-d, subnormal weights (1/d overflows), ties of |max|, exact halves.
std::vector<float> awkward_rows(std::mt19937_64& g, std::size_t rows, std::size_t cols) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(rows * cols);
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = x.data() + r * cols;
    const int kind = int(r % 10);
    const float scale = kind == 3 ? 1e7f : kind == 4 ? 1e-9f : kind == 5 ? 1e-5f : kind == 6 ? 1e-40f : 1.0f;
    for (std::size_t c = 0; c < cols; ++c) row[c] = n(g) * scale;
    if (kind == 1) std::fill(row, row + cols, 0.0f);
    if (kind == 2) std::fill(row, row + cols, -0.75f);
    if (kind == 7) row[0] = -4.0f, row[1] = 4.0f;
    if (kind == 8)
      for (std::size_t c = 0; c < cols; ++c) row[c] = float(int(c % 32) - 16) + 0.5f;
  }
  return x;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(ggml_blocks)

BOOST_AUTO_TEST_CASE(traits_rows_match_ggml) {
  static_assert(ggml_q4_0::block_size == 32 && ggml_q4_1::block_size == 32 && ggml_q8_0::block_size == 32);
  static_assert(ggml_q4_0::block_bytes == 18 && ggml_q4_1::block_bytes == 20 && ggml_q8_0::block_bytes == 34);
  static_assert(ggml_q4_0::gguf_type == 2 && ggml_q4_1::gguf_type == 3 && ggml_q8_0::gguf_type == 8);
  static_assert(bits_per_param<ggml_q4_0>() == 4.5 && bits_per_param<ggml_q4_1>() == 5.0 && bits_per_param<ggml_q8_0>() == 8.5);
  static_assert(quant_scheme<ggml_q4_1> && !blockwise_scheme<ggml_q4_1>);
  BOOST_TEST(scheme_label<ggml_q4_0>() == "q4_0");
  BOOST_TEST(scheme_family<ggml_q4_1>() == "q4_1");
  BOOST_TEST(scheme_block_size<ggml_q8_0>() == 32);
  BOOST_TEST(storage_bytes<ggml_q4_1>(64 * 96) == 64u * 3 * 20);
  BOOST_TEST(planned_bits_per_param<ggml_q4_0>(8, 64) == 4.5);
}

BOOST_AUTO_TEST_CASE(fp16_conversions_round_to_nearest_even) {
  // every fp16 back to float, exactly (Eigen's half is the independent reference)
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float ours = fp16_to_fp32(std::uint16_t(h));
    const float eigen = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(std::uint16_t(h)));
    BOOST_TEST_REQUIRE(same_value_bits(ours, eigen), "fp16 0x" << std::hex << h);
    if (!std::isnan(ours)) BOOST_TEST_REQUIRE(fp32_to_fp16(ours) == h, "round trip 0x" << std::hex << h);
  }
  // every midpoint between neighbouring fp16 values, and one float either side of it: ties go to even
  for (std::uint32_t h = 0; h < 0x7C00; ++h) {
    const float lo = fp16_to_fp32(std::uint16_t(h)), hi = fp16_to_fp32(std::uint16_t(h + 1));
    const float mid = lo + (hi - lo) / 2;  // exact: fp16 has 11 significant bits
    for (const float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f), -mid}) {
      const std::uint16_t eigen = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(v));
      BOOST_TEST_REQUIRE(fp32_to_fp16(v) == eigen, "float " << v << " near fp16 0x" << std::hex << h);
    }
  }
  BOOST_TEST(fp32_to_fp16(65519.99f) == 0x7BFFu);
  BOOST_TEST(fp32_to_fp16(65520.0f) == 0x7C00u, "the midpoint to 65536 rounds to inf");
  BOOST_TEST(fp32_to_fp16(-std::numeric_limits<float>::infinity()) == 0xFC00u);
  BOOST_TEST(fp32_to_fp16(-0.0f) == 0x8000u);
  BOOST_TEST((fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()) & 0x7FFFu) == 0x7E00u);
  // random floats over the whole range
  auto g = loralab::testing::rng(1101);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float v = std::bit_cast<float>(bits(g));
    if (std::isnan(v)) continue;
    BOOST_TEST_REQUIRE(fp32_to_fp16(v) == Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(v)), "float " << v);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(golden_bytes_and_values_from_gguf_py, S, ggml_tags) {
  const std::string type(S::quant_type);
  for (const char* name : {"normal", "wide", "special"}) {
    const auto& in = golden().at(std::string("input.") + name);
    const std::size_t rows = std::size_t(in.shape[0]), cols = std::size_t(in.shape[1]);
    const std::vector<float> x = in.to_vector<float>();
    const std::vector<std::uint8_t> want = golden().at(type + "." + name).to_vector<std::uint8_t>();
    const std::vector<float> want_y = golden().at("dequant." + type + "." + name).to_vector<float>();

    // quantize: ggml's bytes, on the reference and the parallel path
    const auto ref = ggml_tensor<S>::template quantize_ref<float>(x, rows, cols);
    const auto fast = ggml_tensor<S>::template quantize<float>(x, rows, cols);
    BOOST_TEST(bytes_of(ref) == want, type << " " << name << ": quantize_ref bytes");
    BOOST_TEST(bytes_of(fast) == want, type << " " << name << ": quantize bytes");
    // the row function itself, as ggml calls it
    std::vector<typename S::block> blocks(rows * cols / 32);
    for (std::size_t r = 0; r < rows; ++r) S::quantize_row_ref(x.data() + r * cols, blocks.data() + r * cols / 32, std::int64_t(cols));
    BOOST_TEST(std::memcmp(blocks.data(), want.data(), want.size()) == 0);

    // ggml's bytes, wrapped as they are, dequantize to ggml's floats on every path
    const auto q = ggml_tensor<S>::from_bytes(want, rows, cols);
    std::vector<float> y_ref(rows * cols), y_vec(rows * cols), y_all(rows * cols);
    q.template dequantize_rows_ref<float>(0, rows, y_ref);
    q.template dequantize_rows<float>(0, rows, y_vec);
    q.template dequantize<float>(y_all);
    BOOST_TEST(value_mismatches(y_ref, want_y) == 0u, type << " " << name << ": dequantize_row_ref values");
    BOOST_TEST(value_mismatches(y_vec, want_y) == 0u, type << " " << name << ": vectorized dequantize values");
    BOOST_TEST(value_mismatches(y_all, want_y) == 0u, type << " " << name << ": parallel dequantize values");
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(vectorized_equals_ref_on_fresh_rows, S, ggml_tags) {
  auto g = loralab::testing::rng(1102);
  for (const std::size_t cols : {32u, 64u, 96u, 4096u}) {
    const std::size_t rows = 23;
    const std::vector<float> x = awkward_rows(g, rows, cols);
    const auto ref = ggml_tensor<S>::template quantize_ref<float>(x, rows, cols);
    const auto fast = ggml_tensor<S>::template quantize<float>(x, rows, cols);
    BOOST_TEST_REQUIRE(bytes_of(ref) == bytes_of(fast), S::quant_type << " cols " << cols);
    std::vector<float> a(rows * cols), b(rows * cols), c(rows * cols);
    ref.template dequantize_rows_ref<float>(0, rows, a);
    ref.template dequantize_rows<float>(0, rows, b);
    ref.template dequantize<float>(c);
    BOOST_TEST_REQUIRE(value_mismatches(a, b) == 0u, S::quant_type << " cols " << cols);
    BOOST_TEST_REQUIRE(value_mismatches(a, c) == 0u, S::quant_type << " cols " << cols);
    // a tile of rows is the same floats as those rows of the whole
    std::vector<float> tile(5 * cols);
    ref.template dequantize_rows<float>(7, 12, tile);
    BOOST_TEST(std::equal(tile.begin(), tile.end(), b.begin() + 7 * cols, same_value_bits));
    // fp16 / bf16 outputs: the float value rounded once
    std::vector<Eigen::half> h(rows * cols);
    ref.template dequantize_rows<Eigen::half>(0, rows, h);
    for (std::size_t i = 0; i < h.size(); ++i)
      BOOST_TEST_REQUIRE(same_value_bits(float(h[i]), float(Eigen::half(b[i]))), S::quant_type << " i " << i);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(round_trip_error_is_within_the_format_bound, S, ggml_tags) {
  auto g = loralab::testing::rng(1103);
  std::normal_distribution<float> n(0.0f, 0.05f);
  const std::size_t rows = 16, cols = 256;
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = n(g);
  const auto q = ggml_tensor<S>::template quantize<float>(x, rows, cols);
  std::vector<float> y(x.size());
  q.template dequantize<float>(y);
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const auto first = x.begin() + std::ptrdiff_t(b * 32), last = first + 32;
    const auto [lo, hi] = std::minmax_element(first, last);
    const float amax = std::max(std::fabs(*lo), std::fabs(*hi));
    // half a step, plus the fp16 rounding of d (2^-11 relative) times the largest code; Q4_0's clamp of the code
    // 16 to 15 costs a whole step at the end opposite its max; Q4_1's m is rounded to fp16 too
    float bound;
    if constexpr (std::same_as<S, ggml_q8_0>) bound = amax / 127 * (0.5f + 128 * 0x1p-11f);
    else if constexpr (std::same_as<S, ggml_q4_0>) bound = amax / 8 * (1.0f + 16 * 0x1p-11f);
    else bound = (*hi - *lo) / 15 * (0.5f + 16 * 0x1p-11f) + std::fabs(*lo) * 0x1p-11f;
    for (std::size_t i = b * 32; i < b * 32 + 32; ++i)
      BOOST_TEST_REQUIRE(std::fabs(x[i] - y[i]) <= bound * 1.0001f, S::quant_type << " i " << i << " x " << x[i] << " y " << y[i]);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(storage_bytes_claimed_are_bytes_allocated, S, ggml_tags) {
  auto g = loralab::testing::rng(1104);
  for (const auto& [rows, cols] : {std::pair<std::size_t, std::size_t>{1, 32}, {3, 64}, {17, 96}, {5, 4096}}) {
    const std::vector<float> x = awkward_rows(g, rows, cols);
    const auto q = quantize<S>(std::span<const float>(x), rows, cols);  // the entry point every scheme shares
    static_assert(std::same_as<std::decay_t<decltype(q)>, ggml_tensor<S>>);
    BOOST_TEST(q.storage_bytes() == storage_bytes<S>(rows * cols));
    BOOST_TEST(q.storage_bytes() == q.bytes().size(), "no slack: the allocation is the GGUF bytes");
    BOOST_TEST(q.storage_bytes() == rows * cols / 32 * S::block_bytes);
    BOOST_TEST(q.code_bytes() + q.stats_bytes() == q.storage_bytes());
    BOOST_TEST(q.code_bytes() == quantized_tensor<S>::planned_code_bytes(rows, cols));
    BOOST_TEST(q.stats_bytes() == quantized_tensor<S>::planned_stats_bytes(rows, cols));
    BOOST_TEST(q.measured_bits_per_param() == bits_per_param<S>());
    BOOST_TEST(std::string(quantized_tensor<S>::storage_dtype) == std::string(S::quant_type));
    BOOST_TEST(q.code_elements() == rows * cols, "GGUF lists one element per weight");
    // wrapped from bytes: the same allocation
    const auto w = ggml_tensor<S>::from_bytes(q.bytes(), rows, cols);
    BOOST_TEST(w.storage_bytes() == q.storage_bytes());
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bad_sizes_and_non_finite_weights_are_refused, S, ggml_tags) {
  const std::string type(S::quant_type);
  const auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const loralab::error& e) {
      return e.what();
    }
    return "(no error)";
  };
  std::vector<std::uint8_t> bytes(2 * 2 * S::block_bytes);
  // cols not a multiple of 32
  std::string m = message([&] { (void)ggml_tensor<S>::from_bytes(bytes, 2, 48); });
  BOOST_TEST(m.find(type + ": a [2, 48] tensor has rows of 48 weights") != std::string::npos, m);
  // byte count does not match [rows, cols]
  m = message([&] { (void)ggml_tensor<S>::from_bytes(bytes, 3, 64); });
  BOOST_TEST(m.find(std::to_string(bytes.size()) + " bytes for a [3, 64] tensor, which needs " +
                    std::to_string(3 * 2 * S::block_bytes)) != std::string::npos, m);
  BOOST_CHECK_NO_THROW((void)ggml_tensor<S>::from_bytes(bytes, 2, 64));
  // quantize: bad shape, wrong element count, a non-finite weight (named by its index)
  std::vector<float> x(2 * 64, 0.5f);
  BOOST_CHECK_NO_THROW((void)ggml_tensor<S>::template quantize<float>(x, 4, 32));  // the same 128 weights, 4 rows
  m = message([&] { (void)ggml_tensor<S>::template quantize<float>(x, 1, 100); });
  BOOST_TEST(m.find("rows of 100 weights") != std::string::npos, m);
  m = message([&] { (void)ggml_tensor<S>::template quantize<float>(x, 3, 64); });
  BOOST_TEST(m.find("holds 192 elements, data has 128") != std::string::npos, m);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    x[70] = bad;
    m = message([&] { (void)ggml_tensor<S>::template quantize<float>(x, 2, 64); });
    BOOST_TEST(m.find("weight (1, 6)") != std::string::npos, m);
    m = message([&] { (void)ggml_tensor<S>::template quantize_ref<float>(x, 2, 64); });
    BOOST_TEST(m.find("weight (1, 6)") != std::string::npos, m);
    typename S::block blk[2];
    m = message([&] { S::quantize_row_ref(x.data() + 64, blk, 64); });
    BOOST_TEST(m.find("weight 6 of the row") != std::string::npos, m);
  }
  typename S::block blk[2];
  m = message([&] { S::quantize_row_ref(x.data(), blk, 40); });
  BOOST_TEST(m.find("a row of 40 weights") != std::string::npos, m);
  // tiles out of range
  const auto q = ggml_tensor<S>::from_bytes(bytes, 2, 64);
  std::vector<float> out(64);
  BOOST_CHECK_THROW(q.template dequantize_rows<float>(1, 3, out), loralab::error);
  BOOST_CHECK_THROW(q.template dequantize_rows<float>(0, 2, out), loralab::error);
}

BOOST_AUTO_TEST_CASE(edge_blocks_get_ggml_values) {
  // all zeros: q4_0 stores d = -0.0 (max / -8 with max = +0) and code 8; q4_1 d = m = 0; q8_0 d = 0
  const std::vector<float> z(32, 0.0f);
  const auto q40 = ggml_tensor<ggml_q4_0>::quantize<float>(z, 1, 32);
  BOOST_TEST(q40.blocks()[0].d == 0x8000u);
  BOOST_TEST(q40.blocks()[0].qs[0] == 0x88u);
  // subnormal weights: 1/d overflows to inf, the codes come out 0, d rounds to 0 in fp16: every value is 0
  std::vector<float> sub(32, 1e-40f);
  sub[3] = -2e-40f;
  for (const auto& y : {[&] { std::vector<float> o(32); ggml_tensor<ggml_q8_0>::quantize<float>(sub, 1, 32).dequantize<float>(o); return o; }(),
                        [&] { std::vector<float> o(32); ggml_tensor<ggml_q4_0>::quantize<float>(sub, 1, 32).dequantize<float>(o); return o; }(),
                        [&] { std::vector<float> o(32); ggml_tensor<ggml_q4_1>::quantize<float>(sub, 1, 32).dequantize<float>(o); return o; }()})
    for (const float v : y) BOOST_TEST_REQUIRE(std::fabs(v) <= 1e-38f);
  BOOST_TEST(ggml_tensor<ggml_q8_0>::quantize<float>(sub, 1, 32).blocks()[0].qs[0] == 0);
  // a range that overflows float (max - min = inf): q4_1 stores d = inf, as ggml does, without undefined casts
  std::vector<float> wide(32, 0.0f);
  wide[0] = -3e38f, wide[1] = 3e38f;
  const auto q41 = ggml_tensor<ggml_q4_1>::quantize<float>(wide, 1, 32);
  BOOST_TEST(q41.blocks()[0].d == 0x7C00u);
  BOOST_TEST(q41.blocks()[0].m == 0xFC00u);
  // half-precision inputs quantize as their float values do
  std::vector<Eigen::half> h(64);
  std::vector<float> hf(64);
  auto g = loralab::testing::rng(1105);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (std::size_t i = 0; i < 64; ++i) h[i] = Eigen::half(n(g)), hf[i] = float(h[i]);
  BOOST_TEST(bytes_of(ggml_tensor<ggml_q4_1>::quantize<Eigen::half>(h, 2, 32)) ==
             bytes_of(ggml_tensor<ggml_q4_1>::quantize<float>(hf, 2, 32)));
}

BOOST_AUTO_TEST_CASE(registry_names_and_lists) {
  BOOST_TEST(scheme_name<ggml_q4_0>() == "q4_0");
  BOOST_TEST(scheme_name<ggml_q4_1>() == "q4_1");
  BOOST_TEST(scheme_name<ggml_q8_0>() == "q8_0");
  BOOST_TEST(canonical_scheme_name("Q4_1") == "q4_1");
  BOOST_TEST(canonical_scheme_name("q8_0") == "q8_0");
  BOOST_CHECK_THROW(canonical_scheme_name("q4_1", true), loralab::error);  // --double-quant is bnb's
  BOOST_TEST(ggml_schemes::names() == "q4_0, q4_1, q8_0");
  BOOST_TEST(!model_schemes::contains("q4_1"));
  using both = scheme_list_cat_t<model_schemes, ggml_schemes>;
  BOOST_TEST(both::size == model_schemes::size + 3);
  BOOST_TEST(both::names() == model_schemes::names() + ", q4_0, q4_1, q8_0");
  std::string seen;
  dispatch_scheme<both>(canonical_scheme_name("Q4_0"), [&]<class S>(std::type_identity<S>) { seen = scheme_name<S>(); });
  BOOST_TEST(seen == "q4_0");
  BOOST_CHECK_THROW(dispatch_scheme<ggml_schemes>("q5_0", [](auto) {}), loralab::error);
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
// Blockwise quantized tensors: known answers from the spec, fast path == reference bit for bit, error bounds
// on fresh random data, exact storage accounting, edge cases (zero/NaN/Inf blocks, odd lengths, FTZ).
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::quant;

namespace {

using all_blockwise = std::tuple<nf4<64>, nf4<32>, nf4<128>, nf4<4096>, fp4<64>, fp4<256>, double_quant<nf4<64>>,
                                 double_quant<fp4<128>>, double_quant<nf4<32>>, dynamic8<4096>, dynamic8<256>,
                                 dynamic8<64>>;

enum class dist { gaussian, uniform, heavy_tailed };

std::vector<float> random_weights(std::mt19937_64& g, std::size_t n, dist d) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  std::student_t_distribution<float> t2(2.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = d == dist::gaussian ? normal(g) : d == dist::uniform ? uni(g) : t2(g);
  return x;
}

template <class T>
bool same_bits(std::span<const T> a, std::span<const T> b) {
  // memcmp's pointers must not be null even for 0 bytes, and an empty span's data() may be (UBSan: nonnull-attribute)
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}

template <blockwise_scheme S>
bool same_tensor(const blockwise_tensor<S>& a, const blockwise_tensor<S>& b) {
  if (!same_bits(a.codes(), b.codes())) return false;
  if constexpr (S::nested)
    return same_bits(a.absmax_codes(), b.absmax_codes()) && same_bits(a.nested_absmax(), b.nested_absmax()) &&
           std::bit_cast<std::uint32_t>(a.offset()) == std::bit_cast<std::uint32_t>(b.offset());
  else
    return same_bits(a.absmax(), b.absmax());
}

/// Largest gap between neighbouring code values: a value is never farther than half of it from its code.
template <blockwise_scheme S>
float max_code_gap() {
  std::vector<float> c(S::code.begin(), S::code.end());
  std::sort(c.begin(), c.end());
  float gap = 0;
  for (std::size_t i = 0; i + 1 < c.size(); ++i) gap = std::max(gap, c[i + 1] - c[i]);
  return gap;
}

template <blockwise_scheme S>
std::vector<std::size_t> awkward_sizes() {
  const std::size_t B = S::block_size;
  return {1, 2, 3, B - 1, B, B + 1, 3 * B + 7, 1009, 65536 + 2 * B + 1};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(blockwise)

// ---- known answers --------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(nf4_known_bytes_first_element_in_high_nibble) {
  // absmax 1: 1 -> 15, -1 -> 0, 0 -> 7, 0.5 -> 12 (between thresholds 0.389 and 0.502)
  const std::vector<float> x = {1.0f, -1.0f, 0.0f, 0.5f};
  const auto q = blockwise_tensor<nf4<64>>::quantize<float>(x, {4});
  BOOST_TEST(q.codes()[0] == 0xF0);
  BOOST_TEST(q.codes()[1] == 0x7C);
  BOOST_TEST(q.absmax()[0] == 1.0f);
  // odd length: the last low nibble is the code of the zero padding (NF4 0111)
  const std::vector<float> y = {1.0f, -1.0f, 0.5f};
  const auto r = blockwise_tensor<nf4<64>>::quantize<float>(y, {3});
  BOOST_TEST_REQUIRE(r.codes().size() == 2u);
  BOOST_TEST(r.codes()[1] == 0xC7);
  // FP4 pads with 0000
  const auto f = blockwise_tensor<fp4<64>>::quantize<float>(y, {3});
  BOOST_TEST(f.codes()[0] == 0x3B);  // 1 -> 0011, -1 -> 1011
  BOOST_TEST(f.codes()[1] == 0x50);  // 0.5 -> 0101, pad 0000
}

BOOST_AUTO_TEST_CASE(blocks_run_across_rows) {
  // a (3, 40) weight with block 32: block 1 holds the end of row 0 and the start of row 1
  std::vector<float> x(120, 0.01f);
  x[35] = 4.0f;  // row 0, column 35 -> block 1
  const auto q = blockwise_tensor<nf4<32>>::quantize<float>(x, {3, 40});
  BOOST_TEST(q.num_blocks() == 4u);
  BOOST_TEST(q.absmax()[0] == 0.01f);
  BOOST_TEST(q.absmax()[1] == 4.0f);
  BOOST_TEST(q.rows() == 3u);
  BOOST_TEST(q.cols() == 40u);
}

BOOST_AUTO_TEST_CASE(edge_blocks_behave_as_bnb_cuda) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  std::vector<float> x(64 * 5, 0.25f);
  std::fill_n(x.begin(), 64, 0.0f);                       // block 0: all zero
  x[64] = nan;                                            // block 1: one NaN
  x[128] = inf;                                           // block 2: one Inf
  std::fill_n(x.begin() + 192, 64, nan);                  // block 3: all NaN
  std::fill_n(x.begin() + 256, 64, 1e-40f), x[256] = 1.0f, x[257] = -1e-40f;  // block 4: subnormals count as 0
  for (bool ref : {false, true}) {
    const auto q = ref ? blockwise_tensor<nf4<64>>::quantize_ref<float>(x, {320})
                       : blockwise_tensor<nf4<64>>::quantize<float>(x, {320});
    BOOST_TEST(q.absmax()[0] == 0.0f);
    for (int i = 0; i < 32; ++i) BOOST_TEST(q.codes()[i] == 0x00, "zero block: 0*inf = NaN -> code 0");
    BOOST_TEST(q.absmax()[1] == 0.25f, "fmaxf ignores the NaN");
    BOOST_TEST(q.code_at(64) == 0, "NaN -> code 0");
    BOOST_TEST(q.code_at(65) == 15);
    BOOST_TEST(q.absmax()[2] == inf);
    BOOST_TEST(q.code_at(128) == 0, "inf*0 = NaN -> code 0");
    BOOST_TEST(q.code_at(129) == 7, "finite*0 -> code 7");
    BOOST_TEST(q.absmax()[3] == -FLT_MAX, "an all-NaN block keeps the reduction's start value");
    BOOST_TEST(q.absmax()[4] == 1.0f);
    BOOST_TEST(q.code_at(257) == 7);
    std::vector<float> out(320);
    q.dequantize<float>(out);
    BOOST_TEST(std::bit_cast<std::uint32_t>(out[0]) == 0x80000000u, "zero block dequantizes to -1.0*0 = -0.0");
    BOOST_TEST(out[64] == -0.25f, "NaN comes back as -absmax");
  }
  // FP4 under FTZ: a negative value whose scaled value is subnormal has sign 0
  std::vector<float> y = {1.0f, -1e-39f, -1e-3f, 0.0f};
  const auto f = blockwise_tensor<fp4<64>>::quantize<float>(y, {4});
  BOOST_TEST(f.code_at(1) == 0);
  BOOST_TEST(f.code_at(2) == 8, "-1e-3 is below T1 in magnitude: -0 code 1000");
}

// ---- fast path == reference, error bounds, storage ------------------------------------------------------------

BOOST_AUTO_TEST_CASE_TEMPLATE(fast_path_equals_reference_bitwise, S, all_blockwise) {
  auto g = loralab::testing::rng(100 + S::block_size + 7 * S::bits + S::nested);
  for (std::size_t n : awkward_sizes<S>())
    for (dist d : {dist::gaussian, dist::uniform, dist::heavy_tailed}) {
      auto x = random_weights(g, n, d);
      if (n > 10) x[n / 2] = 0.0f, x[n / 3] = -x[n / 4];
      const auto fast = blockwise_tensor<S>::template quantize<float>(x, {static_cast<std::int64_t>(n)});
      const auto ref = blockwise_tensor<S>::template quantize_ref<float>(x, {static_cast<std::int64_t>(n)});
      BOOST_TEST_REQUIRE(same_tensor(fast, ref), scheme_label<S>() << " n=" << n);
      std::vector<float> a(n), b(n);
      fast.template dequantize<float>(a);
      ref.template dequantize_ref<float>(b);
      BOOST_TEST_REQUIRE(same_bits<float>(a, b), scheme_label<S>() << " dequantize n=" << n);
      std::vector<Eigen::bfloat16> c(n), e(n);
      fast.template dequantize<Eigen::bfloat16>(c);
      ref.template dequantize_ref<Eigen::bfloat16>(e);
      BOOST_TEST_REQUIRE(same_bits<Eigen::bfloat16>(c, e));
      for (std::size_t i = 0; i < n; ++i)  // bf16 output = the float32 product rounded once
        BOOST_TEST_REQUIRE(std::bit_cast<std::uint16_t>(c[i]) == std::bit_cast<std::uint16_t>(Eigen::bfloat16(a[i])));
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(half_and_bf16_inputs_quantize_as_their_float_values, S, all_blockwise) {
  auto g = loralab::testing::rng(200 + S::block_size);
  const std::size_t n = 4 * S::block_size + 3;
  const auto x = random_weights(g, n, dist::gaussian);
  std::vector<Eigen::half> h(n);
  std::vector<float> hf(n);
  for (std::size_t i = 0; i < n; ++i) h[i] = Eigen::half(x[i]), hf[i] = static_cast<float>(h[i]);
  const auto a = blockwise_tensor<S>::template quantize<Eigen::half>(h, {std::int64_t(n)});
  const auto b = blockwise_tensor<S>::template quantize_ref<float>(hf, {std::int64_t(n)});
  BOOST_TEST(same_tensor(a, b));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(round_trip_error_within_half_the_largest_code_gap, S, all_blockwise) {
  auto g = loralab::testing::rng(300 + S::block_size + S::nested);
  const float half_gap = max_code_gap<S>() / 2;
  for (dist d : {dist::gaussian, dist::uniform, dist::heavy_tailed}) {
    const std::size_t n = 50 * S::block_size + 17;
    const auto x = random_weights(g, n, d);
    const auto q = blockwise_tensor<S>::template quantize<float>(x, {std::int64_t(n)});
    std::vector<float> y(n);
    q.template dequantize<float>(y);
    for (std::size_t b = 0; b < q.num_blocks(); ++b) {
      float am = 0;  // the true block absmax, from the data
      for (std::size_t i = b * S::block_size; i < std::min(n, (b + 1) * S::block_size); ++i) am = std::max(am, std::fabs(x[i]));
      const float am_stored = q.absmax_of_block(b);
      // codes were chosen with the true absmax; with double quantization they are scaled by the stored one
      const float bound = (am * half_gap + std::fabs(am - am_stored)) * (1 + 1e-5f) + 1e-30f;
      for (std::size_t i = b * S::block_size; i < std::min(n, (b + 1) * S::block_size); ++i)
        BOOST_TEST_REQUIRE(std::fabs(x[i] - y[i]) <= bound, scheme_label<S>() << " i=" << i << " x=" << x[i] << " y=" << y[i]);
      if constexpr (!S::nested) BOOST_TEST_REQUIRE(am_stored == am);
    }
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(storage_bytes_equal_allocation_and_analytic_bits, S, all_blockwise) {
  for (std::size_t n : awkward_sizes<S>()) {
    std::vector<float> x(n, 0.5f);
    const auto q = blockwise_tensor<S>::template quantize<float>(x, {std::int64_t(n)});
    BOOST_TEST(q.storage_bytes() == storage_bytes<S>(n), scheme_label<S>() << " n=" << n);
  }
  // for n a multiple of block*256, measured bits = bits_per_param() + per-tensor constants (offset + 256 map)
  const std::size_t n = std::size_t(S::block_size) * 256 * 2;
  std::vector<float> x(n, 0.5f);
  const auto q = blockwise_tensor<S>::template quantize<float>(x, {std::int64_t(n)});
  const double constants = S::nested ? 8.0 * (4 + 1024) / double(n) : 0.0;
  BOOST_TEST(q.measured_bits_per_param() == bits_per_param<S>() + constants, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(dequantize_rows_and_ranges_match_the_whole, S, all_blockwise) {
  auto g = loralab::testing::rng(400 + S::block_size);
  const std::size_t rows = 7, cols = S::block_size + 5;  // blocks straddle rows, odd row lengths
  const auto x = random_weights(g, rows * cols, dist::gaussian);
  const auto q = blockwise_tensor<S>::template quantize<float>(x, {std::int64_t(rows), std::int64_t(cols)});
  std::vector<float> all(rows * cols);
  q.template dequantize<float>(all);
  for (std::size_t r0 = 0; r0 < rows; ++r0)
    for (std::size_t r1 = r0; r1 <= rows; r1 += 2) {
      std::vector<float> part((r1 - r0) * cols);
      q.template dequantize_rows<float>(r0, r1, part);
      BOOST_TEST_REQUIRE(same_bits<float>(part, std::span<const float>(all).subspan(r0 * cols, part.size())));
    }
  std::uniform_int_distribution<std::size_t> pos(0, rows * cols);
  for (int k = 0; k < 50; ++k) {
    std::size_t a = pos(g), b = pos(g);
    if (a > b) std::swap(a, b);
    std::vector<float> part(b - a);
    q.template dequantize_range<float>(a, b, part.data());
    BOOST_TEST_REQUIRE(same_bits<float>(part, std::span<const float>(all).subspan(a, b - a)), "range " << a << ".." << b);
  }
  std::vector<float> wrong(cols);
  BOOST_CHECK_THROW(q.template dequantize_rows<float>(0, 2, wrong), loralab::error);
  BOOST_CHECK_THROW(q.template dequantize_rows<float>(5, rows + 1, wrong), loralab::error);
}

BOOST_AUTO_TEST_CASE(double_quant_keeps_the_4bit_codes_and_centres_the_absmax) {
  auto g = loralab::testing::rng(500);
  const std::size_t n = 64 * 1000 + 10;
  const auto x = random_weights(g, n, dist::gaussian);
  const auto plain = blockwise_tensor<nf4<64>>::quantize<float>(x, {std::int64_t(n)});
  const auto dq = blockwise_tensor<double_quant<nf4<64>>>::quantize<float>(x, {std::int64_t(n)});
  BOOST_TEST(same_bits(plain.codes(), dq.codes()), "4-bit codes use the exact absmax, not the compressed one");
  double mean = 0;
  for (float a : plain.absmax()) mean += a;
  mean /= double(plain.num_blocks());
  // the offset is torch's float32 mean in torch's CPU order (checked against torch in torch_mean_test.cpp)
  BOOST_TEST(dq.offset() == torch_cpu::mean(plain.absmax(), torch_cpu::default_config()));
  BOOST_TEST(std::fabs(double(dq.offset()) - mean) <= 1e-6 * mean);
  BOOST_TEST(dq.num_nested_blocks() == (plain.num_blocks() + 255) / 256);
  // reconstructed absmax: code*absmax2 + offset, within half a dynamic-map step of the centred value
  for (std::size_t b = 0; b < plain.num_blocks(); ++b) {
    const float am2 = dq.nested_absmax()[b / 256];
    BOOST_TEST_REQUIRE(std::fabs(dq.absmax_of_block(b) - plain.absmax()[b]) <= am2 * 0.0071f,
                       "block " << b);
  }
  const std::vector<float> nested_map(dq.nested_code().begin(), dq.nested_code().end());
  BOOST_TEST(nested_map == std::vector<float>(codebooks::dynamic_signed.begin(), codebooks::dynamic_signed.end()));
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_clear_errors) {
  std::vector<float> none;
  BOOST_CHECK_THROW(blockwise_tensor<nf4<64>>::quantize<float>(none, {0, 5}), loralab::error);
  std::vector<float> five(5, 1.0f);
  BOOST_CHECK_EXCEPTION(blockwise_tensor<nf4<64>>::quantize<float>(five, {2, 3}), loralab::error,
                        [](const loralab::error& e) { return std::string(e.what()).find("6 elements") != std::string::npos; });
  BOOST_CHECK_THROW((blockwise_tensor<nf4<64>>::from_parts({5}, {1, 2}, {1.0f, 2.0f})), loralab::error);
  BOOST_CHECK_THROW((blockwise_tensor<nf4<64>>::from_parts({5}, {1, 2, 3, 4}, {1.0f})), loralab::error);
}

BOOST_AUTO_TEST_SUITE_END()

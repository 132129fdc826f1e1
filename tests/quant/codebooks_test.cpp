// SPDX-License-Identifier: MIT
// The code tables against the spec (shared/specs/bitsandbytes.md): bit patterns copied here independently of
// include/quant/codebooks.hpp, and the dynamic maps recomputed from bnb's construction rule.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "quant/quant.hpp"

namespace cb = loralab::quant::codebooks;

namespace {
std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

/// torch>=2 x86 float32 linspace: one FMA rounding per element, the two halves anchored at start and end.
std::vector<float> torch_linspace_fma(float start, float end, int steps) {
  const float step = (end - start) / static_cast<float>(steps - 1);
  std::vector<float> out(steps);
  for (int i = 0; i < steps; ++i)
    out[i] = i < steps / 2 ? std::fma(step, static_cast<float>(i), start)
                           : std::fma(-step, static_cast<float>(steps - i - 1), end);
  return out;
}

/// bnb create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), float32 as torch computes it.
std::vector<float> create_dynamic_map(bool is_signed) {
  std::vector<double> data;  // Python list of floats
  for (int i = 0; i < 7; ++i) {
    const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    const auto b = torch_linspace_fma(0.1f, 1.0f, items);
    const float scale = static_cast<float>(std::pow(10.0, i - 6));  // Python scalar -> float32 operand
    for (int k = 0; k + 1 < items; ++k) {
      const float mean = (b[k] + b[k + 1]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0);
  data.push_back(1.0);
  std::sort(data.begin(), data.end());
  return std::vector<float>(data.begin(), data.end());
}
}  // namespace

BOOST_AUTO_TEST_SUITE(codebooks)

BOOST_AUTO_TEST_CASE(nf4_table_is_the_spec_literals) {
  const std::uint32_t spec[16] = {0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f,
                                  0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
                                  0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000};
  for (int c = 0; c < 16; ++c) BOOST_TEST(bits(cb::nf4_code[c]) == spec[c], "nf4 code " << c);
  BOOST_TEST(std::is_sorted(cb::nf4_code.begin(), cb::nf4_code.end()));
}

BOOST_AUTO_TEST_CASE(nf4_thresholds_are_float32_midpoints_and_the_spec_literals) {
  const std::uint32_t spec[15] = {0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec,
                                  0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64862, 0x3e5067e0,
                                  0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf, 0x3f5c89da};
  for (int i = 0; i < 15; ++i) {
    BOOST_TEST(bits(cb::nf4_thresholds[i]) == spec[i], "threshold " << i);
    BOOST_TEST(bits((cb::nf4_code[i] + cb::nf4_code[i + 1]) / 2.0f) == spec[i], "midpoint " << i);
  }
}

BOOST_AUTO_TEST_CASE(fp4_table_is_bnb_1_2_1_layout) {
  // raw magnitudes by the 3 low bits, normalised by 12 in float32 (get_4bit_type("fp4"))
  const float raw[8] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f};
  for (int m = 0; m < 8; ++m) BOOST_TEST(bits(cb::fp4_magnitude[m]) == bits(raw[m] / 12.0f), "magnitude " << m);
  const std::uint32_t t[7] = {0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556, 0x3f155550, 0x3f555555};
  for (int i = 0; i < 7; ++i) BOOST_TEST(bits(cb::fp4_thresholds[i]) == t[i], "fp4 threshold " << i);
  // the serialized quant_map has +0.0 at code 8; the kernel's decode gives -0.0
  using loralab::quant::fp4;
  BOOST_TEST(bits(fp4<>::code[8]) == 0u);
  BOOST_TEST(bits(fp4<>::decode(8)) == 0x80000000u);
  for (int c = 9; c < 16; ++c) BOOST_TEST(fp4<>::code[c] == -fp4<>::code[c - 8]);
}

BOOST_AUTO_TEST_CASE(dynamic_maps_match_bnb_construction_rule) {
  const auto s = create_dynamic_map(true), u = create_dynamic_map(false);
  BOOST_TEST_REQUIRE(s.size() == 256u);
  BOOST_TEST_REQUIRE(u.size() == 256u);
  for (int i = 0; i < 256; ++i) {
    BOOST_TEST(bits(cb::dynamic_signed[i]) == bits(s[i]), "signed " << i);
    BOOST_TEST(bits(cb::dynamic_unsigned[i]) == bits(u[i]), "unsigned " << i);
  }
  // landmarks quoted in the spec
  BOOST_TEST(bits(cb::dynamic_signed[0]) == 0xbf7e3333u);
  BOOST_TEST(cb::dynamic_signed[127] == 0.0f);
  BOOST_TEST(cb::dynamic_signed[128] == 5.5e-7f, boost::test_tools::tolerance(1e-6f));  // "5.5e-7" in the spec
  BOOST_TEST(bits(cb::dynamic_signed[254]) == 0x3f7e3333u);
  BOOST_TEST(cb::dynamic_signed[255] == 1.0f);
  BOOST_TEST(bits(cb::dynamic_signed[20]) == bits(-0.7117187976837158f));
  BOOST_TEST(cb::dynamic_unsigned[0] == 0.0f);
  BOOST_TEST(cb::dynamic_unsigned[1] == 3.2500003e-07f);
  BOOST_TEST(cb::dynamic_unsigned[255] == 1.0f);
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
// Per-element decisions at every threshold and its float neighbours, as bnb's CUDA kernels decide them.
#include <cfloat>
#include <cmath>
#include <limits>

#include <boost/test/unit_test.hpp>

#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::quant;
namespace cb = loralab::quant::codebooks;

namespace {
float up(float x) { return std::nextafter(x, INFINITY); }
float down(float x) { return std::nextafter(x, -INFINITY); }
const float qnan = std::numeric_limits<float>::quiet_NaN();
}  // namespace

BOOST_AUTO_TEST_SUITE(codec)

BOOST_AUTO_TEST_CASE(nf4_every_threshold_and_neighbours) {
  for (int i = 0; i < 15; ++i) {
    const float t = cb::nf4_thresholds[i];
    for (auto enc : {nf4_encode, nf4_encode_tree}) {
      BOOST_TEST(enc(t) == i, "tie at threshold " << i << " goes to the lower code");
      BOOST_TEST(enc(down(t)) == i);
      BOOST_TEST(enc(up(t)) == i + 1);
    }
  }
  for (int c = 0; c < 16; ++c) BOOST_TEST(nf4_encode(cb::nf4_code[c]) == c, "code point " << c << " is exact");
  BOOST_TEST(nf4_encode(qnan) == 0);
  BOOST_TEST(nf4_encode_tree(qnan) == 0);
  BOOST_TEST(nf4_encode(-0.0f) == 7);
  BOOST_TEST(nf4_encode(2.0f) == 15);
  BOOST_TEST(nf4_encode(-2.0f) == 0);
}

BOOST_AUTO_TEST_CASE(nf4_tree_equals_count_on_random_values) {
  auto g = loralab::testing::rng(1);
  std::uniform_real_distribution<float> u(-1.1f, 1.1f);
  for (int k = 0; k < 200000; ++k) {
    const float v = u(g);
    BOOST_TEST_REQUIRE(nf4_encode(v) == nf4_encode_tree(v), "v=" << v);
  }
}

BOOST_AUTO_TEST_CASE(fp4_every_literal_threshold_and_neighbours) {
  // magnitude codes in increasing order of value: 000 001 110 111 100 101 010 011
  const std::uint8_t order[8] = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};
  for (int i = 0; i < 7; ++i) {
    const float t = cb::fp4_thresholds[i];
    BOOST_TEST(fp4_encode(t) == order[i], "tie at T" << i + 1 << " goes to the smaller magnitude");
    BOOST_TEST(fp4_encode(down(t)) == order[i]);
    BOOST_TEST(fp4_encode(up(t)) == order[i + 1]);
    BOOST_TEST(fp4_encode(-t) == (order[i] | 8));
    BOOST_TEST(fp4_encode(-up(t)) == (order[i + 1] | 8));
  }
  // T6 is 6 ulps below the true midpoint of 1/2 and 2/3: values in between go up, unlike a midpoint rule
  const float mid = (cb::fp4_magnitude[0b101] + cb::fp4_magnitude[0b010]) / 2.0f;
  BOOST_TEST(fp4_encode(down(mid)) == 0b010);
  for (std::uint8_t m = 0; m < 8; ++m) BOOST_TEST(fp4_encode(cb::fp4_magnitude[m]) == m);
  BOOST_TEST(fp4_encode(-0.0f) == 0, "-0.0 has sign bit 0 (x < 0 is false)");
  BOOST_TEST(fp4_encode(qnan) == 0);
  BOOST_TEST(fp4_encode(-1.0f) == 0b1011);
}

BOOST_AUTO_TEST_CASE(dynamic8_midpoints_go_to_the_even_index) {
  const float* code = cb::dynamic_signed.data();
  for (int i = 0; i < 255; ++i) {
    const float m = (code[i] + code[i + 1]) * 0.5f;
    const int even = i % 2 == 0 ? i : i + 1;
    if (m != code[i] && m != code[i + 1]) BOOST_TEST(dynamic8_encode(code, m) == even, "midpoint " << i);
    BOOST_TEST(dynamic8_encode(code, code[i]) == i, "code point " << i);
    if (up(m) < code[i + 1]) BOOST_TEST(dynamic8_encode(code, up(m)) == i + 1, "above midpoint " << i);
    if (down(m) > code[i]) BOOST_TEST(dynamic8_encode(code, down(m)) == i, "below midpoint " << i);
  }
  BOOST_TEST(dynamic8_encode(code, qnan) == 0);
  BOOST_TEST(dynamic8_encode(code, 1.0f) == 255);
  BOOST_TEST(dynamic8_encode(code, -1.0f) == 0);
}

BOOST_AUTO_TEST_CASE(dynamic8_is_nearest_on_random_values) {
  auto g = loralab::testing::rng(2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const auto* code : {cb::dynamic_signed.data(), cb::dynamic_unsigned.data()}) {
    for (int k = 0; k < 100000; ++k) {
      float v = u(g);
      if (code == cb::dynamic_unsigned.data()) v = std::fabs(v);
      v = v * v * v;  // dense near 0, where the map is dense
      const int q = dynamic8_encode(code, v);
      const float d = std::fabs(code[q] - v);
      // within an ulp of a midpoint the float midpoint's own rounding decides (as in bnb): not a nearest test
      const auto near_mid = [&](int a, int b) {
        const float mid = (code[a] + code[b]) * 0.5f;
        return v == mid || std::nextafter(mid, INFINITY) == v || std::nextafter(mid, -INFINITY) == v;
      };
      if (q > 0 && !near_mid(q - 1, q)) BOOST_TEST_REQUIRE(d <= std::fabs(code[q - 1] - v), "v=" << v << " q=" << q);
      if (q < 255 && !near_mid(q, q + 1)) BOOST_TEST_REQUIRE(d <= std::fabs(code[q + 1] - v), "v=" << v << " q=" << q);
    }
  }
}

BOOST_AUTO_TEST_CASE(ftz_and_scale) {
  BOOST_TEST(ftz(1e-40f) == 0.0f);
  BOOST_TEST(std::signbit(ftz(-1e-40f)));
  BOOST_TEST(ftz(FLT_MIN) == FLT_MIN);
  BOOST_TEST(std::isnan(ftz(qnan)));
  BOOST_TEST(block_scale(0.0f) == INFINITY);
  BOOST_TEST(block_scale(-FLT_MAX) == 0.0f, "the reciprocal of -FLT_MAX is subnormal and flushed");
  BOOST_TEST(absmax_step(absmax_init, qnan) == absmax_init, "fmaxf ignores NaN");
  BOOST_TEST(absmax_step(0.0f, -1e-40f) == 0.0f, "subnormal inputs count as 0");
}

BOOST_AUTO_TEST_CASE(nibble_order_first_element_high) {
  BOOST_TEST(pack_pair(0xA, 0x3) == 0xA3);
  const std::uint8_t bytes[2] = {0xA3, 0x5C};
  BOOST_TEST(unpack_nibble(bytes, 0) == 0xA);
  BOOST_TEST(unpack_nibble(bytes, 1) == 0x3);
  BOOST_TEST(unpack_nibble(bytes, 2) == 0x5);
  BOOST_TEST(unpack_nibble(bytes, 3) == 0xC);
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
// The samplers: greedy is argmax (lowest id on ties); top-k 1 and a tiny top-p are greedy; temperature sampling
// follows softmax(z/T) (frequencies within a binomial bound); the repetition penalty divides positive and
// multiplies negative logits of seen tokens; the same seed draws the same tokens.
#include <cmath>
#include <random>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "nn/generate.hpp"
#include "test_support.hpp"

using namespace loralab::nn;

BOOST_AUTO_TEST_SUITE(sampling)

BOOST_AUTO_TEST_CASE(greedy_top_k_top_p_and_repetition_penalty) {
  auto g = loralab::testing::rng(40);
  row_vector<float> z(6);
  z << 1.0f, 3.0f, 3.0f, -2.0f, 0.5f, 2.5f;
  sampling_options greedy;
  BOOST_TEST(sample_token(z, {}, greedy, g) == 1, "argmax, lowest id on ties");
  sampling_options k1;
  k1.temperature = 1.5f, k1.top_k = 1;
  sampling_options p0;
  p0.temperature = 1.5f, p0.top_p = 1e-6f;
  for (int i = 0; i < 50; ++i) {
    BOOST_TEST(sample_token(z, {}, k1, g) == 1);
    BOOST_TEST(sample_token(z, {}, p0, g) == 1);
  }
  // repetition penalty 2: seen token 1 (3.0 -> 1.5) and 2 (3.0 -> 1.5) lose to token 5 (2.5)
  sampling_options rep;
  rep.repetition_penalty = 2.0f;
  const std::vector<int> seen = {1, 2, 2, 3};
  BOOST_TEST(sample_token(z, seen, rep, g) == 5);
  // a seen negative logit is multiplied: token 3 goes from -2 to -4 (still never the argmax)
  row_vector<float> neg(2);
  neg << -1.0f, -1.5f;
  BOOST_TEST(sample_token(neg, std::vector<int>{0}, rep, g) == 1, "-1 * 2 = -2 < -1.5");
}

BOOST_AUTO_TEST_CASE(temperature_sampling_follows_the_softmax) {
  auto g = loralab::testing::rng(41);
  row_vector<float> z(4);
  z << 0.0f, 1.0f, 2.0f, 0.5f;
  sampling_options o;
  o.temperature = 0.7f;
  std::vector<double> p(4);
  double sum = 0;
  for (int i = 0; i < 4; ++i) sum += p[std::size_t(i)] = std::exp(z(i) / 0.7);
  const int n = 40000;
  std::vector<int> count(4, 0);
  for (int i = 0; i < n; ++i) ++count[std::size_t(sample_token(z, {}, o, g))];
  for (int i = 0; i < 4; ++i) {
    const double expect = p[std::size_t(i)] / sum, sigma = std::sqrt(expect * (1 - expect) / n);
    BOOST_TEST(std::fabs(double(count[std::size_t(i)]) / n - expect) < 5 * sigma, "token " << i);
  }
  // top-k 2 keeps tokens 2 and 1 only, renormalized
  o.top_k = 2;
  for (int i = 0; i < 2000; ++i) {
    const int t = sample_token(z, {}, o, g);
    BOOST_TEST_REQUIRE((t == 1 || t == 2));
  }
  // the same seed, the same draws
  std::mt19937_64 a(7), b(7);
  o.top_k = 0, o.top_p = 0.9f;
  for (int i = 0; i < 100; ++i) BOOST_TEST_REQUIRE(sample_token(z, {}, o, a) == sample_token(z, {}, o, b));
  o.top_p = 0;
  BOOST_CHECK_THROW(o.validate(), loralab::error);
}

BOOST_AUTO_TEST_SUITE_END()

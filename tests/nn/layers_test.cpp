// SPDX-License-Identifier: MIT
// Every layer's backward against central finite differences in double precision, on fresh random inputs.
// Each check uses the scalar L = Σ out ⊙ R with a random R, so dL/dout = R.
#include <random>
#include <type_traits>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"
#include "nn/attention.hpp"
#include "nn/cross_entropy.hpp"
#include "nn/linear.hpp"
#include "nn/rms_norm.hpp"
#include "nn/rotary.hpp"
#include "nn/swiglu.hpp"
#include "nn/weight_of.hpp"
#include "quant/quant.hpp"
#include "test_support.hpp"

using namespace loralab::nn;
using loralab::testing::check_gradient;
using md = matrix<double>;

namespace {
md randn(std::mt19937_64& g, Eigen::Index r, Eigen::Index c, double scale = 1.0) {
  std::normal_distribution<double> n(0.0, scale);
  md m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = n(g);
  return m;
}
double dot(const md& a, const md& b) { return a.cwiseProduct(b).sum(); }
}  // namespace

BOOST_AUTO_TEST_SUITE(layers)

BOOST_AUTO_TEST_CASE(rms_norm_backward_matches_finite_differences) {
  auto g = loralab::testing::rng(10);
  md x = randn(g, 7, 13), R = randn(g, 7, 13);
  vector<double> gain = randn(g, 13, 1), dgain = vector<double>::Zero(13), rstd;
  md y, dx;
  const auto loss = [&] { rms_norm_forward(x, gain, 1e-5, y, rstd); return dot(y, R); };
  loss();
  rms_norm_backward(x, gain, rstd, R, dx, &dgain);
  check_gradient("rms_norm dx", x.data(), x.size(), dx.data(), loss, g);
  check_gradient("rms_norm dgain", gain.data(), gain.size(), dgain.data(), loss, g);
}

BOOST_AUTO_TEST_CASE(rotary_backward_is_the_inverse_rotation) {
  auto g = loralab::testing::rng(11);
  const int heads = 3, D = 8;
  rotary_table<double> rt(D, 16, 10000.0);
  std::vector<int> pos = {0, 3, 7, 15, 1};
  md x = randn(g, 5, heads * D), R = randn(g, 5, heads * D);
  const auto loss = [&] { md y = x; apply_rotary(y, heads, rt, pos); return dot(y, R); };
  md dx = R;
  apply_rotary(dx, heads, rt, pos, /*inverse=*/true);
  check_gradient("rotary dx", x.data(), x.size(), dx.data(), loss, g);
  // rotate-half layout: dimension i pairs with i + D/2 (position 1 rotates pair (0, 4) of head 0 by θ_0 = 1 rad)
  md e = md::Zero(1, D);
  e(0, 0) = 1;
  apply_rotary(e, 1, rt, std::vector<int>{1});
  BOOST_TEST(e(0, 0) == std::cos(1.0), boost::test_tools::tolerance(1e-12));
  BOOST_TEST(e(0, 4) == std::sin(1.0), boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(attention_gqa_backward_matches_finite_differences) {
  auto g = loralab::testing::rng(12);
  const attention_shape a{2, 5, 4, 2, 6};  // B=2, T=5, H=4, Hkv=2 (GQA), D=6
  md q = randn(g, 10, 24), k = randn(g, 10, 12), v = randn(g, 10, 12), R = randn(g, 10, 24);
  md probs, out, dq, dk, dv;
  const auto loss = [&] { attention_forward(a, q, k, v, probs, out); return dot(out, R); };
  loss();
  attention_backward(a, q, k, v, probs, R, dq, dk, dv);
  check_gradient("attention dq", q.data(), q.size(), dq.data(), loss, g, 60);
  check_gradient("attention dk", k.data(), k.size(), dk.data(), loss, g, 60);
  check_gradient("attention dv", v.data(), v.size(), dv.data(), loss, g, 60);
  // causal: row t of each head sees positions <= t only
  for (Eigen::Index r = 0; r < probs.rows(); ++r) {
    const Eigen::Index t = r % a.seq;
    BOOST_TEST(probs.row(r).tail(a.seq - t - 1).isZero());
    BOOST_TEST(probs.row(r).sum() == 1.0, boost::test_tools::tolerance(1e-12));
  }
}

BOOST_AUTO_TEST_CASE(swiglu_backward_matches_finite_differences) {
  auto g = loralab::testing::rng(13);
  md gate = randn(g, 6, 9, 2.0), up = randn(g, 6, 9), R = randn(g, 6, 9), h, dgate, dup;
  const auto loss = [&] { swiglu_forward(gate, up, h); return dot(h, R); };
  loss();
  swiglu_backward(gate, up, R, dgate, dup);
  check_gradient("swiglu dgate", gate.data(), gate.size(), dgate.data(), loss, g);
  check_gradient("swiglu dup", up.data(), up.size(), dup.data(), loss, g);
}

BOOST_AUTO_TEST_CASE(cross_entropy_ignores_minus_100_and_averages_the_rest) {
  auto g = loralab::testing::rng(14);
  md logits = randn(g, 6, 11, 3.0), dlogits;
  const std::vector<int> targets = {3, -100, 0, 10, -100, 7};
  const auto loss = [&] { return cross_entropy(logits, targets, static_cast<md*>(nullptr)); };
  const double l = cross_entropy(logits, targets, &dlogits);
  double expect = 0;
  for (int i : {0, 2, 3, 5}) {
    const double lse = std::log(logits.row(i).array().exp().sum());
    expect += lse - logits(i, targets[std::size_t(i)]);
  }
  BOOST_TEST(l == expect / 4, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(dlogits.row(1).isZero());
  check_gradient("cross_entropy dlogits", logits.data(), logits.size(), dlogits.data(), loss, g, 66);
  BOOST_CHECK_THROW(cross_entropy(logits, std::vector<int>(6, -100), &dlogits), loralab::error);
  BOOST_CHECK_THROW(cross_entropy(logits, std::vector<int>{1, 2, 3, 11, 0, 0}, &dlogits), loralab::error);
}

BOOST_AUTO_TEST_CASE(dense_linear_backward_and_frozen_weights_have_no_gradient) {
  auto g = loralab::testing::rng(15);
  const md w = randn(g, 5, 7);
  std::vector<float> wf(w.data(), w.data() + w.size());
  auto lin = make_dense_linear<double>(wf.data(), 5, 7);
  BOOST_TEST(!lin.weight.trainable());
  BOOST_TEST(lin.weight.grad_bytes() == 0u, "a frozen weight never gets a gradient buffer");
  lin.weight.set_trainable(true);
  md x = randn(g, 4, 7), R = randn(g, 4, 5), y, dx;
  const auto loss = [&] { lin.forward(x, y); return dot(y, R); };
  loss();
  lin.backward(x, R, dx);
  check_gradient("linear dx", x.data(), x.size(), dx.data(), loss, g);
  check_gradient("linear dW", lin.weight.w.data(), lin.weight.w.size(), lin.weight.grad.data(), loss, g);
}

BOOST_AUTO_TEST_CASE(quantized_linear_equals_dense_linear_over_its_dequantized_weight) {
  auto g = loralab::testing::rng(16);
  std::normal_distribution<float> n(0.0f, 0.1f);
  const Eigen::Index N = 300, K = 96;  // N > one dequantization tile (128 rows)
  std::vector<float> w(std::size_t(N * K));
  for (auto& v : w) v = n(g);
  const auto check = [&](auto q) {
    const matrix<float> deq = q.dense();
    auto ref = make_dense_linear<float>(deq.data(), N, K);
    matrix<float> x = randn(g, 9, K).cast<float>(), dy = randn(g, 9, N).cast<float>(), y1, y2, dx1, dx2;
    q.forward(x, y1), ref.forward(x, y2);
    q.backward(x, dy, dx1), ref.backward(x, dy, dx2);
    BOOST_TEST((y1 - y2).cwiseAbs().maxCoeff() <= 1e-5f * y2.cwiseAbs().maxCoeff());
    BOOST_TEST((dx1 - dx2).cwiseAbs().maxCoeff() <= 1e-5f * dx2.cwiseAbs().maxCoeff());
    BOOST_TEST(q.weight.grad_bytes() == 0u);
    BOOST_CHECK_THROW(q.weight.set_trainable(true), loralab::error);
  };
  check(make_quant_linear<loralab::quant::nf4<64>>(w.data(), N, K));
  check(make_quant_linear<loralab::quant::double_quant<loralab::quant::fp4<64>>>(w.data(), N, K));
  check(make_quant_linear<loralab::quant::int8_rowwise>(w.data(), N, K));
  check(make_bf16_linear(w.data(), N, K));
  // bf16 storage rounds each weight to nearest even, then computes in float
  const auto b = make_bf16_linear(w.data(), N, K);
  BOOST_TEST(b.dense()(3, 5) == static_cast<float>(Eigen::bfloat16(w[3 * K + 5])));
  BOOST_TEST(b.weight.weight_bytes() == std::size_t(N * K * 2));
}

BOOST_AUTO_TEST_CASE(ggml_block_linear_equals_dense_linear_over_its_dequantized_weight) {
  namespace q = loralab::quant;
  auto g = loralab::testing::rng(17);
  std::normal_distribution<float> n(0.0f, 0.1f);
  const Eigen::Index N = 300, K = 96;  // N > one dequantization tile (128 rows); K = 3 blocks of 32
  std::vector<float> w(std::size_t(N * K));
  for (auto& v : w) v = n(g);
  const auto check = [&]<class S>(std::type_identity<S>) {
    using W = weight_of_t<S>;
    static_assert(std::same_as<W, quant_weight<S>>, "a ggml scheme's frozen base is quant_weight<S>");
    linear<W> lin = make_linear<W>(w.data(), N, K);
    // the base's weight is ggml's dequantization of ggml's bytes (quant::ggml_tensor), row for row
    const matrix<float> deq = lin.dense();
    const auto t = q::ggml_tensor<S>::template quantize_ref<float>(w, std::size_t(N), std::size_t(K));
    std::vector<float> want(w.size());
    t.template dequantize_rows_ref<float>(0, std::size_t(N), want);
    BOOST_TEST(std::equal(want.begin(), want.end(), deq.data()));
    // forward and dx backward through dequantized tiles equal a dense layer over that weight (float products:
    // the same sums in a different blocking, so a few ulps of the largest output)
    auto ref = make_dense_linear<float>(deq.data(), N, K);
    matrix<float> x = randn(g, 9, K).cast<float>(), dy = randn(g, 9, N).cast<float>(), y1, y2, dx1, dx2;
    lin.forward(x, y1), ref.forward(x, y2);
    lin.backward(x, dy, dx1), ref.backward(x, dy, dx2);
    BOOST_TEST((y1 - y2).cwiseAbs().maxCoeff() <= 1e-5f * y2.cwiseAbs().maxCoeff(), q::scheme_label<S>());
    BOOST_TEST((dx1 - dx2).cwiseAbs().maxCoeff() <= 1e-5f * dx2.cwiseAbs().maxCoeff(), q::scheme_label<S>());
    BOOST_TEST(lin.weight.grad_bytes() == 0u);
    BOOST_CHECK_THROW(lin.weight.set_trainable(true), loralab::error);
    // memory: the blocks' codes as weights, their fp16 scales as statistics, exactly the GGUF bytes in all
    const auto m = lin.memory();
    BOOST_TEST(m.weights + m.quant_stats == q::storage_bytes<S>(std::size_t(N * K)));
    BOOST_TEST(m.weights == std::size_t(N * K) / 32 * S::code_bytes_per_block);
    BOOST_TEST(lin.planned_memory(9).weights == m.weights);
    BOOST_TEST(lin.planned_memory(9).quant_stats == m.quant_stats);
    // a GGUF tensor's bytes wrapped as they are give the same layer
    const auto wrapped = make_quant_linear(q::ggml_tensor<S>::from_bytes(t.bytes(), std::size_t(N), std::size_t(K)));
    BOOST_TEST(wrapped.in_features() == K);
    BOOST_TEST(wrapped.out_features() == N);
    BOOST_TEST((wrapped.dense() == deq));
  };
  check(std::type_identity<q::ggml_q4_0>{});
  check(std::type_identity<q::ggml_q4_1>{});
  check(std::type_identity<q::ggml_q8_0>{});
}

BOOST_AUTO_TEST_SUITE_END()

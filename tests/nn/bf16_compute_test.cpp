// SPDX-License-Identifier: MIT
// compute<bf16>: the conversion rounds to nearest even like torch; the bf16 GEMM of every layout a linear uses
// equals a double-precision product of the same bf16-rounded operands; linear<W, compute<bf16>> forward and dx
// backward stay within bf16's rounding of the float layer (dense, bf16-stored, nf4) and equal the double product of
// their bf16-rounded operands; a model of compute<bf16> linears computes its tied LM head in bf16 too (forward
// logits and backward dx), on fresh random inputs.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <bit>
#include <random>

#include "nn/linear.hpp"
#include "nn/llama.hpp"
#include "nn/random_model.hpp"
#include "quant/schemes.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::nn;

namespace {
std::mt19937_64& gen() {
  static std::mt19937_64 g = loralab::testing::rng(16);  // prints the seed: LORALAB_TEST_SEED reproduces a failure
  return g;
}
matrix<float> random_matrix(Eigen::Index r, Eigen::Index c, float sd) {
  std::normal_distribution<float> nd(0, sd);
  matrix<float> m(r, c);
  for (float& x : m.reshaped()) x = nd(gen());
  return m;
}
double rel(const matrix<float>& a, const matrix<float>& b) { return double((a - b).norm() / b.norm()); }
/// The matrix with every entry rounded to bf16 (as the bf16 products see it), in double.
Eigen::MatrixXd rounded(const matrix<float>& m) {
  return m.unaryExpr([](float v) { return double(bf16_to_float(bf16_bits(v))); }).cast<double>();
}
/// Largest |a - b| over the largest |b|.
double worst(const matrix<float>& a, const Eigen::MatrixXd& b) {
  return (a.cast<double>() - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(bf16_compute)

BOOST_AUTO_TEST_CASE(conversion_rounds_to_nearest_even) {
  BOOST_TEST(bf16_bits(1.0f) == 0x3f80);
  BOOST_TEST(bf16_bits(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // a tie goes to the even neighbour
  BOOST_TEST(bf16_bits(std::bit_cast<float>(0x3f818000u)) == 0x3f82);
  BOOST_TEST(bf16_bits(std::bit_cast<float>(0x3f808001u)) == 0x3f81);  // above the tie rounds up
  BOOST_TEST(std::isnan(bf16_to_float(bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
  BOOST_TEST(std::isinf(bf16_to_float(bf16_bits(std::numeric_limits<float>::infinity()))));
  for (int i = 0; i < 1000; ++i) {  // the same bits as Eigen's bfloat16 (round to nearest even)
    const float x = std::normal_distribution<float>(0, 10)(gen());
    BOOST_TEST(bf16_bits(x) == Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(x)));
  }
}

BOOST_AUTO_TEST_CASE(gemm_equals_a_double_product_of_the_rounded_operands) {
  BOOST_TEST_MESSAGE("bf16 products: " << bf16_gemm_backend());
  const int M = 37, N = 29, K = 83;
  const matrix<float> a = random_matrix(M, K, 1), w = random_matrix(N, K, 1), b = random_matrix(K, N, 1);
  std::vector<std::uint16_t> ab(a.size()), wb(w.size()), bb(b.size());
  to_bf16(a.data(), ab.data(), a.size()), to_bf16(w.data(), wb.data(), w.size()), to_bf16(b.data(), bb.data(), b.size());
  for (const bool transposed : {true, false})
    for (const bool accumulate : {false, true}) {
      matrix<float> c = random_matrix(M, N, 1);
      const matrix<float> c0 = c;
      gemm_bf16(M, N, K, ab.data(), K, transposed ? wb.data() : bb.data(), transposed ? K : N, transposed, c.data(), N, accumulate);
      double worst = 0;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double ref = accumulate ? c0(i, j) : 0;
          for (int l = 0; l < K; ++l)
            ref += double(bf16_to_float(ab[i * K + l])) * bf16_to_float(transposed ? wb[j * K + l] : bb[l * N + j]);
          worst = std::max(worst, std::abs(ref - c(i, j)));
        }
      BOOST_TEST(worst < 1e-4, "transposed " << transposed << " accumulate " << accumulate << ": " << worst);
    }
}

BOOST_AUTO_TEST_CASE(linear_layers_stay_within_bf16_rounding_of_float) {
  const Eigen::Index M = 64, N = 300, K = 96;  // N > dequant_tile_rows: several tiles, accumulated in backward
  const matrix<float> w = random_matrix(N, K, 0.02f), x = random_matrix(M, K, 1), dy = random_matrix(M, N, 1);
  const auto check = [&]<class W>(std::type_identity<W>, const char* name) {
    auto lf = make_linear<W>(w.data(), N, K);
    auto lb = make_linear<W, compute<bf16>>(w.data(), N, K);
    matrix<float> yf, yb, dxf, dxb;
    lf.forward(x, yf), lb.forward(x, yb);
    lf.backward(x, dy, dxf), lb.backward(x, dy, dxb);
    BOOST_TEST(rel(yb, yf) < 8e-3, name << " forward: " << rel(yb, yf));
    BOOST_TEST(rel(dxb, dxf) < 8e-3, name << " backward: " << rel(dxb, dxf));
    BOOST_TEST(rel(yb, yf) > 0, name << ": the bf16 layer rounds");
    // what the bf16 layer computes: the double product of its rounded operands, float-accumulated
    const Eigen::MatrixXd wr = rounded(lf.dense());
    BOOST_TEST(worst(yb, rounded(x) * wr.transpose()) < 1e-5, name << " forward vs rounded operands");
    BOOST_TEST(worst(dxb, rounded(dy) * wr) < 1e-5, name << " backward vs rounded operands");
    const std::size_t weight = std::same_as<W, bf16_weight> ? 0 : std::size_t(N * K);  // the converted weight, whole
    BOOST_TEST(lb.planned_shared(std::size_t(M)).bf16 == std::size_t(M * std::max(N, K)) + weight);
  };
  check(std::type_identity<dense_weight<float>>{}, "dense");
  check(std::type_identity<bf16_weight>{}, "bf16-stored");
  check(std::type_identity<quant_weight<quant::nf4<64>>>{}, "nf4");
}

/// The tied LM head of a model whose linears compute in bf16 is one of the frozen base's products: logits =
/// bf16(rms_norm(x)) · bf16(E)ᵀ and dx of the head = bf16(dlogits) · bf16(E), float accumulation; its bf16 buffers
/// are in the planned workspace. Checked against double products of the rounded operands, taken from the model's
/// own float intermediates (a float model gives them: same weights, same tokens).
BOOST_AUTO_TEST_CASE(tied_head_of_a_bf16_model_computes_in_bf16) {
  const llama_config c{.dim = 64, .hidden_dim = 96, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .vocab_size = 300, .max_seq_len = 16};
  const model_file f = random_model_file(c, std::uniform_int_distribution<std::uint64_t>()(gen()));
  using bf16_linear = linear<dense_weight<float>, compute<bf16>>;
  auto mb = llama_model<bf16_linear>::from_file(f, [](const std::string&, const float* d, Eigen::Index n, Eigen::Index k) {
    return make_linear<dense_weight<float>, compute<bf16>>(d, n, k);
  });
  const int B = 2, T = 8;
  std::vector<int> tokens(B * T), targets(B * T);
  std::uniform_int_distribution<int> id(0, c.vocab_size - 1);
  for (int i = 0; i < B * T; ++i) tokens[std::size_t(i)] = id(gen()), targets[std::size_t(i)] = id(gen());
  const matrix<float> logits = mb.forward(tokens, B, T);
  // the head's input: the final norm of the last block's output, as the model computed it
  const matrix<float> xf = mb.final_hidden();
  const Eigen::MatrixXd E = rounded(mb.embed);
  BOOST_TEST(worst(logits, rounded(xf) * E.transpose()) < 1e-5);
  const matrix<float> float_logits = xf * mb.embed.transpose();
  BOOST_TEST(rel(logits, float_logits) > 0, "the head rounds its operands");
  mb.loss(targets);
  mb.backward();
  BOOST_TEST(worst(mb.head_input_grad(), rounded(mb.logits_grad()) * E) < 1e-5);
  const std::size_t M = std::size_t(B) * T, C = std::size_t(c.dim), V = std::size_t(c.vocab_size);
  BOOST_TEST(mb.shared_buffers().bf16.size() >= M * std::max(C, V) + V * C);
  BOOST_TEST(mb.measured_memory().workspace <= mb.planned_memory(B, T).workspace);
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
// The whole model: gradients of every parameter against finite differences (double), gradient checkpointing
// gives the same gradients, frozen parameters hold no gradient, and the planned memory is what is allocated.
#include <random>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"
#include "nn/llama.hpp"
#include "nn/random_model.hpp"
#include "test_support.hpp"

using namespace loralab::nn;
using loralab::testing::check_gradient;

namespace {
llama_config tiny(bool tied) {
  llama_config c;
  c.dim = 16, c.hidden_dim = 20, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 11, c.max_seq_len = 8;
  c.tie_word_embeddings = tied;
  return c;
}

struct batch {
  std::vector<int> tokens, targets;
  int B = 2, T = 6;
};
batch random_batch(std::mt19937_64& g, int vocab) {
  batch b;
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  for (int i = 0; i < b.B * b.T; ++i) b.tokens.push_back(tok(g)), b.targets.push_back(i % 5 == 2 ? -100 : tok(g));
  return b;
}

template <class Model>
double loss_of(Model& m, const batch& b) {
  m.forward(b.tokens, b.B, b.T);
  return m.loss(b.targets);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(model)

BOOST_AUTO_TEST_CASE(every_parameter_gradient_matches_finite_differences) {
  for (bool tied : {true, false}) {
    auto g = loralab::testing::rng(20 + tied);
    auto m = make_dense_model<double>(loralab::nn::random_model_file(tiny(tied), g()));
    m.set_all_trainable(true);
    const batch b = random_batch(g, m.config.vocab_size);
    loss_of(m, b);
    m.backward();
    const auto loss = [&] { return loss_of(m, b); };
    std::size_t visited = 0;
    m.for_each_parameter([&](const std::string& name, auto p) {
      BOOST_TEST_REQUIRE(p.grad != nullptr, name << " is trainable and has a gradient");
      check_gradient(name.c_str(), p.value, std::size_t(p.size), p.grad, loss, g, name.find("_proj") != std::string::npos ? 12 : 24);
      ++visited;
    });
    BOOST_TEST(visited == loralab::nn::expected_tensors(m.config).size(), "every tensor of the file is a visited parameter");
  }
}

BOOST_AUTO_TEST_CASE(gradient_checkpointing_gives_identical_gradients_and_saves_memory) {
  auto g = loralab::testing::rng(22);
  const auto file = loralab::nn::random_model_file(tiny(true), g());
  const batch b = random_batch(g, 11);
  auto plain = make_dense_model<float>(file), ckpt = make_dense_model<float>(file);
  plain.set_all_trainable(true), ckpt.set_all_trainable(true);
  ckpt.gradient_checkpointing = true;
  BOOST_TEST(loss_of(plain, b) == loss_of(ckpt, b));
  plain.backward(), ckpt.backward();
  BOOST_TEST((plain.embed_grad == ckpt.embed_grad));
  for (std::size_t l = 0; l < plain.layers.size(); ++l) {
    BOOST_TEST((plain.layers[l].input_layernorm.grad == ckpt.layers[l].input_layernorm.grad));
    BOOST_TEST((plain.layers[l].q_proj.weight.grad == ckpt.layers[l].q_proj.weight.grad));
    BOOST_TEST((plain.layers[l].down_proj.weight.grad == ckpt.layers[l].down_proj.weight.grad));
  }
  BOOST_TEST(ckpt.measured_memory().activations < plain.measured_memory().activations);
}

BOOST_AUTO_TEST_CASE(frozen_parameters_hold_no_gradient_buffers) {
  auto g = loralab::testing::rng(23);
  auto m = make_dense_model<float>(loralab::nn::random_model_file(tiny(true), g()));
  BOOST_TEST(m.measured_memory().grads == 0u);
  m.set_all_trainable(true);
  BOOST_TEST(m.measured_memory().grads == m.measured_memory().weights);
  m.set_all_trainable(false);
  BOOST_TEST(m.measured_memory().grads == 0u);
}

template <class Model>
void check_memory_plan(Model& m, const batch& b, const char* what) {
  loss_of(m, b);
  m.backward();
  const memory_report planned = m.planned_memory(b.B, b.T), measured = m.measured_memory();
  BOOST_TEST_MESSAGE(what << " planned " << planned << "\n" << what << " measured " << measured);
  BOOST_TEST(planned.weights == measured.weights, what);
  BOOST_TEST(planned.quant_stats == measured.quant_stats, what);
  BOOST_TEST(planned.grads == measured.grads, what);
  BOOST_TEST(planned.activations == measured.activations, what);
  BOOST_TEST(planned.workspace == measured.workspace, what);
}

BOOST_AUTO_TEST_CASE(planned_memory_equals_allocated_bytes) {
  auto g = loralab::testing::rng(24);
  for (bool ckpt : {false, true}) {
    const auto file = loralab::nn::random_model_file(tiny(ckpt), g());
    const batch b = random_batch(g, 11);
    auto dense = make_dense_model<float>(file);
    dense.set_all_trainable(true);
    dense.gradient_checkpointing = ckpt;
    check_memory_plan(dense, b, "dense");
    auto q = make_quantized_model<loralab::quant::double_quant<loralab::quant::nf4<64>>>(file);
    q.gradient_checkpointing = ckpt;
    check_memory_plan(q, b, "nf4+dq");
    auto i8 = make_quantized_model<loralab::quant::int8_rowwise>(file);
    check_memory_plan(i8, b, "int8");
    auto bf = make_bf16_model(file);
    check_memory_plan(bf, b, "bf16");
  }
}

BOOST_AUTO_TEST_CASE(bad_batches_are_refused) {
  auto g = loralab::testing::rng(25);
  auto m = make_dense_model<float>(loralab::nn::random_model_file(tiny(true), g()));
  BOOST_CHECK_THROW(m.forward({1, 2, 3}, 1, 4), loralab::error);           // wrong count
  BOOST_CHECK_THROW(m.forward({1, 2, 99}, 1, 3), loralab::error);          // id outside the vocabulary
  BOOST_CHECK_THROW(m.forward(std::vector<int>(9, 1), 1, 9), loralab::error);  // longer than the context
  BOOST_CHECK_THROW(m.backward(), loralab::error);                         // nothing to back-propagate
}

BOOST_AUTO_TEST_SUITE_END()

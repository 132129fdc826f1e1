// SPDX-License-Identifier: MIT
// The whole model on the GPU (cuda::to_device: nn::llama_model and lora::lora_linear over device linears) against the
// same model on the host, on the real stories260K: one forward + loss + backward (logits, loss and every adapter
// gradient within 1e-4 relative, with dropout 0.1 and under gradient checkpointing), and 20 optimizer steps of
// train::trainer on english_quotes (each step's loss within 1e-3 relative of the host's: the host and the device sum
// in other orders, and 20 AdamW steps carry the difference). LoRA over a float32 base and QLoRA over nf4 + double
// quantization; and inference through the KV-cache decoder (logits, greedy tokens, perplexity). Skipped, with the
// reason, where no CUDA device exists.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "cuda/device_model.hpp"
#include "data/dataset.hpp"
#include "lora/lora.hpp"
#include "nn/generate.hpp"
#include "nn/gguf_model.hpp"
#include "nn/model_io.hpp"
#include "nn/perplexity.hpp"
#include "nn/tokenizer.hpp"
#include "quant_4bit.cuh"
#include "expect_error.hpp"
#include "kernel_test_support.hpp"
#include "test_support.hpp"
#include "train/trainer.hpp"

using namespace loralab;

namespace {
const std::string source = LORALAB_SOURCE_DIR, shared = LORALAB_SHARED_DIR;

using kernel_testing::has_device;
using kernel_testing::relative_error;

const nn::model_file& stories() {
  static const nn::model_file f = nn::read_llama2c(source + "/models/stories260K.bin");
  return f;
}

/// english_quotes from ../shared where it is there; else (a GPU machine with the repository only) quotes made of the
/// repository's README lines.
std::string quotes_file() {
  const std::string q = shared + "/data/english_quotes.jsonl";
  if (std::filesystem::exists(q)) return q;
  const auto path = std::filesystem::temp_directory_path() / "loralab_device_quotes.jsonl";
  std::ifstream in(source + "/README.md");
  std::ofstream out(path);
  for (std::string line; std::getline(in, line);)
    if (line.size() > 20) out << nlohmann::json{{"quote", line.substr(0, 200)}}.dump() << "\n";
  return path.string();
}

data::prepared_dataset quotes(int batch_size) {
  static const auto tok = nn::load_tokenizer(source + "/models/tok512.model", 512);
  data::dataset_config dc;
  dc.file = quotes_file();
  dc.format = data::data_format::quotes;
  dc.seq_len = 64;
  dc.batch_size = batch_size;
  return data::prepare_dataset(dc, *tok);
}

/// relative_error of two same-shaped float arrays (an adapter gradient, a logits matrix).
template <class A, class B>
double max_rel(const A& a, const B& b) {
  BOOST_TEST_REQUIRE(a.size() == b.size());
  return relative_error(a.data(), b.data(), std::size_t(b.size()));
}

/// One forward + loss + backward of the host model and its device twin on the same batch and masks: logits and
/// gradients within `tol` relative, the loss within tol / 10.
template <class Base>
void one_step_matches(lora::lora_model<Base>& host, bool checkpointing, double tol = 1e-4) {
  lora::lora_config lc;
  lc.r = 4, lc.alpha = 8, lc.dropout = 0.1;
  lora::attach_adapters(host, lc, lora::parse_targets("all-linear"), 7);
  auto rng = loralab::testing::rng(11);
  lora::for_each_adapter(host, [&](const std::string&, auto& a, auto&) {  // B = 0 would hide the adapter's branch
    std::normal_distribution<float> g(0.0f, 0.02f);
    for (Eigen::Index i = 0; i < a.B.size(); ++i) a.B.data()[i] = g(rng);
  });
  host.gradient_checkpointing = checkpointing;
  auto dev = cuda::to_device(host);
  const int B = 2, T = 32;
  std::vector<int> tokens(std::size_t(B) * T), targets(tokens.size());
  std::uniform_int_distribution<int> id(0, host.config.vocab_size - 1);
  for (auto& t : tokens) t = id(rng);
  for (auto& t : targets) t = id(rng);
  targets[3] = nn::ignore_index;
  lora::set_adapter_mode(host, true, 1234), lora::set_adapter_mode(dev, true, 1234);
  const nn::matrix<float> logits_host = host.forward(tokens, B, T);
  const nn::matrix<float> logits_dev = dev.forward(tokens, B, T).to_host();
  BOOST_TEST(max_rel(logits_dev, logits_host) < tol, "logits, checkpointing " << checkpointing);
  const double loss_host = host.loss(targets), loss_dev = dev.loss(targets);
  BOOST_TEST(std::abs(loss_dev - loss_host) <= tol / 10 * std::abs(loss_host), "loss " << loss_dev << " vs " << loss_host);
  host.backward(), dev.backward();
  std::vector<nn::matrix<float>> grads_host;
  lora::for_each_adapter(host, [&](const std::string&, auto& a, auto&) {
    grads_host.push_back(Eigen::Map<const nn::matrix<float>>(a.dA.data(), a.dA.rows(), a.dA.cols()));
    grads_host.push_back(Eigen::Map<const nn::matrix<float>>(a.dB.data(), a.dB.rows(), a.dB.cols()));
  });
  std::size_t i = 0;
  lora::for_each_adapter(dev, [&](const std::string& key, auto& a, auto&) {
    BOOST_TEST(max_rel(a.dA, grads_host[i++]) < tol, key << " dA");
    BOOST_TEST(max_rel(a.dB, grads_host[i++]) < tol, key << " dB");
  });
  BOOST_TEST(i == grads_host.size());
}

/// 20 optimizer steps of the trainer on the host and on the device from the same adapters.
template <class Base>
void loss_curve_matches(lora::lora_model<Base>& host) {
  lora::lora_config lc;
  lc.dropout = 0.05;
  const auto targets = lora::parse_targets("q_proj,v_proj");
  lora::attach_adapters(host, lc, targets, 42);
  lora::prepare_for_kbit_training(host);
  auto dev = cuda::to_device(host);
  auto data = quotes(4);
  train::train_options o;
  o.max_steps = 20, o.lr = 2e-3, o.grad_accum = 2, o.logging_steps = 5;
  const train::run_record h = train::trainer<lora::lora_model<Base>>(host, data, o).run();
  const train::run_record d = train::trainer<decltype(dev)>(dev, data, o).run();
  BOOST_TEST_REQUIRE(d.step_losses.size() == 20u);
  for (std::size_t s = 0; s < 20; ++s)
    BOOST_TEST(std::abs(d.step_losses[s] - h.step_losses[s]) <= 1e-3 * h.step_losses[s],
               "step " << s + 1 << ": device " << d.step_losses[s] << ", host " << h.step_losses[s]);
  BOOST_TEST(d.step_losses.back() < d.step_losses.front(), "the device run learns");
}

/// Inference through nn::kv_cache_decoder on the device against the host, an adapter (r 8, B nonzero) applied in eval
/// mode: a 40-token sequence's logits, 8 prompt tokens fed at once and then one at a time (M = 1: the 4-bit GEMV on a
/// quantized base, attention over the device cache), within 1e-4 relative; 24 greedy tokens the same ids; the
/// teacher-forced NLL in windows of 16 within 1e-5 relative.
template <class Host>
void decoding_matches(Host host) {
  lora::lora_config lc;
  lc.r = 8;
  lora::attach_adapters(host, lc, lora::parse_targets("all-linear"), 3);
  auto g = loralab::testing::rng(77);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  lora::for_each_adapter(host, [&](const std::string&, auto& a, auto&) {
    for (Eigen::Index i = 0; i < a.B.size(); ++i) a.B.data()[i] = normal(g);
  });
  lora::set_adapter_mode(host, /*training=*/false, 0);
  auto dev = cuda::to_device(host);
  std::vector<int> ids(40);
  for (auto& t : ids) t = int(g() % 512u);
  ids[0] = 1;
  nn::kv_cache_decoder<typename Host::linear_type> hd(host);
  nn::kv_cache_decoder<typename decltype(dev)::linear_type> dd(dev);
  hd.feed(std::span<const int>(ids.data(), 8), true), dd.feed(std::span<const int>(ids.data(), 8), true);
  BOOST_TEST(max_rel(dd.all_logits(), hd.all_logits()) < 1e-4, "prompt logits");
  for (std::size_t t = 8; t < ids.size(); ++t) {
    const auto& hl = hd.feed(std::span<const int>(&ids[t], 1));
    const auto& dl = dd.feed(std::span<const int>(&ids[t], 1));
    BOOST_TEST(max_rel(dl, hl) < 1e-4, "position " << t);
  }
  nn::generation_options o;
  o.max_new_tokens = 24;
  const std::vector<int> prompt(ids.begin(), ids.begin() + 8);
  BOOST_TEST(nn::generate(dev, prompt, o) == nn::generate(host, prompt, o), "greedy tokens");
  const double h = nn::teacher_forced_nll(host, ids, 16).mean_nll, d = nn::teacher_forced_nll(dev, ids, 16).mean_nll;
  BOOST_TEST(std::abs(d - h) <= 1e-5 * h, "mean NLL: device " << d << ", host " << h);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(device_model, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(lora_float32_one_step_matches_the_host) {
  auto host = lora::make_lora_dense_model(stories());
  one_step_matches(host, false);
}

BOOST_AUTO_TEST_CASE(qlora_nf4_dq_one_step_matches_the_host_with_checkpointing) {
  auto host = lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories());
  one_step_matches(host, true);
}

BOOST_AUTO_TEST_CASE(qlora_fp4_one_step_matches_the_host) {
  auto host = lora::make_lora_quantized_model<quant::fp4<64>>(stories());
  one_step_matches(host, false);
}

// compute<bf16>: both round the same operands to bf16 and accumulate in float; an activation that differs in its last
// float bits can round to the neighbouring bf16 value (2^-8 relative on that element), hence 2e-3.
BOOST_AUTO_TEST_CASE(qlora_nf4_dq_bf16_products_one_step_matches_the_host) {
  using base = nn::linear<nn::quant_weight<quant::double_quant<quant::nf4<64>>>, nn::compute<nn::bf16>>;
  const auto& f = stories();
  auto host = lora::make_lora_model<base>(f, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_linear_from_file<base::weight_type, nn::compute<nn::bf16>>(f, name, d, n, k);
  });
  one_step_matches(host, false, 2e-3);
}

BOOST_AUTO_TEST_CASE(lora_twenty_steps_follow_the_host_loss_curve) {
  auto host = lora::make_lora_dense_model(stories());
  loss_curve_matches(host);
}

BOOST_AUTO_TEST_CASE(qlora_twenty_steps_follow_the_host_loss_curve) {
  auto host = lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories());
  loss_curve_matches(host);
}

BOOST_AUTO_TEST_CASE(lora_float32_decoding_matches_the_host) { decoding_matches(lora::make_lora_dense_model(stories())); }

BOOST_AUTO_TEST_CASE(qlora_nf4_dq_decoding_matches_the_host) {
  decoding_matches(lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(stories()));
}

BOOST_AUTO_TEST_SUITE_END()

// Without a device the model cannot start, and says why; the refusals that need no device are checked here.
BOOST_AUTO_TEST_CASE(device_model_refuses_what_it_cannot_train) {
  BOOST_TEST(!cuda::runs_on_device<nn::linear<nn::quant_weight<quant::int8_rowwise>>>);
  BOOST_TEST(cuda::runs_on_device<nn::linear<nn::quant_weight<quant::nf4<64>>>>);
  BOOST_TEST(cuda::runs_on_device<nn::linear<nn::dense_weight<float>>>);
  BOOST_TEST(!cuda::runs_on_device<nn::linear<nn::dense_weight<double>>>);
  std::string why;
  if (!cuda::device_available(&why)) {
    loralab::testing::expect_error([] { (void)cuda::to_device(lora::make_lora_dense_model(stories())); }, {"CUDA"});
  }
}

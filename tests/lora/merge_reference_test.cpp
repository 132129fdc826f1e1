// SPDX-License-Identifier: MIT
// Merging against real PEFT and the alpaca-lora lab's Meta export (tests/reference/make_merge_golden.py): an adapter
// loralab trained on stories260K (tests/data/loralab_adapter) gives PEFT's unmerged logits; loralab's merged
// weights equal PEFT's merge_and_unload within 1e-6; its Meta layout holds the lab's unpermuted wq/wk under the
// lab's names. And the merge for export is PEFT's on random models too: rank/alpha patterns kept when an adapter
// is saved again, a QLoRA merge over the dequantized base equals the unmerged model.
#include <fstream>
#include <set>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "nn/random_model.hpp"
#include "io/torch_pth.hpp"
#include "lora/lora.hpp"
#include "lora/merged_model.hpp"
#include "nn/meta_dir.hpp"
#include "nn/model_io.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::lora;

namespace {
const std::string data_dir = LORALAB_TEST_DATA_DIR;

nn::model_file stories() { return nn::read_llama2c(LORALAB_SOURCE_DIR "/models/stories260K.bin"); }

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  float d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(merge_reference)

BOOST_AUTO_TEST_CASE(loralab_adapter_gives_peft_unmerged_logits) {
  auto m = make_lora_dense_model<float>(stories());
  load_adapter(m, data_dir + "/loralab_adapter");
  set_adapter_mode(m, false, 0);
  const auto golden = io::safetensors_file::open(data_dir + "/merge_golden.safetensors");
  const auto ids32 = golden.at("input_ids").to_vector<std::int32_t>();
  const std::vector<int> ids(ids32.begin(), ids32.end());
  const nn::matrix<float> logits = m.forward(ids, 1, int(ids.size()));
  const auto expect = golden.at("unmerged_logits").to_float();
  const Eigen::Map<const nn::matrix<float>> e(expect.data(), logits.rows(), logits.cols());
  BOOST_TEST_MESSAGE("max |logit - PEFT| = " << (logits - e).cwiseAbs().maxCoeff());
  BOOST_TEST((logits - e).cwiseAbs().maxCoeff() <= 1e-4f);
}

BOOST_AUTO_TEST_CASE(merged_weights_equal_peft_merge_and_unload) {
  const auto base = stories();
  auto m = make_lora_dense_model<float>(base);
  load_adapter(m, data_dir + "/loralab_adapter");
  merged_summary sum;
  const nn::model_file merged = merged_model_file(m, base, &sum);
  BOOST_TEST(sum.modules == 7 * base.config.n_layers);
  BOOST_TEST(sum.max_update > 1e-3, "the adapter was trained: its update is not zero");
  const auto golden = io::safetensors_file::open(data_dir + "/merge_golden.safetensors");
  int compared = 0;
  for (const auto& t : golden.tensors()) {
    if (!t.name.starts_with("hf.")) continue;
    const std::string name = t.name.substr(3);
    BOOST_TEST_REQUIRE(merged.tensors.contains(name), name);
    BOOST_TEST(merged.tensors.at(name).shape == t.shape, name);
    BOOST_TEST(max_abs_diff(merged.tensors.at(name).data, t.to_float()) <= 1e-6f, name);
    ++compared;
  }
  BOOST_TEST(compared == 7 * base.config.n_layers);
}

BOOST_AUTO_TEST_CASE(meta_layout_holds_the_labs_names_and_unpermuted_wq_wk) {
  const auto base = stories();
  auto m = make_lora_dense_model<float>(base);
  load_adapter(m, data_dir + "/loralab_adapter");
  const nn::model_file merged = merged_model_file(m, base);
  loralab::testing::temp_dir dir;
  nn::write_meta_dir(merged, dir.path);
  const auto pth = io::read_pth(dir.path / "consolidated.00.pth");
  const auto golden = io::safetensors_file::open(data_dir + "/merge_golden.safetensors");
  const auto keys = nlohmann::json::parse(golden.metadata().at("meta_keys")).get<std::set<std::string>>();
  std::set<std::string> ours;
  for (const auto& t : pth.tensors()) ours.insert(t.name);
  BOOST_TEST((ours == keys), "the lab's export has the same keys");
  int compared = 0;
  for (const auto& t : golden.tensors()) {
    if (!t.name.starts_with("meta.")) continue;
    const auto& mine = pth.at(t.name.substr(5));
    BOOST_TEST(mine.shape == t.shape, t.name);
    BOOST_TEST(max_abs_diff(mine.to_float(), t.to_float()) <= 1e-6f, t.name);
    ++compared;
  }
  BOOST_TEST(compared == 2 * base.config.n_layers);
  // and back: the Meta directory reads as the merged model, exactly
  const nn::model_file back = nn::read_meta_dir(dir.path, base.config.max_seq_len);
  BOOST_TEST((back.config == merged.config));
  for (const auto& [name, t] : merged.tensors) BOOST_TEST((back.tensors.at(name).data == t.data), name);
}

BOOST_AUTO_TEST_CASE(qlora_merge_over_the_dequantized_base_equals_unmerged) {
  auto g = loralab::testing::rng(81);
  nn::llama_config c;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 50, c.max_seq_len = 16;
  const auto file = loralab::nn::random_model_file(c, g());
  auto m = make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(file);
  lora_config lc;
  lc.r = 4, lc.alpha = 8;
  attach_adapters(m, lc, parse_targets("all-linear"), 5);
  std::normal_distribution<float> n(0, 0.05f);
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { a.B = a.B.unaryExpr([&](float) { return n(g); }); });
  set_adapter_mode(m, false, 0);
  const std::vector<int> ids = {1, 7, 3, 9, 2, 4};
  const nn::matrix<float> unmerged = m.forward(ids, 1, 6);
  auto f = nn::make_dense_model<float>(merged_model_file(m, file));
  const nn::matrix<float> merged = f.forward(ids, 1, 6);
  BOOST_TEST_MESSAGE("max |Δlogit| QLoRA merged vs unmerged: " << (merged - unmerged).cwiseAbs().maxCoeff());
  BOOST_TEST((merged - unmerged).cwiseAbs().maxCoeff() <= 1e-4f);
  const auto q = requantization_error<quant::double_quant<quant::nf4<64>>>(merged_model_file(m, file));
  BOOST_TEST(q.max_abs > 0.0);
  BOOST_TEST(q.rel_rms > 0.01);  // nf4's relative error is ~0.1 on Gaussian weights
  BOOST_TEST(q.rel_rms < 0.2);
}

BOOST_AUTO_TEST_CASE(rank_and_alpha_patterns_survive_a_save) {
  auto g = loralab::testing::rng(82);
  nn::llama_config c;
  c.dim = 32, c.hidden_dim = 48, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 4, c.vocab_size = 40, c.max_seq_len = 16;
  const auto file = loralab::nn::random_model_file(c, g());
  auto m = make_lora_dense_model<float>(file);
  lora_config lc;
  lc.r = 4, lc.alpha = 8;
  attach_adapters(m, lc, parse_targets("q_proj,v_proj"), 3);
  loralab::testing::temp_dir dir;
  save_adapter(m, dir.path / "a", lc, parse_targets("q_proj,v_proj"), "base");
  {  // PEFT's overrides: layer 1's q_proj at rank 2, v_proj with alpha 32
    std::ifstream in(dir.path / "a" / "adapter_config.json");
    auto j = nlohmann::json::parse(in);
    j["rank_pattern"] = {{"layers.1.self_attn.q_proj", 2}};
    j["alpha_pattern"] = {{"v_proj", 32}};
    std::ofstream(dir.path / "a" / "adapter_config.json") << j.dump(2);
    auto tmp = make_lora_dense_model<float>(file);
    lora_config small = lc;
    small.r = 2;
    attach_adapters(tmp, small, parse_targets("q_proj"), 4);
    auto st = io::safetensors_file::open(dir.path / "a" / "adapter_model.safetensors");
    io::safetensors_writer w;
    std::vector<std::vector<float>> keep;
    for (const auto& t : st.tensors()) {
      if (t.name.find("layers.1.self_attn.q_proj") != std::string::npos) {
        const bool is_a = t.name.find("lora_A") != std::string::npos;
        keep.push_back(std::vector<float>(is_a ? 2 * 32 : 32 * 2, 0.25f));
        w.add<float>(t.name, is_a ? std::vector<std::int64_t>{2, 32} : std::vector<std::int64_t>{32, 2}, keep.back());
      } else {
        keep.push_back(t.to_float());
        w.add<float>(t.name, t.shape, keep.back());
      }
    }
    w.write(dir.path / "a" / "adapter_model.safetensors");
  }
  auto back = make_lora_dense_model<float>(file);
  const auto cfg = load_adapter(back, dir.path / "a");
  save_adapter(back, dir.path / "b", cfg.config, cfg.targets, "base");
  const auto again = read_adapter_config(dir.path / "b");
  BOOST_TEST(again.rank_pattern.size() == 1u);
  BOOST_TEST(again.rank_pattern.at("model.layers.1.self_attn.q_proj") == 2);
  BOOST_TEST(again.alpha_pattern.size() == 2u);  // v_proj of both layers
  BOOST_TEST(again.alpha_pattern.at("model.layers.0.self_attn.v_proj") == 32.0);
  auto third = make_lora_dense_model<float>(file);
  load_adapter(third, dir.path / "b");
  set_adapter_mode(back, false, 0), set_adapter_mode(third, false, 0);
  const std::vector<int> ids = {1, 5, 7, 2};
  BOOST_TEST((back.forward(ids, 1, 4) == third.forward(ids, 1, 4)));
}

BOOST_AUTO_TEST_SUITE_END()

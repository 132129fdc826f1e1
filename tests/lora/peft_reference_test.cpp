// SPDX-License-Identifier: MIT
// Against real PEFT (0.21.2, tests/reference/make_peft_golden.py): an adapter PEFT saved for stories260K loads
// here and gives PEFT's logits, unmerged and after merge_and_unload; what loralab saves has PEFT's layout.
#include <fstream>
#include <set>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "lora/lora.hpp"
#include "nn/model_io.hpp"
#include "test_support.hpp"

using namespace loralab;
using namespace loralab::lora;

namespace {
const std::string data_dir = LORALAB_TEST_DATA_DIR;
}

BOOST_AUTO_TEST_SUITE(peft_reference)

BOOST_AUTO_TEST_CASE(peft_adapter_gives_peft_logits) {
  auto m = make_lora_dense_model<float>(nn::read_llama2c(LORALAB_SHARED_DIR "/models/stories260K.bin"));
  const auto cfg = load_adapter(m, data_dir + "/peft_adapter");
  BOOST_TEST(cfg.config.r == 4);
  BOOST_TEST(cfg.config.alpha == 8.0);
  set_adapter_mode(m, /*training=*/false, 0);
  const auto golden = io::safetensors_file::open(data_dir + "/peft_logits.safetensors");
  const auto ids32 = golden.at("input_ids").to_vector<std::int32_t>();
  const std::vector<int> ids(ids32.begin(), ids32.end());
  const auto expect = golden.at("logits").to_float(), expect_merged = golden.at("merged_logits").to_float();
  const nn::matrix<float> logits = m.forward(ids, 1, int(ids.size()));
  const Eigen::Map<const nn::matrix<float>> e(expect.data(), logits.rows(), logits.cols());
  BOOST_TEST_MESSAGE("max |logit - PEFT| = " << (logits - e).cwiseAbs().maxCoeff());
  BOOST_TEST((logits - e).cwiseAbs().maxCoeff() <= 1e-4f);
  auto merged = merge_and_unload(std::move(m));
  const nn::matrix<float> ml = merged.forward(ids, 1, int(ids.size()));
  const Eigen::Map<const nn::matrix<float>> em(expect_merged.data(), ml.rows(), ml.cols());
  BOOST_TEST((ml - em).cwiseAbs().maxCoeff() <= 1e-4f);
}

BOOST_AUTO_TEST_CASE(saved_adapter_has_peft_layout) {
  auto m = make_lora_dense_model<float>(nn::read_llama2c(LORALAB_SHARED_DIR "/models/stories260K.bin"));
  load_adapter(m, data_dir + "/peft_adapter");
  loralab::testing::temp_dir dir;
  save_adapter(m, dir.path, read_adapter_config(data_dir + "/peft_adapter").config, parse_targets("q_proj,v_proj,down_proj"),
               "stories260K");
  const auto ours = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
  const auto theirs = io::safetensors_file::open(data_dir + "/peft_adapter/adapter_model.safetensors");
  BOOST_TEST_REQUIRE(ours.tensors().size() == theirs.tensors().size());
  for (const auto& t : theirs.tensors()) {
    BOOST_TEST_REQUIRE(ours.contains(t.name), t.name);
    BOOST_TEST((ours.at(t.name).to_float() == t.to_float()), t.name);
    BOOST_TEST(ours.at(t.name).shape == t.shape);
  }
  std::ifstream a(dir.path / "adapter_config.json"), b(data_dir + "/peft_adapter/adapter_config.json");
  const auto ja = nlohmann::json::parse(a), jb = nlohmann::json::parse(b);
  for (const auto& [key, value] : ja.items()) BOOST_TEST(jb.contains(key), "PEFT knows the key " << key);
  for (const char* key : {"r", "lora_alpha", "lora_dropout", "peft_type", "task_type", "use_rslora", "bias", "fan_in_fan_out"})
    BOOST_TEST(ja.at(key) == jb.at(key), key);
  BOOST_TEST(ja.at("target_modules").get<std::set<std::string>>() == jb.at("target_modules").get<std::set<std::string>>());
}

BOOST_AUTO_TEST_SUITE_END()

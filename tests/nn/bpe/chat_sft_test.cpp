// SPDX-License-Identifier: MIT
// finetune's chat-template rendering of alpaca records (data::render_chat_record + tokenize unframed) against
// transformers' apply_chat_template over SmolLM2's real template string, split as TRL's SFT does for
// completion-only loss (tests/data/chat_sft_golden.json, written by tests/reference/make_chat_sft_golden.py): the
// prompt and completion text always; the ids and the label mask with SmolLM2's GGUF tokenizer when it is cached.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;
namespace fs = std::filesystem;

namespace {

const nlohmann::json& golden() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(LORALAB_TEST_DATA_DIR "/chat_sft_golden.json"));
  return j;
}

data::record record_of(const nlohmann::json& c) {
  return {c["record"]["instruction"], c["record"]["input"], c["record"]["output"], 1};
}

fs::path smollm2_gguf() {
  const char* cache = std::getenv("LORALAB_CACHE");
  const char* home = std::getenv("HOME");
  const fs::path dir = cache ? fs::path(cache) : fs::path(home ? home : "/") / ".cache/loralab";
  return dir / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(chat_sft)

BOOST_AUTO_TEST_CASE(alpaca_records_render_as_transformers_chat_template) {
  const data::chat_template t = data::detect_chat_template(golden()["template"].get<std::string>());
  BOOST_TEST(t.format == data::chat_format::chatml);
  BOOST_TEST(!t.default_system.empty());  // SmolLM2's "You are a helpful AI assistant named SmolLM…"
  for (const auto& c : golden()["cases"]) {
    const data::rendered_record r = data::render_chat_record(t, record_of(c));
    BOOST_TEST(r.prompt == c["prompt"].get<std::string>());
    BOOST_TEST(r.response == c["completion"].get<std::string>());
  }
}

BOOST_AUTO_TEST_CASE(ids_and_mask_equal_trl_completion_only_loss) {
  if (!fs::exists(smollm2_gguf())) {
    BOOST_TEST_MESSAGE("skipped: " << smollm2_gguf() << " is absent (scripts/get_model.sh smollm2)");
    return;
  }
  const auto tok = nn::load_tokenizer(smollm2_gguf().string(), 49152);
  const data::chat_template t = data::detect_chat_template(golden()["template"].get<std::string>());
  for (const auto& c : golden()["cases"]) {
    const data::example ex = data::tokenize(*tok, data::render_chat_record(t, record_of(c)), false, /*frame=*/false);
    const auto ids = c["input_ids"].get<std::vector<int>>();
    const auto mask = c["completion_mask"].get<std::vector<int>>();
    BOOST_TEST(ex.input_ids == ids, boost::test_tools::per_element());
    std::vector<int> trained(ex.labels.size());
    for (std::size_t i = 0; i < ex.labels.size(); ++i) trained[i] = ex.labels[i] != data::ignore_index;
    BOOST_TEST(trained == mask, boost::test_tools::per_element());
    for (std::size_t i = 0; i < ex.labels.size(); ++i)
      if (trained[i]) BOOST_TEST(ex.labels[i] == ids[i]);
  }
}

BOOST_AUTO_TEST_CASE(text_records_are_refused_naming_the_line) {
  const data::chat_template t = data::detect_chat_template(golden()["template"].get<std::string>());
  data::record r{"", "", "just text", 7};
  try {
    (void)data::render_chat_record(t, r);
    BOOST_ERROR("expected an error");
  } catch (const loralab::error& e) {
    BOOST_TEST(std::string(e.what()).find("line 7") != std::string::npos);
  }
}

BOOST_AUTO_TEST_SUITE_END()

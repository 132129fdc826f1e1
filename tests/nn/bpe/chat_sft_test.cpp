// SPDX-License-Identifier: MIT
// finetune's chat-template rendering of alpaca records (data::render_chat_record; render_chat_instruction + tokenize,
// unframed) against transformers' apply_chat_template over SmolLM2's real template string, split as TRL's SFT does for
// completion-only loss (tests/data/chat_sft_golden.json, written by tests/reference/make_chat_sft_golden.py): the
// prompt and completion text always; the ids and the label mask with SmolLM2's GGUF tokenizer when it is cached.
// GSM8K question/answer records and multi-turn chat records (messages, every assistant turn trained) against
// tests/data/chat_turns_golden.json (same script): the pieces, and the ids (piece by piece = the whole conversation
// at once) and the trained mask; malformed chat records refused naming file:line and the message.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.hpp"
#include "expect_error.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;
namespace fs = std::filesystem;

namespace {

const nlohmann::json& golden() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(LORALAB_TEST_DATA_DIR "/chat_sft_golden.json"));
  return j;
}

data::record record_of(const nlohmann::json& c) {
  return {c["record"]["instruction"], c["record"]["input"], c["record"]["output"], 1, {}};
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

/// SmolLM2's tokenizer from the cached GGUF, or nullptr with the skip reason printed.
std::unique_ptr<nn::tokenizer> smollm2_tokenizer() {
  if (fs::exists(smollm2_gguf())) return nn::load_tokenizer(smollm2_gguf().string(), 49152);
  BOOST_TEST_MESSAGE("skipped: " << smollm2_gguf() << " is absent (scripts/get_model.sh smollm2)");
  return nullptr;
}

BOOST_AUTO_TEST_CASE(ids_and_mask_equal_trl_completion_only_loss) {
  const auto tok = smollm2_tokenizer();
  if (!tok) return;
  const data::chat_template t = data::detect_chat_template(golden()["template"].get<std::string>());
  for (const auto& c : golden()["cases"]) {
    const data::example ex = data::tokenize(*tok, data::render_chat_instruction(t, record_of(c)), false);
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
  data::record r{"", "", "just text", 7, {}};
  try {
    (void)data::render_chat_record(t, r);
    BOOST_ERROR("expected an error");
  } catch (const loralab::error& e) {
    BOOST_TEST(std::string(e.what()).find("line 7") != std::string::npos);
  }
}

namespace {
const nlohmann::json& turns_golden() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(LORALAB_TEST_DATA_DIR "/chat_turns_golden.json"));
  return j;
}
/// The golden's records as a JSONL file's text, parsed as `format` by the data loader.
std::vector<data::record> parse_golden(const std::vector<nlohmann::json>& records, data::data_format format) {
  std::string text;
  for (const auto& r : records) text += r.dump() + "\n";
  return data::parse_records(text, format, "golden.jsonl");
}
data::rendered_conversation pieces_of(const nlohmann::json& c) {
  data::rendered_conversation out;
  for (const auto& p : c["pieces"]) out.push_back({p["text"].get<std::string>(), p["trained"].get<bool>()});
  return out;
}
}  // namespace

BOOST_AUTO_TEST_CASE(gsm8k_and_chat_records_render_as_transformers_chat_template) {
  const data::chat_template t = data::detect_chat_template(turns_golden()["template"].get<std::string>());
  const auto& g = turns_golden()["gsm8k"];
  const auto q = parse_golden({g["record"]}, data::data_format::gsm8k);
  BOOST_TEST_REQUIRE(q.size() == 1u);
  BOOST_TEST(q[0].instruction == g["record"]["question"].get<std::string>());
  const data::rendered_record r = data::render_chat_record(t, q[0]);
  const auto want = pieces_of(g);
  BOOST_TEST_REQUIRE(want.size() == 2u);
  BOOST_TEST(r.prompt == want[0].text);
  BOOST_TEST(r.response == want[1].text);
  std::vector<nlohmann::json> chats;
  for (const auto& c : turns_golden()["chats"]) chats.push_back(c["record"]);
  const auto records = parse_golden(chats, data::data_format::chat);
  BOOST_TEST_REQUIRE(records.size() == chats.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const data::rendered_conversation got = data::render_chat_turns(t, records[i]), exp = pieces_of(turns_golden()["chats"][i]);
    BOOST_TEST_REQUIRE(got.size() == exp.size(), "conversation " << i);
    for (std::size_t k = 0; k < got.size(); ++k) {
      BOOST_TEST(got[k].text == exp[k].text, "conversation " << i << " piece " << k);
      BOOST_TEST(got[k].trained == exp[k].trained, "conversation " << i << " piece " << k);
    }
  }
}

BOOST_AUTO_TEST_CASE(chat_record_ids_and_mask_train_every_assistant_turn) {
  const auto tok = smollm2_tokenizer();
  if (!tok) return;
  const data::chat_template t = data::detect_chat_template(turns_golden()["template"].get<std::string>());
  std::vector<nlohmann::json> chats;
  for (const auto& c : turns_golden()["chats"]) chats.push_back(c["record"]);
  const auto records = parse_golden(chats, data::data_format::chat);
  const auto examples = data::tokenize_records(records, *tok, data::prompt_template::alpaca, false, t);
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& c = turns_golden()["chats"][i];
    const auto ids = c["input_ids"].get<std::vector<int>>();
    const auto mask = c["trained_mask"].get<std::vector<int>>();
    BOOST_TEST(examples[i].input_ids == ids, boost::test_tools::per_element());
    std::vector<int> trained(examples[i].labels.size());
    for (std::size_t k = 0; k < trained.size(); ++k) trained[k] = examples[i].labels[k] != data::ignore_index;
    BOOST_TEST(trained == mask, boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(malformed_chat_records_are_refused_naming_the_line) {
  using loralab::testing::expect_error;
  const auto parse = [](const std::string& text) { return data::parse_records(text, data::data_format::chat, "c.jsonl"); };
  expect_error([&] { parse("{\"messages\": []}\n"); }, {"c.jsonl:1", "'messages' is empty"});
  expect_error([&] { parse("\n{\"text\": \"hi\"}\n"); }, {"c.jsonl:2", "'messages' is missing"});
  expect_error([&] { parse("{\"messages\": {\"role\": \"user\"}}\n"); }, {"c.jsonl:1", "must be an array"});
  expect_error([&] { parse("{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n"); }, {"c.jsonl:1", "messages[0].content", "must be a string"});
  expect_error([&] { parse("{\"messages\": [{\"content\": \"x\"}]}\n"); }, {"messages[0].role is missing"});
  const data::chat_template t = data::detect_chat_template(turns_golden()["template"].get<std::string>());
  const auto user_only = parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
  expect_error([&] { (void)data::render_chat_turns(t, user_only[0]); }, {"line 1", "no assistant message"});
  const auto bad_role = parse("{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n");
  expect_error([&] { (void)data::render_chat_turns(t, bad_role[0]); }, {"messages[0].role is 'tool'"});
  // a chat record under an instruction template (no chat template) is refused, not flattened
  expect_error([&] { (void)data::render(data::prompt_template::alpaca, bad_role[0]); }, {"line 1", "chat record"});
  expect_error([&] { parse_golden({turns_golden()["gsm8k"]["record"]}, data::data_format::alpaca); }, {"'instruction' is missing"});
}

BOOST_AUTO_TEST_SUITE_END()

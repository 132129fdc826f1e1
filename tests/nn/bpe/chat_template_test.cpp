// SPDX-License-Identifier: MIT
// data/chat_template.hpp against jinja2's renderings of the real templates (tests/data/chat_template_golden.json,
// written by tests/reference/make_bpe_golden.py): SmolLM2's (from its GGUF), plain ChatML, Llama-2, Zephyr.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/chat_template.hpp"
#include "expect_error.hpp"

using namespace loralab::data;

namespace {

const nlohmann::json& golden() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(LORALAB_TEST_DATA_DIR "/chat_template_golden.json"));
  return j;
}

using loralab::testing::expect_error;

}  // namespace

BOOST_AUTO_TEST_SUITE(chat_templates)

BOOST_AUTO_TEST_CASE(detects_each_golden_template) {
  for (const auto& [name, t] : golden()["templates"].items()) {
    const chat_template ct = detect_chat_template(t["source"].get<std::string>());
    BOOST_TEST(std::string(chat_format_name(ct.format)) == t["format"].get<std::string>(), name);
    BOOST_TEST(parse_chat_format(t["format"].get<std::string>()) == ct.format);
  }
}

BOOST_AUTO_TEST_CASE(smollm2_default_system_prompt_is_the_templates) {
  const auto ct = detect_chat_template(golden()["templates"]["smollm2"]["source"].get<std::string>());
  BOOST_TEST(ct.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  BOOST_TEST(detect_chat_template(golden()["templates"]["chatml"]["source"].get<std::string>()).default_system == "");
  // An escaped newline in the Jinja literal counts too (Qwen2.5 writes its default this way in some exports).
  BOOST_TEST(detect_chat_template(R"({{ '<|im_start|>system\nBe brief.<|im_end|>\n' }})").default_system == "Be brief.");
}

BOOST_AUTO_TEST_CASE(renders_like_jinja2) {
  int n = 0;
  for (const auto& c : golden()["cases"]) {
    const auto& t = golden()["templates"][c["template"].get<std::string>()];
    const chat_template ct = detect_chat_template(t["source"].get<std::string>(), golden()["bos_token"].get<std::string>(),
                                                  golden()["eos_token"].get<std::string>());
    std::vector<chat_message> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    const std::string got = render_chat(ct, msgs, c["add_generation_prompt"].get<bool>());
    BOOST_TEST(got == c["rendered"].get<std::string>(), c["template"] << " case " << n);
    ++n;
  }
  BOOST_TEST(n == 32);
}

BOOST_AUTO_TEST_CASE(empty_conversation) {
  const auto smol = detect_chat_template(golden()["templates"]["smollm2"]["source"].get<std::string>());
  BOOST_TEST(render_chat(smol, {}, false) == "");  // the template inserts its system turn inside the message loop
  BOOST_TEST(render_chat(smol, {}, true) == "<|im_start|>assistant\n");
}

BOOST_AUTO_TEST_CASE(errors_name_the_template_and_message) {
  expect_error([] { detect_chat_template("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}{% endfor %}"); },
               {"unknown chat template", "### {{ m['role'] }}"});
  expect_error([] { parse_chat_format("vicuna"); }, {"vicuna", "chatml, llama2, zephyr"});
  const auto llama2 = detect_chat_template(golden()["templates"]["llama2"]["source"].get<std::string>());
  const std::vector<chat_message> twice = {{"user", "a"}, {"user", "b"}};
  expect_error([&] { render_chat(llama2, twice, false); }, {"llama2", "message 1", "'user'", "'assistant'"});
  const auto zephyr = detect_chat_template(golden()["templates"]["zephyr"]["source"].get<std::string>());
  const std::vector<chat_message> tool = {{"tool", "x"}};
  expect_error([&] { render_chat(zephyr, tool, false); }, {"zephyr", "message 0", "'tool'"});
}

BOOST_AUTO_TEST_SUITE_END()

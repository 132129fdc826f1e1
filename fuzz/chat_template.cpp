// SPDX-License-Identifier: MIT
// Fuzz target: a model's Jinja chat template (tokenizer_config.json / GGUF tokenizer.chat_template) through
// data::detect_chat_template, then a conversation rendered with what was detected.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "data/chat_template.hpp"
#include "data/prompt_template.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const std::string_view jinja(reinterpret_cast<const char*>(data), size);
  fuzz::expect_refusal_or_success([&] {
    const data::chat_template t = data::detect_chat_template(jinja, "<s>", "</s>");
    const std::array<data::chat_message, 3> messages = {{{"system", " Be brief. "}, {"user", "Hi"}, {"assistant", "Hello"}}};
    (void)data::render_chat(t, messages, true);
    (void)data::render_chat(t, std::span(messages).subspan(1), false);
    data::record r;
    r.instruction = "Name a colour.";
    r.output = "Blue.";
    (void)data::render_chat_record(t, r);
  });
  return 0;
}

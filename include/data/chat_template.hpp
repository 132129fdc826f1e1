// SPDX-License-Identifier: MIT
#pragma once
// Chat templates: a conversation (role, content messages) as the one string a chat model was trained on. There is
// no Jinja interpreter: like llama.cpp's llm_chat_detect_template, the format is recognised in the model's Jinja
// template (GGUF tokenizer.chat_template, tokenizer_config.json chat_template) by substrings, then rendered by
// hand. The output equals transformers' apply_chat_template over the original templates (tests/reference/
// make_bpe_golden.py renders them with jinja2):
//
//   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per message; add_generation_prompt: "<|im_start|>assistant\n".
//           Detected by "<|im_start|>". When the template writes a literal system turn ("<|im_start|>system\n" +
//           text up to "<|im_end|>", as SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging
//           Face" and Qwen2.5's), that turn comes first in a non-empty conversation that does not open with a
//           system message.
//   llama2  Llama-2-chat: "<s>[INST] {user} [/INST] {assistant} </s>" per exchange, contents stripped of leading and
//           trailing whitespace, a leading system message folded into the first user turn as
//           "<<SYS>>\n{system}\n<</SYS>>\n\n"; roles must alternate user/assistant. No generation prompt (the
//           template has none: the prompt already ends in "[/INST]"). Detected by "[INST]".
//   zephyr  "<|{role}|>\n{content}</s>\n" for system/user/assistant; add_generation_prompt: "<|assistant|>\n" after a
//           non-empty conversation. Detected by "<|user|>" with "<|assistant|>" (and no "<|end|>", Phi-3's).
// Whitespace stripping (llama2) removes ASCII whitespace; Python's str.strip() also strips Unicode spaces.
#include <cstddef>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "core/check.hpp"

namespace loralab::data {

/// One turn of a conversation: role "system", "user" or "assistant" (chatml passes any role through).
struct chat_message {
  std::string role, content;
  friend bool operator==(const chat_message&, const chat_message&) = default;
};

enum class chat_format { chatml, llama2, zephyr };

inline std::string_view chat_format_name(chat_format f) {
  switch (f) {
    case chat_format::chatml: return "chatml";
    case chat_format::llama2: return "llama2";
    case chat_format::zephyr: return "zephyr";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, chat_format f) { return os << chat_format_name(f); }

/// "chatml", "llama2" or "zephyr"; throws naming the value and the choices.
inline chat_format parse_chat_format(std::string_view name) {
  for (const auto f : {chat_format::chatml, chat_format::llama2, chat_format::zephyr})
    if (chat_format_name(f) == name) return f;
  fail("unknown chat format '", name, "' (chatml, llama2, zephyr)");
}

/// A recognised template: its format and what the format needs besides the messages.
struct chat_template {
  chat_format format = chat_format::chatml;
  std::string default_system;  ///< chatml: system turn for conversations without one ("" = none)
  std::string bos_token = "<s>", eos_token = "</s>";  ///< llama2, zephyr
};

namespace detail {

/// The literal default system prompt of a ChatML template, or "" (see the header comment).
inline std::string chatml_default_system(std::string_view jinja) {
  constexpr std::string_view open = "<|im_start|>system", close = "<|im_end|>";
  const auto at = jinja.find(open);
  if (at == std::string_view::npos) return {};
  std::string_view rest = jinja.substr(at + open.size());
  if (rest.starts_with("\n")) rest.remove_prefix(1);
  else if (rest.starts_with("\\n")) rest.remove_prefix(2);
  else return {};
  const auto end = rest.find(close);
  if (end == std::string_view::npos) return {};
  const std::string_view text = rest.substr(0, end);
  if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) return {};  // not a literal
  std::string out;  // Jinja string escapes
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      const char c = text[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += text[i];
    }
  }
  return out;
}

inline std::string_view strip_ascii(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace detail

/// Recognises `jinja` (see the header comment). Throws loralab::error quoting the start of the template when no
/// rule matches. `bos_token` / `eos_token` are the model's (llama2 and zephyr write them as text).
inline chat_template detect_chat_template(std::string_view jinja, std::string bos_token = "<s>",
                                          std::string eos_token = "</s>") {
  const auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  chat_template t;
  t.bos_token = std::move(bos_token);
  t.eos_token = std::move(eos_token);
  if (has("<|im_start|>")) {
    t.format = chat_format::chatml;
    t.default_system = detail::chatml_default_system(jinja);
  } else if (has("[INST]")) {
    t.format = chat_format::llama2;
  } else if (has("<|user|>") && has("<|assistant|>") && !has("<|end|>")) {
    t.format = chat_format::zephyr;
  } else {
    fail("unknown chat template (not ChatML, Llama-2 [INST] or Zephyr; pick one with parse_chat_format): '",
         jinja.substr(0, 200), jinja.size() > 200 ? "…" : "", "'");
  }
  return t;
}

/// The conversation as the template's text; add_generation_prompt appends the assistant's opening (see above).
/// Throws loralab::error naming the message index and role when the format cannot express the conversation.
inline std::string render_chat(const chat_template& t, std::span<const chat_message> messages,
                               bool add_generation_prompt) {
  std::string out;
  switch (t.format) {
    case chat_format::chatml:
      if (!messages.empty() && messages[0].role != "system" && !t.default_system.empty())
        out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case chat_format::llama2: {
      const bool has_system = !messages.empty() && messages[0].role == "system";
      for (std::size_t i = has_system ? 1 : 0, turn = 0; i < messages.size(); ++i, ++turn) {
        const auto& m = messages[i];
        const char* want = turn % 2 == 0 ? "user" : "assistant";
        LORALAB_CHECK(m.role == want, "llama2 chat template: message ", i, " has role '", m.role, "' where '", want,
                      "' is due; roles must alternate user/assistant after an optional first system message");
        if (turn % 2 == 0) {
          const std::string content =
              turn == 0 && has_system ? "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + m.content : m.content;
          out += t.bos_token + "[INST] " + std::string(detail::strip_ascii(content)) + " [/INST]";
        } else {
          out += " " + std::string(detail::strip_ascii(m.content)) + " " + t.eos_token;
        }
      }
      break;
    }
    case chat_format::zephyr:
      for (std::size_t i = 0; i < messages.size(); ++i) {
        const auto& r = messages[i].role;
        LORALAB_CHECK(r == "system" || r == "user" || r == "assistant", "zephyr chat template: message ", i,
                      " has role '", r, "' (system, user or assistant)");
        out += "<|" + r + "|>\n" + messages[i].content + t.eos_token + "\n";
      }
      if (add_generation_prompt && !messages.empty()) out += "<|assistant|>\n";
      break;
  }
  return out;
}

}  // namespace loralab::data

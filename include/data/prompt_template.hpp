// SPDX-License-Identifier: MIT
#pragma once
// Prompt templates: how one training record becomes a (prompt, response) pair of strings. The prompt is what the
// model is given, the response what it learns to write (data/dataset.hpp masks the prompt's labels).
//
//   alpaca  Stanford Alpaca (tatsu-lab/stanford_alpaca train.py, PROMPT_DICT), two variants:
//           with input:    "Below is an instruction that describes a task, paired with an input that provides
//                           further context. Write a response that appropriately completes the request.\n\n"
//                          "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
//           without input: "Below is an instruction that describes a task. Write a response that appropriately
//                           completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
//           response = {output}
//   dolly   databricks/dolly training/consts.py (INTRO_BLURB, "### Instruction:", "Input:", "### Response:",
//           "### End"): prompt = intro "\n\n### Instruction:\n{instruction}\n\n" ["Input:\n{input}\n\n" when the
//           input (dolly's context) is non-empty] "### Response:\n", response = "{output}\n\n### End". The end key
//           is part of the response, so the model learns to write it.
//   chatml  ChatML as TRL's setup_chat_format and SmolLM2/Qwen chat templates write one user turn:
//           prompt = "<|im_start|>user\n{instruction}[\n\n{input}]<|im_end|>\n<|im_start|>assistant\n",
//           response = "{output}<|im_end|>" (the end marker is trained, so the model learns to stop).
//   plain   prompt = "", response = the record's text: `output` for text records; for instruction records the
//           non-empty fields instruction, input, output joined by "\n\n" (everything is trained).
//
// A template is an enum parsed once at the CLI edge (parse_prompt_template); render() is a pure function.
//
// A model's own chat template (data/chat_template.hpp, detected from a GGUF's tokenizer.chat_template) renders an
// instruction record as TRL's SFTTrainer does a prompt-completion conversation with completion-only loss:
// messages = [user: instruction[ "\n\n" input]], [assistant: output]; prompt = the user turn rendered with
// add_generation_prompt, response = the whole conversation rendered, minus that prompt (render_chat_instruction, the
// same split render_chat_turns makes of a chat record; render_chat_record gives it as a prompt and a response). For
// SmolLM2: prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
// "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n", response = "{output}<|im_end|>\n". The template
// writes its own special tokens, so the tokenized example gets no extra BOS/EOS (data/dataset.hpp: a conversation is
// tokenized unframed).
#include <array>
#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/check.hpp"
#include "data/chat_template.hpp"

namespace loralab::data {

/// One training record as the loaders in data/dataset.hpp read it. Instruction formats fill instruction, input
/// (Alpaca's input, Dolly's context; may be empty) and output (Alpaca's output, Dolly's response); text formats
/// (plain text, quotes) leave instruction and input empty and put the document in `output`.
struct record {
  std::string instruction;
  std::string input;
  std::string output;
  std::size_t line = 0;  ///< 1-based line of the file where the record starts (for messages)
  /// A chat record's conversation (format chat: TRL's `messages`); empty for every other format. Rendered by a chat
  /// template only (render_chat_turns), with the loss on every assistant turn.
  std::vector<chat_message> messages = {};  // (= {}: brace-initialized records may leave it out)

  friend bool operator==(const record&, const record&) = default;
};

/// The text a template makes of a record: the model is given `prompt` and learns to write `response`.
struct rendered_record {
  std::string prompt;
  std::string response;

  friend bool operator==(const rendered_record&, const rendered_record&) = default;
};

enum class prompt_template { alpaca, dolly, plain, chatml };

namespace detail {

struct template_row {
  prompt_template value;
  std::string_view name;
};
inline constexpr std::array<template_row, 4> template_table = {{
    {prompt_template::alpaca, "alpaca"},
    {prompt_template::dolly, "dolly"},
    {prompt_template::plain, "plain"},
    {prompt_template::chatml, "chatml"},
}};
constexpr bool template_table_in_enum_order() {
  for (std::size_t i = 0; i < template_table.size(); ++i)
    if (static_cast<std::size_t>(template_table[i].value) != i) return false;
  return true;
}
static_assert(template_table_in_enum_order(),
              "template_table rows must follow the order of enum class prompt_template");

inline constexpr std::string_view alpaca_intro_with_input =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n";
inline constexpr std::string_view alpaca_intro_no_input =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n";
inline constexpr std::string_view dolly_intro =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

}  // namespace detail

inline std::string_view to_string(prompt_template t) {
  return detail::template_table[static_cast<std::size_t>(t)].name;
}

inline std::ostream& operator<<(std::ostream& os, prompt_template t) { return os << to_string(t); }

/// "alpaca" | "dolly" | "plain"; anything else is an error listing the valid names.
inline prompt_template parse_prompt_template(std::string_view s) {
  std::string names;
  for (const auto& row : detail::template_table) {
    if (row.name == s) return row.value;
    names += names.empty() ? "" : ", ";
    names += row.name;
  }
  fail("--template must be one of ", names, "; got '", s, "'");
}

/// The text a template's responses end with, which a generator may stop at ("" when none).
inline std::string_view end_marker(prompt_template t) {
  return t == prompt_template::dolly ? "\n\n### End" : t == prompt_template::chatml ? "<|im_end|>" : "";
}

/// The prompt and response `t` makes of `r` (see the header comment for the exact strings). alpaca and dolly
/// need a non-empty instruction: a text record (quotes, plain text) under them is an error naming its line.
inline rendered_record render(prompt_template t, const record& r) {
  LORALAB_CHECK(r.messages.empty(), "record at line ", r.line, ": a chat record (messages) is rendered by a chat template ",
                "(render_chat_turns: the model's, or --template chatml), not by template ", to_string(t));
  switch (t) {
    case prompt_template::alpaca: {
      LORALAB_CHECK(!r.instruction.empty(), "record at line ", r.line,
                    ": template alpaca needs an instruction, this record has none (use --template plain for text)");
      std::string prompt(r.input.empty() ? detail::alpaca_intro_no_input : detail::alpaca_intro_with_input);
      prompt += "### Instruction:\n" + r.instruction + "\n\n";
      if (!r.input.empty()) prompt += "### Input:\n" + r.input + "\n\n";
      prompt += "### Response:\n";
      return {std::move(prompt), r.output};
    }
    case prompt_template::dolly: {
      LORALAB_CHECK(!r.instruction.empty(), "record at line ", r.line,
                    ": template dolly needs an instruction, this record has none (use --template plain for text)");
      std::string prompt(detail::dolly_intro);
      prompt += "\n\n### Instruction:\n" + r.instruction + "\n\n";
      if (!r.input.empty()) prompt += "Input:\n" + r.input + "\n\n";
      prompt += "### Response:\n";
      return {std::move(prompt), r.output + std::string(end_marker(t))};
    }
    case prompt_template::chatml: {
      LORALAB_CHECK(!r.instruction.empty(), "record at line ", r.line,
                    ": template chatml needs an instruction, this record has none (use --template plain for text)");
      std::string prompt = "<|im_start|>user\n" + r.instruction;
      if (!r.input.empty()) prompt += "\n\n" + r.input;
      prompt += "<|im_end|>\n<|im_start|>assistant\n";
      return {std::move(prompt), r.output + std::string(end_marker(t))};
    }
    case prompt_template::plain: {
      std::string text;
      for (const std::string* field : {&r.instruction, &r.input, &r.output}) {
        if (field->empty()) continue;
        if (!text.empty()) text += "\n\n";
        text += *field;
      }
      return {std::string(), std::move(text)};
    }
  }
  fail("render: unknown prompt_template value ", static_cast<int>(t));
}

/// A conversation as text pieces in order, each trained on or not: what a chat record becomes.
struct rendered_piece {
  std::string text;
  bool trained = false;
  friend bool operator==(const rendered_piece&, const rendered_piece&) = default;
};
using rendered_conversation = std::vector<rendered_piece>;

/// The pieces chat template `t` makes of chat record `r` (its `messages`): TRL's assistant-only loss over a
/// multi-turn conversation. For each assistant message i, prompt_i = render(messages[0, i), generation prompt) and
/// full_i = render(messages[0, i]); the text of prompt_i after full_{i-1} is not trained, the text of full_i after
/// prompt_i (the reply and its end marker, "{content}<|im_end|>\n" in ChatML) is; messages after the last assistant
/// turn are not trained. Errors name the record's line: no assistant message, a role other than system, user or
/// assistant, a template whose renderings do not extend each other (then no split exists).
inline rendered_conversation render_chat_turns(const chat_template& t, const record& r) {
  LORALAB_CHECK(!r.messages.empty(), "record at line ", r.line, ": a chat record needs messages");
  std::size_t assistants = 0;
  for (std::size_t i = 0; i < r.messages.size(); ++i) {
    const std::string& role = r.messages[i].role;
    LORALAB_CHECK(role == "system" || role == "user" || role == "assistant", "record at line ", r.line, ": messages[", i,
                  "].role is '", role, "' (known: system, user, assistant)");
    assistants += role == "assistant";
  }
  LORALAB_CHECK(assistants > 0, "record at line ", r.line, ": no assistant message, nothing to train on");
  rendered_conversation out;
  std::string done;  // the text rendered so far
  const auto extend = [&](std::string next, bool trained) {
    LORALAB_CHECK(next.starts_with(done), "record at line ", r.line, ": the ", t.format,
                  " chat template's renderings do not extend each other; cannot split the conversation into turns");
    if (next.size() > done.size()) out.push_back({next.substr(done.size()), trained});
    done = std::move(next);
  };
  const std::span<const chat_message> all(r.messages);
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].role != "assistant") continue;
    extend(render_chat(t, all.first(i), /*add_generation_prompt=*/true), false);
    extend(render_chat(t, all.first(i + 1), /*add_generation_prompt=*/false), true);
  }
  extend(render_chat(t, all, /*add_generation_prompt=*/false), false);
  return out;
}

/// The conversation a model's chat template makes of instruction record `r` (see the header comment): TRL's
/// prompt-completion pair, [user: instruction[ "\n\n" input]], [assistant: output], rendered by render_chat_turns,
/// so that instruction and chat records share one way of rendering and splitting. A text record (no instruction)
/// is an error naming its line; so is a template whose renderings do not extend each other.
inline rendered_conversation render_chat_instruction(const chat_template& t, const record& r) {
  LORALAB_CHECK(!r.instruction.empty(), "record at line ", r.line, ": the model's ", t.format,
                " chat template needs an instruction, this record has none (use --template plain for text)");
  record chat;
  chat.line = r.line;
  chat.messages = {{"user", r.input.empty() ? r.instruction : r.instruction + "\n\n" + r.input}, {"assistant", r.output}};
  return render_chat_turns(t, chat);
}

/// render_chat_instruction as one (prompt, response) pair: the pieces before the reply are the prompt (the user turn
/// with the generation prompt), the trained piece is the response. The conversation ends with its one assistant
/// turn, so no untrained piece follows it.
inline rendered_record render_chat_record(const chat_template& t, const record& r) {
  rendered_record out;
  for (rendered_piece& p : render_chat_instruction(t, r)) (p.trained ? out.response : out.prompt) += std::move(p.text);
  return out;
}

}  // namespace loralab::data

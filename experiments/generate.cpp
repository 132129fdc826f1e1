// SPDX-License-Identifier: MIT
/// \file generate.cpp
/// \brief Text from a Llama model (llama2.c checkpoint, HF or Meta directory, GGUF file) with a KV cache, greedy or sampled.
///
///   build/experiments/generate --model ~/.cache/loralab/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France is"
///   build/experiments/generate --model ~/.cache/loralab/SmolLM2-135M-Instruct.Q4_1.gguf --chat "Name three fruits."
///   build/experiments/generate --model stories260K.bin --tokenizer tok512.model --prompt "Once upon a time"
///   build/experiments/generate --model DIR --tokenizer tok.model --quant nf4 --double-quant --temperature 0.8 --top-p 0.9
///   build/experiments/generate --model stories260K.bin --tokenizer tok512.model --quant nf4 --double-quant
///       --adapter results/qlora --template alpaca --prompt "Tell me a story about a cat."   (one command)
///
/// --adapter DIR applies a PEFT LoRA adapter (loralab's or PEFT's) unmerged over the base as --quant builds it.
/// --template wraps each prompt as finetune's template of that name renders an instruction (--input fills the
/// template's input field), so an instruction adapter answers as it was trained; generation stops at the
/// template's end marker (dolly's "### End", ChatML's <|im_end|>), which is not printed.
/// The text streams to stdout as it is produced (run.c's output format: prompt pieces, new pieces, a newline);
/// tokens/s goes to stderr at the end. An empty prompt starts from BOS alone. --interactive reads one prompt per
/// line from the terminal until EOF or /quit. Runtime: stories260K generates ~1000 tokens/s on 2 cores.
/// A GGUF --model carries its own tokenizer (used when --tokenizer is not given) and chat template: --chat MESSAGE
/// (with --system TEXT) renders the conversation with it (data/chat_template.hpp: ChatML, Llama-2, Zephyr) and stops
/// at EOS or the turn's end marker (ChatML's <|im_end|>), which is not printed. BOS is prepended as the tokenizer's
/// file asks (GGUF tokenizer.ggml.add_bos_token; always for sentencepiece and llama2.c tokenizers).
#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "data/chat_template.hpp"
#include "data/prompt_template.hpp"
#include "model_cli.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;

namespace {
/// run.c's safe_printf: a piece that is a single non-printable byte (other than whitespace) is not printed.
bool printable(const std::string& piece) {
  return !(piece.size() == 1 && !std::isprint(static_cast<unsigned char>(piece[0])) && !std::isspace(static_cast<unsigned char>(piece[0])));
}
void print_piece(const std::string& piece) {
  if (!printable(piece)) return;
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

/// Prints pieces as they come, holding back any tail that could be the start of the template's end marker, so
/// the marker itself is never printed.
struct marker_printer {
  std::string marker, pending;
  bool seen = false;
  void add(const std::string& piece) {
    if (seen || !printable(piece)) return;
    if (marker.empty()) return print_piece(piece);
    pending += piece;
    if (const auto at = pending.find(marker); at != std::string::npos) {
      seen = true;
      std::fwrite(pending.data(), 1, at, stdout);
      pending.clear();
      return;
    }
    std::size_t keep = std::min(pending.size(), marker.size() - 1);  // longest tail that is a prefix of the marker
    while (keep > 0 && marker.compare(0, keep, pending, pending.size() - keep, keep) != 0) --keep;
    std::fwrite(pending.data(), 1, pending.size() - keep, stdout);
    std::fflush(stdout);
    pending.erase(0, pending.size() - keep);
  }
  void finish() {
    if (!seen) std::fwrite(pending.data(), 1, pending.size(), stdout);
    pending.clear();
  }
};

/// How a prompt becomes text: an instruction template, a chat template (--chat), or the text as it is.
struct prompt_format {
  std::optional<data::prompt_template> tmpl;
  std::optional<data::chat_template> chat;
  std::string system, input;
  bool add_bos = true;
  std::string render(const std::string& user_text) const {
    if (tmpl) return data::render(*tmpl, data::record{user_text, input, "", 0, {}}).prompt;
    if (!chat) return user_text;
    std::vector<data::chat_message> msgs;
    if (!system.empty()) msgs.push_back({"system", system});
    msgs.push_back({"user", user_text});
    return data::render_chat(*chat, msgs, /*add_generation_prompt=*/true);
  }
  std::string end_marker() const {
    if (tmpl) return std::string(data::end_marker(*tmpl));
    if (chat) return chat->format == data::chat_format::chatml ? "<|im_end|>" : chat->eos_token;
    return "";
  }
};

template <class Model>
void run_once(Model& m, const nn::tokenizer& tok, const std::string& user_text, const prompt_format& pf,
              nn::generation_options o, bool print_ids) {
  const std::string prompt = pf.render(user_text);
  const std::vector<int> ids = tok.encode(prompt, pf.add_bos);
  LORALAB_CHECK(!ids.empty(), "generate: the prompt is empty and the tokenizer has no BOS to start from");
  int prev = ids.front();
  if (!pf.add_bos && !pf.chat) print_piece(tok.decode_piece(prev, prev));  // no BOS: the first token is text
  for (std::size_t i = 1; i < ids.size(); ++i) print_piece(tok.decode_piece(prev, ids[i])), prev = ids[i];
  marker_printer printer;
  printer.marker = pf.end_marker();
  if (!printer.marker.empty()) o.stop_when = [&](const std::vector<int>&) { return printer.seen; };
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = nn::generate(m, ids, o, [&](int id) { printer.add(tok.decode_piece(prev, id)), prev = id; });
  printer.finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fputs("\n", stdout);
  if (print_ids) {
    std::string line;
    for (int id : out) {
      if (!line.empty()) line += ' ';
      line += std::to_string(id);
    }
    fmt::print("{}\n", line);
  }
  std::fflush(stdout);
  fmt::print(stderr, "achieved tok/s: {:.1f} ({} new tokens in {:.3f} s)\n", double(out.size()) / s, out.size(), s);
}
}  // namespace

int main(int argc, char** argv) try {
  std::string model_path, tokenizer_path, prompt, quant = "none", adapter, tmpl_name, input, chat, system;
  bool dq = false, print_ids = false, interactive = false;
  nn::generation_options o;
  experiment::command_line cli("generate: text from a Llama model");
  cli.allow_device();
  auto& desc = cli.desc;
  desc.add_options()("model", experiment::po::value(&model_path)->required(), "llama2.c .bin, HF or Meta directory, or GGUF file")(
      "tokenizer", experiment::po::value(&tokenizer_path), "sentencepiece .model, llama2.c tokenizer.bin, tokenizer.json or GGUF (default: a GGUF --model's own)")(
      "chat", experiment::po::value(&chat), "one user message, rendered with the GGUF's chat template (tokenizer.chat_template)")(
      "system", experiment::po::value(&system)->default_value(""), "--chat: a system message (default: the template's own, if any)")(
      "prompt", experiment::po::value(&prompt)->default_value(""), "text to continue (empty: start from BOS)")(
      "max-new-tokens", experiment::po::value(&o.max_new_tokens)->default_value(256), "tokens to generate at most")(
      "temperature", experiment::po::value(&o.sampling.temperature)->default_value(0.0f), "0 = greedy")(
      "top-k", experiment::po::value(&o.sampling.top_k)->default_value(0), "sample among the k most likely (0 = all)")(
      "top-p", experiment::po::value(&o.sampling.top_p)->default_value(1.0f), "nucleus sampling threshold (1 = off)")(
      "repetition-penalty", experiment::po::value(&o.sampling.repetition_penalty)->default_value(1.0f), "1 = off")(
      "quant", experiment::po::value(&quant)->default_value(quant), "base weights: none (float32), bf16, nf4, fp4, int8, or ggml's q4_0, q4_1, q8_0 (a GGUF's own blocks when it stored them so)")(
      "double-quant", experiment::po::bool_switch(&dq), "double-quantize the 4-bit absmax")(
      "adapter", experiment::po::value(&adapter), "PEFT LoRA adapter directory, applied unmerged")(
      "template", experiment::po::value(&tmpl_name), "wrap the prompt as an instruction: alpaca, dolly, chatml or plain")(
      "input", experiment::po::value(&input)->default_value(""), "the template's input field (alpaca/dolly/chatml)")(
      "print-ids", experiment::po::bool_switch(&print_ids), "also print the generated token ids on one line")(
      "interactive", experiment::po::bool_switch(&interactive), "read prompts from the terminal, one per line");
  if (auto code = cli.parse(argc, argv)) return *code;
  LORALAB_CHECK(o.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ", o.max_new_tokens);
  o.sampling.validate();
  o.seed = cli.seed;
  prompt_format pf;
  if (!tmpl_name.empty()) pf.tmpl = data::parse_prompt_template(tmpl_name);
  pf.input = input, pf.system = system;
  LORALAB_CHECK(input.empty() || pf.tmpl, "--input needs --template");
  LORALAB_CHECK(chat.empty() || !pf.tmpl, "--chat and --template are two ways to wrap a prompt: choose one");
  LORALAB_CHECK(system.empty() || !chat.empty(), "--system needs --chat");
  tokenizer_path = experiments::tokenizer_for(tokenizer_path, model_path);

  const nn::model_file file = nn::load_model_file(model_path);
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  if (nn::is_gguf_file(tokenizer_path)) {
    const io::gguf_file g = io::gguf_file::open(tokenizer_path);
    pf.add_bos = g.find_bool("tokenizer.ggml.add_bos_token").value_or(false);
    if (!chat.empty()) {
      const auto jinja = g.find_string("tokenizer.chat_template");
      LORALAB_CHECK(jinja, tokenizer_path, ": --chat needs the key 'tokenizer.chat_template', which this file lacks");
      const auto piece = [&](int id) { return id >= 0 ? tok->piece(id) : std::string(); };
      pf.chat = data::detect_chat_template(*jinja, piece(tok->bos_id()), piece(tok->eos_id()));
    }
  } else {
    LORALAB_CHECK(chat.empty(), "--chat needs a chat template: a GGUF --tokenizer (or --model) carries one; else use --template chatml");
  }
  o.stop_ids = {tok->eos_id(), tok->bos_id()};  // llama2.c models start a new story with BOS
  experiments::with_model_on<experiments::model_and_ggml_schemes>(cli.device, file, quant, dq, adapter, [&](auto& m) {
    std::cerr << "model: " << m.config << "\nbase weights: " << quant << (dq ? " + double quant" : "") << "\n"
              << nn::kv_cache_decoder<typename std::decay_t<decltype(m)>::linear_type>(m).memory() << "\n";
    if (pf.tmpl) std::cerr << "template: " << *pf.tmpl << "\n";
    if (pf.chat) std::cerr << "chat template: " << pf.chat->format << "\n";
    if (!interactive) return run_once(m, *tok, chat.empty() ? prompt : chat, pf, o, print_ids);
    std::string line;
    while (std::fputs("> ", stderr), std::getline(std::cin, line) && line != "/quit")
      run_once(m, *tok, line, pf, o, print_ids);
  });
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "generate: error: {}\n", e.what());
  return 1;
}

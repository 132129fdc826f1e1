// SPDX-License-Identifier: MIT
/// \file generate.cpp
/// \brief Text from a Llama model (llama2.c checkpoint or HF directory) with a KV cache, greedy or sampled.
///
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
#include <chrono>
#include <iostream>
#include <optional>
#include <string>

#include <fmt/core.h>

#include "experiment/cli.hpp"
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

template <class Model>
void run_once(Model& m, const nn::tokenizer& tok, const std::string& user_text, const std::string& input,
              std::optional<data::prompt_template> tmpl, nn::generation_options o, bool print_ids) {
  const std::string prompt = tmpl ? data::render(*tmpl, data::record{user_text, input, "", 0}).prompt : user_text;
  const std::vector<int> ids = tok.encode(prompt, /*add_bos=*/true);
  int prev = ids.front();
  for (std::size_t i = 1; i < ids.size(); ++i) print_piece(tok.decode_piece(prev, ids[i])), prev = ids[i];
  marker_printer printer;
  if (tmpl) printer.marker = std::string(data::end_marker(*tmpl));
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
  std::string model_path, tokenizer_path, prompt, quant = "none", adapter, tmpl_name, input;
  bool dq = false, print_ids = false, interactive = false;
  nn::generation_options o;
  experiment::command_line cli("generate: text from a Llama model");
  auto& desc = cli.desc;
  desc.add_options()("model", experiment::po::value(&model_path)->required(), "llama2.c .bin checkpoint or HF directory")(
      "tokenizer", experiment::po::value(&tokenizer_path)->required(), "sentencepiece .model or llama2.c tokenizer.bin")(
      "prompt", experiment::po::value(&prompt)->default_value(""), "text to continue (empty: start from BOS)")(
      "max-new-tokens", experiment::po::value(&o.max_new_tokens)->default_value(256), "tokens to generate at most")(
      "temperature", experiment::po::value(&o.sampling.temperature)->default_value(0.0f), "0 = greedy")(
      "top-k", experiment::po::value(&o.sampling.top_k)->default_value(0), "sample among the k most likely (0 = all)")(
      "top-p", experiment::po::value(&o.sampling.top_p)->default_value(1.0f), "nucleus sampling threshold (1 = off)")(
      "repetition-penalty", experiment::po::value(&o.sampling.repetition_penalty)->default_value(1.0f), "1 = off")(
      "quant", experiment::po::value(&quant)->default_value(quant), "base weights: none (float32), bf16, nf4, fp4 or int8")(
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
  std::optional<data::prompt_template> tmpl;
  if (!tmpl_name.empty()) tmpl = data::parse_prompt_template(tmpl_name);
  LORALAB_CHECK(input.empty() || tmpl, "--input needs --template");

  const nn::model_file file = nn::load_model_file(model_path);
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  o.stop_ids = {tok->eos_id(), tok->bos_id()};  // llama2.c models start a new story with BOS
  experiments::with_model(file, quant, dq, adapter, [&](auto& m) {
    std::cerr << "model: " << m.config << "\nbase weights: " << quant << (dq ? " + double quant" : "") << "\n"
              << nn::kv_cache_decoder<typename std::decay_t<decltype(m)>::linear_type>(m).memory() << "\n";
    if (tmpl) std::cerr << "template: " << *tmpl << "\n";
    if (!interactive) return run_once(m, *tok, prompt, input, tmpl, o, print_ids);
    std::string line;
    while (std::fputs("> ", stderr), std::getline(std::cin, line) && line != "/quit")
      run_once(m, *tok, line, input, tmpl, o, print_ids);
  });
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "generate: error: {}\n", e.what());
  return 1;
}

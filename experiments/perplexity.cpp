// SPDX-License-Identifier: MIT
/// \file perplexity.cpp
/// \brief Teacher-forced perplexity of a text under a Llama model, float or quantized.
///
///   build/experiments/perplexity --model stories260K.bin --tokenizer tok512.model --text-file story.txt --quant nf4 --double-quant
///
/// The file is read whole, encoded after a BOS, and scored in windows of --context positions (default: the
/// model's context) that overlap by one token. --adapter DIR scores the base with a PEFT LoRA adapter applied
/// unmerged. Prints one line: tokens=N mean_nll=X perplexity=Y. --logits-out FILE.json also writes the first
/// window's ids and logits (tests/reference/check_smollm2_adapter_in_peft.py compares them with PEFT's).
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "experiment/cli.hpp"
#include "model_cli.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;

int main(int argc, char** argv) try {
  std::string model_path, tokenizer_path, text_file, quant = "none", adapter, logits_out;
  bool dq = false;
  int context = 0;
  experiment::command_line cli("perplexity: teacher-forced NLL of a text file");
  cli.allow_device();
  auto& desc = cli.desc;
  desc.add_options()("model", experiment::po::value(&model_path)->required(), "llama2.c .bin, HF or Meta directory, or GGUF file")(
      "tokenizer", experiment::po::value(&tokenizer_path), "sentencepiece .model, llama2.c tokenizer.bin, tokenizer.json or GGUF (default: a GGUF --model's own)")(
      "text-file", experiment::po::value(&text_file)->required(), "UTF-8 text to score")(
      "context", experiment::po::value(&context)->default_value(0), "window length in tokens (0 = the model's context)")(
      "quant", experiment::po::value(&quant)->default_value(quant), "base weights: none (float32), bf16, nf4, fp4 or int8")(
      "double-quant", experiment::po::bool_switch(&dq), "double-quantize the 4-bit absmax")(
      "adapter", experiment::po::value(&adapter), "PEFT LoRA adapter directory, applied unmerged")(
      "logits-out", experiment::po::value(&logits_out), "also write FILE.json: the ids, mean_nll and every position's logits of the "
                                                        "first window (for comparisons with transformers + PEFT)");
  if (auto code = cli.parse(argc, argv)) return *code;
  tokenizer_path = experiments::tokenizer_for(tokenizer_path, model_path);

  const nn::model_file file = nn::load_model_file(model_path);
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  std::ifstream in(text_file, std::ios::binary);
  LORALAB_CHECK(in, text_file, ": cannot open the text file");
  std::stringstream text;
  text << in.rdbuf();
  const std::vector<int> ids = tok->encode(text.str(), /*add_bos=*/true);
  LORALAB_CHECK(ids.size() >= 2, text_file, ": the text has no tokens to score");
  experiments::with_model_on(cli.device, file, quant, dq, adapter, [&](auto& m) {
    std::cerr << "model: " << m.config << "\nbase weights: " << quant << (dq ? " + double quant" : "") << "\n"
              << nn::kv_cache_decoder<typename std::decay_t<decltype(m)>::linear_type>(m).memory() << "\n";
    const auto r = experiments::teacher_forced_nll(m, ids, context == 0 ? m.config.max_seq_len : context);
    fmt::print("tokens={} mean_nll={:.6f} perplexity={:.6f}\n", r.tokens, r.mean_nll, r.perplexity());
    if (logits_out.empty()) return;
    nn::kv_cache_decoder<typename std::decay_t<decltype(m)>::linear_type> dec(m);  // (T, V) of the first window
    const std::size_t n = std::min(ids.size(), std::size_t(context == 0 ? m.config.max_seq_len : context));
    dec.feed(std::span<const int>(ids.data(), n), /*all_logits=*/true);
    const auto& logits = dec.all_logits();
    nlohmann::json j = {{"model", model_path}, {"adapter", adapter}, {"quant", quant}, {"double_quant", dq},
                        {"ids", std::vector<int>(ids.begin(), ids.begin() + std::ptrdiff_t(n))}, {"mean_nll", r.mean_nll}};
    for (Eigen::Index t = 0; t < logits.rows(); ++t) {
      std::vector<float> row(std::size_t(logits.cols()));
      for (Eigen::Index v = 0; v < logits.cols(); ++v) row[std::size_t(v)] = logits(t, v);
      j["logits"].push_back(std::move(row));
    }
    atomic_file f(logits_out);
    f.write(j.dump());
    f.commit();
    std::cerr << "logits of " << n << " positions written to " << logits_out << "\n";
  });
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "perplexity: error: {}\n", e.what());
  return 1;
}

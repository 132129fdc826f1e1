// SPDX-License-Identifier: MIT
/// \file convert.cpp
/// \brief A model file (llama2.c checkpoint, HF or Meta directory, GGUF) to an HF LlamaForCausalLM directory or a GGUF file.
///
///   build/experiments/convert --in stories260K.bin --out stories260K-hf
///   build/experiments/convert --in SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2-hf
///   build/experiments/convert --in stories260K.bin --out stories260K.gguf --gguf-type f16
///
/// Writes config.json and model.safetensors (F32, HF names, wq/wk rows permuted to the rotate-half layout), each
/// atomically. Loading either gives the same logits (tests/nn golden checks). An --out ending in .gguf is written
/// as llama.cpp's convert_hf_to_gguf.py writes it (nn/gguf_model.hpp: its names, attn_q/attn_k rows in its
/// adjacent-pair order; linears and embedding as --gguf-type, norms F32); a GGUF --in passes on its tokenizer and
/// chat template.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;

int main(int argc, char** argv) try {
  std::string in, out, gguf_type = "f32", chat_template_file;
  experiment::command_line cli("convert: model file -> HF directory or GGUF");
  auto& desc = cli.desc;
  desc.add_options()("in", experiment::po::value(&in)->required(), "llama2.c .bin checkpoint (v0, v1, v2), HF or Meta directory, or GGUF file")(
      "out", experiment::po::value(&out)->required(), "output directory (config.json + model.safetensors), or FILE.gguf")(
      "gguf-type", experiment::po::value(&gguf_type)->default_value(gguf_type), ".gguf --out: f32, f16, bf16, q8_0, q4_0 or q4_1")(
      "chat-template", experiment::po::value(&chat_template_file), ".gguf --out: write this Jinja file as tokenizer.chat_template "
                                                                   "(replacing a GGUF --in's)");
  if (auto code = cli.parse(argc, argv)) return *code;
  const nn::model_file m = nn::load_model_file(in);
  LORALAB_CHECK(chat_template_file.empty() || std::filesystem::path(out).extension() == ".gguf",
                "--chat-template needs a .gguf --out (an HF directory keeps its template in tokenizer_config.json)");
  if (std::filesystem::path(out).extension() == ".gguf") {
    nn::gguf_write_options o;
    const std::vector<std::pair<std::string, io::ggml_type>> types = {{"f32", io::ggml_type::F32},   {"f16", io::ggml_type::F16},
                                                                      {"bf16", io::ggml_type::BF16}, {"q8_0", io::ggml_type::Q8_0},
                                                                      {"q4_0", io::ggml_type::Q4_0}, {"q4_1", io::ggml_type::Q4_1}};
    const auto it = std::find_if(types.begin(), types.end(), [&](const auto& t) { return t.first == gguf_type; });
    LORALAB_CHECK(it != types.end(), "--gguf-type '", gguf_type, "': f32, f16, bf16, q8_0, q4_0 or q4_1");
    o.linear_type = o.embed_type = it->second;
    std::optional<nn::bpe_vocab> vocab;
    if (nn::is_gguf_file(in)) {
      const io::gguf_file g = io::gguf_file::open(in);
      if (g.find("tokenizer.ggml.tokens")) vocab = nn::read_gguf_vocab(g), o.vocab = &*vocab;
      o.chat_template = g.find_string("tokenizer.chat_template").value_or("");
      o.name = g.find_string("general.name").value_or("");
    }
    if (!chat_template_file.empty()) {
      std::ifstream t(chat_template_file, std::ios::binary);
      LORALAB_CHECK(t, chat_template_file, ": cannot open the chat template (--chat-template)");
      o.chat_template.assign(std::istreambuf_iterator<char>(t), {});
    }
    nn::write_gguf_model(out, m, o);
  } else {
    nn::write_hf_dir(m, out);
  }
  std::size_t params = 0;
  for (const auto& [name, t] : m.tensors) params += t.data.size();
  std::cout << m.config << "\n";
  fmt::print("wrote {} ({} tensors, {} parameters)\n", out, m.tensors.size(), params);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "convert: error: {}\n", e.what());
  return 1;
}

// SPDX-License-Identifier: MIT
/// \file convert.cpp
/// \brief A llama2.c checkpoint (or an HF directory) to an HF LlamaForCausalLM directory.
///
///   build/experiments/convert --in stories260K.bin --out stories260K-hf
///
/// Writes config.json and model.safetensors (F32, HF names, wq/wk rows permuted to the rotate-half layout), each
/// atomically. Loading either gives the same logits (tests/nn golden checks).
#include <string>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "nn/model_io.hpp"

using namespace loralab;

int main(int argc, char** argv) try {
  std::string in, out;
  experiment::command_line cli("convert: llama2.c checkpoint -> HF directory");
  auto& desc = cli.desc;
  desc.add_options()("in", experiment::po::value(&in)->required(), "llama2.c .bin checkpoint (v0, v1, v2) or HF directory")(
      "out", experiment::po::value(&out)->required(), "output directory (config.json + model.safetensors)");
  if (auto code = cli.parse(argc, argv)) return *code;
  const nn::model_file m = nn::load_model_file(in);
  nn::write_hf_dir(m, out);
  std::size_t params = 0;
  for (const auto& [name, t] : m.tensors) params += t.data.size();
  std::cout << m.config << "\n";
  fmt::print("wrote {} ({} tensors, {} parameters)\n", out, m.tensors.size(), params);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "convert: error: {}\n", e.what());
  return 1;
}

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

#include "common.hpp"
#include "nn/model_io.hpp"

using namespace loralab;

int main(int argc, char** argv) try {
  experiments::common_options common;
  std::string in, out;
  experiments::po::options_description desc("convert: llama2.c checkpoint -> HF directory");
  desc.add_options()("in", experiments::po::value(&in)->required(), "llama2.c .bin checkpoint (v0, v1, v2) or HF directory")(
      "out", experiments::po::value(&out)->required(), "output directory (config.json + model.safetensors)");
  experiments::add_common_options(desc, common);
  experiments::po::variables_map vm;
  if (int code = 0; !experiments::parse_command_line(argc, argv, desc, vm, common, code)) return code;
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

// SPDX-License-Identifier: MIT
#pragma once
// Model files in and out of the neutral model_file form (nn/config.hpp), one header per format:
//   * nn/llama2c_file.hpp: llama2.c checkpoints (v0, v1, v2/Q8_0), and the rotary row permutation between
//     Meta's adjacent-pair and HF's rotate-half layouts;
//   * nn/hf_dir.hpp: Hugging Face LlamaForCausalLM directories (single file or sharded; F32, F16, BF16, or
//     bitsandbytes 4-bit linears), written as transformers' save_pretrained writes them;
//   * nn/meta_dir.hpp: Meta checkpoint directories (params.json + consolidated.NN.pth);
//   * nn/gguf_model.hpp: llama.cpp GGUF files (architecture llama; F32/F16/BF16/Q4_0/Q4_1/Q8_0 tensors).
// load_model_file picks the reader from what the path is.
#include <filesystem>
#include <system_error>

#include "core/check.hpp"
#include "nn/config.hpp"
#include "nn/gguf_model.hpp"
#include "nn/hf_dir.hpp"
#include "nn/llama2c_file.hpp"
#include "nn/meta_dir.hpp"

namespace loralab::nn {

/// A directory is read as a Meta checkpoint when it has params.json and no config.json, else as a Hugging Face
/// model; a file that starts with the GGUF magic as a GGUF model, any other file as a llama2.c checkpoint.
/// `linears` says what a GGUF file's block-stored linears become (gguf_linears::blocks_only: no float copies;
/// build the model with make_linear_from_file); other formats ignore it.
inline model_file load_model_file(const std::filesystem::path& path, gguf_linears linears = gguf_linears::floats_and_blocks) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) fail(path.string(), ": no such file or directory");
  if (!std::filesystem::is_directory(st)) return is_gguf_file(path) ? read_gguf_model(path, linears) : read_llama2c(path);
  return is_meta_dir(path) ? read_meta_dir(path) : read_hf_dir(path);
}

}  // namespace loralab::nn

// SPDX-License-Identifier: MIT
// Fuzz target: a Hugging Face config.json as read_hf_dir reads it: the JSON file, the LlamaConfig fields and
// quantization_config.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "nn/hf_dir.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("config.json", data, size);
  fuzz::expect_refusal_or_success([&] {
    const nlohmann::json j = nn::detail::read_json_file(path);
    const nn::llama_config c = nn::detail::read_hf_config(j, path.string());
    c.validate(path.string());
    (void)nn::detail::read_hf_quant_config(j, path.string());
  });
  return 0;
}

// SPDX-License-Identifier: MIT
// Fuzz target: bitsandbytes 4-bit weights in a safetensors file (quant-state JSON blob, quant_map, absmax, nested
// statistics) through quant::visit_bnb_4bit, as read_hf_dir reads a pre-quantized checkpoint.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_support.hpp"
#include "io/safetensors.hpp"
#include "quant/bnb_serialization.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("model.safetensors", data, size);
  fuzz::expect_refusal_or_success([&] {
    const io::safetensors_file f = io::safetensors_file::open(path);
    for (const std::string& name : quant::bnb_4bit_weights(f)) {
      (void)quant::read_bnb_quant_state(f, name);
      quant::visit_bnb_4bit(f, name, [](const auto& t) {
        std::vector<float> out(t.numel());
        t.template dequantize<float>(out);
      });
    }
  });
  return 0;
}

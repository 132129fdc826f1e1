// SPDX-License-Identifier: MIT
// Fuzz target: a PEFT adapter_config.json through lora::read_adapter_config (peft_type, r, alpha, target_modules,
// rank/alpha patterns, the refused features).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "lora/peft_io.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("adapter/adapter_config.json", data, size);
  fuzz::expect_refusal_or_success([&] { (void)lora::read_adapter_config(path.parent_path()); });
  return 0;
}

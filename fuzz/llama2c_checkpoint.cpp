// SPDX-License-Identifier: MIT
// Fuzz target: a llama2.c checkpoint (legacy v0, v1 fp32, v2 Q8_0) through nn::read_llama2c: header, size check,
// every tensor read and validated. Tensors are read only after the header's sizes match the file's, so what is
// allocated is bounded by the input (libFuzzer's -max_len).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "nn/llama2c_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("model.bin", data, size);
  fuzz::expect_refusal_or_success([&] { (void)nn::read_llama2c(path); });
  return 0;
}

// SPDX-License-Identifier: MIT
// Fuzz target: a safetensors file (header JSON and tensor bytes) through io::safetensors_file, every tensor read.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.hpp"
#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("model.safetensors", data, size);
  fuzz::expect_refusal_or_success([&] {
    const io::safetensors_file f = io::safetensors_file::open(path);
    for (const io::tensor_view& t : f.tensors()) {
      (void)f.at(t.name);
      if (t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16) (void)t.to_float();
      else if (t.type == io::dtype::U8) (void)t.to_vector<std::uint8_t>();
      else if (t.type == io::dtype::I64) (void)t.to_vector<std::int64_t>();
    }
  });
  return 0;
}

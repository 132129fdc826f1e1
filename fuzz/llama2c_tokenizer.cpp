// SPDX-License-Identifier: MIT
// Fuzz target: a llama2.c tokenizer.bin through nn::llama2c_tokenizer, then encode and decode. The file does not
// store its vocabulary size (the model header does), so the input's first 4 bytes are that size (int32, little
// endian: the corpus files start with 512 for tok512.bin) and the rest is the file.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "exercise_tokenizer.hpp"
#include "fuzz_support.hpp"
#include "nn/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  if (size < 4) return 0;
  std::int32_t vocab_size = 0;
  std::memcpy(&vocab_size, data, 4);
  const auto path = fuzz::write_file("tokenizer.bin", data + 4, size - 4);
  fuzz::expect_refusal_or_success([&] {
    const nn::llama2c_tokenizer tok(path, vocab_size);
    fuzz::exercise_tokenizer(tok);
  });
  return 0;
}

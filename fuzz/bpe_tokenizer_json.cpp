// SPDX-License-Identifier: MIT
// Fuzz target: a Hugging Face tokenizer.json (byte-level BPE: model.vocab, model.merges, added_tokens,
// pre_tokenizer) through nn::bpe_tokenizer::from_json, then encode and decode.
#include <cstddef>
#include <cstdint>

#include "exercise_tokenizer.hpp"
#include "fuzz_support.hpp"
#include "nn/bpe_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("tok/tokenizer.json", data, size);
  fuzz::expect_refusal_or_success([&] { fuzz::exercise_tokenizer(nn::bpe_tokenizer::from_json(path)); });
  return 0;
}

// SPDX-License-Identifier: MIT
// Fuzz target: a GGUF file through io::gguf_file (header, metadata, tensor infos, alignment), every tensor as
// floats, then what loralab reads from a GGUF: the llama config and model (nn::read_gguf_model), the byte-level
// BPE tokenizer (tokenizer.ggml.*, then encode and decode) and the chat template.
#include <cstddef>
#include <cstdint>

#include "exercise_tokenizer.hpp"
#include "fuzz_support.hpp"
#include "io/gguf.hpp"
#include "nn/gguf_model.hpp"
#include "nn/gguf_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loralab;
  const auto path = fuzz::write_file("model.gguf", data, size);
  fuzz::expect_refusal_or_success([&] {
    const io::gguf_file f = io::gguf_file::open(path);
    for (const auto& t : f.tensors()) fuzz::expect_refusal_or_success([&] { (void)f.tensor_to_float(t.name); });
    fuzz::expect_refusal_or_success([&] { (void)nn::read_gguf_config(f); });
    fuzz::expect_refusal_or_success([&] { fuzz::exercise_tokenizer(nn::bpe_tokenizer(nn::read_gguf_vocab(f))); });
    (void)f.find_string("tokenizer.chat_template");
  });
  fuzz::expect_refusal_or_success([&] { (void)nn::read_gguf_model(path); });
  return 0;
}

// SPDX-License-Identifier: MIT
// Fuzz target: a GGUF file through io::gguf_file (header, metadata, tensor infos, alignment), every tensor as
// floats, then what loralab reads from a GGUF: the llama config and model (nn::read_gguf_model), the byte-level
// BPE tokenizer (tokenizer.ggml.*, then encode and decode), the chat template, and a llama.cpp LoRA adapter for
// the base of tests/data/gguf_model_golden.gguf (lora::read_gguf_lora: the adapter tensors' names and shapes).
#include <cstddef>
#include <cstdint>

#include "data/chat_template.hpp"
#include "exercise_tokenizer.hpp"
#include "fuzz_support.hpp"
#include "io/gguf.hpp"
#include "lora/gguf_adapter.hpp"
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
    if (const auto jinja = f.find_string("tokenizer.chat_template"))
      fuzz::expect_refusal_or_success([&] { (void)data::detect_chat_template(*jinja); });
  });
  fuzz::expect_refusal_or_success([&] { (void)nn::read_gguf_model(path); });
  fuzz::expect_refusal_or_success([&] {
    nn::llama_config base;  // gguf_model_golden.gguf's, the base of gguf_lora_golden.gguf
    base.dim = 32, base.hidden_dim = 64, base.n_layers = 2, base.n_heads = 4, base.n_kv_heads = 2;
    base.vocab_size = 96, base.max_seq_len = 64, base.rope_theta = 50000.0f;
    (void)lora::read_gguf_lora(path, base);
  });
  return 0;
}

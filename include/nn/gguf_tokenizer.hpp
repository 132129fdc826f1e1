// SPDX-License-Identifier: MIT
#pragma once
// The tokenizer a GGUF file carries (tokenizer.ggml.*) as an nn::bpe_tokenizer: model "gpt2" (byte-level BPE) with
// pre-tokenizer "smollm" or "gpt2" ("default" and an absent key read as gpt2). Any other model or pre-tokenizer
// (llama's SentencePiece "llama", Llama 3's "llama-bpe", Qwen 2's "qwen2", …) is refused naming the key and value.
// tokenizer.ggml.unknown_token_id is not used: as HF's BPE without unk_token and llama.cpp, a byte whose character
// is not a token is dropped (nn/bpe_tokenizer.hpp).
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/check.hpp"
#include "io/gguf.hpp"
#include "nn/bpe_tokenizer.hpp"

namespace loralab::nn {

/// tokenizer.ggml.* of `f` as plain data (see the header comment).
inline bpe_vocab read_gguf_vocab(const io::gguf_file& f) {
  const std::string p = f.path().string();
  const std::string model = f.get_string("tokenizer.ggml.model");
  LORALAB_CHECK(model == "gpt2", p, ": key 'tokenizer.ggml.model' is '", model,
                "'; loralab reads byte-level BPE tokenizers (\"gpt2\") from GGUF files");
  bpe_vocab v;
  v.source = p;
  const std::string pre = f.find_string("tokenizer.ggml.pre").value_or("default");
  if (pre == "smollm") v.pre = bpe_pre_tokenizer::smollm;
  else if (pre == "gpt2" || pre == "default") v.pre = bpe_pre_tokenizer::gpt2;
  else fail(p, ": key 'tokenizer.ggml.pre' is '", pre, "'; loralab knows the pre-tokenizers smollm and gpt2 (default)");
  v.tokens = f.get_string_array("tokenizer.ggml.tokens");
  for (const std::string& m : f.find_string_array("tokenizer.ggml.merges").value_or(std::vector<std::string>{}))
    v.merges.push_back(split_merge(m, p + ": key 'tokenizer.ggml.merges'", v.merges.size()));
  if (const auto types = f.find_int_array("tokenizer.ggml.token_type"))
    for (const std::int64_t t : *types) {
      LORALAB_CHECK(t >= 0 && t <= 6, p, ": key 'tokenizer.ggml.token_type' holds ", t, ", not a llama.cpp token type (0..6)");
      v.types.push_back(token_type(int(t)));
    }
  const auto id = [&](const char* key) { return f.find_uint(key) ? int(std::min<std::uint64_t>(*f.find_uint(key), 1u << 30)) : -1; };
  v.bos_id = id("tokenizer.ggml.bos_token_id");
  v.eos_id = id("tokenizer.ggml.eos_token_id");
  v.add_bos = f.find_bool("tokenizer.ggml.add_bos_token").value_or(false);
  v.add_eos = f.find_bool("tokenizer.ggml.add_eos_token").value_or(false);
  return v;
}

/// The BPE tokenizer of the GGUF file at `path`.
inline std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::filesystem::path& path) {
  return std::make_unique<bpe_tokenizer>(read_gguf_vocab(io::gguf_file::open(path)));
}

/// tokenizer.chat_template of the GGUF file at `path`, if it has one.
inline std::optional<std::string> read_gguf_chat_template(const std::filesystem::path& path) {
  return io::gguf_file::open(path).find_string("tokenizer.chat_template");
}

}  // namespace loralab::nn

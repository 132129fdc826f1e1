// SPDX-License-Identifier: MIT
#pragma once
// The Llama-family model description and the neutral form every model file is read into.
//
// Dimension letters used throughout include/nn/ (declared once, here):
//   B batch, T sequence length, C = dim (hidden_size), H = n_heads, Hkv = n_kv_heads, D = head_dim = C/H,
//   F = hidden_dim (intermediate_size), V = vocab_size.
// Linear layers compute y = x Wᵀ with W stored (out, in) = (N, K) row-major (K-major); quant blocks run along K.
// Rotary embeddings use HF's rotate-half layout: dimension i of a head pairs with i + D/2. llama2.c / Meta
// checkpoints pair adjacent dimensions; their wq/wk rows are permuted on load (permute_rotary_rows).
#include <cstddef>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "core/check.hpp"

namespace loralab::nn {

struct llama_config {
  int dim = 0;                 ///< C, hidden_size
  int hidden_dim = 0;          ///< F, intermediate_size
  int n_layers = 0;            ///< num_hidden_layers
  int n_heads = 0;             ///< H, num_attention_heads
  int n_kv_heads = 0;          ///< Hkv, num_key_value_heads (GQA: H % Hkv == 0)
  int vocab_size = 0;          ///< V
  int max_seq_len = 0;         ///< max_position_embeddings
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_word_embeddings = true;  ///< lm_head shares model.embed_tokens.weight

  int head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
  int kv_dim() const { return head_dim() * n_kv_heads; }

  /// Checks every field; errors name `where` (a file) and the field.
  void validate(const std::string& where) const {
    const auto positive = [&](int v, const char* field) { LORALAB_CHECK(v > 0, where, ": ", field, " must be > 0, got ", v); };
    positive(dim, "dim (hidden_size)");
    positive(hidden_dim, "hidden_dim (intermediate_size)");
    positive(n_layers, "n_layers (num_hidden_layers)");
    positive(n_heads, "n_heads (num_attention_heads)");
    positive(n_kv_heads, "n_kv_heads (num_key_value_heads)");
    positive(vocab_size, "vocab_size");
    positive(max_seq_len, "max_seq_len (max_position_embeddings)");
    LORALAB_CHECK(dim % n_heads == 0, where, ": dim ", dim, " is not a multiple of n_heads ", n_heads);
    LORALAB_CHECK(head_dim() % 2 == 0, where, ": head_dim ", head_dim(), " must be even for rotary embeddings");
    LORALAB_CHECK(n_heads % n_kv_heads == 0, where, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ", n_kv_heads);
    LORALAB_CHECK(rms_norm_eps > 0, where, ": rms_norm_eps must be > 0, got ", rms_norm_eps);
    LORALAB_CHECK(rope_theta > 0, where, ": rope_theta must be > 0, got ", rope_theta);
  }

  friend bool operator==(const llama_config&, const llama_config&) = default;
  friend std::ostream& operator<<(std::ostream& os, const llama_config& c) {
    return os << "llama_config{dim=" << c.dim << " hidden_dim=" << c.hidden_dim << " n_layers=" << c.n_layers
              << " n_heads=" << c.n_heads << " n_kv_heads=" << c.n_kv_heads << " vocab_size=" << c.vocab_size
              << " max_seq_len=" << c.max_seq_len << " rms_norm_eps=" << c.rms_norm_eps
              << " rope_theta=" << c.rope_theta << " tie_word_embeddings=" << c.tie_word_embeddings << "}";
  }
};

/// A float32 tensor: row-major data and its shape.
struct tensor_f32 {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

/// A tensor kept in the block format its file stored it in (GGUF Q4_0 / Q4_1 / Q8_0): (rows, cols), rows row after
/// row, each rows·cols/32 blocks long, wq/wk rows in the rotate-half layout like the floats.
struct stored_blocks {
  std::string type;  ///< the ggml scheme's name: "q4_0", "q4_1" or "q8_0"
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

/// Tensors by HF name (model.embed_tokens.weight, model.layers.3.self_attn.q_proj.weight, …, lm_head.weight when
/// untied), with wq/wk rows in the rotate-half layout. Every loader produces this, every writer consumes it.
struct model_file {
  llama_config config;
  std::map<std::string, tensor_f32> tensors;
  /// How the file stored the linear weights, now dequantized to float: "" (float), or a bitsandbytes 4-bit
  /// scheme: "nf4", "fp4", "+dq" when double-quantized, "-bB" for a block size B other than 64 ("nf4-b128+dq").
  /// GGUF: "q4_0", "q4_1" or "q8_0" when every linear weight was stored in that ggml block format.
  std::string quantization;
  /// Linear weights as the file's blocks, by HF name (nn/gguf_model.hpp: make_linear_from_file wraps them as a
  /// frozen quantized base instead of requantizing the floats). Empty for other formats.
  std::map<std::string, stored_blocks> stored;
  /// The linears in `stored` have no floats in `tensors` (empty data; nn::read_gguf_model with
  /// gguf_linears::blocks_only): a model is built from such a file with nn::make_linear_from_file, which takes the
  /// blocks as they are, or dequantizes one weight at a time for another base.
  bool blocks_only = false;
};

/// The HF names and shapes a config implies, in a fixed order: the contract between files and the model.
inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected_tensors(const llama_config& c) {
  const std::int64_t C = c.dim, F = c.hidden_dim, V = c.vocab_size, KV = c.kv_dim();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out = {{"model.embed_tokens.weight", {V, C}}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {C}});
    out.push_back({p + "self_attn.q_proj.weight", {C, C}});
    out.push_back({p + "self_attn.k_proj.weight", {KV, C}});
    out.push_back({p + "self_attn.v_proj.weight", {KV, C}});
    out.push_back({p + "self_attn.o_proj.weight", {C, C}});
    out.push_back({p + "post_attention_layernorm.weight", {C}});
    out.push_back({p + "mlp.gate_proj.weight", {F, C}});
    out.push_back({p + "mlp.up_proj.weight", {F, C}});
    out.push_back({p + "mlp.down_proj.weight", {C, F}});
  }
  out.push_back({"model.norm.weight", {C}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {V, C}});
  return out;
}

/// Checks that `f` holds exactly the tensors its config implies, with the right shapes and sizes.
inline void validate_model_file(const model_file& f, const std::string& where) {
  f.config.validate(where);
  for (const auto& [name, shape] : expected_tensors(f.config)) {
    const auto it = f.tensors.find(name);
    LORALAB_CHECK(it != f.tensors.end(), where, ": missing tensor '", name, "'");
    LORALAB_CHECK(it->second.shape == shape, where, ": tensor '", name, "' has the wrong shape for the config");
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    if (f.blocks_only && it->second.data.empty() && f.stored.contains(name)) continue;  // blocks only: see model_file
    LORALAB_CHECK(it->second.data.size() == n, where, ": tensor '", name, "' holds ", it->second.data.size(),
                  " values, its shape needs ", n);
  }
  if (f.tensors.size() != expected_tensors(f.config).size())
    for (const auto& [name, t] : f.tensors) {
      bool known = false;
      for (const auto& e : expected_tensors(f.config)) known |= e.first == name;
      LORALAB_CHECK(known, where, ": unexpected tensor '", name, "' (not part of a Llama model with this config)");
    }
}

}  // namespace loralab::nn

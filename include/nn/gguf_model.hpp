// SPDX-License-Identifier: MIT
#pragma once
// llama.cpp GGUF model files (architecture "llama") in and out of the neutral model_file form (nn/config.hpp).
//
// Names: token_embd -> model.embed_tokens, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
// ffn_gate, ffn_up, ffn_down} -> model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
// post_attention_layernorm, mlp.{gate,up,down}_proj}, output_norm -> model.norm, output -> lm_head (absent: tied).
// Every name ends in ".weight". GGUF lists a numpy (rows, cols) weight as ne = [cols, rows].
//
// RoPE layout: llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) moves attn_q / attn_k rows from HF's
// rotate-half order to the adjacent-pair order of llama.cpp's "normal" RoPE: within each head of D rows, new row
// 2i + half <- old row half·D/2 + i (K with n_kv_heads heads). loralab's model is rotate-half (nn/rotary.hpp), so
// the reader moves the rows back (permute_rotary_rows, the same map as Meta/llama2.c checkpoints) and the writer
// moves them forward. The math is then identical; no tensor is ever left in the other layout.
//
// Types: F32, F16, BF16, Q4_0, Q4_1 and Q8_0 tensors are dequantized to float; any other type is refused naming the
// tensor and the type. Linear weights stored as Q4_0 / Q4_1 / Q8_0 are also kept as their bytes (model_file::
// stored, rows moved whole: a block never crosses a row), so make_linear_from_file builds a
// linear<quant_weight<ggml_q4_1>> (etc.) straight from the file's blocks, without requantizing: a frozen base for
// LoRA exactly as llama.cpp holds it.
//
// Refused, naming the file, key or tensor and the value: an architecture other than llama, rope scaling, a rotary
// dimension other than head_dim, missing or unexpected tensors, shapes that disagree with the metadata.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "core/check.hpp"
#include "io/gguf.hpp"
#include "nn/bpe_tokenizer.hpp"
#include "nn/config.hpp"
#include "nn/linear.hpp"
#include "nn/llama.hpp"
#include "nn/llama2c_file.hpp"
#include "quant/ggml_tensor.hpp"
#include "quant/scheme_registry.hpp"

namespace loralab::nn {

/// Whether `path` is a regular file that starts with the GGUF magic.
inline bool is_gguf_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

namespace detail {

/// One model tensor: its GGUF name, HF name and HF shape (rows, cols) or (n).
struct gguf_tensor_name {
  std::string gguf, hf;
  std::vector<std::int64_t> shape;
};

/// The GGUF names of the tensors a config implies, in expected_tensors' order.
inline std::vector<gguf_tensor_name> gguf_tensor_names(const llama_config& c) {
  static const std::vector<std::pair<std::string_view, std::string_view>> block = {
      {"attn_norm", "input_layernorm"},  {"attn_q", "self_attn.q_proj"},          {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},    {"attn_output", "self_attn.o_proj"},     {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},     {"ffn_up", "mlp.up_proj"},               {"ffn_down", "mlp.down_proj"}};
  std::vector<gguf_tensor_name> out;
  for (auto& [hf, shape] : expected_tensors(c)) {
    std::string g;
    if (hf == "model.embed_tokens.weight") g = "token_embd.weight";
    else if (hf == "model.norm.weight") g = "output_norm.weight";
    else if (hf == "lm_head.weight") g = "output.weight";
    else {  // model.layers.N.<rel>.weight
      const std::size_t a = std::string_view("model.layers.").size(), b = hf.find('.', a);
      const std::string rel = hf.substr(b + 1, hf.size() - b - 1 - std::string_view(".weight").size());
      for (const auto& [gg, hh] : block)
        if (hh == rel) g = "blk." + hf.substr(a, b - a) + "." + std::string(gg) + ".weight";
    }
    out.push_back({g, hf, shape});
  }
  return out;
}

/// The heads whose rows RoPE rotates in an HF tensor name: n_heads for q_proj, n_kv_heads for k_proj, else 0.
inline int rotary_heads_of(std::string_view hf, const llama_config& c) {
  if (hf.ends_with("self_attn.q_proj.weight")) return c.n_heads;
  if (hf.ends_with("self_attn.k_proj.weight")) return c.n_kv_heads;
  return 0;
}

/// Rows of `bytes` ((n_heads·D) rows of row_bytes each) moved as permute_rotary_rows moves a float matrix's rows
/// (inverse: as unpermute_rotary_rows). Whole rows move, so it works on any row-wise block format.
inline std::vector<std::byte> permute_rotary_row_bytes(std::span<const std::byte> bytes, std::int64_t rows, int n_heads,
                                                       bool inverse) {
  LORALAB_CHECK(n_heads > 0 && rows % n_heads == 0 && (rows / n_heads) % 2 == 0 && bytes.size() % std::size_t(rows) == 0,
                "permute_rotary_row_bytes: ", rows, " rows, ", n_heads, " heads, ", bytes.size(), " bytes");
  const std::int64_t D = rows / n_heads;
  const std::size_t rb = bytes.size() / std::size_t(rows);
  std::vector<std::byte> out(bytes.size());
  for (std::int64_t h = 0; h < n_heads; ++h)
    for (std::int64_t half = 0; half < 2; ++half)
      for (std::int64_t i = 0; i < D / 2; ++i) {
        const std::int64_t hf = h * D + half * (D / 2) + i, meta = h * D + 2 * i + half;
        const std::int64_t to = inverse ? meta : hf, from = inverse ? hf : meta;
        std::memcpy(out.data() + std::size_t(to) * rb, bytes.data() + std::size_t(from) * rb, rb);
      }
  return out;
}

template <class S>
std::vector<float> dequantize_gguf_blocks(std::span<const std::byte> bytes, std::size_t rows, std::size_t cols) {
  const auto q = quant::ggml_tensor<S>::from_bytes(bytes, rows, cols);
  std::vector<float> out(rows * cols);
  q.template dequantize<float>(out);
  return out;
}

/// The ggml scheme name ("q4_1") of a block type loralab keeps as it is, or "" for any other type.
inline std::string_view block_scheme_name(io::ggml_type t) {
  switch (t) {
    case io::ggml_type::Q4_0: return quant::ggml_q4_0::quant_type;
    case io::ggml_type::Q4_1: return quant::ggml_q4_1::quant_type;
    case io::ggml_type::Q8_0: return quant::ggml_q8_0::quant_type;
    default: return {};
  }
}

}  // namespace detail

/// A tensor of `f` as floats, (rows, cols) row-major for a 2-d tensor: F32, F16, BF16, Q4_0, Q4_1, Q8_0.
inline std::vector<float> gguf_tensor_to_float(const io::gguf_file& f, const io::gguf_tensor_info& t) {
  const std::size_t cols = std::size_t(t.dims[0]);
  std::size_t rows = 1;
  for (std::size_t i = 1; i < t.dims.size(); ++i) rows *= std::size_t(t.dims[i]);
  switch (t.type) {
    case io::ggml_type::F32:
    case io::ggml_type::F16:
    case io::ggml_type::BF16: return f.tensor_to_float(t.name);
    case io::ggml_type::Q4_0: return detail::dequantize_gguf_blocks<quant::ggml_q4_0>(f.tensor_bytes(t), rows, cols);
    case io::ggml_type::Q4_1: return detail::dequantize_gguf_blocks<quant::ggml_q4_1>(f.tensor_bytes(t), rows, cols);
    case io::ggml_type::Q8_0: return detail::dequantize_gguf_blocks<quant::ggml_q8_0>(f.tensor_bytes(t), rows, cols);
    default:
      fail(f.path().string(), ": tensor '", t.name, "' is ", io::ggml_type_name(t.type),
           "; loralab reads model tensors of type F32, F16, BF16, Q4_0, Q4_1 and Q8_0");
  }
}

/// The llama_config a GGUF file's metadata describes (see the header comment for what is refused).
inline llama_config read_gguf_config(const io::gguf_file& f) {
  const std::string p = f.path().string();
  const std::string arch = f.get_string("general.architecture");
  LORALAB_CHECK(arch == "llama", p, ": key 'general.architecture' is '", arch,
                "'; loralab reads the llama architecture only (Llama, SmolLM, TinyLlama, …)");
  const auto key = [&](std::string_view k) { return arch + "." + std::string(k); };
  const auto as_int = [&](std::string_view k) {
    const std::uint64_t v = f.get_uint(key(k));
    LORALAB_CHECK(v > 0 && v <= 1u << 30, p, ": key '", key(k), "' is ", v, ", outside [1, 2^30]");
    return int(v);
  };
  llama_config c;
  c.n_layers = as_int("block_count");
  c.dim = as_int("embedding_length");
  c.hidden_dim = as_int("feed_forward_length");
  c.n_heads = as_int("attention.head_count");
  c.n_kv_heads = f.find(key("attention.head_count_kv")) ? as_int("attention.head_count_kv") : c.n_heads;
  c.max_seq_len = as_int("context_length");
  c.rope_theta = float(f.find_float(key("rope.freq_base")).value_or(10000.0));
  c.rms_norm_eps = float(f.get_float(key("attention.layer_norm_rms_epsilon")));
  if (f.find("tokenizer.ggml.tokens")) {
    c.vocab_size = int(f.get_string_array("tokenizer.ggml.tokens").size());
    for (const char* t : {"token_embd.weight", "output.weight"})  // before any tensor is read
      if (const auto* e = f.find_tensor(t); e && e->dims.size() == 2)
        LORALAB_CHECK(e->dims[1] == c.vocab_size, p, ": key 'tokenizer.ggml.tokens' lists ", c.vocab_size, " tokens but tensor '", t,
                      "' has ", e->dims[1], " rows (dims ", io::detail::dims_string(e->dims), "): the vocabulary and the embedding disagree");
  } else {
    const auto* e = f.find_tensor("token_embd.weight");
    LORALAB_CHECK(e && e->dims.size() == 2, p, ": no tokenizer.ggml.tokens and no 2-d tensor 'token_embd.weight' to take the vocab size from");
    c.vocab_size = int(e->dims[1]);
  }
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.validate(p);
  if (const auto v = f.find_uint(key("vocab_size")))
    LORALAB_CHECK(*v == std::uint64_t(c.vocab_size), p, ": key '", key("vocab_size"), "' is ", *v, " but the vocabulary has ", c.vocab_size, " tokens");
  if (const auto v = f.find_uint(key("rope.dimension_count")))
    LORALAB_CHECK(*v == std::uint64_t(c.head_dim()), p, ": key '", key("rope.dimension_count"), "' is ", *v,
                  "; loralab rotates whole heads (head_dim ", c.head_dim(), ")");
  for (const char* k : {"attention.key_length", "attention.value_length"})
    if (const auto v = f.find_uint(key(k)))
      LORALAB_CHECK(*v == std::uint64_t(c.head_dim()), p, ": key '", key(k), "' is ", *v, "; loralab needs head_dim = embedding_length / head_count = ", c.head_dim());
  for (const char* k : {"rope.scaling.type", "rope.scaling.factor"})
    if (const auto* v = f.find(key(k))) {
      const bool none = (v->type() == io::gguf_value_type::string && f.get_string(key(k)) == "none") ||
                        (v->type() != io::gguf_value_type::string && f.get_float(key(k)) == 1.0);
      LORALAB_CHECK(none, p, ": key '", key(k), "' asks for rope scaling, which loralab does not implement");
    }
  return c;
}

/// What read_gguf_model keeps of the linear weights a file stored as ggml blocks.
enum class gguf_linears {
  floats_and_blocks,  ///< floats in `tensors` (any consumer works) and the blocks in `stored`
  blocks_only,        ///< the blocks alone (model_file::blocks_only): a QLoRA run over the file's own blocks never
                      ///< holds the model in float (SmolLM2: 66 MiB of Q4_1 instead of 66 + 405 MiB)
};

/// Reads a llama GGUF file into a model_file: every tensor as float (Q/K rows in rotate-half order), and the linear
/// weights stored as Q4_0 / Q4_1 / Q8_0 also as their bytes in `stored` (or only so: gguf_linears::blocks_only).
/// `quantization` is the linears' block type ("q4_1") when they all share one, "" otherwise.
inline model_file read_gguf_model(const std::filesystem::path& path, gguf_linears linears = gguf_linears::floats_and_blocks) {
  const io::gguf_file f = io::gguf_file::open(path);
  const std::string p = path.string();
  model_file m;
  m.config = read_gguf_config(f);
  const auto names = detail::gguf_tensor_names(m.config);
  std::string linear_type;
  bool one_type = true;
  for (const auto& n : names) {
    const io::gguf_tensor_info* t = f.find_tensor(n.gguf);
    LORALAB_CHECK(t, p, ": missing tensor '", n.gguf, "' (", n.hf, ")");
    std::vector<std::int64_t> want(n.shape.rbegin(), n.shape.rend());  // GGUF's ne: innermost first
    LORALAB_CHECK(t->dims == want, p, ": tensor '", n.gguf, "' has dims ", io::detail::dims_string(t->dims), ", expected ",
                  io::detail::dims_string(want), " for ", m.config);
    const int heads = detail::rotary_heads_of(n.hf, m.config);
    const bool is_linear = n.shape.size() == 2 && n.hf.starts_with("model.layers.");
    const bool floats = !(is_linear && linears == gguf_linears::blocks_only && !detail::block_scheme_name(t->type).empty());
    tensor_f32 w{n.shape, floats ? gguf_tensor_to_float(f, *t) : std::vector<float>()};
    if (heads && floats) permute_rotary_rows(w, heads);
    if (is_linear) {
      const std::string_view scheme = detail::block_scheme_name(t->type);
      one_type = one_type && (linear_type.empty() || linear_type == (scheme.empty() ? std::string(io::ggml_type_name(t->type)) : std::string(scheme)));
      if (linear_type.empty()) linear_type = scheme.empty() ? std::string(io::ggml_type_name(t->type)) : std::string(scheme);
      if (!scheme.empty()) {
        const auto bytes = f.tensor_bytes(*t);
        auto& s = m.stored[n.hf];
        s.type = std::string(scheme);
        s.shape = n.shape;
        s.bytes = heads ? detail::permute_rotary_row_bytes(bytes, n.shape[0], heads, /*inverse=*/false)
                        : std::vector<std::byte>(bytes.begin(), bytes.end());
      }
    }
    m.tensors.emplace(n.hf, std::move(w));
  }
  for (const auto& t : f.tensors()) {
    const bool known = std::any_of(names.begin(), names.end(), [&](const auto& n) { return n.gguf == t.name; });
    LORALAB_CHECK(known, p, ": unexpected tensor '", t.name, "' (", t.name == "rope_freqs.weight" ? "Llama 3 rope scaling, not implemented" : "not part of a llama model with this config", ")");
  }
  if (one_type && !m.stored.empty() && m.stored.size() == std::size_t(7 * m.config.n_layers)) m.quantization = linear_type;
  m.blocks_only = linears == gguf_linears::blocks_only && !m.stored.empty();
  validate_model_file(m, p);
  return m;
}

/// How write_gguf_model stores tensors. Norms are always F32 (as llama.cpp writes them).
struct gguf_write_options {
  io::ggml_type linear_type = io::ggml_type::F32;  ///< the 7·L linear weights: F32, F16, BF16, Q4_0, Q4_1 or Q8_0
  io::ggml_type embed_type = io::ggml_type::F32;   ///< token_embd (and output when untied): the same choices
  const bpe_vocab* vocab = nullptr;                ///< tokenizer.ggml.* when given (model "gpt2")
  std::string chat_template;                       ///< tokenizer.chat_template when not empty
  std::string name;                                ///< general.name when not empty
};

/// Writes `m` as a llama GGUF v3 file the way llama.cpp's convert_hf_to_gguf.py does: its names, its metadata keys,
/// attn_q / attn_k rows in adjacent-pair order, ne = [cols, rows]. Quantized types use ggml's reference quantizers.
inline void write_gguf_model(const std::filesystem::path& path, const model_file& m, const gguf_write_options& o = {}) {
  validate_model_file(m, path.string());
  const llama_config& c = m.config;
  io::gguf_writer w;
  w.set("general.architecture", io::gguf_value(std::string("llama")));
  if (!o.name.empty()) w.set("general.name", io::gguf_value(o.name));
  const auto u32 = [](int v) { return io::gguf_value(std::uint32_t(v)); };
  w.set("llama.block_count", u32(c.n_layers));
  w.set("llama.context_length", u32(c.max_seq_len));
  w.set("llama.embedding_length", u32(c.dim));
  w.set("llama.feed_forward_length", u32(c.hidden_dim));
  w.set("llama.attention.head_count", u32(c.n_heads));
  w.set("llama.attention.head_count_kv", u32(c.n_kv_heads));
  w.set("llama.rope.freq_base", io::gguf_value(c.rope_theta));
  w.set("llama.attention.layer_norm_rms_epsilon", io::gguf_value(c.rms_norm_eps));
  w.set("llama.vocab_size", u32(c.vocab_size));
  w.set("llama.rope.dimension_count", u32(c.head_dim()));
  if (o.vocab) {
    const bpe_vocab& v = *o.vocab;
    LORALAB_CHECK(int(v.tokens.size()) == c.vocab_size, path.string(), ": the vocab has ", v.tokens.size(), " tokens, the model ", c.vocab_size);
    w.set("tokenizer.ggml.model", io::gguf_value(std::string("gpt2")));
    w.set("tokenizer.ggml.pre", io::gguf_value(std::string(v.pre == bpe_pre_tokenizer::smollm ? "smollm" : "gpt2")));
    w.set("tokenizer.ggml.tokens", io::gguf_value::array(v.tokens));
    std::vector<std::int32_t> types(v.tokens.size(), std::int32_t(token_type::normal));
    for (std::size_t i = 0; i < v.types.size(); ++i) types[i] = std::int32_t(v.types[i]);
    w.set("tokenizer.ggml.token_type", io::gguf_value::array(types));
    std::vector<std::string> merges;
    for (const auto& [a, b] : v.merges) merges.push_back(a + " " + b);
    w.set("tokenizer.ggml.merges", io::gguf_value::array(merges));
    if (v.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", u32(v.bos_id));
    if (v.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", u32(v.eos_id));
    w.set("tokenizer.ggml.add_bos_token", io::gguf_value(v.add_bos));
    w.set("tokenizer.ggml.add_eos_token", io::gguf_value(v.add_eos));
  }
  if (!o.chat_template.empty()) w.set("tokenizer.chat_template", io::gguf_value(o.chat_template));

  std::vector<std::vector<std::byte>> keep;  // the writer keeps views: the bytes live here until write()
  keep.reserve(m.tensors.size());
  for (const auto& n : detail::gguf_tensor_names(c)) {
    tensor_f32 t = m.tensors.at(n.hf);
    if (const int heads = detail::rotary_heads_of(n.hf, c)) unpermute_rotary_rows(t, heads);
    const bool linear = n.shape.size() == 2 && n.hf.starts_with("model.layers.");
    const io::ggml_type type = n.shape.size() == 1 ? io::ggml_type::F32 : linear ? o.linear_type : o.embed_type;
    const std::size_t rows = n.shape.size() == 2 ? std::size_t(n.shape[0]) : 1, cols = std::size_t(n.shape.back());
    std::vector<std::byte> b;
    const auto blocks = [&]<class S>(std::type_identity<S>) {
      const auto q = quant::ggml_tensor<S>::quantize_ref(std::span<const float>(t.data), rows, cols);
      b.assign(q.bytes().begin(), q.bytes().end());
    };
    switch (type) {
      case io::ggml_type::F32: b = detail::float_bytes(t.data, io::dtype::F32); break;
      case io::ggml_type::F16: b = detail::float_bytes(t.data, io::dtype::F16); break;
      case io::ggml_type::BF16: b = detail::float_bytes(t.data, io::dtype::BF16); break;
      case io::ggml_type::Q4_0: blocks(std::type_identity<quant::ggml_q4_0>{}); break;
      case io::ggml_type::Q4_1: blocks(std::type_identity<quant::ggml_q4_1>{}); break;
      case io::ggml_type::Q8_0: blocks(std::type_identity<quant::ggml_q8_0>{}); break;
      default: fail(path.string(), ": write_gguf_model writes F32, F16, BF16, Q4_0, Q4_1 or Q8_0, not ", io::ggml_type_name(type));
    }
    keep.push_back(std::move(b));
    w.add_tensor(n.gguf, type, std::vector<std::int64_t>(n.shape.rbegin(), n.shape.rend()), keep.back());
  }
  w.write(path);
}

/// A stored linear's blocks dequantized to float (rows as stored: rotate-half order), for `name` in messages.
inline std::vector<float> stored_floats(const stored_blocks& s, const std::string& name) {
  LORALAB_CHECK(s.shape.size() == 2, name, ": stored blocks need a 2-D shape");
  // checked here as well as by dispatch_scheme, whose refusal cannot say which tensor it was
  LORALAB_CHECK(quant::ggml_schemes::contains(s.type), name, ": stored blocks of unknown type '", s.type, "' (known: ",
                quant::ggml_schemes::names(), ")");
  const std::size_t rows = std::size_t(s.shape[0]), cols = std::size_t(s.shape[1]);
  std::vector<float> out(rows * cols);
  quant::dispatch_scheme<quant::ggml_schemes>(s.type, [&]<class S>(std::type_identity<S>) {
    quant::ggml_tensor<S>::from_bytes(s.bytes, rows, cols).dequantize(std::span<float>(out));
  });
  return out;
}

/// The linear layer of weight type W for the tensor `name` (model.layers.3.self_attn.q_proj) of `f`: when W is a
/// ggml block scheme the file stored that tensor in (f.stored), its blocks as they are; otherwise make_linear<W, C>
/// over the floats. The maker to hand llama_model::from_file when the model may come from a GGUF file.
template <class W, class C = compute<float>>
linear<W, C> make_linear_from_file(const model_file& f, const std::string& name, const float* data, Eigen::Index n, Eigen::Index k) {
  const auto it = f.stored.find(name + ".weight");
  const bool found = it != f.stored.end();
  if constexpr (requires { typename W::scheme; }) {
    using S = typename W::scheme;
    if constexpr (quant::ggml_block_scheme<S>) {
      if (found && it->second.type == S::quant_type) {
        LORALAB_CHECK(it->second.shape == std::vector<std::int64_t>({std::int64_t(n), std::int64_t(k)}), name, ": stored blocks of shape ",
                      detail::shape_string(it->second.shape), " for a (", n, ", ", k, ") linear");
        auto base = make_quant_linear(quant::ggml_tensor<S>::from_bytes(it->second.bytes, std::size_t(n), std::size_t(k)));
        if constexpr (std::same_as<C, compute<float>>) {
          return base;
        } else {
          linear<W, C> l;
          l.weight = std::move(base.weight);
          return l;
        }
      }
    }
  }
  // blocks_only: read_gguf_model read no floats for a stored weight, so its blocks are the only copy; dequantized
  // here, one weight at a time, so the model is never held in float
  if (f.blocks_only && found) {
    const std::vector<float> w = stored_floats(it->second, name);
    return make_linear<W, C>(w.data(), n, k);
  }
  return make_linear<W, C>(data, n, k);
}

/// A model whose 7·L linears are ggml blocks of Scheme: the file's own blocks where it stored them in Scheme,
/// quantized from the floats otherwise; embeddings, norms and an untied head are float.
template <class Scheme>
llama_model<linear<quant_weight<Scheme>>> make_stored_quant_model(const model_file& f) {
  return llama_model<linear<quant_weight<Scheme>>>::from_file(f, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
    return make_linear_from_file<quant_weight<Scheme>>(f, name, d, n, k);
  });
}

}  // namespace loralab::nn

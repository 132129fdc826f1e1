// SPDX-License-Identifier: MIT
#pragma once
// Meta's Llama checkpoint directories (facebookresearch/llama, and what the alpaca-lora lab's manual merge,
// export_state_dict_checkpoint.py, writes):
//
//   DIR/params.json           {"dim", "multiple_of", "n_heads", "n_layers", "norm_eps", "vocab_size"
//                              [, "n_kv_heads", "ffn_dim_multiplier", "rope_theta"]}
//   DIR/consolidated.00.pth   torch.save of the state dict (io/torch_pth.hpp); more shards for model parallel
//
//   HF name                                        Meta name
//   model.embed_tokens.weight                      tok_embeddings.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj.weight layers.N.attention.{wq,wk,wv,wo}.weight
//   model.layers.N.mlp.{gate,down,up}_proj.weight  layers.N.feed_forward.{w1,w2,w3}.weight
//   model.layers.N.input_layernorm.weight          layers.N.attention_norm.weight
//   model.layers.N.post_attention_layernorm.weight layers.N.ffn_norm.weight
//   model.norm.weight                              norm.weight
//   lm_head.weight                                 output.weight (always stored; equal to the embedding → tied)
//
// wq/wk are stored in Meta's adjacent-pair RoPE layout: written with the lab's `unpermute` (unpermute_rotary_rows,
// per head; wk with the KV heads) and permuted back on reading. The FFN width is not stored: Meta's code derives it
// from dim, multiple_of and ffn_dim_multiplier, so the writer picks the values that give the model's hidden_dim
// and the reader recomputes it. max_seq_len is not stored either (Meta's loader passes it at build time): the
// reader takes `max_seq_len` (default 2048, ModelArgs' default).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/safetensors.hpp"
#include "io/torch_pth.hpp"
#include "nn/config.hpp"
#include "nn/llama2c_file.hpp"

namespace loralab::nn {

namespace detail {

/// One tensor kind: HF suffix, Meta suffix, and the dimension model-parallel shards split it along (-1: replicated).
struct meta_row {
  std::string_view hf, meta;
  bool per_layer;
  int shard_dim;
};
inline constexpr std::array<meta_row, 12> meta_table = {{
    {"model.embed_tokens.weight", "tok_embeddings.weight", false, 1},  // ParallelEmbedding splits the embedding dim
    {"self_attn.q_proj.weight", "attention.wq.weight", true, 0},
    {"self_attn.k_proj.weight", "attention.wk.weight", true, 0},
    {"self_attn.v_proj.weight", "attention.wv.weight", true, 0},
    {"self_attn.o_proj.weight", "attention.wo.weight", true, 1},
    {"mlp.gate_proj.weight", "feed_forward.w1.weight", true, 0},
    {"mlp.down_proj.weight", "feed_forward.w2.weight", true, 1},
    {"mlp.up_proj.weight", "feed_forward.w3.weight", true, 0},
    {"input_layernorm.weight", "attention_norm.weight", true, -1},
    {"post_attention_layernorm.weight", "ffn_norm.weight", true, -1},
    {"model.norm.weight", "norm.weight", false, -1},
    {"lm_head.weight", "output.weight", false, 0},
}};

/// Meta's FeedForward width: int(2·4·dim/3), times ffn_dim_multiplier (truncated), rounded up to multiple_of.
inline std::int64_t meta_hidden_dim(std::int64_t dim, std::int64_t multiple_of, std::optional<double> multiplier) {
  std::int64_t hidden = 2 * (4 * dim) / 3;
  if (multiplier) hidden = std::int64_t(*multiplier * double(hidden));
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

/// multiple_of (and, when no multiple_of alone gives it, ffn_dim_multiplier) that reproduce hidden_dim.
inline std::pair<int, std::optional<double>> meta_ffn_params(const llama_config& c) {
  for (int m : {256, 128, 64, 32, 16, 8, 4, 2, 1})
    if (meta_hidden_dim(c.dim, m, std::nullopt) == c.hidden_dim) return {m, std::nullopt};
  const double base = double(2 * (4 * std::int64_t(c.dim)) / 3);
  const double multiplier = (double(c.hidden_dim) + 0.5) / base;  // int(multiplier·base) == hidden_dim
  LORALAB_CHECK(meta_hidden_dim(c.dim, 1, multiplier) == c.hidden_dim, "params.json: no multiple_of/ffn_dim_multiplier gives hidden_dim ",
                c.hidden_dim, " for dim ", c.dim);
  return {1, multiplier};
}

}  // namespace detail

/// params.json for a config (Llama 2's keys; n_kv_heads, ffn_dim_multiplier and rope_theta only when needed).
inline nlohmann::ordered_json meta_params_json(const llama_config& c) {
  const auto [multiple_of, multiplier] = detail::meta_ffn_params(c);
  nlohmann::ordered_json j;
  j["dim"] = c.dim;
  j["multiple_of"] = multiple_of;
  j["n_heads"] = c.n_heads;
  j["n_layers"] = c.n_layers;
  j["norm_eps"] = detail::shortest_double(c.rms_norm_eps);
  j["vocab_size"] = c.vocab_size;
  if (c.n_kv_heads != c.n_heads) j["n_kv_heads"] = c.n_kv_heads;
  if (multiplier) j["ffn_dim_multiplier"] = *multiplier;
  if (c.rope_theta != 10000.0f) j["rope_theta"] = detail::shortest_double(c.rope_theta);
  return j;
}

struct meta_write_options {
  io::dtype dtype = io::dtype::F32;  ///< F32, F16 or BF16
};

/// Writes DIR/params.json and DIR/consolidated.00.pth (one shard) into an existing directory; each file atomically.
inline void write_meta_dir(const model_file& m, const std::filesystem::path& dir, const meta_write_options& o = {}) {
  validate_model_file(m, dir.string());
  const llama_config& c = m.config;
  io::pth_writer w;
  std::vector<std::vector<std::byte>> keep;  // the writer holds views until write()
  const auto add = [&](const std::string& meta, const tensor_f32& t) {
    keep.push_back(detail::float_bytes(t.data, o.dtype));
    w.add(meta, o.dtype, t.shape, keep.back());
  };
  for (const auto& row : detail::meta_table) {
    if (row.per_layer) continue;
    if (row.hf == "model.embed_tokens.weight") add(std::string(row.meta), m.tensors.at(std::string(row.hf)));
  }
  for (int l = 0; l < c.n_layers; ++l)
    for (const auto& row : detail::meta_table) {
      if (!row.per_layer) continue;
      const std::string hf = "model.layers." + std::to_string(l) + "." + std::string(row.hf);
      const std::string meta = "layers." + std::to_string(l) + "." + std::string(row.meta);
      const tensor_f32& t = m.tensors.at(hf);
      const int heads = row.meta == "attention.wq.weight" ? c.n_heads : row.meta == "attention.wk.weight" ? c.n_kv_heads : 0;
      if (heads == 0) {
        add(meta, t);
      } else {
        tensor_f32 p = t;
        unpermute_rotary_rows(p, heads);
        add(meta, p);
      }
    }
  add("norm.weight", m.tensors.at("model.norm.weight"));
  add("output.weight", m.tensors.at(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  w.write(dir / "consolidated.00.pth");
  atomic_file params(dir / "params.json");
  params.write(meta_params_json(c).dump() + "\n");
  params.commit();
}

namespace detail {

inline llama_config read_meta_params(const std::filesystem::path& path, int max_seq_len) {
  const std::string where = path.string();
  const json j = read_json_file(path);
  if (!j.is_object()) fail(where, ": top level is a JSON ", j.type_name(), ", not an object");
  const auto number = [&](const char* key, std::optional<double> fallback) -> double {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (fallback) return *fallback;
      fail(where, ": missing required key '", key, "'");
    }
    if (!it->is_number()) fail(where, ": key '", key, "' is ", it->dump(), ", not a number");
    return it->get<double>();
  };
  const auto integer = [&](const char* key, std::optional<double> fallback) -> int {
    const double v = number(key, fallback);
    if (v != std::floor(v) || std::fabs(v) > 1e9) fail(where, ": key '", key, "' is ", v, ", not an integer");
    return int(v);
  };
  for (const auto& [key, value] : j.items()) {
    static const std::set<std::string> known = {"dim", "multiple_of", "n_heads", "n_layers", "norm_eps", "vocab_size",
                                                "n_kv_heads", "ffn_dim_multiplier", "rope_theta", "max_seq_len",
                                                "max_batch_size", "use_scaled_rope"};
    if (!known.contains(key)) fail(where, ": unknown key '", key, "' (", value.dump(), ")");
  }
  if (j.contains("use_scaled_rope") && j.at("use_scaled_rope") == true)
    fail(where, ": key 'use_scaled_rope' is true; Llama 3.1's RoPE scaling is not supported");
  llama_config c;
  c.dim = integer("dim", std::nullopt);
  c.n_layers = integer("n_layers", std::nullopt);
  c.n_heads = integer("n_heads", std::nullopt);
  c.n_kv_heads = integer("n_kv_heads", c.n_heads);
  c.vocab_size = integer("vocab_size", -1.0);  // Llama 2 writes -1: the tokenizer's size (from the embedding)
  const int multiple_of = integer("multiple_of", 256.0);
  LORALAB_CHECK(multiple_of > 0, where, ": key 'multiple_of' is ", multiple_of, ", must be > 0");
  LORALAB_CHECK(c.dim > 0, where, ": key 'dim' is ", c.dim, ", must be > 0");
  std::optional<double> multiplier;
  if (j.contains("ffn_dim_multiplier") && !j.at("ffn_dim_multiplier").is_null()) multiplier = number("ffn_dim_multiplier", std::nullopt);
  const std::int64_t hidden = meta_hidden_dim(c.dim, multiple_of, multiplier);
  LORALAB_CHECK(hidden > 0 && hidden < (1 << 30), where, ": dim, multiple_of and ffn_dim_multiplier give an FFN width of ", hidden);
  c.hidden_dim = int(hidden);
  c.rms_norm_eps = float(number("norm_eps", std::nullopt));
  c.rope_theta = float(number("rope_theta", 10000.0));
  c.max_seq_len = j.contains("max_seq_len") ? integer("max_seq_len", std::nullopt) : max_seq_len;
  c.tie_word_embeddings = false;
  return c;
}

}  // namespace detail

/// Whether `dir` looks like a Meta checkpoint directory (params.json and consolidated.*.pth, no config.json).
inline bool is_meta_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  return fs::is_directory(dir) && fs::exists(dir / "params.json") && !fs::exists(dir / "config.json");
}

/// Reads a Meta checkpoint directory: params.json and consolidated.00.pth … consolidated.NN.pth (model-parallel
/// shards are joined along each tensor's split dimension). Tensors may be F32, F16 or BF16; rope.freqs is skipped.
inline model_file read_meta_dir(const std::filesystem::path& dir, int max_seq_len = 2048) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail(dir.string(), ": not a directory");
  model_file m;
  m.config = detail::read_meta_params(dir / "params.json", max_seq_len);
  std::vector<fs::path> shards;
  for (int i = 0;; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "consolidated.%02d.pth", i);
    if (!fs::exists(dir / name)) break;
    shards.push_back(dir / name);
  }
  if (shards.empty()) fail(dir.string(), ": has params.json but no consolidated.00.pth");
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.starts_with("consolidated.") && n.ends_with(".pth") && std::find(shards.begin(), shards.end(), e.path()) == shards.end())
      fail(e.path().string(), ": shard out of sequence (", shards.size(), " consecutive shards from consolidated.00.pth)");
  }
  // meta name -> (hf name, split dim)
  std::map<std::string, std::pair<std::string, int>> names;
  for (const auto& row : detail::meta_table) {
    if (!row.per_layer) {
      names[std::string(row.meta)] = {std::string(row.hf), row.shard_dim};
      continue;
    }
    for (int l = 0; l < m.config.n_layers; ++l)
      names["layers." + std::to_string(l) + "." + std::string(row.meta)] = {
          "model.layers." + std::to_string(l) + "." + std::string(row.hf), row.shard_dim};
  }
  std::map<std::string, std::vector<tensor_f32>> parts;  // meta name -> one per shard
  for (const auto& shard : shards) {
    const io::pth_file f = io::read_pth(shard);
    for (const auto& t : f.tensors()) {
      if (t.name == "rope.freqs") continue;  // Llama 1/2 store the RoPE table; it is recomputed
      LORALAB_CHECK(names.contains(t.name), shard.string(), ": unexpected tensor '", t.name, "' (not part of a Llama model with ",
                    m.config.n_layers, " layers)");
      LORALAB_CHECK(t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16, shard.string(), ": tensor '",
                    t.name, "' is ", io::dtype_name(t.type), "; only F32, F16 and BF16 weights are read");
      parts[t.name].push_back(tensor_f32{t.shape, t.to_float()});
    }
  }
  for (const auto& [meta, hf_split] : names) {
    const auto& [hf, split] = hf_split;
    const auto it = parts.find(meta);
    if (it == parts.end()) fail(shards.front().string(), ": missing tensor '", meta, "'");
    auto& ps = it->second;
    LORALAB_CHECK(ps.size() == shards.size(), dir.string(), ": tensor '", meta, "' is in ", ps.size(), " of ", shards.size(), " shards");
    tensor_f32 t;
    if (ps.size() == 1 || split < 0) {
      for (std::size_t s = 1; s < ps.size(); ++s)
        LORALAB_CHECK(ps[s].shape == ps[0].shape && ps[s].data == ps[0].data, dir.string(), ": replicated tensor '", meta,
                      "' differs between shard 0 and shard ", s);
      t = std::move(ps[0]);
    } else {  // join along `split` (0: rows, 1: columns) of 2-d tensors
      for (const auto& p : ps)
        LORALAB_CHECK(p.shape.size() == 2 && p.shape[1 - split] == ps[0].shape[1 - split], dir.string(), ": tensor '", meta,
                      "' has shards that do not join along dimension ", split);
      std::int64_t total = 0;
      for (const auto& p : ps) total += p.shape[std::size_t(split)];
      t.shape = ps[0].shape;
      t.shape[std::size_t(split)] = total;
      t.data.resize(std::size_t(t.shape[0] * t.shape[1]));
      std::int64_t at = 0;
      for (const auto& p : ps) {
        for (std::int64_t r = 0; r < p.shape[0]; ++r)
          std::copy_n(p.data.begin() + r * p.shape[1], p.shape[1],
                      t.data.begin() + (split == 0 ? (at + r) * t.shape[1] : r * t.shape[1] + at));
        at += p.shape[std::size_t(split)];
      }
    }
    m.tensors.emplace(hf, std::move(t));
  }
  auto& c = m.config;
  const auto& emb = m.tensors.at("model.embed_tokens.weight");
  LORALAB_CHECK(emb.shape.size() == 2, dir.string(), ": tok_embeddings.weight is not 2-d");
  if (c.vocab_size <= 0) c.vocab_size = int(emb.shape[0]);
  for (int l = 0; l < c.n_layers; ++l) {  // back to HF's rotate-half rows
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    for (const auto& [name, heads] : {std::pair{p + "q_proj.weight", c.n_heads}, std::pair{p + "k_proj.weight", c.n_kv_heads}}) {
      auto& t = m.tensors.at(name);
      const auto expect = name.ends_with("q_proj.weight") ? std::int64_t(c.dim) : std::int64_t(c.kv_dim());
      LORALAB_CHECK(t.shape.size() == 2 && t.shape[0] == expect && t.shape[1] == c.dim, (dir / "params.json").string(),
                    ": layer ", l, (name.ends_with("q_proj.weight") ? " wq" : " wk"), " has shape ", detail::shape_string(t.shape),
                    ", params.json implies [", expect, ", ", c.dim, "]");
      permute_rotary_rows(t, heads);
    }
  }
  const auto& out = m.tensors.at("lm_head.weight");
  if (out.shape == emb.shape && out.data == emb.data) {  // Meta stores the head even when it is the embedding
    c.tie_word_embeddings = true;
    m.tensors.erase("lm_head.weight");
  }
  validate_model_file(m, (dir / "consolidated.00.pth").string());
  return m;
}

}  // namespace loralab::nn

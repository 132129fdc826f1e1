// SPDX-License-Identifier: MIT
#pragma once
// Hugging Face LlamaForCausalLM directories in and out of the neutral model_file form (nn/config.hpp):
//
//   DIR/config.json                          LlamaConfig; quantization_config for a bitsandbytes 4-bit model
//   DIR/model.safetensors                    every tensor, or when sharded:
//   DIR/model.safetensors.index.json         {"metadata": {"total_parameters", "total_size"}, "weight_map": {name: shard}}
//   DIR/model-0000K-of-0000N.safetensors     the shards
//
// Float tensors are F32, F16 or BF16. In a pre-quantized directory (what transformers saves for
// BitsAndBytesConfig(load_in_4bit=True)) the 7 linear weights of every layer are in bitsandbytes' 4-bit layout
// (quant/bnb_serialization.hpp; its statistics may sit in another shard) and are dequantized exactly on reading;
// model_file::quantization says what was found. The writers shard as transformers 5's save_pretrained does: tensors
// in its order (dot_natural_less), split greedily at max_shard_bytes, a tensor larger than that alone in a shard.
// Each file is written atomically and weight files of an earlier save are removed; writing a whole directory at
// once is the caller's (core/atomic_dir.hpp). Errors name the file and the field or tensor at fault.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/safetensors.hpp"
#include "nn/config.hpp"
#include "nn/llama2c_file.hpp"  // detail::read_json_file, shortest_double, shape_string, float_bytes, ...
#include "quant/bnb_serialization.hpp"

namespace loralab::nn {

/// How write_hf_dir and write_hf_dir_4bit store a model.
struct hf_write_options {
  io::dtype dtype = io::dtype::F32;  ///< float tensors: F32, F16 or BF16 (rounded to nearest even, as torch's .to())
  /// Shard above this many bytes per file; 0: one file whatever its size. 5 GB is transformers 4.x's default
  /// (5.x's is 50 GB); both load either layout.
  std::uint64_t max_shard_bytes = 5'000'000'000;
};

namespace detail {

// ---- config.json ------------------------------------------------------------------------------------------

/// The fields of LlamaConfig that loralab reads; anything it cannot represent is refused by name.
inline llama_config read_hf_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": top level is a JSON ", j.type_name(), ", not an object");
  // A field's value; nullptr when absent or null, which is an error for a required field.
  const auto find = [&](const json& obj, const char* field, bool required = false) -> const json* {
    const auto it = obj.find(field);
    if (it != obj.end() && !it->is_null()) return &*it;
    if (required) fail(where, ": missing required field '", field, "'");
    return nullptr;
  };
  const auto get_int = [&](const char* field, std::optional<int> fallback) -> int {
    const json* v = find(j, field, !fallback);
    if (!v) return *fallback;
    if (!v->is_number_integer()) fail(where, ": field '", field, "' is ", v->dump(), ", not an integer");
    const auto x = v->get<std::int64_t>();
    if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max())
      fail(where, ": field '", field, "' = ", x, " is out of range");
    return static_cast<int>(x);
  };
  const auto get_float = [&](const json& obj, const char* field, std::optional<float> fallback) -> float {
    const json* v = find(obj, field, !fallback);
    if (!v) return *fallback;
    if (!v->is_number()) fail(where, ": field '", field, "' is ", v->dump(), ", not a number");
    return static_cast<float>(v->get<double>());
  };
  const auto get_bool = [&](const char* field, bool fallback) -> bool {
    const json* v = find(j, field);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(where, ": field '", field, "' is ", v->dump(), ", not true/false");
    return v->get<bool>();
  };

  if (const json* a = find(j, "architectures")) {
    if (!a->is_array()) fail(where, ": field 'architectures' is ", a->dump(), ", not a list");
    const bool llama = std::any_of(a->begin(), a->end(), [](const json& s) { return s == "LlamaForCausalLM"; });
    if (!llama) fail(where, ": field 'architectures' is ", a->dump(), "; only LlamaForCausalLM is supported");
  }
  if (const json* act = find(j, "hidden_act"); act && *act != "silu")
    fail(where, ": field 'hidden_act' is ", act->dump(), "; only \"silu\" (SwiGLU) is supported");
  if (const json* rs = find(j, "rope_scaling"))
    fail(where, ": field 'rope_scaling' is ", rs->dump(), "; RoPE scaling is not supported (must be null)");
  for (const char* field : {"attention_bias", "mlp_bias"})
    if (get_bool(field, false)) fail(where, ": field '", field, "' is true; biases are not supported");

  llama_config c;
  c.dim = get_int("hidden_size", std::nullopt);
  c.hidden_dim = get_int("intermediate_size", std::nullopt);
  c.n_layers = get_int("num_hidden_layers", std::nullopt);
  c.n_heads = get_int("num_attention_heads", std::nullopt);
  c.n_kv_heads = get_int("num_key_value_heads", c.n_heads);
  c.vocab_size = get_int("vocab_size", std::nullopt);
  c.max_seq_len = get_int("max_position_embeddings", std::nullopt);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", std::nullopt);
  c.rope_theta = get_float(j, "rope_theta", 10000.0f);
  if (const json* rp = find(j, "rope_parameters")) {  // transformers 5: {"rope_theta": ..., "rope_type": "default"}
    if (!rp->is_object()) fail(where, ": field 'rope_parameters' is ", rp->dump(), ", not an object");
    if (const json* type = find(*rp, "rope_type"); type && *type != "default")
      fail(where, ": field 'rope_parameters' has rope_type ", type->dump(), "; only \"default\" RoPE is supported");
    c.rope_theta = get_float(*rp, "rope_theta", c.rope_theta);
  }
  c.tie_word_embeddings = get_bool("tie_word_embeddings", false);  // LlamaConfig's default

  // The divisibility rules again, with HF's field names.
  LORALAB_CHECK(c.n_heads <= 0 || c.dim % c.n_heads == 0, where, ": field 'hidden_size' ", c.dim,
                " is not a multiple of field 'num_attention_heads' ", c.n_heads);
  LORALAB_CHECK(c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads == 0, where, ": field 'num_attention_heads' ",
                c.n_heads, " is not a multiple of field 'num_key_value_heads' ", c.n_kv_heads);
  if (find(j, "head_dim") && c.n_heads > 0) {
    const int hd = get_int("head_dim", std::nullopt);
    LORALAB_CHECK(hd == c.dim / c.n_heads, where, ": field 'head_dim' ", hd, " differs from hidden_size / "
                  "num_attention_heads = ", c.dim / c.n_heads, " (not supported)");
  }
  c.validate(where);
  return c;
}

/// What config.json's quantization_config says (present = false without one).
struct hf_quant_config {
  bool present = false;
  std::string quant_type;      ///< bnb_4bit_quant_type: "nf4" or "fp4"
  bool double_quant = false;   ///< bnb_4bit_use_double_quant
  bool skips_modules = false;  ///< llm_int8_skip_modules is a list: some linears may have stayed float
};

/// Reads quantization_config; only bitsandbytes 4-bit is accepted.
inline hf_quant_config read_hf_quant_config(const json& j, const std::string& where) {
  hf_quant_config q;
  const auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return q;
  const json& c = *it;
  const auto field = [&](const char* key) { return c.contains(key) ? c.at(key) : json(); };
  if (!c.is_object() || field("quant_method") != "bitsandbytes" || field("load_in_4bit") != true)
    fail(where, ": field 'quantization_config' is ", c.dump(), "; only bitsandbytes 4-bit (quant_method "
         "\"bitsandbytes\", load_in_4bit true) is read");
  q.present = true;
  const json type = field("bnb_4bit_quant_type");
  if (type != "nf4" && type != "fp4")
    fail(where, ": quantization_config field 'bnb_4bit_quant_type' is ", type.dump(), ", not \"nf4\" or \"fp4\"");
  q.quant_type = type.get<std::string>();
  const json dq = field("bnb_4bit_use_double_quant");
  if (!dq.is_null() && !dq.is_boolean())
    fail(where, ": quantization_config field 'bnb_4bit_use_double_quant' is ", dq.dump(), ", not true/false");
  q.double_quant = dq == true;
  q.skips_modules = field("llm_int8_skip_modules").is_array();
  return q;
}

/// The quantization_config transformers writes for BitsAndBytesConfig(load_in_4bit=True,
/// bnb_4bit_quant_type=S, bnb_4bit_use_double_quant=S::nested, bnb_4bit_compute_dtype=torch.float32).
template <quant::blockwise_scheme S>
json bnb_4bit_quant_config() {
  json q = json::parse(R"({"_load_in_4bit": true, "_load_in_8bit": false, "bnb_4bit_compute_dtype": "float32",
      "bnb_4bit_quant_storage": "uint8", "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
      "llm_int8_skip_modules": null, "llm_int8_threshold": 6.0, "load_in_4bit": true, "load_in_8bit": false,
      "quant_method": "bitsandbytes"})");
  q["bnb_4bit_quant_type"] = std::string(S::quant_type);
  q["bnb_4bit_use_double_quant"] = S::nested;
  return q;
}

/// config.json as transformers writes it for LlamaForCausalLM (keys sorted, as to_json_string does). The float
/// dtype goes under "dtype" (transformers >= 4.56 reads it) and "torch_dtype" (what older versions read).
inline json hf_config_json(const llama_config& c, io::dtype type = io::dtype::F32, json quantization = nullptr) {
  json j = json::object();
  j["architectures"] = json::array({"LlamaForCausalLM"});
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = 1;
  j["dtype"] = torch_dtype_name(type);
  j["eos_token_id"] = 2;
  j["head_dim"] = c.head_dim();
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.dim;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.hidden_dim;
  j["max_position_embeddings"] = c.max_seq_len;
  j["mlp_bias"] = false;
  j["model_type"] = "llama";
  j["num_attention_heads"] = c.n_heads;
  j["num_hidden_layers"] = c.n_layers;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["pretraining_tp"] = 1;
  if (!quantization.is_null()) j["quantization_config"] = std::move(quantization);
  j["rms_norm_eps"] = shortest_double(c.rms_norm_eps);
  j["rope_scaling"] = nullptr;
  j["rope_theta"] = shortest_double(c.rope_theta);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = torch_dtype_name(type);
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  return j;
}

// ---- tensors and shards -----------------------------------------------------------------------------------

/// Buffers older transformers versions saved with the weights; they hold no parameters and are skipped.
inline bool is_non_persistent_buffer(std::string_view name) { return name.ends_with(".rotary_emb.inv_freq"); }

/// One of the 7 linear weights of a layer, the ones transformers' bitsandbytes integration quantizes (it keeps
/// embed_tokens, lm_head and the norms in float).
inline bool is_bnb_linear_weight(std::string_view name) {
  if (!name.starts_with("model.layers.")) return false;
  for (std::string_view s : {".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
                             ".self_attn.o_proj.weight", ".mlp.gate_proj.weight", ".mlp.up_proj.weight",
                             ".mlp.down_proj.weight"})
    if (name.ends_with(s)) return true;
  return false;
}

/// transformers 5's dot_natural_key order (core_model_loading.py), in which save_pretrained shards: names split at
/// '.', numeric parts before words and by value, a word's trailing digits by value ("shard_2" < "shard_11").
inline bool dot_natural_less(std::string_view a, std::string_view b) {
  struct part {
    bool word;
    std::string_view text, digits;  // digits: the whole part (number) or the word's trailing digits
  };
  const auto split = [](std::string_view s) {
    std::vector<part> out;
    for (std::size_t start = 0;;) {
      const std::size_t dot = s.find('.', start);
      const std::string_view p = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
      const std::size_t cut = p.find_last_not_of("0123456789");
      if (cut == std::string_view::npos && !p.empty()) out.push_back({false, {}, p});
      else out.push_back({true, p.substr(0, cut + 1), p.substr(cut + 1)});
      if (dot == std::string_view::npos) return out;
      start = dot + 1;
    }
  };
  const auto num_cmp = [](std::string_view x, std::string_view y) {  // by value, any length
    x.remove_prefix(std::min(x.find_first_not_of('0'), x.size()));
    y.remove_prefix(std::min(y.find_first_not_of('0'), y.size()));
    return x.size() != y.size() ? (x.size() < y.size() ? -1 : 1) : x.compare(y);
  };
  const auto cmp = [&](const part& x, const part& y) -> int {
    if (x.word != y.word) return x.word ? 1 : -1;
    if (!x.word) return num_cmp(x.digits, y.digits);
    if (const int c = x.text.compare(y.text)) return c;
    if (x.digits.empty() != y.digits.empty()) return x.digits.empty() ? -1 : 1;
    return num_cmp(x.digits, y.digits);
  };
  const std::vector<part> pa = split(a), pb = split(b);
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i)
    if (const int c = cmp(pa[i], pb[i])) return c < 0;
  return pa.size() < pb.size();
}

/// One tensor to write; `bytes` points into storage the writer keeps alive.
struct hf_entry {
  std::string name;
  io::dtype type;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

/// huggingface_hub's split_torch_state_dict_into_shards: entries in order, a new shard when the next would pass
/// `max`; an entry larger than `max` gets a shard of its own, placed when it is met.
inline std::vector<std::vector<const hf_entry*>> plan_shards(const std::vector<hf_entry>& entries, std::uint64_t max) {
  std::vector<std::vector<const hf_entry*>> shards;
  std::vector<const hf_entry*> current;
  std::uint64_t current_size = 0;
  for (const hf_entry& e : entries) {
    const std::uint64_t size = e.bytes.size();
    if (max != 0 && size > max) {
      shards.push_back({&e});
      continue;
    }
    if (max != 0 && current_size + size > max) shards.push_back(std::exchange(current, {})), current_size = 0;
    current.push_back(&e);
    current_size += size;
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

/// Writes the weight files, the index when sharded, then config.json; removes weight files of an earlier save.
inline void write_hf_files(const std::filesystem::path& dir, std::vector<hf_entry> entries,
                           std::uint64_t total_parameters, const json& config, std::uint64_t max_shard_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir.string(), ": cannot create the directory: ", ec.message());
  std::stable_sort(entries.begin(), entries.end(),
                   [](const hf_entry& a, const hf_entry& b) { return dot_natural_less(a.name, b.name); });
  const auto shards = plan_shards(entries, max_shard_bytes);
  const auto shard_name = [&](std::size_t i) {
    if (shards.size() == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    return std::string(buf);
  };
  std::set<std::string> written;
  json weight_map = json::object();
  std::uint64_t total_size = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    io::safetensors_writer w;
    w.set_metadata("format", "pt");  // transformers refuses safetensors files without it
    for (const hf_entry* e : shards[i]) {
      w.add(e->name, e->type, e->shape, e->bytes);
      weight_map[e->name] = shard_name(i);
      total_size += e->bytes.size();
    }
    w.write(dir / shard_name(i));
    written.insert(shard_name(i));
  }
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_parameters", total_parameters}, {"total_size", total_size}}},
                        {"weight_map", std::move(weight_map)}};
    atomic_file out(dir / "model.safetensors.index.json");
    out.write(index.dump(2) + "\n");  // json.dumps(index, indent=2, sort_keys=True) + "\n"
    out.commit();
    written.insert("model.safetensors.index.json");
  }
  // As save_pretrained: weight files of an earlier save that this one did not rewrite would be read instead.
  static const std::regex stale(R"(model\.safetensors(\.index\.json)?|model-\d{5}-of-\d{5}\.safetensors)");
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && !written.contains(name) && std::regex_match(name, stale)) fs::remove(e.path(), ec);
  }
  atomic_file out(dir / "config.json");
  out.write(config.dump(2) + "\n");
  out.commit();
}

/// The float tensors of m (all but `skip`) as entries in `type`; `keep` holds their bytes.
inline void add_float_entries(const model_file& m, io::dtype type, const std::set<std::string>& skip,
                              std::vector<hf_entry>& entries, std::deque<std::vector<std::byte>>& keep) {
  for (const auto& [name, shape] : expected_tensors(m.config)) {
    if (skip.contains(name)) continue;
    const std::vector<std::byte>& b = keep.emplace_back(float_bytes(m.tensors.at(name).data, type));
    entries.push_back({name, type, shape, b});
  }
}

// ---- reading ----------------------------------------------------------------------------------------------

/// Every tensor of an open checkpoint by name, with the file it is in; a bnb_tensor_source whose messages name
/// `home`, so that a 4-bit weight's statistics are found whichever shard holds them.
struct hf_tensor_index {
  struct located {
    const io::tensor_view* view;
    const io::safetensors_file* file;
  };
  std::map<std::string, located, std::less<>> tensors;
  std::filesystem::path home;

  const std::filesystem::path& path() const { return home; }
  bool contains(const std::string& name) const { return tensors.contains(name); }
  const io::tensor_view& at(const std::string& name) const {
    const auto it = tensors.find(name);
    if (it == tensors.end()) fail(home.string(), ": no tensor '", name, "'");
    return *it->second.view;
  }
};

/// The opened weight files of `dir`: model.safetensors, or the shards model.safetensors.index.json names (each
/// tensor where its weight_map says). `weights` is set to the file that lists the tensors, for messages.
inline std::vector<io::safetensors_file> open_hf_weights(const std::filesystem::path& dir,
                                                         std::filesystem::path& weights) {
  namespace fs = std::filesystem;
  std::vector<io::safetensors_file> files;
  weights = dir / "model.safetensors";
  if (fs::exists(weights)) {
    files.push_back(io::safetensors_file::open(weights));
    return files;
  }
  weights = dir / "model.safetensors.index.json";
  if (!fs::exists(weights)) fail(dir.string(), ": has neither model.safetensors nor model.safetensors.index.json");
  const std::string where = weights.string();
  const json index = read_json_file(weights);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(where, ": missing field 'weight_map' (an object of tensor name -> shard file)");
  std::map<std::string, std::vector<std::string>> by_shard;  // shard -> tensor names
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail(where, ": weight_map entry '", name, "' is ", shard.dump(), ", not a file name");
    const fs::path rel(shard.get<std::string>());
    if (rel.empty() || rel.is_absolute() || rel.has_parent_path())
      fail(where, ": weight_map entry '", name, "' names shard '", rel.string(), "', not a file in ", dir.string());
    by_shard[rel.string()].push_back(name);
  }
  for (const auto& [shard, names] : by_shard)
    if (!fs::exists(dir / shard))
      fail(where, ": weight_map names shard '", shard, "' (for tensor '", names.front(), "'), which does not exist");
  for (const auto& [shard, names] : by_shard) {
    const auto& f = files.emplace_back(io::safetensors_file::open(dir / shard));
    const std::set<std::string> listed(names.begin(), names.end());
    for (const auto& t : f.tensors())
      LORALAB_CHECK(listed.contains(t.name) || is_non_persistent_buffer(t.name), f.path().string(), ": tensor '", t.name,
                    "' is not listed for this shard in the weight_map of ", where);
    for (const auto& name : names)
      LORALAB_CHECK(f.contains(name), where, ": weight_map puts tensor '", name, "' in shard '", shard,
                    "', which does not hold it");
  }
  return files;
}

/// A bnb 4-bit weight dequantized to float through the dtype its quant_state records (as bnb's dequantize_4bit:
/// the float32 product code * absmax, rounded once to that dtype), and its scheme label ("nf4", "fp4-b128+dq").
inline std::pair<tensor_f32, std::string> read_hf_4bit(const hf_tensor_index& ts, const std::string& name) {
  const quant::bnb_quant_state st = quant::read_bnb_quant_state(ts, name);
  tensor_f32 out;
  quant::visit_bnb_4bit(ts, name, [&](const auto& q) {
    out.shape = q.shape();
    out.data.resize(q.numel());
    const auto through = [&]<class T>(std::type_identity<T>) {
      std::vector<T> v(q.numel());
      q.template dequantize<T>(v);
      std::transform(v.begin(), v.end(), out.data.begin(), [](T x) { return static_cast<float>(x); });
    };
    if (st.dtype == "float32") q.template dequantize<float>(out.data);
    else if (st.dtype == "float16") through(std::type_identity<Eigen::half>{});
    else if (st.dtype == "bfloat16") through(std::type_identity<Eigen::bfloat16>{});
    else fail(ts.path().string(), ": ", name, ": quant_state dtype '", st.dtype, "' is not float32, float16 or bfloat16");
  });
  std::string label =
      st.quant_type + (st.blocksize != 64 ? "-b" + std::to_string(st.blocksize) : "") + (st.nested ? "+dq" : "");
  return {std::move(out), std::move(label)};
}

}  // namespace detail

/// Reads a Hugging Face LlamaForCausalLM directory: config.json plus model.safetensors, or (when that is absent)
/// model.safetensors.index.json whose weight_map names the shard of every tensor. F32, F16 and BF16 tensors are
/// converted to float exactly. A tied model may store lm_head.weight only if it equals the embedding.
/// A bitsandbytes 4-bit directory (config.json's quantization_config) has its 4-bit weights dequantized exactly
/// (read_hf_4bit) and model_file::quantization set ("nf4+dq"); config and tensors must agree on being 4-bit.
inline model_file read_hf_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  using detail::json;
  if (!fs::is_directory(dir)) fail(dir.string(), ": not a directory");
  const fs::path config_path = dir / "config.json";
  const std::string config_where = config_path.string();
  const json config = detail::read_json_file(config_path);
  model_file m;
  m.config = detail::read_hf_config(config, config_where);
  const detail::hf_quant_config qc = detail::read_hf_quant_config(config, config_where);

  fs::path weights;
  const std::vector<io::safetensors_file> files = detail::open_hf_weights(dir, weights);
  detail::hf_tensor_index all;
  std::vector<std::string> quantized;   // names W of bnb 4-bit weights
  std::map<std::string, std::string> holder;  // W -> the file of its quant_state
  for (const auto& f : files) {
    for (const auto& t : f.tensors()) {
      const auto [it, fresh] = all.tensors.emplace(t.name, detail::hf_tensor_index::located{&t, &f});
      LORALAB_CHECK(fresh, f.path().string(), ": tensor '", t.name, "' is also in ", it->second.file->path().string());
    }
    for (auto& w : quant::bnb_4bit_weights(f)) holder[w] = f.path().string(), quantized.push_back(std::move(w));
  }
  const auto file_of = [&](const std::string& name) { return all.tensors.at(name).file->path().string(); };

  std::map<std::string, std::string> origin;  // name -> the file it came from, for messages
  std::string scheme;
  for (const auto& w : quantized) {
    LORALAB_CHECK(qc.present, holder[w], ": tensor '", w, "' is a bitsandbytes 4-bit weight, but ", config_where,
                  " has no field 'quantization_config'");
    LORALAB_CHECK(all.contains(w), holder[w], ": has the quant_state of a 4-bit weight '", w, "', but no tensor '", w,
                  "'");
    LORALAB_CHECK(detail::is_bnb_linear_weight(w) || w == "lm_head.weight", file_of(w), ": tensor '", w,
                  "' is a 4-bit weight; transformers' bitsandbytes integration quantizes only linear layers");
    all.home = file_of(w);
    auto [t, label] = detail::read_hf_4bit(all, w);
    const bool nested = label.ends_with("+dq");
    LORALAB_CHECK(label.starts_with(qc.quant_type) && nested == qc.double_quant, file_of(w), ": tensor '", w,
                  "' is stored as ", label, ", but ", config_where, "'s quantization_config says ", qc.quant_type,
                  qc.double_quant ? " with" : " without", " double quantization");
    LORALAB_CHECK(scheme.empty() || scheme == label, file_of(w), ": tensor '", w, "' is stored as ", label,
                  ", other 4-bit weights as ", scheme);
    scheme = label;
    m.tensors.emplace(w, std::move(t));
    origin.emplace(w, file_of(w));
  }
  if (qc.present && quantized.empty())
    fail(config_where, ": field 'quantization_config' declares bitsandbytes 4-bit weights, but ", weights.string(),
         " holds none (no *.quant_state.bitsandbytes__nf4|fp4 tensor)");
  m.quantization = scheme;

  for (const auto& [name, at] : all.tensors) {
    const io::tensor_view& t = *at.view;
    const std::string where = at.file->path().string();
    if (detail::is_non_persistent_buffer(name) || m.tensors.contains(name) || quant::is_bnb_aux_key(name, quantized))
      continue;
    if (t.type != io::dtype::F32 && t.type != io::dtype::F16 && t.type != io::dtype::BF16)
      fail(where, ": tensor '", name, "' is ", io::dtype_name(t.type), "; only F32, F16 and BF16 are read");
    LORALAB_CHECK(!qc.present || qc.skips_modules || !detail::is_bnb_linear_weight(name), where, ": tensor '", name,
                  "' is ", io::dtype_name(t.type), ", but ", config_where, "'s quantization_config (bitsandbytes 4-bit, "
                  "llm_int8_skip_modules null) makes every linear weight 4-bit");
    m.tensors.emplace(name, tensor_f32{t.shape, t.to_float()});
    origin.emplace(name, where);
  }

  // The classifier: tied models drop a stored copy (it must equal the embedding); untied ones need it.
  const std::string lm_head = "lm_head.weight";
  if (m.config.tie_word_embeddings) {
    if (const auto it = m.tensors.find(lm_head); it != m.tensors.end()) {
      const auto emb = m.tensors.find("model.embed_tokens.weight");
      LORALAB_CHECK(emb != m.tensors.end() && emb->second.shape == it->second.shape &&
                        emb->second.data == it->second.data,
                    origin[lm_head], ": tensor '", lm_head, "' differs from model.embed_tokens.weight, but ",
                    config_where, " sets tie_word_embeddings = true");
      m.tensors.erase(it);
    }
  } else if (!m.tensors.contains(lm_head)) {
    fail(config_where, ": field 'tie_word_embeddings' is false (the default when absent), but ", weights.string(),
         " has no tensor '", lm_head, "'");
  }

  // Names and shapes, reported against the file that holds the tensor; missing tensors by validate_model_file.
  std::map<std::string, std::vector<std::int64_t>> expected;
  for (auto& [name, shape] : expected_tensors(m.config)) expected.emplace(std::move(name), std::move(shape));
  for (const auto& [name, t] : m.tensors) {
    const auto it = expected.find(name);
    LORALAB_CHECK(it != expected.end(), origin[name], ": unexpected tensor '", name,
                  "' (not part of a Llama model with the config in ", config_where, ")");
    LORALAB_CHECK(t.shape == it->second, origin[name], ": tensor '", name, "' has shape ",
                  detail::shape_string(t.shape), ", but ", config_where, " implies ", detail::shape_string(it->second));
  }
  validate_model_file(m, weights.string());
  return m;
}

/// Writes a Hugging Face directory that transformers loads as LlamaForCausalLM: config.json and the weights in
/// o.dtype (metadata format=pt), sharded above o.max_shard_bytes as save_pretrained does. Creates `dir`; each file
/// is written atomically. A tied model gets no lm_head.weight.
inline void write_hf_dir(const model_file& m, const std::filesystem::path& dir, const hf_write_options& o = {}) {
  validate_model_file(m, dir.string());
  detail::torch_dtype_name(o.dtype);  // refuses other dtypes before anything is written
  std::vector<detail::hf_entry> entries;
  std::deque<std::vector<std::byte>> keep;
  detail::add_float_entries(m, o.dtype, {}, entries, keep);
  std::uint64_t params = 0;
  for (const auto& [name, t] : m.tensors) params += t.data.size();
  detail::write_hf_files(dir, std::move(entries), params, detail::hf_config_json(m.config, o.dtype), o.max_shard_bytes);
}

/// Writes a pre-quantized directory, as transformers saves a model loaded with BitsAndBytesConfig(load_in_4bit=True,
/// bnb_4bit_quant_type=S's, bnb_4bit_use_double_quant=S::nested, bnb_4bit_compute_dtype=float32): the 7 linear
/// weights of every layer in bnb's 4-bit layout (quantized from their values in o.dtype, which their quant_state
/// records), every other tensor in o.dtype, and config.json with quantization_config. from_pretrained(dir) loads
/// it as is; read_hf_dir gives back the dequantized weights.
template <quant::blockwise_scheme S>
void write_hf_dir_4bit(const model_file& m, const std::filesystem::path& dir, const hf_write_options& o = {}) {
  static_assert(S::bits == 4, "write_hf_dir_4bit: bnb's 4-bit layout needs nf4<B> or fp4<B>, optionally double_quant");
  validate_model_file(m, dir.string());
  const std::string dtype = detail::torch_dtype_name(o.dtype);
  std::vector<detail::hf_entry> entries;
  std::deque<std::vector<std::byte>> keep;
  std::deque<quant::blockwise_tensor<S>> quantized;
  std::deque<std::string> states;
  std::set<std::string> linear;
  std::uint64_t params = 0;
  for (const auto& [name, shape] : expected_tensors(m.config)) {
    if (!detail::is_bnb_linear_weight(name)) {
      params += m.tensors.at(name).data.size();
      continue;
    }
    linear.insert(name);
    const std::vector<float> x = detail::round_to(m.tensors.at(name).data, o.dtype);
    const auto& q = quantized.emplace_back(quant::blockwise_tensor<S>::template quantize<float>(x, shape));
    const std::string& state = states.emplace_back(quant::quant_state_json(quant::quant_state_of(q, dtype)));
    quant::for_each_bnb_4bit_tensor(name, q, state, [&](std::string key, io::dtype type, std::vector<std::int64_t> s,
                                                        std::span<const std::byte> bytes) {
      entries.push_back({std::move(key), type, std::move(s), bytes});
    });
    params += 2 * q.codes().size();  // transformers counts a Params4bit as 2 values per stored byte
  }
  detail::add_float_entries(m, o.dtype, linear, entries, keep);
  const auto config = detail::hf_config_json(m.config, o.dtype, detail::bnb_4bit_quant_config<S>());
  detail::write_hf_files(dir, std::move(entries), params, config, o.max_shard_bytes);
}

}  // namespace loralab::nn

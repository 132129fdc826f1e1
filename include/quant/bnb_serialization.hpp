// SPDX-License-Identifier: MIT
#pragma once
// bitsandbytes' 4-bit checkpoint layout (Linear4bit._save_to_state_dict, QuantState.as_dict(packed=True)),
// so transformers loads what loralab writes and loralab loads what bitsandbytes wrote. For a weight W:
//
//   W                                   U8  [(n+1)/2, 1]   packed codes, element 2k in the high nibble
//   W.absmax                            F32 [nb]           (U8 [nb] codes when double-quantized)
//   W.quant_map                         F32 [16]           get_4bit_type(quant_type); FP4 code 8 is +0.0
//   W.nested_absmax                     F32 [ceil(nb/256)] (double-quantized only)
//   W.nested_quant_map                  F32 [256]          (double-quantized only)
//   W.quant_state.bitsandbytes__nf4     U8  [len]          UTF-8 JSON, keys in bnb's order (see quant_state_json)
//
// The readers take any bnb_tensor_source: one safetensors file, or the shards of a checkpoint together
// (transformers' sharding may put W.absmax in another shard than W).
#include <concepts>
#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "io/json.hpp"
#include "io/python_float.hpp"
#include "io/safetensors.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant/scheme_dispatch.hpp"

namespace loralab::quant {

/// The non-tensor fields bnb stores in W.quant_state.bitsandbytes__<quant_type>.
struct bnb_quant_state {
  std::string quant_type;             ///< "nf4" or "fp4"
  int blocksize = 64;
  std::string dtype = "float32";      ///< dtype of the original weight: float32, float16, bfloat16
  std::vector<std::int64_t> shape;
  bool nested = false;
  int nested_blocksize = 256;
  std::string nested_dtype = "float32";
  float nested_offset = 0.0f;
};

/// json.dumps of the state with bnb's key order and separators, floats as Python's repr.
inline std::string quant_state_json(const bnb_quant_state& s) {
  std::string out = "{\"quant_type\": \"" + s.quant_type + "\", \"blocksize\": " + std::to_string(s.blocksize) +
                    ", \"dtype\": \"" + s.dtype + "\", \"shape\": [";
  for (std::size_t i = 0; i < s.shape.size(); ++i) out += (i ? ", " : "") + std::to_string(s.shape[i]);
  out += "]";
  if (s.nested)
    out += ", \"nested_blocksize\": " + std::to_string(s.nested_blocksize) + ", \"nested_dtype\": \"" + s.nested_dtype +
           "\", \"nested_offset\": " + io::python_float_repr(static_cast<double>(s.nested_offset));
  return out + "}";
}

/// Name of the tensor holding the quant state of weight `name`.
inline std::string quant_state_key(const std::string& name, std::string_view quant_type) {
  return name + ".quant_state.bitsandbytes__" + std::string(quant_type);
}

/// The quant state bnb records for t; `dtype` is the original weight's dtype name.
template <blockwise_scheme S>
bnb_quant_state quant_state_of(const blockwise_tensor<S>& t, std::string dtype = "float32") {
  bnb_quant_state st{std::string(S::quant_type), S::block_size, std::move(dtype), t.shape()};
  if constexpr (S::nested) st.nested = true, st.nested_offset = t.offset();
  return st;
}

/// Calls add(key, dtype, shape, bytes) for every tensor bnb's Linear4bit saves for weight `name`, in its
/// state-dict order: W, absmax, quant_map, [nested_absmax, nested_quant_map], quant_state. The bytes point
/// into t and into `state_json` (quant_state_json(quant_state_of(t, ...))), which must outlive their use.
template <blockwise_scheme S, class F>
void for_each_bnb_4bit_tensor(const std::string& name, const blockwise_tensor<S>& t, const std::string& state_json,
                              F&& add) {
  static_assert(S::bits == 4, "bnb's 4-bit layout needs nf4 or fp4 (optionally double_quant)");
  const auto n = static_cast<std::int64_t>(t.numel());
  const auto nb = static_cast<std::int64_t>(t.num_blocks());
  add(name, io::dtype::U8, std::vector<std::int64_t>{(n + 1) / 2, 1}, std::as_bytes(t.codes()));
  if constexpr (S::nested)
    add(name + ".absmax", io::dtype::U8, std::vector<std::int64_t>{nb}, std::as_bytes(t.absmax_codes()));
  else
    add(name + ".absmax", io::dtype::F32, std::vector<std::int64_t>{nb}, std::as_bytes(t.absmax()));
  add(name + ".quant_map", io::dtype::F32, std::vector<std::int64_t>{16}, std::as_bytes(std::span<const float>(S::code)));
  if constexpr (S::nested) {
    const auto nnb = static_cast<std::int64_t>(t.num_nested_blocks());
    add(name + ".nested_absmax", io::dtype::F32, std::vector<std::int64_t>{nnb}, std::as_bytes(t.nested_absmax()));
    add(name + ".nested_quant_map", io::dtype::F32, std::vector<std::int64_t>{256}, std::as_bytes(t.nested_code()));
  }
  add(quant_state_key(name, S::quant_type), io::dtype::U8,
      std::vector<std::int64_t>{static_cast<std::int64_t>(state_json.size())},
      std::as_bytes(std::span(state_json.data(), state_json.size())));
}

/// A safetensors writer that also owns the small buffers bnb's layout adds (quant maps, JSON blobs).
/// Quantized tensors passed to add_4bit() must stay alive until write().
class bnb_writer {
 public:
  io::safetensors_writer& raw() { return writer_; }

  /// Adds W and its statistics under bnb's key names. `dtype` is the original weight's dtype name.
  template <blockwise_scheme S>
  void add_4bit(const std::string& name, const blockwise_tensor<S>& t, std::string dtype = "float32") {
    const std::string& blob = own(quant_state_json(quant_state_of(t, std::move(dtype))));
    for_each_bnb_4bit_tensor(name, t, blob, [&](std::string key, io::dtype type, std::vector<std::int64_t> shape,
                                                std::span<const std::byte> bytes) {
      writer_.add(std::move(key), type, std::move(shape), bytes);
    });
  }

  /// Keeps a copy alive until write() and returns it.
  const std::string& own(std::string s) { return owned_.emplace_back(std::move(s)); }
  void write(const std::filesystem::path& path) const { writer_.write(path); }

 private:
  io::safetensors_writer writer_;
  std::deque<std::string> owned_;
};

/// Names W of every bnb 4-bit weight in a file (those with a W.quant_state.bitsandbytes__* tensor).
inline std::vector<std::string> bnb_4bit_weights(const io::safetensors_file& f) {
  std::vector<std::string> names;
  for (const auto& t : f.tensors())
    for (std::string_view qt : {"nf4", "fp4"}) {
      const std::string suffix = ".quant_state.bitsandbytes__" + std::string(qt);
      if (t.name.size() > suffix.size() && t.name.ends_with(suffix)) names.push_back(t.name.substr(0, t.name.size() - suffix.size()));
    }
  return names;
}

/// Is `key` one of the auxiliary tensors of some bnb 4-bit weight in `weights`?
inline bool is_bnb_aux_key(const std::string& key, const std::vector<std::string>& weights) {
  for (const auto& w : weights)
    if (key.size() > w.size() && key.starts_with(w) && key[w.size()] == '.') return true;
  return false;
}

/// Where the readers find tensors: path() names it in messages, contains() and at() look tensors up by name.
template <class F>
concept bnb_tensor_source = requires(const F& f, const std::string& key) {
  { f.path() } -> std::convertible_to<std::filesystem::path>;
  { f.contains(key) } -> std::same_as<bool>;
  { f.at(key) } -> std::same_as<const io::tensor_view&>;
};
static_assert(bnb_tensor_source<io::safetensors_file>);

/// Parses W.quant_state.bitsandbytes__*, checking every field; errors name the file and the weight.
template <bnb_tensor_source File>
bnb_quant_state read_bnb_quant_state(const File& f, const std::string& name) {
  const std::string where = f.path().string() + ": " + name;
  const io::tensor_view* blob = nullptr;
  for (std::string_view qt : {"nf4", "fp4"})
    if (f.contains(quant_state_key(name, qt))) blob = &f.at(quant_state_key(name, qt));
  LORALAB_CHECK(blob, where, ": no quant_state.bitsandbytes__nf4/__fp4 tensor: not a bnb 4-bit weight");
  LORALAB_CHECK(blob->type == io::dtype::U8, where, ": quant_state must be U8 bytes");
  const std::string text(reinterpret_cast<const char*>(blob->bytes.data()), blob->bytes.size());
  const auto j = io::parse_json(text, where + ": quant_state");
  LORALAB_CHECK(j.is_object(), where, ": quant_state is not a JSON object: ", text.substr(0, 200), text.size() > 200 ? "…" : "");
  bnb_quant_state s;
  const auto field = [&](const char* key, auto& out) {
    LORALAB_CHECK(j.contains(key), where, ": quant_state lacks field '", key, "'");
    try {
      j.at(key).get_to(out);
    } catch (const nlohmann::json::exception&) {
      fail(where, ": quant_state field '", key, "' has the wrong type: ", j.at(key).dump());
    }
  };
  field("quant_type", s.quant_type);
  field("blocksize", s.blocksize);
  field("dtype", s.dtype);
  field("shape", s.shape);
  LORALAB_CHECK(blob->name.ends_with("__" + s.quant_type), where, ": quant_type '", s.quant_type,
                "' disagrees with key ", blob->name);
  s.nested = j.contains("nested_offset") || j.contains("nested_blocksize");
  if (s.nested) {
    field("nested_blocksize", s.nested_blocksize);
    field("nested_dtype", s.nested_dtype);
    double off = 0;
    field("nested_offset", off);
    s.nested_offset = static_cast<float>(off);
    LORALAB_CHECK(s.nested_blocksize == 256, where, ": nested_blocksize ", s.nested_blocksize, " (bnb uses 256)");
    LORALAB_CHECK(s.nested_dtype == "float32", where, ": nested_dtype '", s.nested_dtype, "' (bnb uses float32)");
  }
  for (auto d : s.shape) LORALAB_CHECK(d >= 0, where, ": negative extent ", d, " in quant_state shape");
  return s;
}

/// Loads weight `name` as scheme S; the file's quant_type, blocksize and nesting must be S's.
template <blockwise_scheme S, bnb_tensor_source File>
blockwise_tensor<S> read_bnb_4bit(const File& f, const std::string& name) {
  const std::string where = f.path().string() + ": " + name;
  const bnb_quant_state st = read_bnb_quant_state(f, name);
  LORALAB_CHECK(st.quant_type == S::quant_type && st.blocksize == S::block_size && st.nested == S::nested, where,
                ": stored as ", st.quant_type, " block ", st.blocksize, st.nested ? " nested" : "", ", read as ",
                scheme_label<S>());
  const auto tensor = [&](const std::string& key, io::dtype type) -> const io::tensor_view& {
    LORALAB_CHECK(f.contains(key), f.path().string(), ": missing tensor '", key, "'");
    const auto& t = f.at(key);
    LORALAB_CHECK(t.type == type, f.path().string(), ": tensor '", key, "' is ", io::dtype_name(t.type), ", bnb stores ",
                  io::dtype_name(type));
    return t;
  };
  // The quant map must be bnb's table (FP4's code 8 may be written as +0.0 or -0.0).
  const std::vector<float> qmap = tensor(name + ".quant_map", io::dtype::F32).template to_vector<float>();
  LORALAB_CHECK(qmap.size() == 16, where, ".quant_map has ", qmap.size(), " entries, expected 16");
  for (int c = 0; c < 16; ++c)
    LORALAB_CHECK(qmap[c] == S::code[c], where, ".quant_map[", c, "] = ", qmap[c], " differs from bnb's ",
                  S::quant_type, " table (", S::code[c], ")");
  std::vector<std::uint8_t> codes = tensor(name, io::dtype::U8).template to_vector<std::uint8_t>();
  try {
    if constexpr (S::nested) {
      return blockwise_tensor<S>::from_parts(st.shape, std::move(codes),
                                             tensor(name + ".absmax", io::dtype::U8).template to_vector<std::uint8_t>(),
                                             tensor(name + ".nested_absmax", io::dtype::F32).template to_vector<float>(),
                                             st.nested_offset,
                                             tensor(name + ".nested_quant_map", io::dtype::F32).template to_vector<float>());
    } else {
      return blockwise_tensor<S>::from_parts(st.shape, std::move(codes),
                                             tensor(name + ".absmax", io::dtype::F32).template to_vector<float>());
    }
  } catch (const loralab::error& e) {
    fail(where, ": ", e.what());
  }
}

/// Reads weight `name` with whatever scheme its quant_state names and calls f(tensor).
template <bnb_tensor_source File, class F>
void visit_bnb_4bit(const File& f, const std::string& name, F&& fn) {
  const bnb_quant_state st = read_bnb_quant_state(f, name);
  dispatch_4bit(st.quant_type, st.blocksize, st.nested,
                [&]<class S>(std::type_identity<S>) { fn(read_bnb_4bit<S>(f, name)); });
}

}  // namespace loralab::quant

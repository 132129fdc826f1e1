// SPDX-License-Identifier: MIT
#pragma once
// GGUF files (llama.cpp's format, versions 2 and 3): read by mmap and validated in full, written atomically.
//
// Layout (all little-endian): "GGUF", uint32 version, uint64 tensor count, uint64 metadata count; the metadata
// (string key, uint32 value type, value); the tensor infos (string name, uint32 n_dims, n_dims uint64 dims
// innermost first — ne[0] is the row length —, uint32 ggml type, uint64 offset); zero padding up to a multiple of
// the alignment ("general.alignment", default 32); the data section. A tensor's offset is relative to the data
// section and a multiple of the alignment. A string is a uint64 byte count and the bytes (no terminator); an array
// is a uint32 element type, a uint64 count and the elements without their type.
//
// Reading trusts nothing: every count and length is checked against the bytes left in the file before anything is
// allocated, arrays of arrays nest at most max_array_depth deep, tensors have at most 4 dims, each > 0, whose
// product fits int64, a known type, an aligned offset, bytes inside the file and no overlap with another tensor.
// Errors start with the file path and name the key or tensor, the value and the limit.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/mapped_file.hpp"
#include "io/gguf_types.hpp"

namespace loralab::io {

/// One tensor of a GGUF file.
struct gguf_tensor_info {
  std::string name;
  ggml_type type;
  std::vector<std::int64_t> dims;  // ne, innermost first: dims[0] is the row length (numpy's last axis)
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
  std::uint64_t offset = 0;  // from the start of the data section
};

namespace detail {

/// "[32, 3]"
inline std::string dims_string(std::span<const std::int64_t> dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

/// A read position in the mapped file; every read is bounds-checked against the end of the file.
struct gguf_cursor {
  const std::byte* base;
  std::uint64_t size;
  std::uint64_t pos;
  const std::string& path;

  std::uint64_t left() const { return size - pos; }
  void need(std::uint64_t n, std::string_view ctx, std::string_view item) const {
    if (n > left())
      fail(path, ": truncated: ", ctx, ": ", item, " needs ", n, " bytes at offset ", pos, ", but the file ends at ",
           size);
  }
  template <class T>
  T read(std::string_view ctx, std::string_view item) {
    need(sizeof(T), ctx, item);
    T v;
    std::memcpy(&v, base + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string read_string(std::string_view ctx, std::string_view item) {
    const auto n = read<std::uint64_t>(ctx, item);
    if (n > left())
      fail(path, ": ", ctx, ": ", item, " length ", n, " exceeds the ", left(), " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(base + pos), static_cast<std::size_t>(n));
    pos += n;
    return s;
  }
};

}  // namespace detail

/// A GGUF file opened read-only: mapped with mmap (MAP_PRIVATE, PROT_READ) and validated in full by open(). The
/// tensor bytes point into the mapping and stay valid while this object lives (moving it keeps them valid).
class gguf_file {
 public:
  /// Arrays of arrays nested deeper than this are refused (an array of arrays of int32 is 2 levels).
  static constexpr std::uint32_t max_array_depth = 8;
  /// ggml's GGML_MAX_DIMS.
  static constexpr std::uint32_t max_dims = 4;
  static constexpr std::uint32_t default_alignment = 32;

  /// Maps and validates `path`; any defect throws loralab::error starting with the path.
  static gguf_file open(const std::filesystem::path& path);

  gguf_file(gguf_file&& o) noexcept { swap(o); }
  gguf_file& operator=(gguf_file&& o) noexcept {
    gguf_file(std::move(o)).swap(*this);
    return *this;
  }
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::uint32_t version() const { return version_; }
  std::uint32_t alignment() const { return alignment_; }
  /// Where the data section starts, from the start of the file.
  std::uint64_t data_offset() const { return data_offset_; }
  std::uint64_t file_size() const { return map_.size(); }

  /// Every key and value, in file order.
  const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return metadata_; }
  /// The value of `key`, or nullptr.
  const gguf_value* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }
  /// The value of `key`; a missing key throws naming it.
  const gguf_value& at(std::string_view key) const {
    const gguf_value* v = find(key);
    if (v == nullptr) fail(path_.string(), ": no metadata key '", key, "'");
    return *v;
  }

  // Typed getters: a missing key or a value of another type throws naming the file, the key and both types.
  std::string get_string(std::string_view key) const { return at(key).get_string(where(key)); }
  std::uint64_t get_uint(std::string_view key) const { return at(key).get_uint(where(key)); }
  std::int64_t get_int(std::string_view key) const { return at(key).get_int(where(key)); }
  double get_float(std::string_view key) const { return at(key).get_float(where(key)); }
  bool get_bool(std::string_view key) const { return at(key).get_bool(where(key)); }
  std::vector<std::string> get_string_array(std::string_view key) const {
    return at(key).get_string_array(where(key));
  }
  std::vector<std::int64_t> get_int_array(std::string_view key) const { return at(key).get_int_array(where(key)); }
  std::vector<double> get_float_array(std::string_view key) const { return at(key).get_float_array(where(key)); }

  // Optional getters: nullopt when the key is absent; a present value of another type still throws.
  std::optional<std::string> find_string(std::string_view key) const { return opt(key, &gguf_file::get_string); }
  std::optional<std::uint64_t> find_uint(std::string_view key) const { return opt(key, &gguf_file::get_uint); }
  std::optional<std::int64_t> find_int(std::string_view key) const { return opt(key, &gguf_file::get_int); }
  std::optional<double> find_float(std::string_view key) const { return opt(key, &gguf_file::get_float); }
  std::optional<bool> find_bool(std::string_view key) const { return opt(key, &gguf_file::get_bool); }
  std::optional<std::vector<std::string>> find_string_array(std::string_view key) const {
    return opt(key, &gguf_file::get_string_array);
  }
  std::optional<std::vector<std::int64_t>> find_int_array(std::string_view key) const {
    return opt(key, &gguf_file::get_int_array);
  }
  std::optional<std::vector<double>> find_float_array(std::string_view key) const {
    return opt(key, &gguf_file::get_float_array);
  }

  /// All tensors, in file order.
  const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }
  const gguf_tensor_info* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  const gguf_tensor_info& tensor(std::string_view name) const {
    const gguf_tensor_info* t = find_tensor(name);
    if (t == nullptr) fail(path_.string(), ": no tensor '", name, "'");
    return *t;
  }
  /// The tensor's bytes in the mapping (valid while this object lives).
  std::span<const std::byte> tensor_bytes(const gguf_tensor_info& t) const {
    const std::uint64_t data_size = map_.size() - data_offset_;
    LORALAB_CHECK(t.offset <= data_size && t.n_bytes <= data_size - t.offset, path_.string(), ": tensor '", t.name,
                  "' at offset ", t.offset, " with ", t.n_bytes, " bytes is not inside this file's data section of ",
                  data_size, " bytes");
    return {map_.data() + data_offset_ + t.offset, static_cast<std::size_t>(t.n_bytes)};
  }
  std::span<const std::byte> tensor_bytes(std::string_view name) const { return tensor_bytes(tensor(name)); }

  /// The elements of an F32, F16 or BF16 tensor as float (all three convert exactly). Block-quantized types are
  /// the quant schemes' business and throw here.
  std::vector<float> tensor_to_float(std::string_view name) const;

 private:
  gguf_file() = default;
  void swap(gguf_file& o) noexcept {
    std::swap(path_, o.path_);
    map_.swap(o.map_);
    std::swap(version_, o.version_);
    std::swap(alignment_, o.alignment_);
    std::swap(data_offset_, o.data_offset_);
    std::swap(metadata_, o.metadata_);
    std::swap(key_index_, o.key_index_);
    std::swap(tensors_, o.tensors_);
    std::swap(tensor_index_, o.tensor_index_);
  }
  std::string where(std::string_view key) const { return path_.string() + ": key '" + std::string(key) + "'"; }
  template <class T>
  std::optional<T> opt(std::string_view key, T (gguf_file::*get)(std::string_view) const) const {
    if (find(key) == nullptr) return std::nullopt;
    return (this->*get)(key);
  }
  void parse();
  gguf_value read_value(detail::gguf_cursor& c, gguf_value_type type, const std::string& ctx,
                        std::uint32_t depth) const;

  std::filesystem::path path_;
  file_mapping map_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = default_alignment;
  std::uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, gguf_value>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<gguf_tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

inline gguf_file gguf_file::open(const std::filesystem::path& path) {
  gguf_file f;
  f.path_ = path;
  f.map_ = file_mapping(path, 24, "the 24-byte GGUF header (truncated)");
  f.parse();  // throws with f owning the mapping, so it is unmapped
  return f;
}

inline gguf_value gguf_file::read_value(detail::gguf_cursor& c, gguf_value_type type, const std::string& ctx,
                                        std::uint32_t depth) const {
  const std::string& p = c.path;
  switch (type) {
    case gguf_value_type::uint8: return c.read<std::uint8_t>(ctx, "uint8 value");
    case gguf_value_type::int8: return c.read<std::int8_t>(ctx, "int8 value");
    case gguf_value_type::uint16: return c.read<std::uint16_t>(ctx, "uint16 value");
    case gguf_value_type::int16: return c.read<std::int16_t>(ctx, "int16 value");
    case gguf_value_type::uint32: return c.read<std::uint32_t>(ctx, "uint32 value");
    case gguf_value_type::int32: return c.read<std::int32_t>(ctx, "int32 value");
    case gguf_value_type::float32: return c.read<float>(ctx, "float32 value");
    case gguf_value_type::uint64: return c.read<std::uint64_t>(ctx, "uint64 value");
    case gguf_value_type::int64: return c.read<std::int64_t>(ctx, "int64 value");
    case gguf_value_type::float64: return c.read<double>(ctx, "float64 value");
    case gguf_value_type::boolean: {
      const auto b = c.read<std::uint8_t>(ctx, "bool value");
      if (b > 1) fail(p, ": ", ctx, ": bool byte ", unsigned(b), " at offset ", c.pos - 1, " is neither 0 nor 1");
      return b == 1;
    }
    case gguf_value_type::string: return c.read_string(ctx, "string");
    case gguf_value_type::array: break;
    default: fail(p, ": ", ctx, ": unknown value type ", static_cast<std::uint32_t>(type), " (the last is 12)");
  }
  if (depth > max_array_depth)
    fail(p, ": ", ctx, ": arrays nested more than ", max_array_depth, " deep (the limit is max_array_depth = ",
         max_array_depth, ")");
  const auto elem = static_cast<gguf_value_type>(c.read<std::uint32_t>(ctx, "array element type"));
  if (static_cast<std::uint32_t>(elem) > 12)
    fail(p, ": ", ctx, ": array of unknown value type ", static_cast<std::uint32_t>(elem), " (the last is 12)");
  const auto count = c.read<std::uint64_t>(ctx, "array count");
  // The smallest encoding of one element; a count the rest of the file cannot hold is refused before allocating.
  const std::size_t scalar = gguf_scalar_size(elem);
  const std::uint64_t min_bytes = scalar != 0 ? scalar : elem == gguf_value_type::string ? 8 : 12;
  if (count > c.left() / min_bytes)
    fail(p, ": ", ctx, ": array count ", count, " of ", gguf_value_type_name(elem), " (at least ", min_bytes,
         " bytes each) exceeds the ", c.left(), " bytes left in the file");
  const auto n = static_cast<std::size_t>(count);
  if (scalar != 0) {
    std::vector<std::byte> raw(c.base + c.pos, c.base + c.pos + n * scalar);
    if (elem == gguf_value_type::boolean)
      for (std::size_t i = 0; i < n; ++i)
        if (std::to_integer<unsigned>(raw[i]) > 1)
          fail(p, ": ", ctx, ": bool element ", i, " is byte ", std::to_integer<unsigned>(raw[i]),
               ", neither 0 nor 1");
    c.pos += n * scalar;
    return gguf_value::raw_array(elem, std::move(raw));
  }
  if (elem == gguf_value_type::string) {
    std::vector<std::string> items;
    items.reserve(n);
    for (std::size_t i = 0; i < n; ++i) items.push_back(c.read_string(ctx, "array string"));
    return gguf_value::array(std::move(items));
  }
  gguf_value::array_items items;
  items.reserve(n);
  for (std::size_t i = 0; i < n; ++i) items.push_back(read_value(c, gguf_value_type::array, ctx, depth + 1));
  return gguf_value::array(gguf_value_type::array, std::move(items));
}

inline void gguf_file::parse() {
  const std::string p = path_.string();
  detail::gguf_cursor c{map_.data(), map_.size(), 0, p};

  if (std::memcmp(map_.data(), "GGUF", 4) != 0) {
    std::string magic;
    for (int i = 0; i < 4; ++i) {
      const auto b = std::to_integer<unsigned char>(map_.data()[i]);
      magic += (b >= 32 && b < 127) ? std::string(1, char(b)) : "\\x" + std::to_string(b);
    }
    fail(p, ": bad magic '", magic, "': not a GGUF file (it starts with 'GGUF')");
  }
  c.pos = 4;
  version_ = c.read<std::uint32_t>("header", "version");
  if (version_ != 2 && version_ != 3) {
    const std::uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3)
      fail(p, ": a big-endian GGUF file (version ", swapped, "); only little-endian is supported");
    fail(p, ": GGUF version ", version_, " is not supported (this reader reads versions 2 and 3)");
  }
  const auto n_tensors = c.read<std::uint64_t>("header", "tensor count");
  const auto n_kv = c.read<std::uint64_t>("header", "metadata count");
  // Smallest encodings: a key is 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8 (a 0-dim tensor, empty name).
  if (n_kv > c.left() / 13)
    fail(p, ": metadata count ", n_kv, " (at least 13 bytes each) exceeds the ", c.left(),
         " bytes left in the file");
  if (n_tensors > c.left() / 24)
    fail(p, ": tensor count ", n_tensors, " (at least 24 bytes each) exceeds the ", c.left(),
         " bytes left in the file");

  metadata_.reserve(static_cast<std::size_t>(n_kv));
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string("metadata key #" + std::to_string(i), "key");
    const std::string ctx = "key '" + key + "'";
    if (key_index_.contains(key)) fail(p, ": ", ctx, " appears more than once");
    const auto type = static_cast<gguf_value_type>(c.read<std::uint32_t>(ctx, "value type"));
    gguf_value v = read_value(c, type, ctx, 1);
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const gguf_value* a = find("general.alignment")) {
    const std::uint64_t align = a->get_uint(where("general.alignment"));
    if (align == 0 || (align & (align - 1)) != 0 || align > std::numeric_limits<std::uint32_t>::max())
      fail(p, ": key 'general.alignment' is ", align, ", not a power of two that fits uint32");
    alignment_ = static_cast<std::uint32_t>(align);
  }

  tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    gguf_tensor_info t;
    t.name = c.read_string("tensor #" + std::to_string(i), "name");
    const std::string ctx = "tensor '" + t.name + "'";
    if (tensor_index_.contains(t.name)) fail(p, ": ", ctx, " appears more than once");
    const auto n_dims = c.read<std::uint32_t>(ctx, "n_dims");
    if (n_dims > max_dims) fail(p, ": ", ctx, ": n_dims ", n_dims, " exceeds the limit of ", max_dims, " (GGML_MAX_DIMS)");
    std::uint64_t n = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = c.read<std::uint64_t>(ctx, "dimension");
      if (ne == 0 || ne > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail(p, ": ", ctx, ": dimension ", d, " is ", ne, "; dims must be > 0 and fit int64");
      t.dims.push_back(static_cast<std::int64_t>(ne));
      if (n > std::uint64_t(std::numeric_limits<std::int64_t>::max()) / ne)
        fail(p, ": ", ctx, ": dims ", detail::dims_string(t.dims), "... overflow: the element count exceeds the "
             "limit of 2^63-1 (int64)");
      n *= ne;
    }
    t.n_elements = n;
    const auto type = c.read<std::uint32_t>(ctx, "ggml type");
    const ggml_type_traits* tr = find_ggml_traits(type);
    if (tr == nullptr) fail(p, ": ", ctx, ": unknown ggml type ", type);
    t.type = tr->type;
    const std::uint64_t row = t.dims.empty() ? 1 : static_cast<std::uint64_t>(t.dims[0]);
    if (row % tr->block_size != 0)
      fail(p, ": ", ctx, ": row length ne[0] = ", row, " is not a multiple of ", tr->name, "'s block size ",
           tr->block_size);
    const std::optional<std::uint64_t> bytes = ggml_nbytes(t.type, n);
    if (!bytes) fail(p, ": ", ctx, ": ", n, " elements of ", tr->name, " overflow the byte count");
    t.n_bytes = *bytes;
    t.offset = c.read<std::uint64_t>(ctx, "data offset");
    if (t.offset % alignment_ != 0)
      fail(p, ": ", ctx, ": data offset ", t.offset, " is not a multiple of the alignment ", alignment_);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  data_offset_ = (c.pos + alignment_ - 1) / alignment_ * alignment_;
  if (tensors_.empty()) return;
  if (data_offset_ > map_.size())
    fail(p, ": truncated: the data section starts at offset ", data_offset_, ", past the end of the file at ",
         map_.size());
  const std::uint64_t data_size = map_.size() - data_offset_;
  for (const gguf_tensor_info& t : tensors_)
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      fail(p, ": tensor '", t.name, "': its ", t.n_bytes, " bytes at data offset ", t.offset,
           " run past the end of the data section (", data_size, " bytes; the file is ", map_.size(), " bytes)");

  std::vector<const gguf_tensor_info*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const gguf_tensor_info& a = *by_offset[i - 1];
    const gguf_tensor_info& b = *by_offset[i];
    if (b.offset < a.offset + a.n_bytes)
      fail(p, ": tensor '", b.name, "' at data offset ", b.offset, " overlaps tensor '", a.name, "' at [", a.offset,
           ", ", a.offset + a.n_bytes, ")");
  }
}

inline std::vector<float> gguf_file::tensor_to_float(std::string_view name) const {
  const gguf_tensor_info& t = tensor(name);
  const std::span<const std::byte> b = tensor_bytes(t);
  std::vector<float> out(static_cast<std::size_t>(t.n_elements));
  const auto convert = [&]<class H>(H) {
    for (std::size_t i = 0; i < out.size(); ++i) {
      H h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      out[i] = static_cast<float>(h);
    }
  };
  switch (t.type) {
    case ggml_type::F32:
      if (!out.empty()) std::memcpy(out.data(), b.data(), out.size() * 4);
      break;
    case ggml_type::F16: convert(Eigen::half{}); break;
    case ggml_type::BF16: convert(Eigen::bfloat16{}); break;
    default:
      fail(path_.string(), ": tensor '", t.name, "' is ", ggml_type_name(t.type),
           "; tensor_to_float converts only F32, F16 and BF16 (block-quantized types are dequantized by the quant "
           "schemes)");
  }
  return out;
}

/// Collects metadata and tensors, then writes one GGUF v3 file: the metadata in the order first set, the tensor
/// infos and data in the order added, each tensor's data padded with zeros to the alignment (general.alignment
/// when set, else 32) — the layout gguf-py's GGUFWriter writes, so the same inputs give the same bytes.
class gguf_writer {
 public:
  /// Sets `key` (replacing a value keeps the key's position).
  void set(std::string key, gguf_value value) {
    const auto it = key_index_.find(key);
    if (it != key_index_.end()) {
      metadata_[it->second].second = std::move(value);
      return;
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }
  /// Sets general.alignment (uint32), which places the data section and every tensor.
  void set_alignment(std::uint32_t alignment) {
    LORALAB_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0, "gguf_writer: alignment ", alignment,
                  " is not a power of two");
    set("general.alignment", gguf_value(alignment));
  }

  /// Adds a tensor of `type` with dims `ne` (innermost first) whose encoded elements are `bytes`. Only the view
  /// is kept: the caller's data must stay alive until write().
  void add_tensor(std::string name, ggml_type type, std::vector<std::int64_t> ne, std::span<const std::byte> bytes) {
    LORALAB_CHECK(!tensor_names_.contains(name), "gguf_writer: tensor '", name, "' added twice");
    LORALAB_CHECK(ne.size() <= gguf_file::max_dims, "gguf_writer: tensor '", name, "' has ", ne.size(),
                  " dims; the limit is ", gguf_file::max_dims);
    std::uint64_t n = 1;
    for (const std::int64_t d : ne) {
      LORALAB_CHECK(d > 0 && n <= std::uint64_t(std::numeric_limits<std::int64_t>::max()) / std::uint64_t(d),
                    "gguf_writer: tensor '", name, "' has dims ", detail::dims_string(ne),
                    "; each must be > 0 and the product fit int64");
      n *= std::uint64_t(d);
    }
    const std::uint32_t block = ggml_traits(type).block_size;
    LORALAB_CHECK(ne.empty() ? block == 1 : ne[0] % block == 0, "gguf_writer: tensor '", name, "': ne[0] of ",
                  detail::dims_string(ne), " is not a multiple of ", ggml_type_name(type), "'s block size ", block);
    const std::optional<std::uint64_t> nbytes = ggml_nbytes(type, n);
    LORALAB_CHECK(nbytes && *nbytes == bytes.size(), "gguf_writer: tensor '", name, "' has ", bytes.size(),
                  " bytes, but dims ", detail::dims_string(ne), " of ", ggml_type_name(type), " need ",
                  nbytes ? std::to_string(*nbytes) : std::string("more than uint64 holds"));
    tensor_names_.insert(name);
    tensors_.push_back({std::move(name), type, std::move(ne), bytes});
  }
  /// Adds an F32 tensor.
  void add_tensor(std::string name, std::vector<std::int64_t> ne, std::span<const float> values) {
    add_tensor(std::move(name), ggml_type::F32, std::move(ne), std::as_bytes(values));
  }

  /// A writer holding everything `f` holds (its tensor bytes are views: `f` must outlive write()).
  static gguf_writer copy_of(const gguf_file& f) {
    gguf_writer w;
    for (const auto& [key, value] : f.metadata()) w.set(key, value);
    for (const auto& t : f.tensors()) w.add_tensor(t.name, t.type, t.dims, f.tensor_bytes(t));
    return w;
  }

  /// Everything before the data section: header, metadata, tensor infos and the padding.
  std::vector<std::byte> header_bytes() const {
    const std::uint64_t align = alignment();
    std::vector<std::byte> out;
    const auto put = [&](const auto& x) {
      const auto* p = reinterpret_cast<const std::byte*>(&x);
      out.insert(out.end(), p, p + sizeof(x));
    };
    out.insert(out.end(), {std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}});
    put(std::uint32_t{3});
    put(std::uint64_t(tensors_.size()));
    put(std::uint64_t(metadata_.size()));
    for (const auto& [key, value] : metadata_) {
      gguf_value(key).append_bytes(out);
      put(static_cast<std::uint32_t>(value.type()));
      value.append_bytes(out);
    }
    std::uint64_t offset = 0;
    for (const entry& t : tensors_) {
      gguf_value(t.name).append_bytes(out);
      put(static_cast<std::uint32_t>(t.ne.size()));
      for (const std::int64_t d : t.ne) put(std::uint64_t(d));
      put(static_cast<std::uint32_t>(t.type));
      put(offset);
      offset += padded(t.bytes.size(), align);
    }
    out.resize(padded(out.size(), align), std::byte{0});
    return out;
  }

  /// Writes the file atomically (temp file beside it, fsync, rename): a failed write leaves what was at `path`.
  void write(const std::filesystem::path& path) const {
    const std::uint64_t align = alignment();
    const std::vector<std::byte> zeros(align, std::byte{0});
    atomic_file out(path);
    out.write(header_bytes());
    for (const entry& t : tensors_) {
      out.write(t.bytes);
      out.write(std::span(zeros).first(padded(t.bytes.size(), align) - t.bytes.size()));
    }
    out.commit();
  }

  const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return metadata_; }

 private:
  struct entry {
    std::string name;
    ggml_type type;
    std::vector<std::int64_t> ne;
    std::span<const std::byte> bytes;
  };
  static std::uint64_t padded(std::uint64_t n, std::uint64_t align) { return (n + align - 1) / align * align; }
  std::uint64_t alignment() const {
    const auto it = key_index_.find("general.alignment");
    if (it == key_index_.end()) return gguf_file::default_alignment;
    const std::uint64_t a = metadata_[it->second].second.get_uint("gguf_writer: key 'general.alignment'");
    LORALAB_CHECK(a != 0 && (a & (a - 1)) == 0 && a <= std::numeric_limits<std::uint32_t>::max(),
                  "gguf_writer: key 'general.alignment' is ", a, ", not a power of two that fits uint32");
    return a;
  }

  std::vector<std::pair<std::string, gguf_value>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<entry> tensors_;
  std::set<std::string, std::less<>> tensor_names_;
};

}  // namespace loralab::io

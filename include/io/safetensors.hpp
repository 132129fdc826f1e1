// SPDX-License-Identifier: MIT
#pragma once
// safetensors files (https://github.com/huggingface/safetensors): read by mmap, written atomically.
//
// Layout: an 8-byte little-endian uint64 N, then N bytes of UTF-8 JSON (right-padded with spaces), then the
// data buffer. The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with offsets
// relative to the data buffer, plus an optional "__metadata__" object of string -> string.
//
// Reading trusts nothing: every field is type-checked, every size is overflow-checked, and the tensors must
// tile the data buffer exactly (no holes, no overlaps, no trailing bytes). Errors start with the file path.
#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/json.hpp"
#include "io/mapped_file.hpp"

namespace loralab::io {

// The format is little-endian and tensors are copied byte for byte; a big-endian host would need byte swaps.
static_assert(std::endian::native == std::endian::little, "loralab::io::safetensors assumes a little-endian host");

/// Element types of the safetensors format (the names are the JSON "dtype" strings).
enum class dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2 };

namespace detail {

struct dtype_row {
  dtype type;
  std::string_view name;
  std::size_t size;  // bytes per element
};

/// One row per dtype, indexed by the enum value (checked below), so name and size cannot drift apart.
inline constexpr std::array<dtype_row, 15> dtype_table = {{
    {dtype::F64, "F64", 8},  {dtype::F32, "F32", 4},  {dtype::F16, "F16", 2},          {dtype::BF16, "BF16", 2},
    {dtype::I64, "I64", 8},  {dtype::I32, "I32", 4},  {dtype::I16, "I16", 2},          {dtype::I8, "I8", 1},
    {dtype::U64, "U64", 8},  {dtype::U32, "U32", 4},  {dtype::U16, "U16", 2},          {dtype::U8, "U8", 1},
    {dtype::BOOL, "BOOL", 1}, {dtype::F8_E4M3, "F8_E4M3", 1}, {dtype::F8_E5M2, "F8_E5M2", 1},
}};

constexpr bool dtype_table_in_enum_order() {
  for (std::size_t i = 0; i < dtype_table.size(); ++i)
    if (static_cast<std::size_t>(dtype_table[i].type) != i) return false;
  return true;
}
static_assert(dtype_table_in_enum_order(), "dtype_table rows must follow the order of enum class dtype");

template <class>
inline constexpr bool dependent_false = false;

/// "[2, 3]"
inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

/// Number of elements of `shape` (1 for a scalar), or nullopt if the product overflows size_t.
/// A zero dimension makes the product 0 however large the others are, so it is tested first.
inline std::optional<std::size_t> checked_numel(const std::vector<std::int64_t>& shape) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  std::size_t n = 1;
  for (const std::int64_t d : shape) {
    const auto u = static_cast<std::size_t>(d);
    if (n > std::numeric_limits<std::size_t>::max() / u) return std::nullopt;
    n *= u;
  }
  return n;
}

/// Bytes of `numel` elements of `type`, or nullopt on overflow.
inline std::optional<std::size_t> checked_nbytes(std::size_t numel, std::size_t elem_size) {
  if (numel > std::numeric_limits<std::size_t>::max() / elem_size) return std::nullopt;
  return numel * elem_size;
}

}  // namespace detail

/// "F32", "BF16", ...
inline std::string_view dtype_name(dtype t) { return detail::dtype_table[static_cast<std::size_t>(t)].name; }

/// Bytes per element.
inline std::size_t dtype_size(dtype t) { return detail::dtype_table[static_cast<std::size_t>(t)].size; }

/// The dtype spelled `name` ("F32"), or nullopt for a name the format does not define.
inline std::optional<dtype> parse_dtype(std::string_view name) {
  for (const auto& row : detail::dtype_table)
    if (row.name == name) return row.type;
  return std::nullopt;
}

/// The dtype that stores a C++ element type T byte for byte.
template <class T>
constexpr dtype dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, double>) return dtype::F64;
  else if constexpr (std::is_same_v<U, float>) return dtype::F32;
  else if constexpr (std::is_same_v<U, Eigen::half>) return dtype::F16;
  else if constexpr (std::is_same_v<U, Eigen::bfloat16>) return dtype::BF16;
  else if constexpr (std::is_same_v<U, std::int64_t>) return dtype::I64;
  else if constexpr (std::is_same_v<U, std::int32_t>) return dtype::I32;
  else if constexpr (std::is_same_v<U, std::int16_t>) return dtype::I16;
  else if constexpr (std::is_same_v<U, std::int8_t>) return dtype::I8;
  else if constexpr (std::is_same_v<U, std::uint64_t>) return dtype::U64;
  else if constexpr (std::is_same_v<U, std::uint32_t>) return dtype::U32;
  else if constexpr (std::is_same_v<U, std::uint16_t>) return dtype::U16;
  else if constexpr (std::is_same_v<U, std::uint8_t>) return dtype::U8;
  else if constexpr (std::is_same_v<U, bool>) return dtype::BOOL;
  else
    static_assert(detail::dependent_false<T>,
                  "dtype_of<T>: T has no safetensors dtype; use float, double, Eigen::half, Eigen::bfloat16, "
                  "bool or a fixed-width std::(u)intN_t");
}

/// One tensor of an open file: its bytes point into the file's mapping and live as long as the file object.
struct tensor_view {
  std::string name;
  dtype type;
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::span<const std::byte> bytes;

  /// Product of the shape: 1 for a scalar, 0 when any dimension is 0.
  std::size_t numel() const {
    std::size_t n = 1;
    for (const std::int64_t d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }

  /// The elements copied out. T must be exactly the stored dtype (dtype_of<T>() == type); the data may be
  /// unaligned in the file, so it is memcpy'd, never reinterpret_cast.
  template <class T>
  std::vector<T> to_vector() const;

  /// F32, F16 or BF16 elements as float (all three convert exactly). Other dtypes throw.
  std::vector<float> to_float() const;
};

template <class T>
std::vector<T> tensor_view::to_vector() const {
  constexpr dtype want = dtype_of<T>();
  if (type != want)
    fail("tensor '", name, "' is ", dtype_name(type), ", not ", dtype_name(want), " as requested");
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) == detail::dtype_table[std::size_t(want)].size,
                "element type must be a plain copy of the stored bytes");
  const std::size_t n = numel();
  LORALAB_CHECK(bytes.size() == n * sizeof(T), "tensor '", name, "': ", bytes.size(), " bytes for ", n,
                " elements of ", dtype_name(type));
  if constexpr (std::is_same_v<T, bool>) {
    // std::vector<bool> has no data(); any non-zero byte reads as true, as in NumPy and PyTorch.
    std::vector<bool> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = bytes[i] != std::byte{0};
    return out;
  } else {
    std::vector<T> out(n);
    if (n != 0) std::memcpy(out.data(), bytes.data(), n * sizeof(T));
    return out;
  }
}

inline std::vector<float> tensor_view::to_float() const {
  switch (type) {
    case dtype::F32: return to_vector<float>();
    case dtype::F16: {
      std::vector<float> out(numel());
      for (std::size_t i = 0; i < out.size(); ++i) {
        Eigen::half h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = static_cast<float>(h);
      }
      return out;
    }
    case dtype::BF16: {
      std::vector<float> out(numel());
      for (std::size_t i = 0; i < out.size(); ++i) {
        Eigen::bfloat16 h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = static_cast<float>(h);
      }
      return out;
    }
    default:
      fail("tensor '", name, "' is ", dtype_name(type), "; to_float() converts only F32, F16 and BF16");
  }
}
static_assert(sizeof(Eigen::half) == 2 && sizeof(Eigen::bfloat16) == 2 && std::is_trivially_copyable_v<Eigen::half> &&
              std::is_trivially_copyable_v<Eigen::bfloat16>);

/// A safetensors file opened read-only: mapped with mmap (MAP_PRIVATE, PROT_READ) and validated in full by
/// open(). The tensor views point into the mapping, so they stay valid until this object is destroyed
/// (moving it keeps them valid). Replacing the file on disk by rename, as safetensors_writer does, leaves an
/// open mapping reading the old contents.
class safetensors_file {
 public:
  /// Headers larger than this are refused as corrupt (the reference implementation uses the same limit).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  /// Maps and validates `path`; any defect throws loralab::error starting with the path.
  static safetensors_file open(const std::filesystem::path& path);

  safetensors_file(safetensors_file&& o) noexcept { swap(o); }
  safetensors_file& operator=(safetensors_file&& o) noexcept {
    safetensors_file(std::move(o)).swap(*this);
    return *this;
  }
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// The "__metadata__" object (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// All tensors, in order of their data offset.
  const std::vector<tensor_view>& tensors() const { return tensors_; }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  const tensor_view& at(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) fail(path_.string(), ": no tensor '", name, "'");
    return tensors_[it->second];
  }

 private:
  safetensors_file() = default;
  void swap(safetensors_file& o) noexcept {
    std::swap(path_, o.path_);
    map_.swap(o.map_);
    std::swap(metadata_, o.metadata_);
    std::swap(tensors_, o.tensors_);
    std::swap(index_, o.index_);
  }
  void parse();

  std::filesystem::path path_;
  file_mapping map_;
  std::map<std::string, std::string> metadata_;
  std::vector<tensor_view> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
};

inline safetensors_file safetensors_file::open(const std::filesystem::path& path) {
  safetensors_file f;
  f.path_ = path;
  f.map_ = file_mapping(path, 8, "the 8-byte header length");
  f.parse();  // throws with f owning the mapping, so it is unmapped
  return f;
}

inline void safetensors_file::parse() {
  using json = nlohmann::json;
  const std::string p = path_.string();

  std::uint64_t n = 0;
  std::memcpy(&n, map_.data(), 8);
  // The limit is tested first so that 8 + n below cannot overflow.
  if (n > max_header_bytes) fail(p, ": header length ", n, " exceeds the limit of ", max_header_bytes, " bytes");
  if (n > map_.size() - 8)
    fail(p, ": header length ", n, " runs past the end of the file (", map_.size() - 8, " bytes follow the length)");
  const auto* text = reinterpret_cast<const char*>(map_.data() + 8);
  const std::byte* data = map_.data() + 8 + n;
  const std::uint64_t data_size = map_.size() - 8 - n;

  // nlohmann keeps only the last of duplicate keys, so top-level duplicates are caught while parsing.
  std::set<std::string> seen;
  std::string duplicate;
  const json::parser_callback_t note_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + n, json_depth_limit(p + ": header", note_duplicates));
  } catch (const json::exception& e) {
    fail(p, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(p, ": header is a JSON ", header.type_name(), ", not an object");
  if (!duplicate.empty()) fail(p, ": key '", duplicate, "' appears more than once in the header");

  // A non-negative JSON integer (nlohmann parses those as number_unsigned; negatives and 1.0 are other types).
  const auto as_uint = [](const json& v) -> std::optional<std::uint64_t> {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    return std::nullopt;
  };

  struct placed {
    std::uint64_t begin, end;
    tensor_view view;
  };
  std::vector<placed> found;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // the reference reader treats null as "no metadata"
      if (!value.is_object()) fail(p, ": __metadata__ is a JSON ", value.type_name(), ", not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(p, ": __metadata__ '", mk, "' is a JSON ", mv.type_name(), ", not a string");
        metadata_.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    const std::string where = p + ": tensor '" + key + "'";
    if (!value.is_object()) fail(where, ": entry is a JSON ", value.type_name(), ", not an object");
    // A named reference: clang before 16 cannot capture a structured binding in a lambda (C++20's P1091).
    const json& entry = value;
    const auto field = [&](const char* name) -> const json& {
      const auto it = entry.find(name);
      if (it == entry.end()) fail(where, ": missing \"", name, "\"");
      return *it;
    };

    const json& jtype = field("dtype");
    if (!jtype.is_string()) fail(where, ": dtype is a JSON ", jtype.type_name(), ", not a string");
    const std::optional<dtype> type = parse_dtype(jtype.get_ref<const std::string&>());
    if (!type) fail(where, ": unknown dtype \"", jtype.get_ref<const std::string&>(), "\"");

    const json& jshape = field("shape");
    if (!jshape.is_array()) fail(where, ": shape is a JSON ", jshape.type_name(), ", not an array");
    std::vector<std::int64_t> shape;
    for (std::size_t i = 0; i < jshape.size(); ++i) {
      const std::optional<std::uint64_t> d = as_uint(jshape[i]);
      if (!d || *d > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail(where, ": shape[", i, "] is ", jshape[i].dump(), ", not a non-negative integer");
      shape.push_back(static_cast<std::int64_t>(*d));
    }

    const json& joff = field("data_offsets");
    if (!joff.is_array() || joff.size() != 2)
      fail(where, ": data_offsets is ", joff.dump(), ", not [begin, end]");
    const std::optional<std::uint64_t> begin = as_uint(joff[0]), end = as_uint(joff[1]);
    if (!begin || !end) fail(where, ": data_offsets ", joff.dump(), " are not non-negative integers");
    if (*begin > *end) fail(where, ": data_offsets [", *begin, ", ", *end, "] end before they begin");
    if (*end > data_size)
      fail(where, ": data_offsets [", *begin, ", ", *end, "] run past the data buffer of ", data_size, " bytes");

    const std::optional<std::size_t> numel = detail::checked_numel(shape);
    const std::optional<std::size_t> nbytes = numel ? detail::checked_nbytes(*numel, dtype_size(*type)) : numel;
    if (!nbytes) fail(where, ": shape ", detail::shape_string(shape), " of ", dtype_name(*type), " overflows");
    if (*end - *begin != *nbytes)
      fail(where, ": data_offsets [", *begin, ", ", *end, "] hold ", *end - *begin, " bytes, but shape ",
           detail::shape_string(shape), " of ", dtype_name(*type), " needs ", *nbytes);

    found.push_back({*begin, *end,
                     tensor_view{key, *type, std::move(shape),
                                 std::span<const std::byte>(data + *begin, static_cast<std::size_t>(*end - *begin))}});
  }

  // Sorted by offset (stable, so empty tensors sharing an offset keep name order), the tensors must cover
  // [0, data_size) exactly: each begins where the previous one ends.
  std::stable_sort(found.begin(), found.end(),
                   [](const placed& a, const placed& b) { return std::pair(a.begin, a.end) < std::pair(b.begin, b.end); });
  std::uint64_t pos = 0;
  const std::string* prev = nullptr;
  for (const placed& t : found) {
    if (t.begin > pos)
      fail(p, ": bytes [", pos, ", ", t.begin, ") of the data buffer, ",
           prev ? "between tensor '" + *prev + "' and" : std::string("before"), " tensor '", t.view.name,
           "', belong to no tensor");
    if (t.begin < pos)
      fail(p, ": tensor '", t.view.name, "' at [", t.begin, ", ", t.end, "] overlaps tensor '", *prev,
           "', which ends at ", pos);
    pos = t.end;
    prev = &t.view.name;
  }
  if (pos != data_size)
    fail(p, ": ", data_size - pos, " trailing bytes: the tensors end at offset ", pos, " of a ", data_size,
         "-byte data buffer");

  tensors_.reserve(found.size());
  for (placed& t : found) {
    index_.emplace(t.view.name, tensors_.size());
    tensors_.push_back(std::move(t.view));
  }
}

/// Collects tensors and metadata, then writes one safetensors file. The header lists "__metadata__" first
/// (when set), then the tensors in the order added, whose data follow one another without gaps; the header
/// is padded with spaces so that the data buffer starts at a multiple of 8 bytes.
class safetensors_writer {
 public:
  /// Adds a tensor of `type` and `shape` whose elements are `bytes`. Only the view is kept: the caller's data
  /// must stay alive until write(). Throws on a duplicate or reserved name, a negative dimension, or a byte
  /// count that is not numel * dtype_size.
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    LORALAB_CHECK(name != "__metadata__", "safetensors_writer: '__metadata__' is reserved, not a tensor name");
    LORALAB_CHECK(!names_.contains(name), "safetensors_writer: tensor '", name, "' added twice");
    for (const std::int64_t d : shape)
      LORALAB_CHECK(d >= 0, "safetensors_writer: tensor '", name, "' has negative dimension in shape ",
                    detail::shape_string(shape));
    const std::optional<std::size_t> numel = detail::checked_numel(shape);
    const std::optional<std::size_t> nbytes = numel ? detail::checked_nbytes(*numel, dtype_size(type)) : numel;
    LORALAB_CHECK(nbytes && *nbytes == bytes.size(), "safetensors_writer: tensor '", name, "' has ", bytes.size(),
                  " bytes, but shape ", detail::shape_string(shape), " of ", dtype_name(type), " needs ",
                  nbytes ? std::to_string(*nbytes) : std::string("more than fits in memory"));
    names_.insert(name);
    entries_.push_back({std::move(name), type, std::move(shape), bytes});
  }

  /// Adds a tensor of dtype_of<T>() (a vector converts when T is given: `add<float>("w", {N, K}, v)`).
  template <class T>
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> data) {
    add(std::move(name), dtype_of<T>(), std::move(shape), std::as_bytes(data));
  }

  /// Sets (or replaces) one "__metadata__" entry.
  void set_metadata(std::string key, std::string value) { metadata_.insert_or_assign(std::move(key), std::move(value)); }

  /// Writes the file atomically (temp file beside it, fsync, rename): an interrupted or failed write leaves
  /// whatever was at `path` before, and no temp file.
  void write(const std::filesystem::path& path) const {
    using json = nlohmann::ordered_json;  // keeps "__metadata__" first and tensors in order added
    json header = json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const entry& e : entries_) {
      json info = json::object();
      info["dtype"] = dtype_name(e.type);
      info["shape"] = e.shape;
      info["data_offsets"] = json::array({offset, offset + e.bytes.size()});
      header[e.name] = std::move(info);
      offset += e.bytes.size();
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const json::exception& e) {  // a name or metadata string that is not UTF-8
      fail(path.string(), ": cannot encode the header: ", e.what());
    }
    text.append((8 - (8 + text.size()) % 8) % 8, ' ');

    std::array<std::byte, 8> length{};
    const std::uint64_t n = text.size();
    std::memcpy(length.data(), &n, 8);

    atomic_file out(path);
    out.write(length);
    out.write(text);
    for (const entry& e : entries_) out.write(e.bytes);
    out.commit();
  }

 private:
  struct entry {
    std::string name;
    dtype type;
    std::vector<std::int64_t> shape;
    std::span<const std::byte> bytes;
  };
  std::vector<entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace loralab::io

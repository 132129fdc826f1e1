// SPDX-License-Identifier: MIT
#pragma once
// GGUF vocabulary (llama.cpp's file format, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): the metadata
// value types, the ggml tensor types with one traits row each (name, elements per block, bytes per block), and
// gguf_value, which holds any metadata value, arrays of any type and arrays of arrays included.
// The reader and writer are in io/gguf.hpp.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "core/check.hpp"

namespace loralab::io {

static_assert(std::endian::native == std::endian::little, "loralab::io::gguf assumes a little-endian host");

/// Metadata value types, numbered as in the file.
enum class gguf_value_type : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7, string = 8,
  array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

/// "uint8", …, "float64"; "type 13" for a number the format does not define.
inline std::string gguf_value_type_name(gguf_value_type t) {
  static constexpr std::array<std::string_view, 13> names = {"uint8",  "int8",  "uint16",  "int16", "uint32",
                                                             "int32",  "float32", "bool",  "string", "array",
                                                             "uint64", "int64", "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < names.size() ? std::string(names[i]) : "type " + std::to_string(i);
}

/// Bytes of one element of a scalar type in the file (0 for string and array, whose size varies).
constexpr std::size_t gguf_scalar_size(gguf_value_type t) {
  switch (t) {
    case gguf_value_type::uint8: case gguf_value_type::int8: case gguf_value_type::boolean: return 1;
    case gguf_value_type::uint16: case gguf_value_type::int16: return 2;
    case gguf_value_type::uint32: case gguf_value_type::int32: case gguf_value_type::float32: return 4;
    case gguf_value_type::uint64: case gguf_value_type::int64: case gguf_value_type::float64: return 8;
    default: return 0;
  }
}
constexpr bool gguf_is_integer(gguf_value_type t) {
  return gguf_scalar_size(t) != 0 && t != gguf_value_type::float32 && t != gguf_value_type::float64 &&
         t != gguf_value_type::boolean;
}
constexpr bool gguf_is_signed(gguf_value_type t) {
  return t == gguf_value_type::int8 || t == gguf_value_type::int16 || t == gguf_value_type::int32 ||
         t == gguf_value_type::int64;
}

/// ggml tensor element types, numbered as in the file (gaps are types ggml removed).
enum class ggml_type : std::uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34,
  TQ2_0 = 35, MXFP4 = 39,
};

/// One row per ggml type: a tensor of n elements (n a multiple of block_size) takes n / block_size * block_bytes.
struct ggml_type_traits {
  ggml_type type;
  std::string_view name;
  std::uint32_t block_size;   // elements per block
  std::uint32_t block_bytes;  // bytes per block
};

namespace detail {
inline constexpr std::uint32_t qk_k = 256;  // super-block size of the K-quants and the IQ types
/// Sizes as in ggml's type_traits (ggml/src/ggml.c) and gguf-py's GGML_QUANT_SIZES.
inline constexpr std::array<ggml_type_traits, 32> ggml_traits_table = {{
    {ggml_type::F32, "F32", 1, 4},
    {ggml_type::F16, "F16", 1, 2},
    {ggml_type::Q4_0, "Q4_0", 32, 2 + 16},
    {ggml_type::Q4_1, "Q4_1", 32, 2 + 2 + 16},
    {ggml_type::Q5_0, "Q5_0", 32, 2 + 4 + 16},
    {ggml_type::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {ggml_type::Q8_0, "Q8_0", 32, 2 + 32},
    {ggml_type::Q8_1, "Q8_1", 32, 4 + 4 + 32},
    {ggml_type::Q2_K, "Q2_K", qk_k, 2 + 2 + qk_k / 16 + qk_k / 4},
    {ggml_type::Q3_K, "Q3_K", qk_k, 2 + qk_k / 4 + qk_k / 8 + 12},
    {ggml_type::Q4_K, "Q4_K", qk_k, 2 + 2 + qk_k / 2 + 12},
    {ggml_type::Q5_K, "Q5_K", qk_k, 2 + 2 + qk_k / 2 + qk_k / 8 + 12},
    {ggml_type::Q6_K, "Q6_K", qk_k, 2 + qk_k / 2 + qk_k / 4 + qk_k / 16},
    {ggml_type::Q8_K, "Q8_K", qk_k, 4 + qk_k + qk_k / 8},
    {ggml_type::IQ2_XXS, "IQ2_XXS", qk_k, 2 + qk_k / 4},
    {ggml_type::IQ2_XS, "IQ2_XS", qk_k, 2 + qk_k / 4 + qk_k / 32},
    {ggml_type::IQ3_XXS, "IQ3_XXS", qk_k, 2 + qk_k / 4 + qk_k / 8},
    {ggml_type::IQ1_S, "IQ1_S", qk_k, 2 + qk_k / 8 + qk_k / 16},
    {ggml_type::IQ4_NL, "IQ4_NL", 32, 2 + 16},
    {ggml_type::IQ3_S, "IQ3_S", qk_k, 2 + qk_k / 4 + qk_k / 8 + qk_k / 32 + 4},
    {ggml_type::IQ2_S, "IQ2_S", qk_k, 2 + qk_k / 4 + qk_k / 16},
    {ggml_type::IQ4_XS, "IQ4_XS", qk_k, 2 + 2 + qk_k / 2 + qk_k / 64},
    {ggml_type::I8, "I8", 1, 1},
    {ggml_type::I16, "I16", 1, 2},
    {ggml_type::I32, "I32", 1, 4},
    {ggml_type::I64, "I64", 1, 8},
    {ggml_type::F64, "F64", 1, 8},
    {ggml_type::IQ1_M, "IQ1_M", qk_k, qk_k / 8 + qk_k / 16 + qk_k / 32},
    {ggml_type::BF16, "BF16", 1, 2},
    {ggml_type::TQ1_0, "TQ1_0", qk_k, 2 + 4 * 13},
    {ggml_type::TQ2_0, "TQ2_0", qk_k, 2 + 64},
    {ggml_type::MXFP4, "MXFP4", 32, 1 + 16},
}};
static_assert(ggml_traits_table[2].block_bytes == 18 && ggml_traits_table[3].block_bytes == 20 &&
              ggml_traits_table[6].block_bytes == 34 && ggml_traits_table[12].block_bytes == 210,
              "ggml block sizes: Q4_0 18, Q4_1 20, Q8_0 34, Q6_K 210 bytes");
}  // namespace detail

/// The traits row of type number `t`, or nullptr for a number ggml does not define (or no longer does).
constexpr const ggml_type_traits* find_ggml_traits(std::uint32_t t) {
  for (const auto& row : detail::ggml_traits_table)
    if (static_cast<std::uint32_t>(row.type) == t) return &row;
  return nullptr;
}
/// The traits row of `t` (every enumerator has one).
constexpr const ggml_type_traits& ggml_traits(ggml_type t) { return *find_ggml_traits(static_cast<std::uint32_t>(t)); }
inline std::string_view ggml_type_name(ggml_type t) { return ggml_traits(t).name; }
inline std::ostream& operator<<(std::ostream& os, ggml_type t) { return os << ggml_type_name(t); }
inline std::ostream& operator<<(std::ostream& os, gguf_value_type t) { return os << gguf_value_type_name(t); }

/// Bytes of a tensor of `n_elements` elements of `t`, or nullopt when n_elements is not a whole number of blocks
/// or the size overflows uint64.
constexpr std::optional<std::uint64_t> ggml_nbytes(ggml_type t, std::uint64_t n_elements) {
  const ggml_type_traits& tr = ggml_traits(t);
  if (n_elements % tr.block_size != 0) return std::nullopt;
  const std::uint64_t blocks = n_elements / tr.block_size;
  if (blocks > std::numeric_limits<std::uint64_t>::max() / tr.block_bytes) return std::nullopt;
  return blocks * tr.block_bytes;
}

/// Any GGUF metadata value: a scalar of the 12 scalar types, a string, or an array whose elements share one type
/// (scalars, strings or arrays, nested to any depth the reader allows). Numeric and bool arrays keep the file's
/// little-endian bytes (so a 49152-entry token_type array costs 4 bytes an entry, not a value object each).
/// The getters take `where` (for example "model.gguf: key 'llama.block_count'") and throw loralab::error naming
/// it with the expected and the actual type.
class gguf_value {
 public:
  using array_items = std::vector<gguf_value>;

  gguf_value() : gguf_value(std::string()) {}
  gguf_value(std::uint8_t v) : type_(gguf_value_type::uint8), v_(std::uint64_t(v)) {}
  gguf_value(std::int8_t v) : type_(gguf_value_type::int8), v_(std::int64_t(v)) {}
  gguf_value(std::uint16_t v) : type_(gguf_value_type::uint16), v_(std::uint64_t(v)) {}
  gguf_value(std::int16_t v) : type_(gguf_value_type::int16), v_(std::int64_t(v)) {}
  gguf_value(std::uint32_t v) : type_(gguf_value_type::uint32), v_(std::uint64_t(v)) {}
  gguf_value(std::int32_t v) : type_(gguf_value_type::int32), v_(std::int64_t(v)) {}
  gguf_value(float v) : type_(gguf_value_type::float32), v_(double(v)) {}
  gguf_value(bool v) : type_(gguf_value_type::boolean), v_(v) {}
  gguf_value(std::string v) : type_(gguf_value_type::string), v_(std::move(v)) {}
  gguf_value(std::string_view v) : gguf_value(std::string(v)) {}
  gguf_value(const char* v) : gguf_value(std::string(v)) {}  // not bool
  gguf_value(std::uint64_t v) : type_(gguf_value_type::uint64), v_(v) {}
  gguf_value(std::int64_t v) : type_(gguf_value_type::int64), v_(v) {}
  gguf_value(double v) : type_(gguf_value_type::float64), v_(v) {}

  /// An array of scalars of the C++ type T (one of the constructors' types; bool is stored as 0/1 bytes).
  template <class T>
    requires(std::is_arithmetic_v<T>)
  static gguf_value array(const std::vector<T>& items) {
    const gguf_value_type et = gguf_value(T{}).type();
    std::vector<std::byte> raw(items.size() * sizeof(T));
    for (std::size_t i = 0; i < items.size(); ++i) {
      const T v = items[i];
      std::memcpy(raw.data() + i * sizeof(T), &v, sizeof(T));
    }
    return raw_array(et, std::move(raw));
  }
  /// An array of strings.
  static gguf_value array(std::vector<std::string> items) {
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.elem_ = gguf_value_type::string;
    v.v_ = std::move(items);
    return v;
  }
  /// An array of `elem` values (any type, arrays included); every item must be of type `elem`.
  static gguf_value array(gguf_value_type elem, array_items items) {
    for (std::size_t i = 0; i < items.size(); ++i)
      LORALAB_CHECK(items[i].type() == elem, "gguf_value::array: item ", i, " is ",
                    gguf_value_type_name(items[i].type()), ", not ", gguf_value_type_name(elem));
    if (elem == gguf_value_type::string) {
      std::vector<std::string> s;
      for (auto& item : items) s.push_back(std::get<std::string>(std::move(item.v_)));
      return array(std::move(s));
    }
    if (elem != gguf_value_type::array) {
      std::vector<std::byte> raw;
      for (const auto& item : items) item.append_scalar_bytes(raw);
      return raw_array(elem, std::move(raw));
    }
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.elem_ = elem;
    v.v_ = std::move(items);
    return v;
  }
  /// An array of the scalar type `elem` from its little-endian bytes (size a multiple of the element size).
  static gguf_value raw_array(gguf_value_type elem, std::vector<std::byte> bytes) {
    const std::size_t es = gguf_scalar_size(elem);
    LORALAB_CHECK(es != 0 && bytes.size() % es == 0, "gguf_value::raw_array: ", bytes.size(), " bytes of ",
                  gguf_value_type_name(elem));
    gguf_value v;
    v.type_ = gguf_value_type::array;
    v.elem_ = elem;
    v.v_ = std::move(bytes);
    return v;
  }

  gguf_value_type type() const { return type_; }
  bool is_array() const { return type_ == gguf_value_type::array; }
  /// The element type of an array (meaningless for scalars).
  gguf_value_type element_type() const { return elem_; }
  /// "uint32", "string", "array of string", "array of array".
  std::string type_name() const {
    return is_array() ? "array of " + gguf_value_type_name(elem_) : gguf_value_type_name(type_);
  }
  /// Number of elements of an array; 1 for a scalar.
  std::size_t size() const {
    if (!is_array()) return 1;
    if (const auto* raw = std::get_if<std::vector<std::byte>>(&v_)) return raw->size() / gguf_scalar_size(elem_);
    if (const auto* s = std::get_if<std::vector<std::string>>(&v_)) return s->size();
    return std::get<array_items>(v_).size();
  }
  /// Element i of an array, as a value of its own (a copy).
  gguf_value at(std::size_t i, std::string_view where = "gguf value") const {
    if (!is_array()) fail(where, " is ", type_name(), ", not an array");
    if (i >= size()) fail(where, ": index ", i, " is past the array's ", size(), " elements");
    if (const auto* s = std::get_if<std::vector<std::string>>(&v_)) return gguf_value((*s)[i]);
    if (const auto* a = std::get_if<array_items>(&v_)) return (*a)[i];
    return scalar_at(i);
  }
  /// The bytes of a numeric or bool array, as in the file (empty for other values).
  std::span<const std::byte> raw_bytes() const {
    if (const auto* raw = std::get_if<std::vector<std::byte>>(&v_)) return *raw;
    return {};
  }
  /// The items of an array of arrays (empty for other values).
  const array_items& items() const {
    static const array_items none;
    const auto* a = std::get_if<array_items>(&v_);
    return a ? *a : none;
  }

  const std::string& get_string(std::string_view where = "gguf value") const {
    if (type_ != gguf_value_type::string) wrong_type(where, "string");
    return std::get<std::string>(v_);
  }
  /// Any integer type holding a value >= 0.
  std::uint64_t get_uint(std::string_view where = "gguf value") const {
    if (!gguf_is_integer(type_)) wrong_type(where, "an unsigned integer");
    if (const auto* i = std::get_if<std::int64_t>(&v_)) {
      if (*i < 0) fail(where, " is ", *i, " (", type_name(), "), not a non-negative integer");
      return static_cast<std::uint64_t>(*i);
    }
    return std::get<std::uint64_t>(v_);
  }
  /// Any integer type holding a value that fits int64.
  std::int64_t get_int(std::string_view where = "gguf value") const {
    if (!gguf_is_integer(type_)) wrong_type(where, "an integer");
    if (const auto* u = std::get_if<std::uint64_t>(&v_)) {
      if (*u > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        fail(where, " is ", *u, " (", type_name(), "), which does not fit int64");
      return static_cast<std::int64_t>(*u);
    }
    return std::get<std::int64_t>(v_);
  }
  /// float32 or float64 (float32 converts exactly); integers too, as the nearest double.
  double get_float(std::string_view where = "gguf value") const {
    if (const auto* d = std::get_if<double>(&v_)) return *d;
    if (gguf_is_integer(type_)) {
      if (const auto* u = std::get_if<std::uint64_t>(&v_)) return static_cast<double>(*u);
      return static_cast<double>(std::get<std::int64_t>(v_));
    }
    wrong_type(where, "a number");
  }
  bool get_bool(std::string_view where = "gguf value") const {
    if (type_ != gguf_value_type::boolean) wrong_type(where, "bool");
    return std::get<bool>(v_);
  }
  std::vector<std::string> get_string_array(std::string_view where = "gguf value") const {
    if (!is_array() || elem_ != gguf_value_type::string) wrong_type(where, "an array of string");
    return std::get<std::vector<std::string>>(v_);
  }
  /// An array of any integer type (uint64 elements must fit int64).
  std::vector<std::int64_t> get_int_array(std::string_view where = "gguf value") const {
    if (!is_array() || !gguf_is_integer(elem_)) wrong_type(where, "an array of integers");
    std::vector<std::int64_t> out(size());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = scalar_at(i).get_int(where);
    return out;
  }
  /// An array of float32, float64 or integers.
  std::vector<double> get_float_array(std::string_view where = "gguf value") const {
    if (!is_array() || !(gguf_is_integer(elem_) || elem_ == gguf_value_type::float32 ||
                         elem_ == gguf_value_type::float64))
      wrong_type(where, "an array of numbers");
    std::vector<double> out(size());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = scalar_at(i).get_float(where);
    return out;
  }

  /// Same type, same element type and same value (float32 0.1 != float64 0.1; NaN != NaN).
  friend bool operator==(const gguf_value& a, const gguf_value& b) {
    return a.type_ == b.type_ && (!a.is_array() || a.elem_ == b.elem_) && a.v_ == b.v_;
  }

  /// Appends the value's encoding without its type tag: the scalar's bytes, a string as uint64 length + bytes,
  /// an array as element type + uint64 count + elements. This is what the writer writes after the type.
  void append_bytes(std::vector<std::byte>& out) const {
    const auto put = [&](const auto& x) {
      const auto* p = reinterpret_cast<const std::byte*>(&x);
      out.insert(out.end(), p, p + sizeof(x));
    };
    if (type_ == gguf_value_type::string) {
      const std::string& s = std::get<std::string>(v_);
      put(std::uint64_t(s.size()));
      out.insert(out.end(), reinterpret_cast<const std::byte*>(s.data()),
                 reinterpret_cast<const std::byte*>(s.data()) + s.size());
    } else if (!is_array()) {
      append_scalar_bytes(out);
    } else {
      put(static_cast<std::uint32_t>(elem_));
      put(std::uint64_t(size()));
      if (const auto* raw = std::get_if<std::vector<std::byte>>(&v_)) out.insert(out.end(), raw->begin(), raw->end());
      else if (const auto* s = std::get_if<std::vector<std::string>>(&v_))
        for (const auto& x : *s) gguf_value(x).append_bytes(out);
      else
        for (const auto& x : std::get<array_items>(v_)) x.append_bytes(out);
    }
  }

 private:
  [[noreturn]] void wrong_type(std::string_view where, std::string_view expected) const {
    fail(where, " is ", type_name(), ", not ", expected);
  }
  /// Element i of a numeric or bool array.
  gguf_value scalar_at(std::size_t i) const {
    const std::byte* p = std::get<std::vector<std::byte>>(v_).data() + i * gguf_scalar_size(elem_);
    const auto get = [p]<class T>(T) {
      T x;
      std::memcpy(&x, p, sizeof(T));
      return gguf_value(x);
    };
    switch (elem_) {
      case gguf_value_type::uint8: return get(std::uint8_t{});
      case gguf_value_type::int8: return get(std::int8_t{});
      case gguf_value_type::uint16: return get(std::uint16_t{});
      case gguf_value_type::int16: return get(std::int16_t{});
      case gguf_value_type::uint32: return get(std::uint32_t{});
      case gguf_value_type::int32: return get(std::int32_t{});
      case gguf_value_type::float32: return get(float{});
      case gguf_value_type::boolean: return gguf_value(*p != std::byte{0});
      case gguf_value_type::uint64: return get(std::uint64_t{});
      case gguf_value_type::int64: return get(std::int64_t{});
      case gguf_value_type::float64: return get(double{});
      default: fail("gguf_value: element type ", gguf_value_type_name(elem_), " is not a scalar");
    }
  }
  void append_scalar_bytes(std::vector<std::byte>& out) const {
    const auto put = [&](const auto& x) {
      const auto* p = reinterpret_cast<const std::byte*>(&x);
      out.insert(out.end(), p, p + sizeof(x));
    };
    switch (type_) {
      case gguf_value_type::uint8: return put(std::uint8_t(std::get<std::uint64_t>(v_)));
      case gguf_value_type::int8: return put(std::int8_t(std::get<std::int64_t>(v_)));
      case gguf_value_type::uint16: return put(std::uint16_t(std::get<std::uint64_t>(v_)));
      case gguf_value_type::int16: return put(std::int16_t(std::get<std::int64_t>(v_)));
      case gguf_value_type::uint32: return put(std::uint32_t(std::get<std::uint64_t>(v_)));
      case gguf_value_type::int32: return put(std::int32_t(std::get<std::int64_t>(v_)));
      case gguf_value_type::float32: return put(float(std::get<double>(v_)));
      case gguf_value_type::boolean: return put(std::uint8_t(std::get<bool>(v_)));
      case gguf_value_type::uint64: return put(std::get<std::uint64_t>(v_));
      case gguf_value_type::int64: return put(std::get<std::int64_t>(v_));
      case gguf_value_type::float64: return put(std::get<double>(v_));
      default: fail("gguf_value: ", type_name(), " is not a scalar");
    }
  }

  gguf_value_type type_;
  gguf_value_type elem_ = gguf_value_type::uint8;  // arrays only
  // Integers widen to (u)int64, floats to double; arrays hold raw scalar bytes, strings, or values.
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::vector<std::byte>,
               std::vector<std::string>, array_items>
      v_;
};

}  // namespace loralab::io

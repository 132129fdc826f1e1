// SPDX-License-Identifier: MIT
#pragma once
// The restricted unpickler behind io/torch_pth.hpp: the pickle opcodes torch.save emits for a state dict
// (protocols 2..5) and nothing else. Only the globals in `allowed_globals` (tensor rebuild functions, OrderedDict,
// storage classes, dtypes) resolve; any other (os.system, builtins.eval, numpy...) is refused by name, and nothing
// is ever executed. Objects, stack, memo and nesting are bounded by pth_limits.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>
#include "core/check.hpp"
#include "io/python_float.hpp"
#include "io/safetensors.hpp"
#include "io/zip_archive.hpp"

namespace loralab::io {

/// Bounds a hostile file cannot push read_pth() past; the defaults are far above any real checkpoint.
struct pth_limits {
  std::uint64_t max_pickle_bytes = 64u << 20;  // size of data.pkl (a Llama-70B shard's is ~30 KB)
  std::size_t max_objects = 1u << 21;          // objects the unpickler creates (~100 bytes each)
  std::size_t max_stack = 1u << 20;            // stack entries; open MARKs
  std::size_t max_memo = 1u << 21;             // memo entries
  std::size_t max_nesting = 64;                // dicts and lists inside one another
  std::size_t max_visits = 1u << 21;           // nodes visited while flattening (a shared one counts each time)
  std::uint64_t max_flat_bytes = 1u << 28;     // names, values and shapes built while flattening
  std::uint64_t max_copy_bytes = 0;            // bytes copied out of non-contiguous views; 0: file size + 64 MiB
  bool verify_crc = true;                      // check the CRC-32 of data.pkl and of every storage used
};

namespace detail::pth {

enum class role : std::uint8_t { rebuild_v2, rebuild_v3, param, param_state, ordered_dict, storage, untyped, dtype };
using element = ::loralab::io::dtype;

struct allowed_global {
  std::string_view module, name;
  role what;
  element type = element::U8;  // storage classes and dtypes: the element type
};

/// Everything torch.save writes for a state dict; read_pth() refuses any other global.
inline constexpr std::array<allowed_global, 31> allowed_globals = {{
    {"torch._utils", "_rebuild_tensor_v2", role::rebuild_v2},
    {"torch._utils", "_rebuild_tensor_v3", role::rebuild_v3},
    {"torch._utils", "_rebuild_parameter", role::param},
    {"torch._utils", "_rebuild_parameter_with_state", role::param_state},
    {"collections", "OrderedDict", role::ordered_dict},
    {"torch.storage", "UntypedStorage", role::untyped},
    {"torch", "DoubleStorage", role::storage, element::F64}, {"torch", "FloatStorage", role::storage, element::F32},
    {"torch", "HalfStorage", role::storage, element::F16},   {"torch", "BFloat16Storage", role::storage, element::BF16},
    {"torch", "LongStorage", role::storage, element::I64},   {"torch", "IntStorage", role::storage, element::I32},
    {"torch", "ShortStorage", role::storage, element::I16},  {"torch", "CharStorage", role::storage, element::I8},
    {"torch", "ByteStorage", role::storage, element::U8},    {"torch", "BoolStorage", role::storage, element::BOOL},
    {"torch", "float64", role::dtype, element::F64},         {"torch", "float32", role::dtype, element::F32},
    {"torch", "float16", role::dtype, element::F16},         {"torch", "bfloat16", role::dtype, element::BF16},
    {"torch", "int64", role::dtype, element::I64},           {"torch", "int32", role::dtype, element::I32},
    {"torch", "int16", role::dtype, element::I16},           {"torch", "int8", role::dtype, element::I8},
    {"torch", "uint64", role::dtype, element::U64},          {"torch", "uint32", role::dtype, element::U32},
    {"torch", "uint16", role::dtype, element::U16},          {"torch", "uint8", role::dtype, element::U8},
    {"torch", "bool", role::dtype, element::BOOL},           {"torch", "float8_e4m3fn", role::dtype, element::F8_E4M3},
    {"torch", "float8_e5m2", role::dtype, element::F8_E5M2},
}};

/// The first allow-list row that satisfies `pred`, or nullptr.
template <class Pred>
const allowed_global* find_global(Pred pred) {
  const auto it = std::find_if(allowed_globals.begin(), allowed_globals.end(), pred);
  return it == allowed_globals.end() ? nullptr : &*it;
}
/// The storage class (role::storage) or dtype (role::dtype) row of `t`, if torch has one.
inline const allowed_global* row_of(element t, role r) {
  return find_global([&](const allowed_global& g) { return g.what == r && g.type == t; });
}

enum class kind : std::uint8_t { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor };
inline std::string_view name_of(kind k) {
  constexpr std::array<std::string_view, 11> names = {"None", "bool", "int",    "float",   "str",   "tuple",
                                                      "list", "dict", "global", "storage", "tensor"};
  return names[static_cast<std::size_t>(k)];
}

struct object {
  kind k = kind::none;
  std::int64_t i = 0;                // bool, int; global: allow-list row; storage, tensor: index in their table
  double f = 0;                      // float
  std::string s;                     // str
  std::vector<std::uint32_t> items;  // tuple, list: elements; dict: key, value, key, value, ...
};
struct storage_ref { std::string key; bool untyped; element type; std::uint64_t numel; };  // untyped: numel in bytes
struct tensor_ref {
  std::uint32_t storage;
  element type;
  std::int64_t offset;
  std::vector<std::int64_t> shape, stride;
};

/// The restricted unpickler: a stack machine over the opcodes of run(). Objects live in `objs` and refer to one
/// another by index, so shared and even cyclic references cost nothing and leak nothing.
class unpickler {
 public:
  unpickler(std::string where, std::span<const std::byte> pkl, const pth_limits& lim)
      : where_(std::move(where)), pkl_(pkl), lim_(lim) {}
  std::uint32_t run();  // the root object

  std::vector<object> objs;
  std::vector<storage_ref> storages;
  std::vector<tensor_ref> tensors;

 private:
  template <class... Parts>
  [[noreturn]] void bad(const Parts&... parts) const { fail(where_, ": data.pkl offset ", at_, ": ", parts...); }
  void need(std::uint64_t n) const {
    if (n > pkl_.size() - pos_) bad("truncated: needs ", n, " more bytes, ", pkl_.size() - pos_, " left");
  }
  std::uint64_t u(int n, bool big_endian = false) {  // an unsigned integer of n bytes
    need(n);
    std::uint64_t v = 0;
    for (int k = 0; k < n; ++k) v = v << 8 | std::to_integer<std::uint64_t>(pkl_[pos_ + (big_endian ? k : n - 1 - k)]);
    pos_ += n;
    return v;
  }
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }  // a MARK hides what is below it
  std::uint32_t pop() {
    if (stack_.size() <= floor()) bad("stack underflow");
    const std::uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  std::uint32_t top() { return stack_.emplace_back(pop()); }
  void push(std::uint32_t v) {
    if (stack_.size() >= lim_.max_stack) bad("stack deeper than ", lim_.max_stack);
    stack_.push_back(v);
  }
  std::vector<std::uint32_t> pop_mark() {
    if (marks_.empty()) bad("no MARK to pop to");
    std::vector<std::uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  std::uint32_t make(object o) {
    if (objs.size() >= lim_.max_objects) bad("more than ", lim_.max_objects, " objects");
    if (o.k == kind::dict && o.items.size() % 2 != 0) bad("dict built from an odd number of items");
    objs.push_back(std::move(o));
    return static_cast<std::uint32_t>(objs.size() - 1);
  }
  std::uint32_t make(kind k, std::int64_t i = 0, std::vector<std::uint32_t> items = {}) {
    return make(object{k, i, 0, {}, std::move(items)});
  }
  std::uint32_t text(std::uint64_t n) {
    need(n);
    pos_ += n;
    return make(object{kind::string, 0, 0, std::string(reinterpret_cast<const char*>(pkl_.data() + pos_ - n), n), {}});
  }
  std::int64_t long_bytes(std::uint64_t n) {  // LONG1/LONG4: two's complement, little-endian
    if (n > 8) bad("integer of ", n, " bytes does not fit 64 bits");
    const std::uint64_t v = n == 0 ? 0 : u(static_cast<int>(n)), shift = 64 - 8 * std::max<std::uint64_t>(n, 1);
    return static_cast<std::int64_t>(v << shift) >> shift;
  }
  std::string line() {  // GLOBAL's module or name, ended by '\n'
    const std::size_t limit = std::min<std::size_t>(pkl_.size() - pos_, 256);
    for (std::size_t k = 0; k < limit; ++k)
      if (pkl_[pos_ + k] == std::byte{'\n'}) {
        pos_ += k + 1;
        return std::string(reinterpret_cast<const char*>(pkl_.data() + pos_ - k - 1), k);
      }
    bad("GLOBAL name not ended by a newline within ", limit, " bytes");
  }
  std::uint32_t global(const std::string& module, const std::string& name) {
    const allowed_global* g = find_global([&](const auto& r) { return r.module == module && r.name == name; });
    if (g == nullptr)
      bad("global '", module, ".", name, "' is not allowed (read_pth accepts only what torch.save writes for a "
          "state dict: tensor rebuild functions, collections.OrderedDict, storage classes, dtypes)");
    return make(kind::global, g - allowed_globals.data());
  }
  void memo_put(std::uint64_t idx) {
    if (memo_.size() >= lim_.max_memo && !memo_.contains(idx)) bad("more than ", lim_.max_memo, " memo entries");
    memo_[idx] = top();
  }
  void memo_get(std::uint64_t idx) {
    const auto it = memo_.find(idx);
    if (it == memo_.end()) bad("memo key ", idx, " was never stored");
    push(it->second);
  }
  void add_items(kind k, const std::vector<std::uint32_t>& items) {  // SETITEM(S), APPEND(S)
    const std::uint32_t target = top();
    if (objs[target].k != k) bad(k == kind::dict ? "SETITEM(S)" : "APPEND(S)", " on a ", name_of(objs[target].k));
    if (k == kind::dict && items.size() % 2 != 0) bad("SETITEMS with an odd number of items");
    objs[target].items.insert(objs[target].items.end(), items.begin(), items.end());
  }
  std::int64_t int_arg(std::uint32_t o, const char* what) const {
    if (objs[o].k != kind::integer && objs[o].k != kind::boolean) bad(what, " is a ", name_of(objs[o].k));
    return objs[o].i;
  }
  std::vector<std::int64_t> int_tuple(std::uint32_t o, const char* what) const {
    if (objs[o].k != kind::tuple || objs[o].items.size() > 64) bad(what, " is not a tuple of at most 64 ints");
    std::vector<std::int64_t> v;
    for (const std::uint32_t e : objs[o].items) v.push_back(int_arg(e, what));
    return v;
  }
  std::uint32_t persistent(std::uint32_t pid);
  std::uint32_t reduce(std::uint32_t fn, std::uint32_t args);

  std::string where_;
  std::span<const std::byte> pkl_;
  const pth_limits& lim_;
  std::size_t pos_ = 0, at_ = 0;
  std::vector<std::uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, std::uint32_t> memo_;
  std::map<std::string, std::uint32_t, std::less<>> storage_index_;
};

inline std::uint32_t unpickler::run() {
  for (;;) {
    if (pos_ >= pkl_.size()) bad("data.pkl ends without a STOP opcode");
    at_ = pos_;
    const auto op = std::to_integer<unsigned char>(pkl_[pos_++]);
    std::uint32_t a = 0, b = 0;
    switch (op) {
      case 0x80: if (const auto v = u(1); v > 5) bad("pickle protocol ", v, " (only 2..5 are known)"); break;  // PROTO
      case 0x95: if (const auto n = u(8); n > pkl_.size() - pos_) bad("FRAME of ", n, " bytes overruns"); break;
      case '.': return pop();                                                    // STOP
      case '(':                                                                  // MARK
        if (marks_.size() >= lim_.max_stack) bad("more than ", lim_.max_stack, " open MARKs");
        marks_.push_back(stack_.size());
        break;
      case ')': push(make(kind::tuple)); break;                                  // EMPTY_TUPLE
      case ']': push(make(kind::list)); break;                                   // EMPTY_LIST
      case '}': push(make(kind::dict)); break;                                   // EMPTY_DICT
      case 't': push(make(kind::tuple, 0, pop_mark())); break;                   // TUPLE
      case 'l': push(make(kind::list, 0, pop_mark())); break;                    // LIST
      case 'd': push(make(kind::dict, 0, pop_mark())); break;                    // DICT
      case 0x85: a = pop(), push(make(kind::tuple, 0, {a})); break;              // TUPLE1
      case 0x86: b = pop(), a = pop(), push(make(kind::tuple, 0, {a, b})); break;  // TUPLE2
      case 0x87: {                                                               // TUPLE3
        const std::uint32_t c = pop();
        b = pop(), a = pop(), push(make(kind::tuple, 0, {a, b, c}));
        break;
      }
      case 'X': case 'T': push(text(u(4))); break;      // BINUNICODE, BINSTRING (a negative length overruns)
      case 0x8c: case 'U': push(text(u(1))); break;     // SHORT_BINUNICODE, SHORT_BINSTRING
      case 0x8d: push(text(u(8))); break;               // BINUNICODE8
      case 'J': push(make(kind::integer, static_cast<std::int32_t>(u(4)))); break;        // BININT
      case 'K': push(make(kind::integer, static_cast<std::int64_t>(u(1)))); break;        // BININT1
      case 'M': push(make(kind::integer, static_cast<std::int64_t>(u(2)))); break;        // BININT2
      case 0x8a: push(make(kind::integer, long_bytes(u(1)))); break;                      // LONG1
      case 0x8b: push(make(kind::integer, long_bytes(u(4)))); break;                      // LONG4
      case 'G': push(make({kind::floating, 0, std::bit_cast<double>(u(8, true)), {}, {}})); break;  // BINFLOAT
      case 'N': push(make(kind::none)); break;                                            // NONE
      case 0x88: case 0x89: push(make(kind::boolean, op == 0x88)); break;                 // NEWTRUE, NEWFALSE
      case 'q': memo_put(u(1)); break;                  // BINPUT
      case 'r': memo_put(u(4)); break;                  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;         // MEMOIZE
      case 'h': memo_get(u(1)); break;                  // BINGET
      case 'j': memo_get(u(4)); break;                  // LONG_BINGET
      case 'c': {                                       // GLOBAL
        const std::string module = line(), name = line();
        push(global(module, name));
        break;
      }
      case 0x93:                                        // STACK_GLOBAL
        b = pop(), a = pop();
        if (objs[a].k != kind::string || objs[b].k != kind::string) bad("STACK_GLOBAL needs two strings");
        push(global(objs[a].s, objs[b].s));
        break;
      case 'R': b = pop(), a = pop(), push(reduce(a, b)); break;                // REDUCE
      case 'b':  // BUILD: the state of an OrderedDict (its _metadata) or of a tensor is dropped
        pop();
        if (const kind k = objs[top()].k; k != kind::dict && k != kind::tensor) bad("BUILD on a ", name_of(k));
        break;
      case 'Q': push(persistent(pop())); break;                                 // BINPERSID
      case 's': b = pop(), a = pop(), add_items(kind::dict, {a, b}); break;     // SETITEM
      case 'u': add_items(kind::dict, pop_mark()); break;                       // SETITEMS
      case 'a': add_items(kind::list, {pop()}); break;                          // APPEND
      case 'e': add_items(kind::list, pop_mark()); break;                       // APPENDS
      default: bad("opcode 0x", std::hex, unsigned(op), std::dec, " is unknown or not one torch.save writes");
    }
  }
}

inline std::uint32_t unpickler::persistent(std::uint32_t pid) {
  const object& t = objs[pid];
  if (t.k != kind::tuple || t.items.size() != 5 || objs[t.items[0]].s != "storage")
    bad("persistent id is not ('storage', storage class, key, location, numel)");
  const object &cls = objs[t.items[1]], &key = objs[t.items[2]], &loc = objs[t.items[3]];
  const role r = cls.k == kind::global ? allowed_globals[cls.i].what : role::param;
  if (r != role::storage && r != role::untyped) bad("persistent id names a ", name_of(cls.k), ", not a storage class");
  if (key.k != kind::string || key.s.empty() || key.s.size() > 64) bad("storage key is not a short non-empty str");
  if (loc.k != kind::string) bad("storage '", key.s, "': location is a ", name_of(loc.k), ", not a str");
  const std::int64_t numel = int_arg(t.items[4], "storage numel");
  if (numel < 0) bad("storage '", key.s, "' has negative numel ", numel);
  const storage_ref s{key.s, r == role::untyped, allowed_globals[cls.i].type, static_cast<std::uint64_t>(numel)};
  const auto [it, fresh] = storage_index_.emplace(s.key, static_cast<std::uint32_t>(storages.size()));
  if (fresh) storages.push_back(s);
  const storage_ref& old = storages[it->second];
  if (old.untyped != s.untyped || old.type != s.type || old.numel != s.numel)
    bad("storage '", s.key, "' is used as ", dtype_name(old.type), " x ", old.numel, " and as ", dtype_name(s.type),
        " x ", s.numel);
  return make(kind::storage, it->second);
}

inline std::uint32_t unpickler::reduce(std::uint32_t fn, std::uint32_t args) {
  if (objs[fn].k != kind::global) bad("REDUCE calls a ", name_of(objs[fn].k), ", not a global");
  const allowed_global& g = allowed_globals[objs[fn].i];
  if (objs[args].k != kind::tuple) bad(g.module, ".", g.name, ": arguments are a ", name_of(objs[args].k));
  const std::vector<std::uint32_t> a = objs[args].items;  // a copy: make() may reallocate objs
  switch (g.what) {
    case role::ordered_dict:
      if (!a.empty()) bad("collections.OrderedDict called with ", a.size(), " arguments (torch.save passes none)");
      return make(kind::dict);
    case role::param: case role::param_state:
      if (a.size() != (g.what == role::param ? 3u : 4u) || objs[a[0]].k != kind::tensor)
        bad("torch._utils.", g.name, " takes a tensor, requires_grad, hooks", g.what == role::param ? "" : ", state");
      return a[0];
    case role::rebuild_v2: case role::rebuild_v3: {
      const bool v3 = g.what == role::rebuild_v3;
      const std::size_t n = v3 ? 7 : 6;  // + optional metadata
      if (a.size() != n && a.size() != n + 1) bad(g.name, " takes ", n, " or ", n + 1, " arguments, not ", a.size());
      if (objs[a[0]].k != kind::storage) bad(g.name, ": argument 1 is a ", name_of(objs[a[0]].k), ", not a storage");
      tensor_ref t{static_cast<std::uint32_t>(objs[a[0]].i), element::U8, int_arg(a[1], "storage_offset"),
                   int_tuple(a[2], "size"), int_tuple(a[3], "stride")};
      const storage_ref& s = storages[t.storage];
      if (v3 && (objs[a[6]].k != kind::global || allowed_globals[objs[a[6]].i].what != role::dtype))
        bad("_rebuild_tensor_v3: argument 7 is not a dtype");
      if (!v3 && s.untyped) bad("_rebuild_tensor_v2 over an UntypedStorage has no dtype");
      t.type = v3 ? allowed_globals[objs[a[6]].i].type : s.type;
      if (t.shape.size() != t.stride.size()) bad("size has ", t.shape.size(), " dimensions, stride ", t.stride.size());
      tensors.push_back(std::move(t));
      return make(kind::tensor, static_cast<std::int64_t>(tensors.size() - 1));
    }
    default: bad("global '", g.module, ".", g.name, "' is not callable");
  }
}

/// PyTorch's c10::hash_combine, for the serialization id.
inline std::uint64_t hash_combine(std::uint64_t seed, std::uint64_t value) {
  return seed ^ (value + 0x9e3779b9 + (seed << 6) + (seed >> 2));
}

}  // namespace detail::pth

}  // namespace loralab::io

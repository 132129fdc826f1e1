// SPDX-License-Identifier: MIT
#pragma once
// PyTorch checkpoints (.pth/.pt, the zip format of torch.save since PyTorch 1.6), such as Meta-layout Llama
// checkpoints (consolidated.00.pth): read_pth() lists the tensors of a saved dict; pth_writer writes one.
//
// torch.save({name: tensor, ...}, "dir/NAME.pth") (torch 2.x, pickle protocol 2) writes a zip of stored entries
// in the folder NAME (the file name without its last extension), each entry's data aligned to 64 bytes:
//   NAME/data.pkl                the pickled dict; a tensor is torch._utils._rebuild_tensor_v2(storage,
//                                storage_offset, size, stride, requires_grad, collections.OrderedDict()), its
//                                storage a persistent id ('storage', torch.<T>Storage, key, location, numel)
//   NAME/.format_version         "1"
//   NAME/.storage_alignment      "64"
//   NAME/byteorder               "little"
//   NAME/data/<key>              the bytes of each storage; keys "0", "1", ... in order of first use
//   NAME/version                 "3\n"
//   NAME/.data/serialization_id  20 + 20 digits: a hash of the record names, then one of the records' CRC-32s
// dtypes with no storage class (uint16/32/64, float8) use _rebuild_tensor_v3(..., dtype) over a
// torch.storage.UntypedStorage whose numel counts bytes. Offsets and strides count elements.
//
// read_pth() never executes the pickle. A restricted unpickler implements the opcodes torch.save emits
// (protocols 2..5) and accepts only the globals in `allowed_globals` (tensor rebuild functions, OrderedDict,
// storage classes, dtypes): any other (os.system, builtins.eval, numpy...) is refused by name. Objects, stack,
// memo, nesting and copied bytes are bounded (pth_limits). Views honour storage offset and strides; contiguous
// tensors point into the file's mapping, others are copied out. Nested dicts and lists are flattened with '.'
// ({"model": {"w": t}} -> "model.w"); other leaves (ints, strings...) go to values().
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
#include "io/torch_pickle.hpp"
#include "io/zip_archive.hpp"

namespace loralab::io {


/// One tensor of a checkpoint: contiguous row-major bytes, in the file's mapping or in a copy its pth_file owns.
struct pth_tensor : tensor_view {
  /// F32, F16, BF16 (exact) or F64 (rounded to nearest) elements as float; other dtypes throw.
  std::vector<float> to_float() const {
    if (type != dtype::F64) return tensor_view::to_float();
    const std::vector<double> d = to_vector<double>();
    return std::vector<float>(d.begin(), d.end());
  }
};

/// A torch.save checkpoint opened read-only: tensors in the dict's order, valid as long as this object.
class pth_file {
 public:
  static pth_file open(const std::filesystem::path& path, const pth_limits& limits = {});

  const std::filesystem::path& path() const { return zip_.path(); }
  /// The folder of the records in the zip ("consolidated.00" for consolidated.00.pth written by torch.save).
  const std::string& archive_name() const { return archive_; }
  const std::vector<pth_tensor>& tensors() const { return tensors_; }
  /// Leaves that are not tensors, as text: ints and floats as Python prints them, True/False/None, strings as
  /// their text, dtypes as "torch.float32". A Llama checkpoint has none.
  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  const pth_tensor& at(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) fail(path().string(), ": no tensor '", name, "'");
    return tensors_[it->second];
  }

 private:
  explicit pth_file(zip_reader z) : zip_(std::move(z)) {}
  void flatten(const detail::pth::unpickler& u, std::uint32_t o, const std::string& name, std::size_t depth);
  void materialize(const detail::pth::unpickler& u, const std::string& name, const detail::pth::tensor_ref& t);

  zip_reader zip_;
  std::string archive_;
  pth_limits limits_;
  std::size_t visited_ = 0;
  std::uint64_t flat_bytes_ = 0, copied_ = 0, copy_limit_ = 0;
  std::vector<std::pair<std::string, std::uint32_t>> found_;  // tensor names, index in unpickler::tensors
  std::vector<bool> crc_checked_;                             // per storage
  std::vector<pth_tensor> tensors_;
  std::vector<std::vector<std::byte>> owned_;  // copies of non-contiguous views
  std::vector<std::pair<std::string, std::string>> values_;
  std::map<std::string, std::size_t, std::less<>> index_;  // tensors
  std::set<std::string, std::less<>> names_;               // tensors and values
};

/// Opens `path` (see pth_file); any defect throws loralab::error starting with the path.
inline pth_file read_pth(const std::filesystem::path& path, const pth_limits& limits = {}) {
  return pth_file::open(path, limits);
}

inline pth_file pth_file::open(const std::filesystem::path& path, const pth_limits& limits) {
  using namespace detail::pth;
  const std::string p = path.string();
  {  // Older formats get a name rather than "no end-of-central-directory record".
    std::array<char, 512> head{};
    std::ifstream in(path, std::ios::binary);
    in.read(head.data(), head.size());
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got >= 1 && static_cast<unsigned char>(head[0]) == 0x80)
      fail(p, ": a legacy (PyTorch < 1.6, not zip) torch.save file or a bare pickle, which read_pth does not read; "
              "re-save it with a current torch: torch.save(torch.load(f, weights_only=True), f)");
    if (got >= 262 && std::string_view(head.data() + 257, 5) == "ustar")
      fail(p, ": a tar-format torch.save file (PyTorch < 0.4), which read_pth does not read");
  }
  pth_file f(zip_reader::open(path));
  f.limits_ = limits;
  std::error_code ec;
  const std::uint64_t file_size = std::filesystem::file_size(path, ec);  // the file is open: it has a size
  f.copy_limit_ = limits.max_copy_bytes != 0 ? limits.max_copy_bytes : (1u << 26) + file_size;
  const auto& entries = f.zip_.entries();
  if (entries.empty()) fail(p, ": the zip archive is empty, not a torch.save checkpoint");
  const std::size_t slash = entries.front().name.find('/');
  if (slash == std::string::npos) fail(p, ": first zip entry '", entries.front().name, "' is not in a folder");
  f.archive_ = entries.front().name.substr(0, slash);
  const std::string pre = f.archive_ + "/";
  const zip_entry* pkl = f.zip_.find(pre + "data.pkl");
  if (pkl == nullptr)
    fail(p, ": no record '", pre, "data.pkl': ",
         f.zip_.contains(pre + "constants.pkl") ? "a TorchScript archive, not torch.save's" : "not a torch.save file");
  if (const zip_entry* bo = f.zip_.find(pre + "byteorder"); bo != nullptr) {
    const std::string_view order(reinterpret_cast<const char*>(bo->data.data()), bo->data.size());
    if (order != "little") fail(p, ": byteorder record says '", order, "'; only little-endian checkpoints are read");
  }
  if (pkl->data.size() > limits.max_pickle_bytes)
    fail(p, ": ", pkl->name, " is ", pkl->data.size(), " bytes, more than the limit of ", limits.max_pickle_bytes);
  if (limits.verify_crc) f.zip_.verify_crc(*pkl);

  unpickler u(p, pkl->data, f.limits_);
  const std::uint32_t root = u.run();
  if (u.objs[root].k != kind::dict) fail(p, ": data.pkl holds a ", name_of(u.objs[root].k), ", not a dict of tensors");
  f.crc_checked_.assign(u.storages.size(), false);
  f.flatten(u, root, "", 0);
  for (const auto& [name, t] : f.found_) f.materialize(u, name, u.tensors[t]);
  return f;
}

inline void pth_file::flatten(const detail::pth::unpickler& u, std::uint32_t o, const std::string& name,
                              std::size_t depth) {
  using namespace detail::pth;
  const std::string p = path().string();
  if (++visited_ > limits_.max_visits) fail(p, ": more than ", limits_.max_visits, " entries when flattened");
  const object& v = u.objs[o];
  flat_bytes_ += 64 + name.size() + (v.k == kind::string ? v.s.size() : 0) +
                 (v.k == kind::tensor ? 16 * u.tensors[v.i].shape.size() : 0);
  if (flat_bytes_ > limits_.max_flat_bytes)
    fail(p, ": names, values and shapes take more than ", limits_.max_flat_bytes, " bytes when flattened");
  if (depth > limits_.max_nesting) fail(p, ": '", name, "' is nested more than ", limits_.max_nesting, " levels deep");
  if (v.k != kind::dict && v.k != kind::list && v.k != kind::tuple && !names_.insert(name).second)
    fail(p, ": name '", name, "' appears twice");
  const auto child = [&](const std::string& key) { return name.empty() ? key : name + "." + key; };
  switch (v.k) {
    case kind::dict:
      for (std::size_t k = 0; k < v.items.size(); k += 2) {
        const object& key = u.objs[v.items[k]];
        if (key.k != kind::string && key.k != kind::integer)
          fail(p, ": a key in '", name, "' is a ", name_of(key.k), ", not a str or int");
        flatten(u, v.items[k + 1], child(key.k == kind::string ? key.s : std::to_string(key.i)), depth + 1);
      }
      break;
    case kind::list: case kind::tuple:
      for (std::size_t k = 0; k < v.items.size(); ++k) flatten(u, v.items[k], child(std::to_string(k)), depth + 1);
      break;
    case kind::tensor: found_.emplace_back(name, static_cast<std::uint32_t>(v.i)); break;
    case kind::none: values_.emplace_back(name, "None"); break;
    case kind::boolean: values_.emplace_back(name, v.i ? "True" : "False"); break;
    case kind::integer: values_.emplace_back(name, std::to_string(v.i)); break;
    case kind::floating:
      values_.emplace_back(name, std::isfinite(v.f) ? python_float_repr(v.f) : std::isnan(v.f) ? "nan"
                                                                               : v.f > 0        ? "inf" : "-inf");
      break;
    case kind::string: values_.emplace_back(name, v.s); break;
    case kind::global:
      values_.emplace_back(name, std::string(allowed_globals[v.i].module) + "." += allowed_globals[v.i].name);
      break;
    case kind::storage: fail(p, ": '", name, "' is a bare storage, not a tensor");
  }
}

inline void pth_file::materialize(const detail::pth::unpickler& u, const std::string& name,
                                  const detail::pth::tensor_ref& t) {
  const detail::pth::storage_ref& s = u.storages[t.storage];
  const std::string where = path().string() + ": tensor '" + name + "'", rec_name = archive_ + "/data/" + s.key;
  const zip_entry* rec = zip_.find(rec_name);
  if (rec == nullptr) fail(where, ": its storage record '", rec_name, "' is missing");
  const std::optional<std::size_t> s_bytes = detail::checked_nbytes(s.numel, s.untyped ? 1 : dtype_size(s.type));
  if (!s_bytes || *s_bytes != rec->data.size())
    fail(where, ": storage '", s.key, "' of ", s.numel, " x ", s.untyped ? "byte" : dtype_name(s.type), " needs ",
         s_bytes ? std::to_string(*s_bytes) : "too many", " bytes, but record '", rec_name, "' holds ",
         rec->data.size());
  if (limits_.verify_crc && !crc_checked_[t.storage]) zip_.verify_crc(*rec), crc_checked_[t.storage] = true;

  const auto bad_view = [&](const auto&... why) {
    fail(where, ": view (offset ", t.offset, ", size ", detail::shape_string(t.shape), ", stride ",
         detail::shape_string(t.stride), ") ", why...);
  };
  if (t.offset < 0) bad_view("has a negative offset");
  for (std::size_t k = 0; k < t.shape.size(); ++k)
    if (t.shape[k] < 0 || t.stride[k] < 0) bad_view("has a negative size or stride");
  const std::size_t esize = dtype_size(t.type);
  const std::optional<std::size_t> numel = detail::checked_numel(t.shape);
  const std::optional<std::size_t> nbytes = numel ? detail::checked_nbytes(*numel, esize) : numel;
  if (!nbytes) bad_view("has more elements than fit in memory");

  std::span<const std::byte> bytes;
  if (*numel != 0) {
    // The last element the view reaches, offset + sum (size_k - 1) * stride_k, must lie inside the storage.
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    auto last = static_cast<std::uint64_t>(t.offset);
    for (std::size_t k = 0; k < t.shape.size(); ++k) {
      const auto d = static_cast<std::uint64_t>(t.shape[k] - 1), st = static_cast<std::uint64_t>(t.stride[k]);
      if ((d != 0 && st > max / d) || d * st > max - last) bad_view("overflows");
      last += d * st;
    }
    if (last >= rec->data.size() / esize)
      bad_view("reaches element ", last, " of ", dtype_name(t.type), ", past the end of its storage '", s.key,
               "' of ", rec->data.size(), " bytes");
    bool contiguous = true;
    std::uint64_t expect = 1;  // row-major strides; a dimension of size 1 may have any stride
    for (std::size_t k = t.shape.size(); k-- > 0; expect *= static_cast<std::uint64_t>(t.shape[k]))
      contiguous = contiguous && (t.shape[k] == 1 || static_cast<std::uint64_t>(t.stride[k]) == expect);
    const std::byte* base = rec->data.data() + static_cast<std::size_t>(t.offset) * esize;
    if (contiguous) {
      bytes = std::span<const std::byte>(base, *nbytes);
    } else {
      if (*nbytes > copy_limit_ - copied_)
        bad_view("needs a copy of ", *nbytes, " bytes, past the limit ", copy_limit_);
      copied_ += *nbytes;
      std::vector<std::byte>& out = owned_.emplace_back(*nbytes);
      std::vector<std::int64_t> idx(t.shape.size(), 0);
      for (std::size_t e = 0; e < *numel; ++e) {
        std::uint64_t off = 0;
        for (std::size_t k = 0; k < idx.size(); ++k) off += static_cast<std::uint64_t>(idx[k] * t.stride[k]);
        std::memcpy(out.data() + e * esize, base + off * esize, esize);
        for (std::size_t k = idx.size(); k-- > 0 && ++idx[k] == t.shape[k];) idx[k] = 0;
      }
      bytes = out;
    }
  }
  index_.emplace(name, tensors_.size());
  pth_tensor& pt = tensors_.emplace_back();
  pt.name = name, pt.type = t.type, pt.shape = t.shape, pt.bytes = bytes;
}

/// Options of pth_writer::write.
struct pth_write_options {
  std::string archive_name;  // folder of the records; empty: the file name without its last extension, as torch
  bool force_zip64 = false;  // zip64 fields everywhere (to test readers; torch.load reads both)
};

/// Collects tensors, then writes what torch.save writes for the plain dict {name: tensor} of contiguous CPU
/// tensors, one storage per tensor in the order added: the same bytes, serialization id included, when built
/// with libstdc++ (torch's id hashes names with its std::hash<std::string>). Every dtype loads: those with a
/// storage class through _rebuild_tensor_v2, U16/U32/U64/F8 through _rebuild_tensor_v3.
class pth_writer {
 public:
  /// Adds a tensor of `type` and `shape` whose row-major elements are `bytes`. Only the view is kept: the data
  /// must stay alive until write(). Throws on a duplicate name, a negative dimension, or a wrong byte count.
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    LORALAB_CHECK(!names_.contains(name), "pth_writer: tensor '", name, "' added twice");
    for (const std::int64_t d : shape)
      LORALAB_CHECK(d >= 0, "pth_writer: tensor '", name, "' has a negative dimension: ", detail::shape_string(shape));
    const std::optional<std::size_t> numel = detail::checked_numel(shape);
    const std::optional<std::size_t> nbytes = numel ? detail::checked_nbytes(*numel, dtype_size(type)) : numel;
    LORALAB_CHECK(nbytes && *nbytes == bytes.size(), "pth_writer: tensor '", name, "' has ", bytes.size(),
                  " bytes, but shape ", detail::shape_string(shape), " of ", dtype_name(type), " needs ",
                  nbytes ? std::to_string(*nbytes) : std::string("more than fits in memory"));
    names_.insert(name);
    entries_.push_back({std::move(name), type, std::move(shape), bytes});
  }
  /// Adds a tensor of dtype_of<T>().
  template <class T>
  void add(std::string name, std::vector<std::int64_t> shape, std::span<const T> data) {
    add(std::move(name), dtype_of<T>(), std::move(shape), std::as_bytes(data));
  }

  /// data.pkl: what pickle.Pickler(protocol=2) writes for the dict, memo and all.
  std::string pickle() const;

  /// Writes the checkpoint atomically (temp file beside it, fsync, rename), streaming each tensor once.
  void write(const std::filesystem::path& path, const pth_write_options& opt = {}) const {
    using detail::pth::hash_combine;
    const std::string file = path.filename().string();
    const std::string archive = opt.archive_name.empty() ? file.substr(0, file.rfind('.')) : opt.archive_name;
    LORALAB_CHECK(!archive.empty() && archive.find('/') == std::string::npos, path.string(), ": archive name '",
                  archive, "' must be non-empty, without '/'");
    zip_writer z(path, {opt.force_zip64, 64});
    std::unordered_set<std::string> written;  // torch hashes the names in this set's order
    std::uint64_t crcs = 0, names = 0;
    const auto record = [&](const std::string& name, std::span<const std::byte> data) {
      const std::uint32_t crc = z.add(archive + "/" + name, data);
      if (!data.empty()) crcs = hash_combine(crcs, crc);  // torch sees the CRCs of data descriptors only
      written.insert(name);
    };
    const auto text = [](std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); };
    const std::string pkl = pickle();
    record("data.pkl", text(pkl));
    record(".format_version", text("1"));
    record(".storage_alignment", text("64"));
    record("byteorder", text("little"));
    for (std::size_t i = 0; i < entries_.size(); ++i) record("data/" + std::to_string(i), entries_[i].bytes);
    record("version", text("3\n"));
    for (const std::string& n : written) names = hash_combine(names, std::hash<std::string>{}(n));
    const auto digits20 = [](std::uint64_t v) {
      return std::string(20 - std::to_string(v).size(), '0') + std::to_string(v);
    };
    z.add(archive + "/.data/serialization_id", digits20(names) + digits20(crcs));
    z.commit();
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
};

inline std::string pth_writer::pickle() const {
  using namespace detail::pth;
  std::string out = "\x80\x02";  // PROTO 2
  std::uint32_t memo = 0;
  const auto le32 = [&](std::uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  const auto put = [&] {  // BINPUT / LONG_BINPUT of the object just written
    memo < 256 ? void(out += {'q', static_cast<char>(memo)}) : (out += 'r', le32(memo));
    return memo++;
  };
  const auto str = [&](std::string_view s) { out += 'X', le32(static_cast<std::uint32_t>(s.size())), out += s; };
  const auto integer = [&](std::uint64_t v) {  // pickle's save_long, for v >= 0
    if (v <= 0xFF) out += {'K', static_cast<char>(v)};
    else if (v <= 0xFFFF) out += {'M', static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
    else if (v <= 0x7FFFFFFF) out += 'J', le32(static_cast<std::uint32_t>(v));
    else {  // LONG1: little-endian two's complement, a zero byte added when the top bit is set
      std::string b;
      for (std::uint64_t x = v; x != 0; x >>= 8) b += static_cast<char>(x & 0xFF);
      if (static_cast<unsigned char>(b.back()) & 0x80) b += '\0';
      out += {'\x8a', static_cast<char>(b.size())}, out += b;
    }
  };
  std::map<std::string, std::uint32_t> memo_of;  // strings and globals written once, then fetched from the memo
  const auto once = [&](const std::string& key, const auto& write) {
    const auto it = memo_of.find(key);
    if (it == memo_of.end()) return write(), void(memo_of.emplace(key, put()));
    it->second < 256 ? void(out += {'h', static_cast<char>(it->second)}) : (out += 'j', le32(it->second));
  };
  const auto global = [&](std::string_view module, std::string_view name) {
    const std::string line = "c" + std::string(module) + "\n" + std::string(name) + "\n";
    once(line, [&] { out += line; });
  };
  const auto tuple = [&](const std::vector<std::int64_t>& v) {  // () is not memoized; (a, b, c) uses TUPLE3
    if (v.empty()) return void(out += ')');
    if (v.size() > 3) out += '(';
    for (const std::int64_t x : v) integer(static_cast<std::uint64_t>(x));
    out += v.size() > 3 ? 't' : static_cast<char>(0x84 + v.size());
    put();
  };

  out += '}';
  put();
  for (std::size_t b = 0; b < entries_.size(); b += 1000) {  // pickle's _batch_setitems: batches of 1000
    const std::size_t n = std::min<std::size_t>(1000, entries_.size() - b);
    if (n > 1) out += '(';
    for (std::size_t i = b; i < b + n; ++i) {
      const entry& e = entries_[i];
      const allowed_global* cls = row_of(e.type, role::storage);
      str(e.name);
      put();
      global("torch._utils", cls ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
      out += "((";  // the arguments; the persistent id ('storage', class, key, 'cpu', numel)
      once("Xstorage", [&] { str("storage"); });
      cls ? global(cls->module, cls->name) : global("torch.storage", "UntypedStorage");
      str(std::to_string(i));
      put();
      once("Xcpu", [&] { str("cpu"); });
      integer(cls ? *detail::checked_numel(e.shape) : e.bytes.size());
      out += 't', put();
      out += 'Q';  // BINPERSID
      integer(0);  // storage_offset
      tuple(e.shape);
      std::vector<std::int64_t> stride(e.shape.size());  // torch's contiguous strides: a 0 dimension counts as 1
      for (std::size_t k = stride.size(), s = 1; k-- > 0; s *= std::max<std::int64_t>(e.shape[k], 1)) stride[k] = s;
      tuple(stride);
      out += '\x89';  // requires_grad False
      global("collections", "OrderedDict");
      out += ")R", put();
      if (!cls) global("torch", row_of(e.type, role::dtype)->name);
      out += 't', put();
      out += 'R', put();
    }
    out += n > 1 ? 'u' : 's';
  }
  return out += '.';
}

}  // namespace loralab::io

// SPDX-License-Identifier: MIT
// io/zip_archive.hpp and io/torch_pth.hpp: zip round trips (plain and zip64) and every way a zip can be corrupt;
// .pth round trips over every dtype; golden files both ways with PyTorch (tests/reference/make_pth_golden.py):
// torch.save output read here, pth_writer output byte for byte as committed and as torch.load sees it; and
// hostile files (disallowed globals, bad opcodes, deep nesting, huge sizes, views out of bounds, truncation and
// byte flips at every offset), each of which must throw loralab::error. Random data is fresh each run; the seed
// is printed (LORALAB_TEST_SEED replays it).
#define BOOST_TEST_MODULE pth
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"
#include "io/torch_pth.hpp"
#include "io/zip_archive.hpp"
#include "expect_error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace loralab::io;
using loralab::testing::temp_dir;
using namespace std::string_literals;

namespace {

const fs::path data_dir = LORALAB_TEST_DATA_DIR;

std::string read_raw(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  BOOST_REQUIRE(f.good());
}
std::span<const std::byte> as_span(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }
std::string as_string(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

using loralab::testing::expect_error;

// ---- pickle pieces, to build hostile data.pkl by hand ------------------------------------------------------------
std::string le32(std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
/// BINUNICODE
std::string X(const std::string& s) { return std::string("X") + le32(static_cast<std::uint32_t>(s.size())) + s; }
/// GLOBAL
std::string G(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
/// An int: BININT1, BININT or LONG1.
std::string I(std::int64_t v) {
  if (v >= 0 && v < 256) return "K" + std::string(1, static_cast<char>(v));
  if (v >= INT32_MIN && v <= INT32_MAX) return "J" + le32(static_cast<std::uint32_t>(v));
  return "\x8a\x08" + std::string(reinterpret_cast<const char*>(&v), 8);  // LONG1, 8 bytes
}
std::string T(const std::vector<std::int64_t>& v) {  // a tuple of ints
  std::string s = "(";
  for (const auto x : v) s += I(x);
  return s + "t";
}
/// torch.save's expression for one tensor: _rebuild_tensor_v2(storage pid, offset, size, stride, False, OrderedDict())
std::string tensor_expr(const std::string& cls, const std::string& key, std::int64_t numel, std::int64_t offset,
                        const std::vector<std::int64_t>& size, const std::vector<std::int64_t>& stride) {
  return G("torch._utils", "_rebuild_tensor_v2") + "((" + X("storage") + G("torch", cls) + X(key) + X("cpu") +
         I(numel) + "tQ" + I(offset) + T(size) + T(stride) + "\x89" + G("collections", "OrderedDict") + ")Rt" + "R";
}
/// {name: value_expr, ...}
std::string dict_pickle(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = "\x80\x02}(";
  for (const auto& [k, v] : items) s += X(k) + v;
  return s + "u.";
}
/// A zip holding `pkl` as arch/data.pkl and each (key, bytes) as arch/data/<key>.
void write_pth_raw(const fs::path& p, const std::string& pkl,
                   const std::vector<std::pair<std::string, std::string>>& storages = {},
                   const std::string& arch = "archive") {
  zip_writer z(p);
  z.add(arch + "/data.pkl", pkl);
  for (const auto& [k, b] : storages) z.add(arch + "/data/" + k, b);
  z.add(arch + "/version", "3\n");
  z.commit();
}
/// Default limits with one changed: limits([](pth_limits& l) { l.max_stack = 100; }).
template <class F>
pth_limits limits(F set) {
  pth_limits l;
  set(l);
  return l;
}
std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

// ---- fixed tensors of loralab_written.pth ------------------------------------------------------------------------
struct fixed_tensor {
  std::string name;
  dtype type;
  std::vector<std::int64_t> shape;
  std::string bytes;
};
template <class T>
fixed_tensor fixed(std::string name, std::vector<std::int64_t> shape, std::vector<T> v) {
  if constexpr (std::is_same_v<T, bool>) {
    std::string b;
    for (const bool x : v) b += static_cast<char>(x);
    return {std::move(name), dtype::BOOL, std::move(shape), b};
  } else {
    return {std::move(name), dtype_of<T>(), std::move(shape),
            std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T))};
  }
}
std::vector<fixed_tensor> written_tensors() {
  std::vector<float> emb(12), four(6);
  for (int i = 0; i < 12; ++i) emb[i] = (i - 5) * 0.375f;
  for (int i = 0; i < 6; ++i) four[i] = 1.0f / (i + 1);
  std::vector<Eigen::bfloat16> wq(6);
  for (int i = 0; i < 6; ++i) wq[i] = Eigen::bfloat16(i * 0.5f - 1.0f);
  std::vector<Eigen::half> norm(4);
  for (int i = 0; i < 4; ++i) norm[i] = Eigen::half(1.0f + i / 8.0f);
  std::vector<std::int8_t> row(300);
  for (int i = 0; i < 300; ++i) row[i] = static_cast<std::int8_t>(i * 7);
  std::vector<fixed_tensor> t = {
      fixed<float>("tok_embeddings.weight", {3, 4}, emb),
      fixed<Eigen::bfloat16>("layers.0.attention.wq.weight", {2, 3}, wq),
      fixed<Eigen::half>("layers.0.attention_norm.weight", {4}, norm),
      fixed<double>("norm.weight", {2}, {0.1, -2.5}),
      fixed<float>("scalar", {}, {0.5f}),
      fixed<std::int64_t>("i64", {3}, {-1, 0, 5'000'000'000}),
      fixed<std::int32_t>("i32", {2}, {-7, 1 << 30}),
      fixed<std::int16_t>("i16", {2}, {-300, 32767}),
      fixed<std::int8_t>("i8", {3}, {-128, 0, 127}),
      fixed<std::uint8_t>("u8", {2, 2}, {0, 1, 254, 255}),
      fixed<bool>("mask", {3}, {true, false, true}),
      fixed<std::uint16_t>("u16", {2}, {1, 65535}),
      fixed<std::uint32_t>("u32", {2}, {7, 4'000'000'000u}),
      fixed<std::uint64_t>("u64", {1}, {18'000'000'000'000'000'000ull}),
      fixed<std::uint8_t>("four_d", {1, 2, 1, 3}, {1, 2, 3, 4, 5, 6}),
      fixed<float>("inverse", {6}, four),
      fixed<std::int8_t>("row300", {1, 300}, row),
      fixed<float>("wide_empty", {0, 70000}, {}),
      fixed<std::uint8_t>("huge_empty", {0, 5'000'000'000}, {}),
  };
  t.push_back({"f8_e4m3", dtype::F8_E4M3, {2}, "\x38\xb8"});  // 1.0, -1.0
  t.push_back({"f8_e5m2", dtype::F8_E5M2, {2}, "\x3c\x40"});  // 1.0, 2.0
  return t;
}
void write_fixed(const fs::path& p, bool zip64) {
  const std::vector<fixed_tensor> ts = written_tensors();
  pth_writer w;
  for (const auto& t : ts) w.add(t.name, t.type, t.shape, as_span(t.bytes));
  w.write(p, {.archive_name = "", .force_zip64 = zip64});
}

}  // namespace

// =================================================================================================================
BOOST_AUTO_TEST_SUITE(zip)

BOOST_AUTO_TEST_CASE(crc32_known_values) {
  BOOST_TEST(crc32(as_span("123456789")) == 0xCBF43926u);
  BOOST_TEST(crc32({}) == 0u);
  BOOST_TEST(crc32(as_span("The quick brown fox jumps over the lazy dog")) == 0x414FA339u);
  // Slicing-by-8 against the bitwise definition, at lengths around the 8-byte step, and chained.
  std::mt19937_64 g = loralab::testing::rng(1);
  std::string s(1000, '\0');
  for (auto& c : s) c = static_cast<char>(g());
  for (const std::size_t n : {0u, 1u, 7u, 8u, 9u, 15u, 16u, 17u, 999u, 1000u}) {
    std::uint32_t ref = ~0u;
    for (std::size_t i = 0; i < n; ++i) {
      ref ^= static_cast<unsigned char>(s[i]);
      for (int k = 0; k < 8; ++k) ref = (ref & 1) ? 0xEDB88320u ^ (ref >> 1) : ref >> 1;
    }
    BOOST_TEST(crc32(as_span(s.substr(0, n))) == ~ref);
    BOOST_TEST(crc32(as_span(s.substr(n / 2, n - n / 2)), crc32(as_span(s.substr(0, n / 2)))) == ~ref);
  }
}

BOOST_AUTO_TEST_CASE(round_trip_aligned_plain_and_zip64) {
  temp_dir tmp;
  std::mt19937_64 g = loralab::testing::rng(2);
  std::vector<std::pair<std::string, std::string>> entries;
  for (const std::size_t n : {0u, 1u, 63u, 64u, 65u, 1000u, 4099u}) {
    std::string b(n, '\0');
    for (auto& c : b) c = static_cast<char>(g());
    entries.emplace_back("dir/entry_" + std::to_string(n) + std::string(g() % 5, 'x'), b);
  }
  for (const bool zip64 : {false, true}) {
    BOOST_TEST_CONTEXT("force_zip64 " << zip64) {
      const fs::path p = tmp.path / (zip64 ? "z64.zip" : "plain.zip");
      zip_writer w(p, {.force_zip64 = zip64, .alignment = 64});
      for (const auto& [name, b] : entries) BOOST_TEST(w.add(name, b) == crc32(as_span(b)));
      w.commit();
      BOOST_TEST(!fs::exists(p.string() + ".tmp." + std::to_string(::getpid())));
      const zip_reader r = zip_reader::open(p);
      BOOST_TEST(r.zip64());  // the zip64 end records are always written, as torch does
      BOOST_REQUIRE(r.entries().size() == entries.size());
      for (std::size_t i = 0; i < entries.size(); ++i) {
        const zip_entry& e = r.entries()[i];
        BOOST_TEST(e.name == entries[i].first);
        BOOST_TEST(as_string(e.data) == entries[i].second);
        BOOST_TEST(e.data_offset % 64 == 0u);
        BOOST_TEST(&r.at(e.name) == &e);
        r.verify_crc(e);
      }
      BOOST_TEST(!r.contains("nope"));
      expect_error([&] { (void)r.at("nope"); }, {p.string(), "no zip entry 'nope'"});
      // The classic end record: markers with force_zip64, real values otherwise.
      const std::string raw = read_raw(p);
      std::uint16_t n16 = 0;
      std::memcpy(&n16, raw.data() + raw.size() - 12, 2);
      BOOST_TEST(n16 == (zip64 ? 0xFFFFu : entries.size()));
    }
  }
}

BOOST_AUTO_TEST_CASE(reads_classic_archive_with_comment) {
  // Built by hand as a plain zip tool writes it: sizes in the local header, no descriptor, no zip64, a comment.
  temp_dir tmp;
  const std::string name = "a.txt", body = "hello zip", comment = "a comment PK\x05\x06 that looks like a record";
  const auto le16 = [](std::uint16_t v) { return std::string(reinterpret_cast<const char*>(&v), 2); };
  const std::uint32_t crc = crc32(as_span(body));
  std::string z = le32(0x04034b50) + le16(10) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(9) + le32(9) +
                  le16(5) + le16(0) + name + body;
  const auto cd = static_cast<std::uint32_t>(z.size());
  z += le32(0x02014b50) + le16(20) + le16(10) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(9) + le32(9) +
       le16(5) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(0) + name;
  const auto cd_size = static_cast<std::uint32_t>(z.size() - cd);
  z += le32(0x06054b50) + le16(0) + le16(0) + le16(1) + le16(1) + le32(cd_size) + le32(cd) +
       le16(static_cast<std::uint16_t>(comment.size())) + comment;
  write_raw(tmp.path / "c.zip", z);
  const zip_reader r = zip_reader::open(tmp.path / "c.zip");
  BOOST_TEST(!r.zip64());
  BOOST_REQUIRE(r.entries().size() == 1u);
  BOOST_TEST(as_string(r.at("a.txt").data) == body);
  r.verify_crc(r.at("a.txt"));
}

BOOST_AUTO_TEST_CASE(corrupt_archives) {
  temp_dir tmp;
  const fs::path good = tmp.path / "good.zip";
  {
    zip_writer w(good);
    w.add("d/one", "0123456789");
    w.add("d/two", "abc");
    w.commit();
  }
  const std::string raw = read_raw(good);
  const std::size_t cd = raw.find("PK\x01\x02");
  const std::size_t cd2 = raw.find("PK\x01\x02", cd + 4);
  const fs::path bad = tmp.path / "bad.zip";
  const auto patched = [&](std::size_t at, const std::string& bytes) {
    std::string s = raw;
    s.replace(at, bytes.size(), bytes);
    write_raw(bad, s);
    return bad;
  };
  const auto le16 = [](std::uint16_t v) { return std::string(reinterpret_cast<const char*>(&v), 2); };
  const auto open = [&](const fs::path& p) { return [p] { (void)zip_reader::open(p); }; };

  expect_error(open(patched(cd + 10, le16(8))), {bad.string(), "'d/one'", "compressed (deflate)"});
  expect_error(open(patched(cd2 + 10, le16(93))), {"'d/two'", "compressed (zstd)"});
  expect_error(open(patched(cd + 8, le16(0x0809))), {"'d/one'", "encrypted"});
  expect_error(open(patched(cd2 + 46, "d/one")), {"'d/one'", "more than once"});
  expect_error(open(patched(cd + 42, le32(0x7FFFFFF0))), {"'d/one'", "local header at offset 2147483632"});
  expect_error(open(patched(cd + 24, le32(1u << 30))), {"'d/one'", "compressed size"});
  {
    std::string s = raw;
    s.replace(cd + 20, 8, le32(1u << 30) + le32(1u << 30));
    write_raw(bad, s);
    expect_error(open(bad), {"'d/one'", "run past the central directory"});
  }
  expect_error(open(patched(0 + 30, "x")), {"'d/one'", "names 'x/one' instead"});
  expect_error(open(patched(cd, "PK\x01\x09")), {bad.string(), "bad signature"});
  // End records: absurd counts, a directory past the end, multi-disk.
  const std::size_t e64 = raw.rfind("PK\x06\x06");
  expect_error(open(patched(e64 + 24, std::string("\xff\xff\xff\xff\xff\xff\x00\x00", 8) +
                                          std::string("\xff\xff\xff\xff\xff\xff\x00\x00", 8))),
               {"declares 281474976710655 entries, more than the limit"});
  expect_error(open(patched(e64 + 24, std::string("\x09\0\0\0\0\0\0\0\x09\0\0\0\0\0\0\0", 16))),
               {"declares 9 entries", "holds at most"});
  expect_error(open(patched(e64 + 24, std::string("\x03\x00\x00\x00\x00\x00\x00\x00", 8))), {"multi-disk"});
  expect_error(open(patched(e64 + 48, std::string("\x00\x00\x00\x00\x01\x00\x00\x00", 8))), {"central directory ["});
  expect_error(open(patched(e64, "PK\x06\x07")), {"no zip64 end-of-central-directory record"});
  {  // A forced-zip64 archive whose locator is gone: the classic end record holds only markers.
    zip_writer w(tmp.path / "z64.zip", {.force_zip64 = true, .alignment = 64});
    w.add("d/one", "1");
    w.commit();
    std::string s = read_raw(tmp.path / "z64.zip");
    s.replace(s.rfind("PK\x06\x07"), 4, "XXXX");
    write_raw(bad, s);
    expect_error(open(bad), {"zip64 markers", "no zip64 locator"});
  }
  // Not a zip at all, too short, a directory.
  write_raw(bad, std::string(5000, 'a'));
  expect_error(open(bad), {bad.string(), "not a zip archive"});
  write_raw(bad, "PK\x03\x04 short");
  expect_error(open(bad), {"too short"});
  write_raw(bad, raw.substr(0, raw.size() - 1));
  expect_error(open(bad), {"not a zip archive", "probably truncated"});
  expect_error(open(tmp.path), {"not a regular file"});
  expect_error(open(tmp.path / "missing.zip"), {"cannot open"});
  // A flipped data byte passes open() but not verify_crc().
  const zip_reader r = zip_reader::open(patched(raw.find("0123456789"), "X"));
  expect_error([&] { r.verify_crc(r.at("d/one")); }, {"'d/one'", "CRC-32"});
}

BOOST_AUTO_TEST_CASE(writer_refuses_bad_names) {
  temp_dir tmp;
  zip_writer w(tmp.path / "w.zip");
  w.add("a", "1");
  expect_error([&] { w.add("a", "2"); }, {"'a' added twice"});
  expect_error([&] { w.add("", "2"); }, {"name of 0 bytes"});
  // Never committed: no file, no temp file.
}

BOOST_AUTO_TEST_SUITE_END()

// =================================================================================================================
BOOST_AUTO_TEST_SUITE(pth)

BOOST_AUTO_TEST_CASE(round_trip_every_dtype) {
  temp_dir tmp;
  std::mt19937_64 g = loralab::testing::rng(3);
  const std::vector<dtype> types = {dtype::F64, dtype::F32, dtype::F16,  dtype::BF16,    dtype::I64,
                                    dtype::I32, dtype::I16, dtype::I8,   dtype::U64,     dtype::U32,
                                    dtype::U16, dtype::U8,  dtype::BOOL, dtype::F8_E4M3, dtype::F8_E5M2};
  std::vector<fixed_tensor> ts;
  for (const dtype t : types) {
    fixed_tensor f{"model." + std::string(dtype_name(t)), t, {}, ""};
    const int rank = static_cast<int>(g() % 5);  // 0-d up to 4-d, sometimes with a 0 dimension
    for (int k = 0; k < rank; ++k) f.shape.push_back(static_cast<std::int64_t>(g() % (g() % 8 == 0 ? 1 : 6)));
    std::size_t n = 1;
    for (const auto d : f.shape) n *= static_cast<std::size_t>(d);
    f.bytes.resize(n * dtype_size(t));
    for (auto& c : f.bytes) c = static_cast<char>(t == dtype::BOOL ? g() % 2 : g());  // any bits, NaNs too
    ts.push_back(std::move(f));
  }
  for (const bool zip64 : {false, true}) {
    BOOST_TEST_CONTEXT("force_zip64 " << zip64) {
      const fs::path p = tmp.path / "round.trip.pth";
      pth_writer w;
      for (const auto& t : ts) w.add(t.name, t.type, t.shape, as_span(t.bytes));
      w.write(p, {.archive_name = "", .force_zip64 = zip64});
      const pth_file f = read_pth(p);
      BOOST_TEST(f.archive_name() == "round.trip");  // the file name without its last extension, as torch.save
      BOOST_REQUIRE(f.tensors().size() == ts.size());
      BOOST_TEST(f.values().empty());
      for (std::size_t i = 0; i < ts.size(); ++i) {
        const pth_tensor& t = f.tensors()[i];  // the order added
        BOOST_TEST_CONTEXT(ts[i].name) {
          BOOST_TEST(t.name == ts[i].name);
          BOOST_TEST((t.type == ts[i].type));
          BOOST_TEST(t.shape == ts[i].shape);
          BOOST_TEST(as_string(t.bytes) == ts[i].bytes);
          BOOST_TEST(&f.at(t.name) == &t);
        }
      }
      const std::vector<float> h = f.at("model.F16").to_float();
      BOOST_TEST(h.size() == f.at("model.F16").numel());
      const std::vector<float> d = f.at("model.F64").to_float();  // F64 rounds to float
      std::vector<double> dv = f.at("model.F64").to_vector<double>();
      for (std::size_t i = 0; i < d.size(); ++i)
        BOOST_TEST((d[i] == static_cast<float>(dv[i]) || (std::isnan(d[i]) && std::isnan(dv[i]))));
      expect_error([&] { (void)f.at("model.I8").to_float(); }, {"to_float() converts only"});
      expect_error([&] { (void)f.at("nope"); }, {p.string(), "no tensor 'nope'"});
    }
  }
}

BOOST_AUTO_TEST_CASE(more_than_one_pickle_batch) {
  // pickle writes SETITEMS in batches of 1000; 1001 entries end with a lone SETITEM.
  temp_dir tmp;
  pth_writer w;
  std::vector<float> v(1001);
  for (int i = 0; i < 1001; ++i) {
    v[i] = static_cast<float>(i);
    w.add<float>(std::string("t") + std::to_string(i), {1}, std::span<const float>(&v[i], 1));
  }
  const std::string pkl = w.pickle();
  BOOST_TEST(pkl.substr(pkl.size() - 2) == "s.");
  w.write(tmp.path / "many.pth");
  const pth_file f = read_pth(tmp.path / "many.pth");
  BOOST_REQUIRE(f.tensors().size() == 1001u);
  for (int i = 0; i < 1001; ++i) BOOST_TEST(f.tensors()[i].to_float() == std::vector<float>{static_cast<float>(i)});
  pth_writer one, none;
  one.add<float>("x", {1}, std::span<const float>(v.data(), 1));
  BOOST_TEST(one.pickle().substr(one.pickle().size() - 2) == "s.");
  BOOST_TEST(none.pickle() == std::string("\x80\x02}q\x00.", 6));
  none.write(tmp.path / "none.pth");
  BOOST_TEST(read_pth(tmp.path / "none.pth").tensors().empty());
}

BOOST_AUTO_TEST_CASE(pickle_matches_torch) {
  // data.pkl of torch.save({"a": torch.arange(6.).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16),
  // "c": torch.tensor(2.5, dtype=torch.float16)}) (torch 2.15), memo and all.
  const std::string want(
      "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01" "ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00"
      "\x00storageq\x03" "ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x00" "0q\x05X\x03\x00\x00\x00" "cpuq\x06"
      "K\x06tq\x07QK\x00K\x02K\x03\x86q\x08K\x03K\x01\x86q\x09\x89" "ccollections\nOrderedDict\nq\n)Rq\x0bt"
      "q\x0cRq\x0dX\x01\x00\x00\x00" "bq\x0eh\x02((h\x03" "ctorch\nBFloat16Storage\nq\x0fX\x01\x00\x00\x00" "1"
      "q\x10h\x06K\x03tq\x11QK\x00K\x03\x85q\x12K\x01\x85q\x13\x89h\n)Rq\x14tq\x15Rq\x16X\x01\x00\x00\x00" "c"
      "q\x17h\x02((h\x03" "ctorch\nHalfStorage\nq\x18X\x01\x00\x00\x00" "2q\x19h\x06K\x01tq\x1aQK\x00))\x89"
      "h\n)Rq\x1btq\x1cRq\x1du.",
      315);
  const float a[6] = {0, 1, 2, 3, 4, 5};
  const Eigen::bfloat16 b[3] = {Eigen::bfloat16(1.0f), Eigen::bfloat16(1.0f), Eigen::bfloat16(1.0f)};
  const Eigen::half c(2.5f);
  pth_writer w;
  w.add<float>("a", {2, 3}, std::span(a));
  w.add<Eigen::bfloat16>("b", {3}, std::span(b));
  w.add<Eigen::half>("c", {}, std::span(&c, 1));
  BOOST_TEST(w.pickle() == want);
}

BOOST_AUTO_TEST_CASE(writer_refuses_bad_tensors) {
  pth_writer w;
  const float x[2] = {1, 2};
  w.add<float>("x", {2}, std::span(x));
  expect_error([&] { w.add<float>("x", {2}, std::span(x)); }, {"'x' added twice"});
  expect_error([&] { w.add<float>("y", {3}, std::span(x)); }, {"'y' has 8 bytes", "needs 12"});
  expect_error([&] { w.add<float>("z", {-1, -2}, std::span(x)); }, {"'z' has a negative dimension"});
  temp_dir tmp;
  expect_error([&] { w.write(tmp.path / ".pth"); }, {"archive name ''"});
}

BOOST_AUTO_TEST_CASE(writer_matches_committed_files) {
  // pth_writer is deterministic: the fixed tensors give the committed bytes. LORALAB_UPDATE_GOLDEN=1 rewrites
  // them (then run tests/reference/make_pth_golden.py).
  if (std::getenv("LORALAB_UPDATE_GOLDEN") != nullptr) {
    write_fixed(data_dir / "loralab_written.pth", false);
    write_fixed(data_dir / "loralab_written_zip64.pth", true);
  }
  temp_dir tmp;
  for (const std::string name : {"loralab_written.pth", "loralab_written_zip64.pth"}) {
    BOOST_TEST_CONTEXT(name) {
      write_fixed(tmp.path / name, name.find("zip64") != std::string::npos);
      const std::string got = read_raw(tmp.path / name), want = read_raw(data_dir / name);
      BOOST_TEST(got.size() == want.size());
      BOOST_TEST((got == want));
    }
  }
}

BOOST_AUTO_TEST_CASE(torch_loads_what_loralab_writes) {
  // tests/data/loralab_written_golden.safetensors is what torch.load(weights_only=True) saw in loralab_written.pth.
  const auto golden = safetensors_file::open(data_dir / "loralab_written_golden.safetensors");
  BOOST_TEST_MESSAGE("golden made with torch " << golden.metadata().at("torch"));
  BOOST_TEST(golden.metadata().at("torch_save_identical") == "true");  // torch.save re-writes the same bytes
  const std::vector<fixed_tensor> ts = written_tensors();
  std::vector<std::string> names;
  for (const auto& t : ts) names.push_back(t.name);
  const auto keys = nlohmann::json::parse(golden.metadata().at("keys")).get<std::vector<std::string>>();
  BOOST_TEST(keys == names, boost::test_tools::per_element());
  for (const auto& t : ts) {
    BOOST_TEST_CONTEXT(t.name) {
      const tensor_view& v = golden.at(t.name);
      BOOST_TEST(dtype_name(v.type) == dtype_name(t.type));
      BOOST_TEST(v.shape == t.shape);
      BOOST_TEST(as_string(v.bytes) == t.bytes);
    }
  }
  // And loralab reads its own committed files the same way.
  for (const std::string name : {"loralab_written.pth", "loralab_written_zip64.pth"}) {
    const pth_file f = read_pth(data_dir / name);
    BOOST_REQUIRE(f.tensors().size() == ts.size());
    for (std::size_t i = 0; i < ts.size(); ++i) BOOST_TEST(as_string(f.tensors()[i].bytes) == ts[i].bytes);
  }
}

BOOST_AUTO_TEST_CASE(reads_what_torch_saves) {
  // tests/data/torch_saved.pth: torch.save of views, shared storages, a Parameter, v3 dtypes, a nested dict, an
  // int; tests/data/torch_saved_values.safetensors: the contiguous values torch sees.
  const pth_file f = read_pth(data_dir / "torch_saved.pth");
  const auto want = safetensors_file::open(data_dir / "torch_saved_values.safetensors");
  BOOST_TEST_MESSAGE("golden made with torch " << want.metadata().at("torch"));
  BOOST_TEST(f.archive_name() == "torch_saved");
  const auto keys = nlohmann::json::parse(want.metadata().at("keys")).get<std::vector<std::string>>();
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  BOOST_TEST(names == keys, boost::test_tools::per_element());  // dict order, nested names flattened
  for (const auto& t : f.tensors()) {
    BOOST_TEST_CONTEXT(t.name) {
      const tensor_view& v = want.at(t.name);
      BOOST_TEST(dtype_name(t.type) == dtype_name(v.type));
      BOOST_TEST(t.shape == v.shape);
      BOOST_TEST(as_string(t.bytes) == as_string(v.bytes));
    }
  }
  const std::vector<std::pair<std::string, std::string>> values = {{"block.step", "7"}, {"epoch", "3"}};
  BOOST_TEST((f.values() == values));
  BOOST_TEST(!f.contains("epoch"));
  // Views: the transpose and the column are copies; the row slice and shared_b point into the file.
  BOOST_TEST(f.at("transposed").shape == (std::vector<std::int64_t>{5, 4}));
  BOOST_TEST(f.at("column").to_float() == (std::vector<float>{0.5f, 1.75f, 3.0f, 4.25f}));
  BOOST_TEST(f.at("rows").to_float()[0] == 1.25f);
  BOOST_TEST(f.at("shared_b").bytes.data() == f.at("shared_a").bytes.data() + 6 * sizeof(float));
  BOOST_TEST(f.at("scalar").shape.empty());
  BOOST_TEST(f.at("one").to_float() == std::vector<float>{-1.5f});
}

BOOST_AUTO_TEST_CASE(refuses_globals_outside_the_allow_list) {
  temp_dir tmp;
  const fs::path p = tmp.path / "evil.pth";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"\x80\x02" + G("os", "system") + X("echo pwned") + "\x85R.", {"'os.system' is not allowed"}},
      {"\x80\x02" + G("posix", "system") + X("id") + "\x85R.", {"'posix.system' is not allowed"}},
      {"\x80\x04\x8c\x08"s + "builtins" + "\x8c\x04" + "eval" + "\x93" + X("1+1") + "\x85R.",  // STACK_GLOBAL
       {"'builtins.eval' is not allowed"}},
      {"\x80\x02" + G("numpy.core.multiarray", "_reconstruct") + ").", {"'numpy.core.multiarray._reconstruct'"}},
      {"\x80\x02" + G("torch", "load") + ").", {"'torch.load' is not allowed"}},
      {"\x80\x02" + G("torch._utils", "_rebuild_tensor_v2x") + ").", {"not allowed"}},
      {"\x80\x02" + G("torch", "FloatStorage") + ")R.", {"'torch.FloatStorage' is not callable"}},
      {"\x80\x02" + G("collections", "OrderedDict") + X("x") + "\x85R.", {"OrderedDict called with 1 arguments"}},
  };
  for (const auto& [pkl, needles] : cases) {
    BOOST_TEST_CONTEXT(needles.front()) {
      write_pth_raw(p, pkl);
      std::vector<std::string> n = needles;
      n.push_back(p.string());
      n.push_back("data.pkl offset");
      expect_error([&] { (void)read_pth(p); }, n);
    }
  }
}

BOOST_AUTO_TEST_CASE(refuses_hostile_pickles) {
  temp_dir tmp;
  const fs::path p = tmp.path / "hostile.pth";
  const std::string six = floats({0, 1, 2, 3, 4, 5});
  const auto run = [&](const std::string& pkl, const std::vector<std::string>& needles, pth_limits lim = {},
                       bool with_storage = true) {
    BOOST_TEST_CONTEXT(needles.front()) {
      using records = std::vector<std::pair<std::string, std::string>>;
      write_pth_raw(p, pkl, with_storage ? records{{"0", six}} : records{});
      expect_error([&] { (void)read_pth(p, lim); }, needles);
    }
  };
  const auto tensor = [](std::int64_t numel, std::int64_t off, std::vector<std::int64_t> size,
                         std::vector<std::int64_t> stride) {
    return dict_pickle({{"w", tensor_expr("FloatStorage", "0", numel, off, size, stride)}});
  };
  // Sanity: the hand-built pickle reads.
  write_pth_raw(p, tensor(6, 1, {2, 2}, {1, 2}), {{"0", six}});
  BOOST_TEST(read_pth(p).at("w").to_float() == (std::vector<float>{1, 3, 2, 4}));

  run("\x80\x02}\xff.", {p.string(), "opcode 0xff"});
  run("\x80\x02(i__main__\nx\n.", {"opcode 0x69"});  // INST
  run("\x80\x06}.", {"pickle protocol 6"});
  run("\x80\x02}", {"ends without a STOP"});
  run("\x80\x02X\xff\xff\xff\xff"
      "abc",
      {"truncated"});  // huge string length
  run("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", {"truncated"});
  run("\x80\x02\x8a\x09" + std::string(9, '\1') + ".", {"does not fit 64 bits"});
  run("\x80\x02h\x05.", {"memo key 5"});
  run("\x80\x02t.", {"no MARK"});
  run("\x80\x02\x85.", {"stack underflow"});
  run("\x80\x02}(.", {"stack underflow"});  // a MARK hides the stack below it
  run("\x80\x02]" + X("k") + X("v") + "s.", {"SETITEM(S) on a list"});
  run("\x80\x02]N(Nd.", {"odd number"});
  run("\x80\x02]Nb.", {"BUILD on a list"});
  run("\x80\x02" + G("x\n", "y") + ".", {"not allowed"});
  run("\x80\x02"
      "c" +
          std::string(300, 'a'),
      {"not ended by a newline"});
  run("\x80\x02]" + X("x") + "Q.", {"persistent id is not"});
  run(
      "\x80\x02]q\x00"s +
          [] {
            std::string s;
            for (int i = 0; i < 1000; ++i) s += "h\0"s;
            return s;
          }() +
          ".",
      {"stack deeper than 100"}, limits([](pth_limits& l) { l.max_stack = 100; }));
  run("\x80\x02" + std::string(1000, ')') + ".", {"more than 500 objects"},
      limits([](pth_limits& l) { l.max_objects = 500; }));
  run("\x80\x02}" + std::string(1000, '(') + ".", {"open MARKs"}, limits([](pth_limits& l) { l.max_stack = 100; }));
  run(
      "\x80\x02]" +
          [] {
            std::string s;
            for (int i = 0; i < 300; ++i) s += std::string("r") + le32(i);
            return s;
          }() +
          ".",
      {"more than 200 memo entries"}, limits([](pth_limits& l) { l.max_memo = 200; }));
  run("\x80\x02]", {"data.pkl is 3 bytes, more than the limit of 2"},
      limits([](pth_limits& l) { l.max_pickle_bytes = 2; }));
  run("\x80\x02].", {"holds a list, not a dict"});
  run("\x80\x02" + tensor_expr("FloatStorage", "0", 6, 0, {6}, {1}) + ".", {"holds a tensor, not a dict"});

  // Deep nesting: 100000 lists inside one another, and a list inside itself; flattening stops at 64 levels.
  run("\x80\x02}" + X("k") + std::string(100000, ']') + std::string(99999, 'a') + "s.", {"nested more than 64 levels"});
  run("\x80\x02}" + X("k") +
          "]q\x00h\x00"
          "as."s,
      {"'k.0.0.0", "nested more than"});
  // A DAG that doubles at each of 40 levels: 2^40 paths.
  {
    std::string s = "\x80\x02}" + X("k") + "]q\x01";
    for (int i = 0; i < 40; ++i) s += "h\x01\x86q\x01";  // T = (T, T)
    run(s + "s.", {"more than 10000 entries when flattened"}, limits([](pth_limits& l) { l.max_visits = 10000; }));
    run(s + "s.", {"take more than 268435456 bytes"});  // the defaults stop it too
  }
  // One 10 kB string referenced 100 times: the flattened values would take 1 MB.
  run(
      "\x80\x02}" + X("k") + "]" + X(std::string(10000, 's')) + "q\x01" + "a(" +
          [] {
            std::string s;
            for (int i = 0; i < 99; ++i) s += "h\x01";
            return s;
          }() +
          "es.",
      {"names, values and shapes take more than 100000 bytes"},
      limits([](pth_limits& l) { l.max_flat_bytes = 100000; }));
  // Huge declared sizes, views out of bounds, storages that do not match their records.
  run(tensor(1ll << 62, 0, {6}, {1}), {"tensor 'w'", "storage '0' of 4611686018427387904 x F32", "holds 24"});
  run(tensor(7, 0, {7}, {1}), {"tensor 'w'", "needs 28 bytes", "holds 24"});
  run(tensor(6, 0, {1ll << 40, 1ll << 40}, {1, 1}), {"tensor 'w'", "more elements than fit in memory"});
  run(tensor(6, 4, {3}, {1}), {"tensor 'w'", "reaches element 6", "past the end of its storage '0'"});
  run(tensor(6, 0, {2, 3}, {3, 2}), {"tensor 'w'", "reaches element 7"});
  run(tensor(6, 0, {2}, {1ll << 62}), {"tensor 'w'", "reaches element 4611686018427387904"});
  run(tensor(6, 0, {3, 3}, {1ll << 62, 1ll << 62}), {"tensor 'w'", "overflows"});
  run(tensor(6, -1, {2}, {1}), {"tensor 'w'", "negative offset"});
  run(tensor(6, 0, {2}, {-1}), {"tensor 'w'", "negative size or stride"});
  run(tensor(6, 0, {2, 3}, {1}), {"size has 2 dimensions, stride 1"});
  run(tensor(-6, 0, {6}, {1}), {"negative numel"});
  run(tensor(6, 0, {6}, {1}), {"tensor 'w'", "storage record 'archive/data/0' is missing"}, {}, false);
  run(tensor(6, 0, {3, 2}, {1, 3}), {"needs a copy of 24 bytes, past the limit 10"},
      limits([](pth_limits& l) { l.max_copy_bytes = 10; }));
  run(dict_pickle({{"a", tensor_expr("FloatStorage", "0", 6, 0, {6}, {1})},
                   {"b", tensor_expr("HalfStorage", "0", 12, 0, {6}, {1})}}),
      {"storage '0' is used as F32 x 6 and as F16 x 12"});
  run(dict_pickle({{"a", tensor_expr("FloatStorage", "0", 6, 0, {6}, {1})}, {"a", "K\x01"}}),
      {"name 'a' appears twice"});
}

BOOST_AUTO_TEST_CASE(refuses_other_files) {
  temp_dir tmp;
  const fs::path p = tmp.path / "other.pth";
  // The legacy format (PyTorch < 1.6): a pickled magic number first.
  write_raw(p, std::string("\x80\x02\x8a\x0al\xfc\x9c\x46\xf9\x20j\xa8P\x19.\x80\x02M\xe9\x03.", 21));
  expect_error([&] { (void)read_pth(p); }, {p.string(), "legacy (PyTorch < 1.6, not zip)"});
  write_raw(p, "not a checkpoint at all, just text that is long enough to be searched for a zip end record");
  expect_error([&] { (void)read_pth(p); }, {p.string(), "not a zip archive"});
  {
    zip_writer z(p);
    z.add("archive/version", "3\n");
    z.commit();
  }
  expect_error([&] { (void)read_pth(p); }, {p.string(), "no record 'archive/data.pkl'", "not a torch.save file"});
  {
    zip_writer z(p);
    z.add("archive/constants.pkl", "");
    z.commit();
  }
  expect_error([&] { (void)read_pth(p); }, {"TorchScript"});
  {
    zip_writer z(p);
    z.add("data.pkl", "");
    z.commit();
  }
  expect_error([&] { (void)read_pth(p); }, {"'data.pkl' is not in a folder"});
  {
    zip_writer z(p);
    z.add("a/data.pkl", "\x80\x02}.");
    z.add("a/byteorder", "big");
    z.commit();
  }
  expect_error([&] { (void)read_pth(p); }, {"byteorder record says 'big'"});
  {
    zip_writer z(p);
    z.commit();
  }
  expect_error([&] { (void)read_pth(p); }, {"zip archive is empty"});
  // A compressed data.pkl, and a record that appears twice.
  {
    zip_writer z(p);
    z.add("a/data.pkl", "\x80\x02}.");
    z.add("a/data.pkz", "\x80\x02}.");
    z.commit();
  }
  const std::string raw = read_raw(p);
  const std::size_t cd = raw.find("PK\x01\x02"), cd2 = raw.find("PK\x01\x02", cd + 4);
  std::string s = raw;
  s[cd + 10] = 8;
  write_raw(p, s);
  expect_error([&] { (void)read_pth(p); }, {p.string(), "zip entry 'a/data.pkl'", "compressed (deflate)"});
  s = raw;
  s[cd2 + 46 + 9] = 'l';
  write_raw(p, s);
  expect_error([&] { (void)read_pth(p); }, {p.string(), "zip entry 'a/data.pkl'", "appears more than once"});
}

BOOST_AUTO_TEST_CASE(every_truncation_and_byte_flip_throws_or_reads) {
  // Truncated at every offset: always an error. One byte flipped at every offset, CRCs unchecked so that the
  // unpickler and the view checks see the damage: an error or a file that reads, never a crash (run under
  // valgrind or ASan to be sure).
  const std::string raw = read_raw(data_dir / "torch_saved.pth");
  temp_dir tmp;
  const fs::path p = tmp.path / "cut.pth";
  for (std::size_t n = 0; n < raw.size(); ++n) {
    write_raw(p, raw.substr(0, n));
    try {
      (void)read_pth(p);
      BOOST_ERROR("truncated at " << n << " of " << raw.size() << " bytes and still read");
    } catch (const loralab::error&) {
    }
  }
  std::size_t read_ok = 0, refused = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    std::string s = raw;
    s[i] = static_cast<char>(s[i] ^ (i % 7 == 0 ? 0x80 : 0x01 << (i % 8)));
    write_raw(p, s);
    try {
      const pth_file f = read_pth(p, limits([](pth_limits& l) { l.verify_crc = false; }));
      for (const auto& t : f.tensors()) BOOST_TEST(t.bytes.size() == t.numel() * dtype_size(t.type));
      ++read_ok;
    } catch (const loralab::error&) {
      ++refused;
    }
  }
  BOOST_TEST_MESSAGE("byte flips: " << read_ok << " read, " << refused << " refused");
  BOOST_TEST(refused > 0u);
  // With CRCs checked, a flip in a storage is caught.
  std::string s = raw;
  const zip_reader z = zip_reader::open(data_dir / "torch_saved.pth");
  s[z.at("torch_saved/data/0").data_offset] ^= 1;
  write_raw(p, s);
  expect_error([&] { (void)read_pth(p); }, {"'torch_saved/data/0'", "CRC-32"});
}

BOOST_AUTO_TEST_SUITE_END()

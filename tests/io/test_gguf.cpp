// SPDX-License-Identifier: MIT
// io/gguf.hpp: the golden file written by gguf-py (tests/reference/make_gguf_golden.py) read in full and checked
// against tests/data/gguf_golden.json; the writer byte for byte against it and in round trips over every value
// type; hostile files (truncation at every offset, byte flips, bad magic and versions, huge lengths and counts,
// deep nesting, bad dims, types, offsets and overlaps), each refused with a message naming the limit; and, when it
// is in the cache, the real SmolLM2-135M-Instruct Q4_1 file (skipped with the reason otherwise).
#define BOOST_TEST_MODULE gguf
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/gguf.hpp"
#include "expect_error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace loralab::io;
using loralab::testing::temp_dir;
using json = nlohmann::json;

namespace {

const fs::path data_dir = LORALAB_TEST_DATA_DIR;
const fs::path golden = data_dir / "gguf_golden.gguf";

std::string read_raw(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  BOOST_REQUIRE(f.good());
}
json expected() {
  std::ifstream f(data_dir / "gguf_golden.json");
  return json::parse(f);
}

using loralab::testing::expect_error;

// ---- GGUF pieces, to build hostile files by hand ------------------------------------------------------------------
std::string u32(std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string u64(std::uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string str(const std::string& s) { return u64(s.size()) + s; }
std::string header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
  return "GGUF" + u32(version) + u64(n_tensors) + u64(n_kv);
}
std::string kv_u32(const std::string& key, std::uint32_t v) { return str(key) + u32(4) + u32(v); }
std::string tensor_info(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type,
                        std::uint64_t offset) {
  std::string s = str(name) + u32(static_cast<std::uint32_t>(ne.size()));
  for (auto d : ne) s += u64(d);
  return s + u32(type) + u64(offset);
}
std::string pad_to(std::string s, std::size_t align) {
  s.resize((s.size() + align - 1) / align * align, '\0');
  return s;
}

/// Writes `bytes` to a temp file and opens it; must fail with every needle in the message.
void expect_refused(const std::string& bytes, const std::vector<std::string>& needles) {
  temp_dir tmp;
  const fs::path p = tmp.path / "hostile.gguf";
  write_raw(p, bytes);
  std::vector<std::string> all = needles;
  all.insert(all.begin(), p.string() + ": ");
  expect_error([&] { gguf_file::open(p); }, all);
}

gguf_value_type value_type_named(const std::string& name) {
  static const std::map<std::string, gguf_value_type> names = {
      {"UINT8", gguf_value_type::uint8},     {"INT8", gguf_value_type::int8},     {"UINT16", gguf_value_type::uint16},
      {"INT16", gguf_value_type::int16},     {"UINT32", gguf_value_type::uint32}, {"INT32", gguf_value_type::int32},
      {"FLOAT32", gguf_value_type::float32}, {"BOOL", gguf_value_type::boolean},  {"STRING", gguf_value_type::string},
      {"ARRAY", gguf_value_type::array},     {"UINT64", gguf_value_type::uint64}, {"INT64", gguf_value_type::int64},
      {"FLOAT64", gguf_value_type::float64}};
  return names.at(name);
}

/// Checks one scalar or array value against its JSON form from the golden script.
void check_value(const gguf_value& v, gguf_value_type type, const json& want, const std::string& key) {
  BOOST_TEST_CONTEXT("key " << key) {
    BOOST_TEST(static_cast<int>(v.type()) == static_cast<int>(type));
    if (want.is_array()) {
      BOOST_TEST_REQUIRE(v.size() == want.size());
      for (std::size_t i = 0; i < want.size(); ++i) check_value(v.at(i), v.element_type(), want[i], key);
      return;
    }
    switch (type) {
      case gguf_value_type::string: BOOST_TEST(v.get_string() == want.get<std::string>()); break;
      case gguf_value_type::boolean: BOOST_TEST(v.get_bool() == want.get<bool>()); break;
      case gguf_value_type::float32: BOOST_TEST(v.get_float() == double(want.get<float>())); break;
      case gguf_value_type::float64: BOOST_TEST(v.get_float() == want.get<double>()); break;
      case gguf_value_type::uint64: BOOST_TEST(v.get_uint() == want.get<std::uint64_t>()); break;
      default: BOOST_TEST(v.get_int() == want.get<std::int64_t>()); break;
    }
  }
}

}  // namespace

// ---- the golden file -----------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(golden_metadata_matches_gguf_py) {
  const json want = expected();
  const gguf_file f = gguf_file::open(golden);
  BOOST_TEST(f.version() == 3u);
  BOOST_TEST(f.alignment() == 64u);
  BOOST_TEST(f.data_offset() == want["data_offset"].get<std::uint64_t>());
  BOOST_TEST_REQUIRE(f.metadata().size() == want["metadata_order"].size());
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    const auto& [key, value] = f.metadata()[i];
    BOOST_TEST(key == want["metadata_order"][i].get<std::string>());
    const json& w = want["metadata"][key];
    check_value(value, value_type_named(w["type"]), w["value"], key);
    if (w.contains("element_type"))
      BOOST_TEST(static_cast<int>(value.element_type()) == static_cast<int>(value_type_named(w["element_type"])));
  }
  // The typed getters, over every integer width.
  BOOST_TEST(f.get_string("general.architecture") == "llama");
  BOOST_TEST(f.get_uint("test.uint8") == 200u);
  BOOST_TEST(f.get_int("test.int8") == -100);
  BOOST_TEST(f.get_uint("test.uint64") == (std::uint64_t(1) << 63) + 5);
  BOOST_TEST(f.get_int("test.int64") == -(std::int64_t(1) << 62) - 3);
  BOOST_TEST(f.get_float("test.float32") == double(0.1f));
  BOOST_TEST(f.get_float("test.float64") == 3.141592653589793);
  BOOST_TEST(f.get_bool("test.bool_true"));
  BOOST_TEST(!f.get_bool("test.bool_false"));
  BOOST_TEST(f.get_string("test.empty_string").empty());
  BOOST_TEST(f.get_string_array("test.array_string") ==
                 (std::vector<std::string>{"a", "", "Ġthe", "<|im_start|>"}),
             boost::test_tools::per_element());
  BOOST_TEST(f.get_int_array("test.array_int32") == (std::vector<std::int64_t>{1, -2, 2147483647, -2147483648LL}),
             boost::test_tools::per_element());
  BOOST_TEST(f.get_float_array("test.array_float32") == (std::vector<double>{0.5, -1.25, double(1e30f)}),
             boost::test_tools::per_element());
  const gguf_value& nested = f.at("test.array_nested");
  BOOST_TEST(nested.type_name() == "array of array");
  BOOST_TEST_REQUIRE(nested.items().size() == 3u);
  BOOST_TEST(nested.items()[0].get_int_array() == (std::vector<std::int64_t>{1, 2, 3}), boost::test_tools::per_element());
  // Optional getters.
  BOOST_TEST(!f.find_uint("no.such.key").has_value());
  BOOST_TEST(f.find_uint("llama.block_count").value() == 2u);
  BOOST_TEST(f.find("no.such.key") == nullptr);
}

BOOST_AUTO_TEST_CASE(typed_getters_name_file_key_and_types) {
  const gguf_file f = gguf_file::open(golden);
  const std::string p = golden.string();
  expect_error([&] { f.get_uint("general.architecture"); },
               {p, "key 'general.architecture'", "is string, not an unsigned integer"});
  expect_error([&] { f.get_uint("test.int8"); }, {"key 'test.int8'", "-100", "not a non-negative integer"});
  expect_error([&] { f.get_int("test.uint64"); }, {"key 'test.uint64'", "does not fit int64"});
  expect_error([&] { f.get_string("test.uint32"); }, {"key 'test.uint32'", "is uint32, not string"});
  expect_error([&] { f.get_bool("test.int32"); }, {"is int32, not bool"});
  expect_error([&] { f.get_string_array("test.array_int32"); }, {"is array of int32, not an array of string"});
  expect_error([&] { f.get_int_array("test.array_float32"); }, {"is array of float32, not an array of integers"});
  expect_error([&] { f.get_float("test.string"); }, {"is string, not a number"});
  expect_error([&] { f.get_string("missing.key"); }, {p, "no metadata key 'missing.key'"});
  expect_error([&] { f.find_string("test.uint8"); }, {"is uint8, not string"});  // present, wrong type: no nullopt
  expect_error([&] { f.tensor("nope"); }, {p, "no tensor 'nope'"});
}

BOOST_AUTO_TEST_CASE(golden_tensors_match_gguf_py) {
  const json want = expected();
  const gguf_file f = gguf_file::open(golden);
  BOOST_TEST_REQUIRE(f.tensors().size() == want["tensor_order"].size());
  for (std::size_t i = 0; i < f.tensors().size(); ++i) {
    const gguf_tensor_info& t = f.tensors()[i];
    BOOST_TEST_CONTEXT("tensor " << t.name) {
      BOOST_TEST(t.name == want["tensor_order"][i].get<std::string>());
      const json& w = want["tensors"][t.name];
      BOOST_TEST(std::string(ggml_type_name(t.type)) == w["type"].get<std::string>());
      BOOST_TEST(t.dims == w["ne"].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
      BOOST_TEST(t.n_bytes == w["n_bytes"].get<std::uint64_t>());
      BOOST_TEST(t.offset == w["offset"].get<std::uint64_t>());
      BOOST_TEST(t.offset % 64 == 0u);
      std::uint64_t n = 1;
      for (auto d : t.dims) n *= std::uint64_t(d);
      BOOST_TEST(t.n_elements == n);
      BOOST_TEST(f.find_tensor(t.name) == &t);
      BOOST_TEST(f.tensor_bytes(t).size() == t.n_bytes);
      const auto values = w["values"].get<std::vector<double>>();
      if (t.type == ggml_type::F32 || t.type == ggml_type::F16 || t.type == ggml_type::BF16) {
        const std::vector<float> got = f.tensor_to_float(t.name);
        BOOST_TEST_REQUIRE(got.size() == values.size());
        for (std::size_t k = 0; k < got.size(); ++k) BOOST_TEST(double(got[k]) == values[k]);  // exact conversions
      } else {
        expect_error([&] { f.tensor_to_float(t.name); }, {"tensor '" + t.name + "'", "converts only F32, F16 and BF16"});
      }
    }
  }
  // Q8_0's first block by hand: an f16 scale d, then 32 int8 quants; value k = d * q[k] (the JSON's dequantized).
  const auto q8 = f.tensor_bytes("q8_0");
  Eigen::half d;
  std::memcpy(&d, q8.data(), 2);
  const auto values = want["tensors"]["q8_0"]["values"].get<std::vector<double>>();
  for (int k = 0; k < 32; ++k)
    BOOST_TEST(double(float(d) * float(static_cast<std::int8_t>(q8[2 + k]))) == values[k]);
}

BOOST_AUTO_TEST_CASE(traits_table) {
  BOOST_TEST(*ggml_nbytes(ggml_type::Q4_1, 64) == 40u);
  BOOST_TEST(*ggml_nbytes(ggml_type::Q8_0, 32) == 34u);
  BOOST_TEST(*ggml_nbytes(ggml_type::Q4_K, 256) == 144u);
  BOOST_TEST(*ggml_nbytes(ggml_type::BF16, 3) == 6u);
  BOOST_TEST(!ggml_nbytes(ggml_type::Q4_0, 33).has_value());
  BOOST_TEST(!ggml_nbytes(ggml_type::F64, std::uint64_t(1) << 62).has_value());
  BOOST_TEST(find_ggml_traits(4) == nullptr);  // Q4_2, removed from ggml
  BOOST_TEST(find_ggml_traits(30)->name == "BF16");
  for (const auto& row : detail::ggml_traits_table) BOOST_TEST(&ggml_traits(row.type) == &row);
}

// ---- the writer ----------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(writer_reproduces_gguf_py_bytes) {
  temp_dir tmp;
  const gguf_file f = gguf_file::open(golden);
  gguf_writer::copy_of(f).write(tmp.path / "copy.gguf");
  const std::string a = read_raw(golden), b = read_raw(tmp.path / "copy.gguf");
  BOOST_TEST(a.size() == b.size());
  BOOST_TEST((a == b), "gguf_writer output differs from gguf-py's file");
  BOOST_TEST(!fs::exists(tmp.path / ("copy.gguf.tmp." + std::to_string(::getpid()))));
}

BOOST_AUTO_TEST_CASE(writer_round_trips_every_value_type) {
  temp_dir tmp;
  gguf_writer w;
  w.set("u8", std::uint8_t{255});
  w.set("i8", std::int8_t{-128});
  w.set("u16", std::uint16_t{65535});
  w.set("i16", std::int16_t{-32768});
  w.set("u32", std::uint32_t{4294967295u});
  w.set("i32", std::int32_t{-7});
  w.set("f32", 1.5f);
  w.set("bool", true);
  w.set("str", "hello");
  w.set("u64", std::uint64_t{18446744073709551615ull});
  w.set("i64", std::int64_t{-9});
  w.set("f64", 2.25);
  w.set("a_str", gguf_value::array(std::vector<std::string>{"x", "", "yz"}));
  w.set("a_u16", gguf_value::array(std::vector<std::uint16_t>{1, 2, 65535}));
  w.set("a_bool", gguf_value::array(std::vector<bool>{true, false}));
  w.set("a_f64", gguf_value::array(std::vector<double>{0.25, -1e300}));
  w.set("a_empty", gguf_value::array(std::vector<std::int32_t>{}));
  w.set("a_nested", gguf_value::array(gguf_value_type::array,
                                      {gguf_value::array(std::vector<std::string>{"a", "b"}),
                                       gguf_value::array(std::vector<std::string>{"c"})}));
  w.set("a_deep", gguf_value::array(gguf_value_type::array,
                                    {gguf_value::array(gguf_value_type::array,
                                                       {gguf_value::array(std::vector<float>{1.0f})})}));
  w.set("i32", std::int32_t{-8});  // replaced in place
  w.set_alignment(16);
  const std::vector<float> f32 = {1, 2, 3, 4, 5, 6};
  std::vector<std::byte> q4(18 * 2, std::byte{0x11});
  w.add_tensor("a", {3, 2}, f32);
  w.add_tensor("q", ggml_type::Q4_0, {64}, q4);
  w.write(tmp.path / "w.gguf");

  const gguf_file f = gguf_file::open(tmp.path / "w.gguf");
  BOOST_TEST_REQUIRE(f.metadata().size() == w.metadata().size());
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    BOOST_TEST(f.metadata()[i].first == w.metadata()[i].first);
    BOOST_TEST((f.metadata()[i].second == w.metadata()[i].second), "value of " << f.metadata()[i].first);
  }
  BOOST_TEST(f.metadata()[5].first == "i32");
  BOOST_TEST(f.get_int("i32") == -8);
  BOOST_TEST(f.alignment() == 16u);
  BOOST_TEST(f.at("a_empty").size() == 0u);
  BOOST_TEST(f.get_float_array("a_f64") == (std::vector<double>{0.25, -1e300}), boost::test_tools::per_element());
  BOOST_TEST(f.at("a_deep").items()[0].items()[0].get_float_array()[0] == 1.0);
  BOOST_TEST(f.tensor_to_float("a") == f32, boost::test_tools::per_element());
  BOOST_TEST((f.tensor("a").dims == std::vector<std::int64_t>{3, 2}));
  BOOST_TEST(f.tensor("q").offset == 32u);  // 24 bytes of F32 padded to 16
  const auto qb = f.tensor_bytes("q");
  BOOST_TEST(std::memcmp(qb.data(), q4.data(), q4.size()) == 0);

  // Writing again what was read gives the same bytes.
  gguf_writer::copy_of(f).write(tmp.path / "again.gguf");
  BOOST_TEST((read_raw(tmp.path / "w.gguf") == read_raw(tmp.path / "again.gguf")));
}

BOOST_AUTO_TEST_CASE(writer_refuses_bad_tensors) {
  gguf_writer w;
  std::vector<std::byte> b(18);
  expect_error([&] { w.add_tensor("q", ggml_type::Q4_0, {33}, b); }, {"tensor 'q'", "block size 32"});
  expect_error([&] { w.add_tensor("q", ggml_type::Q4_0, {64}, b); }, {"tensor 'q'", "18 bytes", "need 36"});
  expect_error([&] { w.add_tensor("q", ggml_type::Q4_0, {32, 0}, b); }, {"tensor 'q'", "must be > 0"});
  expect_error([&] { w.add_tensor("q", ggml_type::I8, {1, 1, 1, 1, 18}, b); }, {"5 dims; the limit is 4"});
  w.add_tensor("q", ggml_type::Q4_0, {32}, b);
  expect_error([&] { w.add_tensor("q", ggml_type::Q4_0, {32}, b); }, {"tensor 'q' added twice"});
  expect_error([&] { w.set_alignment(48); }, {"alignment 48 is not a power of two"});
  expect_error([] { gguf_value::array(gguf_value_type::string, {gguf_value(1)}); }, {"item 0 is int32, not string"});
}

// ---- hostile files -------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(truncated_at_every_offset) {
  const std::string bytes = read_raw(golden);
  const gguf_file f = gguf_file::open(golden);
  std::uint64_t end = 0;  // the last tensor byte; past it is only the final tensor's padding
  for (const auto& t : f.tensors()) end = std::max(end, f.data_offset() + t.offset + t.n_bytes);
  temp_dir tmp;
  const fs::path p = tmp.path / "cut.gguf";
  int refused = 0;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    write_raw(p, bytes.substr(0, n));
    if (n >= end) {
      BOOST_CHECK_NO_THROW(gguf_file::open(p));  // only padding is missing: every tensor is whole
      continue;
    }
    try {
      gguf_file::open(p);
      BOOST_ERROR("truncated at " << n << " of " << bytes.size() << " bytes opened");
    } catch (const loralab::error& e) {
      const std::string what = e.what();
      BOOST_TEST((what.find("truncated") != std::string::npos || what.find("exceeds the") != std::string::npos ||
                  what.find("run past the end") != std::string::npos),
                 "cut at " << n << ": " << what);
      ++refused;
    }
  }
  BOOST_TEST(refused == int(end));
}

BOOST_AUTO_TEST_CASE(byte_flips_throw_or_open_never_crash) {
  // Every byte before the data section set to 0xff and to 0x00 in turn: each file either opens or throws
  // loralab::error (a flip inside a value can be a valid file); anything else fails the test.
  const std::string bytes = read_raw(golden);
  const gguf_file f = gguf_file::open(golden);
  temp_dir tmp;
  const fs::path p = tmp.path / "flip.gguf";
  for (std::size_t i = 0; i < f.data_offset(); ++i)
    for (const char v : {'\xff', '\x00', '\x13'}) {
      std::string b = bytes;
      if (b[i] == v) continue;
      b[i] = v;
      write_raw(p, b);
      try {
        gguf_file::open(p);
      } catch (const loralab::error&) {
      } catch (const std::exception& e) {
        BOOST_ERROR("flip at " << i << ": wrong exception type: " << e.what());
      }
    }
}

BOOST_AUTO_TEST_CASE(hostile_headers) {
  expect_refused("GGUX" + u32(3) + u64(0) + u64(0), {"bad magic 'GGUX'"});
  expect_refused(header(0, 0, 1), {"GGUF version 1 is not supported", "versions 2 and 3"});
  expect_refused(header(0, 0, 4), {"GGUF version 4 is not supported"});
  expect_refused(header(0, 0, 0x03000000), {"big-endian"});
  expect_refused("GGUF" + u32(3) + u64(0), {"truncated", "24-byte GGUF header"});
  expect_refused(header(0, 1'000'000'000'000ull), {"metadata count 1000000000000", "exceeds the 0 bytes left"});
  expect_refused(header(1ull << 60, 0) + std::string(100, '\0'), {"tensor count", "exceeds the 100 bytes left"});
  // Version 2 is read like version 3.
  temp_dir tmp;
  write_raw(tmp.path / "v2.gguf", header(0, 1, 2) + kv_u32("k", 7));
  BOOST_TEST(gguf_file::open(tmp.path / "v2.gguf").get_uint("k") == 7u);
  BOOST_TEST(gguf_file::open(tmp.path / "v2.gguf").version() == 2u);
}

BOOST_AUTO_TEST_CASE(hostile_metadata) {
  // A key length of 2^62.
  expect_refused(header(0, 1) + u64(1ull << 62) + std::string(20, 'k'),
                 {"metadata key #0", "key length 4611686018427387904", "exceeds the 20 bytes left"});
  // A string value length of 2^62.
  expect_refused(header(0, 1) + str("s") + u32(8) + u64(1ull << 62) + "x",
                 {"key 's'", "string length 4611686018427387904 exceeds the 1 bytes left"});
  // An array count of 10^18.
  expect_refused(header(0, 1) + str("a") + u32(9) + u32(4) + u64(1'000'000'000'000'000'000ull) + u64(0),
                 {"key 'a'", "array count 1000000000000000000 of uint32", "exceeds the 8 bytes left"});
  expect_refused(header(0, 1) + str("a") + u32(9) + u32(8) + u64(1'000'000'000'000'000'000ull) + u64(0),
                 {"array count 1000000000000000000 of string (at least 8 bytes each)"});
  // Arrays nested 10^5 deep.
  std::string deep = header(0, 1) + str("deep") + u32(9);
  for (int i = 0; i < 100'000; ++i) deep += u32(9) + u64(1);
  deep += u32(4) + u64(0);
  expect_refused(deep, {"key 'deep'", "arrays nested more than 8 deep", "max_array_depth"});
  // Unknown value types, bad bools, duplicate keys.
  expect_refused(header(0, 1) + str("t") + u32(13) + u64(0), {"key 't'", "unknown value type 13"});
  expect_refused(header(0, 1) + str("t") + u32(9) + u32(77) + u64(0), {"key 't'", "array of unknown value type 77"});
  expect_refused(header(0, 1) + str("b") + u32(7) + "\x02", {"key 'b'", "bool byte 2", "neither 0 nor 1"});
  expect_refused(header(0, 2) + kv_u32("k", 1) + kv_u32("k", 2), {"key 'k' appears more than once"});
  // Alignment that is not a power of two, or not an integer.
  expect_refused(header(0, 1) + kv_u32("general.alignment", 48), {"'general.alignment' is 48, not a power of two"});
  expect_refused(header(0, 1) + str("general.alignment") + u32(8) + str("x"),
                 {"key 'general.alignment' is string, not an unsigned integer"});
}

BOOST_AUTO_TEST_CASE(hostile_tensor_infos) {
  const auto one = [](const std::string& info, std::size_t data_bytes = 64) {
    return pad_to(header(1, 0) + info, 32) + std::string(data_bytes, '\0');
  };
  expect_refused(one(tensor_info("t", {1, 1, 1, 1, 1}, 0, 0)), {"tensor 't'", "n_dims 5 exceeds the limit of 4"});
  expect_refused(one(tensor_info("t", {4, 0}, 0, 0)), {"tensor 't'", "dimension 1 is 0", "must be > 0"});
  expect_refused(one(tensor_info("t", {1ull << 32, 1ull << 32, 1ull << 32}, 0, 0)),
                 {"tensor 't'", "overflow", "2^63-1"});
  expect_refused(one(tensor_info("t", {4}, 77, 0)), {"tensor 't'", "unknown ggml type 77"});
  expect_refused(one(tensor_info("t", {4}, 5, 0)), {"tensor 't'", "unknown ggml type 5"});  // Q4_3, removed
  expect_refused(one(tensor_info("t", {33}, 2, 0)), {"tensor 't'", "ne[0] = 33", "Q4_0's block size 32"});
  expect_refused(one(tensor_info("t", {4}, 0, 16)), {"tensor 't'", "data offset 16 is not a multiple of the alignment 32"});
  expect_refused(one(tensor_info("t", {4}, 0, 64)), {"tensor 't'", "16 bytes at data offset 64", "run past the end"});
  expect_refused(one(tensor_info("t", {17}, 0, 0)), {"tensor 't'", "68 bytes at data offset 0", "(64 bytes"});
  expect_refused(one(tensor_info("t", {4}, 0, 1ull << 63)), {"tensor 't'", "run past the end"});
  expect_refused(one(tensor_info("t", {std::uint64_t(1) << 63}, 0, 0)), {"tensor 't'", "must be > 0 and fit int64"});
  expect_refused(one(u64(1ull << 62) + "t"), {"tensor #0", "name length 4611686018427387904 exceeds"});
  // Two tensors: overlapping, and the same name twice.
  const auto two = [](const std::string& a, const std::string& b) {
    return pad_to(header(2, 0) + a + b, 32) + std::string(128, '\0');
  };
  expect_refused(two(tensor_info("a", {16}, 0, 0), tensor_info("b", {4}, 0, 32)),
                 {"tensor 'b' at data offset 32 overlaps tensor 'a' at [0, 64)"});
  expect_refused(two(tensor_info("a", {4}, 0, 0), tensor_info("a", {4}, 0, 32)), {"tensor 'a' appears more than once"});
  // The data section itself past the end of the file.
  expect_refused(header(1, 0) + tensor_info("t", {4}, 0, 0), {"truncated", "data section starts at offset 64"});
  // And a well-formed pair of tensors opens.
  temp_dir tmp;
  write_raw(tmp.path / "ok.gguf", two(tensor_info("a", {8}, 0, 0), tensor_info("b", {4}, 1, 32)));
  const gguf_file f = gguf_file::open(tmp.path / "ok.gguf");
  BOOST_TEST(f.tensor("b").n_bytes == 8u);
  BOOST_TEST(f.tensor_to_float("b") == std::vector<float>(4, 0.0f), boost::test_tools::per_element());
}

// ---- the real model ------------------------------------------------------------------------------------------------

namespace {
fs::path smollm2_path() {
  const char* cache = std::getenv("LORALAB_CACHE");
  const char* home = std::getenv("HOME");
  const fs::path dir = cache ? fs::path(cache) : fs::path(home ? home : "") / ".cache" / "loralab";
  return dir / "SmolLM2-135M-Instruct.Q4_1.gguf";
}
boost::test_tools::assertion_result have_smollm2(boost::unit_test::test_unit_id) {
  if (fs::exists(smollm2_path())) return true;
  boost::test_tools::assertion_result r(false);
  r.message() << smollm2_path().string() << " is absent (scripts/get_model.sh smollm2 fetches it)";
  return r;
}
struct announce_skip {
  announce_skip() {
    if (!fs::exists(smollm2_path()))
      std::cout << "gguf: SKIPPED smollm2_q4_1: " << smollm2_path().string()
                << " is absent (scripts/get_model.sh smollm2 fetches it)\n";
  }
};
BOOST_TEST_GLOBAL_FIXTURE(announce_skip);
}  // namespace

BOOST_AUTO_TEST_CASE(smollm2_q4_1, *boost::unit_test::precondition(have_smollm2)) {
  BOOST_TEST_MESSAGE("reading " << smollm2_path().string());
  const gguf_file f = gguf_file::open(smollm2_path());
  BOOST_TEST(f.version() == 3u);
  BOOST_TEST(f.get_string("general.architecture") == "llama");
  BOOST_TEST(f.get_uint("llama.block_count") == 30u);
  BOOST_TEST(f.get_uint("llama.embedding_length") == 576u);
  BOOST_TEST(f.get_uint("llama.feed_forward_length") == 1536u);
  BOOST_TEST(f.get_uint("llama.attention.head_count") == 9u);
  BOOST_TEST(f.get_uint("llama.attention.head_count_kv") == 3u);
  BOOST_TEST(f.get_float("llama.rope.freq_base") == 100000.0);
  BOOST_TEST(f.get_string("tokenizer.ggml.model") == "gpt2");
  BOOST_TEST(f.get_string_array("tokenizer.ggml.tokens").size() == 49152u);
  BOOST_TEST(f.get_string_array("tokenizer.ggml.merges").size() == 48900u);
  BOOST_TEST(f.get_int_array("tokenizer.ggml.token_type").size() == 49152u);
  BOOST_TEST(f.find_uint("tokenizer.ggml.bos_token_id").has_value());
  BOOST_TEST(f.get_string("tokenizer.chat_template").find("<|im_start|>") != std::string::npos);
  BOOST_TEST(f.tensors().size() == 272u);
  std::map<ggml_type, int> count;
  for (const auto& t : f.tensors()) ++count[t.type];
  BOOST_TEST(count[ggml_type::Q4_1] == 210);
  BOOST_TEST(count[ggml_type::F32] == 61);
  BOOST_TEST(count[ggml_type::Q8_0] == 1);
  const gguf_tensor_info& embd = f.tensor("token_embd.weight");
  BOOST_TEST(embd.type == ggml_type::Q8_0);
  BOOST_TEST((embd.dims == std::vector<std::int64_t>{576, 49152}));
  const std::vector<float> norm = f.tensor_to_float("output_norm.weight");
  BOOST_TEST(norm.size() == 576u);
}

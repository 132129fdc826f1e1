// SPDX-License-Identifier: MIT
// io/safetensors.hpp: round trips over every dtype, the exact bytes of a tiny file, every way a file can be
// corrupt, and atomic replacement. Random data is fresh each run; the seed is printed (set LORALAB_SEED to
// replay a run).
#define BOOST_TEST_MODULE io
#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.hpp"

namespace fs = std::filesystem;
using namespace loralab::io;

namespace {

std::uint64_t test_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 0;
    if (const char* env = std::getenv("LORALAB_SEED")) {
      s = std::stoull(env);
    } else {
      std::random_device rd;
      s = (std::uint64_t(rd()) << 32) | rd();
    }
    std::cout << "safetensors tests: seed " << s << " (replay with LORALAB_SEED=" << s << ")\n";
    return s;
  }();
  return seed;
}

/// A fresh directory under the system temp dir, removed with everything in it at the end of the test.
struct temp_dir {
  fs::path dir;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "loralab_io_XXXXXX").string();
    BOOST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir, ec);
  }
  std::set<std::string> listing(const fs::path& d) const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(d)) names.insert(e.path().filename().string());
    return names;
  }
  std::set<std::string> listing() const { return listing(dir); }
};

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

/// A safetensors image: length, `header` as given (no padding), then `data_size` zero bytes.
std::string image(const std::string& header, std::size_t data_size) {
  return le64(header.size()) + header + std::string(data_size, '\0');
}

void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  BOOST_REQUIRE(f.good());
}

std::string read_raw(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// Runs `f`, which must throw loralab::error whose message starts with `prefix` and contains every needle.
template <class F>
void expect_error(F&& f, const std::string& prefix, const std::vector<std::string>& needles) {
  try {
    f();
    BOOST_ERROR("no loralab::error thrown");
  } catch (const loralab::error& e) {
    const std::string what = e.what();
    BOOST_TEST_INFO("what(): " << what);
    BOOST_TEST(what.starts_with(prefix));
    for (const auto& n : needles) {
      BOOST_TEST_INFO("what(): " << what);
      BOOST_TEST(what.find(n) != std::string::npos, "missing \"" << n << "\"");
    }
  } catch (const std::exception& e) {
    BOOST_ERROR("wrong exception type, what(): " << e.what());
  }
}

template <class T>
T random_value(std::mt19937_64& g) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(std::normal_distribution<double>(0.0, 10.0)(g));
  } else if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
    return T(std::normal_distribution<float>(0.0f, 10.0f)(g));
  } else {
    return static_cast<T>(g());  // every bit pattern of the integer type (modular conversion)
  }
}

template <class T>
struct sample {
  std::vector<std::int64_t> shape;
  std::vector<T> values;
};

template <class T>
sample<T> random_sample(std::mt19937_64& g) {
  sample<T> s;
  s.shape = {std::int64_t(1 + g() % 5), std::int64_t(1 + g() % 7)};
  s.values.resize(static_cast<std::size_t>(s.shape[0] * s.shape[1]));
  for (auto& v : s.values) v = random_value<T>(g);
  return s;
}

template <class T>
bool same_bytes(std::span<const std::byte> got, const std::vector<T>& want) {
  return got.size() == want.size() * sizeof(T) && (want.empty() || std::memcmp(got.data(), want.data(), got.size()) == 0);
}

template <class T>
void check_sample(const safetensors_file& f, const sample<T>& s) {
  const std::string name(dtype_name(dtype_of<T>()));
  BOOST_TEST_CONTEXT("tensor " << name) {
    BOOST_REQUIRE(f.contains(name));
    const tensor_view& v = f.at(name);
    BOOST_TEST(v.name == name);
    BOOST_TEST((v.type == dtype_of<T>()));
    BOOST_TEST(v.shape == s.shape);
    BOOST_TEST(v.numel() == s.values.size());
    BOOST_TEST(same_bytes(v.bytes, s.values));
    const std::vector<T> back = v.to_vector<T>();
    BOOST_TEST(same_bytes(std::as_bytes(std::span(back)), s.values));
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
      const std::vector<float> fl = v.to_float();
      BOOST_REQUIRE(fl.size() == s.values.size());
      for (std::size_t i = 0; i < fl.size(); ++i) BOOST_TEST(fl[i] == static_cast<float>(s.values[i]));
    }
  }
}

using element_types = std::tuple<double, float, Eigen::half, Eigen::bfloat16, std::int64_t, std::int32_t, std::int16_t,
                                 std::int8_t, std::uint64_t, std::uint32_t, std::uint16_t, std::uint8_t>;

}  // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(dtype_table) {
  const std::vector<std::pair<dtype, std::size_t>> sizes = {
      {dtype::F64, 8}, {dtype::F32, 4}, {dtype::F16, 2}, {dtype::BF16, 2}, {dtype::I64, 8},
      {dtype::I32, 4}, {dtype::I16, 2}, {dtype::I8, 1},  {dtype::U64, 8},  {dtype::U32, 4},
      {dtype::U16, 2}, {dtype::U8, 1},  {dtype::BOOL, 1}, {dtype::F8_E4M3, 1}, {dtype::F8_E5M2, 1}};
  for (const auto& [t, size] : sizes) {
    BOOST_TEST_CONTEXT(dtype_name(t)) {
      BOOST_TEST(dtype_size(t) == size);
      BOOST_TEST((parse_dtype(dtype_name(t)) == t));
    }
  }
  BOOST_TEST(dtype_name(dtype::BF16) == "BF16");
  BOOST_TEST(dtype_name(dtype::F8_E4M3) == "F8_E4M3");
  BOOST_TEST(!parse_dtype("f32").has_value());  // names are case-sensitive
  BOOST_TEST(!parse_dtype("").has_value());
  BOOST_TEST(!parse_dtype("F4").has_value());
  static_assert(dtype_of<float>() == dtype::F32 && dtype_of<double>() == dtype::F64);
  static_assert(dtype_of<Eigen::half>() == dtype::F16 && dtype_of<Eigen::bfloat16>() == dtype::BF16);
  static_assert(dtype_of<std::int8_t>() == dtype::I8 && dtype_of<std::uint8_t>() == dtype::U8);
  static_assert(dtype_of<std::int64_t>() == dtype::I64 && dtype_of<std::uint64_t>() == dtype::U64);
  static_assert(dtype_of<bool>() == dtype::BOOL && dtype_of<const std::uint16_t>() == dtype::U16);
}

BOOST_FIXTURE_TEST_CASE(round_trip_every_dtype, temp_dir) {
  std::mt19937_64 g(test_seed());
  const auto samples = std::apply([&](auto... t) { return std::tuple{random_sample<decltype(t)>(g)...}; }, element_types{});
  std::array<bool, 7> flags{};
  for (auto& b : flags) b = g() & 1;
  const float scalar = random_value<float>(g);
  const std::array<std::byte, 5> fp8 = {std::byte{0x00}, std::byte{0x38}, std::byte{0x7e}, std::byte{0x80}, std::byte{0xff}};

  safetensors_writer w;
  std::apply([&](const auto&... s) {
    (w.add<typename std::remove_cvref_t<decltype(s.values)>::value_type>(
         std::string(dtype_name(dtype_of<typename std::remove_cvref_t<decltype(s.values)>::value_type>())), s.shape,
         std::span(s.values)),
     ...);
  }, samples);
  w.add<bool>("BOOL", {7}, std::span<const bool>(flags));
  w.add<float>("scalar", {}, std::span(&scalar, 1));
  w.add<float>("empty", {0, 4}, std::span<const float>());
  w.add<std::int8_t>("empty_1d", {0}, std::span<const std::int8_t>());
  w.add("fp8", dtype::F8_E4M3, {5}, fp8);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "unicode \u00e9 \u2713, \"quoted\"");
  w.set_metadata("empty", "");
  w.set_metadata("format", "loralab");  // replaces
  const fs::path path = dir / "all.safetensors";
  w.write(path);

  const safetensors_file f = safetensors_file::open(path);
  BOOST_TEST(f.path() == path);
  const std::map<std::string, std::string> meta = {
      {"format", "loralab"}, {"note", "unicode \u00e9 \u2713, \"quoted\""}, {"empty", ""}};
  BOOST_TEST((f.metadata() == meta));
  // Data order is the order added; empty tensors share the offset where they were added.
  std::vector<std::string> order;
  for (const auto& v : f.tensors()) order.push_back(v.name);
  const std::vector<std::string> want_order = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32",
                                               "U16", "U8", "BOOL", "scalar", "empty", "empty_1d", "fp8"};
  BOOST_TEST(order == want_order, boost::test_tools::per_element());

  std::apply([&](const auto&... s) { (check_sample(f, s), ...); }, samples);

  const tensor_view& b = f.at("BOOL");
  BOOST_TEST((b.type == dtype::BOOL));
  const std::vector<bool> bv = b.to_vector<bool>();
  BOOST_TEST(bv == std::vector<bool>(flags.begin(), flags.end()), boost::test_tools::per_element());

  const tensor_view& s = f.at("scalar");
  BOOST_TEST(s.shape.empty());
  BOOST_TEST(s.numel() == 1u);
  BOOST_TEST(s.to_vector<float>() == std::vector<float>{scalar});
  BOOST_TEST(s.to_float() == std::vector<float>{scalar});

  for (const char* name : {"empty", "empty_1d"}) {
    const tensor_view& e = f.at(name);
    BOOST_TEST(e.numel() == 0u);
    BOOST_TEST(e.bytes.empty());
  }
  BOOST_TEST((f.at("empty").shape == std::vector<std::int64_t>{0, 4}));
  BOOST_TEST(f.at("empty").to_float().empty());
  BOOST_TEST(f.at("empty_1d").to_vector<std::int8_t>().empty());

  const tensor_view& e8 = f.at("fp8");
  BOOST_TEST((e8.type == dtype::F8_E4M3));
  BOOST_TEST(std::memcmp(e8.bytes.data(), fp8.data(), fp8.size()) == 0);
}

BOOST_FIXTURE_TEST_CASE(unaligned_after_odd_u8, temp_dir) {
  std::mt19937_64 g(test_seed());
  const std::vector<std::uint8_t> odd = {1, 2, 3};
  std::vector<float> x(1 + g() % 33);
  for (auto& v : x) v = random_value<float>(g);
  std::vector<Eigen::half> h(1 + g() % 17);
  for (auto& v : h) v = random_value<Eigen::half>(g);

  safetensors_writer w;
  w.add<std::uint8_t>("odd", {3}, std::span(odd));
  w.add<float>("x", {std::int64_t(x.size())}, std::span(x));
  w.add<std::uint8_t>("even", {2}, std::span(odd).first(2));  // keeps "h" at an odd offset
  w.add<Eigen::half>("h", {std::int64_t(h.size())}, std::span(h));
  w.write(dir / "u.safetensors");

  const auto f = safetensors_file::open(dir / "u.safetensors");
  const tensor_view& vx = f.at("x");
  // The data buffer starts 8-aligned in a page-aligned mapping, so "x" at offset 3 is misaligned: the case
  // a reinterpret_cast would get wrong.
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(vx.bytes.data()) % alignof(float) != 0u);
  BOOST_TEST(vx.to_vector<float>() == x, boost::test_tools::per_element());
  BOOST_TEST(vx.to_float() == x, boost::test_tools::per_element());
  const tensor_view& vh = f.at("h");
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(vh.bytes.data()) % alignof(Eigen::half) != 0u);
  const std::vector<float> hf = vh.to_float();
  BOOST_REQUIRE(hf.size() == h.size());
  for (std::size_t i = 0; i < h.size(); ++i) BOOST_TEST(hf[i] == static_cast<float>(h[i]));
}

BOOST_FIXTURE_TEST_CASE(bytes_match_hand_built_file, temp_dir) {
  const std::vector<std::uint8_t> a = {1, 2, 3};
  const float b = 1.5f;  // 0x3FC00000
  safetensors_writer w;
  w.set_metadata("format", "pt");
  w.add<std::uint8_t>("a", {3}, std::span(a));
  w.add<float>("b", {}, std::span(&b, 1));
  w.add<std::int16_t>("c", {0, 2}, std::span<const std::int16_t>());
  const fs::path path = dir / "tiny.safetensors";
  w.write(path);

  // Compact JSON, "__metadata__" first, tensors in the order added, keys dtype/shape/data_offsets; 191 bytes
  // plus one space makes 8 + 192 = 200, a multiple of 8.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("b":{"dtype":"F32","shape":[],"data_offsets":[3,7]},)"
      R"("c":{"dtype":"I16","shape":[0,2],"data_offsets":[7,7]}})";
  BOOST_REQUIRE(json.size() == 191u);
  const std::string expected = std::string("\xc0\0\0\0\0\0\0\0", 8) + json + " " +
                               std::string("\x01\x02\x03", 3) + std::string("\x00\x00\xc0\x3f", 4);
  const std::string got = read_raw(path);
  BOOST_TEST(got.size() == 207u);
  BOOST_TEST(got == expected);
  std::uint64_t n = 0;
  std::memcpy(&n, got.data(), 8);
  BOOST_TEST((n == 192u && (8 + n) % 8 == 0u));

  const auto f = safetensors_file::open(path);
  BOOST_TEST(f.tensors().size() == 3u);
  BOOST_TEST(f.at("b").to_float() == std::vector<float>{1.5f});
  BOOST_TEST((f.at("a").to_vector<std::uint8_t>() == a));
  BOOST_TEST(f.at("c").numel() == 0u);
}

BOOST_FIXTURE_TEST_CASE(header_alignment_for_every_length, temp_dir) {
  // Name lengths 1..16 move the JSON length through every residue mod 8.
  for (int len = 1; len <= 16; ++len) {
    const std::uint8_t v = 7;
    safetensors_writer w;
    w.add<std::uint8_t>(std::string(std::size_t(len), 'n'), {1}, std::span(&v, 1));
    fs::path path = dir / "n";
    path += std::to_string(len) + ".safetensors";  // not "n" + string: g++ 12 warns falsely (-Wrestrict, PR 105329)
    w.write(path);
    const std::string bytes = read_raw(path);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    BOOST_TEST_CONTEXT("name length " << len) {
      BOOST_TEST((8 + n) % 8 == 0u);
      BOOST_TEST(bytes.size() == 8 + n + 1);
      BOOST_TEST(bytes[8 + n - 1] != '\0');
      const auto f = safetensors_file::open(path);
      BOOST_TEST(f.tensors().at(0).to_vector<std::uint8_t>() == std::vector<std::uint8_t>{7});
    }
  }
}

BOOST_FIXTURE_TEST_CASE(reads_foreign_layouts, temp_dir) {
  // Entries out of offset order, whitespace, unknown fields, an unpadded odd-length header, null metadata.
  const std::string header =
      "{ \"z\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [0, 4], \"extra\": true},\n"
      "  \"a\": {\"data_offsets\": [4, 6], \"shape\": [], \"dtype\": \"BF16\"}, \"__metadata__\": null }";
  std::string bytes = le64(header.size()) + header;
  bytes += std::string("\x2a\x00\x00\x00", 4) + std::string("\x49\x40", 2);  // 42, bf16 3.140625
  write_raw(dir / "f.safetensors", bytes);
  const auto f = safetensors_file::open(dir / "f.safetensors");
  BOOST_TEST(f.metadata().empty());
  BOOST_REQUIRE(f.tensors().size() == 2u);
  BOOST_TEST(f.tensors()[0].name == "z");  // in order of data offset
  BOOST_TEST(f.tensors()[1].name == "a");
  BOOST_TEST(f.at("z").to_vector<std::int32_t>() == std::vector<std::int32_t>{42});
  BOOST_TEST(f.at("a").to_float() == std::vector<float>{3.140625f});
}

BOOST_FIXTURE_TEST_CASE(empty_files, temp_dir) {
  safetensors_writer w;
  w.write(dir / "none.safetensors");
  BOOST_TEST(read_raw(dir / "none.safetensors") == le64(8) + "{}      ");
  const auto f = safetensors_file::open(dir / "none.safetensors");
  BOOST_TEST(f.tensors().empty());
  BOOST_TEST(f.metadata().empty());
  BOOST_TEST(!f.contains("x"));

  safetensors_writer m;
  m.set_metadata("k", "v");
  m.add<float>("e", {3, 0}, std::span<const float>());
  m.write(dir / "meta.safetensors");
  const auto g = safetensors_file::open(dir / "meta.safetensors");
  BOOST_TEST(g.metadata().at("k") == "v");
  BOOST_TEST(g.at("e").numel() == 0u);
}

BOOST_FIXTURE_TEST_CASE(known_half_and_bfloat16_values, temp_dir) {
  // Bit patterns with their exact float values, independent of Eigen's conversions.
  const std::vector<std::uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x8000, 0x7C00, 0x3555};
  const std::vector<float> f16_want = {1.0f, -2.0f, 0x1p-24f, 65504.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                       0x1.554p-2f};
  const std::vector<std::uint16_t> bf16 = {0x3F80, 0x4049, 0xFF7F, 0x0001, 0xFF80};
  const std::vector<float> bf16_want = {1.0f, 3.140625f, -0x1.fep127f, 0x1p-133f, -std::numeric_limits<float>::infinity()};
  safetensors_writer w;
  w.add("h", dtype::F16, {std::int64_t(f16.size())}, std::as_bytes(std::span(f16)));
  w.add("b", dtype::BF16, {std::int64_t(bf16.size())}, std::as_bytes(std::span(bf16)));
  w.write(dir / "k.safetensors");
  const auto f = safetensors_file::open(dir / "k.safetensors");
  BOOST_TEST(f.at("h").to_float() == f16_want, boost::test_tools::per_element());
  BOOST_TEST(std::signbit(f.at("h").to_float()[4]));
  BOOST_TEST(f.at("b").to_float() == bf16_want, boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(view_errors, temp_dir) {
  const std::vector<float> x = {1, 2};
  const std::vector<std::int32_t> n = {3};
  safetensors_writer w;
  w.add<float>("w", {2}, std::span(x));
  w.add<std::int32_t>("n", {}, std::span(n));
  const fs::path path = dir / "v.safetensors";
  w.write(path);
  const auto f = safetensors_file::open(path);
  expect_error([&] { (void)f.at("w").to_vector<std::int32_t>(); }, "tensor 'w'", {"F32", "I32"});
  expect_error([&] { (void)f.at("w").to_vector<Eigen::half>(); }, "tensor 'w'", {"F32", "F16"});
  expect_error([&] { (void)f.at("n").to_float(); }, "tensor 'n'", {"I32"});
  expect_error([&] { (void)f.at("missing"); }, path.string() + ": no tensor 'missing'", {});
  BOOST_TEST(f.contains("w"));
  BOOST_TEST(!f.contains("W"));
}

BOOST_FIXTURE_TEST_CASE(open_errors, temp_dir) {
  expect_error([&] { (void)safetensors_file::open(dir / "absent.safetensors"); }, (dir / "absent.safetensors").string(),
               {"cannot open"});
  expect_error([&] { (void)safetensors_file::open(dir); }, dir.string(), {"not a regular file"});
}

BOOST_FIXTURE_TEST_CASE(corrupt_files, temp_dir) {
  struct bad {
    std::string label, bytes;
    std::vector<std::string> needles;  // besides the path, which must start the message
  };
  const auto entry = [](const std::string& name, const std::string& body) {
    return "\"" + name + "\":{" + body + "}";
  };
  const std::string f32x1 = R"("dtype":"F32","shape":[1],"data_offsets":[0,4])";
  const std::vector<bad> cases = {
      {"zero-size file", "", {"0 bytes", "too short"}},
      {"7-byte file", std::string(7, '\0'), {"7 bytes"}},
      {"header length past the end", le64(100) + "{}", {"header length 100", "past the end"}},
      {"header length absurd", le64(std::uint64_t(1) << 40) + "{}", {"exceeds the limit"}},
      {"header length 2^64-1", le64(~std::uint64_t(0)) + "{}", {"exceeds the limit"}},
      {"zero-length header", le64(0), {"not valid JSON"}},
      {"truncated JSON", image(R"({"w":)", 0), {"not valid JSON"}},
      {"JSON with trailing garbage", image("{} x", 0), {"not valid JSON"}},
      {"invalid UTF-8", image("{\"\xff\":1}", 0), {"not valid JSON"}},
      {"header is an array", image("[1,2]", 0), {"array, not an object"}},
      {"header is a string", image("\"w\"", 0), {"string, not an object"}},
      {"entry not an object", image(R"({"w":3})", 0), {"tensor 'w'", "not an object"}},
      {"missing dtype", image("{" + entry("w", R"("shape":[1],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "missing \"dtype\""}},
      {"missing shape", image("{" + entry("w", R"("dtype":"F32","data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "missing \"shape\""}},
      {"missing data_offsets", image("{" + entry("w", R"("dtype":"F32","shape":[1])") + "}", 4),
       {"tensor 'w'", "missing \"data_offsets\""}},
      {"dtype not a string", image("{" + entry("w", R"("dtype":4,"shape":[1],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "dtype is a JSON number"}},
      {"unknown dtype", image("{" + entry("w", R"("dtype":"F31","shape":[1],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "unknown dtype \"F31\""}},
      {"lower-case dtype", image("{" + entry("w", R"("dtype":"f32","shape":[1],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "unknown dtype \"f32\""}},
      {"shape not an array", image("{" + entry("w", R"("dtype":"F32","shape":1,"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "shape is a JSON number"}},
      {"negative dim", image("{" + entry("w", R"("dtype":"F32","shape":[1,-1],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "shape[1] is -1"}},
      {"fractional dim", image("{" + entry("w", R"("dtype":"F32","shape":[1.5],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "shape[0] is 1.5"}},
      {"dim as string", image("{" + entry("w", R"("dtype":"F32","shape":["1"],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "shape[0]"}},
      {"dim beyond int64",
       image("{" + entry("w", R"("dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "shape[0] is 9223372036854775808"}},
      {"data_offsets not an array", image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":4)") + "}", 4),
       {"tensor 'w'", "data_offsets is 4"}},
      {"data_offsets of 3", image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0,4,4])") + "}", 4),
       {"tensor 'w'", "data_offsets"}},
      {"data_offsets negative", image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])") + "}", 4),
       {"tensor 'w'", "not non-negative integers"}},
      {"data_offsets fractional",
       image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0.0,4.0])") + "}", 4),
       {"tensor 'w'", "not non-negative integers"}},
      {"data_offsets null", image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[null,4])") + "}", 4),
       {"tensor 'w'", "not non-negative integers"}},
      {"begin after end", image("{" + entry("w", R"("dtype":"F32","shape":[0],"data_offsets":[4,0])") + "}", 4),
       {"tensor 'w'", "end before they begin"}},
      {"end past the data", image("{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "}", 4),
       {"tensor 'w'", "run past the data buffer of 4 bytes"}},
      {"end past the data, huge",
       image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615])") + "}", 4),
       {"tensor 'w'", "run past the data buffer"}},
      {"size mismatch", image("{" + entry("w", R"("dtype":"F32","shape":[2],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "hold 4 bytes", "needs 8"}},
      {"numel overflows",
       image("{" + entry("w", R"("dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0])") + "}", 0),
       {"tensor 'w'", "overflows"}},
      {"10^18 elements in a 4-byte tensor",
       image("{" + entry("w", R"("dtype":"U8","shape":[1000000000,1000000000],"data_offsets":[0,4])") + "}", 4),
       {"tensor 'w'", "hold 4 bytes", "needs 1000000000000000000"}},
      {"header nested 10^5 deep", image(R"({"w":)" + std::string(100000, '[') + std::string(100000, ']') + "}", 0),
       {"header", "nested deeper than the limit of 512 levels"}},
      {"bytes overflow",
       image("{" + entry("w", R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0])") + "}", 0),
       {"tensor 'w'", "overflows"}},
      {"hole before the first tensor",
       image("{" + entry("w", R"("dtype":"F32","shape":[1],"data_offsets":[4,8])") + "}", 8),
       {"bytes [0, 4)", "before tensor 'w'"}},
      {"hole between tensors",
       image("{" + entry("a", f32x1) + "," + entry("b", R"("dtype":"F32","shape":[1],"data_offsets":[8,12])") + "}", 12),
       {"bytes [4, 8)", "between tensor 'a' and tensor 'b'"}},
      {"overlap",
       image("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "," +
                 entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])") + "}",
             12),
       {"tensor 'b'", "overlaps tensor 'a'"}},
      {"same range twice",
       image("{" + entry("a", f32x1) + "," + entry("b", f32x1) + "}", 4), {"tensor 'b'", "overlaps tensor 'a'"}},
      {"trailing bytes", image("{" + entry("w", f32x1) + "}", 6), {"2 trailing bytes"}},
      {"trailing bytes, no tensors", image("{}", 3), {"3 trailing bytes"}},
      {"duplicate tensor name", image("{" + entry("w", f32x1) + "," + entry("w", f32x1) + "}", 4),
       {"'w'", "more than once"}},
      {"__metadata__ not an object", image(R"({"__metadata__":[1]})", 0), {"__metadata__ is a JSON array"}},
      {"__metadata__ value not a string", image(R"({"__metadata__":{"k":1}})", 0),
       {"__metadata__ 'k'", "not a string"}},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const bad& c = cases[i];
    const fs::path path = dir / ("case " + std::to_string(i) + ".safetensors");  // a space in the path, too
    write_raw(path, c.bytes);
    BOOST_TEST_CONTEXT(c.label) { expect_error([&] { (void)safetensors_file::open(path); }, path.string() + ": ", c.needles); }
  }
}

BOOST_FIXTURE_TEST_CASE(writer_errors, temp_dir) {
  const std::vector<float> x = {1, 2, 3};
  safetensors_writer w;
  w.add<float>("w", {3}, std::span(x));
  expect_error([&] { w.add<float>("w", {3}, std::span(x)); }, "safetensors_writer", {"'w'", "twice"});
  expect_error([&] { w.add<float>("v", {2, 2}, std::span(x)); }, "safetensors_writer", {"'v'", "12 bytes", "needs 16"});
  expect_error([&] { w.add("v", dtype::F16, {2}, std::as_bytes(std::span(x))); }, "safetensors_writer",
               {"'v'", "F16", "needs 4"});
  expect_error([&] { w.add<float>("v", {-3}, std::span(x)); }, "safetensors_writer", {"'v'", "negative"});
  expect_error([&] { w.add<float>("v", {std::int64_t(1) << 62, 8}, std::span(x)); }, "safetensors_writer", {"'v'"});
  expect_error([&] { w.add<float>("__metadata__", {3}, std::span(x)); }, "safetensors_writer", {"reserved"});
  // Rejected adds leave the writer as it was.
  w.write(dir / "w.safetensors");
  const auto f = safetensors_file::open(dir / "w.safetensors");
  BOOST_TEST(f.tensors().size() == 1u);
  BOOST_TEST(f.at("w").to_vector<float>() == x);

  safetensors_writer bad_utf8;
  bad_utf8.add<float>("\xff", {3}, std::span(x));
  expect_error([&] { bad_utf8.write(dir / "u.safetensors"); }, (dir / "u.safetensors").string(), {"header"});
  BOOST_TEST(!fs::exists(dir / "u.safetensors"));
}

BOOST_FIXTURE_TEST_CASE(atomic_replace, temp_dir) {
  std::mt19937_64 g(test_seed());
  std::vector<float> old_x(64);
  for (auto& v : old_x) v = random_value<float>(g);
  const std::vector<std::int32_t> new_y = {1, -2};
  const fs::path path = dir / "m.safetensors";

  safetensors_writer a;
  a.add<float>("x", {8, 8}, std::span(old_x));
  a.write(path);
  const auto old_file = safetensors_file::open(path);

  safetensors_writer b;
  b.add<std::int32_t>("y", {2}, std::span(new_y));
  b.write(path);
  BOOST_TEST((listing() == std::set<std::string>{"m.safetensors"}));  // no temp file left
  const auto new_file = safetensors_file::open(path);
  BOOST_TEST(!new_file.contains("x"));
  BOOST_TEST(new_file.at("y").to_vector<std::int32_t>() == new_y);
  // The old mapping still reads the replaced file's bytes: rename swapped inodes, nothing was overwritten.
  BOOST_TEST(old_file.at("x").to_vector<float>() == old_x);
}

BOOST_FIXTURE_TEST_CASE(failed_write_leaves_nothing, temp_dir) {
  const std::vector<float> x = {1, 2, 3};
  safetensors_writer w;
  w.add<float>("x", {3}, std::span(x));

  // The target's folder does not exist: the temp file cannot be created.
  const fs::path missing = dir / "no_such_dir" / "f.safetensors";
  expect_error([&] { w.write(missing); }, missing.string(), {});
  BOOST_TEST(listing().empty());

  // The target is a non-empty directory: the temp file is written, then the rename fails and it is removed.
  const fs::path taken = dir / "taken.safetensors";
  fs::create_directory(taken);
  write_raw(taken / "keep", "k");
  expect_error([&] { w.write(taken); }, taken.string(), {"rename"});
  BOOST_TEST((listing() == std::set<std::string>{"taken.safetensors"}));
  BOOST_TEST((listing(taken) == std::set<std::string>{"keep"}));

  // A read-only folder (root ignores permissions, so this part needs an unprivileged user).
  if (::geteuid() != 0) {
    const fs::path ro = dir / "ro";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    expect_error([&] { w.write(ro / "f.safetensors"); }, (ro / "f.safetensors").string(), {});
    fs::permissions(ro, fs::perms::owner_all);
    BOOST_TEST(listing(ro).empty());
  } else {
    BOOST_TEST_MESSAGE("running as root: read-only folder case skipped");
  }
}

BOOST_FIXTURE_TEST_CASE(move_keeps_views, temp_dir) {
  static_assert(!std::is_copy_constructible_v<safetensors_file> && !std::is_copy_assignable_v<safetensors_file>);
  static_assert(std::is_nothrow_move_constructible_v<safetensors_file> && std::is_nothrow_move_assignable_v<safetensors_file>);
  const std::vector<double> x = {0.25, -1.5, 3.0};
  safetensors_writer w;
  w.add<double>("x", {3}, std::span(x));
  w.write(dir / "a.safetensors");
  w.write(dir / "b.safetensors");

  auto a = safetensors_file::open(dir / "a.safetensors");
  const std::byte* data = a.at("x").bytes.data();
  safetensors_file moved(std::move(a));
  BOOST_TEST(moved.at("x").bytes.data() == data);
  BOOST_TEST(moved.at("x").to_vector<double>() == x);
  moved = safetensors_file::open(dir / "b.safetensors");  // unmaps a's mapping
  BOOST_TEST(moved.path() == dir / "b.safetensors");
  BOOST_TEST(moved.at("x").to_vector<double>() == x);
}

BOOST_AUTO_TEST_SUITE_END()

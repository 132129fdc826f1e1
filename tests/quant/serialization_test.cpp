// SPDX-License-Identifier: MIT
// bnb 4-bit checkpoints: exact key names, dtypes, shapes and JSON; write -> read round trip bit for bit;
// files that break the layout are refused with the file and weight named.
#include <bit>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "io/python_float.hpp"
#include "io/safetensors.hpp"
#include "quant/quant.hpp"
#include "test_support.hpp"

BOOST_TEST_DONT_PRINT_LOG_VALUE(loralab::io::dtype)

using namespace loralab::quant;
namespace io = loralab::io;

namespace {
using four_bit = std::tuple<nf4<64>, fp4<64>, double_quant<nf4<64>>, double_quant<fp4<128>>, nf4<4096>>;

std::string blob_text(const io::tensor_view& t) {
  return std::string(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
}
}  // namespace

BOOST_AUTO_TEST_SUITE(bnb_serialization)

BOOST_AUTO_TEST_CASE(python_float_repr_matches_python) {
  BOOST_TEST(io::python_float_repr(double(0.05131594464182854f)) == "0.05131594464182854");
  BOOST_TEST(io::python_float_repr(1e-05) == "1e-05");
  BOOST_TEST(io::python_float_repr(1e16) == "1e+16");
  BOOST_TEST(io::python_float_repr(123.0) == "123.0");
  BOOST_TEST(io::python_float_repr(0.0001) == "0.0001");
  BOOST_TEST(io::python_float_repr(1.5e-7) == "1.5e-07");
  BOOST_TEST(io::python_float_repr(12345678901234567.0) == "1.2345678901234568e+16");
  BOOST_TEST(io::python_float_repr(-0.00012) == "-0.00012");
  BOOST_TEST(io::python_float_repr(2.5) == "2.5");
  BOOST_TEST(io::python_float_repr(0.0) == "0.0");
}

BOOST_AUTO_TEST_CASE(quant_state_json_in_bnb_key_order) {
  bnb_quant_state s{"nf4", 64, "bfloat16", {4096, 4096}};
  BOOST_TEST(quant_state_json(s) ==
             R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]})");
  s.nested = true;
  s.nested_offset = 0.05131594464182854f;
  BOOST_TEST(quant_state_json(s) ==
             R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096], )"
             R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05131594464182854})");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(write_then_read_is_bit_exact, S, four_bit) {
  auto g = loralab::testing::rng(700 + S::block_size + S::nested);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const std::int64_t rows = 37, cols = 129;  // odd element count: a padded last byte
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = normal(g);
  const auto q = blockwise_tensor<S>::template quantize<float>(w, {rows, cols});
  loralab::testing::temp_dir dir;
  const auto path = dir.path / "q.safetensors";
  {
    bnb_writer out;
    out.add_4bit("model.layers.0.mlp.up_proj.weight", q, "float16");
    out.write(path);
  }
  const auto f = io::safetensors_file::open(path);
  const std::string W = "model.layers.0.mlp.up_proj.weight";
  // key names, dtypes and shapes as bnb writes them
  BOOST_TEST(f.at(W).type == io::dtype::U8);
  BOOST_TEST(f.at(W).shape == (std::vector<std::int64_t>{(rows * cols + 1) / 2, 1}));
  BOOST_TEST(f.at(W + ".quant_map").shape == std::vector<std::int64_t>{16});
  const auto key = W + ".quant_state.bitsandbytes__" + std::string(S::quant_type);
  BOOST_TEST_REQUIRE(f.contains(key));
  std::string expected = R"({"quant_type": ")" + std::string(S::quant_type) + R"(", "blocksize": )" +
                         std::to_string(S::block_size) + R"(, "dtype": "float16", "shape": [37, 129])";
  if constexpr (S::nested) {
    BOOST_TEST(f.at(W + ".absmax").type == io::dtype::U8);
    BOOST_TEST(f.at(W + ".nested_quant_map").shape == std::vector<std::int64_t>{256});
    BOOST_TEST(f.at(W + ".nested_absmax").type == io::dtype::F32);
    expected += R"(, "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )" +
                io::python_float_repr(q.offset());
  } else {
    BOOST_TEST(f.at(W + ".absmax").type == io::dtype::F32);
    BOOST_TEST(!f.contains(W + ".nested_absmax"));
  }
  BOOST_TEST(blob_text(f.at(key)) == expected + "}");
  BOOST_TEST(bnb_4bit_weights(f) == std::vector<std::string>{W});

  const auto back = read_bnb_4bit<S>(f, W);
  std::vector<float> a(w.size()), b(w.size());
  q.template dequantize<float>(a);
  back.template dequantize<float>(b);
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
  BOOST_TEST(back.storage_bytes() == q.storage_bytes());
  BOOST_TEST(back.shape() == q.shape());
  // and through the run-time dispatch
  bool visited = false;
  visit_bnb_4bit(f, W, [&](const auto& t) {
    std::vector<float> c(w.size());
    t.template dequantize<float>(c);
    visited = std::memcmp(a.data(), c.data(), a.size() * 4) == 0;
  });
  BOOST_TEST(visited);
  // reading as the wrong scheme is refused
  if constexpr (S::nested) BOOST_CHECK_THROW(read_bnb_4bit<typename S::inner>(f, W), loralab::error);
  else BOOST_CHECK_THROW(read_bnb_4bit<double_quant<S>>(f, W), loralab::error);
}

BOOST_AUTO_TEST_CASE(broken_layouts_name_file_and_weight) {
  loralab::testing::temp_dir dir;
  std::vector<float> w(200, 0.5f);
  const auto q = blockwise_tensor<nf4<64>>::quantize<float>(w, {10, 20});
  const auto check_refused = [&](const std::string& tag, auto&& tweak) {
    const auto path = dir.path / (tag + ".safetensors");
    {
      io::safetensors_writer out;
      std::vector<float> map(nf4<64>::code.begin(), nf4<64>::code.end());
      std::vector<float> absmax(q.absmax().begin(), q.absmax().end());
      std::vector<std::uint8_t> codes(q.codes().begin(), q.codes().end());
      std::string state = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [10, 20]})";
      tweak(map, absmax, codes, state);
      out.add<std::uint8_t>("W", {std::int64_t(codes.size()), 1}, codes);
      out.add<float>("W.absmax", {std::int64_t(absmax.size())}, absmax);
      out.add<float>("W.quant_map", {16}, map);
      out.add<std::uint8_t>("W.quant_state.bitsandbytes__nf4", {std::int64_t(state.size())},
                            std::span(reinterpret_cast<const std::uint8_t*>(state.data()), state.size()));
      out.write(path);
    }
    const auto f = io::safetensors_file::open(path);
    BOOST_CHECK_EXCEPTION(read_bnb_4bit<nf4<64>>(f, "W"), loralab::error, [&](const loralab::error& e) {
      const std::string m = e.what();
      BOOST_TEST_MESSAGE(tag << ": " << m);
      return m.find(path.string()) != std::string::npos && m.find("W") != std::string::npos;
    });
  };
  check_refused("bad_map", [](auto& map, auto&, auto&, auto&) { map[3] = 0.1f; });
  check_refused("short_absmax", [](auto&, auto& absmax, auto&, auto&) { absmax.pop_back(); });
  check_refused("short_codes", [](auto&, auto&, auto& codes, auto&) { codes.pop_back(); });
  check_refused("bad_json", [](auto&, auto&, auto&, auto& s) { s = "{not json"; });
  check_refused("no_shape", [](auto&, auto&, auto&, auto& s) { s = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32"})"; });
  check_refused("wrong_block", [](auto&, auto&, auto&, auto& s) { s = R"({"quant_type": "nf4", "blocksize": 128, "dtype": "float32", "shape": [10, 20]})"; });
  check_refused("shape_type", [](auto&, auto&, auto&, auto& s) { s = R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": "10x20"})"; });
}

BOOST_AUTO_TEST_SUITE_END()

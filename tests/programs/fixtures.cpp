// SPDX-License-Identifier: MIT
// Test helper for the program tests (tests/programs/*.sh):
//   fixtures make DIR                      writes model.safetensors and broken variants into DIR
//   fixtures check-roundtrip ORIG DEQ DB   every 2-D float tensor of ORIG is in DEQ as F32 with SQNR >= DB;
//                                          every other tensor is byte-identical. Exit 0 when all hold.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include <Eigen/Core>

#include "io/safetensors.hpp"
#include "quant/error_metrics.hpp"

using namespace loralab;
namespace fs = std::filesystem;

static void make(const fs::path& dir) {
  fs::create_directories(dir);
  std::mt19937_64 g(1234);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const auto randn = [&](std::size_t n) { std::vector<float> v(n); for (auto& x : v) x = normal(g); return v; };
  const auto q = randn(64 * 96), emb = randn(50 * 64), norm = randn(64);
  const auto up32 = randn(40 * 33), down32 = randn(33 * 40);
  std::vector<Eigen::half> up(up32.begin(), up32.end());
  std::vector<Eigen::bfloat16> down(down32.begin(), down32.end());
  const std::vector<std::int64_t> step = {7};
  const std::vector<std::int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  io::safetensors_writer w;
  w.set_metadata("format", "pt");
  w.add<float>("model.embed_tokens.weight", {50, 64}, emb);
  w.add<float>("model.layers.0.self_attn.q_proj.weight", {64, 96}, q);
  w.add<Eigen::half>("model.layers.0.mlp.up_proj.weight", {40, 33}, up);         // odd count, partial blocks
  w.add<Eigen::bfloat16>("model.layers.0.mlp.down_proj.weight", {33, 40}, down);
  w.add<float>("model.norm.weight", {64}, norm);                                 // 1-D: copied
  w.add<std::int32_t>("ids", {3, 3}, ids);                                       // integer: copied
  w.add<std::int64_t>("step", {}, step);                                         // scalar: copied
  w.write(dir / "model.safetensors");

  io::safetensors_writer e;
  const std::vector<float> none;
  e.add<float>("w", {0, 8}, none);
  e.write(dir / "empty2d.safetensors");

  // truncated: the header promises more data than the file holds
  std::ifstream in(dir / "model.safetensors", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(dir / "truncated.safetensors", std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() - 100));
  // a header length past the end of the file
  std::vector<char> bad = bytes;
  const std::uint64_t huge = bytes.size() * 2;
  std::memcpy(bad.data(), &huge, 8);
  std::ofstream(dir / "bad_header.safetensors", std::ios::binary).write(bad.data(), std::streamsize(bad.size()));
}

static int check_roundtrip(const fs::path& orig, const fs::path& deq, double min_db) {
  const auto a = io::safetensors_file::open(orig), b = io::safetensors_file::open(deq);
  int failures = 0;
  for (const auto& t : a.tensors()) {
    if (!b.contains(t.name)) { std::cerr << "missing " << t.name << "\n"; ++failures; continue; }
    const auto& u = b.at(t.name);
    const bool quantizable = t.shape.size() == 2 && (t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16);
    if (quantizable) {
      const auto m = quant::measure_error(t.to_float(), u.to_float());
      const bool ok = u.type == io::dtype::F32 && u.shape == t.shape && m.sqnr_db >= min_db;
      std::cout << t.name << ": " << m << (ok ? "" : "  <-- FAIL") << "\n";
      failures += !ok;
    } else {
      const bool ok = u.type == t.type && u.shape == t.shape && u.bytes.size() == t.bytes.size() &&
                      std::memcmp(u.bytes.data(), t.bytes.data(), t.bytes.size()) == 0;
      std::cout << t.name << ": " << (ok ? "identical" : "DIFFERENT  <-- FAIL") << "\n";
      failures += !ok;
    }
  }
  if (b.tensors().size() != a.tensors().size()) { std::cerr << "tensor count differs\n"; ++failures; }
  return failures == 0 ? 0 : 1;
}

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "make" && argc == 3) return make(argv[2]), 0;
  if (mode == "check-roundtrip" && argc == 5) return check_roundtrip(argv[2], argv[3], std::stod(argv[4]));
  std::cerr << "usage: fixtures make DIR | fixtures check-roundtrip ORIG DEQ MIN_SQNR_DB\n";
  return 2;
} catch (const std::exception& e) {
  std::cerr << "fixtures: " << e.what() << "\n";
  return 1;
}

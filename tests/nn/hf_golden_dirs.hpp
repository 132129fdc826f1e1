// SPDX-License-Identifier: MIT
#pragma once
// The three stories260K directories whose transformers logits tests/data/hf_dir_golden.safetensors holds
// (tests/reference/make_hf_dir_golden.py): written by tools/hf_golden_dirs.cpp for the script and again by
// hf_dir_golden_test.cpp, which checks with fnv1a64_dir that its bytes are the ones the script loaded.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nn/model_io.hpp"
#include "quant/schemes.hpp"

namespace loralab::testing {

/// Directory name -> how it is written: F16 in one file, BF16 in shards of at most 100 kB (6 shards),
/// nf4 + double quantization (F32 embedding and norms), one file.
inline const std::vector<std::string> hf_golden_names = {"f16", "bf16_sharded", "nf4_dq"};

inline void write_hf_golden_dirs(const nn::model_file& stories, const std::filesystem::path& root) {
  nn::write_hf_dir(stories, root / "f16", {io::dtype::F16, 0});
  nn::write_hf_dir(stories, root / "bf16_sharded", {io::dtype::BF16, 100'000});
  nn::write_hf_dir_4bit<quant::double_quant<quant::nf4<64>>>(stories, root / "nf4_dq", {io::dtype::F32, 0});
}

/// FNV-1a (64-bit) over the bytes of every file of `dir`, in name order: the script records it per directory.
inline std::uint64_t fnv1a64_dir(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.filename().string() < b.filename().string(); });
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& p : files) {
    std::ifstream in(p, std::ios::binary);
    for (std::istreambuf_iterator<char> it(in), end; it != end; ++it)
      h = (h ^ static_cast<unsigned char>(*it)) * 0x100000001b3ull;
  }
  return h;
}

}  // namespace loralab::testing

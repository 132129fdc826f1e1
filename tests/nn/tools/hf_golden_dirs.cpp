// SPDX-License-Identifier: MIT
// hf_golden_dirs STORIES_BIN OUT: writes OUT/f16, OUT/bf16_sharded and OUT/nf4_dq (hf_golden_dirs.hpp), the
// directories tests/reference/make_hf_dir_golden.py loads with transformers, and prints their checksums.
#include <cstdio>
#include <exception>

#include "../hf_golden_dirs.hpp"

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: hf_golden_dirs STORIES260K.bin OUT_DIR\n");
    return 2;
  }
  loralab::testing::write_hf_golden_dirs(loralab::nn::read_llama2c(argv[1]), argv[2]);
  for (const auto& name : loralab::testing::hf_golden_names)
    std::printf("%s/%s fnv1a64 %016llx\n", argv[2], name.c_str(),
                static_cast<unsigned long long>(loralab::testing::fnv1a64_dir(std::filesystem::path(argv[2]) / name)));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hf_golden_dirs: error: %s\n", e.what());
  return 1;
}

// SPDX-License-Identifier: MIT
#pragma once
// Shared by the test suites: fresh random inputs every run, with the seed printed so a failure can be replayed
// (LORALAB_TEST_SEED=<seed> fixes it).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>

namespace loralab::testing {

inline std::uint64_t test_seed() {
  static const std::uint64_t seed = [] {
    if (const char* s = std::getenv("LORALAB_TEST_SEED")) return static_cast<std::uint64_t>(std::stoull(s));
    std::random_device rd;
    return (std::uint64_t(rd()) << 32) ^ rd();
  }();
  return seed;
}

/// A generator seeded from the run's seed and a per-test salt; the seed is printed once per run.
inline std::mt19937_64 rng(std::uint64_t salt) {
  static const bool printed = (std::cout << "[seed] LORALAB_TEST_SEED=" << test_seed() << "\n", true);
  (void)printed;
  return std::mt19937_64(test_seed() ^ (salt * 0x9E3779B97F4A7C15ull));
}

/// A fresh, empty temporary directory removed at scope exit.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::mt19937_64 g(std::random_device{}());
    path = std::filesystem::temp_directory_path() / ("loralab-test-" + std::to_string(g()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace loralab::testing

// SPDX-License-Identifier: MIT
#pragma once
// What every fuzz target shares: the input put where a reader can open it (loralab's readers take paths), and the
// rule for a finding. A reader refusing bad input throws loralab::error (core/check.hpp); a target catches exactly
// that. Any other exception escaping, a crash, a sanitizer report, a hang or running out of memory is a finding.
//
// The same sources build two ways: with clang++ -fsanitize=fuzzer (scripts/fuzz.sh, libFuzzer's main) and with the
// normal compiler plus fuzz/replay_main.cpp (the CTest suite that replays fuzz/corpus/ and tests/fuzz_regressions/).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include "core/check.hpp"

namespace loralab::fuzz {

/// A directory of this process's own under the temp directory, removed when the process exits normally.
inline const std::filesystem::path& scratch_dir() {
  struct dir {
    std::filesystem::path path;
    dir() {
      path = std::filesystem::temp_directory_path() / ("loralab-fuzz-" + std::to_string(::getpid()));
      std::filesystem::create_directories(path);
    }
    ~dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const dir d;
  return d.path;
}

/// Writes `size` bytes to scratch_dir()/name (a readers may decide by the name, e.g. adapter_config.json).
inline std::filesystem::path write_file(std::string_view name, const std::uint8_t* data, std::size_t size) {
  const std::filesystem::path p = scratch_dir() / name;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();  // the scratch directory is broken: not a finding in the reader
  return p;
}

inline std::filesystem::path write_file(std::string_view name, std::string_view text) {
  return write_file(name, reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
}

/// Runs fn(); a loralab::error is the documented refusal of bad input and ends the run quietly (with
/// LORALAB_FUZZ_VERBOSE=1 its message goes to stderr: what a seed or a regression file is refused for). Anything
/// else propagates out of LLVMFuzzerTestOneInput, where libFuzzer (and the replay main) report it.
template <class F>
void expect_refusal_or_success(F&& fn) {
  static const bool verbose = [] {
    const char* v = std::getenv("LORALAB_FUZZ_VERBOSE");
    return v != nullptr && std::string_view(v) == "1";
  }();
  try {
    fn();
    if (verbose) std::fprintf(stderr, "fuzz: accepted\n");
  } catch (const loralab::error& e) {
    if (verbose) std::fprintf(stderr, "fuzz: refused: %s\n", e.what());
  }
}

}  // namespace loralab::fuzz

// SPDX-License-Identifier: MIT
#pragma once
// Do all ranks run the same job? At start every rank fingerprints what it was given (its command line, the model,
// tokenizer and data files) and the ranks compare: a node with another model file or a rank started with other flags
// (an MPMD launch, a stale script) is refused on rank 0 before any work, naming the rank, the input and the path.
//
// A file's fingerprint is FNV-1a 64 over its size and its bytes: all of them up to 64 MiB, beyond that 64 samples of
// 1 MiB spread evenly (first and last included), so a 13 GB model costs 64 MiB of reading, not 13 GB. Two different
// files of one size that agree on every sample would pass; a copy cut short, another checkpoint or another quant
// would not. A directory (HF, Meta) fingerprints its regular files by name, in name order.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "dist/group.hpp"

namespace loralab::dist {

struct fnv1a {
  std::uint64_t h = 1469598103934665603ull;
  void add(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void add(std::string_view s) { add(s.data(), s.size()), add("\0", 1); }
  void add(std::uint64_t v) { add(&v, sizeof v); }
};

/// The command line after the program's name, argument by argument.
inline std::uint64_t fingerprint_arguments(int argc, char** argv) {
  fnv1a f;
  for (int i = 1; i < argc; ++i) f.add(std::string_view(argv[i]));
  return f.h;
}

namespace detail {
inline void fingerprint_file(fnv1a& f, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  LORALAB_CHECK(in, path.string(), ": cannot be read (fingerprinting the inputs of every rank)");
  const std::uint64_t size = std::filesystem::file_size(path);
  f.add(size);
  constexpr std::uint64_t whole = 64ull << 20, sample = 1ull << 20, samples = 64;
  std::vector<char> buf(std::size_t(std::min(size, whole)));
  if (size <= whole) {
    in.read(buf.data(), std::streamsize(size));
    f.add(buf.data(), std::size_t(in.gcount()));
    return;
  }
  buf.resize(sample);
  for (std::uint64_t i = 0; i < samples; ++i) {
    in.seekg(std::streamoff((size - sample) * i / (samples - 1)));  // the last sample ends at the last byte
    in.read(buf.data(), std::streamsize(sample));
    f.add(buf.data(), std::size_t(in.gcount()));
  }
}
}  // namespace detail

/// A file's or a directory's fingerprint (see above); an empty path fingerprints to 0.
inline std::uint64_t fingerprint_path(const std::filesystem::path& path) {
  if (path.empty()) return 0;
  fnv1a f;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::recursive_directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& p : files) f.add(std::filesystem::relative(p, path).generic_string()), detail::fingerprint_file(f, p);
  } else {
    detail::fingerprint_file(f, path);
  }
  return f.h;
}

/// A file every rank must read alike: a name for messages ("model") and its path as this rank has it.
struct agreed_file {
  std::string what;
  std::filesystem::path path;
};

/// Compares every rank's command line (its fingerprint_arguments) and files with rank 0's; on a difference every
/// rank raises the same collective_error naming the first input that differs and every rank that differs. In a
/// group of one nothing is read or exchanged: the files are fingerprinted only when there are ranks to compare.
inline void check_same_inputs(const group& g, std::uint64_t arguments, const std::vector<agreed_file>& files) {
  if (g.size() == 1) return;
  std::vector<std::pair<std::string, std::string>> inputs = {{"command line", ""}};  // what, rank 0's value
  std::string mine = fmt::format("{:016x}\n", arguments);
  for (const auto& f : files) {
    inputs.emplace_back(f.what, f.path.string());
    mine += fmt::format("{:016x}\n", fingerprint_path(f.path));
  }
  const std::vector<std::string> all = g.all_gather(mine);
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    std::vector<int> differ;
    for (int r = 1; r < g.size(); ++r)
      if (all[std::size_t(r)].substr(17 * k, 16) != all[0].substr(17 * k, 16)) differ.push_back(r);
    if (differ.empty()) continue;
    std::string ranks;
    for (int r : differ) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    const auto& [what, value] = inputs[k];
    throw collective_error(fmt::format("rank{} {} {} a different {} from rank 0's{} (fingerprint {} vs {}): every rank must run the "
                                       "same job on the same files; check the mpirun command line and each node's copy",
                                       differ.size() > 1 ? "s" : "", ranks, differ.size() > 1 ? "have" : "has", what,
                                       value.empty() ? "" : " (" + value + " on rank 0)", all[std::size_t(differ[0])].substr(17 * k, 16),
                                       all[0].substr(17 * k, 16)));
  }
}

}  // namespace loralab::dist

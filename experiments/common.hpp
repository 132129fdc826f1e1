// SPDX-License-Identifier: MIT
#pragma once
// What every experiment shares: the common flags (--threads, --seed, --help), printing a config, Markdown
// tables on stdout, CSV files written atomically, and gnuplot figures.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <fmt/core.h>
#include <omp.h>

#include "core/atomic_file.hpp"
#include "core/check.hpp"

namespace loralab::experiments {

namespace po = boost::program_options;

/// Flags every program takes. `threads` 0 means all cores.
struct common_options {
  int threads = 0;
  std::uint64_t seed = 42;
};

inline void add_common_options(po::options_description& desc, common_options& c) {
  desc.add_options()("help,h", "print this help and exit")(
      "threads", po::value(&c.threads)->default_value(c.threads), "OpenMP/OpenBLAS threads (0 = all cores)")(
      "seed", po::value(&c.seed)->default_value(c.seed), "random seed: same seed and threads, same numbers");
}

/// Parses argv; prints help (exit 0) or a clear error (exit 2) itself. Returns false when main should stop.
inline bool parse_command_line(int argc, char** argv, const po::options_description& desc, po::variables_map& vm,
                               const common_options& c, int& exit_code) {
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      exit_code = 0;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << argv[0] << ": " << e.what() << "\n(see --help)\n";
    exit_code = 2;
    return false;
  }
  if (c.threads < 0) {
    std::cerr << argv[0] << ": --threads must be >= 0, got " << c.threads << "\n";
    exit_code = 2;
    return false;
  }
  if (c.threads > 0) omp_set_num_threads(c.threads);
  return true;
}

/// A results table: printed as Markdown, saved as CSV.
struct table {
  explicit table(std::vector<std::string> columns) : header(std::move(columns)) {}
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;

  void print_markdown(std::FILE* out = stdout) const {
    std::vector<std::size_t> w(header.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
      w[c] = header[c].size();
      for (const auto& r : rows) w[c] = std::max(w[c], r[c].size());
    }
    const auto line = [&](const std::vector<std::string>& cells) {
      std::string s = "|";
      for (std::size_t c = 0; c < cells.size(); ++c) s += fmt::format(" {:<{}} |", cells[c], w[c]);
      fmt::print(out, "{}\n", s);
    };
    line(header);
    std::string sep = "|";
    for (auto n : w) sep += std::string(n + 2, '-') + "|";
    fmt::print(out, "{}\n", sep);
    for (const auto& r : rows) line(r);
  }

  void write_csv(const std::filesystem::path& path) const {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    std::string text;
    const auto add = [&](const std::vector<std::string>& cells) {
      for (std::size_t c = 0; c < cells.size(); ++c) text += (c ? "," : "") + cells[c];
      text += "\n";
    };
    add(header);
    for (const auto& r : rows) add(r);
    atomic_file f(path);
    f.write(text);
    f.commit();
  }
};

/// Runs gnuplot on `script` (which must `set output` itself). Returns false, with a note on stderr, when
/// gnuplot is missing or fails: a figure is a convenience, the CSV is the result.
inline bool run_gnuplot(const std::string& script, const std::filesystem::path& script_path) {
  {
    atomic_file f(script_path);
    f.write(script);
    f.commit();
  }
  const std::string cmd = "gnuplot " + script_path.string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::cerr << "note: gnuplot failed or is missing; the figure was not made (script: " << script_path << ")\n";
    return false;
  }
  return true;
}

}  // namespace loralab::experiments

// SPDX-License-Identifier: MIT
#pragma once
// The command line of every loralab program (experiments, benches, labs), on Boost.Program_options: --help, --threads
// and --seed built in; each flag bound to a variable whose current value is its default; errors and help printed the
// same way everywhere; main's body run under one error convention. Programs that include this header link
// Boost::program_options. Including it also makes the program's OpenMP threads wait passively (core/
// startup_environment.hpp), and parse() checks the BLAS kernel against the CPU and prints the "blas:" header line
// (core/blas.hpp): library, kernel, a measured sgemm rate, the wait policy.
//
//   int main(int argc, char** argv) {
//     return experiment::guarded_main("rank_ablation", [&] {
//       experiment::command_line cli("rank_ablation: which LoRA rank?");
//       int steps = 50;
//       cli.flag("steps", steps, "optimizer steps per run");
//       if (auto code = cli.parse(argc, argv)) return *code;
//       …
//       return 0;
//     });
//   }
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/lexical_cast.hpp>
#include <boost/program_options.hpp>
#include <fmt/core.h>
#include <omp.h>

#include "core/blas.hpp"
#include "core/check.hpp"
#include "core/startup_environment.hpp"
#include "dist/fingerprint.hpp"
#include "dist/group.hpp"
#include "experiment/device.hpp"

namespace loralab::experiment {

namespace po = boost::program_options;

/// Where fetched models live: $LORALAB_CACHE, else ~/.cache/loralab (scripts/get_model.sh writes there).
inline std::filesystem::path model_cache_dir() {
  if (const char* c = std::getenv("LORALAB_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".cache" / "loralab";
}

/// Model aliases, one table for every program's --model (command_line::parse applies it): a name that is not an
/// existing path and matches a row becomes the cached file; a missing file is an error saying how to fetch it.
struct model_alias {
  std::string_view name, file;
};
inline constexpr model_alias model_aliases[] = {{"smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"}};

inline std::string resolve_model_alias(const std::string& model) {
  std::error_code ec;
  if (model.empty() || std::filesystem::exists(model, ec)) return model;
  for (const auto& a : model_aliases) {
    if (a.name != model) continue;
    const std::filesystem::path path = model_cache_dir() / a.file;
    LORALAB_CHECK(std::filesystem::is_regular_file(path, ec), "--model ", model, ": ", path.string(),
                  " is not there; fetch it with scripts/get_model.sh ", model, " (the cache is $LORALAB_CACHE, default ~/.cache/loralab)");
    return path.string();
  }
  return model;
}

class command_line {
 public:
  explicit command_line(std::string caption, std::uint64_t default_seed = 42) : seed(default_seed), desc(std::move(caption)) {
    desc.add_options()("help,h", "print this help and exit");
    flag("threads", threads, "OpenMP/OpenBLAS threads (0 = all cores)");
    flag("seed", seed, "random seed: same seed and threads, same numbers");
    flag("device", device, "cpu or cuda: where models train and run (cuda: float32 and nf4/fp4 bases; a CUDA build and a GPU)");
  }

  /// This program's work has a CUDA path: --device cuda is accepted (when the build and the machine have one).
  command_line& allow_device() {
    device_capable_ = true;
    return *this;
  }

  /// --name VALUE into `var`; its value now is the default shown by --help.
  template <class T>
  command_line& flag(const char* name, T& var, const char* help) {
    desc.add_options()(name, po::value(&var)->default_value(var), help);
    return *this;
  }
  /// --name VALUE into `var`, with no default: the flag must be given.
  template <class T>
  command_line& required(const char* name, T& var, const char* help) {
    desc.add_options()(name, po::value(&var)->required(), help);
    return *this;
  }
  /// --name (no value) sets `var` to true.
  command_line& option_switch(const char* name, bool& var, const char* help) {
    desc.add_options()(name, po::bool_switch(&var), help);
    return *this;
  }

  /// Parses argv. Returns the exit code when main should stop: 0 after --help, 2 after a usage error (printed as
  /// "PROGRAM: MESSAGE (see --help)"); std::nullopt to go on. Applies --threads, then replaces a fallback BLAS
  /// kernel and prints the "blas:" line to `header` (stderr: a program's stdout stays its result; benches: stdout).
  std::optional<int> parse(int argc, char** argv) {
    program_ = argc > 0 ? argv[0] : "program";
    try {
      po::store(po::parse_command_line(argc, argv, desc), vm);
      if (vm.count("model"))  // --model smollm2 and the other aliases (resolve_model_alias), before notify binds the value
        if (auto* m = boost::any_cast<std::string>(&vm.at("model").value())) *m = resolve_model_alias(*m);
      if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
      }
      po::notify(vm);
    } catch (const po::error& e) {
      std::cerr << program_ << ": " << e.what() << "\n(see --help)\n";
      return 2;
    }
    if (threads < 0) {
      std::cerr << program_ << ": --threads must be >= 0, got " << threads << "\n";
      return 2;
    }
    if (!is_device_name(device)) {
      std::cerr << program_ << ": --device must be cpu or cuda, got '" << device << "'\n";
      return 2;
    }
    if (device == "cuda") {
      const std::string why = device_capable_ ? cuda_unavailable()
                                              : "this program runs on the CPU only; " + std::string(device_programs);
      if (!why.empty()) {
        std::cerr << program_ << ": --device cuda: " << why << "\n";
        return 2;
      }
    }
    arguments_fingerprint = dist::fingerprint_arguments(argc, argv);
    // Under an MPI launcher (dist/group.hpp): MPI_Init here; ranks on one node share its cores unless --threads
    // says otherwise, and only rank 0 prints (the other ranks' errors still reach stderr).
    const dist::group& world = dist::group::world();
    if (world.size() > 1) {
      if (threads == 0) threads = std::max(1, omp_get_num_procs() / dist::launched().local_size);
      if (!world.is_root()) {
        if (!std::freopen("/dev/null", "w", stdout)) std::fclose(stdout);
        header = nullptr;
      }
    }
    if (threads > 0) omp_set_num_threads(threads);
    if (device == "cuda") select_cuda_device(dist::launched().rank);
    // OMP_DYNAMIC=true lets the runtime hand OpenBLAS's parallel sgemm fewer threads than it partitioned the work
    // for, and OpenBLAS 0.3.21 then waits forever for the missing ones (seen: a hang in the first product). Teams
    // of the size asked, always.
    omp_set_dynamic(0);
    if (header)
      fmt::print(header, "{}; {}{}\n", core::blas_header(), core::wait_policy_description(),
                 world.size() > 1 ? fmt::format("; MPI: {} ranks, {} threads each", world.size(), threads) : "");
    return std::nullopt;
  }

  /// Whether --name was given on the command line (not just defaulted).
  bool given(const std::string& name) const { return vm.count(name) && !vm[name].defaulted(); }

  int threads = 0;
  std::uint64_t seed = 42;
  std::string device = "cpu";  ///< --device: cpu or cuda (checked by parse())
  std::uint64_t arguments_fingerprint = 0;  ///< of argv after the program's name: ranks compare it (dist/fingerprint.hpp)
  std::FILE* header = stderr;  ///< where parse() prints the BLAS line; nullptr: nowhere
  po::options_description desc;
  po::variables_map vm;

 private:
  std::string program_;
  bool device_capable_ = false;
};

/// "1,2,4" -> {1, 2, 4}: a comma list (spaces around items ignored) of values of T for `flag` (named in errors); an empty list is returned as is
/// (a sweep refuses it with its own message).
template <class T>
std::vector<T> parse_list(const std::string& text, const char* flag) {
  std::vector<T> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    item.erase(0, item.find_first_not_of(" \t"));  // "a, b" as "a,b"
    item.erase(item.find_last_not_of(" \t") + 1);
    if constexpr (std::is_same_v<T, std::string>) {
      LORALAB_CHECK(!item.empty(), flag, ": empty item in '", text, "'");
      out.push_back(item);
    } else {
      try {
        out.push_back(boost::lexical_cast<T>(item));
      } catch (const boost::bad_lexical_cast&) {
        fail(flag, " must be a comma list of numbers, got '", item, "' in '", text, "'");
      }
    }
    pos = comma + 1;
  }
  return out;
}

/// The models/ files ship with the repository: found from the current directory (the repository root), else from
/// the program (build/experiments/ -> ../../models/).
inline std::string default_model_file(const std::string& name, const char* argv0) {
  const std::filesystem::path here = std::filesystem::path("models") / name;
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) exe = std::filesystem::absolute(argv0);
  const std::filesystem::path there = (exe.parent_path() / ".." / ".." / "models" / name).lexically_normal();
  if (std::filesystem::is_regular_file(here, ec)) return here.string();
  if (std::filesystem::is_regular_file(there, ec)) return there.string();
  fail("the default ", name, " is in neither ", std::filesystem::absolute(here).string(), " (from the current directory) nor ",
       there.string(), " (from the program); pass --model and --tokenizer");
}

/// What a program does with an exception that ends it: "NAME: error: MESSAGE" on stderr, exit code 1. Under MPI an
/// error every rank raised alike (dist::collective_error) is printed by rank 0 alone and every rank returns; any other
/// error is this rank's own, so it is printed with the rank and the whole job is ended (the other ranks would wait
/// for this one in their next sum forever).
inline int report_error(const char* name, const std::exception& e) {
  const bool collective = dynamic_cast<const dist::collective_error*>(&e) != nullptr;
  const dist::launch_environment env = dist::launched();
  if (env.size <= 1) {
    fmt::print(stderr, "{}: error: {}\n", name, e.what());
    return 1;
  }
  if (collective) {
    if (env.rank == 0) fmt::print(stderr, "{}: error: {}\n", name, e.what());
    return 1;
  }
  fmt::print(stderr, "{}: error on rank {} of {}: {}\n", name, env.rank, env.size, e.what());
  std::fflush(stderr);
  dist::abort_job(1);
}

/// Runs main's body; a loralab::error or any other exception becomes "NAME: error: MESSAGE" on stderr and exit 1
/// (report_error).
template <class F>
int guarded_main(const char* name, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return report_error(name, e);
  }
}

}  // namespace loralab::experiment

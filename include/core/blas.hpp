// SPDX-License-Identifier: MIT
#pragma once
// Which GEMM kernel runs, and never a generic one silently.
//
// Eigen hands loralab's large products to the BLAS it was built with (EIGEN_USE_BLAS; OpenBLAS by default, CMake's
// LORALAB_BLAS picks another). OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernel from a table of CPU
// models when it loads, and one it does not know gets the SSE3 `Prescott` fallback: on an Intel Xeon family 6
// model 207 (AVX-512 + AVX512-BF16) OpenBLAS 0.3.21 ran sgemm at 23 GFLOP/s against 131 with the AVX-512 kernel.
// Here the CPU's instruction sets decide instead (cpuid, the OS's saved-state check included):
//
//   level 0  SSE only            level 1  AVX (Sandybridge, Bulldozer)      level 2  AVX2 + FMA (Haswell, Zen)
//   level 3  AVX-512 F/BW/DQ/VL (SkylakeX)    level 4  + AVX512-BF16 (Cooperlake, Sapphire Rapids, Zen 4)
//
// ensure_blas_kernel() compares the kernel OpenBLAS chose with the CPU's level; below it, it reselects the kernel
// for the CPU (OpenBLAS's own gotoblas_dynamic_init with OPENBLAS_CORETYPE, before any product ran), unless the user
// chose the kernel with OPENBLAS_CORETYPE: then it keeps it and says it is slower than the CPU allows.
// blas_header() is the line every program prints: library, threading, kernel and a measured sgemm rate.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <omp.h>

// OpenBLAS's own entry points, weak: with another BLAS they are null and the guard only reports.
extern "C" {
[[gnu::weak]] char* openblas_get_corename(void);
[[gnu::weak]] char* openblas_get_config(void);
[[gnu::weak]] int openblas_get_parallel(void);
[[gnu::weak]] void gotoblas_dynamic_init(void);
[[gnu::weak]] void gotoblas_dynamic_quit(void);
}

namespace loralab::core {

/// The CPU as far as GEMM kernels care: its instruction-set level (see the table above) and its name.
struct cpu_isa {
  int level = 0;
  bool amd = false;
  std::string model;  ///< /proc/cpuinfo "model name", with family and model numbers
  std::string sets;   ///< "AVX-512 + BF16", "AVX2 + FMA", …
};

/// Instruction-set level of an OpenBLAS kernel name (case-insensitive); -1 for a name not in the table.
inline int openblas_kernel_level(std::string_view name) {
  std::string n(name);
  std::ranges::transform(n, n.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  static constexpr std::array<std::pair<std::string_view, int>, 24> table{{
      {"sapphirerapids", 4}, {"cooperlake", 4}, {"skylakex", 3}, {"haswell", 2}, {"zen", 2}, {"excavator", 2},
      {"sandybridge", 1}, {"bulldozer", 1}, {"piledriver", 1}, {"steamroller", 1}, {"prescott", 0}, {"core2", 0},
      {"penryn", 0}, {"dunnington", 0}, {"nehalem", 0}, {"atom", 0}, {"athlon", 0}, {"opteron", 0},
      {"opteron_sse3", 0}, {"barcelona", 0}, {"nano", 0}, {"bobcat", 0}, {"katmai", 0}, {"northwood", 0}}};
  for (const auto& [k, level] : table)
    if (n == k) return level;
  return -1;
}

/// The OpenBLAS kernel for a CPU of this level (the name OPENBLAS_CORETYPE takes).
inline std::string openblas_kernel_for(const cpu_isa& cpu) {
  switch (cpu.level) {
    case 4: return "Cooperlake";
    case 3: return "SkylakeX";
    case 2: return cpu.amd ? "Zen" : "Haswell";
    case 1: return "Sandybridge";
    default: return "Prescott";
  }
}

inline cpu_isa this_cpu() {
  __builtin_cpu_init();
  cpu_isa c;
  c.amd = __builtin_cpu_is("amd");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) c.level = 4, c.sets = "AVX-512 + BF16";
  else if (avx512) c.level = 3, c.sets = "AVX-512";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) c.level = 2, c.sets = "AVX2 + FMA";
  else if (__builtin_cpu_supports("avx")) c.level = 1, c.sets = "AVX";
  else c.sets = "SSE";
  std::ifstream in("/proc/cpuinfo");
  std::string family, model;
  for (std::string line; std::getline(in, line);) {
    const auto value = [&] { return line.substr(std::min(line.size(), line.find(':') + 2)); };
    if (c.model.empty() && line.starts_with("model name")) c.model = value();
    else if (family.empty() && line.starts_with("cpu family")) family = value();
    else if (model.empty() && line.starts_with("model\t")) model = value();
  }
  if (c.model.empty()) c.model = "unknown CPU";
  if (!family.empty()) c.model += fmt::format(" (family {} model {})", family, model);
  return c;
}

/// What the guard found and did.
struct blas_status {
  std::string library = "BLAS (not OpenBLAS: kernel unknown)";
  std::string threading;       ///< "OpenMP", "pthreads", "sequential"
  std::string kernel;          ///< the kernel in use, as OpenBLAS names it
  std::string detected;        ///< the kernel OpenBLAS picked by itself, when loralab replaced it
  bool user_choice = false;    ///< OPENBLAS_CORETYPE was set before the program started
  bool below_cpu = false;      ///< the kernel in use is below what the CPU supports
  cpu_isa cpu;
};

/// Reselects OpenBLAS's kernel by name (OPENBLAS_CORETYPE semantics) in this process. Only before any BLAS call
/// is under way; false when the BLAS is not a DYNAMIC_ARCH OpenBLAS. Returns the kernel now in use in `now`.
inline bool select_openblas_kernel(const std::string& name, std::string* now = nullptr) {
  if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit || !openblas_get_corename) return false;
  const char* previous = std::getenv("OPENBLAS_CORETYPE");
  const std::string keep = previous ? previous : "";
  setenv("OPENBLAS_CORETYPE", name.c_str(), 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  if (previous) setenv("OPENBLAS_CORETYPE", keep.c_str(), 1);
  else unsetenv("OPENBLAS_CORETYPE");
  if (now) *now = openblas_get_corename();
  return true;
}

/// Checks that the BLAS kernel matches the CPU and replaces a fallback kernel (see the top); every call checks again.
inline blas_status check_blas_kernel() {
    blas_status s;
    s.cpu = this_cpu();
    if (!openblas_get_corename || !openblas_get_config) return s;
    const std::string config = openblas_get_config();
    s.library = "OpenBLAS " + config.substr(config.find(' ') + 1, config.find(' ', config.find(' ') + 1) - config.find(' ') - 1);
    if (openblas_get_parallel) s.threading = std::array{"sequential", "pthreads", "OpenMP"}[std::clamp(openblas_get_parallel(), 0, 2)];
    s.kernel = openblas_get_corename();
    s.user_choice = std::getenv("OPENBLAS_CORETYPE") != nullptr;
    const int level = openblas_kernel_level(s.kernel);
    if (level >= 0 && level < s.cpu.level && !s.user_choice && config.find("DYNAMIC_ARCH") != std::string::npos) {
      std::string now;
      if (select_openblas_kernel(openblas_kernel_for(s.cpu), &now)) s.detected = s.kernel, s.kernel = now;
    }
    const int in_use = openblas_kernel_level(s.kernel);
    s.below_cpu = in_use >= 0 && in_use < s.cpu.level;
    return s;
}

/// check_blas_kernel() once per process, its result kept (what programs call before their first product).
inline const blas_status& ensure_blas_kernel() {
  static const blas_status status = check_blas_kernel();
  return status;
}

/// sgemm GFLOP/s of one n×n×n product through the BLAS (best of three), at the current thread count.
inline double sgemm_gflops(int n = 1024) {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Constant(n, n, 0.5f), b = Eigen::MatrixXf::Constant(n, n, 0.25f);
  Eigen::MatrixXf c(n, n);
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    c.noalias() = a * b;
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * n / best / 1e9;
}

/// "blas: OpenBLAS 0.3.21 (OpenMP), kernel Cooperlake for AMD EPYC … (AVX-512 + BF16); sgemm 1024³ 131.2 GFLOP/s,
/// 2 threads" — plus a warning when the kernel is below the CPU, and what loralab replaced.
inline std::string blas_header(const blas_status& s, double gflops) {
  std::string line = fmt::format("blas: {}{}, kernel {} on {} ({}); sgemm 1024^3 {:.1f} GFLOP/s, {} thread{}", s.library,
                                 s.threading.empty() ? "" : " (" + s.threading + ")", s.kernel.empty() ? "unknown" : s.kernel,
                                 s.cpu.model, s.cpu.sets, gflops, omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
  if (!s.detected.empty())
    line += fmt::format("\nblas: OpenBLAS picked its {} kernel for this CPU, below its {}: loralab selected {}", s.detected, s.cpu.sets, s.kernel);
  if (s.below_cpu)
    line += fmt::format("\nblas: WARNING: kernel {}{} is below this CPU's {} (its kernel: {}): products run several times slower{}", s.kernel,
                        s.user_choice ? " (chosen by OPENBLAS_CORETYPE)" : "", s.cpu.sets, openblas_kernel_for(s.cpu),
                        s.user_choice ? "; unset OPENBLAS_CORETYPE to let loralab choose" : "");
  return line;
}
/// The header of this process: ensure_blas_kernel(), then a probe.
inline std::string blas_header() {
  const blas_status& s = ensure_blas_kernel();
  return blas_header(s, sgemm_gflops());
}

}  // namespace loralab::core

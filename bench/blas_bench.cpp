// SPDX-License-Identifier: MIT
/// \file blas_bench.cpp
/// \brief Which GEMM kernel should this CPU run? Every OpenBLAS kernel the CPU can execute, measured on the
/// products of a training step, next to the one loralab selects (core/blas.hpp).
///
/// OpenBLAS (DYNAMIC_ARCH) carries kernels for many CPU generations and picks one from a table of CPU models; a CPU
/// it does not know gets the SSE3 Prescott kernel. This bench selects each kernel in turn (as OPENBLAS_CORETYPE
/// would), times sgemm on the shapes of a 30M model's step (M = B·T = 1024 tokens; the q/o, gate/up, down and LM-head
/// products, forward layout x·Wᵀ) and 1024³, and prints GFLOP/s and the ratio to loralab's choice.
///
///   cmake --build build --target blas_bench && build/bench/blas_bench [--threads 1]
///
/// Runtime: a few seconds per kernel. Output: the "blas:" line, then a Markdown table (kernel × shape).
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench_support.hpp"
#include "core/blas.hpp"
#include "experiment/cli.hpp"

namespace core = loralab::core;

int main(int argc, char** argv) {
  return loralab::experiment::guarded_main("blas_bench", [&] {
    int repeats = 5;
    loralab::experiment::command_line cli("blas_bench: sgemm GFLOP/s of every OpenBLAS kernel this CPU runs, on a training step's shapes");
    cli.flag("repeats", repeats, "timed products per kernel and shape (the median is reported)");
    cli.header = stdout;
    if (auto code = cli.parse(argc, argv)) return *code;
    const core::blas_status& chosen = core::ensure_blas_kernel();
    if (chosen.kernel.empty()) {
      fmt::print("blas_bench: the BLAS is not OpenBLAS: no kernels to choose from\n");
      return 0;
    }
    struct shape { const char* what; int m, n, k; };
    const std::vector<shape> shapes = {{"q/o proj 1024x512x512", 1024, 512, 512}, {"gate/up 1024x1376x512", 1024, 1376, 512},
                                       {"down 1024x512x1376", 1024, 512, 1376}, {"LM head 1024x8192x512", 1024, 8192, 512},
                                       {"square 1024^3", 1024, 1024, 1024}};
    std::vector<std::string> kernels;
    for (const char* k : {"Prescott", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake"})
      if (core::openblas_kernel_level(k) <= chosen.cpu.level) kernels.push_back(k);
    std::vector<std::vector<double>> rate(kernels.size(), std::vector<double>(shapes.size()));
    const loralab::bench::load_monitor load;
    for (std::size_t i = 0; i < kernels.size(); ++i) {
      std::string now;
      core::select_openblas_kernel(kernels[i], &now);
      kernels[i] = now;
      for (std::size_t j = 0; j < shapes.size(); ++j) {
        const shape& s = shapes[j];
        using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const row_major x = row_major::Constant(s.m, s.k, 0.5f), w = row_major::Constant(s.n, s.k, 0.25f);
        row_major y(s.m, s.n);
        const double t = loralab::bench::median_seconds(repeats, [&] { y.noalias() = x * w.transpose(); });
        rate[i][j] = 2.0 * s.m * s.n * s.k / t / 1e9;
      }
    }
    core::select_openblas_kernel(chosen.kernel);  // back to loralab's choice
    load.report(omp_get_num_procs());
    std::size_t mine = 0;
    for (std::size_t i = 0; i < kernels.size(); ++i)
      if (kernels[i] == chosen.kernel) mine = i;
    fmt::print("\nsgemm GFLOP/s (÷ {}, loralab's choice for {}), {} threads\n\n| kernel |", chosen.kernel, chosen.cpu.sets, omp_get_max_threads());
    for (const shape& s : shapes) fmt::print(" {} |", s.what);
    fmt::print("\n|---|");
    for (std::size_t j = 0; j < shapes.size(); ++j) fmt::print("--:|");
    fmt::print("\n");
    for (std::size_t i = 0; i < kernels.size(); ++i) {
      fmt::print("| {}{} |", kernels[i], i == mine ? " (chosen)" : "");
      for (std::size_t j = 0; j < shapes.size(); ++j) fmt::print(" {:.1f} ({:.2f}x) |", rate[i][j], rate[i][j] / rate[mine][j]);
      fmt::print("\n");
    }
    return 0;
  });
}

// SPDX-License-Identifier: MIT
/// \file quant_bench.cpp
/// \brief How fast do the CPU fast paths quantize and dequantize a weight, next to a memcpy of the same bytes?
///
/// Quantizes and dequantizes n float32 weights from N(0, 0.02) with nf4<64>, fp4<64>, double_quant<nf4<64>>,
/// dynamic8<4096>, dynamic8<256> and int8_rowwise (as a rows x 4096 matrix) and reports GB/s of float32 processed
/// (n*4 bytes / seconds, the median of --repeats runs after one warm-up), beside a memcpy of the same n*4 bytes
/// into a pre-touched buffer, measured in the same run. The ratio columns divide by the memcpy on the same
/// --threads (one contiguous slice per thread); the single-threaded std::memcpy is printed as well.
/// First the fast paths are checked bit for bit against quantize_ref / dequantize_ref on a 257 x 1031 input
/// (int8_rowwise has no _ref pair: it is checked against the scalar formula its header states).
///
///   cmake --build build -j2 --target quant_bench && ./build/bench/quant_bench [--threads 2 --csv out.csv]
///
/// Runtime: about 10 s on an idle 2-core machine at the default 16M elements (a 4096 x 4096 weight), mostly quantize.
/// Output: a config line, "All results match. Starting benchmarks.", two memcpy lines, then one row per scheme:
/// scheme | quantize GB/s | dequantize GB/s | quantize/memcpy | dequantize/memcpy (--csv: the same as CSV).
/// Dequantize writes into a buffer touched before timing (no page faults timed); quantize returns a fresh tensor
/// each call, so its allocation is part of what is timed, as it is for a caller.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/core.h>
#include <fmt/os.h>
#include <omp.h>

#include "core/check.hpp"
#include "experiment/cli.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant/rowwise_int8_tensor.hpp"
#include "quant/schemes.hpp"

namespace lq = loralab::quant;

namespace {

using blockwise_schemes =
    std::tuple<lq::nf4<64>, lq::fp4<64>, lq::double_quant<lq::nf4<64>>, lq::dynamic8<4096>, lq::dynamic8<256>>;

struct config {
  std::size_t size = 16u * 1024 * 1024;  // elements: a 4096 x 4096 weight
  int repeats = 5, threads = 0;          // threads 0: all cores
  std::uint64_t seed = 1234;
  std::string csv;
};

struct row { std::string scheme; double quantize_gbps, dequantize_gbps; };

std::vector<float> gaussian(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

/// Median wall time of `repeats` calls of f, after one untimed warm-up call.
template <class F>
double median_seconds(int repeats, F&& f) {
  f();
  std::vector<double> t(repeats);
  for (double& seconds : t) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::ranges::sort(t);
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

template <class T>
bool same_bits(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}
bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

// ---- verification: the fast paths against the references, bit for bit ----------------------------------

template <lq::blockwise_scheme S>
bool verify_blockwise(std::span<const float> x, std::int64_t rows, std::int64_t cols) {
  const auto fast = lq::blockwise_tensor<S>::template quantize<float>(x, {rows, cols});
  const auto ref = lq::blockwise_tensor<S>::template quantize_ref<float>(x, {rows, cols});
  bool ok = same_bits(fast.codes(), ref.codes());
  if constexpr (S::nested)
    ok = ok && same_bits(fast.absmax_codes(), ref.absmax_codes()) && same_bits(fast.offset(), ref.offset()) &&
         same_bits(fast.nested_absmax(), ref.nested_absmax()) && same_bits(fast.nested_code(), ref.nested_code());
  else
    ok = ok && same_bits(fast.absmax(), ref.absmax());
  std::vector<float> a(x.size()), b(x.size());
  fast.template dequantize<float>(a), fast.template dequantize_ref<float>(b);
  if (!(ok = ok && same_bits<float>(a, b))) fmt::print(stderr, "MISMATCH: {} vs its _ref\n", lq::scheme_label<S>());
  return ok;
}

/// int8_rowwise has no _ref pair: its header's formula (threshold 0), one element at a time.
bool verify_int8(std::span<const float> w, std::size_t rows, std::size_t cols) {
  const auto t = lq::rowwise_int8_tensor::quantize<float>(w, rows, cols);
  std::vector<float> out(w.size());
  t.dequantize<float>(out);
  bool ok = true;
  for (std::size_t i0 = 0, r = 0; r < rows; ++r, i0 += cols) {
    float am = 0.0f;  // SCB: max |fp16(w)| over the row
    for (std::size_t c = 0; c < cols; ++c) am = std::fmax(am, std::fabs(float(Eigen::half(w[i0 + c]))));
    ok = ok && same_bits(am, t.row_absmax()[r]);
    for (std::size_t c = 0; c < cols; ++c) {
      const float a = float(Eigen::half(w[i0 + c]));
      const auto q = static_cast<std::int8_t>(std::clamp(std::nearbyint(a * (127.0f / am)), -127.0f, 127.0f));
      ok = ok && q == t.codes()[i0 + c] && same_bits(float(q) * am * lq::rowwise_int8_tensor::inv127, out[i0 + c]);
    }
  }
  if (!ok) fmt::print(stderr, "MISMATCH: int8-row vs the scalar formula\n");
  return ok;
}

// ---- timing --------------------------------------------------------------------------------------------

/// Median quantize and dequantize GB/s (n*4 bytes of float32 / seconds) of one scheme.
template <class Tensor, class Quantize>
row time_scheme(const config& cfg, std::string name, std::span<float> out, Quantize quantize) {
  const double gb = 4.0 * static_cast<double>(out.size()) / 1e9;
  Tensor t;
  const double tq = median_seconds(cfg.repeats, [&] { t = quantize(); });
  const double td = median_seconds(cfg.repeats, [&] { t.template dequantize<float>(out); });
  return {std::move(name), gb / tq, gb / td};
}

/// GB/s of copying src into the pre-touched dst: one std::memcpy, or one contiguous slice per OpenMP thread.
double memcpy_gbps(const config& cfg, std::span<const float> src, std::span<float> dst, bool parallel) {
  const std::size_t n = src.size();
  const double s = median_seconds(cfg.repeats, [&] {
#pragma omp parallel if (parallel)
    {
      const std::size_t nt = omp_get_num_threads(), i = omp_get_thread_num(), lo = n * i / nt, hi = n * (i + 1) / nt;
      std::memcpy(dst.data() + lo, src.data() + lo, (hi - lo) * sizeof(float));
    }
  });
  return 4.0 * static_cast<double>(n) / 1e9 / s;
}

int run(const config& cfg) {
  omp_set_num_threads(cfg.threads > 0 ? cfg.threads : omp_get_num_procs());
  const int threads = omp_get_max_threads();
  const std::size_t cols = cfg.size % 4096 == 0 ? 4096 : cfg.size, rows = cfg.size / cols;  // else one row
  fmt::print("quant_bench: n={} as ({}, {}), {:.0f} MiB float32; threads={}, repeats={} (median), seed={}\n", cfg.size,
             rows, cols, cfg.size * 4.0 / (1 << 20), threads, cfg.repeats, cfg.seed);

  const std::vector<float> xv = gaussian(257 * 1031, cfg.seed + 1);  // odd n, partial blocks, > 64 blocks
  bool ok = verify_int8(xv, 257, 1031);
  std::apply([&]<class... S>(S...) { ok = (verify_blockwise<S>(xv, 257, 1031) & ... & ok); }, blockwise_schemes{});
  if (!ok) return 1;
  fmt::print("All results match. Starting benchmarks.\n\n");

  const std::vector<float> x = gaussian(cfg.size, cfg.seed);
  std::vector<float> out(cfg.size, 1.0f);  // written here, so no timed call takes its page faults
  const double mc1 = memcpy_gbps(cfg, x, out, false), mct = memcpy_gbps(cfg, x, out, true);
  fmt::print("{:<42} {:6.2f} GB/s\n", "memcpy, 1 thread:", mc1);
  fmt::print("{:<42} {:6.2f} GB/s\n\n", fmt::format("memcpy, --threads={} (baseline of ratios):", threads), mct);

  const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)};
  std::vector<row> table;
  std::apply([&]<class... S>(S...) {
    (table.push_back(time_scheme<lq::blockwise_tensor<S>>(
         cfg, lq::scheme_label<S>(), out, [&] { return lq::blockwise_tensor<S>::template quantize<float>(x, shape); })),
     ...);
  }, blockwise_schemes{});
  table.push_back(time_scheme<lq::rowwise_int8_tensor>(
      cfg, "int8-row", out, [&] { return lq::rowwise_int8_tensor::quantize<float>(x, rows, cols); }));

  fmt::print("{:<14} | {:>13} | {:>15} | {:>15} | {:>17}\n", "scheme", "quantize GB/s", "dequantize GB/s",
             "quantize/memcpy", "dequantize/memcpy");
  fmt::print("{:-<14}-+-{:->13}-+-{:->15}-+-{:->15}-+-{:->17}\n", "", "", "", "", "");
  std::optional<fmt::ostream> csv;
  if (!cfg.csv.empty()) csv.emplace(fmt::output_file(cfg.csv));
  if (csv)
    csv->print("scheme,n,threads,quantize_gbps,dequantize_gbps,quantize_vs_memcpy,dequantize_vs_memcpy\n"
               "memcpy-1thread,{},1,{:.4f},{:.4f},,\nmemcpy,{},{},{:.4f},{:.4f},1,1\n",
               cfg.size, mc1, mc1, cfg.size, threads, mct, mct);
  for (const row& e : table) {
    fmt::print("{:<14} | {:>13.2f} | {:>15.2f} | {:>15.3f} | {:>17.3f}\n", e.scheme, e.quantize_gbps,
               e.dequantize_gbps, e.quantize_gbps / mct, e.dequantize_gbps / mct);
    if (csv)
      csv->print("{},{},{},{:.4f},{:.4f},{:.4f},{:.4f}\n", e.scheme, cfg.size, threads, e.quantize_gbps,
                 e.dequantize_gbps, e.quantize_gbps / mct, e.dequantize_gbps / mct);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loralab::experiment::guarded_main("quant_bench", [&] {
    config cfg;
    loralab::experiment::command_line cli("quant_bench: quantize/dequantize GB/s of each scheme vs memcpy", cfg.seed);
    cli.flag("size", cfg.size, "elements (16M: a 4096 x 4096 weight)")
        .flag("repeats", cfg.repeats, "timed runs per number; the median is reported")
        .flag("csv", cfg.csv, "also write the table to this CSV file (empty: no file)");
    cli.header = stdout;  // the "blas:" line heads the bench output
    if (auto code = cli.parse(argc, argv)) return *code;
    cfg.threads = cli.threads, cfg.seed = cli.seed;
    LORALAB_CHECK(cfg.size > 0 && cfg.repeats > 0, "--size=", cfg.size, " --repeats=", cfg.repeats, ": need size > 0, repeats > 0");
    return run(cfg);
  });
}

// SPDX-License-Identifier: MIT
#pragma once
// torch's float32 CPU `Tensor.sum()` / `Tensor.mean()` of a 1-d contiguous tensor, bit for bit.
//
// bitsandbytes' double quantization centres the block absmax on `absmax.mean()`, a float32 torch reduction, and
// its last bit depends on the order torch adds in. On the CPU that order is (read in pytorch's
// sources, checked against torch 2.15.0 by tests/reference/check_torch_mean.py):
//
//   mean    ReduceOps.cpp mean_out: at::sum_out(...).div_(n), i.e. fl(sum / float(n)) (a true division).
//   threads TensorIteratorReduce.cpp parallel_reduce: n < GRAIN_SIZE (32768) or one intra-op thread: one serial
//           pass. Otherwise two_pass_reduction: parallel_for splits [0, n) into min(T, ceil(n/32768)) chunks of
//           ceil(n/chunks) (ParallelOpenMP.h invoke_parallel), each chunk is summed into buffer[thread], and the T
//           entries of the buffer (unused ones 0) are summed again by the same kernel. T = at::get_num_threads().
//   kernel  SumKernel.cpp cascade_sum, contiguous inner reduction of `size` elements:
//           n >= W (W = Vectorized<float>::size()): vectorized_inner_sum. The first floor(n/W)*W elements are
//             read as V = floor(n/W) vectors and summed by row_sum<Vectorized<float>>: multi_row_sum over R = V/4
//             rows of 4 vector accumulators with 4 cascade levels: with step = 2^max(4, ceil_log2(R)/4), every
//             `step` rows level 0 is added into level 1 (and zeroed), level 1 into level 2 when the row count is a
//             multiple of step^2, level 2 into level 3 at multiples of step^3; at the end the remaining rows go
//             into level 0 and levels 1, 2, 3 are added to it in turn. Then the V%4 leftover vectors go into
//             accumulator 0, and accumulators 1, 2, 3 are added to it. The scalar
//             tail x[V*W..n) is summed into a float starting at 0, then the W lanes are added to it in lane order.
//           n < W: scalar_outer_sum -> row_sum<float>: the same cascade with W = 1.
//           The result is stored as out += sum with out filled with 0.
//   W       Vectorized<float>::size() of the kernel torch runs. x86-64: 8 on every CPU. The DEFAULT and AVX2
//           builds have 8-float vectors, and SumKernel.cpp registers sum_stub with REGISTER_DISPATCH, which in the
//           AVX512 build registers nullptr (DispatchStub.h; only ALSO_REGISTER_AVX512_DISPATCH keeps the AVX512
//           kernel), so an AVX512 machine (torch.backends.cpu.get_cpu_capability() == "AVX512") runs the AVX2 sum.
//           Measured: on an AVX512 CPU, torch 2.15 equals W = 8 and not W = 16. aarch64 NEON: 4 (vec128).
//
// All arithmetic is lane-wise float32 adds in a fixed order, so plain scalar C++ (no -ffast-math) reproduces the
// SIMD result exactly. tests/reference/check_torch_mean.py checks it against the installed torch.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/check.hpp"

#if defined(__FAST_MATH__)
#error "quant/torch_reduce.hpp reproduces torch's float32 adds in their order; -ffast-math may reorder them"
#endif

namespace loralab::quant::torch_cpu {

/// How torch reduces: W (floats per Vectorized<float>) and T (intra-op threads, at::get_num_threads()).
struct reduce_config {
  int lanes = 8;    // 8: x86-64 (DEFAULT, AVX2 and AVX512 machines alike); 4: aarch64 NEON; 16 also supported
  int threads = 1;  // only matters from 32768 elements on
};

namespace detail {

inline constexpr std::int64_t grain_size = 32768;  // at::internal::GRAIN_SIZE

/// at::native::utils::CeilLog2.
inline std::int64_t ceil_log2(std::int64_t x) {
  return x <= 2 ? 1 : static_cast<std::int64_t>(std::bit_width(static_cast<std::uint64_t>(x) - 1));
}

/// row_sum<Vectorized<float> of W lanes> over `size` vectors at p (vector i at p + i*W), as SumKernel.cpp's
/// row_sum + multi_row_sum (ilp 4, 4 levels). W = 1 is the scalar row_sum<float>. Writes W lanes to out.
template <int W>
inline void row_sum(const float* p, std::int64_t size, float* out) {
  constexpr int ilp = 4, levels = 4;
  const std::int64_t rows = size / ilp;
  const std::int64_t level_power = std::max<std::int64_t>(4, ceil_log2(rows) / levels);
  const std::int64_t level_step = std::int64_t{1} << level_power, level_mask = level_step - 1;
  float acc[levels][ilp][W] = {};
  const auto add = [](float* a, const float* b) {
    for (int l = 0; l < W; ++l) a[l] += b[l];
  };
  std::int64_t i = 0;
  while (i + level_step <= rows) {
    for (std::int64_t j = 0; j < level_step; ++j, ++i)
      for (int k = 0; k < ilp; ++k) add(acc[0][k], p + (i * ilp + k) * W);
    for (int j = 1; j < levels; ++j) {
      for (int k = 0; k < ilp; ++k) {
        add(acc[j][k], acc[j - 1][k]);
        std::fill_n(acc[j - 1][k], W, 0.0f);
      }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < rows; ++i)
    for (int k = 0; k < ilp; ++k) add(acc[0][k], p + (i * ilp + k) * W);
  for (int j = 1; j < levels; ++j)
    for (int k = 0; k < ilp; ++k) add(acc[0][k], acc[j][k]);
  // row_sum: the vectors that do not fill a row of 4, then the 4 partial sums
  for (std::int64_t e = rows * ilp; e < size; ++e) add(acc[0][0], p + e * W);
  for (int k = 1; k < ilp; ++k) add(acc[0][0], acc[0][k]);
  std::copy_n(acc[0][0], W, out);
}

/// One call of cascade_sum's loop on a contiguous 1-d range, stored into an output that holds 0.
template <int W>
inline float cascade_sum(const float* x, std::int64_t n) {
  float sum = 0.0f;
  if (n >= W) {  // vectorized_inner_sum
    const std::int64_t vecs = n / W;
    float lanes[W];
    row_sum<W>(x, vecs, lanes);
    for (std::int64_t k = vecs * W; k < n; ++k) sum += x[k];
    for (int l = 0; l < W; ++l) sum += lanes[l];
  } else {  // scalar_outer_sum with one output: row_sum<float>
    row_sum<1>(x, n, &sum);
  }
  return 0.0f + sum;  // CastStoreAccumulate: *out += sum, out filled with 0
}

inline float cascade_sum(const float* x, std::int64_t n, int lanes) {
  LORALAB_CHECK(lanes == 4 || lanes == 8 || lanes == 16, "torch_cpu: ", lanes, " lanes; torch's are 4, 8 or 16");
  return lanes == 4 ? cascade_sum<4>(x, n) : lanes == 16 ? cascade_sum<16>(x, n) : cascade_sum<8>(x, n);
}

}  // namespace detail

/// torch.sum(x) for a contiguous float32 CPU tensor, `cfg.lanes` in {4, 8, 16}.
inline float sum(std::span<const float> x, reduce_config cfg) {
  const auto n = static_cast<std::int64_t>(x.size());
  const std::int64_t threads = std::max(1, cfg.threads);
  if (n < detail::grain_size || threads == 1) return detail::cascade_sum(x.data(), n, cfg.lanes);
  // two_pass_reduction: parallel_for(0, n, GRAIN_SIZE) chunks into buffer[thread], then a sum of the buffer
  const std::int64_t used = std::min(threads, (n + detail::grain_size - 1) / detail::grain_size);
  const std::int64_t chunk = (n + used - 1) / used;
  std::vector<float> buffer(static_cast<std::size_t>(threads), 0.0f);
  for (std::int64_t t = 0; t < used && t * chunk < n; ++t) {
    const std::int64_t begin = t * chunk, end = std::min(n, begin + chunk);
    buffer[static_cast<std::size_t>(t)] = detail::cascade_sum(x.data() + begin, end - begin, cfg.lanes);
  }
  return detail::cascade_sum(buffer.data(), threads, cfg.lanes);
}

/// torch.mean(x): the sum divided by float(n) (ReduceOps.cpp mean_out on the CPU).
inline float mean(std::span<const float> x, reduce_config cfg) {
  return sum(x, cfg) / static_cast<float>(x.size());
}

/// W of torch's float sum kernel on this architecture. x86-64: 8 on every machine. SumKernel.cpp registers
/// sum_stub with REGISTER_DISPATCH, which in the AVX512 build registers nullptr (DispatchStub.h), so an AVX512
/// CPU runs the AVX2 kernel (Vectorized<float> of 8); the DEFAULT kernel's generic Vectorized<float> is 32 bytes,
/// 8 floats, too. aarch64 (NEON, vec128): 4.
constexpr int default_lanes() {
#if defined(__aarch64__)
  return 4;
#else
  return 8;
#endif
}

namespace detail {
/// Physical cores (distinct package/core pairs in Linux sysfs, as cpuinfo counts them); elsewhere logical CPUs.
inline int physical_cores() {
#if defined(__linux__)
  std::set<std::pair<std::string, std::string>> cores;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/sys/devices/system/cpu", ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0 ||
        !std::all_of(name.begin() + 3, name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    std::ifstream pkg(e.path() / "topology" / "physical_package_id"), core(e.path() / "topology" / "core_id");
    std::string p, c;
    if (pkg >> p && core >> c) cores.emplace(p, c);
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
#endif
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

inline int env_threads(const char* var) {
  const char* env = std::getenv(var);
  const int t = env ? std::atoi(env) : 0;
  return t > 0 ? t : 0;
}
}  // namespace detail

/// torch's default intra-op thread count, at::get_num_threads() before any torch.set_num_threads():
/// ParallelCommon.cpp intraop_default_num_threads (MKL_NUM_THREADS, else OMP_NUM_THREADS, else the physical
/// cores). The x86-64 wheels are MKL builds, whose init_num_threads uses mkl_get_max_threads(): with MKL_DYNAMIC
/// (the default) that is capped at the physical cores (measured with torch 2.15: OMP_NUM_THREADS=6 on 2 cores
/// gives 2, with MKL_DYNAMIC=FALSE 6).
inline int default_threads() {
  const int cores = detail::physical_cores();
  int t = detail::env_threads("MKL_NUM_THREADS");
  if (t == 0) t = detail::env_threads("OMP_NUM_THREADS");
  if (t == 0) return cores;
#if defined(__x86_64__) || defined(_M_X64)
  const char* dyn = std::getenv("MKL_DYNAMIC");
  const bool dynamic = !(dyn && (dyn[0] == 'f' || dyn[0] == 'F' || dyn[0] == 'n' || dyn[0] == 'N' || dyn[0] == '0'));
  if (dynamic) t = std::min(t, cores);
#endif
  return t;
}

/// What torch uses on this machine by default; the cached result of the first call.
inline reduce_config default_config() {
  static const reduce_config cfg{default_lanes(), default_threads()};
  return cfg;
}

}  // namespace loralab::quant::torch_cpu

// SPDX-License-Identifier: MIT
#pragma once
// When a loop or a product is worth more than one thread. loralab's OpenMP threads wait passively (they sleep,
// core/startup_environment.hpp), so starting a parallel region wakes them: ~10-50 µs under a hypervisor. A small
// model's step is hundreds of small loops and products; run in parallel, the wake-ups cost more than the work
// (260K at 2 threads: 12.8 ms/step against 8.5 at one thread, measured on a Zen 4 VM). So loops under
// parallel_min_work element operations and BLAS products under serial_blas_macs multiply-adds run on the calling
// thread, and only big work wakes the others.
#include <cstddef>

#include <omp.h>

namespace loralab::core {

/// Element operations below which a loop runs on the calling thread (the `if` of its parallel region).
inline constexpr std::size_t parallel_min_work = std::size_t(1) << 18;

/// Whether a loop of `work` element operations is worth a parallel region.
inline bool worth_parallel(std::size_t work) { return work >= parallel_min_work; }

/// Multiply-adds below which a BLAS product runs on the calling thread. OpenBLAS's own rule (its OpenMP build)
/// threads any product over 2^18 multiply-adds, a few tens of microseconds of work.
inline constexpr double serial_blas_macs = double(std::size_t(1) << 22);

/// In its scope, BLAS calls run on one thread when the product (m·n·k multiply-adds) is below serial_blas_macs:
/// OpenBLAS's OpenMP build follows omp_get_max_threads() of the calling thread, which this sets to 1 and restores.
class serial_blas_if_small {
 public:
  serial_blas_if_small(double m, double n, double k) {
    if (m * n * k < serial_blas_macs && !omp_in_parallel() && (saved_ = omp_get_max_threads()) > 1) omp_set_num_threads(1);
    else saved_ = 0;
  }
  ~serial_blas_if_small() {
    if (saved_ > 1) omp_set_num_threads(saved_);
  }
  serial_blas_if_small(const serial_blas_if_small&) = delete;
  serial_blas_if_small& operator=(const serial_blas_if_small&) = delete;

 private:
  int saved_ = 0;
};

}  // namespace loralab::core

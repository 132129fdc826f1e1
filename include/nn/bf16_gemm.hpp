// SPDX-License-Identifier: MIT
#pragma once
// The bf16 GEMM behind compute<bf16> (nn/compute.hpp): C (M, N) [+]= A (M, K) · op(B), A and B bfloat16, C and the
// accumulation float32.
//
// With oneDNN (CMake LORALAB_ONEDNN, Debian's libdnnl-dev) the product is a oneDNN matmul primitive, created once per
// shape and kept: on a CPU with AVX512-BF16 oneDNN's JIT picks `brg:avx512_core_bf16` (two bf16 products per lane
// and instruction: 2.1x OpenBLAS's sgemm on an AMD EPYC Zen 4 at the shapes of a 30M step, 1 thread); elsewhere it
// picks what the CPU has. Where it has no bf16 matmul (Debian's 2.6 without AVX-512: AMD Zen 3), and without
// oneDNN, the operands are widened back to float and multiplied by the BLAS: the
// same bf16-rounded numbers, no speed-up (bf16_gemm_backend() says which).
//
// Layouts: row-major with leading dimensions; B is (K, N), or with b_transposed the (N, K) rows of a weight W,
// so that x · Wᵀ needs no copy. Conversions round to nearest even (as torch's .to(bfloat16)); NaN stays NaN.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/bf16.hpp"
#include "nn/tensor.hpp"

#ifdef LORALAB_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace loralab::nn {

/// The bits of a bfloat16 (round to nearest even; NaN kept quiet): core/bf16.hpp's, shared with the CUDA kernels.
using core::bf16_bits;
using core::bf16_to_float;

/// out[i] = bf16(in[i]) for n elements; in parallel for large n, vectorized.
inline void to_bf16(const float* __restrict in, std::uint16_t* __restrict out, std::int64_t n) {
  constexpr std::int64_t chunk = 1 << 15;
#pragma omp parallel for schedule(static) if (n > 2 * chunk)
  for (std::int64_t c = 0; c < n; c += chunk) {
    const std::int64_t end = std::min(n, c + chunk);
#pragma omp simd
    for (std::int64_t i = c; i < end; ++i) out[i] = bf16_bits(in[i]);
  }
}

namespace detail {
/// The product without a bf16 GEMM: the bf16 operands widened to float (exactly) and multiplied by the BLAS.
inline void gemm_bf16_widened(std::int64_t M, std::int64_t N, std::int64_t K, const std::uint16_t* A, std::int64_t lda,
                              const std::uint16_t* B, std::int64_t ldb, bool b_transposed, float* C, std::int64_t ldc,
                              bool accumulate) {
  matrix<float> a(M, K), b(K, N);
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t l = 0; l < K; ++l) a(i, l) = bf16_to_float(A[i * lda + l]);
  for (std::int64_t l = 0; l < K; ++l)
    for (std::int64_t j = 0; j < N; ++j) b(l, j) = bf16_to_float(b_transposed ? B[j * ldb + l] : B[l * ldb + j]);
  Eigen::Map<matrix<float>, 0, Eigen::OuterStride<>> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (accumulate) c.noalias() += a * b;
  else c.noalias() = a * b;
}

#ifdef LORALAB_HAVE_ONEDNN
/// Whether oneDNN has a bf16 matmul on this CPU: Debian's oneDNN 2.6 has none without AVX-512 (an AMD Zen 3, say),
/// and refuses to create the primitive ("could not create a primitive descriptor iterator").
inline bool onednn_has_bf16_matmul() {
  static const bool has = [] {
    try {
      using namespace dnnl;
      const engine eng(engine::kind::cpu, 0);
      const memory::desc a({1, 1}, memory::data_type::bf16, memory::format_tag::ab);
      const memory::desc c({1, 1}, memory::data_type::f32, memory::format_tag::ab);
      (void)matmul::primitive_desc(matmul::desc(a, a, c), eng);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}
#endif
}  // namespace detail

/// Which library runs bf16 products here.
inline std::string bf16_gemm_backend() {
#ifdef LORALAB_HAVE_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  const std::string onednn = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  if (!detail::onednn_has_bf16_matmul())
    return "none (" + onednn + " has no bf16 matmul on this CPU: bf16 operands widened to float, BLAS sgemm)";
  return onednn;
#else
  return "none (built without oneDNN: bf16 operands widened to float, BLAS sgemm)";
#endif
}

/// C[i·ldc + j] (+)= Σₖ A[i·lda + k] · B(k, j), B(k, j) = b_transposed ? B[j·ldb + k] : B[k·ldb + j].
inline void gemm_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const std::uint16_t* A, std::int64_t lda, const std::uint16_t* B,
                      std::int64_t ldb, bool b_transposed, float* C, std::int64_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
#ifdef LORALAB_HAVE_ONEDNN
  if (!detail::onednn_has_bf16_matmul()) return detail::gemm_bf16_widened(M, N, K, A, lda, B, ldb, b_transposed, C, ldc, accumulate);
  using namespace dnnl;
  using key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool, bool>;
  struct cached {
    memory::desc a, b, c, scratch;
    matmul prim;
  };
  static engine eng(engine::kind::cpu, 0);
  static std::map<key, cached> primitives;  // a few shapes per model: created once (milliseconds each), run every step
  static std::mutex lock;
  const key k{M, N, K, lda, ldb, ldc, b_transposed, accumulate};
  std::unique_lock guard(lock);
  auto it = primitives.find(k);
  if (it == primitives.end()) {
    const memory::desc a({M, K}, memory::data_type::bf16, memory::dims{lda, 1});
    const memory::desc b({K, N}, memory::data_type::bf16, b_transposed ? memory::dims{1, ldb} : memory::dims{ldb, 1});
    const memory::desc c({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
    primitive_attr attr;
    // The scratchpad is the caller's, not the library's global one: model replicas (train/trainer.hpp) run the same
    // primitive from several threads at once.
    attr.set_scratchpad_mode(scratchpad_mode::user);
    if (accumulate) {
      post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const matmul::primitive_desc pd(matmul::desc(a, b, c), attr, eng);
    it = primitives.emplace(k, cached{a, b, c, pd.scratchpad_desc(), matmul(pd)}).first;
  }
  const cached& p = it->second;
  guard.unlock();
  thread_local std::vector<unsigned char> scratch;  // this thread's, grown to the largest shape it ran
  if (scratch.size() < p.scratch.get_size()) scratch.resize(p.scratch.get_size());
  stream s(eng);
  p.prim.execute(s, {{DNNL_ARG_SRC, memory(p.a, eng, const_cast<std::uint16_t*>(A))},
                     {DNNL_ARG_WEIGHTS, memory(p.b, eng, const_cast<std::uint16_t*>(B))},
                     {DNNL_ARG_DST, memory(p.c, eng, C)},
                     {DNNL_ARG_SCRATCHPAD, memory(p.scratch, eng, scratch.data())}});
  s.wait();
#else
  detail::gemm_bf16_widened(M, N, K, A, lda, B, ldb, b_transposed, C, ldc, accumulate);
#endif
}

}  // namespace loralab::nn

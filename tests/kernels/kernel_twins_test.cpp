// SPDX-License-Identifier: MIT
// The 4-bit GEMV, fused LoRA and tiled attention kernels' arithmetic (kernels/gemv_4bit_lane.hpp,
// kernels/lora_fused_threads.hpp, kernels/attention_tiled_row.hpp) run on the CPU in the kernels' own order — lane by lane, thread by thread, the warp's and the block's trees, the
// dA chunks — against plain references: their indexing, nibble order and dropout mask are tested on every machine.
// Where a device exists, each kernel against its twin bit for bit (cuBLAS parts within 1e-5 relative), and the bf16
// frozen linear against a CPU product of the same bf16-rounded operands (1e-5: float32 sums in another order).
#include <cstdint>
#include <cstring>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/bf16.hpp"
#include "attention_tiled.cuh"
#include "attention_tiled_row.hpp"
#include "gemv_4bit.cuh"
#include "gemv_4bit_lane.hpp"
#include "kernel_test_support.hpp"
#include "linear_bf16.cuh"
#include "lora/lora_linear.hpp"
#include "lora_fused.cuh"
#include "lora_fused_threads.hpp"
#include "nn/attention.hpp"
#include "quant/blockwise_tensor.hpp"

using namespace loralab::kernel_testing;
namespace cu = loralab::cuda;

namespace {

/// A weight (N, K) quantized by the CPU reference, and its dequantized floats.
template <class S>
struct quantized_weight {
  std::vector<std::uint8_t> codes;
  std::vector<float> absmax, values;
  quantized_weight(int N, int K, std::uint64_t salt) : values(std::size_t(N) * K) {
    const auto q = loralab::quant::blockwise_tensor<S>::template quantize_ref<float>(normal_values(values.size(), salt, 0.02f), {N, K});
    codes.assign(q.codes().begin(), q.codes().end());
    absmax.assign(q.absmax().begin(), q.absmax().end());
    q.template dequantize_ref<float>(values);
  }
};

template <bool NF4>
std::vector<float> gemv_twin(const std::vector<std::uint8_t>& codes, const std::vector<float>& absmax, int N, int K, int block,
                             const std::vector<float>& x) {
  std::vector<std::uint32_t> words(codes.size() / 4);
  std::memcpy(words.data(), codes.data(), words.size() * 4);
  std::vector<float> y(N);
  for (int n = 0; n < N; ++n) {
    const std::uint64_t first = std::uint64_t(n) * K;
    float partial[cu::gemv_lanes];
    for (int lane = 0; lane < cu::gemv_lanes; ++lane)
      partial[lane] = cu::gemv_4bit_lane<NF4>(words.data() + first / 8, absmax.data(), first, K, block, x.data(), lane);
    y[n] = cu::warp_sum_twin(partial);
  }
  return y;
}

/// h (M, r) as lora_down_kernel computes it: each row's 128 thread partials, then the block's tree.
std::vector<float> lora_down_twin(const fmat& x, const fmat& A, int r, const cu::lora_drop& d) {
  constexpr int T = cu::lora_down_threads, R = 64;
  const int M = int(x.rows()), K = int(x.cols());
  std::vector<float> h(std::size_t(M) * r), s(std::size_t(r) * T);
  for (int m = 0; m < M; ++m) {
    for (int t = 0; t < T; ++t) {
      float partial[R];
      cu::lora_down_thread<R>(x.data(), A.data(), K, r, m, t, T, d, partial);
      for (int j = 0; j < r; ++j) s[std::size_t(j) * T + t] = partial[j];
    }
    for (int o = T / 2; o > 0; o /= 2)
      for (int j = 0; j < r; ++j)
        for (int t = 0; t < T; ++t) cu::tree_step(s.data() + std::size_t(j) * T, t, o);
    for (int j = 0; j < r; ++j) h[std::size_t(m) * r + j] = s[std::size_t(j) * T];
  }
  return h;
}

/// dA (r, K) += the chunks' partials in chunk order, as lora_dA_kernel + add_chunks_kernel.
std::vector<float> lora_dA_twin(const fmat& x, const std::vector<float>& dh, int r, const cu::lora_drop& d, std::vector<float> dA) {
  constexpr int R = 64;
  const int M = int(x.rows()), K = int(x.cols()), chunks = (M + cu::lora_dA_chunk - 1) / cu::lora_dA_chunk;
  std::vector<float> part(std::size_t(chunks) * r * K);
  for (int c = 0; c < chunks; ++c)
    for (int k = 0; k < K; ++k) {
      float partial[R];
      cu::lora_dA_thread<R>(x.data(), dh.data(), K, r, k, c * cu::lora_dA_chunk, std::min(M, (c + 1) * cu::lora_dA_chunk), d, partial);
      for (int j = 0; j < r; ++j) part[(std::size_t(c) * r + j) * K + k] = partial[j];
    }
  for (std::size_t i = 0; i < dA.size(); ++i) {
    float s = 0.0f;
    for (int c = 0; c < chunks; ++c) s += part[std::size_t(c) * dA.size() + i];
    dA[i] += s;
  }
  return dA;
}

std::vector<float> lora_dx_twin(const std::vector<float>& dh, const fmat& A, int r, const cu::lora_drop& d, std::vector<float> dx) {
  const int K = int(A.cols());
  for (std::size_t i = 0; i < dx.size(); ++i) dx[i] += cu::dropped_value(d, i, cu::lora_dx_element(dh.data(), A.data(), K, r, int(i / K), int(i % K)));
  return dx;
}

/// The CPU's LoRA formulas in Eigen over the CPU's own mask (lora_linear's apply_dropout_mask).
struct lora_reference {
  fmat xd, h, dA, dx;
  lora_reference(const fmat& x, const fmat& A, const fmat& dh, const fmat& dx0, double p, std::uint64_t seed, std::uint64_t first) : xd(x) {
    const float keep = float(1.0 / (1.0 - p));
    if (p > 0) loralab::lora::apply_dropout_mask<false>(x.data(), xd.data(), 0, x.size(), seed, loralab::lora::drop_threshold(p), keep, first);
    h = xd * A.transpose();
    dA = dh.transpose() * xd;
    const fmat g = dh * A;
    dx = dx0;
    if (p > 0) loralab::lora::apply_dropout_mask<true>(g.data(), dx.data(), 0, g.size(), seed, loralab::lora::drop_threshold(p), keep, first);
    else dx += g;
  }
};


/// out (B·T, H·D) as attention_tiled_kernel computes it: each row's online softmax over the 16-key tiles of keys ≤ t.
std::vector<float> attention_tiled_twin(const cu::attention_dims& a, const fmat& q, const fmat& k, const fmat& v) {
  const int T = a.seq, H = a.heads, D = a.head_dim, group = a.heads / a.kv_heads;
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<float> out(std::size_t(q.size()));
  for (int b = 0; b < a.batch; ++b)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) {
        float m = -INFINITY, l = 0.0f, acc[cu::tiled_max_head_dim];
        for (float& x : acc) x = 0.0f;
        const float* qr = q.data() + (std::size_t(b) * T + t) * q.cols() + std::size_t(h) * D;
        for (int j0 = 0; j0 <= t; j0 += cu::tiled_keys) {
          const std::size_t first = (std::size_t(b) * T + j0) * k.cols() + std::size_t(h / group) * D;
          cu::online_softmax_tile<cu::tiled_max_head_dim>(qr, 1, k.data() + first, v.data() + first, int(k.cols()),
                                                          std::min(cu::tiled_keys, t - j0 + 1), D, scale, m, l, acc);
        }
        for (int d = 0; d < D; ++d) out[(std::size_t(b) * T + t) * q.cols() + std::size_t(h) * D + d] = acc[d] / l;
      }
  return out;
}

/// nn::attention_forward's out for the same shape.
fmat attention_reference(const cu::attention_dims& a, const fmat& q, const fmat& k, const fmat& v) {
  fmat probs, out;
  loralab::nn::attention_forward(loralab::nn::attention_shape{a.batch, a.seq, a.heads, a.kv_heads, a.head_dim}, q, k, v, probs, out);
  return out;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(kernel_twins_on_the_cpu)

// The GEMV's lanes and warp tree against y = dequant(W) · x in double, nf4 and fp4, blocks 64 and 32; K = 2056 is
// 257 words (lanes get 8 or 9), N = 37 rows (a part-filled last CUDA block).
BOOST_AUTO_TEST_CASE(gemv_4bit_twin_is_the_dequantized_product) {
  const int N = 37, K = 2056;
  const auto x = normal_values(K, 701, 1.0f);
  const auto check = [&](const auto& w, const std::vector<float>& y, const char* what) {
    std::vector<float> ref(N);
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(w.values[std::size_t(n) * K + k]) * double(x[k]);
      ref[n] = float(s);
    }
    BOOST_TEST(relative_error(y, ref.data(), N) < 1e-5, what);
  };
  const quantized_weight<loralab::quant::nf4<64>> nf4(N, K, 702);
  check(nf4, gemv_twin<true>(nf4.codes, nf4.absmax, N, K, 64, x), "nf4, block 64");
  const quantized_weight<loralab::quant::fp4<32>> fp4(N, K, 703);
  check(fp4, gemv_twin<false>(fp4.codes, fp4.absmax, N, K, 32, x), "fp4, block 32");
}

// h, dA and dx of the fused kernels' threads against the CPU's formulas over the CPU's mask: M = 150 rows (a part
// chunk of 64), K = 200 (threads past K), ranks 8 and 12 (< R), dropout 0.1 and none, a mask offset (first ≠ 0).
BOOST_AUTO_TEST_CASE(fused_lora_twins_are_the_cpu_adapter) {
  const int M = 150, K = 200;
  for (const int r : {8, 12})
    for (const double p : {0.1, 0.0}) {
      const std::uint64_t seed = 0xC0FFEEull + r, first = 3 * 200;
      const cu::lora_drop d = cu::make_lora_drop(p, seed, first);
      const fmat x = random_matrix(M, K, 710 + r), A = random_matrix(r, K, 711, 0.05f), dh = random_matrix(M, r, 712);
      const fmat dA0 = random_matrix(r, K, 713, 0.01f), dx0 = random_matrix(M, K, 714, 0.01f);
      const lora_reference ref(x, A, dh, dx0, p, seed, first);
      const auto h = lora_down_twin(x, A, r, d);
      const auto dA = lora_dA_twin(x, values_of(dh), r, d, values_of(dA0));
      const auto dx = lora_dx_twin(values_of(dh), A, r, d, values_of(dx0));
      BOOST_TEST(relative_error(h, ref.h.data(), ref.h.size()) < 1e-5, "h r " << r << " p " << p);
      const fmat dA_ref = dA0 + ref.dA;
      BOOST_TEST(relative_error(dA, dA_ref.data(), dA_ref.size()) < 1e-5, "dA r " << r << " p " << p);
      BOOST_TEST(relative_error(dx, ref.dx.data(), ref.dx.size()) < 1e-5, "dx r " << r << " p " << p);
    }
}

// The tiled attention's online softmax over 16-key tiles against nn::attention_forward: T = 70 (a part tile and a
// part block of 32 rows), 6 query heads over 2 kv heads, head_dim 40 (under the kernel's 64).
BOOST_AUTO_TEST_CASE(tiled_attention_twin_is_the_cpu_attention) {
  const cu::attention_dims a{2, 70, 6, 2, 40};
  const fmat q = random_matrix(a.batch * a.seq, a.heads * a.head_dim, 750), k = random_matrix(a.batch * a.seq, a.kv_heads * a.head_dim, 751);
  const fmat v = random_matrix(a.batch * a.seq, a.kv_heads * a.head_dim, 752);
  const fmat ref = attention_reference(a, q, k, v);
  BOOST_TEST(relative_error(attention_tiled_twin(a, q, k, v), ref.data(), ref.size()) < 1e-5);
}

// The limits are refused before any launch, so this runs without a device too.
BOOST_AUTO_TEST_CASE(kernel_limits_are_refused) {
  const cu::weight_4bit odd{cu::code4::nf4, 64, nullptr, nullptr, 4, 12};
  BOOST_TEST(cu::gemv_4bit(odd, nullptr, nullptr) == cudaErrorInvalidValue, "K % 8 != 0");
  BOOST_TEST(cu::lora_forward_fused(nullptr, nullptr, 4, 8, 8, 65, nullptr, nullptr, 1.0f, {}, nullptr, nullptr) == cudaErrorInvalidValue,
             "r > 64");
  BOOST_TEST(cu::lora_backward_fused(nullptr, nullptr, nullptr, 4, 8, 8, 0, nullptr, nullptr, 1.0f, {}, nullptr, nullptr, nullptr, nullptr,
                                     nullptr) == cudaErrorInvalidValue,
             "r = 0");
  BOOST_TEST(cu::attention_forward_tiled({1, 4, 2, 2, 160}, nullptr, nullptr, nullptr, nullptr) == cudaErrorInvalidValue, "head_dim > 128");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(kernel_twins_on_the_device, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(gemv_4bit_is_its_twin_bit_for_bit) {
  const int N = 4099, K = 1376;
  const auto x = normal_values(K, 720, 1.0f);
  const quantized_weight<loralab::quant::nf4<64>> w(N, K, 721);
  std::uint8_t* codes = device_copy(w.codes);
  float *absmax = device_copy(w.absmax), *dx = device_copy(x), *dy = nullptr;
  cudaMalloc(&dy, std::size_t(N) * 4);
  BOOST_TEST_REQUIRE(cu::gemv_4bit({cu::code4::nf4, 64, codes, absmax, N, K}, dx, dy) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto twin = gemv_twin<true>(w.codes, w.absmax, N, K, 64, x);
  BOOST_TEST(std::memcmp(host_copy(dy, N).data(), twin.data(), std::size_t(N) * 4) == 0);
  for (void* p : {(void*)codes, (void*)absmax, (void*)dx, (void*)dy}) cudaFree(p);
}

// Forward and backward of the fused adapter: h, dA, dx against the twins bit for bit (over the device's dh, a cuBLAS
// product), y, dh, dB against Eigen within 1e-5.
BOOST_AUTO_TEST_CASE(fused_lora_is_its_twin_bit_for_bit) {
  const int M = 300, K = 520, N = 264, r = 16;
  const double p = 0.05;
  const float s = 2.0f;
  const loralab::cuda::dropout_mask drop{p, 0xBEEFull, 1024};
  const cu::lora_drop d = cu::make_lora_drop(p, drop.seed, drop.first);
  const fmat x = random_matrix(M, K, 730), A = random_matrix(r, K, 731, 0.05f), B = random_matrix(N, r, 732, 0.05f);
  const fmat y0 = random_matrix(M, N, 733), dy = random_matrix(M, N, 734), dx0 = random_matrix(M, K, 735, 0.01f);
  float *gx = device_copy(values_of(x)), *gA = device_copy(values_of(A)), *gB = device_copy(values_of(B)), *gy = device_copy(values_of(y0));
  float *gdy = device_copy(values_of(dy)), *gdx = device_copy(values_of(dx0)), *gh = nullptr, *gdh = nullptr;
  float *gdA = device_copy(std::vector<float>(A.size(), 0.0f)), *gdB = device_copy(std::vector<float>(B.size(), 0.0f));
  cudaMalloc(&gh, std::size_t(M) * r * 4), cudaMalloc(&gdh, std::size_t(M) * r * 4);
  cublasHandle_t h = nullptr;
  BOOST_TEST_REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  BOOST_TEST_REQUIRE(cu::lora_forward_fused(h, gx, M, K, N, r, gA, gB, s, drop, gh, gy) == cudaSuccess);
  BOOST_TEST_REQUIRE(cu::lora_backward_fused(h, gx, gdy, M, K, N, r, gA, gB, s, drop, gh, gdh, gdA, gdB, gdx) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto hd = host_copy(gh, std::size_t(M) * r), dhd = host_copy(gdh, std::size_t(M) * r);
  const auto h_twin = lora_down_twin(x, A, r, d);
  BOOST_TEST(std::memcmp(hd.data(), h_twin.data(), hd.size() * 4) == 0, "h");
  BOOST_TEST(host_copy(gdA, A.size()) == lora_dA_twin(x, dhd, r, d, std::vector<float>(A.size(), 0.0f)), "dA");
  BOOST_TEST(host_copy(gdx, dx0.size()) == lora_dx_twin(dhd, A, r, d, values_of(dx0)), "dx");
  const fmat hm = Eigen::Map<const fmat>(h_twin.data(), M, r), y_ref = y0 + s * (hm * B.transpose());
  const fmat dh_ref = s * (dy * B), dB_ref = s * (dy.transpose() * hm);
  BOOST_TEST(relative_error(host_copy(gy, y0.size()), y_ref.data(), y_ref.size()) < 1e-5, "y");
  BOOST_TEST(relative_error(dhd, dh_ref.data(), dh_ref.size()) < 1e-5, "dh");
  BOOST_TEST(relative_error(host_copy(gdB, B.size()), dB_ref.data(), dB_ref.size()) < 1e-5, "dB");
  for (void* q : {(void*)gx, (void*)gA, (void*)gB, (void*)gy, (void*)gdy, (void*)gdx, (void*)gh, (void*)gdh, (void*)gdA, (void*)gdB}) cudaFree(q);
  cublasDestroy(h);
}

// The tiled attention kernel against the CPU's attention: head_dim 40 (the 64 instance) and 80 (the 128 one), T = 300.
BOOST_AUTO_TEST_CASE(tiled_attention_matches_the_cpu) {
  for (const int D : {40, 80}) {
    const cu::attention_dims a{2, 300, 4, 2, D};
    const fmat q = random_matrix(a.batch * a.seq, a.heads * D, 760 + D), k = random_matrix(a.batch * a.seq, a.kv_heads * D, 761 + D);
    const fmat v = random_matrix(a.batch * a.seq, a.kv_heads * D, 762 + D);
    const fmat ref = attention_reference(a, q, k, v);
    float *gq = device_copy(values_of(q)), *gk = device_copy(values_of(k)), *gv = device_copy(values_of(v)), *go = nullptr;
    cudaMalloc(&go, std::size_t(q.size()) * 4);
    BOOST_TEST_REQUIRE(cu::attention_forward_tiled(a, gq, gk, gv, go) == cudaSuccess);
    BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    BOOST_TEST(relative_error(host_copy(go, std::size_t(q.size())), ref.data(), ref.size()) < 1e-5, "head_dim " << D);
    for (void* p : {(void*)gq, (void*)gk, (void*)gv, (void*)go}) cudaFree(p);
  }
}

// bf16 operands, float32 accumulation: y = bf16(x) · bf16(W)ᵀ and dx = bf16(dy) · bf16(W) against Eigen over the same
// rounded values (W's through dequantize then round, as dequantize_4bit_bf16), 128-row tiles with a partial last one.
BOOST_AUTO_TEST_CASE(bf16_frozen_linear_matches_the_rounded_cpu_product) {
  const int M = 64, K = 512, N = 1376, tile_rows = 128;
  const quantized_weight<loralab::quant::nf4<64>> w(N, K, 740);
  const auto round = [](fmat m) {
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = loralab::core::bf16_to_float(loralab::core::bf16_bits(m.data()[i]));
    return m;
  };
  const fmat x = random_matrix(M, K, 741), dy = random_matrix(M, N, 742), W = round(Eigen::Map<const fmat>(w.values.data(), N, K));
  const fmat y_ref = round(x) * W.transpose(), dx_ref = round(dy) * W;
  std::uint8_t* codes = device_copy(w.codes);
  float *absmax = device_copy(w.absmax), *gx = device_copy(values_of(x)), *gdy = device_copy(values_of(dy)), *gy = nullptr, *gdx = nullptr;
  std::uint16_t *xb = nullptr, *dyb = nullptr, *tile = nullptr;
  cudaMalloc(&gy, std::size_t(M) * N * 4), cudaMalloc(&gdx, std::size_t(M) * K * 4), cudaMalloc(&xb, std::size_t(M) * K * 2);
  cudaMalloc(&dyb, std::size_t(M) * N * 2), cudaMalloc(&tile, std::size_t(tile_rows) * K * 2);
  cublasHandle_t h = nullptr;
  BOOST_TEST_REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  const cu::weight_4bit wd{cu::code4::nf4, 64, codes, absmax, N, K};
  BOOST_TEST_REQUIRE(cu::frozen_linear_forward_bf16(h, wd, gx, M, gy, xb, tile, tile_rows) == cudaSuccess);
  BOOST_TEST_REQUIRE(cu::frozen_linear_backward_bf16(h, wd, gdy, M, gdx, dyb, tile, tile_rows) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(gy, y_ref.size()), y_ref.data(), y_ref.size()) < 1e-5, "y");
  BOOST_TEST(relative_error(host_copy(gdx, dx_ref.size()), dx_ref.data(), dx_ref.size()) < 1e-5, "dx");
  for (void* q : {(void*)codes, (void*)absmax, (void*)gx, (void*)gdy, (void*)gy, (void*)gdx, (void*)xb, (void*)dyb, (void*)tile}) cudaFree(q);
  cublasDestroy(h);
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
/// \file cuda_bench.cpp
/// \brief What do the CUDA kernels cost next to the device's own ceilings, measured in one run?
///
///   - 4-bit dequantize (nf4, block 64) in GB/s (codes + absmax read, floats written) next to a device-to-device
///     cudaMemcpy of the same float bytes;
///   - the frozen 4-bit linear (dequantize tiles + GEMM, kernels/linear.cuh, linear_bf16.cuh) in TFLOP/s next to
///     plain cuBLAS over a dense weight of the same type: float32 SGEMM and bf16 GemmEx (float32 accumulation), at
///     the 30M model's shapes (M = B·T = 1024; 512 → 512, 512 → 1376, 1376 → 512) and a 7B layer's (4096 → 4096,
///     4096 → 11008), with 128-row tiles and with the whole weight as one tile;
///   - LoRA r 8 forward + backward: the four SGEMMs + mask passes of linear.cuh against the fused passes of
///     lora_fused.cuh, dropout 0.05 and 0, each as a share of the frozen layer's forward + backward;
///   - one-token generation's linear: the 4-bit GEMV reading packed codes (gemv_4bit.cuh) in GB/s next to
///     dequantize + cublasSgemv and a float32 cublasSgemv over the dense weight (7B shapes and a 32000-row head);
///   - causal attention forward: cuBLAS batched SGEMMs + softmax (what training runs) against the tiled kernel, T 256 … 2048;
///   - a whole 30M step (forward + loss + backward) on the device model (cuda/device_model.hpp): tokens/s of LoRA over
///     float32 and of QLoRA over nf4 + DQ, with and without gradient checkpointing.
/// Timing: CUDA events, the median of 20 runs after 3 warm-ups; cuBLAS in pedantic float math (no TF32), as the tests.
/// Without a device it says so and exits 0 (CI builds it; a GPU session runs it).
///   build/bench/cuda_bench
#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/device_model.hpp"
#include "attention.cuh"
#include "attention_tiled.cuh"
#include "gemv_4bit.cuh"
#include "linear.cuh"
#include "linear_bf16.cuh"
#include "lora_fused.cuh"
#include "lora/lora.hpp"
#include "nn/random_model.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant_4bit.cuh"
#include "quant_8bit.cuh"

namespace {

/// Median milliseconds of f over 20 timed runs.
double median_ms(const std::function<void()>& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/// Device buffers of one measurement, freed together.
struct arena {
  std::vector<void*> held;
  template <class T>
  T* alloc(std::size_t n) {
    void* p = nullptr;
    cudaMalloc(&p, n * sizeof(T) + 1);
    cudaMemset(p, 0, n * sizeof(T) + 1);
    held.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  T* copy(const std::vector<T>& h) {
    T* p = alloc<T>(h.size());
    cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return p;
  }
  ~arena() {
    for (void* p : held) cudaFree(p);
  }
};

using nf4 = loralab::quant::nf4<64>;
namespace cu = loralab::cuda;

std::vector<float> normal_floats(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

/// A weight (N, K): nf4 codes and absmax, and the dense floats, on the device.
struct device_weight {
  cu::weight_4bit q;
  float* dense = nullptr;
  device_weight(arena& a, int N, int K, std::mt19937& rng) {
    const auto w = normal_floats(std::size_t(N) * K, rng);
    const auto qw = loralab::quant::blockwise_tensor<nf4>::quantize<float>(w, {N, K});
    q = {cu::code4::nf4, 64, a.copy(std::vector<std::uint8_t>(qw.codes().begin(), qw.codes().end())),
         a.copy(std::vector<float>(qw.absmax().begin(), qw.absmax().end())), N, K};
    dense = a.copy(w);
  }
};

void dequantize_vs_copy(std::mt19937& rng) {
  arena a;
  const std::size_t n = std::size_t(1) << 26;  // 64M weights
  const device_weight w(a, 1 << 13, 1 << 13, rng);
  auto* out = a.alloc<float>(n);
  const double deq = median_ms([&] { cu::dequantize_4bit(cu::code4::nf4, 64, w.q.codes, w.q.absmax, n, out); });
  const double copy = median_ms([&] { cudaMemcpy(out, w.dense, n * 4, cudaMemcpyDeviceToDevice); });
  const double deq_bytes = double(n / 2 + n / 64 * 4 + n * 4), copy_bytes = 2.0 * n * 4;
  std::printf("| operation | ms | GB/s | ÷ copy |\n|---|--:|--:|--:|\n");
  std::printf("| nf4 dequantize, %zu M weights | %.3f | %.0f | %.2f |\n", n >> 20, deq, deq_bytes / deq / 1e6, (deq_bytes / deq) / (copy_bytes / copy));
  std::printf("| cudaMemcpy D2D, same floats | %.3f | %.0f | 1.00 |\n\n", copy, copy_bytes / copy / 1e6);
}

/// The frozen linear in float32 and bf16 against dense cuBLAS, and LoRA fused vs unfused against the frozen layer.
void frozen_linear_and_lora(cublasHandle_t h, std::mt19937& rng) {
  std::printf("| shape M x K -> N | SGEMM TFLOP/s | frozen nf4 fp32: 128-row tiles, one tile | ÷ SGEMM | bf16 GEMM TFLOP/s | frozen nf4 bf16: tiles, one | ÷ bf16 GEMM |\n");
  std::printf("|---|--:|--:|--:|--:|--:|--:|\n");
  std::vector<std::string> lora_rows;
  const int M = 1024, r = 8;
  for (const auto& [K, N] : {std::pair{512, 512}, std::pair{512, 1376}, std::pair{1376, 512}, std::pair{4096, 4096}, std::pair{4096, 11008}}) {
    arena a;
    const device_weight w(a, N, K, rng);
    auto *x = a.alloc<float>(std::size_t(M) * K), *y = a.alloc<float>(std::size_t(M) * N), *tile = a.alloc<float>(std::size_t(N) * K);
    auto *dy = a.alloc<float>(std::size_t(M) * N), *dx = a.alloc<float>(std::size_t(M) * K);
    auto *wb = a.alloc<std::uint16_t>(std::size_t(N) * K), *xb = a.alloc<std::uint16_t>(std::size_t(M) * K);
    auto* tileb = a.alloc<std::uint16_t>(std::size_t(N) * K);
    cu::to_bf16(w.dense, std::size_t(N) * K, wb);
    const double sgemm = median_ms([&] { cu::gemm_rm(h, false, true, M, N, K, 1.0f, x, K, w.dense, K, 0.0f, y, N); });
    const double tiles = median_ms([&] { cu::frozen_linear_forward(h, w.q, x, M, y, tile, 128); });
    const double whole = median_ms([&] { cu::frozen_linear_forward(h, w.q, x, M, y, tile, N); });
    const double bgemm = median_ms([&] { cu::gemm_rm_bf16(h, false, true, M, N, K, 1.0f, xb, K, wb, K, 0.0f, y, N); });
    const double btiles = median_ms([&] { cu::frozen_linear_forward_bf16(h, w.q, x, M, y, xb, tileb, 128); });
    const double bwhole = median_ms([&] { cu::frozen_linear_forward_bf16(h, w.q, x, M, y, xb, tileb, N); });
    const double tf = 2.0 * M * K * N / 1e9;
    std::printf("| %d x %d -> %d | %.2f | %.2f, %.2f | %.2f, %.2f | %.2f | %.2f, %.2f | %.2f, %.2f |\n", M, K, N, tf / sgemm, tf / tiles,
                tf / whole, sgemm / tiles, sgemm / whole, tf / bgemm, tf / btiles, tf / bwhole, bgemm / btiles, bgemm / bwhole);

    auto *A = a.alloc<float>(std::size_t(r) * K), *B = a.alloc<float>(std::size_t(N) * r), *xd = a.alloc<float>(std::size_t(M) * K);
    auto *hb = a.alloc<float>(std::size_t(M) * r), *dh = a.alloc<float>(std::size_t(M) * r), *g = a.alloc<float>(std::size_t(M) * K);
    auto *dA = a.alloc<float>(std::size_t(r) * K), *dB = a.alloc<float>(std::size_t(N) * r);
    const double base = median_ms([&] {
      cu::frozen_linear_forward(h, w.q, x, M, y, tile, N);
      cu::frozen_linear_backward(h, w.q, dy, M, dx, tile, N);
    });
    char row[256];
    int len = std::snprintf(row, sizeof row, "| %d x %d -> %d", M, K, N);
    for (const double p : {0.05, 0.0}) {
      const cu::dropout_mask drop{p, 1, 0};
      const double unfused = median_ms([&] {
        cu::lora_forward(h, x, M, K, N, r, A, B, 2.0f, drop, xd, hb, y);
        cu::lora_backward(h, x, dy, M, K, N, r, A, B, 2.0f, drop, xd, hb, dh, g, dA, dB, dx);
      });
      const double fused = median_ms([&] {
        cu::lora_forward_fused(h, x, M, K, N, r, A, B, 2.0f, drop, hb, y);
        cu::lora_backward_fused(h, x, dy, M, K, N, r, A, B, 2.0f, drop, hb, dh, dA, dB, dx);
      });
      len += std::snprintf(row + len, sizeof row - len, " | %.3f, %.3f | %.2f, %.2f | %.2f", unfused, fused, unfused / base, fused / base,
                           unfused / fused);
    }
    lora_rows.push_back(std::string(row) + " |");
  }
  std::printf("\n| LoRA r 8 fwd+bwd, shape | dropout 0.05: ms unfused, fused | ÷ frozen fwd+bwd | unfused ÷ fused | dropout 0: ms | ÷ frozen | unfused ÷ fused |\n");
  std::printf("|---|--:|--:|--:|--:|--:|--:|\n");
  for (const auto& row : lora_rows) std::printf("%s\n", row.c_str());
}

/// One-token generation's linear: GB/s of the bytes each way must read.
void gemv(cublasHandle_t h, std::mt19937& rng) {
  std::printf("\n| GEMV N x K, one token | 4-bit packed GB/s | dequantize + SGEMV GB/s | float32 SGEMV GB/s | SGEMV ms ÷ 4-bit ms |\n");
  std::printf("|---|--:|--:|--:|--:|\n");
  for (const auto& [N, K] : {std::pair{4096, 4096}, std::pair{11008, 4096}, std::pair{4096, 11008}, std::pair{32000, 4096}}) {
    arena a;
    const device_weight w(a, N, K, rng);
    auto *x = a.alloc<float>(K), *y = a.alloc<float>(N), *tile = a.alloc<float>(std::size_t(N) * K);
    const float one = 1, zero = 0;
    const double packed = median_ms([&] { cu::gemv_4bit(w.q, x, y); });
    const double deq = median_ms([&] {
      cu::dequantize_4bit(cu::code4::nf4, 64, w.q.codes, w.q.absmax, std::size_t(N) * K, tile);
      cublasSgemv(h, CUBLAS_OP_T, K, N, &one, tile, K, x, 1, &zero, y, 1);  // row-major (N, K) is column-major (K, N)
    });
    const double dense = median_ms([&] { cublasSgemv(h, CUBLAS_OP_T, K, N, &one, w.dense, K, x, 1, &zero, y, 1); });
    const double nk = double(N) * K, q_bytes = nk / 2 + nk / 64 * 4 + 4.0 * (N + K), f_bytes = 4 * nk + 4.0 * (N + K);
    std::printf("| %d x %d | %.0f | %.0f | %.0f | %.2f |\n", N, K, q_bytes / packed / 1e6, (q_bytes + 8 * nk) / deq / 1e6,
                f_bytes / dense / 1e6, dense / packed);
  }
}

/// Causal attention forward: cuBLAS batched SGEMMs + softmax kernel (attention.cuh, what training uses: it keeps P for
/// backward) against the tiled online-softmax kernel (attention_tiled.cuh), B 4 × H 8 × D 64.
void attention(cublasHandle_t h, std::mt19937& rng) {
  std::printf("\n| attention forward, B 4, H 8, D 64 | batched SGEMM + softmax ms | tiled kernel ms | batched ÷ tiled |\n|---|--:|--:|--:|\n");
  for (const int T : {256, 512, 1024, 2048}) {
    arena a;
    const cu::attention_dims d{4, T, 8, 8, 64};
    const std::size_t rows = std::size_t(d.batch) * T, cols = std::size_t(d.heads) * d.head_dim;
    auto *q = a.copy(normal_floats(rows * cols, rng)), *k = a.copy(normal_floats(rows * cols, rng)), *v = a.copy(normal_floats(rows * cols, rng));
    auto *out = a.alloc<float>(rows * cols), *probs = a.alloc<float>(std::size_t(d.batch) * d.heads * T * T);
    const double batched = median_ms([&] { cu::attention_forward(h, d, q, k, v, probs, out); });
    const double tiled = median_ms([&] { cu::attention_forward_tiled(d, q, k, v, out); });
    std::printf("| T %d | %.3f | %.3f | %.2f |\n", T, batched, tiled, batched / tiled);
  }
}

/// Tokens/s of forward + loss + backward of the 30M model (dim 512, hidden 1376, 8 layers, vocab 8192; random
/// weights) on the device, B = 4 × T = 256, LoRA r 8 on all linears, dropout 0.05: LoRA over float32 against QLoRA
/// over nf4 + DQ with and without gradient checkpointing. The optimizer (host, r·(K+N) floats per layer) is apart.
template <class Host>
double step_tokens_per_second(Host host, bool checkpointing) {
  using namespace loralab;
  lora::lora_config lc;
  lc.dropout = 0.05;
  lora::attach_adapters(host, lc, lora::parse_targets("all-linear"), 1);
  host.gradient_checkpointing = checkpointing;
  auto dev = cuda::to_device(host);
  const int B = 4, T = 256;
  std::vector<int> tokens(std::size_t(B) * T);
  std::mt19937 g(3);
  for (auto& t : tokens) t = int(g() % std::uint32_t(host.config.vocab_size));
  lora::set_adapter_mode(dev, true, 5);
  const double ms = median_ms([&] {
    dev.forward(tokens, B, T);
    (void)dev.loss(tokens);
    dev.backward();
  });
  return double(B) * T / (ms / 1e3);
}

void whole_step() {
  using namespace loralab;
  const nn::model_file f = nn::random_model_file({.dim = 512, .hidden_dim = 1376, .n_layers = 8, .n_heads = 8, .n_kv_heads = 8,
                                                  .vocab_size = 8192}, 7, 0.02f);
  const double lora = step_tokens_per_second(lora::make_lora_dense_model(f), false);
  const double qlora = step_tokens_per_second(lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(f), false);
  const double qlora_ckpt = step_tokens_per_second(lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(f), true);
  std::printf("\n| 30M step, B 4 x T 256, r 8 all-linear (forward + loss + backward) | tokens/s | ÷ LoRA |\n|---|--:|--:|\n");
  std::printf("| LoRA, float32 base | %.0f | 1.00 |\n", lora);
  std::printf("| QLoRA, nf4 + DQ base | %.0f | %.2f |\n", qlora, qlora / lora);
  std::printf("| QLoRA, nf4 + DQ base, gradient checkpointing | %.0f | %.2f |\n", qlora_ckpt, qlora_ckpt / lora);
}

}  // namespace

int main() {
  std::string why;
  if (!loralab::cuda::device_available(&why)) {
    std::printf("cuda_bench: no CUDA device (%s): nothing measured\n", why.c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("cuda_bench: %s (sm_%d%d, %.0f GiB)\n\n", prop.name, prop.major, prop.minor, double(prop.totalGlobalMem) / (1 << 30));
  cublasHandle_t h = nullptr;
  cublasCreate(&h);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  std::mt19937 rng(7);
  dequantize_vs_copy(rng);
  frozen_linear_and_lora(h, rng);
  gemv(h, rng);
  attention(h, rng);
  whole_step();
  cublasDestroy(h);
  return 0;
}

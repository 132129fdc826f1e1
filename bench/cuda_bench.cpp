// SPDX-License-Identifier: MIT
/// \file cuda_bench.cpp
/// \brief What do the CUDA kernels cost next to the device's own ceilings, measured in one run?
///
///   - 4-bit dequantize (nf4, block 64) in GB/s (codes + absmax read, floats written) next to a device-to-device
///     cudaMemcpy of the same float bytes;
///   - the frozen 4-bit linear (dequantize tiles + SGEMM, kernels/linear.cuh) in TFLOP/s next to plain cuBLAS SGEMM
///     over a dense float weight, at the 30M model's shapes (M = B·T = 1024; 512 → 512, 512 → 1376, 1376 → 512),
///     with 128-row tiles and with the whole weight as one tile;
///   - LoRA r 8 forward + backward (four SGEMMs, dropout 0.05) as a share of the frozen layer's forward + backward;
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
#include "linear.cuh"
#include "lora/lora.hpp"
#include "nn/random_model.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant_4bit.cuh"

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

template <class T>
T* device_alloc(std::size_t n) {
  T* p = nullptr;
  cudaMalloc(&p, n * sizeof(T) + 1);
  return p;
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
  std::normal_distribution<float> normal(0.0f, 0.02f);

  // ---- dequantize vs copy
  const std::size_t n = std::size_t(1) << 26;  // 64M weights
  using S = loralab::quant::nf4<64>;
  std::vector<float> host(n);
  for (auto& v : host) v = normal(rng);
  const auto q = loralab::quant::blockwise_tensor<S>::quantize<float>(host, {std::int64_t(n)});
  auto* codes = device_alloc<std::uint8_t>(q.code_bytes());
  auto* absmax = device_alloc<float>(q.num_blocks());
  auto* out = device_alloc<float>(n);
  auto* src = device_alloc<float>(n);
  cudaMemcpy(codes, q.codes().data(), q.code_bytes(), cudaMemcpyHostToDevice);
  cudaMemcpy(absmax, q.absmax().data(), q.num_blocks() * 4, cudaMemcpyHostToDevice);
  const double deq = median_ms([&] { loralab::cuda::dequantize_4bit(loralab::cuda::code4::nf4, 64, codes, absmax, n, out); });
  const double copy = median_ms([&] { cudaMemcpy(out, src, n * 4, cudaMemcpyDeviceToDevice); });
  const double deq_bytes = double(q.code_bytes() + q.num_blocks() * 4 + n * 4), copy_bytes = 2.0 * n * 4;
  std::printf("| operation | ms | GB/s | ÷ copy |\n|---|--:|--:|--:|\n");
  std::printf("| nf4 dequantize, %zu M weights | %.3f | %.0f | %.2f |\n", n >> 20, deq, deq_bytes / deq / 1e6, (deq_bytes / deq) / (copy_bytes / copy));
  std::printf("| cudaMemcpy D2D, same floats | %.3f | %.0f | 1.00 |\n\n", copy, copy_bytes / copy / 1e6);

  // ---- frozen linear vs SGEMM, and LoRA's share
  std::printf("| shape M x K -> N | SGEMM TFLOP/s | frozen nf4, 128-row tiles | frozen nf4, one tile | ÷ SGEMM (tiles, one) | LoRA r 8 fwd+bwd ÷ frozen fwd+bwd |\n");
  std::printf("|---|--:|--:|--:|--:|--:|\n");
  const int M = 1024, r = 8;
  for (const auto& [K, N] : {std::pair{512, 512}, std::pair{512, 1376}, std::pair{1376, 512}}) {
    std::vector<float> w(std::size_t(N) * K);
    for (auto& v : w) v = normal(rng);
    const auto qw = loralab::quant::blockwise_tensor<S>::quantize<float>(w, {N, K});
    auto* wc = device_alloc<std::uint8_t>(qw.code_bytes());
    auto* wa = device_alloc<float>(qw.num_blocks());
    auto* wd = device_alloc<float>(w.size());
    cudaMemcpy(wc, qw.codes().data(), qw.code_bytes(), cudaMemcpyHostToDevice);
    cudaMemcpy(wa, qw.absmax().data(), qw.num_blocks() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(wd, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
    auto *x = device_alloc<float>(std::size_t(M) * K), *y = device_alloc<float>(std::size_t(M) * N), *tile = device_alloc<float>(std::size_t(N) * K);
    auto *dy = device_alloc<float>(std::size_t(M) * N), *dx = device_alloc<float>(std::size_t(M) * K);
    auto *A = device_alloc<float>(std::size_t(r) * K), *B = device_alloc<float>(std::size_t(N) * r), *xd = device_alloc<float>(std::size_t(M) * K);
    auto *hb = device_alloc<float>(std::size_t(M) * r), *dh = device_alloc<float>(std::size_t(M) * r), *g = device_alloc<float>(std::size_t(M) * K);
    auto *dA = device_alloc<float>(std::size_t(r) * K), *dB = device_alloc<float>(std::size_t(N) * r);
    cudaMemset(x, 0, std::size_t(M) * K * 4), cudaMemset(dy, 0, std::size_t(M) * N * 4), cudaMemset(A, 0, std::size_t(r) * K * 4);
    cudaMemset(B, 0, std::size_t(N) * r * 4);
    const float one = 1, zero = 0;
    const double sgemm = median_ms([&] { cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, wd, K, x, K, &zero, y, N); });
    const loralab::cuda::weight_4bit fw{loralab::cuda::code4::nf4, 64, wc, wa, N, K};
    const double tiles = median_ms([&] { loralab::cuda::frozen_linear_forward(h, fw, x, M, y, tile, 128); });
    const double whole = median_ms([&] { loralab::cuda::frozen_linear_forward(h, fw, x, M, y, tile, N); });
    const double base = median_ms([&] {
      loralab::cuda::frozen_linear_forward(h, fw, x, M, y, tile, N);
      loralab::cuda::frozen_linear_backward(h, fw, dy, M, dx, tile, N);
    });
    const loralab::cuda::dropout_mask drop{0.05, 1, 0};
    const double lora = median_ms([&] {
      loralab::cuda::lora_forward(h, x, M, K, N, r, A, B, 2.0f, drop, xd, hb, y);
      loralab::cuda::lora_backward(h, x, dy, M, K, N, r, A, B, 2.0f, drop, xd, hb, dh, g, dA, dB, dx);
    });
    const double flops = 2.0 * M * K * N;
    std::printf("| %d x %d -> %d | %.2f | %.2f | %.2f | %.2f, %.2f | %.2f |\n", M, K, N, flops / sgemm / 1e9, flops / tiles / 1e9,
                flops / whole / 1e9, sgemm / tiles, sgemm / whole, lora / base);
    for (void* p : {(void*)wc, (void*)wa, (void*)wd, (void*)x, (void*)y, (void*)tile, (void*)dy, (void*)dx, (void*)A, (void*)B, (void*)xd,
                    (void*)hb, (void*)dh, (void*)g, (void*)dA, (void*)dB})
      cudaFree(p);
  }
  whole_step();
  for (void* p : {(void*)codes, (void*)absmax, (void*)out, (void*)src}) cudaFree(p);
  cublasDestroy(h);
  return 0;
}

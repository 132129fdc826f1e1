// SPDX-License-Identifier: MIT
// CUDA kernels against the CPU reference, bit for bit (4- and 8-bit quantization, double quantization, bf16
// dequantization; LoRA dropout and AdamW, which run the CPU's own per-element functions), or within a stated
// tolerance (the gradient norm: a sum in another order; the layers: 1e-5 relative, Eigen's sums and exp on the CPU). Every case is skipped, with the reason, where no CUDA
// device exists (CI and the development machines have none).
#define BOOST_TEST_MODULE kernels
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <cuda_runtime.h>

#include "lora/lora_linear.hpp"
#include "quant/blockwise_tensor.hpp"
#include "core/bf16.hpp"
#include "attention.cuh"
#include "layers.cuh"
#include "linear.cuh"
#include "nn/attention.hpp"
#include "nn/cross_entropy.hpp"
#include "nn/rms_norm.hpp"
#include "nn/rotary.hpp"
#include "nn/swiglu.hpp"
#include "quant_4bit.cuh"
#include "quant_8bit.cuh"
#include "train/adamw.hpp"
#include "train/adamw8bit.hpp"
#include "train_step.cuh"
#include "kernel_test_support.hpp"
#include "test_support.hpp"

using namespace loralab::kernel_testing;

namespace {
/// Says once, on stdout, why the suite does not run here.
struct announce_skip {
  announce_skip() {
    std::string why;
    if (!loralab::cuda::device_available(&why))
      std::cout << "kernels: SKIPPED every GPU test: no CUDA device (" << why << ")\n";
  }
};
BOOST_TEST_GLOBAL_FIXTURE(announce_skip);

template <class S>
void check_against_reference(loralab::cuda::code4 type, std::size_t n) {
  auto g = loralab::testing::rng(900 + n);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(g);
  x[0] = 0.0f;  // and a value on a code point
  const auto ref = loralab::quant::blockwise_tensor<S>::template quantize_ref<float>(x, {std::int64_t(n)});

  device_buffer<float> dx(n), dabs(ref.num_blocks()), dout(n);
  device_buffer<std::uint8_t> dcodes(ref.code_bytes());
  cudaMemcpy(dx.p, x.data(), n * 4, cudaMemcpyHostToDevice);
  BOOST_TEST_REQUIRE(loralab::cuda::quantize_4bit(type, S::block_size, dx.p, n, dcodes.p, dabs.p) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::dequantize_4bit(type, S::block_size, dcodes.p, dabs.p, n, dout.p) == cudaSuccess);
  std::vector<std::uint8_t> codes(ref.code_bytes());
  std::vector<float> absmax(ref.num_blocks()), out(n), expect(n);
  cudaMemcpy(codes.data(), dcodes.p, codes.size(), cudaMemcpyDeviceToHost);
  cudaMemcpy(absmax.data(), dabs.p, absmax.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(out.data(), dout.p, n * 4, cudaMemcpyDeviceToHost);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  ref.template dequantize_ref<float>(expect);
  BOOST_TEST(std::memcmp(codes.data(), ref.codes().data(), codes.size()) == 0, "codes n=" << n);
  BOOST_TEST(std::memcmp(absmax.data(), ref.absmax().data(), absmax.size() * 4) == 0, "absmax n=" << n);
  BOOST_TEST(std::memcmp(out.data(), expect.data(), n * 4) == 0, "dequantized n=" << n);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(quant_4bit_kernels, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(nf4_matches_cpu_reference) {
  for (std::size_t n : {1u, 63u, 64u, 1001u, 1u << 20}) check_against_reference<loralab::quant::nf4<64>>(loralab::cuda::code4::nf4, n);
}

BOOST_AUTO_TEST_CASE(fp4_matches_cpu_reference) {
  for (std::size_t n : {3u, 4096u, 70001u}) check_against_reference<loralab::quant::fp4<256>>(loralab::cuda::code4::fp4, n);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {
template <class T>
std::vector<T> to_host(const device_buffer<T>& d, std::size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d.p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(train_step_kernels, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(lora_dropout_is_the_cpu_mask) {
  const std::size_t n = 300001;
  const auto x = normal_values(n, 11, 1.0f);
  for (bool accumulate : {false, true}) {
    const std::uint64_t seed = 0x1234567ull, threshold = loralab::lora::drop_threshold(0.1), first = 4096;
    const float keep = 1.0f / 0.9f;
    std::vector<float> expect(n, accumulate ? 0.5f : 0.0f);
    if (accumulate) loralab::lora::apply_dropout_mask<true>(x.data(), expect.data(), 0, std::int64_t(n), seed, threshold, keep, first);
    else loralab::lora::apply_dropout_mask<false>(x.data(), expect.data(), 0, std::int64_t(n), seed, threshold, keep, first);
    device_buffer<float> din(n), dout(n);
    cudaMemcpy(din.p, x.data(), n * 4, cudaMemcpyHostToDevice);
    const std::vector<float> start(n, accumulate ? 0.5f : 0.0f);
    cudaMemcpy(dout.p, start.data(), n * 4, cudaMemcpyHostToDevice);
    BOOST_TEST_REQUIRE(loralab::cuda::lora_dropout(din.p, dout.p, n, seed, threshold, keep, first, accumulate) == cudaSuccess);
    BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    BOOST_TEST(std::memcmp(to_host(dout, n).data(), expect.data(), n * 4) == 0, "accumulate " << accumulate);
  }
}

BOOST_AUTO_TEST_CASE(adamw_step_is_the_cpu_optimizer) {
  const std::size_t n = 100003;
  auto p = normal_values(n, 21, 0.02f);
  const auto g1 = normal_values(n, 22, 1e-3f), g2 = normal_values(n, 23, 1e-3f);
  std::vector<float> cpu_p = p, cpu_g;
  loralab::train::adam_config cfg;
  cfg.weight_decay = 0.01;
  loralab::train::adamw opt(cfg);
  device_buffer<float> dp(n), dm(n), dv(n), dg(n);
  cudaMemcpy(dp.p, p.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemset(dm.p, 0, n * 4), cudaMemset(dv.p, 0, n * 4);
  int t = 0;
  for (const auto* g : {&g1, &g2}) {  // two steps: the bias corrections of t = 1 and 2
    cpu_g = *g;
    const loralab::train::param_ref ref{"w", cpu_p.data(), cpu_g.data(), n, true};
    const double lr = 2e-4;
    opt.step(std::span(&ref, 1), lr);
    ++t;
    loralab::train::adamw_step_constants c{};  // as train::adamw computes them
    c.neg_step_size = float(-(lr / (1.0 - std::pow(cfg.beta1, t))));
    c.bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(cfg.beta2, t)));
    c.weight = float(1.0 - cfg.beta1), c.beta2 = float(cfg.beta2), c.one_minus_beta2 = float(1.0 - cfg.beta2), c.eps = float(cfg.eps);
    c.decay = true, c.decay_factor = float(1.0 - lr * cfg.weight_decay);
    cudaMemcpy(dg.p, g->data(), n * 4, cudaMemcpyHostToDevice);
    BOOST_TEST_REQUIRE(loralab::cuda::adamw_step(dp.p, dm.p, dv.p, dg.p, n, c) == cudaSuccess);
  }
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(std::memcmp(to_host(dp, n).data(), cpu_p.data(), n * 4) == 0, "parameters after 2 steps");
  BOOST_TEST(std::memcmp(to_host(dm, n).data(), opt.state_of("w").exp_avg.data(), n * 4) == 0, "exp_avg");
  BOOST_TEST(std::memcmp(to_host(dv, n).data(), opt.state_of("w").exp_avg_sq.data(), n * 4) == 0, "exp_avg_sq");
}

// bnb's 8-bit AdamW on the device against train::adamw8bit: a parameter of 8-bit state with a partial last block and
// non-finite gradients in it, and a small one of 32-bit state; three steps, every state byte, absmax and parameter
// bit for bit.
BOOST_AUTO_TEST_CASE(adamw8bit_step_is_the_cpu_optimizer) {
  namespace tr = loralab::train;
  const std::size_t n = 3 * 4096 + 77, small = 1000;
  std::vector<float> cpu_p = normal_values(n, 41, 0.02f), cpu_q = normal_values(small, 42, 0.02f), cpu_g, cpu_h;
  tr::adam_config cfg;
  cfg.weight_decay = 0.01;
  tr::adamw8bit opt(cfg);
  device_buffer<float> dp(n), dg(n), da1(tr::adamw8bit::blocks(n)), da2(tr::adamw8bit::blocks(n)), dq(small), dh(small), dt1(small),
      dt2(small), dmap1(256), dmap2(256);
  device_buffer<std::uint8_t> ds1(n), ds2(n);
  cudaMemcpy(dp.p, cpu_p.data(), n * 4, cudaMemcpyHostToDevice), cudaMemcpy(dq.p, cpu_q.data(), small * 4, cudaMemcpyHostToDevice);
  cudaMemset(ds1.p, 0, n), cudaMemset(ds2.p, 0, n), cudaMemset(da1.p, 0, tr::adamw8bit::blocks(n) * 4);
  cudaMemset(da2.p, 0, tr::adamw8bit::blocks(n) * 4), cudaMemset(dt1.p, 0, small * 4), cudaMemset(dt2.p, 0, small * 4);
  cudaMemcpy(dmap1.p, tr::adamw8bit::qmap1.data(), 256 * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dmap2.p, tr::adamw8bit::qmap2.data(), 256 * 4, cudaMemcpyHostToDevice);
  const double lr = 1e-3;
  for (int t = 1; t <= 3; ++t) {
    cpu_g = normal_values(n, 50 + t, 1e-3f), cpu_h = normal_values(small, 60 + t, 1e-3f);
    if (t == 2) cpu_g[5] = NAN, cpu_g[n - 3] = INFINITY;  // the kernel zeroes their state and leaves p alone
    const tr::param_ref refs[] = {{"w", cpu_p.data(), cpu_g.data(), n, true}, {"s", cpu_q.data(), cpu_h.data(), small, true}};
    cudaMemcpy(dg.p, cpu_g.data(), n * 4, cudaMemcpyHostToDevice), cudaMemcpy(dh.p, cpu_h.data(), small * 4, cudaMemcpyHostToDevice);
    opt.step(refs, lr);
    const tr::adamw8bit_constants a = opt.constants(lr, opt.steps_taken());
    BOOST_TEST_REQUIRE(loralab::cuda::adamw8bit_step(dp.p, dg.p, ds1.p, ds2.p, da1.p, da2.p, n, dmap1.p, dmap2.p, a, float(cfg.weight_decay)) ==
                       cudaSuccess);
    BOOST_TEST_REQUIRE(loralab::cuda::adamw8bit_step_32bit(dq.p, dt1.p, dt2.p, dh.p, small, a, float(cfg.weight_decay)) == cudaSuccess);
  }
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto& s = opt.state_of("w");
  BOOST_TEST(std::memcmp(to_host(dp, n).data(), cpu_p.data(), n * 4) == 0, "parameters after 3 steps");
  BOOST_TEST(to_host(ds1, n) == s.state1, "state1 codes");
  BOOST_TEST(to_host(ds2, n) == s.state2, "state2 codes");
  BOOST_TEST(std::memcmp(to_host(da1, s.absmax1.size()).data(), s.absmax1.data(), s.absmax1.size() * 4) == 0, "absmax1");
  BOOST_TEST(std::memcmp(to_host(da2, s.absmax2.size()).data(), s.absmax2.data(), s.absmax2.size() * 4) == 0, "absmax2");
  BOOST_TEST(std::memcmp(to_host(dq, small).data(), cpu_q.data(), small * 4) == 0, "32-bit state parameter");
  BOOST_TEST(std::memcmp(to_host(dt1, small).data(), opt.state_of("s").state1_f32.data(), small * 4) == 0, "32-bit state1");
}

BOOST_AUTO_TEST_CASE(sum_of_squares_within_double_rounding) {
  const std::size_t n = (1u << 20) + 17;
  const auto g = normal_values(n, 31, 1e-2f);
  double expect = 0;
  for (float x : g) expect += double(x) * double(x);
  device_buffer<float> dg(n);
  double* dout = nullptr;
  BOOST_TEST_REQUIRE(cudaMalloc(&dout, sizeof(double)) == cudaSuccess);
  cudaMemcpy(dg.p, g.data(), n * 4, cudaMemcpyHostToDevice);
  BOOST_TEST_REQUIRE(loralab::cuda::sum_of_squares(dg.p, n, dout) == cudaSuccess);
  double got = 0;
  cudaMemcpy(&got, dout, sizeof(double), cudaMemcpyDeviceToHost);
  cudaFree(dout);
  BOOST_TEST(got == expect, boost::test_tools::tolerance(1e-12));  // double sums of 10^6 terms in another order
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(quant_8bit_kernels, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(dynamic_8bit_blockwise_matches_cpu_reference) {
  using S = loralab::quant::dynamic8<256>;
  for (std::size_t n : {1u, 255u, 256u, 70001u}) {
    const auto x = normal_values(n, 40 + n, 0.1f);
    const auto ref = loralab::quant::blockwise_tensor<S>::quantize_ref<float>(x, {std::int64_t(n)});
    const std::vector<float> map(loralab::quant::codebooks::dynamic_signed.begin(), loralab::quant::codebooks::dynamic_signed.end());
    float *dmap = device_copy(map), *dx = device_copy(x), *dabs = nullptr, *dout = nullptr;
    std::uint8_t* dcodes = nullptr;
    cudaMalloc(&dabs, ref.num_blocks() * 4), cudaMalloc(&dout, n * 4), cudaMalloc(&dcodes, n);
    BOOST_TEST_REQUIRE(loralab::cuda::quantize_8bit(dmap, 256, dx, n, dcodes, dabs) == cudaSuccess);
    BOOST_TEST_REQUIRE(loralab::cuda::dequantize_8bit(dmap, 256, dcodes, dabs, n, dout) == cudaSuccess);
    BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<float> expect(n);
    ref.dequantize_ref<float>(expect);
    BOOST_TEST(host_copy(dcodes, n) == std::vector<std::uint8_t>(ref.codes().begin(), ref.codes().end()), "codes n=" << n);
    BOOST_TEST(std::memcmp(host_copy(dabs, ref.num_blocks()).data(), ref.absmax().data(), ref.num_blocks() * 4) == 0, "absmax n=" << n);
    BOOST_TEST(std::memcmp(host_copy(dout, n).data(), expect.data(), n * 4) == 0, "dequantized n=" << n);
    for (void* p : {(void*)dmap, (void*)dx, (void*)dabs, (void*)dout, (void*)dcodes}) cudaFree(p);
  }
}

// Double quantization on the device: 4-bit codes and absmax, the offset on the host (torch's mean order), the
// centred absmax in 8 bits with block 256 — every stored byte as the CPU's; then dequantization through the nested
// absmax, and to bf16.
BOOST_AUTO_TEST_CASE(double_quantized_nf4_matches_cpu_reference) {
  using S = loralab::quant::double_quant<loralab::quant::nf4<64>>;
  const std::size_t n = 64 * 1000 + 33;
  const auto x = normal_values(n, 50, 0.02f);
  const auto ref = loralab::quant::blockwise_tensor<S>::quantize_ref<float>(x, {std::int64_t(n)});
  const std::size_t nb = ref.num_blocks(), nb2 = ref.num_nested_blocks();
  const std::vector<float> map(ref.nested_code().begin(), ref.nested_code().end());
  float *dx = device_copy(x), *dmap = device_copy(map), *dabs = nullptr, *dabs2 = nullptr, *dout = nullptr;
  std::uint8_t *dcodes = nullptr, *dq = nullptr;
  cudaMalloc(&dabs, nb * 4), cudaMalloc(&dabs2, nb2 * 4), cudaMalloc(&dout, n * 4), cudaMalloc(&dcodes, ref.code_bytes()), cudaMalloc(&dq, nb);
  BOOST_TEST_REQUIRE(loralab::cuda::quantize_4bit(loralab::cuda::code4::nf4, 64, dx, n, dcodes, dabs) == cudaSuccess);
  const std::vector<float> absmax = host_copy(dabs, nb);
  const float offset = loralab::quant::detail::mean_offset(absmax);
  BOOST_TEST(offset == ref.offset());
  BOOST_TEST_REQUIRE(loralab::cuda::centre_absmax(dabs, nb, offset) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::quantize_8bit(dmap, 256, dabs, nb, dq, dabs2) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::dequantize_4bit_nested(loralab::cuda::code4::nf4, 64, dcodes, dq, dabs2, dmap, offset, n, dout) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(host_copy(dcodes, ref.code_bytes()) == std::vector<std::uint8_t>(ref.codes().begin(), ref.codes().end()));
  BOOST_TEST(host_copy(dq, nb) == std::vector<std::uint8_t>(ref.absmax_codes().begin(), ref.absmax_codes().end()));
  BOOST_TEST(std::memcmp(host_copy(dabs2, nb2).data(), ref.nested_absmax().data(), nb2 * 4) == 0);
  std::vector<float> expect(n);
  ref.dequantize_ref<float>(expect);
  BOOST_TEST(std::memcmp(host_copy(dout, n).data(), expect.data(), n * 4) == 0, "dequantized through the nested absmax");

  // bf16 output of a plain nf4 tensor: the float dequantization rounded to nearest even
  using P = loralab::quant::nf4<64>;
  const auto plain = loralab::quant::blockwise_tensor<P>::quantize_ref<float>(x, {std::int64_t(n)});
  std::vector<float> pf(n);
  plain.dequantize_ref<float>(pf);
  std::uint16_t* db = nullptr;
  cudaMalloc(&db, n * 2);
  float* dpabs = device_copy(std::vector<float>(plain.absmax().begin(), plain.absmax().end()));
  std::uint8_t* dpcodes = device_copy(std::vector<std::uint8_t>(plain.codes().begin(), plain.codes().end()));
  BOOST_TEST_REQUIRE(loralab::cuda::dequantize_4bit_bf16(loralab::cuda::code4::nf4, 64, dpcodes, dpabs, n, db) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  const auto bits = host_copy(db, n);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) wrong += bits[i] != loralab::core::bf16_bits(pf[i]);
  BOOST_TEST(wrong == 0u);
  for (void* p : {(void*)dx, (void*)dmap, (void*)dabs, (void*)dabs2, (void*)dout, (void*)dcodes, (void*)dq, (void*)db, (void*)dpabs, (void*)dpcodes})
    cudaFree(p);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layer_kernels, *boost::unit_test::precondition(has_device))

BOOST_AUTO_TEST_CASE(rms_norm_and_swiglu_match_the_cpu_layers) {
  const int M = 37, C = 576;
  const fmat x = random_matrix(M, C, 60), dy = random_matrix(M, C, 61);
  const fmat g_row = random_matrix(1, C, 62, 0.3f);
  const loralab::nn::vector<float> g = g_row.row(0).transpose().array() + 1.0f;
  fmat y, dx;
  loralab::nn::vector<float> rstd;
  loralab::nn::rms_norm_forward<float>(x, g, 1e-5f, y, rstd);
  loralab::nn::rms_norm_backward<float>(x, g, rstd, dy, dx, nullptr);
  float *dxd = device_copy(values_of(x)), *dg = device_copy(std::vector<float>(g.data(), g.data() + C)), *ddy = device_copy(values_of(dy));
  float *dyo = nullptr, *drstd = nullptr, *ddx = nullptr;
  cudaMalloc(&dyo, M * C * 4), cudaMalloc(&drstd, M * 4), cudaMalloc(&ddx, M * C * 4);
  BOOST_TEST_REQUIRE(loralab::cuda::rms_norm_forward(dxd, dg, 1e-5f, M, C, dyo, drstd) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::rms_norm_backward(dxd, dg, drstd, ddy, M, C, ddx) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(dyo, M * C), y.data(), M * C) < 1e-5);
  BOOST_TEST(relative_error(host_copy(ddx, M * C), dx.data(), M * C) < 1e-5);

  const int F = 1536;
  const fmat gate = random_matrix(M, F, 63, 2.0f), up = random_matrix(M, F, 64), dh = random_matrix(M, F, 65);
  fmat h, dgate, dup;
  loralab::nn::swiglu_forward<float>(gate, up, h);
  loralab::nn::swiglu_backward<float>(gate, up, dh, dgate, dup);
  const std::size_t n = std::size_t(M) * F;
  float *dgt = device_copy(values_of(gate)), *dup_in = device_copy(values_of(up)), *ddh = device_copy(values_of(dh));
  float *dho = nullptr, *dgo = nullptr, *duo = nullptr;
  cudaMalloc(&dho, n * 4), cudaMalloc(&dgo, n * 4), cudaMalloc(&duo, n * 4);
  BOOST_TEST_REQUIRE(loralab::cuda::swiglu_forward(dgt, dup_in, n, dho) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::swiglu_backward(dgt, dup_in, ddh, n, dgo, duo) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(dho, n), h.data(), n) < 1e-5);
  BOOST_TEST(relative_error(host_copy(dgo, n), dgate.data(), n) < 1e-5);
  BOOST_TEST(relative_error(host_copy(duo, n), dup.data(), n) < 1e-5);
  for (void* p : {(void*)dxd, (void*)dg, (void*)ddy, (void*)dyo, (void*)drstd, (void*)ddx, (void*)dgt, (void*)dup_in, (void*)ddh, (void*)dho,
                  (void*)dgo, (void*)duo})
    cudaFree(p);
}

BOOST_AUTO_TEST_CASE(rotary_and_cross_entropy_match_the_cpu_layers) {
  const int M = 48, heads = 9, D = 64, max_pos = 128;
  const loralab::nn::rotary_table<float> rt(D, max_pos, 10000.0);
  std::vector<int> pos(M);
  for (int r = 0; r < M; ++r) pos[std::size_t(r)] = (r * 7) % max_pos;
  const fmat q0 = random_matrix(M, heads * D, 70);
  for (bool inverse : {false, true}) {
    fmat q = q0;
    loralab::nn::apply_rotary(q, heads, rt, pos, inverse);
    float *dq = device_copy(values_of(q0)), *dc = device_copy(values_of(rt.cos)), *ds = device_copy(values_of(rt.sin));
    int* dp = device_copy(pos);
    BOOST_TEST_REQUIRE(loralab::cuda::rotary(dq, M, heads, D, dc, ds, dp, inverse) == cudaSuccess);
    BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    BOOST_TEST(relative_error(host_copy(dq, q.size()), q.data(), q.size()) < 1e-6, "inverse " << inverse);
    for (void* p : {(void*)dq, (void*)dc, (void*)ds, (void*)dp}) cudaFree(p);
  }

  const int V = 8192;
  const fmat logits = random_matrix(M, V, 71, 3.0f);
  std::vector<int> targets(M);
  for (int r = 0; r < M; ++r) targets[std::size_t(r)] = r % 5 == 0 ? -100 : (r * 131) % V;
  fmat dl;
  const double denominator = 100;
  const double loss = loralab::nn::cross_entropy(logits, targets, &dl, nullptr, denominator);
  float *dlog = device_copy(values_of(logits)), *drow = nullptr, *ddl = nullptr;
  int* dt = device_copy(targets);
  cudaMalloc(&drow, M * 4), cudaMalloc(&ddl, std::size_t(M) * V * 4);
  BOOST_TEST_REQUIRE(loralab::cuda::cross_entropy(dlog, dt, M, V, float(denominator), drow, ddl) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  double sum = 0;
  for (float l : host_copy(drow, M)) sum += l;
  BOOST_TEST(sum / denominator == loss, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(relative_error(host_copy(ddl, std::size_t(M) * V), dl.data(), std::size_t(M) * V) < 1e-5);
  for (void* p : {(void*)dlog, (void*)drow, (void*)ddl, (void*)dt}) cudaFree(p);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(linear_kernels, *boost::unit_test::precondition(has_device))

// The frozen 4-bit linear through tiles (a partial last tile) against x · dequant(W)ᵀ and dy · dequant(W) on the CPU;
// the LoRA adapter with dropout against its formulas in Eigen over the CPU's own mask.
BOOST_AUTO_TEST_CASE(frozen_linear_and_lora_match_the_cpu) {
  const int M = 96, K = 512, N = 1376, r = 8, tile_rows = 128;
  using S = loralab::quant::nf4<64>;
  const auto wv = normal_values(std::size_t(N) * K, 80, 0.02f);
  const auto q = loralab::quant::blockwise_tensor<S>::quantize<float>(wv, {N, K});
  std::vector<float> wd(std::size_t(N) * K);
  q.dequantize_ref<float>(wd);
  const fmat W = Eigen::Map<const fmat>(wd.data(), N, K), x = random_matrix(M, K, 81), dy = random_matrix(M, N, 82);
  const fmat y_ref = x * W.transpose(), dx_ref = dy * W;

  cublasHandle_t h = nullptr;
  BOOST_TEST_REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);  // no TF32: float products as the CPU's
  std::uint8_t* dcodes = device_copy(std::vector<std::uint8_t>(q.codes().begin(), q.codes().end()));
  float *dabs = device_copy(std::vector<float>(q.absmax().begin(), q.absmax().end())), *dx_in = device_copy(values_of(x));
  float *ddy = device_copy(values_of(dy)), *dy_out = nullptr, *ddx = nullptr, *tile = nullptr;
  cudaMalloc(&dy_out, std::size_t(M) * N * 4), cudaMalloc(&ddx, std::size_t(M) * K * 4), cudaMalloc(&tile, std::size_t(tile_rows) * K * 4);
  const loralab::cuda::weight_4bit w{loralab::cuda::code4::nf4, 64, dcodes, dabs, N, K};
  BOOST_TEST_REQUIRE(loralab::cuda::frozen_linear_forward(h, w, dx_in, M, dy_out, tile, tile_rows) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::frozen_linear_backward(h, w, ddy, M, ddx, tile, tile_rows) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(dy_out, std::size_t(M) * N), y_ref.data(), y_ref.size()) < 1e-5);
  BOOST_TEST(relative_error(host_copy(ddx, std::size_t(M) * K), dx_ref.data(), dx_ref.size()) < 1e-5);

  // LoRA with dropout 0.1: y += s (drop(x) Aᵀ) Bᵀ, and its backward
  const fmat A = random_matrix(r, K, 83, 0.05f), B = random_matrix(N, r, 84, 0.05f);
  const float s = 2.0f;
  const loralab::cuda::dropout_mask drop{0.1, 0xABCDEFull, 4096};
  fmat xd(M, K), g(M, K);
  loralab::lora::apply_dropout_mask<false>(x.data(), xd.data(), 0, xd.size(), drop.seed, loralab::lora::drop_threshold(drop.p),
                                           float(1.0 / 0.9), drop.first);
  const fmat hm = xd * A.transpose(), ly_ref = y_ref + s * (hm * B.transpose());
  const fmat dh = s * (dy * B), dB_ref = s * (dy.transpose() * hm), dA_ref = dh.transpose() * xd;
  fmat ldx_ref = dx_ref;
  const fmat gm = dh * A;
  loralab::lora::apply_dropout_mask<true>(gm.data(), ldx_ref.data(), 0, gm.size(), drop.seed, loralab::lora::drop_threshold(drop.p),
                                          float(1.0 / 0.9), drop.first);
  float *dA = device_copy(values_of(A)), *dB = device_copy(values_of(B)), *dxd = nullptr, *dhb = nullptr, *ddh = nullptr, *dg = nullptr;
  float *gA = device_copy(std::vector<float>(A.size(), 0.0f)), *gB = device_copy(std::vector<float>(B.size(), 0.0f));
  cudaMalloc(&dxd, std::size_t(M) * K * 4), cudaMalloc(&dhb, std::size_t(M) * r * 4), cudaMalloc(&ddh, std::size_t(M) * r * 4),
      cudaMalloc(&dg, std::size_t(M) * K * 4);
  BOOST_TEST_REQUIRE(loralab::cuda::lora_forward(h, dx_in, M, K, N, r, dA, dB, s, drop, dxd, dhb, dy_out) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::lora_backward(h, dx_in, ddy, M, K, N, r, dA, dB, s, drop, dxd, dhb, ddh, dg, gA, gB, ddx) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(dy_out, std::size_t(M) * N), ly_ref.data(), ly_ref.size()) < 1e-5, "y with the adapter");
  BOOST_TEST(relative_error(host_copy(ddx, std::size_t(M) * K), ldx_ref.data(), ldx_ref.size()) < 1e-5, "dx with the adapter");
  BOOST_TEST(relative_error(host_copy(gA, A.size()), dA_ref.data(), dA_ref.size()) < 1e-5, "dA");
  BOOST_TEST(relative_error(host_copy(gB, B.size()), dB_ref.data(), dB_ref.size()) < 1e-5, "dB");
  for (void* p : {(void*)dcodes, (void*)dabs, (void*)dx_in, (void*)ddy, (void*)dy_out, (void*)ddx, (void*)tile, (void*)dA, (void*)dB,
                  (void*)dxd, (void*)dhb, (void*)ddh, (void*)dg, (void*)gA, (void*)gB})
    cudaFree(p);
  cublasDestroy(h);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(attention_kernels, *boost::unit_test::precondition(has_device))

// Grouped-query causal attention (6 query heads over 2 kv heads, T = 70: not a multiple of the CPU's causal block)
// against nn::attention_forward / attention_backward: P, out, dq, dk, dv within 1e-5.
BOOST_AUTO_TEST_CASE(attention_matches_the_cpu) {
  const loralab::nn::attention_shape s{2, 70, 6, 2, 16};
  const int M = s.batch * s.seq;
  const fmat q = random_matrix(M, s.n_heads * s.head_dim, 90), k = random_matrix(M, s.n_kv_heads * s.head_dim, 91);
  const fmat v = random_matrix(M, s.n_kv_heads * s.head_dim, 92), dout = random_matrix(M, s.n_heads * s.head_dim, 93);
  fmat P, out, dq, dk, dv;
  loralab::nn::attention_forward(s, q, k, v, P, out);
  loralab::nn::attention_backward(s, q, k, v, P, dout, dq, dk, dv);
  cublasHandle_t h = nullptr;
  BOOST_TEST_REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  float *dq_in = device_copy(values_of(q)), *dk_in = device_copy(values_of(k)), *dv_in = device_copy(values_of(v));
  float *ddo = device_copy(values_of(dout)), *dP = nullptr, *dscratch = nullptr, *dout_o = nullptr, *gq = nullptr, *gk = nullptr, *gv = nullptr;
  cudaMalloc(&dP, P.size() * 4), cudaMalloc(&dscratch, P.size() * 4), cudaMalloc(&dout_o, out.size() * 4), cudaMalloc(&gq, q.size() * 4);
  cudaMalloc(&gk, k.size() * 4), cudaMalloc(&gv, v.size() * 4);
  const loralab::cuda::attention_dims a{s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim};
  BOOST_TEST_REQUIRE(loralab::cuda::attention_forward(h, a, dq_in, dk_in, dv_in, dP, dout_o) == cudaSuccess);
  BOOST_TEST_REQUIRE(loralab::cuda::attention_backward(h, a, dq_in, dk_in, dv_in, dP, ddo, dscratch, gq, gk, gv) == cudaSuccess);
  BOOST_TEST_REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  BOOST_TEST(relative_error(host_copy(dP, P.size()), P.data(), P.size()) < 1e-5, "P");
  BOOST_TEST(relative_error(host_copy(dout_o, out.size()), out.data(), out.size()) < 1e-5, "out");
  BOOST_TEST(relative_error(host_copy(gq, q.size()), dq.data(), dq.size()) < 1e-5, "dq");
  BOOST_TEST(relative_error(host_copy(gk, k.size()), dk.data(), dk.size()) < 1e-5, "dk");
  BOOST_TEST(relative_error(host_copy(gv, v.size()), dv.data(), dv.size()) < 1e-5, "dv");
  for (void* p : {(void*)dq_in, (void*)dk_in, (void*)dv_in, (void*)ddo, (void*)dP, (void*)dscratch, (void*)dout_o, (void*)gq, (void*)gk, (void*)gv})
    cudaFree(p);
  cublasDestroy(h);
}

BOOST_AUTO_TEST_SUITE_END()

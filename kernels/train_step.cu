// SPDX-License-Identifier: MIT
#include "train_step.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include "grid.cuh"
#include "lora/dropout_mask.hpp"

namespace loralab::cuda {
namespace {

constexpr int threads = 256;


template <bool Accumulate>
__global__ void dropout_kernel(const float* __restrict in, float* __restrict out, std::size_t n, std::uint64_t seed,
                               std::uint64_t threshold, float keep, std::uint64_t first) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const float m = lora::dropout_factor(seed, first + i, threshold, keep);
    if constexpr (Accumulate) out[i] += m * in[i];
    else out[i] = m * in[i];
  }
}

__global__ void adamw_kernel(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g, std::size_t n,
                             train::adamw_step_constants c) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    train::adamw_element(p[i], m[i], v[i], g[i], c);
}

struct square {
  __device__ double operator()(float x) const { return double(x) * double(x); }
};
struct plus {
  __device__ double operator()(double a, double b) const { return a + b; }
};

/// fmaxf as a reduction: the max of the non-NaN values (NaN only when all are), whatever the order.
struct fmax_op {
  __device__ float operator()(float x, float y) const { return fmaxf(x, y); }
};

/// One CUDA block per 256-element quantization block, one thread per element (train/adamw8bit.hpp's update_block).
constexpr int adam8_block = 256;
__global__ void adamw8bit_kernel(float* __restrict p, const float* __restrict g, std::uint8_t* __restrict state1,
                                 std::uint8_t* __restrict state2, float* __restrict absmax1, float* __restrict absmax2, std::size_t n,
                                 const float* __restrict qmap1, const float* __restrict qmap2, train::adamw8bit_constants a, float wd) {
  using reduce = cub::BlockReduce<float, adam8_block>;
  __shared__ typename reduce::TempStorage t1, t2;
  __shared__ float new_am[2];
  const std::size_t b = blockIdx.x, i = b * adam8_block + threadIdx.x;
  const bool in = i < n;
  const float am1 = absmax1[b], am2 = absmax2[b];
  float s1 = 0.0f, s2 = 0.0f;
  if (in) train::adamw8bit_moments(a, g[i], qmap1[state1[i]], am1, qmap2[state2[i]], am2, s1, s2);
  else s1 = train::adamw8bit_pad_moment1(a, qmap1[128], am1);  // a padding lane: code 128, g = 0
  const float m1 = reduce(t1).Reduce(fabsf(quant::ftz(s1)), fmax_op{});
  const float m2 = reduce(t2).Reduce(fabsf(quant::ftz(s2)), fmax_op{});
  if (threadIdx.x == 0) {  // the host's absmax_step fold from absmax_init: max of the non-NaN values, −FLT_MAX if none
    new_am[0] = quant::absmax_step(quant::absmax_init, m1), new_am[1] = quant::absmax_step(quant::absmax_init, m2);
    absmax1[b] = new_am[0], absmax2[b] = new_am[1];
  }
  __syncthreads();
  if (!in) return;
  if (train::finite_value(g[i])) p[i] = train::adamw8bit_param(a, wd, p[i], s1, s2);  // a non-finite g leaves p alone
  train::adamw8bit_codes(qmap1, qmap2, s1, s2, new_am[0], new_am[1], state1[i], state2[i]);
}

__global__ void adamw8bit_32bit_kernel(float* __restrict p, float* __restrict s1, float* __restrict s2, const float* __restrict g,
                                       std::size_t n, train::adamw8bit_constants a, float wd) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) train::adamw8bit_32bit_element(a, wd, g[i], p[i], s1[i], s2[i]);
}

}  // namespace

cudaError_t lora_dropout(const float* in, float* out, std::size_t n, std::uint64_t seed, std::uint64_t threshold, float keep,
                         std::uint64_t first, bool accumulate, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = grid_for(n, threads);
  if (accumulate) dropout_kernel<true><<<blocks, threads, 0, stream>>>(in, out, n, seed, threshold, keep, first);
  else dropout_kernel<false><<<blocks, threads, 0, stream>>>(in, out, n, seed, threshold, keep, first);
  return cudaGetLastError();
}

cudaError_t sum_of_squares(const float* g, std::size_t n, double* out, cudaStream_t stream) {
  std::size_t bytes = 0;
  cudaError_t e = cub::DeviceReduce::TransformReduce(nullptr, bytes, g, out, n, plus{}, square{}, 0.0, stream);
  if (e != cudaSuccess) return e;
  void* tmp = nullptr;
  if ((e = cudaMallocAsync(&tmp, bytes, stream)) != cudaSuccess) return e;
  e = cub::DeviceReduce::TransformReduce(tmp, bytes, g, out, n, plus{}, square{}, 0.0, stream);
  const cudaError_t f = cudaFreeAsync(tmp, stream);
  return e != cudaSuccess ? e : f;
}

cudaError_t adamw_step(float* p, float* m, float* v, const float* g, std::size_t n, const train::adamw_step_constants& c,
                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = grid_for(n, threads);
  adamw_kernel<<<blocks, threads, 0, stream>>>(p, m, v, g, n, c);
  return cudaGetLastError();
}

cudaError_t adamw8bit_step(float* p, const float* g, std::uint8_t* state1, std::uint8_t* state2, float* absmax1, float* absmax2,
                           std::size_t n, const float* qmap1, const float* qmap2, const train::adamw8bit_constants& a, float wd,
                           cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const std::size_t blocks = (n + adam8_block - 1) / adam8_block;
  adamw8bit_kernel<<<unsigned(blocks), adam8_block, 0, stream>>>(p, g, state1, state2, absmax1, absmax2, n, qmap1, qmap2, a, wd);
  return cudaGetLastError();
}

cudaError_t adamw8bit_step_32bit(float* p, float* state1, float* state2, const float* g, std::size_t n, const train::adamw8bit_constants& a,
                                 float wd, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  adamw8bit_32bit_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(p, state1, state2, g, n, a, wd);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

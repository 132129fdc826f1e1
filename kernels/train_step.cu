// SPDX-License-Identifier: MIT
#include "train_step.cuh"

#include <cub/device/device_reduce.cuh>

#include "lora/dropout_mask.hpp"

namespace loralab::cuda {
namespace {

constexpr int threads = 256;

unsigned blocks_for(std::size_t n) { return unsigned((n + threads - 1) / threads); }

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

constexpr unsigned max_blocks = 65535;

}  // namespace

cudaError_t lora_dropout(const float* in, float* out, std::size_t n, std::uint64_t seed, std::uint64_t threshold, float keep,
                         std::uint64_t first, bool accumulate, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = blocks_for(n) < max_blocks ? blocks_for(n) : max_blocks;
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
  const unsigned blocks = blocks_for(n) < max_blocks ? blocks_for(n) : max_blocks;
  adamw_kernel<<<blocks, threads, 0, stream>>>(p, m, v, g, n, c);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

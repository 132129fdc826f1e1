// SPDX-License-Identifier: MIT
#include "quant_4bit.cuh"

#include <cub/block/block_reduce.cuh>

#include "quant/codec.hpp"

namespace loralab::cuda {
namespace {

constexpr int threads = 128;

template <code4 T>
__device__ std::uint8_t encode(float v) {
  if constexpr (T == code4::nf4) return quant::nf4_encode(v);
  else return quant::fp4_encode(v);
}
template <code4 T>
__device__ float decode(std::uint8_t c) {
  if constexpr (T == code4::nf4) return quant::nf4_decode(c);
  else return quant::fp4_decode(c);
}

/// One CUDA block per quantization block: absmax by CUB block reduce, then pairs of codes packed into bytes.
template <code4 T>
__global__ void quantize_kernel(const float* x, std::size_t n, int block, std::uint8_t* codes, float* absmax) {
  using reduce = cub::BlockReduce<float, threads>;
  __shared__ typename reduce::TempStorage tmp;
  __shared__ float scale;
  const std::size_t start = std::size_t(blockIdx.x) * block;
  const std::size_t len = min(std::size_t(block), n - start);
  float am = quant::absmax_init;
  for (std::size_t i = threadIdx.x; i < std::size_t(block); i += threads)
    am = quant::absmax_step(am, i < len ? x[start + i] : 0.0f);
  const float block_max = reduce(tmp).Reduce(am, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) {
    absmax[blockIdx.x] = block_max;
    scale = quant::block_scale(block_max);
  }
  __syncthreads();
  for (std::size_t k = threadIdx.x; 2 * k < len; k += threads) {
    const float a = x[start + 2 * k];
    const float b = 2 * k + 1 < len ? x[start + 2 * k + 1] : 0.0f;
    codes[start / 2 + k] = quant::pack_pair(encode<T>(quant::normalise(a, scale)), encode<T>(quant::normalise(b, scale)));
  }
}

template <code4 T>
__global__ void dequantize_kernel(const std::uint8_t* codes, const float* absmax, std::size_t n, int block, float* out) {
  const std::size_t k = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;  // byte index
  if (2 * k >= n) return;
  const std::uint8_t byte = codes[k];
  const float am = absmax[(2 * k) / block];
  out[2 * k] = quant::scale_code(decode<T>(byte >> 4), am);
  if (2 * k + 1 < n) out[2 * k + 1] = quant::scale_code(decode<T>(byte & 0x0F), am);
}

}  // namespace

cudaError_t quantize_4bit(code4 type, int block, const float* x, std::size_t n, std::uint8_t* codes, float* absmax,
                          cudaStream_t stream) {
  if (n == 0 || block < 32 || block > 4096 || (block & (block - 1))) return cudaErrorInvalidValue;
  const unsigned grid = unsigned((n + block - 1) / block);
  if (type == code4::nf4) quantize_kernel<code4::nf4><<<grid, threads, 0, stream>>>(x, n, block, codes, absmax);
  else quantize_kernel<code4::fp4><<<grid, threads, 0, stream>>>(x, n, block, codes, absmax);
  return cudaGetLastError();
}

cudaError_t dequantize_4bit(code4 type, int block, const std::uint8_t* codes, const float* absmax, std::size_t n,
                            float* out, cudaStream_t stream) {
  if (n == 0 || block < 32 || block > 4096 || (block & (block - 1))) return cudaErrorInvalidValue;
  const std::size_t bytes = (n + 1) / 2;
  const unsigned grid = unsigned((bytes + 255) / 256);
  if (type == code4::nf4) dequantize_kernel<code4::nf4><<<grid, 256, 0, stream>>>(codes, absmax, n, block, out);
  else dequantize_kernel<code4::fp4><<<grid, 256, 0, stream>>>(codes, absmax, n, block, out);
  return cudaGetLastError();
}

bool device_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (why) *why = err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device";
    return false;
  }
  return true;
}

}  // namespace loralab::cuda

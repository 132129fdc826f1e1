// SPDX-License-Identifier: MIT
#include "quant_8bit.cuh"

#include <cub/block/block_reduce.cuh>

#include "core/bf16.hpp"
#include "grid.cuh"
#include "quant/codec.hpp"
#include "quant/codebooks.hpp"

namespace loralab::cuda {
namespace {

constexpr int threads = 128;
constexpr int nested_block = 256;

bool valid_block(int block) { return block >= 32 && block <= 4096 && (block & (block - 1)) == 0; }

/// One CUDA block per quantization block: absmax (padding zeros included, as bnb), then one code per element by the
/// map's binary search; the map is staged in shared memory.
__global__ void quantize_8bit_kernel(const float* map, const float* x, std::size_t n, int block, std::uint8_t* codes, float* absmax) {
  using reduce = cub::BlockReduce<float, threads>;
  __shared__ typename reduce::TempStorage tmp;
  __shared__ float scale;
  __shared__ float code[256];
  for (int i = threadIdx.x; i < 256; i += threads) code[i] = map[i];
  const std::size_t start = std::size_t(blockIdx.x) * block;
  const std::size_t len = min(std::size_t(block), n - start);
  float am = quant::absmax_init;
  for (std::size_t i = threadIdx.x; i < std::size_t(block); i += threads) am = quant::absmax_step(am, i < len ? x[start + i] : 0.0f);
  const float block_max = reduce(tmp).Reduce(am, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) {
    absmax[blockIdx.x] = block_max;
    scale = quant::block_scale(block_max);
  }
  __syncthreads();
  for (std::size_t i = threadIdx.x; i < len; i += threads) codes[start + i] = quant::dynamic8_encode(code, quant::normalise(x[start + i], scale));
}

__global__ void dequantize_8bit_kernel(const float* map, const std::uint8_t* codes, const float* absmax, std::size_t n, int block, float* out) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = quant::scale_code(map[codes[i]], absmax[i / block]);
}

__global__ void centre_kernel(float* absmax, std::size_t nb, float offset) {
  for (std::size_t b = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; b < nb; b += std::size_t(gridDim.x) * blockDim.x)
    absmax[b] = absmax[b] - offset;
}

template <code4 T>
__device__ float decode4(std::uint8_t c) {
  if constexpr (T == code4::nf4) return quant::nf4_decode(c);
  else return quant::fp4_decode(c);
}

/// The absmax of block b: stored, or the nested one (map · absmax2 + offset).
struct plain_absmax {
  const float* absmax;
  __device__ float operator()(std::size_t b) const { return absmax[b]; }
};
struct nested_absmax {
  const std::uint8_t* qabsmax;
  const float *absmax2, *map;
  float offset;
  __device__ float operator()(std::size_t b) const { return quant::scale_code(map[qabsmax[b]], absmax2[b / nested_block]) + offset; }
};
struct to_float {
  __device__ float operator()(float v) const { return v; }
};
struct to_bf16 {
  __device__ std::uint16_t operator()(float v) const { return core::bf16_bits(v); }
};

template <code4 T, class Absmax, class Out, class Convert>
__global__ void dequantize_4bit_kernel(const std::uint8_t* codes, Absmax am_of, std::size_t n, int block, Out* out, Convert convert) {
  for (std::size_t k = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; 2 * k < n; k += std::size_t(gridDim.x) * blockDim.x) {
    const std::uint8_t byte = codes[k];
    const float am = am_of((2 * k) / block);
    out[2 * k] = convert(quant::scale_code(decode4<T>(byte >> 4), am));
    if (2 * k + 1 < n) out[2 * k + 1] = convert(quant::scale_code(decode4<T>(byte & 0x0F), am));
  }
}

unsigned grid_for(std::size_t items) { return cuda::grid_for(items, 256); }

template <class Absmax, class Out, class Convert>
cudaError_t launch_dequantize_4bit(code4 type, int block, const std::uint8_t* codes, Absmax am, std::size_t n, Out* out, Convert convert,
                                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!valid_block(block)) return cudaErrorInvalidValue;
  const unsigned grid = grid_for((n + 1) / 2);
  if (type == code4::nf4) dequantize_4bit_kernel<code4::nf4><<<grid, 256, 0, stream>>>(codes, am, n, block, out, convert);
  else dequantize_4bit_kernel<code4::fp4><<<grid, 256, 0, stream>>>(codes, am, n, block, out, convert);
  return cudaGetLastError();
}

}  // namespace

cudaError_t quantize_8bit(const float* map, int block, const float* x, std::size_t n, std::uint8_t* codes, float* absmax, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!valid_block(block)) return cudaErrorInvalidValue;
  quantize_8bit_kernel<<<unsigned((n + block - 1) / block), threads, 0, stream>>>(map, x, n, block, codes, absmax);
  return cudaGetLastError();
}

cudaError_t dequantize_8bit(const float* map, int block, const std::uint8_t* codes, const float* absmax, std::size_t n, float* out,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!valid_block(block)) return cudaErrorInvalidValue;
  dequantize_8bit_kernel<<<grid_for(n), 256, 0, stream>>>(map, codes, absmax, n, block, out);
  return cudaGetLastError();
}

cudaError_t centre_absmax(float* absmax, std::size_t nb, float offset, cudaStream_t stream) {
  if (nb == 0) return cudaSuccess;
  centre_kernel<<<grid_for(nb), 256, 0, stream>>>(absmax, nb, offset);
  return cudaGetLastError();
}

cudaError_t dequantize_4bit_nested(code4 type, int block, const std::uint8_t* codes, const std::uint8_t* qabsmax, const float* absmax2,
                                   const float* map, float offset, std::size_t n, float* out, cudaStream_t stream) {
  return launch_dequantize_4bit(type, block, codes, nested_absmax{qabsmax, absmax2, map, offset}, n, out, to_float{}, stream);
}

cudaError_t dequantize_4bit_bf16(code4 type, int block, const std::uint8_t* codes, const float* absmax, std::size_t n, std::uint16_t* out,
                                 cudaStream_t stream) {
  return launch_dequantize_4bit(type, block, codes, plain_absmax{absmax}, n, out, to_bf16{}, stream);
}

}  // namespace loralab::cuda

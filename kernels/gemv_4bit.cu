// SPDX-License-Identifier: MIT
#include "gemv_4bit.cuh"

#include "gemv_4bit_lane.hpp"

namespace loralab::cuda {
namespace {

constexpr int warps_per_block = 4;

template <bool NF4>
__global__ void gemv_4bit_kernel(const std::uint8_t* __restrict codes, const float* __restrict absmax, int N, int K, int block,
                                 const float* __restrict x, float* __restrict y) {
  const int lane = int(threadIdx.x) % gemv_lanes, n = int(blockIdx.x) * warps_per_block + int(threadIdx.x) / gemv_lanes;
  if (n >= N) return;  // a whole warp leaves together
  const std::uint64_t first = std::uint64_t(n) * std::uint64_t(K);
  float acc = gemv_4bit_lane<NF4>(reinterpret_cast<const std::uint32_t*>(codes + first / 2), absmax, first, K, block, x, lane);
  for (int o = gemv_lanes / 2; o > 0; o /= 2) acc += __shfl_down_sync(0xFFFFFFFFu, acc, o);
  if (lane == 0) y[n] = acc;
}

}  // namespace

cudaError_t gemv_4bit(const weight_4bit& w, const float* x, float* y, cudaStream_t stream) {
  if (w.N == 0) return cudaSuccess;
  if (w.K % 8 != 0 || w.block % 8 != 0 || w.block <= 0) return cudaErrorInvalidValue;
  const unsigned grid = unsigned((w.N + warps_per_block - 1) / warps_per_block);
  if (w.type == code4::nf4) gemv_4bit_kernel<true><<<grid, warps_per_block * gemv_lanes, 0, stream>>>(w.codes, w.absmax, w.N, w.K, w.block, x, y);
  else gemv_4bit_kernel<false><<<grid, warps_per_block * gemv_lanes, 0, stream>>>(w.codes, w.absmax, w.N, w.K, w.block, x, y);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

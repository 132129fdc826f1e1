// SPDX-License-Identifier: MIT
#pragma once
// A block-wide sum or max of one float per thread (CUB's BlockReduce), returned to every thread: the row-wise
// kernels' reduction (layers.cu, attention.cu). Threads is the block size the kernel launches with; tmp and slot
// (the kernel's __shared__ storage) are free for the next reduction on return.
#include <cub/block/block_reduce.cuh>

namespace loralab::cuda {

template <int Threads>
using block_reduce_storage = typename cub::BlockReduce<float, Threads>::TempStorage;

/// The block's Σ v (Max = false) or max v (Max = true), known to every thread.
template <int Threads, bool Max = false>
__device__ float block_reduce_all(float v, block_reduce_storage<Threads>& tmp, float& slot) {
  using reduce = cub::BlockReduce<float, Threads>;
  const float r = Max ? reduce(tmp).Reduce(v, [](float a, float b) { return fmaxf(a, b); }) : reduce(tmp).Sum(v);
  if (threadIdx.x == 0) slot = r;
  __syncthreads();
  const float out = slot;
  __syncthreads();
  return out;
}

}  // namespace loralab::cuda

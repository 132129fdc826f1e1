// SPDX-License-Identifier: MIT
#pragma once
// The tile loop both frozen linears share (linear.cu in float32, linear_bf16.cu in bfloat16): a 4-bit weight W (N, K)
// is dequantized `tile_rows` rows at a time into a workspace, and after each tile f(n0, nt) multiplies with it.
// Every tile starts on a quantization block (the blocks run over the flattened weight), or there is one tile.
#include <cstddef>

#include <cuda_runtime.h>

#include "linear.cuh"

namespace loralab::cuda::detail {

inline bool tiles_fit(const weight_4bit& w, int tile_rows) {
  return tile_rows > 0 && (tile_rows >= w.N || (std::size_t(tile_rows) * std::size_t(w.K)) % std::size_t(w.block) == 0);
}

/// dequantize(codes, absmax, n, tile) fills the workspace with n weights from the tile's first block.
template <class T, class Dequantize, class F>
cudaError_t for_each_tile(const weight_4bit& w, T* tile, int tile_rows, Dequantize&& dequantize, F&& f) {
  if (!tiles_fit(w, tile_rows)) return cudaErrorInvalidValue;
  for (int n0 = 0; n0 < w.N; n0 += tile_rows) {
    const int nt = tile_rows < w.N - n0 ? tile_rows : w.N - n0;
    const std::size_t first = std::size_t(n0) * w.K;
    cudaError_t e = dequantize(w.codes + first / 2, w.absmax + first / w.block, std::size_t(nt) * w.K, tile);
    if (e != cudaSuccess || (e = f(n0, nt)) != cudaSuccess) return e;
  }
  return cudaGetLastError();
}

}  // namespace loralab::cuda::detail

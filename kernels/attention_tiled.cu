// SPDX-License-Identifier: MIT
#include "attention_tiled.cuh"

#include <cmath>
#include <cstddef>

#include "attention_tiled_row.hpp"

namespace loralab::cuda {
namespace {

template <int DMax>
__global__ void attention_tiled_kernel(const float* __restrict q, const float* __restrict k, const float* __restrict v, int T, int H,
                                       int Hkv, int D, float scale, float* __restrict out) {
  constexpr int ld = DMax + 1;  // padded rows: threads reading different rows hit different banks
  __shared__ float Qs[tiled_query_rows * ld], Ks[tiled_keys * ld], Vs[tiled_keys * ld];
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H, kvh = h / (H / Hkv);
  const int r0 = int(blockIdx.x) * tiled_query_rows, i = int(threadIdx.x), t = r0 + i;
  const int rows = min(tiled_query_rows, T - r0);
  const std::size_t qs = std::size_t(H) * D, kvs = std::size_t(Hkv) * D;
  for (int e = i; e < rows * D; e += tiled_query_rows)
    Qs[(e / D) * ld + e % D] = q[(std::size_t(b) * T + r0 + e / D) * qs + std::size_t(h) * D + e % D];
  float m = -INFINITY, l = 0.0f, acc[DMax];
  for (int d = 0; d < DMax; ++d) acc[d] = 0.0f;
  const int last = r0 + rows;  // keys [0, last) are seen by some row of the block
  for (int j0 = 0; j0 < last; j0 += tiled_keys) {
    const int nt = min(tiled_keys, last - j0);
    __syncthreads();
    for (int e = i; e < nt * D; e += tiled_query_rows) {
      const std::size_t g = (std::size_t(b) * T + j0 + e / D) * kvs + std::size_t(kvh) * D + e % D;
      Ks[(e / D) * ld + e % D] = k[g], Vs[(e / D) * ld + e % D] = v[g];
    }
    __syncthreads();
    const int nk = min(nt, t - j0 + 1);  // row t sees keys ≤ t
    if (i < rows && nk > 0) online_softmax_tile<DMax>(Qs + i * ld, 1, Ks, Vs, ld, nk, D, scale, m, l, acc);
  }
  if (i < rows)
    for (int d = 0; d < D; ++d) out[(std::size_t(b) * T + t) * qs + std::size_t(h) * D + d] = acc[d] / l;
}

}  // namespace

cudaError_t attention_forward_tiled(const attention_dims& a, const float* q, const float* k, const float* v, float* out, cudaStream_t stream) {
  if (a.batch <= 0 || a.seq <= 0 || a.heads <= 0 || a.kv_heads <= 0 || a.heads % a.kv_heads != 0 || a.head_dim <= 0 ||
      a.head_dim > tiled_max_head_dim)
    return cudaErrorInvalidValue;
  const dim3 grid(unsigned((a.seq + tiled_query_rows - 1) / tiled_query_rows), unsigned(a.batch * a.heads));
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  if (a.head_dim <= 64)
    attention_tiled_kernel<64><<<grid, tiled_query_rows, 0, stream>>>(q, k, v, a.seq, a.heads, a.kv_heads, a.head_dim, scale, out);
  else
    attention_tiled_kernel<128><<<grid, tiled_query_rows, 0, stream>>>(q, k, v, a.seq, a.heads, a.kv_heads, a.head_dim, scale, out);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

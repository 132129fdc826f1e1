// SPDX-License-Identifier: MIT
#include "layers.cuh"

#include "block_reduce.cuh"
#include "grid.cuh"

namespace loralab::cuda {
namespace {

constexpr int threads = 256;
using block_reduce = cub::BlockReduce<float, threads>;

__device__ float block_sum(float v, block_reduce::TempStorage& tmp, float& shared) { return block_reduce_all<threads>(v, tmp, shared); }
__device__ float block_max(float v, block_reduce::TempStorage& tmp, float& shared) {
  return block_reduce_all<threads, true>(v, tmp, shared);
}

__global__ void rms_forward_kernel(const float* x, const float* g, float eps, int C, float* y, float* rstd) {
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  const float* xr = x + std::size_t(blockIdx.x) * C;
  float ss = 0;
  for (int j = threadIdx.x; j < C; j += threads) ss += xr[j] * xr[j];
  const float r = 1.0f / sqrtf(block_sum(ss, tmp, shared) / float(C) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  float* yr = y + std::size_t(blockIdx.x) * C;
  for (int j = threadIdx.x; j < C; j += threads) yr[j] = xr[j] * r * g[j];
}

__global__ void rms_backward_kernel(const float* x, const float* g, const float* rstd, const float* dy, int C, float* dx) {
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  const std::size_t row = std::size_t(blockIdx.x) * C;
  const float r = rstd[blockIdx.x];
  float dot = 0;
  for (int j = threadIdx.x; j < C; j += threads) dot += dy[row + j] * g[j] * (x[row + j] * r);
  const float mean = block_sum(dot, tmp, shared) / float(C);
  for (int j = threadIdx.x; j < C; j += threads) dx[row + j] = r * (dy[row + j] * g[j] - x[row + j] * r * mean);
}

__global__ void swiglu_forward_kernel(const float* gate, const float* up, std::size_t n, float* h) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const float a = gate[i];
    h[i] = a / (1.0f + expf(-a)) * up[i];
  }
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* dh, std::size_t n, float* dgate, float* dup) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const float a = gate[i], s = 1.0f / (1.0f + expf(-a)), g = dh[i];
    dup[i] = a * s * g;
    dgate[i] = s * (1.0f + a * (1.0f - s)) * up[i] * g;
  }
}

__global__ void rotary_kernel(float* x, int M, int heads, int half, const float* cos, const float* sin, const int* pos, float sign) {
  const std::size_t total = std::size_t(M) * heads * half;
  for (std::size_t k = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; k < total; k += std::size_t(gridDim.x) * blockDim.x) {
    const int i = int(k % half);
    const std::size_t rh = k / half;  // row · heads + head
    const int r = int(rh / heads);
    const int p = pos[r];
    float* v = x + rh * 2 * half;
    const float c = cos[std::size_t(p) * half + i], s = sign * sin[std::size_t(p) * half + i];
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

__global__ void embedding_kernel(const float* table, const int* ids, int C, std::size_t n, float* out) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = table[std::size_t(ids[i / C]) * C + i % C];
}
__global__ void add_kernel(const float* x, std::size_t n, float* y) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}
__global__ void cross_entropy_kernel(const float* logits, const int* targets, int V, float denominator, float* row_loss, float* dlogits) {
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  const std::size_t row = std::size_t(blockIdx.x) * V;
  const int t = targets[blockIdx.x];
  if (t == -100) {
    for (int j = threadIdx.x; j < V; j += threads) dlogits[row + j] = 0.0f;
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0f;
    return;
  }
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < V; j += threads) mx = fmaxf(mx, logits[row + j]);
  mx = block_max(mx, tmp, shared);
  float sum = 0;
  for (int j = threadIdx.x; j < V; j += threads) sum += expf(logits[row + j] - mx);
  const float lse = mx + logf(block_sum(sum, tmp, shared));
  if (threadIdx.x == 0) row_loss[blockIdx.x] = lse - logits[row + t];
  for (int j = threadIdx.x; j < V; j += threads) dlogits[row + j] = expf(logits[row + j] - lse) / denominator - (j == t ? 1.0f / denominator : 0.0f);
}

unsigned grid_for(std::size_t n) { return cuda::grid_for(n, threads); }

}  // namespace

cudaError_t rms_norm_forward(const float* x, const float* g, float eps, int M, int C, float* y, float* rstd, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  rms_forward_kernel<<<M, threads, 0, stream>>>(x, g, eps, C, y, rstd);
  return cudaGetLastError();
}
cudaError_t rms_norm_backward(const float* x, const float* g, const float* rstd, const float* dy, int M, int C, float* dx, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  rms_backward_kernel<<<M, threads, 0, stream>>>(x, g, rstd, dy, C, dx);
  return cudaGetLastError();
}
cudaError_t swiglu_forward(const float* gate, const float* up, std::size_t n, float* h, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  swiglu_forward_kernel<<<grid_for(n), threads, 0, stream>>>(gate, up, n, h);
  return cudaGetLastError();
}
cudaError_t swiglu_backward(const float* gate, const float* up, const float* dh, std::size_t n, float* dgate, float* dup, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  swiglu_backward_kernel<<<grid_for(n), threads, 0, stream>>>(gate, up, dh, n, dgate, dup);
  return cudaGetLastError();
}
cudaError_t rotary(float* x, int M, int heads, int head_dim, const float* cos, const float* sin, const int* pos, bool inverse, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  if (head_dim % 2) return cudaErrorInvalidValue;
  rotary_kernel<<<grid_for(std::size_t(M) * heads * (head_dim / 2)), threads, 0, stream>>>(x, M, heads, head_dim / 2, cos, sin, pos,
                                                                                          inverse ? -1.0f : 1.0f);
  return cudaGetLastError();
}
cudaError_t cross_entropy(const float* logits, const int* targets, int M, int V, float denominator, float* row_loss, float* dlogits,
                          cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  if (!(denominator > 0)) return cudaErrorInvalidValue;
  cross_entropy_kernel<<<M, threads, 0, stream>>>(logits, targets, V, denominator, row_loss, dlogits);
  return cudaGetLastError();
}
cudaError_t embedding_rows(const float* table, const int* ids, int M, int C, float* out, cudaStream_t stream) {
  const std::size_t n = std::size_t(M) * C;
  if (n == 0) return cudaSuccess;
  embedding_kernel<<<grid_for(n), threads, 0, stream>>>(table, ids, C, n, out);
  return cudaGetLastError();
}
cudaError_t add_into(float* y, const float* x, std::size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  add_kernel<<<grid_for(n), threads, 0, stream>>>(x, n, y);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

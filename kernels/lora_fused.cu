// SPDX-License-Identifier: MIT
#include "lora_fused.cuh"

#include "grid.cuh"
#include "lora_fused_threads.hpp"

namespace loralab::cuda {
namespace {

constexpr int down_threads = lora_down_threads, dA_threads = 128, dA_chunk = lora_dA_chunk, dx_threads = 256;

lora_drop drop_of(const dropout_mask& d) { return make_lora_drop(d.p, d.seed, d.first); }

template <int R>
__global__ void lora_down_kernel(const float* __restrict x, const float* __restrict A, int K, int r, lora_drop d, float* __restrict h) {
  __shared__ float s[R][down_threads];
  float partial[R];
  const int t = int(threadIdx.x);
  lora_down_thread<R>(x, A, K, r, int(blockIdx.x), t, down_threads, d, partial);
  for (int j = 0; j < R; ++j)
    if (j < r) s[j][t] = partial[j];
  __syncthreads();
  for (int o = down_threads / 2; o > 0; o /= 2) {
    for (int j = 0; j < R; ++j)
      if (j < r) tree_step(s[j], t, o);
    __syncthreads();
  }
  if (t < r) h[std::size_t(blockIdx.x) * r + t] = s[t][0];
}

__global__ void lora_dx_kernel(const float* __restrict dh, const float* __restrict A, int M, int K, int r, lora_drop d, float* __restrict dx) {
  const std::size_t n = std::size_t(M) * K;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    dx[i] += dropped_value(d, i, lora_dx_element(dh, A, K, r, int(i / K), int(i % K)));
}

template <int R>
__global__ void lora_dA_kernel(const float* __restrict x, const float* __restrict dh, int M, int K, int r, lora_drop d, float* __restrict part) {
  const int k = int(blockIdx.x) * dA_threads + int(threadIdx.x), c = int(blockIdx.y);
  if (k >= K) return;
  const int m0 = c * dA_chunk, m1 = m0 + dA_chunk < M ? m0 + dA_chunk : M;
  float partial[R];
  lora_dA_thread<R>(x, dh, K, r, k, m0, m1, d, partial);
  for (int j = 0; j < R; ++j)
    if (j < r) part[(std::size_t(c) * r + j) * K + k] = partial[j];
}

__global__ void add_chunks_kernel(const float* __restrict part, int chunks, std::size_t n, float* __restrict dA) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int c = 0; c < chunks; ++c) s += part[std::size_t(c) * n + i];
    dA[i] += s;
  }
}

/// f.template operator()<R>() with R the smallest of 8, 16, 32, 64 that holds r.
template <class F>
cudaError_t with_rank(int r, F&& f) {
  if (r <= 0 || r > 64) return cudaErrorInvalidValue;
  if (r <= 8) return f.template operator()<8>();
  if (r <= 16) return f.template operator()<16>();
  if (r <= 32) return f.template operator()<32>();
  return f.template operator()<64>();
}

}  // namespace

cudaError_t lora_forward_fused(cublasHandle_t h, const float* x, int M, int K, int N, int r, const float* A, const float* B, float scaling,
                               const dropout_mask& drop, float* hbuf, float* y, cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  const lora_drop d = drop_of(drop);
  cudaError_t e = with_rank(r, [&]<int R>() {
    lora_down_kernel<R><<<unsigned(M), down_threads, 0, stream>>>(x, A, K, r, d, hbuf);
    return cudaGetLastError();
  });
  if (e != cudaSuccess) return e;
  cublasSetStream(h, stream);
  return gemm_rm(h, false, true, M, N, r, scaling, hbuf, r, B, r, 1.0f, y, N);  // y += s · h · Bᵀ
}

cudaError_t lora_backward_fused(cublasHandle_t h, const float* x, const float* dy, int M, int K, int N, int r, const float* A, const float* B,
                                float scaling, const dropout_mask& drop, const float* hbuf, float* dh, float* dA, float* dB, float* dx,
                                cudaStream_t stream) {
  if (M == 0) return cudaSuccess;
  if (r <= 0 || r > 64) return cudaErrorInvalidValue;
  cublasSetStream(h, stream);
  cudaError_t e;
  if ((e = gemm_rm(h, false, false, M, r, N, scaling, dy, N, B, r, 0.0f, dh, r)) != cudaSuccess) return e;    // dh = s · dy · B
  if ((e = gemm_rm(h, true, false, N, r, M, scaling, dy, N, hbuf, r, 1.0f, dB, r)) != cudaSuccess) return e;  // dB += s · dyᵀ · h
  const lora_drop d = drop_of(drop);
  const int chunks = (M + dA_chunk - 1) / dA_chunk;
  const std::size_t n = std::size_t(r) * K;
  float* part = nullptr;
  if ((e = cudaMallocAsync(reinterpret_cast<void**>(&part), std::size_t(chunks) * n * sizeof(float), stream)) != cudaSuccess) return e;
  e = with_rank(r, [&]<int R>() {
    lora_dA_kernel<R><<<dim3(unsigned((K + dA_threads - 1) / dA_threads), unsigned(chunks)), dA_threads, 0, stream>>>(x, dh, M, K, r, d, part);
    return cudaGetLastError();
  });
  if (e == cudaSuccess) {
    add_chunks_kernel<<<grid_for(n, 256), 256, 0, stream>>>(part, chunks, n, dA);
    lora_dx_kernel<<<grid_for(std::size_t(M) * K, dx_threads), dx_threads, 0, stream>>>(dh, A, M, K, r, d, dx);
    e = cudaGetLastError();
  }
  const cudaError_t freed = cudaFreeAsync(part, stream);
  return e != cudaSuccess ? e : freed;
}

}  // namespace loralab::cuda

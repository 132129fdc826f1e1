// SPDX-License-Identifier: MIT
#include "linear.cuh"

#include "lora/dropout_mask.hpp"
#include "tiles.cuh"
#include "train_step.cuh"

namespace loralab::cuda {
namespace {

cudaError_t status(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown; }

cudaError_t dropped(const float* x, std::size_t n, const dropout_mask& d, float* xd, cudaStream_t stream) {
  return lora_dropout(x, xd, n, d.seed, lora::drop_threshold(d.p), float(1.0 / (1.0 - d.p)), d.first, false, stream);
}

}  // namespace

cudaError_t gemm_rm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
                    float beta, float* C, int ldc) {
  // row-major C = op(A)·op(B)  ⟺  column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep each one's transpose flag
  return status(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

/// The float32 tile loop: dequantize_4bit into `tile`, then f(n0, nt).
template <class F>
cudaError_t for_each_tile(const weight_4bit& w, float* tile, int tile_rows, cudaStream_t stream, F&& f) {
  return detail::for_each_tile(w, tile, tile_rows, [&](const std::uint8_t* codes, const float* absmax, std::size_t n, float* out) {
    return dequantize_4bit(w.type, w.block, codes, absmax, n, out, stream);
  }, f);
}

cudaError_t frozen_linear_forward(cublasHandle_t h, const weight_4bit& w, const float* x, int M, float* y, float* tile, int tile_rows,
                                  cudaStream_t stream) {
  cublasSetStream(h, stream);
  return for_each_tile(w, tile, tile_rows, stream, [&](int n0, int nt) {  // y[:, n0:n0+nt] = x (M, K) · tileᵀ
    return gemm_rm(h, false, true, M, nt, w.K, 1.0f, x, w.K, tile, w.K, 0.0f, y + n0, w.N);
  });
}

cudaError_t frozen_linear_backward(cublasHandle_t h, const weight_4bit& w, const float* dy, int M, float* dx, float* tile, int tile_rows,
                                   cudaStream_t stream) {
  cublasSetStream(h, stream);
  return for_each_tile(w, tile, tile_rows, stream, [&](int n0, int nt) {  // dx (M, K) (+)= dy[:, n0:n0+nt] · tile (nt, K)
    return gemm_rm(h, false, false, M, w.K, nt, 1.0f, dy + n0, w.N, tile, w.K, n0 == 0 ? 0.0f : 1.0f, dx, w.K);
  });
}

cudaError_t lora_forward(cublasHandle_t h, const float* x, int M, int K, int N, int r, const float* A, const float* B, float scaling,
                         const dropout_mask& drop, float* xd, float* hbuf, float* y, cudaStream_t stream) {
  cublasSetStream(h, stream);
  const float* in = x;
  cudaError_t e;
  if (drop.p > 0) {
    if ((e = dropped(x, std::size_t(M) * K, drop, xd, stream)) != cudaSuccess) return e;
    in = xd;
  }
  if ((e = gemm_rm(h, false, true, M, r, K, 1.0f, in, K, A, K, 0.0f, hbuf, r)) != cudaSuccess) return e;  // h = in · Aᵀ
  return gemm_rm(h, false, true, M, N, r, scaling, hbuf, r, B, r, 1.0f, y, N);                         // y += s · h · Bᵀ
}

cudaError_t lora_backward(cublasHandle_t h, const float* x, const float* dy, int M, int K, int N, int r, const float* A, const float* B,
                          float scaling, const dropout_mask& drop, float* xd, const float* hbuf, float* dh, float* g, float* dA, float* dB,
                          float* dx, cudaStream_t stream) {
  cublasSetStream(h, stream);
  cudaError_t e;
  const float* in = x;
  if (drop.p > 0) {  // recomputed, the same mask
    if ((e = dropped(x, std::size_t(M) * K, drop, xd, stream)) != cudaSuccess) return e;
    in = xd;
  }
  if ((e = gemm_rm(h, false, false, M, r, N, scaling, dy, N, B, r, 0.0f, dh, r)) != cudaSuccess) return e;     // dh = s · dy · B
  if ((e = gemm_rm(h, true, false, N, r, M, scaling, dy, N, hbuf, r, 1.0f, dB, r)) != cudaSuccess) return e;   // dB += s · dyᵀ · h
  if ((e = gemm_rm(h, true, false, r, K, M, 1.0f, dh, r, in, K, 1.0f, dA, K)) != cudaSuccess) return e;        // dA += dhᵀ · in
  if (drop.p <= 0) return gemm_rm(h, false, false, M, K, r, 1.0f, dh, r, A, K, 1.0f, dx, K);                 // dx += dh · A
  if ((e = gemm_rm(h, false, false, M, K, r, 1.0f, dh, r, A, K, 0.0f, g, K)) != cudaSuccess) return e;        // g = dh · A
  return lora_dropout(g, dx, std::size_t(M) * K, drop.seed, lora::drop_threshold(drop.p), float(1.0 / (1.0 - drop.p)), drop.first, true,
                      stream);                                                                                // dx += mask ⊙ g
}

}  // namespace loralab::cuda

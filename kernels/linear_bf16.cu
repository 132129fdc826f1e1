// SPDX-License-Identifier: MIT
#include "linear_bf16.cuh"

#include "core/bf16.hpp"
#include "grid.cuh"
#include "quant_8bit.cuh"
#include "tiles.cuh"

namespace loralab::cuda {
namespace {

__global__ void to_bf16_kernel(const float* __restrict x, std::size_t n, std::uint16_t* __restrict out) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = core::bf16_bits(x[i]);
}

template <class F>
cudaError_t for_each_bf16_tile(const weight_4bit& w, std::uint16_t* tile, int tile_rows, cudaStream_t stream, F&& f) {
  return detail::for_each_tile(w, tile, tile_rows, [&](const std::uint8_t* codes, const float* absmax, std::size_t n, std::uint16_t* out) {
    return dequantize_4bit_bf16(w.type, w.block, codes, absmax, n, out, stream);
  }, f);
}

}  // namespace

cudaError_t to_bf16(const float* x, std::size_t n, std::uint16_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  to_bf16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, n, out);
  return cudaGetLastError();
}

cudaError_t gemm_rm_bf16(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, float alpha, const std::uint16_t* A, int lda,
                         const std::uint16_t* B, int ldb, float beta, float* C, int ldc) {
  // the transposed column-major problem, as gemm_rm
  const cublasStatus_t s = cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B, CUDA_R_16BF,
                                        ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
}

cudaError_t frozen_linear_forward_bf16(cublasHandle_t h, const weight_4bit& w, const float* x, int M, float* y, std::uint16_t* xb,
                                       std::uint16_t* tile, int tile_rows, cudaStream_t stream) {
  cublasSetStream(h, stream);
  if (const cudaError_t e = to_bf16(x, std::size_t(M) * w.K, xb, stream); e != cudaSuccess) return e;
  return for_each_bf16_tile(w, tile, tile_rows, stream, [&](int n0, int nt) {  // y[:, n0:n0+nt] = xb · tileᵀ
    return gemm_rm_bf16(h, false, true, M, nt, w.K, 1.0f, xb, w.K, tile, w.K, 0.0f, y + n0, w.N);
  });
}

cudaError_t frozen_linear_backward_bf16(cublasHandle_t h, const weight_4bit& w, const float* dy, int M, float* dx, std::uint16_t* dyb,
                                        std::uint16_t* tile, int tile_rows, cudaStream_t stream) {
  cublasSetStream(h, stream);
  if (const cudaError_t e = to_bf16(dy, std::size_t(M) * w.N, dyb, stream); e != cudaSuccess) return e;
  return for_each_bf16_tile(w, tile, tile_rows, stream, [&](int n0, int nt) {  // dx (+)= dyb[:, n0:n0+nt] · tile
    return gemm_rm_bf16(h, false, false, M, w.K, nt, 1.0f, dyb + n0, w.N, tile, w.K, n0 == 0 ? 0.0f : 1.0f, dx, w.K);
  });
}

}  // namespace loralab::cuda

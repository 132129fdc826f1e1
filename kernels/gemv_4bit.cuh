// SPDX-License-Identifier: MIT
#pragma once
// One-token generation's frozen linear: y (N) = W (N, K) · x (K) with W a 4-bit blockwise weight read packed, never
// dequantized to memory (bnb's gemv_4bit / kgemm_4bit_inference). One warp per output row; a lane reads 32-bit words
// of 8 codes and the block's absmax, multiplies in registers and the warp adds the partials (gemv_4bit_lane.hpp,
// which the CPU tests run too). Memory traffic: K/2 code bytes + K/block absmax floats per row against 4·K for a
// float32 SGEMV: ~7× less at block 64, which is all a GEMV's time.
// Layouts (device): codes [(N·K)/2] 4-byte aligned (cudaMalloc is), absmax [ceil(N·K/block)], x [K], y [N], float32.
// Limits: K % 8 == 0, block % 8 == 0 (the bnb blocks 32 … 4096 are), plain absmax (a double-quantized weight's
// absmax dequantized once at load, as cuda/device_model.hpp does).
// Benchmark: build/bench/cuda_bench (GB/s next to dequantize + cublasSgemv and a float32 cublasSgemv, 7B shapes).
#include <cuda_runtime.h>

#include "linear.cuh"

namespace loralab::cuda {

cudaError_t gemv_4bit(const weight_4bit& w, const float* x, float* y, cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// 4-bit blockwise quantize / dequantize on the GPU (bnb kQuantizeBlockwise / kDequantizeBlockwise).
//
// Layout: x row-major float32 [n]; codes uint8 [(n+1)/2], element 2k in the high nibble; absmax float32
// [ceil(n/B)]. The per-element math is quant/codec.hpp's, shared with the CPU reference, so a GPU result is
// checked against blockwise_tensor<S>::quantize_ref bit for bit (tests/kernels).
//
// Limitations:
//   1. float32 input and output here (bf16 output: quant_8bit.cuh's dequantize_4bit_bf16).
//   2. Double quantization is quant_8bit.cuh's (quantize the absmax with the dynamic map, dequantize_4bit_nested).
//   3. One CUDA block per quantization block; fine for B >= 64, wasteful for tiny tensors.
// Benchmark: build/bench/cuda_bench (nf4 dequantize GB/s next to a device-to-device copy).
#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

namespace loralab::cuda {

/// Which 4-bit code table: the kernels are instantiated for both.
enum class code4 { nf4, fp4 };

/// codes[(n+1)/2], absmax[ceil(n/block)] from x[n]; device pointers; block in {32 … 4096}.
cudaError_t quantize_4bit(code4 type, int block, const float* x, std::size_t n, std::uint8_t* codes, float* absmax,
                          cudaStream_t stream = nullptr);
/// out[n] = code[q] * absmax[block(i)]; device pointers.
cudaError_t dequantize_4bit(code4 type, int block, const std::uint8_t* codes, const float* absmax, std::size_t n,
                            float* out, cudaStream_t stream = nullptr);

/// True when a CUDA device is present; otherwise `why` says what the runtime reported.
bool device_available(std::string* why = nullptr);

}  // namespace loralab::cuda

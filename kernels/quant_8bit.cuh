// SPDX-License-Identifier: MIT
#pragma once
// 8-bit blockwise quantization with a 256-entry map (bnb's General8bit kQuantizeBlockwise / kDequantizeBlockwise:
// the dynamic map of 8-bit optimizer states and of double quantization's nested absmax), double-quantized 4-bit
// dequantization, and dequantization to bfloat16. The per-element math is quant/codec.hpp's and core/bf16.hpp's,
// shared with the CPU, so device results are checked against blockwise_tensor<S> bit for bit (tests/kernels).
//
// Layouts (device pointers): x, out float32 [n]; codes uint8 [n] (8-bit) or [(n+1)/2] (4-bit, element 2k high
// nibble); absmax float32 [ceil(n/block)]; map float32 [256] sorted (quant::codebooks::dynamic_signed for double
// quantization); nested: qabsmax uint8 [nb], absmax2 float32 [ceil(nb/256)], offset a host float.
//
// Double quantization of a 4-bit tensor on the device: quantize_4bit (absmax in device memory), the offset =
// bnb's absmax.mean() in torch's CPU reduction order computed on the host from the nb floats
// (quant::detail::mean_offset; nb is 1/64 of the weights), centre_absmax, then quantize_8bit with block 256.
// Limits: block a power of two in [32, 4096] (nested block 256); one CUDA block per quantization block.
// Benchmark: build/bench/cuda_bench (the 4-bit dequantize next to a device-to-device copy).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "quant_4bit.cuh"

namespace loralab::cuda {

cudaError_t quantize_8bit(const float* map, int block, const float* x, std::size_t n, std::uint8_t* codes, float* absmax,
                          cudaStream_t stream = nullptr);
/// out[i] = map[codes[i]] · absmax[i / block].
cudaError_t dequantize_8bit(const float* map, int block, const std::uint8_t* codes, const float* absmax, std::size_t n, float* out,
                            cudaStream_t stream = nullptr);
/// absmax[b] −= offset (the double-quantization centring).
cudaError_t centre_absmax(float* absmax, std::size_t nb, float offset, cudaStream_t stream = nullptr);
/// A double-quantized 4-bit tensor to float32: absmax_b = map[qabsmax[b]] · absmax2[b / 256] + offset, then as
/// dequantize_4bit.
cudaError_t dequantize_4bit_nested(code4 type, int block, const std::uint8_t* codes, const std::uint8_t* qabsmax, const float* absmax2,
                                   const float* map, float offset, std::size_t n, float* out, cudaStream_t stream = nullptr);
/// The same values as dequantize_4bit, rounded to bfloat16 (bits, round to nearest even) for bf16 products.
cudaError_t dequantize_4bit_bf16(code4 type, int block, const std::uint8_t* codes, const float* absmax, std::size_t n,
                                 std::uint16_t* out, cudaStream_t stream = nullptr);

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// The arithmetic of the 4-bit GEMV (kernels/gemv_4bit.cu) as host/device functions: the kernel runs them per lane,
// the CPU tests (tests/kernels/kernel_twins_test.cpp) run the same functions lane after lane and sum the partials in
// the warp's order, so a device result is compared with the CPU bit for bit and the indexing is tested everywhere.
//
// Row n of W (N, K) starts at code byte n·K/2 and is read as 32-bit words of 8 codes: byte i of word w (little
// endian) holds elements 8w + 2i (high nibble) and 8w + 2i + 1 (low nibble), all eight in one quantization block.
// Word w belongs to lane w mod 32; a lane adds ftz(code · absmax) · x[k] in k order (the weight dequantize_4bit
// would write, times x); the warp then adds lane i + o into lane i for o = 16, 8, 4, 2, 1 (shuffle-down).
// Requires K % 8 == 0 and block % 8 == 0.
#include <cstdint>

#include "core/host_device.hpp"
#include "quant/codec.hpp"

namespace loralab::cuda {

constexpr int gemv_lanes = 32;

template <bool NF4>
LORALAB_HOST_DEVICE float decode_4bit(std::uint8_t code) {
  if constexpr (NF4) return quant::nf4_decode(code);
  else return quant::fp4_decode(code);
}

/// One lane's partial of y[n] = W[n, :] · x: `row_words` the row's codes as words, row_first = n·K.
template <bool NF4>
LORALAB_HOST_DEVICE float gemv_4bit_lane(const std::uint32_t* row_words, const float* absmax, std::uint64_t row_first, int K, int block,
                                         const float* x, int lane) {
  float acc = 0.0f;
  for (int w = lane; w < K / 8; w += gemv_lanes) {
    const std::uint32_t word = row_words[w];
    const float am = absmax[(row_first + 8 * std::uint64_t(w)) / std::uint64_t(block)];
    const float* xs = x + 8 * w;
    for (int i = 0; i < 4; ++i) {
      const std::uint8_t byte = std::uint8_t(word >> (8 * i));
      acc += quant::scale_code(decode_4bit<NF4>(byte >> 4), am) * xs[2 * i];
      acc += quant::scale_code(decode_4bit<NF4>(byte & 0x0F), am) * xs[2 * i + 1];
    }
  }
  return acc;
}

/// The warp's shuffle-down sum of 32 lane partials, in its order, on the CPU.
inline float warp_sum_twin(float (&partial)[gemv_lanes]) {
  for (int o = gemv_lanes / 2; o > 0; o /= 2)
    for (int i = 0; i < o; ++i) partial[i] += partial[i + o];
  return partial[0];
}

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// bfloat16 bits, one rule for the CPU (nn/bf16_gemm.hpp) and the CUDA kernels (kernels/quant_8bit.cu's bf16
// outputs): round to nearest even, as torch's .to(bfloat16); NaN stays a quiet NaN.
#include <bit>
#include <cstdint>

#include "core/host_device.hpp"

namespace loralab::core {

LORALAB_HOST_DEVICE std::uint16_t bf16_bits(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
  return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
LORALAB_HOST_DEVICE float bf16_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

}  // namespace loralab::core

// SPDX-License-Identifier: MIT
#pragma once
// LoRA dropout's mask, one per-element rule for the CPU (lora/lora_linear.hpp) and the CUDA kernels
// (kernels/train_step.cu): element i of a step's (M, K) adapter input is dropped when hash_bits53(seed, i) falls
// below drop_threshold(p). A counter-based hash, so any thread, device or recomputation (gradient checkpointing,
// a replica running other rows of the batch) draws the same mask for the same (seed, i).
#include <cmath>
#include <cstdint>

#include "core/host_device.hpp"

namespace loralab::lora {

/// splitmix64 of (seed, index): the 53 high bits, k, are the uniform k·2⁻⁵³ in [0, 1), the same on every run and thread.
LORALAB_HOST_DEVICE std::uint64_t hash_bits53(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z >> 11;
}
/// The uniform in [0, 1) of (seed, index).
inline double hash_uniform(std::uint64_t seed, std::uint64_t index) { return double(hash_bits53(seed, index)) * 0x1.0p-53; }
/// hash_uniform(seed, i) < p  ⟺  hash_bits53(seed, i) < drop_threshold(p): the same mask in integers only, which
/// the compiler vectorizes (8 lanes of 64-bit multiplies with AVX-512; the double compare kept it scalar).
inline std::uint64_t drop_threshold(double p) {
  return p <= 0 ? 0 : p >= 1 ? (std::uint64_t(1) << 53) : std::uint64_t(std::ceil(p * 0x1.0p53));
}
/// The factor element i is multiplied by: 0 when dropped, `keep` = 1/(1-p) otherwise.
template <class S>
LORALAB_HOST_DEVICE S dropout_factor(std::uint64_t seed, std::uint64_t index, std::uint64_t threshold, S keep) {
  return hash_bits53(seed, index) < threshold ? S(0) : keep;
}

}  // namespace loralab::lora

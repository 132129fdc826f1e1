// SPDX-License-Identifier: MIT
#pragma once
// Memory by category, as a value: printed before work starts, compared in tests with the bytes really held.
#include <cstddef>
#include <ostream>

#include <fmt/core.h>

namespace loralab::nn {

struct memory_report {
  std::size_t weights = 0;       ///< frozen and trainable weights (quantized codes, or dense floats)
  std::size_t quant_stats = 0;   ///< absmax / nested statistics of quantized weights
  std::size_t adapters = 0;      ///< LoRA A and B
  std::size_t grads = 0;         ///< gradient buffers of trainable parameters
  std::size_t optimizer = 0;     ///< optimizer state
  std::size_t activations = 0;   ///< what the forward pass keeps for backward
  std::size_t workspace = 0;     ///< scratch reused inside a step (backward temporaries, dequant tiles, logits grads)

  std::size_t total() const { return weights + quant_stats + adapters + grads + optimizer + activations + workspace; }
  friend memory_report operator+(memory_report a, const memory_report& b) {
    a.weights += b.weights, a.quant_stats += b.quant_stats, a.adapters += b.adapters, a.grads += b.grads;
    a.optimizer += b.optimizer, a.activations += b.activations, a.workspace += b.workspace;
    return a;
  }
  friend bool operator==(const memory_report&, const memory_report&) = default;
  friend std::ostream& operator<<(std::ostream& os, const memory_report& m) {
    const auto mib = [](std::size_t b) { return fmt::format("{:.3f} MiB", double(b) / (1 << 20)); };
    return os << "memory: weights " << mib(m.weights) << ", quant stats " << mib(m.quant_stats) << ", adapters "
              << mib(m.adapters) << ", grads " << mib(m.grads) << ", optimizer " << mib(m.optimizer)
              << ", activations " << mib(m.activations) << ", workspace " << mib(m.workspace) << " = total "
              << mib(m.total());
  }
};

}  // namespace loralab::nn

// SPDX-License-Identifier: MIT
#pragma once
// Launch shape of the element-wise kernels: blocks of `threads` for a grid-stride loop over n items, capped at
// 65535 blocks (the loop strides over the rest).
#include <cstddef>

namespace loralab::cuda {

inline unsigned grid_for(std::size_t n, int threads) {
  const std::size_t g = (n + std::size_t(threads) - 1) / std::size_t(threads);
  return unsigned(g < 65535 ? g : 65535);
}

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// A Llama model_file with random N(0, scale) weights (norms 1 + N(0, scale)) for any config: what model-level tests
// and benches run on when the numbers, not the text, matter.
#include <random>

#include "nn/config.hpp"

namespace loralab::nn {

inline model_file random_model_file(const llama_config& c, std::uint64_t seed, float scale = 0.2f) {
  model_file f;
  f.config = c;
  std::mt19937_64 g(seed);
  std::normal_distribution<float> n(0.0f, scale);
  for (const auto& [name, shape] : expected_tensors(c)) {
    auto& t = f.tensors[name];
    t.shape = shape;
    std::size_t count = 1;
    for (auto d : shape) count *= std::size_t(d);
    t.data.resize(count);
    const bool norm = name.find("norm") != std::string::npos;
    for (auto& v : t.data) v = norm ? 1.0f + n(g) : n(g);
  }
  return f;
}

}  // namespace loralab::nn

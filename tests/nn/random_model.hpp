// SPDX-License-Identifier: MIT
#pragma once
// A Llama model_file with random weights for any config: the input of model-level tests and benches.
#include <random>

#include "nn/config.hpp"

namespace loralab::testing {

inline nn::model_file random_model_file(const nn::llama_config& c, std::uint64_t seed, float scale = 0.2f) {
  nn::model_file f;
  f.config = c;
  std::mt19937_64 g(seed);
  std::normal_distribution<float> n(0.0f, scale);
  for (const auto& [name, shape] : nn::expected_tensors(c)) {
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

}  // namespace loralab::testing

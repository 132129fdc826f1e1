// SPDX-License-Identifier: MIT
#pragma once
// The frozen weight type that stores a base in scheme S (quant/scheme_registry.hpp): float32 -> dense_weight<float>,
// bfloat16 -> bf16_weight, any quantized scheme (bitsandbytes' or ggml's q4_0 / q4_1 / q8_0) -> quant_weight<S>.
// With the registry's dispatch, one name typed by a person becomes one linear<weight_of_t<S>> model type.
#include "nn/linear.hpp"
#include "quant/scheme_registry.hpp"

namespace loralab::nn {

template <class S>
struct weight_of {
  using type = quant_weight<S>;
};
template <>
struct weight_of<quant::float32> {
  using type = dense_weight<float>;
};
template <>
struct weight_of<quant::bfloat16> {
  using type = bf16_weight;
};
template <class S>
using weight_of_t = typename weight_of<S>::type;

}  // namespace loralab::nn

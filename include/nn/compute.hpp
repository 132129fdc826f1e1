// SPDX-License-Identifier: MIT
#pragma once
// The type a linear layer's products are computed in: a compile-time property of the layer, linear<Weight, C>.
//
//   compute<float>  (default) float32 operands and accumulation: the reference, bit-stable
//   compute<bf16>   bfloat16 operands (the activation and the frozen weight, rounded to nearest even per product),
//                   float32 accumulation and outputs (nn/bf16_gemm.hpp: oneDNN on AVX512-BF16, 2x the float rate)
//
// Only the frozen base's products change (the linears' and, in a model of such linears, the tied LM head's): the
// adapters, norms, attention, loss and optimizer stay float32, as in torch autocast's bf16 mode for a LoRA run. A layer says which it is: linear<…>::compute_type.
#include <concepts>

#include <Eigen/Core>

namespace loralab::nn {

using bf16 = Eigen::bfloat16;

template <class T>
struct compute {
  static_assert(std::same_as<T, float> || std::same_as<T, bf16>, "compute<T>: T is float or bf16 (nn::bf16)");
  using type = T;
  static const char* label() { return std::same_as<T, float> ? "float32" : "bf16"; }
};

template <class C>
inline constexpr bool is_bf16_compute = std::same_as<C, compute<bf16>>;

}  // namespace loralab::nn

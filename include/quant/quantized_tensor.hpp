// SPDX-License-Identifier: MIT
#pragma once
// quantized_tensor<S>: the storage type of scheme S, chosen at compile time.
#include <type_traits>

#include "quant/blockwise_tensor.hpp"
#include "quant/rowwise_int8_tensor.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

namespace detail {
template <quant_scheme S> struct storage_for { using type = blockwise_tensor<S>; };
template <> struct storage_for<int8_rowwise> { using type = rowwise_int8_tensor; };
}  // namespace detail

/// blockwise_tensor<S> for nf4/fp4/dynamic8/double_quant, rowwise_int8_tensor for int8_rowwise.
template <quant_scheme S>
using quantized_tensor = typename detail::storage_for<S>::type;

}  // namespace loralab::quant

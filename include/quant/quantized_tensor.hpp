// SPDX-License-Identifier: MIT
#pragma once
// quantized_tensor<S>: the storage type of scheme S, chosen at compile time, and the one interface every storage
// type answers, so code outside quant/ never asks which scheme it holds:
//
//   quant::quantize<S>(data, rows, cols)        a (rows, cols) row-major matrix in, quantized_tensor<S> out
//   t.dequantize_rows(r0, r1, out)              a tile of rows back to float (or fp16 / bf16)
//   t.storage_bytes() = t.code_bytes() + t.stats_bytes()      bytes allocated: codes, then statistics
//   T::storage_dtype, t.code_elements()         the codes as bitsandbytes stores them ("uint8" / "int8", count)
//   T::planned_code_bytes(rows, cols), T::planned_stats_bytes(rows, cols)     the same bytes from the formula
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "quant/blockwise_tensor.hpp"
#include "quant/ggml_tensor.hpp"
#include "quant/rowwise_int8_tensor.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

namespace detail {
template <quant_scheme S> struct storage_for { using type = blockwise_tensor<S>; };
template <> struct storage_for<int8_rowwise> { using type = rowwise_int8_tensor; };
template <ggml_block_scheme S> struct storage_for<S> { using type = ggml_tensor<S>; };
}  // namespace detail

/// blockwise_tensor<S> for nf4/fp4/dynamic8/double_quant, rowwise_int8_tensor for int8_rowwise, ggml_tensor<S> for
/// ggml_q4_0/q4_1/q8_0.
template <quant_scheme S>
using quantized_tensor = typename detail::storage_for<S>::type;

/// What every quantized storage type answers (the traits row a new scheme fills in).
template <class Q>
concept quantized_storage = requires(const Q& q, std::span<const float> x, std::size_t n, std::span<float> out) {
  typename Q::scheme;
  { Q::template quantize<float>(x, n, n) } -> std::same_as<Q>;
  q.template dequantize_rows<float>(n, n, out);
  { q.numel() } -> std::convertible_to<std::size_t>;
  { q.storage_bytes() } -> std::convertible_to<std::size_t>;
  { q.code_bytes() } -> std::convertible_to<std::size_t>;
  { q.stats_bytes() } -> std::convertible_to<std::size_t>;
  { q.code_elements() } -> std::convertible_to<std::size_t>;
  { std::string_view(Q::storage_dtype) };
  { Q::planned_code_bytes(n, n) } -> std::convertible_to<std::size_t>;
  { Q::planned_stats_bytes(n, n) } -> std::convertible_to<std::size_t>;
};

static_assert(quantized_storage<quantized_tensor<nf4<64>>> && quantized_storage<quantized_tensor<double_quant<fp4<64>>>> &&
                  quantized_storage<quantized_tensor<dynamic8<256>>> && quantized_storage<quantized_tensor<int8_rowwise>> &&
                  quantized_storage<quantized_tensor<ggml_q4_0>> && quantized_storage<quantized_tensor<ggml_q4_1>> &&
                  quantized_storage<quantized_tensor<ggml_q8_0>>,
              "every scheme's storage answers the same questions (quant/quantized_tensor.hpp)");

/// Quantizes a (rows, cols) row-major matrix with scheme S: the one entry point for every scheme (blocks of a
/// blockwise scheme run along the flattened rows; int8_rowwise keeps one scale per row, no outlier columns —
/// rowwise_int8_tensor::quantize takes the LLM.int8() threshold).
template <quant_scheme S, element_type T>
quantized_tensor<S> quantize(std::span<const T> data, std::size_t rows, std::size_t cols) {
  return quantized_tensor<S>::template quantize<T>(data, rows, cols);
}

/// Whether S's quantizer can keep outlier columns apart (LLM.int8()'s threshold): quantize<S>(data, rows, cols, t).
template <quant_scheme S>
inline constexpr bool takes_outlier_threshold =
    requires(std::span<const float> x) { quantized_tensor<S>::template quantize<float>(x, std::size_t(1), std::size_t(1), 0.0f); };

template <quant_scheme S, element_type T>
  requires takes_outlier_threshold<S>
quantized_tensor<S> quantize(std::span<const T> data, std::size_t rows, std::size_t cols, float outlier_threshold) {
  return quantized_tensor<S>::template quantize<T>(data, rows, cols, outlier_threshold);
}

/// How tables name and group a scheme: its family ("nf4", "nf4+dq", "dynamic8", "int8-row", "q4_1"), the elements one
/// statistic covers (the block size; 0: one per row), and the analytic bits per parameter of a (rows, cols) weight.
template <quant_scheme S>
std::string scheme_family() {
  if constexpr (blockwise_scheme<S>) return std::string(S::quant_type) + (S::nested ? "+dq" : "");
  else if constexpr (ggml_block_scheme<S>) return std::string(S::quant_type);
  else return std::string(S::quant_type) + "-row";
}
template <quant_scheme S>
constexpr int scheme_block_size() {
  if constexpr (blockwise_scheme<S> || ggml_block_scheme<S>) return S::block_size;
  else return 0;
}
template <quant_scheme S>
constexpr double planned_bits_per_param(std::size_t rows, std::size_t cols) {
  using Q = quantized_tensor<S>;
  return 8.0 * double(Q::planned_code_bytes(rows, cols) + Q::planned_stats_bytes(rows, cols)) / double(rows * cols);
}

}  // namespace loralab::quant

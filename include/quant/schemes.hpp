// SPDX-License-Identifier: MIT
#pragma once
// Quantization schemes as tag types with constexpr traits (ggml's traits table, CUTLASS's policy tags).
// A scheme tag is the one thing an ablation changes to swap schemes:
//
//   nf4<64>                    QLoRA NormalFloat4, one float32 absmax per 64 weights        4.5 bits/param
//   fp4<64>                    bnb's own 1-2-1 FP4 (not OCP E2M1)                            4.5
//   double_quant<nf4<64>>      absmax stored as signed dynamic 8-bit codes, nested block 256  4.127
//   dynamic8<4096>             bnb quantize_blockwise: signed dynamic map, float32 absmax     8.0078
//   int8_rowwise               LLM.int8 weights: absmax per row (SCB), optional outliers      8 + 32/K
//   ggml_q4_0, ggml_q4_1,      ggml's (GGUF's) blocks of 32 with fp16 scales                 4.5, 5, 8.5
//   ggml_q8_0                  (quant/ggml_blocks.hpp: their own layout, rows never share a block)
//
// Blocks run over the row-major flattened tensor, so a [N, K] weight is blocked along K and a block runs on
// into the next row when K % block_size != 0 (bnb does the same).
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/host_device.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"
#include "quant/ggml_blocks.hpp"

namespace loralab::quant {

namespace detail {
constexpr bool valid_block_size(int b) { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }
constexpr std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }
}  // namespace detail

/// QLoRA's NormalFloat4 (Dettmers et al. 2023, §3): 16 quantiles of N(0,1) scaled to [-1, 1].
/// \tparam BlockSize weights per float32 absmax; bnb allows 32..4096 (powers of two), default 64.
template <int BlockSize = 64>
struct nf4 {
  static_assert(detail::valid_block_size(BlockSize),
                "nf4<B>: block_size must be a power of two in [32, 4096] (the sizes bitsandbytes accepts)");
  static constexpr std::string_view quant_type = "nf4";
  static constexpr int bits = 4;
  static constexpr int block_size = BlockSize;
  static constexpr bool nested = false;
  static constexpr const std::array<float, 16>& code = codebooks::nf4_code;
  LORALAB_HOST_DEVICE static std::uint8_t encode(float v) { return nf4_encode(v); }
  LORALAB_HOST_DEVICE static std::uint8_t encode_ref(float v) { return nf4_encode_tree(v); }
  LORALAB_HOST_DEVICE static float decode(std::uint8_t c) { return codebooks::nf4_code[c]; }
};

/// bitsandbytes' FP4: sign, 2 exponent bits (inverted), 1 mantissa bit; magnitudes {0, 1/192, 1/6 … 1}.
template <int BlockSize = 64>
struct fp4 {
  static_assert(detail::valid_block_size(BlockSize),
                "fp4<B>: block_size must be a power of two in [32, 4096] (the sizes bitsandbytes accepts)");
  static constexpr std::string_view quant_type = "fp4";
  static constexpr int bits = 4;
  static constexpr int block_size = BlockSize;
  static constexpr bool nested = false;
  /// The table bnb serializes as quant_map (get_4bit_type("fp4")): code 8 is +0.0 there, -0.0 in the kernels.
  static constexpr std::array<float, 16> code = [] {
    std::array<float, 16> c{};
    for (int i = 0; i < 16; ++i) c[i] = (i & 8) && i != 8 ? -codebooks::fp4_magnitude[i & 7] : codebooks::fp4_magnitude[i & 7];
    return c;
  }();
  LORALAB_HOST_DEVICE static std::uint8_t encode(float v) { return fp4_encode(v); }
  LORALAB_HOST_DEVICE static std::uint8_t encode_ref(float v) { return fp4_encode(v); }
  LORALAB_HOST_DEVICE static float decode(std::uint8_t c) { return fp4_decode(c); }
};

/// bnb's blockwise 8-bit quantization (quantize_blockwise): the signed dynamic map, one float32 absmax per block.
/// \tparam BlockSize bnb's default is 4096; its optimizers use 256.
template <int BlockSize = 4096>
struct dynamic8 {
  static_assert(detail::valid_block_size(BlockSize),
                "dynamic8<B>: block_size must be a power of two in [32, 4096]");
  static constexpr std::string_view quant_type = "dynamic8";
  static constexpr int bits = 8;
  static constexpr int block_size = BlockSize;
  static constexpr bool nested = false;
  static constexpr const std::array<float, 256>& code = codebooks::dynamic_signed;
  LORALAB_HOST_DEVICE static std::uint8_t encode(float v) { return dynamic8_encode(codebooks::dynamic_signed.data(), v); }
  LORALAB_HOST_DEVICE static std::uint8_t encode_ref(float v) { return encode(v); }
  LORALAB_HOST_DEVICE static float decode(std::uint8_t c) { return codebooks::dynamic_signed[c]; }
};

/// Double quantization (QLoRA §3, bnb compress_statistics=True): the float32 absmax of a 4-bit scheme is
/// centred on its mean and stored as signed dynamic 8-bit codes, with one float32 absmax per NestedBlock.
template <class Inner, int NestedBlock = 256>
struct double_quant : Inner {
  static_assert(Inner::bits == 4 && !Inner::nested,
                "double_quant<S>: S must be a plain 4-bit scheme (nf4<B> or fp4<B>), as in QLoRA");
  static_assert(NestedBlock == 256, "double_quant: bitsandbytes hard-codes the nested block size 256");
  using inner = Inner;
  static constexpr bool nested = true;
  static constexpr int nested_block_size = NestedBlock;
};

/// LLM.int8() weights (bnb Int8Params): W is rounded to fp16, then each row is scaled by 127/absmax(row)
/// and rounded half-to-even (CB, int8) with the row absmax kept as float32 (SCB). With an outlier threshold
/// > 0, every column holding a |w| >= threshold is kept exactly in fp16 beside the int8 part.
struct int8_rowwise {
  static constexpr std::string_view quant_type = "int8";
  static constexpr int bits = 8;
  static constexpr bool nested = false;
  /// Exact storage for a rows x cols weight with `outlier_cols` fp16 outlier columns.
  static constexpr std::size_t storage_bytes(std::size_t rows, std::size_t cols, std::size_t outlier_cols = 0) {
    return rows * cols + 4 * rows + 4 * outlier_cols + 2 * rows * outlier_cols;
  }
  /// Bits per parameter without outliers: 8 bits of code plus a float32 per row of `cols`.
  static constexpr double bits_per_param(std::size_t cols) { return 8.0 + 32.0 / static_cast<double>(cols); }
};

// ---- concepts and traits ------------------------------------------------------------------------------------

/// A blockwise scheme: fixed codes per element and per-block statistics (nf4, fp4, dynamic8, double_quant).
template <class S>
concept blockwise_scheme = requires(float v, std::uint8_t c) {
  { S::bits } -> std::convertible_to<int>;
  { S::block_size } -> std::convertible_to<int>;
  { S::nested } -> std::convertible_to<bool>;
  { S::encode(v) } -> std::same_as<std::uint8_t>;
  { S::decode(c) } -> std::same_as<float>;
} && (S::bits == 4 || S::bits == 8);

template <class S>
concept quant_scheme = blockwise_scheme<S> || std::same_as<S, int8_rowwise> || ggml_block_scheme<S>;

/// Exact bytes a blockwise-quantized tensor of n elements allocates: codes, statistics and, with double
/// quantization, the nested statistics, the float32 offset and the tensor's own 256-entry nested map.
template <blockwise_scheme S>
constexpr std::size_t storage_bytes(std::size_t n) {
  const std::size_t nb = detail::ceil_div(n, S::block_size);
  const std::size_t codes = S::bits == 4 ? (n + 1) / 2 : n;
  if constexpr (S::nested)
    return codes + nb + 4 * detail::ceil_div(nb, S::nested_block_size) + 4 + 4 * 256;
  else
    return codes + 4 * nb;
}

/// Exact bytes of n weights in a ggml block format (n a multiple of 32): the blocks, statistics inside them.
template <ggml_block_scheme S>
constexpr std::size_t storage_bytes(std::size_t n) {
  return detail::ceil_div(n, S::block_size) * S::block_bytes;
}

/// Storage cost per parameter in the large-tensor limit (per-tensor constants vanish):
/// nf4<64> = 4 + 32/64 = 4.5; double_quant<nf4<64>> = 4 + 8/64 + 32/(64*256) = 4.126953125.
template <blockwise_scheme S>
constexpr double bits_per_param() {
  if constexpr (S::nested)
    return S::bits + 8.0 / S::block_size + 32.0 / (double(S::block_size) * S::nested_block_size);
  else
    return S::bits + 32.0 / S::block_size;
}
template <ggml_block_scheme S>
constexpr double bits_per_param() { return ggml_bits_per_weight<S>(); }

/// A printable name: "nf4-b64", "nf4-b64-dq", "dynamic8-b4096", "int8-row", "q4_1" (ggml's own type names).
template <quant_scheme S>
std::string scheme_label() {
  if constexpr (std::same_as<S, int8_rowwise>) {
    return "int8-row";
  } else if constexpr (ggml_block_scheme<S>) {
    return std::string(S::quant_type);
  } else {
    std::string s = std::string(S::quant_type) + "-b" + std::to_string(S::block_size);
    if constexpr (S::nested) s += "-dq";
    return s;
  }
}

static_assert(bits_per_param<nf4<64>>() == 4.5);
static_assert(bits_per_param<double_quant<nf4<64>>>() == 4.126953125);
static_assert(bits_per_param<nf4<64>>() - bits_per_param<double_quant<nf4<64>>>() > 0.373 &&
              bits_per_param<nf4<64>>() - bits_per_param<double_quant<nf4<64>>>() < 0.374,
              "QLoRA: double quantization saves 0.373 bits/param at block 64");

}  // namespace loralab::quant

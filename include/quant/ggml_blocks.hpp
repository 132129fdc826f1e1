// SPDX-License-Identifier: MIT
#pragma once
// ggml's (llama.cpp's, GGUF's) block formats as scheme tags beside bitsandbytes':
//
//   tag        GGUF type   block (32 weights)                       bytes  bits/weight  weight from code q
//   ggml_q4_0  Q4_0 (2)    fp16 d, 16 bytes of nibbles                18    4.5          (q - 8)·d
//   ggml_q4_1  Q4_1 (3)    fp16 d, fp16 m, 16 bytes of nibbles        20    5.0          q·d + m
//   ggml_q8_0  Q8_0 (8)    fp16 d, 32 int8                            34    8.5          q·d
//
// Blocks run along a row (GGUF's ne[0], our K) and never span two rows: K % 32 == 0, as ggml requires.
// Nibble order: byte j of a 4-bit block holds element j in its LOW nibble and element j+16 in its HIGH nibble
// (bitsandbytes is the other way: element 2k high, 2k+1 low, in consecutive pairs). fp16 is IEEE binary16,
// little-endian, as GGUF stores it; the block structs below are ggml's (src/ggml-common.h), so an array of them
// is byte for byte a GGUF tensor's data.
//
// quantize_row_ref / dequantize_row_ref transcribe ggml-quants.c (quantize_row_q4_0_ref, dequantize_row_q4_0, …):
// d is computed in float32 and the codes use 1/d of that float; d (and m) are rounded to fp16, to nearest even,
// only when stored. Q4_0 takes d = max/-8 where max is the first element of largest |x| with its sign, so that
// code 0 lands exactly on it; codes are trunc(x/d + 8.5) (Q4_0), trunc((x - min)/d + 0.5) (Q4_1), capped at 15,
// and roundf(x/d), half away from zero (Q8_0). dequantize_row is the same arithmetic written for the vectorizer
// (the block's scale hoisted, fixed-length loops under `omp simd`), bit-identical to the _ref.
//
// Non-finite weights: ggml's _ref converts NaN / inf to an integer code (undefined behaviour in C), so these
// quantizers refuse them with the element's index. A finite row whose d overflows fp16 is stored as ggml stores
// it (d = inf) and dequantizes to inf / NaN, exactly as ggml's does.
#include <algorithm>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/check.hpp"
#include "core/host_device.hpp"

namespace loralab::quant {

// ---- fp16 ------------------------------------------------------------------------------------------------------

/// float32 -> IEEE binary16 bits, round to nearest even, subnormals kept, overflow to inf, NaN -> 0x7E00 with the
/// sign (ggml's GGML_FP32_TO_FP16 on the CPU, F16C's _cvtss_sh(x, 0), numpy's astype(float16)).
LORALAB_HOST_DEVICE std::uint16_t fp32_to_fp16(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);  // NaN
  if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  std::uint32_t q, rem, half;
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal fp16, in units of 2^-24
    if (ax < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below 2^-25: rounds to 0
    const std::uint32_t e = ax >> 23, m = (ax & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14 .. 24
    q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  } else {  // normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits; a carry may bump the exponent
    const std::uint32_t r = ax - 0x38000000u;
    q = r >> 13, rem = r & 0x1FFFu, half = 0x1000u;
  }
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

/// IEEE binary16 bits -> float32, exact (ggml's GGML_FP16_TO_FP32).
LORALAB_HOST_DEVICE float fp16_to_fp32(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (m << 13));  // inf, NaN
  if (e == 0) {                                                                  // zero, subnormal: m · 2^-24
    const float v = static_cast<float>(m) * 0x1p-24f;
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

// ---- blocks (ggml: src/ggml-common.h) ----------------------------------------------------------------------------

inline constexpr int ggml_block_weights = 32;  // QK4_0 = QK4_1 = QK8_0

struct block_q4_0 {
  std::uint16_t d;       // delta, fp16
  std::uint8_t qs[16];   // nibbles: byte j = element j (low) | element j+16 (high)
};
struct block_q4_1 {
  std::uint16_t d;       // delta, fp16
  std::uint16_t m;       // min, fp16
  std::uint8_t qs[16];   // nibbles, as q4_0
};
struct block_q8_0 {
  std::uint16_t d;       // delta, fp16
  std::int8_t qs[32];    // quants
};
static_assert(sizeof(block_q4_0) == 2 + 16, "wrong q4_0 block size/padding");
static_assert(sizeof(block_q4_1) == 2 * 2 + 16, "wrong q4_1 block size/padding");
static_assert(sizeof(block_q8_0) == 2 + 32, "wrong q8_0 block size/padding");

namespace detail {

/// ggml's `MIN(15, (int8_t)(v))` for a 4-bit code: v in [0, 16.5] for finite weights, truncated toward zero.
/// A non-finite v (1/d overflows to inf in a block of subnormal weights, or max - min overflows float) gives 0,
/// what x86's float-to-int conversion gives ggml there; d is then stored as 0 or inf, so no value depends on it.
LORALAB_HOST_DEVICE int nibble_code(float v) {
  return !(v > 0.0f) || !(v < 128.0f) ? 0 : std::min(15, static_cast<int>(v));
}

/// Refuses a non-finite weight of a block (ggml's conversion of it to a code is undefined).
inline void check_finite_block(std::string_view type, const float* x, std::int64_t block) {
  for (int j = 0; j < ggml_block_weights; ++j)
    LORALAB_CHECK(std::isfinite(x[j]), type, ": weight ", block * ggml_block_weights + j, " of the row is ", x[j],
                  "; ggml's block formats have no code for a non-finite weight");
}

/// The row functions every ggml tag shares, over its per-block ones (k: weights in the row, a multiple of 32).
template <class Tag, class Block>
struct ggml_rows {
  using block = Block;
  static void check_row(std::int64_t k) {
    LORALAB_CHECK(k >= 0 && k % ggml_block_weights == 0, Tag::quant_type, ": a row of ", k,
                  " weights is not a whole number of ", ggml_block_weights, "-weight blocks");
  }
  /// ggml's quantize_row_<type>_ref: k floats -> k/32 blocks. Throws on a non-finite weight.
  static void quantize_row_ref(const float* x, Block* y, std::int64_t k) {
    check_row(k);
    for (std::int64_t i = 0; i < k / ggml_block_weights; ++i) {
      check_finite_block(Tag::quant_type, x + i * ggml_block_weights, i);
      Tag::quantize_block_ref(x + i * ggml_block_weights, y[i]);
    }
  }
  /// ggml's dequantize_row_<type>: k/32 blocks -> k floats, one element at a time as ggml writes it.
  static void dequantize_row_ref(const Block* x, float* y, std::int64_t k) {
    check_row(k);
    for (std::int64_t i = 0; i < k / ggml_block_weights; ++i) Tag::dequantize_block_ref(x[i], y + i * ggml_block_weights);
  }
  /// The same values, vectorized: bit-identical to dequantize_row_ref.
  static void dequantize_row(const Block* x, float* y, std::int64_t k) {
    check_row(k);
    for (std::int64_t i = 0; i < k / ggml_block_weights; ++i) Tag::dequantize_block(x[i], y + i * ggml_block_weights);
  }
};

}  // namespace detail

// ---- the tags ----------------------------------------------------------------------------------------------------

/// ggml Q4_0: symmetric 4-bit, x = (q - 8)·d with one fp16 d per 32 weights (4.5 bits/weight).
struct ggml_q4_0 : detail::ggml_rows<ggml_q4_0, block_q4_0> {
  static constexpr std::string_view quant_type = "q4_0";
  static constexpr int gguf_type = 2;  // GGML_TYPE_Q4_0
  static constexpr int bits = 4;
  static constexpr int block_size = ggml_block_weights;
  static constexpr std::size_t block_bytes = sizeof(block_q4_0);
  static constexpr std::size_t code_bytes_per_block = 16;  // the rest of a block is its statistics (d)

  static void quantize_block_ref(const float* x, block_q4_0& y) {
    float amax = 0.0f, max = 0.0f;  // |x| largest, and that x with its sign (the first one on a tie)
    for (int j = 0; j < 32; ++j) {
      const float v = x[j];
      if (amax < std::fabs(v)) amax = std::fabs(v), max = v;
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y.d = fp32_to_fp16(d);
    for (int j = 0; j < 16; ++j) {
      const int xi0 = detail::nibble_code(x[j] * id + 8.5f), xi1 = detail::nibble_code(x[16 + j] * id + 8.5f);
      y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
    }
  }
  static void dequantize_block_ref(const block_q4_0& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = (b.qs[j] & 0x0F) - 8, x1 = (b.qs[j] >> 4) - 8;
      y[j] = static_cast<float>(x0) * d;
      y[j + 16] = static_cast<float>(x1) * d;
    }
  }
  static void dequantize_block(const block_q4_0& b, float* __restrict y) {
    const float d = fp16_to_fp32(b.d);
    const std::uint8_t* __restrict qs = b.qs;
#pragma omp simd
    for (int j = 0; j < 16; ++j) y[j] = static_cast<float>(int(qs[j] & 0x0F) - 8) * d;
#pragma omp simd
    for (int j = 0; j < 16; ++j) y[j + 16] = static_cast<float>(int(qs[j] >> 4) - 8) * d;
  }
};

/// ggml Q4_1: asymmetric 4-bit, x = q·d + m with fp16 d and m per 32 weights (5 bits/weight).
struct ggml_q4_1 : detail::ggml_rows<ggml_q4_1, block_q4_1> {
  static constexpr std::string_view quant_type = "q4_1";
  static constexpr int gguf_type = 3;  // GGML_TYPE_Q4_1
  static constexpr int bits = 4;
  static constexpr int block_size = ggml_block_weights;
  static constexpr std::size_t block_bytes = sizeof(block_q4_1);
  static constexpr std::size_t code_bytes_per_block = 16;  // the rest of a block is its statistics (d, m)

  static void quantize_block_ref(const float* x, block_q4_1& y) {
    float min = 3.402823466e+38F, max = -3.402823466e+38F;  // FLT_MAX, -FLT_MAX
    for (int j = 0; j < 32; ++j) {
      const float v = x[j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y.d = fp32_to_fp16(d);
    y.m = fp32_to_fp16(min);
    for (int j = 0; j < 16; ++j) {
      const int xi0 = detail::nibble_code((x[j] - min) * id + 0.5f), xi1 = detail::nibble_code((x[16 + j] - min) * id + 0.5f);
      y.qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
    }
  }
  static void dequantize_block_ref(const block_q4_1& b, float* y) {
    const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
    for (int j = 0; j < 16; ++j) {
      const int x0 = b.qs[j] & 0x0F, x1 = b.qs[j] >> 4;
      y[j] = static_cast<float>(x0) * d + m;
      y[j + 16] = static_cast<float>(x1) * d + m;
    }
  }
  static void dequantize_block(const block_q4_1& b, float* __restrict y) {
    const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
    const std::uint8_t* __restrict qs = b.qs;
#pragma omp simd
    for (int j = 0; j < 16; ++j) y[j] = static_cast<float>(int(qs[j] & 0x0F)) * d + m;
#pragma omp simd
    for (int j = 0; j < 16; ++j) y[j + 16] = static_cast<float>(int(qs[j] >> 4)) * d + m;
  }
};

/// ggml Q8_0: symmetric 8-bit, x = q·d with one fp16 d per 32 weights (8.5 bits/weight).
struct ggml_q8_0 : detail::ggml_rows<ggml_q8_0, block_q8_0> {
  static constexpr std::string_view quant_type = "q8_0";
  static constexpr int gguf_type = 8;  // GGML_TYPE_Q8_0
  static constexpr int bits = 8;
  static constexpr int block_size = ggml_block_weights;
  static constexpr std::size_t block_bytes = sizeof(block_q8_0);
  static constexpr std::size_t code_bytes_per_block = 32;  // the rest of a block is its statistics (d)

  static void quantize_block_ref(const float* x, block_q8_0& y) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));  // ggml's MAX(amax, fabsf(v))
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y.d = fp32_to_fp16(d);
    for (int j = 0; j < 32; ++j) {
      // roundf: half away from zero. |x·id| <= 127 for finite x, except when id overflows to inf (a block of
      // subnormal weights): then a nonzero x gives inf and a zero gives NaN, which x86 converts to code 0.
      const float r = std::round(x[j] * id);
      y.qs[j] = std::fabs(r) <= 127.0f ? static_cast<std::int8_t>(r) : std::int8_t(0);
    }
  }
  static void dequantize_block_ref(const block_q8_0& b, float* y) {
    const float d = fp16_to_fp32(b.d);
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
  }
  static void dequantize_block(const block_q8_0& b, float* __restrict y) {
    const float d = fp16_to_fp32(b.d);
    const std::int8_t* __restrict qs = b.qs;
#pragma omp simd
    for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
  }
};

// ---- concept and traits ----------------------------------------------------------------------------------------

/// A ggml block format: 32 weights per block of `block_bytes`, a block struct, ggml's _ref pair and a vectorized
/// dequantizer (ggml_q4_0, ggml_q4_1, ggml_q8_0).
template <class S>
concept ggml_block_scheme = requires(const float* x, typename S::block* y, const typename S::block* b, float* out,
                                     std::int64_t k) {
  { S::quant_type } -> std::convertible_to<std::string_view>;
  { S::gguf_type } -> std::convertible_to<int>;
  { S::bits } -> std::convertible_to<int>;
  { S::block_bytes } -> std::convertible_to<std::size_t>;
  { S::code_bytes_per_block } -> std::convertible_to<std::size_t>;
  S::quantize_row_ref(x, y, k);
  S::dequantize_row_ref(b, out, k);
  S::dequantize_row(b, out, k);
} && S::block_size == ggml_block_weights && sizeof(typename S::block) == S::block_bytes;

/// Bits per weight of a ggml format: the whole block, statistics included (4.5, 5, 8.5).
template <ggml_block_scheme S>
constexpr double ggml_bits_per_weight() { return 8.0 * double(S::block_bytes) / S::block_size; }

static_assert(ggml_block_scheme<ggml_q4_0> && ggml_block_scheme<ggml_q4_1> && ggml_block_scheme<ggml_q8_0>);
static_assert(ggml_bits_per_weight<ggml_q4_0>() == 4.5 && ggml_bits_per_weight<ggml_q4_1>() == 5.0 &&
              ggml_bits_per_weight<ggml_q8_0>() == 8.5, "ggml: Q4_0 4.5, Q4_1 5, Q8_0 8.5 bits per weight");

}  // namespace loralab::quant

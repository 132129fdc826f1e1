// SPDX-License-Identifier: MIT
#pragma once
// Per-element and per-block math of bitsandbytes' CUDA quantizers, as LORALAB_HOST_DEVICE functions shared by
// the scalar reference, the OpenMP fast path and kernels/. Every rounding sits where bnb's kernels put it.
//
// bnb's CUDA library is built with --use_fast_math, so its float ops flush subnormal inputs and results to
// zero (FTZ). ftz() reproduces that at the points where it changes a code: loading x, the block absmax,
// the reciprocal 1/absmax, the scaled value x*s and the dequantized product.
#include <cfloat>
#include <cmath>
#include <array>
#include <cstdint>

#include "core/host_device.hpp"
#include "quant/codebooks.hpp"

namespace loralab::quant {

/// Flush-to-zero, sign kept: what a CUDA fast-math float op does with a subnormal.
LORALAB_HOST_DEVICE float ftz(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

/// One step of bnb's absmax reduction: fmaxf ignores NaN; the reduction starts at -FLT_MAX (so an all-NaN
/// block keeps -FLT_MAX), and a partial block's zero padding takes part in it.
LORALAB_HOST_DEVICE float absmax_step(float running, float x) { return fmaxf(running, fabsf(ftz(x))); }
inline constexpr float absmax_init = -FLT_MAX;

/// The per-block scale s = 1/absmax (bnb multiplies by it; it never divides). absmax 0 gives +inf.
/// CUDA's fast-math reciprocal may be 1 ulp off this IEEE value (spec §10.1): the one accepted difference.
LORALAB_HOST_DEVICE float block_scale(float absmax) { return ftz(1.0f / absmax); }

/// x normalised into the block: v = x * s, both flushed as the CUDA multiply flushes them.
LORALAB_HOST_DEVICE float normalise(float x, float scale) { return ftz(ftz(x) * scale); }

// ---- NF4 -------------------------------------------------------------------------------------------------

/// NF4 code of v: the number of thresholds t with v > t. Ties go to the lower code; NaN gives code 0.
/// Branch-free so that loops over a block vectorize.
LORALAB_HOST_DEVICE std::uint8_t nf4_encode(float v) {
  constexpr std::array<float, 15> t = codebooks::nf4_thresholds;  // a local copy: usable in device code
  int code = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 15; ++i) code += v > t[i];
  return static_cast<std::uint8_t>(code);
}

/// NF4 code of v by bnb's decision tree (dQuantizeNF4), written out as the kernel walks it. The reference
/// path uses this, so the tests compare two independent formulations.
LORALAB_HOST_DEVICE std::uint8_t nf4_encode_tree(float v) {
  constexpr std::array<float, 15> t = codebooks::nf4_thresholds;
  if (v > t[7]) {
    if (v > t[11]) {
      if (v > t[13]) return v > t[14] ? 15 : 14;
      return v > t[12] ? 13 : 12;
    }
    if (v > t[9]) return v > t[10] ? 11 : 10;
    return v > t[8] ? 9 : 8;
  }
  if (v > t[3]) {
    if (v > t[5]) return v > t[6] ? 7 : 6;
    return v > t[4] ? 5 : 4;
  }
  if (v > t[1]) return v > t[2] ? 3 : 2;
  return v > t[0] ? 1 : 0;
}

// ---- FP4 -------------------------------------------------------------------------------------------------

/// bnb FP4 code of v (dQuantizeFP4): sign bit 3 from v < 0 (so -0.0 and NaN are positive), then a tree over
/// |v| with the kernel's literal thresholds; ties go to the smaller magnitude, NaN to 0000.
LORALAB_HOST_DEVICE std::uint8_t fp4_encode(float v) {
  constexpr std::array<float, 7> t = codebooks::fp4_thresholds;
  const std::uint8_t sign = v < 0.0f ? 0b1000 : 0;
  const float a = fabsf(v);
  std::uint8_t mag;
  if (a > t[3]) {
    if (a > t[5]) mag = a > t[6] ? 0b011 : 0b010;
    else          mag = a > t[4] ? 0b101 : 0b100;
  } else {
    if (a > t[1]) mag = a > t[2] ? 0b111 : 0b110;
    else          mag = a > t[0] ? 0b001 : 0b000;
  }
  return static_cast<std::uint8_t>(mag + sign);
}

/// FP4 value of a code as bnb's CUDA dequantizer gives it: code 8 (1000) is -0.0.
/// The NF4 value of a code: codebooks::nf4_code as a local table, which device code can index too.
LORALAB_HOST_DEVICE float nf4_decode(std::uint8_t code) {
  constexpr float table[16] = {codebooks::nf4_code[0],  codebooks::nf4_code[1],  codebooks::nf4_code[2],  codebooks::nf4_code[3],
                               codebooks::nf4_code[4],  codebooks::nf4_code[5],  codebooks::nf4_code[6],  codebooks::nf4_code[7],
                               codebooks::nf4_code[8],  codebooks::nf4_code[9],  codebooks::nf4_code[10], codebooks::nf4_code[11],
                               codebooks::nf4_code[12], codebooks::nf4_code[13], codebooks::nf4_code[14], codebooks::nf4_code[15]};
  return table[code & 15];
}

LORALAB_HOST_DEVICE float fp4_decode(std::uint8_t code) {
  constexpr std::array<float, 8> magnitude = codebooks::fp4_magnitude;
  const float m = magnitude[code & 7];
  return (code & 8) ? -m : m;
}

// ---- dynamic 8-bit -------------------------------------------------------------------------------------------

/// Index of x in a sorted 256-entry map by bnb's 7-step binary search (dQuantize<0>). On non-ties this is the
/// nearest entry; a value exactly on a midpoint gets the even index of the pair; NaN gives index 0.
LORALAB_HOST_DEVICE std::uint8_t dynamic8_encode(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) return static_cast<std::uint8_t>(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return static_cast<std::uint8_t>(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

// ---- packing ------------------------------------------------------------------------------------------------

/// bnb's nibble order: element 2k in the HIGH nibble of byte k, element 2k+1 in the low nibble.
LORALAB_HOST_DEVICE std::uint8_t pack_pair(std::uint8_t first, std::uint8_t second) {
  return static_cast<std::uint8_t>((first << 4) | (second & 0x0F));
}
/// Code of element i from the packed bytes.
LORALAB_HOST_DEVICE std::uint8_t unpack_nibble(const std::uint8_t* packed, std::size_t i) {
  const std::uint8_t b = packed[i >> 1];
  return (i & 1) ? (b & 0x0F) : (b >> 4);
}

/// Dequantized value: the float32 product code*absmax (flushed like the fast-math multiply).
LORALAB_HOST_DEVICE float scale_code(float code_value, float absmax) { return ftz(code_value * absmax); }

}  // namespace loralab::quant

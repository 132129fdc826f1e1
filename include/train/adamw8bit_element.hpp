// SPDX-License-Identifier: MIT
#pragma once
// One element of bitsandbytes' blockwise 8-bit AdamW (kOptimizerStatic8bit2StateBlockwise<float, ADAM, 256, 1>, and
// kOptimizer32bit2State for small parameters), shared by the CPU optimizer (train/adamw8bit.hpp) and the CUDA kernel
// (kernels/train_step.cu): the same float operations in the same order, so both give the same bits. The block's
// absmax is a max (any order gives the same value); everything else is per element.
#include <cmath>
#include <cstdint>

#include "core/host_device.hpp"
#include "quant/codec.hpp"

namespace loralab::train {

/// The step's scalars, as bnb passes them to its kernel (floats).
struct adamw8bit_constants {
  float lr, beta1, beta2, eps;
  float correction1, correction2, step_size;  ///< 1 − β1^t, √(1 − β2^t), −lr·c2/c1
};

/// Finite (not NaN, not ±Inf) without <cmath>'s host/device split: x − x is 0 exactly for every finite x.
LORALAB_HOST_DEVICE bool finite_value(float x) { return x - x == 0.0f; }

/// The new first and second moments of one element from its decoded state (q1 = qmap1[code1], q2 = qmap2[code2])
/// and the block's old absmax; flushed as the kernel's fast math does. A non-finite g gives 0 for both.
LORALAB_HOST_DEVICE void adamw8bit_moments(const adamw8bit_constants& a, float g, float q1, float am1, float q2, float am2, float& s1,
                                           float& s2) {
  float x1 = 0.0f, x2 = 0.0f;
  if (finite_value(g)) {
    x2 = q2 * am2;
    x2 = (x2 * a.beta2) + (((1.0f - a.beta2) * g) * g);
    x1 = q1 * am1;
    x1 = (x1 * a.beta1) + ((1.0f - a.beta1) * g);
  }
  s1 = quant::ftz(x1), s2 = quant::ftz(x2);
}

/// What a padding lane of the last, partial block contributes to the new absmax1 (it loads code q1_pad and g = 0).
LORALAB_HOST_DEVICE float adamw8bit_pad_moment1(const adamw8bit_constants& a, float q1_pad, float am1) {
  return quant::ftz((q1_pad * am1) * a.beta1 + (1.0f - a.beta1) * 0.0f);
}

/// The parameter after the step from its new moments (decoupled weight decay after the step: bnb's order).
LORALAB_HOST_DEVICE float adamw8bit_param(const adamw8bit_constants& a, float wd, float p, float s1, float s2) {
  float v = p + a.step_size * (s1 / (sqrtf(s2) + a.correction2 * a.eps));
  if (wd > 0.0f) v = v * (1.0f - a.lr * wd);
  return v;
}

/// bnb's quantize_2D<SIGNED> (kernels.cu), the 8-bit optimizers' requantizer: dynamic8_encode's 7-step search,
/// but starting from lower = SIGNED ? -1 : 0 with no end-point fix-up. (Its first step reads a 3-entry cache of
/// code[63], code[127], code[191]: the same entries code[pivot] gives.) For bnb's maps it returns the same
/// index as dynamic8_encode for every x, because code[255] == 1.0 (the initial `upper`), and when the search
/// never moves up the result is index 0 whatever `lower` is; the tests check that on every midpoint.
template <bool Signed>
LORALAB_HOST_DEVICE std::uint8_t quantize_2d(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = Signed ? -1.0f : 0.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (x > val) return static_cast<std::uint8_t>(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return static_cast<std::uint8_t>(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

/// The element's new codes against the block's new absmax: m keeps its sign through quantization (index 0 − 1
/// wraps to 255, as the CUDA uint8 does); v is unsigned.
LORALAB_HOST_DEVICE void adamw8bit_codes(const float* qmap1, const float* qmap2, float s1, float s2, float am1, float am2,
                                         std::uint8_t& c1, std::uint8_t& c2) {
  c1 = quantize_2d<true>(qmap1, s1 / am1);
  if ((copysignf(1.0f, qmap1[c1]) < 0.0f) != (copysignf(1.0f, s1) < 0.0f)) c1 = std::uint8_t(s1 > 0.0f ? c1 + 1 : c1 - 1);
  c2 = quantize_2d<false>(qmap2, s2 / am2);
}

/// kOptimizer32bit2State<float, ADAM> (update_scale 1, skip_zeros false) for one element: a non-finite g propagates.
LORALAB_HOST_DEVICE void adamw8bit_32bit_element(const adamw8bit_constants& a, float wd, float g, float& p, float& s1, float& s2) {
  s1 = s1 * a.beta1 + ((1.0f - a.beta1) * g);
  s2 = s2 * a.beta2 + ((1.0f - a.beta2) * (g * g));
  float v = p + (a.step_size * (s1 / (sqrtf(s2) + (a.eps * a.correction2))));
  if (wd > 0.0f) v = v * (1.0f - (a.lr * wd));
  p = v;
}

}  // namespace loralab::train

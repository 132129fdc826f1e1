// SPDX-License-Identifier: MIT
#pragma once
// One element of torch.optim.AdamW's step, shared by the CPU optimizer (train/adamw.hpp) and the CUDA kernel
// (kernels/train_step.cu): the same float operations in the same order, so both give the same bits (the CPU build
// has -ffp-contract=off, the kernels --fmad=false: no fused multiply-add either side).
#include <cmath>

#include "core/host_device.hpp"

namespace loralab::train {

/// The step's scalars, computed once per step in double as Python does, then rounded to float.
struct adamw_step_constants {
  float neg_step_size;          ///< −lr / (1 − β1^t)
  float bias_correction2_sqrt;  ///< √(1 − β2^t)
  float weight;                 ///< 1 − β1 (lerp's weight)
  float beta2, one_minus_beta2, eps;
  float decay_factor;           ///< 1 − lr·wd
  bool decay;                   ///< decoupled weight decay on this parameter
};

/// p, m, v of one element after its gradient g (torch's single-tensor path):
///   p *= 1 − lr·wd;  m = lerp(m, g, 1−β1);  v = v·β2 + (1−β2)·g·g;  p += −step · m / (√v / √(1−β2^t) + eps)
LORALAB_HOST_DEVICE void adamw_element(float& p, float& m, float& v, float g, const adamw_step_constants& c) {
  float x = p;
  if (c.decay) x = x * c.decay_factor;                                        // param.mul_(1 - lr*wd)
  m = c.weight < 0.5f ? m + c.weight * (g - m)                                // exp_avg.lerp_(grad, 1-beta1)
                      : g - (g - m) * (1.0f - c.weight);
  v = v * c.beta2;                                                            // exp_avg_sq.mul_(beta2)
  v = v + c.one_minus_beta2 * g * g;                                          //   .addcmul_(grad, grad, 1-beta2)
  const float denom = sqrtf(v) / c.bias_correction2_sqrt + c.eps;             // (sqrt(v)/bc2_sqrt).add_(eps)
  p = x + c.neg_step_size * m / denom;                                        // param.addcdiv_(m, denom, -step_size)
}

}  // namespace loralab::train

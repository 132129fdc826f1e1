// SPDX-License-Identifier: MIT
#pragma once
// The arithmetic of the tiled attention kernel (kernels/attention_tiled.cu) as a host/device function: one query row
// against one tile of keys and values with an online softmax (running max m, running sum l, unnormalised output
// acc), FlashAttention's recurrence. The kernel runs it per thread over tiles staged in shared memory; the CPU tests
// run it over the same tiles in global order (tests/kernels/kernel_twins_test.cpp), so causality, grouped heads and
// the rescaling are tested on every machine (expf of the host and the device may differ in the last bit).
#include <cmath>

#include "core/host_device.hpp"

namespace loralab::cuda {

/// Query rows per CUDA block (one thread each) and keys per staged tile; head_dim at most tiled_max_head_dim.
constexpr int tiled_query_rows = 32, tiled_keys = 16, tiled_max_head_dim = 128;

/// Row q (D) against keys/values rows 0 … nk−1 of Kt, Vt (stride ld): m, l, acc[D] updated.
template <int DMax>
LORALAB_HOST_DEVICE void online_softmax_tile(const float* q, int q_stride, const float* Kt, const float* Vt, int ld, int nk, int D,
                                             float scale, float& m, float& l, float* acc) {
  float s[tiled_keys];
  float mt = m;
  for (int j = 0; j < nk; ++j) {
    float dot = 0.0f;
    for (int d = 0; d < D; ++d) dot += q[d * q_stride] * Kt[j * ld + d];
    s[j] = dot * scale;
    mt = fmaxf(mt, s[j]);
  }
  const float c = expf(m - mt);  // 0 on the first tile (m = −∞; nk ≥ 1 makes mt finite)
  l *= c;
  for (int d = 0; d < DMax; ++d)
    if (d < D) acc[d] *= c;
  for (int j = 0; j < nk; ++j) {
    const float p = expf(s[j] - mt);
    l += p;
    for (int d = 0; d < DMax; ++d)
      if (d < D) acc[d] += p * Vt[j * ld + d];
  }
  m = mt;
}

}  // namespace loralab::cuda

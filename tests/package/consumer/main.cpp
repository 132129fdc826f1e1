// SPDX-License-Identifier: MIT
#include <cstdio>
#include <vector>

#include <quant/quant.hpp>

int main() {
  using namespace loralab::quant;
  std::vector<float> w(64 * 256, 0.25f);
  w[3] = -1.0f;
  const auto q = blockwise_tensor<double_quant<nf4<64>>>::quantize<float>(w, {64, 256});
  std::vector<float> back(w.size());
  q.dequantize<float>(back);
  const bool ok = q.storage_bytes() == storage_bytes<double_quant<nf4<64>>>(w.size()) && back[3] < -0.99f;
  std::printf("consumer: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

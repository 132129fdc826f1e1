// SPDX-License-Identifier: MIT
#pragma once
// LoRA's hyper-parameters (Hu et al. 2021; PEFT's LoraConfig): rank r, alpha, dropout on the adapter input,
// rsLoRA scaling (Kalajdzievski 2023), initialisation. Validated once, at the edge.
#include <cmath>
#include <ostream>
#include <string>
#include <string_view>

#include "core/check.hpp"

namespace loralab::lora {

enum class lora_init {
  kaiming_uniform,  ///< PEFT's default (init_lora_weights=True): A ~ U(±1/√in) (kaiming_uniform, a=√5), B = 0
  gaussian,         ///< init_lora_weights="gaussian": A ~ N(0, 1/r), B = 0
};

inline lora_init parse_lora_init(std::string_view s) {
  if (s == "kaiming" || s == "kaiming_uniform" || s == "true" || s == "default") return lora_init::kaiming_uniform;
  if (s == "gaussian") return lora_init::gaussian;
  fail("--init must be kaiming_uniform or gaussian, got '", s, "'");
}

struct lora_config {
  /// Beyond this alpha / r scales every update past what float adapters hold (real configs use 8 … 512).
  static constexpr double max_alpha = 1e6;
  int r = 8;
  double alpha = 16;
  double dropout = 0.05;
  bool use_rslora = false;
  lora_init init = lora_init::kaiming_uniform;

  /// alpha / r, or alpha / √r with rsLoRA.
  double scaling() const { return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }

  void validate() const {
    LORALAB_CHECK(r > 0, "--r (LoRA rank) must be > 0, got ", r);
    LORALAB_CHECK(alpha > 0 && alpha <= max_alpha, "--alpha (LoRA alpha) must be in (0, ", max_alpha, "], got ", alpha);
    LORALAB_CHECK(dropout >= 0 && dropout < 1, "--dropout must be in [0, 1), got ", dropout);
  }
  friend std::ostream& operator<<(std::ostream& os, const lora_config& c) {
    return os << "lora_config{r=" << c.r << " alpha=" << c.alpha << " dropout=" << c.dropout << " rslora=" << c.use_rslora
              << " scaling=" << c.scaling() << " init=" << (c.init == lora_init::gaussian ? "gaussian" : "kaiming_uniform") << "}";
  }
};

}  // namespace loralab::lora

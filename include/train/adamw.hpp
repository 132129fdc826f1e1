// SPDX-License-Identifier: MIT
#pragma once
// torch.optim.AdamW (HF optim="adamw_torch"): decoupled weight decay, float32 state, torch's op order.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.hpp"
#include "train/adamw_element.hpp"
#include "train/optimizer_interface.hpp"

namespace loralab::train {

/// Adam hyper-parameters; defaults are HF TrainingArguments' (adam_beta1/2, adam_epsilon, weight_decay).
struct adam_config {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  ///< decoupled; only for parameters with decay = true

  void validate() const {
    LORALAB_CHECK(beta1 >= 0 && beta1 < 1, "--adam-beta1 must be in [0, 1), got ", beta1);
    LORALAB_CHECK(beta2 >= 0 && beta2 < 1, "--adam-beta2 must be in [0, 1), got ", beta2);
    LORALAB_CHECK(eps >= 0 && std::isfinite(eps), "--adam-epsilon must be finite and >= 0, got ", eps);
    LORALAB_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), "--weight-decay must be finite and >= 0, got ",
                  weight_decay);
  }
  friend std::ostream& operator<<(std::ostream& os, const adam_config& c) {
    return os << "betas=(" << c.beta1 << ", " << c.beta2 << ") eps=" << c.eps << " weight_decay=" << c.weight_decay;
  }
};

/// torch.optim.AdamW, single-tensor path (torch/optim/adam.py with decoupled weight decay; spec peft_lora §7).
/// Scalars in double as Python computes them, tensor ops in float32:
///   p *= 1 − lr·wd;  m = lerp(m, g, 1−β1);  v = v·β2 + (1−β2)·g·g;
///   p += (−lr/(1−β1^t)) · m / (√v / √(1−β2^t) + eps)        (eps after the bias-corrected sqrt)
/// State per parameter: exp_avg, exp_avg_sq (float32, 8 bytes per element).
class adamw final : public optimizer {
 public:
  struct slot {
    std::string name;
    std::size_t size = 0;
    std::vector<float> exp_avg, exp_avg_sq;  // (size)
  };

  explicit adamw(adam_config cfg = {}) : cfg_(cfg) { cfg_.validate(); }

  std::string_view name() const override { return "adamw"; }
  const adam_config& config() const { return cfg_; }
  /// The state of one parameter (after its first step); error if there is none.
  const slot& state_of(std::string_view param) const { return table_.find(param, name()); }

  void step(std::span<const param_ref> params, double lr) override {
    detail::check_lr(name(), lr);
    table_.bind(params, name(), [](const param_ref& p) {
      return slot{p.name, p.size, std::vector<float>(p.size, 0.0f), std::vector<float>(p.size, 0.0f)};
    });
    ++step_;
    const double t = double(step_);
    const double bias_correction1 = 1.0 - std::pow(cfg_.beta1, t);
    const double bias_correction2 = 1.0 - std::pow(cfg_.beta2, t);
    adamw_step_constants c{};
    c.neg_step_size = float(-(lr / bias_correction1));
    c.bias_correction2_sqrt = float(std::sqrt(bias_correction2));
    c.weight = float(1.0 - cfg_.beta1), c.beta2 = float(cfg_.beta2), c.one_minus_beta2 = float(1.0 - cfg_.beta2);
    c.eps = float(cfg_.eps);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const param_ref& p = params[k];
      slot& s = table_.slots[k];
      c.decay = p.decay && cfg_.weight_decay != 0.0;
      c.decay_factor = float(1.0 - lr * cfg_.weight_decay);
      float* m = s.exp_avg.data();
      float* v = s.exp_avg_sq.data();
#pragma omp parallel for schedule(static) if (p.size > (1 << 15))
      for (std::int64_t i = 0; i < std::int64_t(p.size); ++i) adamw_element(p.value[i], m[i], v[i], p.grad[i], c);
    }
  }

  std::size_t state_bytes() const override {
    std::size_t b = 0;
    for (const slot& s : table_.slots) b += detail::capacity_bytes(s.exp_avg) + detail::capacity_bytes(s.exp_avg_sq);
    return b;
  }
  std::size_t planned_state_bytes(std::span<const param_ref> params) const override {
    std::size_t b = 0;
    for (const param_ref& p : params) b += 2 * sizeof(float) * p.size;
    return b;
  }

  state_dict_t state_dict() const override {
    state_dict_t sd = base_entries();
    for (const slot& s : table_.slots) {
      sd[s.name + ".exp_avg"] = detail::to_bytes(s.exp_avg);
      sd[s.name + ".exp_avg_sq"] = detail::to_bytes(s.exp_avg_sq);
    }
    return sd;
  }
  void load_state_dict(const state_dict_t& sd) override {
    const detail::parsed_state ps = detail::parse_state_dict(sd, name(), {"exp_avg", "exp_avg_sq"});
    std::vector<slot> loaded;
    for (const auto& [param, entries] : ps.params) {
      const auto& m = detail::parsed_state::need(name(), param, entries, "exp_avg");
      const auto& v = detail::parsed_state::need(name(), param, entries, "exp_avg_sq");
      LORALAB_CHECK(m.size() % sizeof(float) == 0, "adamw: state entry '", param, ".exp_avg' holds ", m.size(),
                    " bytes, not a whole number of floats");
      const std::size_t n = m.size() / sizeof(float);
      loaded.push_back(slot{param, n, detail::from_bytes<float>(m, n, name(), param + ".exp_avg"),
                            detail::from_bytes<float>(v, n, name(), param + ".exp_avg_sq")});
    }
    table_.load(std::move(loaded), ps.step > 0 || !ps.params.empty());
    step_ = ps.step;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "adamw{" << cfg_ << "}";
    return os.str();
  }

 private:
  state_dict_t base_entries() const {
    const std::string_view n = name();
    state_dict_t sd;
    sd["optimizer"] = std::vector<std::uint8_t>(n.begin(), n.end());
    sd["step"] = detail::to_bytes(std::vector<std::int64_t>{step_});
    return sd;
  }

  adam_config cfg_;
  detail::slot_table<slot> table_;
};

}  // namespace loralab::train

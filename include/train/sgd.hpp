// SPDX-License-Identifier: MIT
#pragma once
// torch.optim.SGD (momentum, dampening 0, no Nesterov).
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
#include "train/optimizer_interface.hpp"

namespace loralab::train {

struct sgd_config {
  double momentum = 0.0;
  double weight_decay = 0.0;  ///< L2, coupled (added to the gradient), as torch.optim.SGD

  void validate() const {
    LORALAB_CHECK(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1), got ", momentum);
    LORALAB_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), "--weight-decay must be finite and >= 0, got ",
                  weight_decay);
  }
  friend std::ostream& operator<<(std::ostream& os, const sgd_config& c) {
    return os << "momentum=" << c.momentum << " weight_decay=" << c.weight_decay;
  }
};

/// torch.optim.SGD (dampening 0, no Nesterov): d = g + wd·p; with momentum, buf = d on the first step, then
/// buf = buf·μ + d, and d = buf; p += −lr·d. State: momentum_buffer (float32) only when momentum > 0.
class sgd final : public optimizer {
 public:
  struct slot {
    std::string name;
    std::size_t size = 0;
    std::vector<float> momentum_buffer;  // (size) when momentum > 0, else empty
  };

  explicit sgd(sgd_config cfg = {}) : cfg_(cfg) { cfg_.validate(); }

  std::string_view name() const override { return "sgd"; }
  const sgd_config& config() const { return cfg_; }

  void step(std::span<const param_ref> params, double lr) override {
    detail::check_lr(name(), lr);
    const bool has_buffer = cfg_.momentum != 0.0;
    table_.bind(params, name(), [&](const param_ref& p) {
      return slot{p.name, p.size, has_buffer ? std::vector<float>(p.size, 0.0f) : std::vector<float>{}};
    });
    const bool first = step_ == 0;
    ++step_;
    const float neg_lr = float(-lr), mu = float(cfg_.momentum);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const param_ref& p = params[k];
      const float wd = p.decay ? float(cfg_.weight_decay) : 0.0f;
      float* buf = table_.slots[k].momentum_buffer.data();
#pragma omp parallel for schedule(static) if (p.size > (1 << 15))
      for (std::int64_t i = 0; i < std::int64_t(p.size); ++i) {
        float d = p.grad[i];
        if (wd != 0.0f) d = d + wd * p.value[i];                  // grad.add(param, alpha=wd)
        if (has_buffer) {
          buf[i] = first ? d : buf[i] * mu + d;                   // buf.mul_(momentum).add_(d, alpha=1)
          d = buf[i];
        }
        p.value[i] = p.value[i] + neg_lr * d;                     // param.add_(d, alpha=-lr)
      }
    }
  }

  std::size_t state_bytes() const override {
    std::size_t b = 0;
    for (const slot& s : table_.slots) b += detail::capacity_bytes(s.momentum_buffer);
    return b;
  }
  std::size_t planned_state_bytes(std::span<const param_ref> params) const override {
    if (cfg_.momentum == 0.0) return 0;
    std::size_t b = 0;
    for (const param_ref& p : params) b += sizeof(float) * p.size;
    return b;
  }

  state_dict_t state_dict() const override {
    state_dict_t sd;
    const std::string_view n = name();
    sd["optimizer"] = std::vector<std::uint8_t>(n.begin(), n.end());
    sd["step"] = detail::to_bytes(std::vector<std::int64_t>{step_});
    if (cfg_.momentum != 0.0)
      for (const slot& s : table_.slots) sd[s.name + ".momentum_buffer"] = detail::to_bytes(s.momentum_buffer);
    return sd;
  }
  void load_state_dict(const state_dict_t& sd) override {
    const detail::parsed_state ps = detail::parse_state_dict(sd, name(), {"momentum_buffer"});
    LORALAB_CHECK(cfg_.momentum != 0.0 || ps.params.empty(), "sgd: the state dict holds momentum buffers ('",
                  ps.params.empty() ? "" : ps.params.begin()->first, ".momentum_buffer'), this sgd has momentum 0");
    std::vector<slot> loaded;
    for (const auto& [param, entries] : ps.params) {
      const auto& b = detail::parsed_state::need(name(), param, entries, "momentum_buffer");
      LORALAB_CHECK(b.size() % sizeof(float) == 0, "sgd: state entry '", param, ".momentum_buffer' holds ", b.size(),
                    " bytes, not a whole number of floats");
      const std::size_t n = b.size() / sizeof(float);
      loaded.push_back(slot{param, n, detail::from_bytes<float>(b, n, name(), param + ".momentum_buffer")});
    }
    table_.load(std::move(loaded), cfg_.momentum != 0.0 && (ps.step > 0 || !ps.params.empty()));
    step_ = ps.step;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "sgd{" << cfg_ << "}";
    return os.str();
  }

 private:
  sgd_config cfg_;
  detail::slot_table<slot> table_;
};

}  // namespace loralab::train

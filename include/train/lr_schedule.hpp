// SPDX-License-Identifier: MIT
#pragma once
// Learning-rate schedules of HF transformers (optimization.py, shared/specs/peft_lora.md §7), in double as Python
// computes them: lr = base_lr · λ(s), where s counts LambdaLR's scheduler steps from 0.
//
// Off-by-one that matters: the Trainer calls scheduler.step() AFTER optimizer.step(), so optimizer update k
// (1-based) uses λ(k−1). With warmup W > 0 the first update has lr 0 (Adam's moments and step counter still
// advance). The `learning_rate` HF logs after update k is the one for update k+1: lr_at(k + 1).
#include <algorithm>
#include <cmath>
#include <numbers>
#include <ostream>
#include <string_view>

#include "core/check.hpp"

namespace loralab::train {

enum class schedule_kind {
  constant,  ///< HF constant_with_warmup: λ(s) = s/max(1,W) for s < W, else 1 (W = 0 is HF "constant")
  linear,    ///< HF linear (the Trainer default): warmup, then max(0, (T−s)/max(1,T−W))
  cosine,    ///< HF cosine, num_cycles = 0.5: warmup, then max(0, ½(1 + cos(π·(s−W)/max(1,T−W))))
};

inline std::string_view to_string(schedule_kind k) {
  switch (k) {
    case schedule_kind::constant: return "constant";
    case schedule_kind::linear: return "linear";
    case schedule_kind::cosine: return "cosine";
  }
  return "?";
}
inline std::ostream& operator<<(std::ostream& os, schedule_kind k) { return os << to_string(k); }

inline schedule_kind parse_schedule_kind(std::string_view s) {
  for (auto k : {schedule_kind::constant, schedule_kind::linear, schedule_kind::cosine})
    if (s == to_string(k)) return k;
  fail("--lr-scheduler must be constant, linear or cosine, got '", s, "'");
}

/// One run's schedule. Plain data; lr_at() validates, so a bad flag fails before the first step.
struct lr_schedule {
  schedule_kind kind = schedule_kind::linear;
  double base_lr = 5e-5;  ///< --lr (HF learning_rate)
  int warmup_steps = 0;   ///< --warmup-steps (W)
  int total_steps = 1;    ///< --max-steps (T): the number of optimizer updates

  void validate() const {
    LORALAB_CHECK(base_lr > 0 && std::isfinite(base_lr), "--lr must be a finite value > 0, got ", base_lr);
    LORALAB_CHECK(warmup_steps >= 0, "--warmup-steps must be >= 0, got ", warmup_steps);
    LORALAB_CHECK(total_steps >= 1, "--max-steps must be >= 1, got ", total_steps);
  }

  /// HF's lr_lambda at scheduler step s >= 0 (LambdaLR's counter), operation for operation as in Python.
  double factor(int s) const {
    validate();
    LORALAB_CHECK(s >= 0, "scheduler step must be >= 0, got ", s);
    const double W = warmup_steps, T = total_steps;
    if (s < warmup_steps) return double(s) / std::max(1.0, W);
    switch (kind) {
      case schedule_kind::constant: return 1.0;
      case schedule_kind::linear: return std::max(0.0, (T - s) / std::max(1.0, T - W));
      case schedule_kind::cosine: {
        const double progress = (s - W) / std::max(1.0, T - W);
        return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress)));  // num_cycles = 0.5
      }
    }
    return 0.0;
  }

  /// Learning rate of optimizer update k (1-based): base_lr · λ(k−1). Past T the formulas run on as HF's do
  /// (linear stays 0; cosine would rise again), so callers stop at T.
  double lr_at(int k) const {
    LORALAB_CHECK(k >= 1, "optimizer updates count from 1, got update ", k);
    return base_lr * factor(k - 1);
  }

  friend std::ostream& operator<<(std::ostream& os, const lr_schedule& s) {
    return os << "lr_schedule{" << s.kind << " lr=" << s.base_lr << " warmup_steps=" << s.warmup_steps
              << " max_steps=" << s.total_steps << "}";
  }
};

}  // namespace loralab::train

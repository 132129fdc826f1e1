// SPDX-License-Identifier: MIT
#pragma once
// A trainer observer that prints what HF Trainer prints: the planned memory, one Python dict per log line
// ({'loss': 2.3456, 'grad_norm': …, 'learning_rate': 0.0002, 'epoch': 0.5}), a progress line on a terminal, why a run
// stopped, and the closing summary dict.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/python_float.hpp"
#include "dist/group.hpp"
#include "train/trainer.hpp"

namespace loralab::train {

/// HF's printed dict: {'loss': 2.3456, 'learning_rate': 0.0002, 'epoch': 0.5}
inline std::string python_dict(const nlohmann::ordered_json& j) {
  std::string s = "{";
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it != j.begin()) s += ", ";
    s += "'" + it.key() + "': ";
    s += it->is_number_integer() ? std::to_string(it->get<long long>()) : io::python_float_repr(it->get<double>());
  }
  return s + "}";
}

template <class Model>
class console_log final : public train_observer<Model> {
 public:
  explicit console_log(std::ostream& out = std::cout) : out_(out), tty_(&out == &std::cout && isatty(STDOUT_FILENO) && dist::launched().size == 1) {}

  void on_begin(trainer<Model>& t, int) override { out_ << t.planned_memory() << "\n"; }
  void on_step(trainer<Model>& t, int step, double loss) override {
    if (!tty_) return;
    out_ << "\r[" << step << "/" << t.total_steps() << "] loss " << fmt_loss(loss) << std::flush;
  }
  void on_log(trainer<Model>&, const log_event& e) override { out_ << (tty_ ? "\n" : "") << python_dict(e.values) << "\n"; }
  void on_end(trainer<Model>&, const run_record& rec, const nlohmann::ordered_json& summary) override {
    if (tty_) out_ << "\n";
    if (rec.interrupted) out_ << "\ninterrupted at step " << rec.steps << ": checkpoint saved\n";
    if (rec.stopped_early) out_ << "early stopping: the final adapter is the best one (eval_loss " << rec.final_eval_loss << ")\n";
    out_ << python_dict(summary) << "\n";
  }

 private:
  static std::string fmt_loss(double l) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", l);
    return b;
  }
  std::ostream& out_;
  bool tty_;
};

}  // namespace loralab::train

// SPDX-License-Identifier: MIT
#pragma once
// loralab::experiment — a run is a value (run_spec -> train_one -> run_result), sweeps over seeds with mean ± std,
// tables / CSV / JSON / figures / report.md derived from the results, and the shared command line and inputs of
// every experiment program. See docs/experiments.md for a rank sweep in 15 lines.
#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "experiment/report.hpp"
#include "experiment/run.hpp"
#include "experiment/setup.hpp"
#include "experiment/sweep.hpp"

namespace loralab::experiment {

/// A sweep's progress line: "  r=8, seed 42: eval loss 2.9501 -> 2.4310, 1.21 s".
inline void print_progress(const run_result& r) {
  fmt::print("  {}, seed {}: eval loss {:.4f} -> {:.4f}, {} steps in {:.2f} s\n", r.spec.name(), r.spec.train.seed, r.eval_before,
             r.eval_after(), r.train.steps, r.train.train_runtime);
  std::fflush(stdout);
}

}  // namespace loralab::experiment

// SPDX-License-Identifier: MIT
// A rank sweep — r ∈ {2, 4, 8, 16} × targets {q,v / all-linear} on an nf4+DQ base — against the public API
// (docs/experiments.md). Flags: every setup flag (--quick, --seeds 3, --model, --data, --scheme, …; see --help).
#include "experiment/experiment.hpp"
using namespace loralab;

int main(int argc, char** argv) {
  experiment::setup_options o;  // stories260K + fortunes, nf4-b64-dq, AdamW 3e-3, 2 epochs
  if (auto code = o.parse(argc, argv, "rank_sweep")) return *code;
  const auto in = experiment::load_inputs(o, argv[0]);
  std::vector<experiment::run_spec> specs;
  for (const char* targets : {"q_proj,v_proj", "all-linear"})
    for (int r : {2, 4, 8, 16}) {
      experiment::run_spec s = experiment::base_spec(o);
      s.targets = lora::parse_targets(targets), s.lora.r = r, s.label = fmt::format("{} r={}", targets, r);
      specs.push_back(s);
    }
  for (const auto& g : experiment::run_sweep(in.file, in.data, specs, o.seeds))
    fmt::print("{:<18} eval loss {}\n", g.name(), g.of(experiment::metric_named("eval loss after")).format("{:.4f}"));
}

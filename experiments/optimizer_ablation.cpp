// SPDX-License-Identifier: MIT
/// \file optimizer_ablation.cpp
/// \brief Does 8-bit AdamW cost anything? Optimizer-state bytes and final loss of AdamW vs bitsandbytes' AdamW8bit.
///
/// QLoRA's recipe pairs the 4-bit base with paged 8-bit AdamW (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
/// Quantization"): the two Adam moments stored as blockwise dynamic 8-bit codes take 2 bytes per parameter instead of 8,
/// and the paper reports no loss in accuracy. This program trains the same adapters on the same base with AdamW and
/// AdamW8bit (and SGD with momentum 0 as a floor) and reports the optimizer state and the losses. bitsandbytes keeps
/// 32-bit state for tensors under 4096 elements, so the default rank is 64 (stories260K's r-8 adapters are all smaller).
///
///   build/experiments/optimizer_ablation                # stories260K, fortunes, nf4-b64-dq, r 64 (~10 s)
///   build/experiments/optimizer_ablation --seeds 3 --optimizers adamw,adamw8bit
///
/// Output: table + closing sentence; OUT/optimizer_ablation.{csv,json,png}, OUT/report.md (OUT = --output-dir, default
/// results/optimizer_ablation). --quick: a few steps per run (CI).
#include "experiment/experiment.hpp"

using namespace loralab;
namespace ex = loralab::experiment;

int main(int argc, char** argv) {
  return ex::guarded_main("optimizer_ablation", [&] {
    ex::command_line cli("optimizer_ablation: optimizer-state bytes and final loss of AdamW vs 8-bit AdamW");
    ex::setup_options o;
    o.output_dir = "results/optimizer_ablation";
    o.r = 64, o.alpha = 128;
    std::string optimizers = "adamw,adamw8bit,sgd";
    o.add_to(cli);
    cli.flag("optimizers", optimizers, "comma list: adamw, adamw8bit, sgd");
    if (auto code = cli.parse(argc, argv)) return *code;
    o.finish(cli);

    const auto specs = ex::specs_over<std::string>(optimizers, "--optimizers", [&](const std::string& name) {
      ex::run_spec s = ex::base_spec(o);
      s.train.optim = s.label = name;
      return s;
    });
    const ex::inputs in = ex::load_inputs(o, argv[0]);
    fmt::print("{}\nscheme {}, r {}, alpha {}, targets {}, {} seed(s)\n\n", in.describe(), o.scheme, o.r, o.alpha, o.targets, o.seeds);
    const auto groups = ex::run_sweep(in.file, in.data, specs, o.sweep(), ex::print_progress);

    ex::report rep(o.output_dir, "optimizer_ablation", "Does 8-bit AdamW cost anything? Optimizer state and losses of AdamW, "
                                                       "bitsandbytes' AdamW8bit and SGD on the same adapters.");
    rep.setup = in.describe();
    rep.table = ex::sweep_table(groups, {{"optimizer", [](const auto& g) { return g.name(); }}, "trainable params", "optimizer KiB",
                                         "planned MiB", "ms/step", "final train loss", "eval loss after"});
    rep.figure = ex::figure{"Optimizers (" + o.scheme + " base, r " + std::to_string(o.r) + ")",
                            {ex::sweep_panel(groups, "", {}, "optimizer KiB"), ex::sweep_panel(groups, "", {}, "eval loss after")}};
    rep.json["config"] = in.config_json(o);
    rep.json["groups"] = ex::sweep_json(groups);
    const auto find = [&](const std::string& name) {
      return std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.name() == name; });
    };
    const auto a = find("adamw"), b = find("adamw8bit");
    if (a != groups.end() && b != groups.end()) {
      const auto& state = ex::metric_named("optimizer KiB");
      rep.conclusion = fmt::format("AdamW8bit holds {:.2f}x less optimizer state than AdamW ({:.1f} vs {:.1f} KiB). ",
                                   a->of(state).mean / b->of(state).mean, b->of(state).mean, a->of(state).mean) +
                       ex::compare(*b, *a, ex::metric_named("eval loss after"));
    }
    rep.write();
    return 0;
  });
}

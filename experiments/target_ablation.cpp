// SPDX-License-Identifier: MIT
/// \file target_ablation.cpp
/// \brief Where do the adapters go? {q,v}, {q,k,v,o} or all linear layers, at equal rank and at equal budget.
///
/// LoRA (Hu et al. 2021, §7.1) put adapters on W_q and W_v; QLoRA (Dettmers et al. 2023, §4) finds that "LoRA on all
/// linear transformer block layers is required to match full finetuning performance". But all-linear at the same rank
/// also trains several times more parameters. This program separates the two: each target set at rank --r (equal
/// rank), and each at the rank that gives it the trainable-parameter budget of all-linear at --r (equal budget).
/// Every run: same base (default nf4-b64-dq), data, steps and seeds; the closing sentences say whether all-linear's
/// eval loss beats {q,v}'s by more than the seed spread, at equal rank and at equal budget.
///
///   build/experiments/target_ablation                 # stories260K, fortunes, 5 configurations (~15 s)
///   build/experiments/target_ablation --seeds 3 --r 4
///
/// Output: table + closing sentences on stdout; OUT/target_ablation.{csv,json,png}, OUT/report.md
/// (OUT = --output-dir, default results/target_ablation). --quick: a few steps per run (CI).
#include <cmath>

#include "experiment/experiment.hpp"

using namespace loralab;
namespace ex = loralab::experiment;

/// Trainable parameters per unit of rank of `targets` on this model: Σ (N + K) over the targeted linears.
std::size_t parameters_per_rank(const nn::model_file& f, const lora::target_spec& targets) {
  std::size_t n = 0;
  for (const auto& [name, t] : f.tensors)
    if (name.starts_with("model.layers.") && name.ends_with("_proj.weight") && targets.matches(name.substr(0, name.size() - 7)))
      n += std::size_t(t.shape[0] + t.shape[1]);
  return n;
}

int main(int argc, char** argv) {
  return ex::guarded_main("target_ablation", [&] {
    ex::command_line cli("target_ablation: adapters on {q,v}, {q,k,v,o} or all linear layers, at equal rank and equal budget");
    ex::setup_options o;
    o.output_dir = "results/target_ablation";
    o.add_to(cli);
    if (auto code = cli.parse(argc, argv)) return *code;
    o.finish(cli);
    const ex::run_spec base = ex::base_spec(o);
    const ex::inputs in = ex::load_inputs(o, argv[0]);

    const std::vector<std::pair<std::string, std::string>> sets = {{"q,v", "q_proj,v_proj"}, {"q,k,v,o", "q_proj,k_proj,v_proj,o_proj"},
                                                                   {"all-linear", "all-linear"}};
    const std::size_t budget = o.r * parameters_per_rank(in.file, lora::parse_targets("all-linear"));
    std::vector<ex::run_spec> specs;
    for (const bool equal_budget : {false, true})
      for (const auto& [label, targets] : sets) {
        ex::run_spec s = base;
        s.targets = lora::parse_targets(targets);
        s.lora.r = equal_budget ? std::max(1, int(std::lround(double(budget) / double(parameters_per_rank(in.file, s.targets))))) : o.r;
        s.label = fmt::format("{} r={}{}", label, s.lora.r, equal_budget ? " (budget)" : "");
        if (!(equal_budget && targets == "all-linear")) specs.push_back(s);  // all-linear at --r is the budget itself
      }
    fmt::print("{}\nscheme {}, budget {} trainable parameters (all-linear at r={}), {} seed(s)\n\n", in.describe(), o.scheme,
               lora::with_commas(budget), o.r, o.seeds);
    const auto groups = ex::run_sweep(in.file, in.data, specs, o.sweep(), ex::print_progress);

    ex::report rep(o.output_dir, "target_ablation", "Where do the adapters go? {q,v}, {q,k,v,o} or all linear layers, at equal rank "
                                                    "and at equal trainable-parameter budget (QLoRA §4 in small).");
    rep.setup = in.describe();
    rep.table = ex::sweep_table(groups, {{"configuration", [](const auto& g) { return g.name(); }}, "trainable params", "planned MiB",
                                         "ms/step", "eval loss after"});
    rep.figure = ex::figure{"Adapter targets (" + o.scheme + " base)", {ex::sweep_panel(groups, "", {}, "eval loss after"),
                                                                        ex::sweep_panel(groups, "", {}, "trainable params")}};
    rep.json["config"] = in.config_json(o);
    rep.json["config"]["budget"] = budget;
    rep.json["groups"] = ex::sweep_json(groups);
    const auto& loss = ex::metric_named("eval loss after");
    const auto named = [&](const std::string& prefix, bool budget_run) -> const ex::run_group& {
      for (const auto& g : groups)
        if (g.name().starts_with(prefix + " r=") && g.name().ends_with(" (budget)") == budget_run) return g;
      fail("no configuration ", prefix, budget_run ? " at equal budget" : " at equal rank");
    };
    rep.conclusion = "At equal rank: " + ex::compare(named("all-linear", false), named("q,v", false), loss) +
                     "\nAt equal budget: " + ex::compare(named("all-linear", false), named("q,v", true), loss);
    rep.write();
    return 0;
  });
}

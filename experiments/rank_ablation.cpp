// SPDX-License-Identifier: MIT
/// \file rank_ablation.cpp
/// \brief Which LoRA rank? The LoRA paper's rank table (Hu et al. 2021, §7.2, Table 6) in small.
///
/// Hu et al. find that a very low rank already suffices (r = 1 to 8 on GPT-3's W_q, W_v do about as well as r = 64):
/// the update ΔW has a very low "intrinsic rank". This program trains the same adapters at r ∈ {1, 2, 4, 8, 16, 64}
/// (alpha fixed, as the paper keeps it at the first r it tried, so the scale alpha/r falls with r) on one base
/// (default nf4-b64-dq, QLoRA's) and reports trainable parameters, planned memory, speed and the eval loss after
/// the same number of steps, each as mean ± std over --seeds seeds. The closing sentence says whether the best rank's
/// loss is lower than r=8's (the usual default) by more than the seed spread.
///
///   build/experiments/rank_ablation                      # stories260K, fortunes, 6 ranks, 1 seed (~20 s)
///   build/experiments/rank_ablation --seeds 3 --ranks 2,8,32 --scheme float32
///
/// Output: table + closing sentence on stdout; OUT/rank_ablation.{csv,json,png} and OUT/report.md
/// (OUT = --output-dir, default results/rank_ablation). --quick: a few steps per run (CI).
#include "experiment/experiment.hpp"

using namespace loralab;

int main(int argc, char** argv) {
  return experiment::guarded_main("rank_ablation", [&] {
    experiment::command_line cli("rank_ablation: parameters, memory, speed and eval loss at several LoRA ranks");
    experiment::setup_options o;
    o.output_dir = "results/rank_ablation";
    std::string ranks = "1,2,4,8,16,64";
    o.add_to(cli);
    cli.flag("ranks", ranks, "comma list of LoRA ranks");
    if (auto code = cli.parse(argc, argv)) return *code;
    o.finish(cli);

    const auto specs = experiment::specs_over<int>(ranks, "--ranks", [&](int r) {  // the question: one run per rank, all else equal
      experiment::run_spec s = experiment::base_spec(o);
      s.lora.r = r, s.label = fmt::format("r={}", r);
      return s;
    });
    const experiment::inputs in = experiment::load_inputs(o, argv[0]);
    fmt::print("{}\nscheme {}, alpha {}, targets {}, {} seed(s)\n\n", in.describe(), o.scheme, o.alpha, o.targets, o.seeds);
    const auto groups = experiment::run_sweep(in.file, in.data, specs, o.sweep(), experiment::print_progress);

    experiment::report rep(o.output_dir, "rank_ablation", "Which LoRA rank? Trainable parameters, memory, speed and eval loss "
                                                          "after the same steps, at each rank (Hu et al. 2021, Table 6 in small).");
    rep.setup = in.describe();
    const auto rank_of = [](const experiment::run_group& g) { return double(g.spec.lora.r); };
    rep.table = experiment::sweep_table(groups, {{"r", [](const auto& g) { return std::to_string(g.spec.lora.r); }}, "trainable params",
                                                 "planned MiB", "ms/step", "eval loss before", "eval loss after"});
    rep.figure = experiment::figure{"LoRA rank ablation (" + o.scheme + " base)",
                                    {experiment::sweep_panel(groups, "rank r", rank_of, "eval loss after", true),
                                     experiment::sweep_panel(groups, "rank r", rank_of, "trainable params", true)}};
    rep.json["config"] = in.config_json(o);
    rep.json["config"]["ranks"] = ranks;
    rep.json["groups"] = experiment::sweep_json(groups);
    const auto& loss = experiment::metric_named("eval loss after");
    const auto& best = experiment::best_of(groups, loss);
    auto other = std::find_if(groups.begin(), groups.end(), [](const auto& g) { return g.spec.lora.r == 8; });  // the usual default
    if (other == groups.end() || &*other == &best) other = &best == &groups.front() ? groups.end() - 1 : groups.begin();
    rep.conclusion = fmt::format("The lowest eval loss is at {} ({} trainable parameters).", best.name(),
                                 lora::with_commas(best.first_run().parameters.trainable)) +
                     (&*other != &best ? " " + experiment::compare(best, *other, loss) : "");
    rep.write();
    return 0;
  });
}

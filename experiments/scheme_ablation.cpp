// SPDX-License-Identifier: MIT
/// \file scheme_ablation.cpp
/// \brief Which 4-bit base? NF4 vs FP4 vs 8-bit, double quantization on/off, block 64/128/256, after the same QLoRA run.
///
/// QLoRA (Dettmers et al. 2023, §5, Table 2 and Figure 3) orders the data types by what the quantized base costs:
/// NF4 + DQ ≈ NF4 < FP4 in perplexity/accuracy loss, with double quantization free of harm and smaller blocks more
/// precise. This program builds the same base in every scheme of the registry that bitsandbytes offers —
/// {nf4, fp4} × block {64, 128, 256} × DQ {off, on}, dynamic 8-bit at the same blocks, LLM.int8() row-wise — plus the
/// float32 reference, and reports the base's own perplexity (eval loss of base + zero adapters), the bits per weight
/// of its linears, and the eval loss after the same LoRA run on top. The closing sentences say whether NF4 beats FP4
/// and whether DQ costs anything, each against the seed spread (the base's perplexity has none: it is deterministic).
///
///   build/experiments/scheme_ablation                  # stories260K, fortunes, 17 bases (~40 s)
///   build/experiments/scheme_ablation --seeds 3 --schemes nf4-b64,fp4-b64,nf4-b64-dq
///
/// Output: table + closing sentences; OUT/scheme_ablation.{csv,json,png}, OUT/report.md (OUT = --output-dir, default
/// results/scheme_ablation). --quick: a few steps per run (CI).
#include <cmath>

#include "experiment/experiment.hpp"

using namespace loralab;
namespace ex = loralab::experiment;
namespace q = loralab::quant;

/// Every base this experiment can build: one compile-time list (each scheme instantiates a model).
using ablation_schemes =
    q::scheme_list<q::float32, q::nf4<64>, q::nf4<128>, q::nf4<256>, q::double_quant<q::nf4<64>>, q::double_quant<q::nf4<128>>,
                   q::double_quant<q::nf4<256>>, q::fp4<64>, q::fp4<128>, q::fp4<256>, q::double_quant<q::fp4<64>>,
                   q::double_quant<q::fp4<128>>, q::double_quant<q::fp4<256>>, q::dynamic8<64>, q::dynamic8<128>, q::dynamic8<256>,
                   q::int8_rowwise>;

int main(int argc, char** argv) {
  return ex::guarded_main("scheme_ablation", [&] {
    ex::command_line cli("scheme_ablation: base perplexity and eval loss after the same QLoRA run, for every quantization scheme");
    ex::setup_options o;
    o.output_dir = "results/scheme_ablation";
    std::string schemes = ablation_schemes::names();
    o.add_to(cli);
    cli.flag("schemes", schemes, "comma list of scheme names (default: all of them)");
    if (auto code = cli.parse(argc, argv)) return *code;
    o.finish(cli);

    const auto specs = ex::specs_over<std::string>(schemes, "--schemes", [&](const std::string& name) {
      ex::run_spec s = ex::base_spec(o);
      s.scheme = s.label = q::canonical_scheme_name(name);
      LORALAB_CHECK(ablation_schemes::contains(s.scheme), "--schemes: unknown scheme '", name, "'; known: ", ablation_schemes::names());
      return s;
    });
    const ex::inputs in = ex::load_inputs(o, argv[0]);
    fmt::print("{}\nr {}, alpha {}, targets {}, {} seed(s)\n\n", in.describe(), o.r, o.alpha, o.targets, o.seeds);
    const auto groups = ex::run_sweep<ablation_schemes>(in.file, in.data, specs, o.sweep(), ex::print_progress);

    ex::report rep(o.output_dir, "scheme_ablation", "Which quantized base? The base's own perplexity and the eval loss after the same "
                                                    "LoRA run, for every scheme (QLoRA Table 2 / Figure 3 in small).");
    rep.setup = in.describe();
    const auto ppl = [](const ex::run_group& g) { return fmt::format("{:.3f}", std::exp(g.first_run().eval_before)); };
    rep.table = ex::sweep_table(groups, {{"scheme", [](const auto& g) { return g.name(); }}, "bits/weight", {"base perplexity", ppl},
                                         "eval loss before", "eval loss after", "ms/step"});
    rep.figure = ex::figure{"Quantized bases", {ex::sweep_panel(groups, "", {}, "eval loss before"),
                                                ex::sweep_panel(groups, "", {}, "eval loss after")}};
    rep.json["config"] = in.config_json(o);
    rep.json["groups"] = ex::sweep_json(groups);
    const auto find = [&](const std::string& name) {
      return std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.spec.scheme == name; });
    };
    const auto& before = ex::metric_named("eval loss before");
    const auto& after = ex::metric_named("eval loss after");
    for (const auto& [a, b] : {std::pair{"nf4-b64", "fp4-b64"}, {"nf4-b64-dq", "nf4-b64"}, {"nf4-b64", "nf4-b256"}})
      if (find(a) != groups.end() && find(b) != groups.end())
        rep.conclusion += fmt::format("{} vs {}: base eval loss {:.4f} vs {:.4f}; after training: {}\n", a, b, find(a)->of(before).mean,
                                      find(b)->of(before).mean, ex::compare(*find(a), *find(b), after));
    rep.write();
    return 0;
  });
}

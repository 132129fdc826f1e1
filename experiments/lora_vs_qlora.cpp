// SPDX-License-Identifier: MIT
/// \file lora_vs_qlora.cpp
/// \brief LoRA vs QLoRA at several training-set sizes: what does the 4-bit base cost in loss, and what does it
///        save in memory and time?
///
/// QLoRA (Dettmers et al. 2023) claims that adapters trained over an NF4 + double-quantized base (block 64)
/// match adapters over a 16-bit base, while the frozen weights take 4.127 bits instead of 16 (or 32: float32
/// here; stories260K's tiny tensors need 5.4, see docs/lora.md) and the step runs slower. This program trains both,
/// with the same adapters, data, batches and dropout masks, at each size N of --sizes: LoRA over a float32 base
/// (gradient checkpointing off) and QLoRA over --scheme (default nf4-b64-dq; checkpointing on, PEFT's k-bit
/// preparation). The training set of size N is the first N records of one shuffled train split; every run is
/// evaluated on the same validation split before and after training; --seeds N repeats each run with N seeds.
///
///   build/experiments/lora_vs_qlora        # stories260K + tok512 (models/), Debian's fortunes, N = 50…400
///   build/experiments/lora_vs_qlora --data ../shared/data/english_quotes.jsonl --format quotes --sizes 100,1000
///   build/experiments/lora_vs_qlora --model smollm2 --scheme nf4-b64-dq,q4_1 …  # SmolLM2-135M from the cache; q4_1: the
///                                                                             # GGUF's own blocks as a third row
///
/// A run takes ceil(epochs · ceil(N / batch)) steps, as HF Trainer counts them. Runtime ~15 s on 2 cores.
/// Output: the config, a Markdown table (2 rows per size) and one closing sentence on stdout;
/// OUT/lora_vs_qlora.{csv,json,png}, OUT/report.md, OUT/N<size>/{lora,qlora}/ (each run's adapter and run.json) and,
/// for a base that is not an HF directory, OUT/base_model (the base as one, named by every adapter_config.json),
/// OUT = --output-dir (default results/lora_vs_qlora). The same --seed and --threads give the same losses.
#include <fmt/format.h>

#include "experiment/experiment.hpp"
#include "model_cli.hpp"

using namespace loralab;
namespace ex = loralab::experiment;
namespace fs = std::filesystem;

/// "50,100,all" -> sizes (0 stands for "all"). Errors name the flag.
std::vector<std::size_t> parse_sizes(const std::string& text) {
  std::vector<std::size_t> sizes;
  for (const std::string& s : ex::parse_list<std::string>(text, "--sizes")) {
    LORALAB_CHECK(s == "all" || (s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos),
                  "--sizes must be a comma list of record counts > 0 or 'all', got '", s, "' in '", text, "'");
    sizes.push_back(s == "all" ? 0 : std::stoull(s));
    LORALAB_CHECK(s == "all" || sizes.back() > 0, "--sizes: a training set needs at least 1 record, got 0 in '", text, "'");
  }
  LORALAB_CHECK(!sizes.empty(), "--sizes is empty: give at least one training-set size");
  return sizes;
}

int main(int argc, char** argv) {
  return ex::guarded_main("lora_vs_qlora", [&] {
    ex::command_line cli("lora_vs_qlora: LoRA (float32 base) vs QLoRA (nf4 + double quant base) at several data sizes");
    ex::setup_options o;
    o.output_dir = "results/lora_vs_qlora";
    std::string sizes_text = "50,100,200,400";
    o.add_to(cli, /*with_train_size=*/false);
    cli.flag("sizes", sizes_text, "training-set sizes in records, comma list ('all': the whole train split)");
    if (auto code = cli.parse(argc, argv)) return *code;
    o.finish(cli);
    const std::vector<std::size_t> sizes = parse_sizes(sizes_text);  // every flag checked before any work
    // --scheme may name several QLoRA bases (nf4-b64-dq,q4_1): one row each beside LoRA's, at every size.
    const std::vector<std::string> schemes = ex::parse_list<std::string>(o.scheme, "--scheme");
    LORALAB_CHECK(!schemes.empty(), "--scheme is empty: give at least one QLoRA base");
    for (const auto& s : schemes) (void)experiments::model_scheme<experiments::model_and_ggml_schemes>(s, false);
    o.scheme = schemes.front();
    ex::run_spec lora_spec = ex::base_spec(o);
    lora_spec.scheme = "float32", lora_spec.label = "LoRA";
    std::vector<ex::run_spec> qlora_specs;
    for (const auto& s : schemes) {
      ex::run_spec q = ex::base_spec(o);
      q.scheme = s, q.label = schemes.size() == 1 ? "QLoRA" : "QLoRA " + quant::canonical_scheme_name(s);
      qlora_specs.push_back(q);
    }
    const std::size_t per = 1 + qlora_specs.size();  // rows per size: LoRA, then each QLoRA base
    o.train_size = 0;
    ex::inputs in = ex::load_inputs(o, argv[0]);
    std::vector<std::size_t> ns;
    for (std::size_t n : sizes) {
      LORALAB_CHECK(n <= in.all.train.size(), "--sizes ", n, " is larger than the train split: ", in.all.train.size(), " of ",
                    in.all.records, " records of ", o.data, " (the rest are the --val-size ", in.dc.val, " validation records)");
      ns.push_back(n == 0 ? in.all.train.size() : n);
    }
    std::sort(ns.begin(), ns.end());
    ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
    const fs::path out(o.output_dir);
    lora_spec.base_model = experiments::base_model_record(in.file, in.model_path, "", out);
    for (auto& q : qlora_specs) q.base_model = lora_spec.base_model;
    std::cout << in.describe() << "\n" << lora_spec.lora << "\n";
    fmt::print("targets: {}; optimizer {} lr {} (linear decay), epochs {}, seed {}, threads {}, seeds {}\nbases: LoRA float32, "
               "QLoRA {}\n", o.targets, o.optim, o.lr, o.epochs, o.seed, omp_get_max_threads(), o.seeds,
               fmt::join(schemes, ", "));

    // Size N trains on the first N records of the shuffled train split; LoRA and QLoRA see the same batches.
    std::vector<ex::run_group> groups;  // (LoRA, QLoRA…) per size
    for (std::size_t n : ns) {
      data::prepared_dataset d = in.all;
      d.train = in.all.train.head(n);
      lora_spec.output = out / fmt::format("N{}", n) / "lora";
      std::vector<ex::run_spec> specs = {lora_spec};
      for (std::size_t k = 0; k < qlora_specs.size(); ++k) {  // the first base in N/qlora, others in N/qlora-SCHEME
        qlora_specs[k].output = out / fmt::format("N{}", n) / (k == 0 ? "qlora" : "qlora-" + quant::canonical_scheme_name(schemes[k]));
        specs.push_back(qlora_specs[k]);
      }
      ex::sweep_options sweep = o.sweep();  // one sweep per size: its own cells
      sweep.cells_dir = out / "cells" / fmt::format("N{}", n);
      for (auto& g : ex::run_sweep<experiments::model_and_ggml_schemes>(in.file, d, specs, sweep, ex::print_progress))
        groups.push_back(std::move(g));
    }
    const auto size_of = [&](const ex::run_group& g) { return ns[std::size_t(&g - groups.data()) / per]; };  // `per` groups a size
    const auto& r0 = groups.front().first_run();
    fmt::print("trainable params: {} || all params: {} || trainable%: {:.4f}\n\n", lora::with_commas(r0.parameters.trainable),
               lora::with_commas(r0.parameters.all), r0.parameters.percent());

    const auto& loss = ex::metric_named("eval loss after");
    const auto& time = ex::metric_named("time s");
    const auto partner = [&](const ex::run_group& g) -> const ex::run_group& {  // the LoRA row of g's size
      return groups[std::size_t(&g - groups.data()) / per * per];
    };
    ex::report rep(out, "lora_vs_qlora", "LoRA vs QLoRA at several training-set sizes: what does the 4-bit base cost in eval loss, "
                                         "and what does it save in memory and time?");
    rep.setup = in.describe();
    const auto ratio = [&](const ex::metric& m, const char* f) {
      return [&, f](const ex::run_group& g) { return fmt::format(fmt::runtime(f), g.of(m).mean / partner(g).of(m).mean); };
    };
    rep.table = ex::sweep_table(groups, {{"size", [&](const auto& g) { return std::to_string(size_of(g)); }},
                                         {"method", [](const auto& g) { return g.name(); }}, "steps", "time s", "tokens/s",
                                         {"QLoRA/LoRA time", ratio(time, "{:.2f}")}, "frozen linears MiB", "bits/weight", "planned MiB",
                                         "peak RSS MiB", "eval loss before", "eval loss after",
                                         {"gap vs LoRA %", [&](const auto& g) {
                                            return fmt::format("{:+.2f}", 100 * (g.of(loss).mean / partner(g).of(loss).mean - 1));
                                          }}});
    const ex::run_group &lo = groups[groups.size() - per], &q = groups[groups.size() - per + 1];  // LoRA and the first QLoRA base
    const auto mean = [](const ex::run_group& g, const char* m) { return g.of(ex::metric_named(m)).mean; };
    rep.conclusion = fmt::format(
        "At N={}, QLoRA's eval loss is {:.2f}% {} LoRA's ({:.4f} vs {:.4f}; before training {:.4f} vs {:.4f}); its frozen linears "
        "take {:.1f}x less memory ({:.2f} vs {:.0f} bits/weight) and its planned step memory (checkpointing on) is {:.2f}x LoRA's; "
        "it runs {:.2f}x LoRA's time. {}",
        ns.back(), std::abs(100 * (q.of(loss).mean / lo.of(loss).mean - 1)), q.of(loss).mean >= lo.of(loss).mean ? "above" : "below",
        q.of(loss).mean, lo.of(loss).mean, mean(q, "eval loss before"), mean(lo, "eval loss before"),
        mean(lo, "frozen linears MiB") / mean(q, "frozen linears MiB"), mean(q, "bits/weight"), mean(lo, "bits/weight"),
        mean(q, "planned MiB") / mean(lo, "planned MiB"), q.of(time).mean / lo.of(time).mean, ex::compare(q, lo, loss));

    ex::figure fig{fmt::format("LoRA (float32 base) vs QLoRA ({} base), {} epochs", fmt::join(schemes, ", "), o.epochs), {}};
    ex::figure::panel eval{"eval loss after training (dashed: before)", "training records", "eval loss", true, {}, {}};
    ex::figure::panel secs{"train time", "training records", "seconds", true, {}, {}};
    for (std::size_t k = 0; k < per; ++k) {
      ex::figure::series after{groups[k].name(), {}, {}, {}}, before{groups[k].name() + " before", {}, {}, {}}, t{groups[k].name(), {}, {}, {}};
      for (std::size_t i = k; i < groups.size(); i += per) {
        const double x = double(size_of(groups[i]));
        after.x.push_back(x), after.y.push_back(groups[i].of(loss).mean);
        before.x.push_back(x), before.y.push_back(mean(groups[i], "eval loss before"));
        t.x.push_back(x), t.y.push_back(groups[i].of(time).mean);
      }
      eval.lines.push_back(after), eval.lines.push_back(before), secs.lines.push_back(t);
    }
    fig.panels = {eval, secs};
    rep.figure = fig;

    rep.json["config"] = in.config_json(o);
    rep.json["config"]["sizes"] = ns, rep.json["config"]["qlora_scheme"] = quant::canonical_scheme_name(schemes.front());
    if (schemes.size() > 1) {
      std::vector<std::string> names;
      for (const auto& s : schemes) names.push_back(quant::canonical_scheme_name(s));
      rep.json["config"]["qlora_schemes"] = names;
    }
    for (const auto& g : groups)
      for (const auto& r : g.runs) {
        nlohmann::ordered_json j = {{"size", size_of(g)}, {"method", g.name()}, {"base", r.scheme}};
        j.update(r.to_json());
        rep.json["runs"].push_back(j);
      }
    rep.write();
    return 0;
  });
}

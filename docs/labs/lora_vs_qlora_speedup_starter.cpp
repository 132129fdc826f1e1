// SPDX-License-Identifier: MIT
// Lab "LoRA vs QLoRA speed-up at several data sizes" (docs/labs/lora_vs_qlora_speedup.md) — the starter. At each
// training-set size it trains LoRA (float32 base) and QLoRA (--scheme, nf4-b64-dq) on the same records with the same
// seeds, and prints their train times. Your work is marked TASK; build/experiments/lora_vs_qlora is the reference.
#include "experiment/experiment.hpp"
using namespace loralab;

int main(int argc, char** argv) {
  experiment::setup_options o;
  o.output_dir = "results/lab_speedup";
  if (auto code = o.parse(argc, argv, "lora_vs_qlora_speedup_starter: LoRA vs QLoRA train time at several sizes")) return *code;
  const auto in = experiment::load_inputs(o, argv[0]);
  const auto& time = experiment::metric_named("time s");
  for (std::size_t n : {16, 32, 64}) {  // TASK 1: choose the sizes (records) to compare; --seeds 3 for a spread
    data::prepared_dataset d = in.all;
    d.train = in.all.train.head(n);
    experiment::run_spec lora = experiment::base_spec(o), qlora = lora;
    lora.scheme = "float32", lora.label = "LoRA", qlora.label = "QLoRA";
    const auto groups = experiment::run_sweep(in.file, d, {lora, qlora}, o.seeds);
    fmt::print("N={}: LoRA {} s, QLoRA {} s\n", n, groups[0].of(time).format("{:.2f}"), groups[1].of(time).format("{:.2f}"));
    // TASK 2: print the QLoRA/LoRA time ratio, the frozen linears' memory (metric "frozen linears MiB") and the eval
    //         loss gap (metric "eval loss after"), with experiment::compare for the seed spread.
  }
  // QUESTION: does QLoRA's slow-down grow or shrink with the data size? What is paid per step, what once per run?
  //           Hand in lora_vs_qlora's output directory for your sizes with answers.json and run build/labs/grade on it.
  return 0;
}

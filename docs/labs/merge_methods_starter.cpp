// SPDX-License-Identifier: MIT
// Lab "compare merge methods" (docs/labs/merge_methods.md) — the starter. It trains a short QLoRA adapter with
// train_one, runs base + adapter unmerged on a validation batch, and checks one merge (the merged float model).
// Your work is marked TASK; build/experiments/merge_compare is the reference to compare your numbers with.
#include "experiment/experiment.hpp"
#include "lora/merged_model.hpp"
#include "lora/peft_io.hpp"
#include "nn/model_io.hpp"
using namespace loralab;
using qlora_base = quant::double_quant<quant::nf4<64>>;  // --scheme's default, nf4-b64-dq

int main(int argc, char** argv) {
  experiment::setup_options o;
  o.output_dir = "results/lab_merge";
  if (auto code = o.parse(argc, argv, "merge_methods_starter: train an adapter, then compare merge methods")) return *code;
  const auto in = experiment::load_inputs(o, argv[0]);
  experiment::run_spec spec = experiment::base_spec(o);  // all-linear r 8 on nf4-b64-dq
  spec.output = std::filesystem::path(o.output_dir) / "adapter";
  std::cout << experiment::train_one(in.file, in.data, spec) << "\n";

  auto m = lora::make_lora_quantized_model<qlora_base>(in.file);  // base + adapter, unmerged (PEFT's PeftModel)
  lora::load_adapter(m, spec.output);
  lora::set_adapter_mode(m, /*training=*/false, 0);
  const data::batch b = in.data.val.batch_at(0, 0);
  const nn::matrix<float> unmerged = m.forward(b.tokens, b.B, b.T);

  const nn::model_file merged = lora::merged_model_file(m, in.file);  // W' = deq(Q(W)) + s·B·A, as float
  auto dense = nn::make_dense_model<float>(merged);
  const nn::matrix<float> diff = dense.forward(b.tokens, b.B, b.T) - unmerged;
  fmt::print("merged (in memory) vs unmerged: max |Δlogit| {:.3g}\n", diff.cwiseAbs().maxCoeff());
  // TASK 1: write `merged` with nn::write_hf_dir and nn::write_meta_dir, read each back with nn::load_model_file and
  //         compare its logits with `unmerged` as above. Which layout is larger on disk, and why?
  // TASK 2: requantize the merge (lora::requantization_error<qlora_base>) and compare perplexities (exp of the mean
  //         validation loss): how much of the adapter's gain survives?
  // QUESTION: is "merged equals unmerged" true within 1e-3 in every layout? Hand in merge_compare's output directory
  //           with your answers.json (docs/labs/merge_methods.md) and run build/labs/grade on it.
  return 0;
}

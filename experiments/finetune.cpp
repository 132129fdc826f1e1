// SPDX-License-Identifier: MIT
/// \file finetune.cpp
/// \brief LoRA (float base) or QLoRA (4-bit base) fine-tuning of a Llama model, reported like HF Trainer.
///
///   build/experiments/finetune --model ../shared/models/stories260K.bin --tokenizer ../shared/models/tok512.model
///       --data ../shared/data/english_quotes.jsonl --format quotes --output-dir results/qlora
///       --quant nf4 --double-quant --r 8 --alpha 16 --targets q_proj,v_proj --max-steps 100
///
/// Prints the config, PEFT's trainable-parameter line and the memory report before step 0, then HF-style log
/// lines and a closing summary. Writes OUTPUT/adapter_config.json + adapter_model.safetensors (PEFT's layout),
/// OUTPUT/checkpoint-N/, OUTPUT/metrics.jsonl and OUTPUT/run.json. --resume continues from the newest checkpoint.
/// Runtime: ~20 s for 100 steps of stories260K on 2 cores.
#include <iostream>
#include <string>

#include <fmt/core.h>

#include "common.hpp"
#include "lora/lora.hpp"
#include "lora/trainer.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"
#include "quant/scheme_dispatch.hpp"

using namespace loralab;

namespace {
template <class Base>
int run(lora::lora_model<Base>& m, lora::prepared_dataset& data, const lora::lora_config& lc, const lora::target_spec& targets,
        const lora::train_options& o, const std::string& model_path) {
  const int adapted = lora::attach_adapters(m, lc, targets, o.seed);
  std::cout << lc << "\ntargets: " << targets.describe() << " (" << adapted << " modules)\n"
            << lora::trainable_parameters_line(m) << "\n"
            << lora::count_storage(m) << "\n";
  lora::trainer<Base> t(m, data, lc, targets, o, model_path);
  std::cout << "train rows " << data.train.size() << ", validation rows " << data.val.size() << ", steps " << t.total_steps()
            << ", gradient checkpointing " << (m.gradient_checkpointing ? "on" : "off") << "\n";
  const auto rec = t.run();
  if (std::isfinite(rec.final_eval_loss)) fmt::print("final eval_loss {:.4f}\n", rec.final_eval_loss);
  fmt::print("peak RSS {:.1f} MiB, {:.0f} tokens/s; {} in {}\n", double(rec.peak_rss_bytes) / (1 << 20),
             rec.tokens_per_second, rec.interrupted ? "checkpoint" : "adapter", o.output_dir.string());
  return rec.interrupted ? 130 : 0;  // as a shell reports a SIGINT: scripts can tell a stopped run from a finished one
}
}  // namespace

int main(int argc, char** argv) try {
  namespace po = experiments::po;
  experiments::common_options common;
  std::string model_path, tokenizer_path, format = "alpaca", tmpl, quant = "none", targets_text = "q_proj,v_proj", optim = "adamw",
              scheduler = "linear", val = "0", init = "kaiming_uniform";
  bool dq = false, train_on_prompt = false, packing = false;
  lora::lora_config lc;
  lora::train_options o;
  lora::dataset_config dc;
  std::string data_path;
  po::options_description desc("finetune: LoRA / QLoRA fine-tuning");
  desc.add_options()("model", po::value(&model_path)->required(), "llama2.c .bin checkpoint or HF directory")(
      "tokenizer", po::value(&tokenizer_path)->required(), "sentencepiece .model or llama2.c tokenizer.bin")(
      "data", po::value(&data_path)->required(), "dataset file")(
      "format", po::value(&format)->default_value(format), "alpaca, dolly, quotes or text")(
      "template", po::value(&tmpl), "alpaca, dolly or plain (default: the format's)")(
      "train-on-prompt", po::bool_switch(&train_on_prompt), "also train on prompt tokens (default: responses only)")(
      "output-dir", po::value(&o.output_dir)->required(), "adapter, checkpoints, metrics.jsonl, run.json")(
      "quant", po::value(&quant)->default_value(quant), "base weights: none (LoRA), nf4, fp4 or int8 (QLoRA)")(
      "double-quant", po::bool_switch(&dq), "double-quantize the 4-bit absmax (QLoRA)")(
      "r", po::value(&lc.r)->default_value(8), "LoRA rank")("alpha", po::value(&lc.alpha)->default_value(16), "LoRA alpha")(
      "dropout", po::value(&lc.dropout)->default_value(0.05), "dropout on the adapter input")(
      "rslora", po::bool_switch(&lc.use_rslora), "scale by alpha/sqrt(r)")(
      "init", po::value(&init)->default_value(init), "kaiming_uniform (PEFT default) or gaussian")(
      "targets", po::value(&targets_text)->default_value(targets_text), "q_proj,v_proj | all-linear | REGEX (full match)")(
      "lr", po::value(&o.lr)->default_value(2e-4), "peak learning rate")(
      "optim", po::value(&optim)->default_value(optim), "adamw, adamw8bit or sgd")(
      "weight-decay", po::value(&o.weight_decay)->default_value(0.0), "decoupled weight decay")(
      "scheduler", po::value(&scheduler)->default_value(scheduler), "linear, cosine or constant")(
      "warmup-steps", po::value(&o.warmup_steps)->default_value(0), "linear warmup steps")(
      "max-steps", po::value(&o.max_steps)->default_value(0), "optimizer steps (0: from --epochs)")(
      "epochs", po::value(&o.epochs)->default_value(1.0), "epochs when --max-steps is 0")(
      "batch-size", po::value(&dc.batch_size)->default_value(8), "rows per micro-batch")(
      "grad-accum", po::value(&o.grad_accum)->default_value(1), "micro-batches per optimizer step")(
      "seq-len", po::value(&dc.seq_len)->default_value(128), "tokens per row (truncation)")(
      "packing", po::bool_switch(&packing), "pack examples into full rows")(
      "max-grad-norm", po::value(&o.max_grad_norm)->default_value(1.0), "global grad-norm clipping (0: off)")(
      "gradient-checkpointing", po::bool_switch(), "recompute blocks in backward (on by default for quantized bases)")(
      "val-size", po::value(&val)->default_value(val), "validation records: a count or a fraction")(
      "eval-steps", po::value(&o.eval_steps)->default_value(0), "evaluate every N steps (0: at the end)")(
      "early-stopping-patience", po::value(&o.early_stopping_patience)->default_value(0), "evaluations without improvement")(
      "save-steps", po::value(&o.save_steps)->default_value(0), "checkpoint every N steps (0: none)")(
      "logging-steps", po::value(&o.logging_steps)->default_value(10), "log every N steps")(
      "resume", po::bool_switch(&o.resume), "continue from the newest OUTPUT/checkpoint-N");
  experiments::add_common_options(desc, common);
  po::variables_map vm;
  if (int code = 0; !experiments::parse_command_line(argc, argv, desc, vm, common, code)) return code;
  lc.init = lora::parse_lora_init(init);
  lc.validate();
  o.seed = common.seed;
  o.optim = optim;
  o.scheduler = lora::parse_schedule_kind(scheduler);
  o.validate();
  const auto targets = lora::parse_targets(targets_text);
  dc.file = data_path;
  dc.format = lora::parse_data_format(format);
  if (!tmpl.empty()) dc.tmpl = lora::parse_prompt_template(tmpl);
  dc.train_on_prompt = train_on_prompt;
  dc.packing = packing;
  dc.val = lora::val_size::parse(val);
  dc.seed = common.seed;  // the train/validation split keeps its own seed: runs with other seeds share it
  dc.validate();
  LORALAB_CHECK(quant == "none" || quant == "nf4" || quant == "fp4" || quant == "int8", "--quant must be none, nf4, fp4 or int8, got '", quant, "'");
  LORALAB_CHECK(!dq || quant == "nf4" || quant == "fp4", "--double-quant needs --quant nf4 or fp4");

  const nn::model_file file = nn::load_model_file(model_path);
  LORALAB_CHECK(dc.seq_len <= file.config.max_seq_len, "--seq-len ", dc.seq_len, " exceeds the model's context of ",
                file.config.max_seq_len, " (", model_path, ")");
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  lora::prepared_dataset data = lora::prepare_dataset(dc, *tok);
  std::cout << dc << "\n" << file.config << "\nbase: " << quant << (dq ? " + double quant" : "") << "\n";
  const bool ckpt = vm["gradient-checkpointing"].as<bool>();
  if (quant == "none") {
    auto m = lora::make_lora_dense_model<float>(file);
    m.gradient_checkpointing = ckpt;
    return run(m, data, lc, targets, o, model_path);
  }
  if (quant == "int8") {
    auto m = lora::make_lora_quantized_model<quant::int8_rowwise>(file);
    return run(m, data, lc, targets, o, model_path);
  }
  int rc = 0;
  quant::dispatch_4bit(quant, 64, dq, [&]<class S>(std::type_identity<S>) {
    auto m = lora::make_lora_quantized_model<S>(file);
    rc = run(m, data, lc, targets, o, model_path);
  });
  return rc;
} catch (const std::exception& e) {
  fmt::print(stderr, "finetune: error: {}\n", e.what());
  return 1;
}

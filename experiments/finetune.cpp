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
/// OUTPUT/checkpoint-N/, OUTPUT/metrics.jsonl and OUTPUT/run.json. --resume continues from the newest checkpoint
/// (verified against its manifest.json; a damaged file is named and the run refused), --resume-from DIR from a named
/// one. A full disk or a non-finite loss, gradient or weight stops the run with the file or step and tensor named,
/// the last good checkpoint untouched (train/run_files.hpp, README "Faults").
/// --adapter DIR starts a new run from a PEFT adapter's values (its rank, alpha and targets; optimizer fresh).
/// --adapter-gguf FILE also writes the finished adapter as a llama.cpp GGUF LoRA (lora/gguf_adapter.hpp), for
/// `llama-cli -m BASE.gguf --lora FILE` over the base in llama.cpp's own layout.
///
/// adapter_config.json's base_model_name_or_path names an HF directory, so that PEFT's
/// AutoPeftModelForCausalLM.from_pretrained(OUTPUT) finds the base: --model itself when it is one, else the
/// base written as an HF directory to --export-base (default OUTPUT/base_model; "none" records --model as given).
/// Instruction data (alpaca, dolly) over a model with a chat template (a GGUF's tokenizer.chat_template: SmolLM2's
/// ChatML) is rendered with that template by default, as TRL's SFT with completion-only loss does (user = instruction
/// [+ input], assistant = output, the loss on the assistant's part only; data/prompt_template.hpp):
///
///   build/experiments/finetune --model smollm2 --data ../shared/data/alpaca_en_demo.json --output-dir results/smol
///       --quant q4_1 --max-steps 20 --seq-len 128     # --quant none: LoRA; nf4 --double-quant: QLoRA; q4_1: the file's blocks
///
/// Runtime: ~20 s for 100 steps of stories260K on 2 cores; SmolLM2-135M ~5 s a step (batch 8, T 128).
#include <iostream>
#include <string>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "experiment/setup.hpp"
#include "model_cli.hpp"
#include "lora/lora.hpp"
#include "train/console_log.hpp"
#include "train/run_files.hpp"
#include "train/trainer.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;

namespace {
/// How the run's adapters start: fresh (attach_adapters) or from a PEFT directory (--adapter).
struct adapter_start {
  std::filesystem::path dir;  ///< empty: fresh
  bool r_given = false, alpha_given = false, targets_given = false, dropout_given = false;
};

template <class Base>
int run(lora::lora_model<Base>& m, data::prepared_dataset& data, lora::lora_config lc, lora::target_spec targets,
        const train::train_options& o, const std::filesystem::path& output_dir, bool resume,
        const std::filesystem::path& resume_from, const std::string& model_path,
        const adapter_start& start, const std::filesystem::path& adapter_gguf) {
  int adapted = 0;
  if (start.dir.empty()) {
    adapted = lora::attach_adapters(m, lc, targets, o.seed);
  } else {  // the adapter's own settings; a flag given on the command line must agree with them
    const auto cfg = lora::load_adapter(m, start.dir);
    const std::string where = (start.dir / "adapter_config.json").string();
    LORALAB_CHECK(!start.r_given || lc.r == cfg.config.r, "--r ", lc.r, " differs from the adapter's r ", cfg.config.r, " (", where, ")");
    LORALAB_CHECK(!start.alpha_given || lc.alpha == cfg.config.alpha, "--alpha ", lc.alpha, " differs from the adapter's lora_alpha ",
                  cfg.config.alpha, " (", where, ")");
    LORALAB_CHECK(!start.targets_given || targets.describe() == cfg.targets.describe(), "--targets ", targets.describe(),
                  " differ from the adapter's target_modules ", cfg.targets.describe(), " (", where, ")");
    const double dropout = start.dropout_given ? lc.dropout : cfg.config.dropout;
    lc = cfg.config, targets = cfg.targets, lc.dropout = dropout;
    lora::for_each_adapter(m, [&](const std::string&, auto& a, auto&) { a.dropout = dropout, ++adapted; });
    std::cout << "adapter: starting from " << start.dir.string() << "\n";
  }
  std::cout << lc << "\ntargets: " << targets.describe() << " (" << adapted << " modules)\n"
            << lora::trainable_parameters_line(m) << "\n"
            << lora::count_storage(m) << "\n";
  const dist::group& world = dist::group::world();
  train::trainer<lora::lora_model<Base>> t(m, data, o, world);
  if (world.size() > 1) {
    std::size_t floats = 0;
    lora::for_each_adapter(m, [&](const std::string&, auto& a, auto&) { floats += std::size_t(a.A.size() + a.B.size()); });
    fmt::print("data parallel: {} ranks share each step's {} micro-batch(es) of {} rows; one sum of {} gradient floats "
               "({:.1f} KiB) per step\n", world.size(), o.grad_accum, data.train.batch_size(), floats, 4.0 * double(floats) / 1024);
  }
  train::console_log<lora::lora_model<Base>> console;
  train::run_files<lora::lora_model<Base>> files(output_dir, lc, targets, model_path);  // model_path: the base recorded in adapter_config.json
  t.observe(console).observe(files);
  if (resume) train::resume_latest(t, output_dir);
  if (!resume_from.empty()) train::resume_from(t, resume_from);
  std::cout << "train rows " << data.train.size() << ", validation rows " << data.val.size() << ", steps " << t.total_steps()
            << ", gradient checkpointing " << (m.gradient_checkpointing ? "on" : "off") << "\n";
  const auto rec = t.run();
  if (std::isfinite(rec.final_eval_loss)) fmt::print("final eval_loss {:.4f}\n", rec.final_eval_loss);
  if (world.size() > 1) {
    const auto& traffic = world.reduced();
    fmt::print("data parallel: {:.2f} ms per step in the sums between ranks ({:.1f} MiB summed in all)\n",
               1e3 * traffic.seconds / double(std::max<std::size_t>(1, rec.step_seconds.size())), double(traffic.bytes) / (1 << 20));
  }
  if (!rec.interrupted && !adapter_gguf.empty() && world.is_root()) {
    lora::save_gguf_adapter(m, adapter_gguf);
    fmt::print("GGUF LoRA adapter (llama.cpp --lora) in {}\n", adapter_gguf.string());
  }
  fmt::print("peak RSS {:.1f} MiB, {:.0f} tokens/s; {} in {}\n", double(rec.peak_rss_bytes) / (1 << 20),
             rec.tokens_per_second, rec.interrupted ? "checkpoint" : "adapter", output_dir.string());
  return rec.interrupted ? 130 : 0;  // as a shell reports a SIGINT: scripts can tell a stopped run from a finished one
}
}  // namespace

int main(int argc, char** argv) try {
  namespace po = experiment::po;
  std::string model_path, tokenizer_path, format = "alpaca", tmpl, quant = "none", targets_text = "q_proj,v_proj", optim = "adamw",
              scheduler = "linear", val = "0", init = "kaiming_uniform", adapter_dir, export_base, adapter_gguf;
  bool dq = false, train_on_prompt = false, packing = false;
  lora::lora_config lc;
  train::train_options o;
  std::filesystem::path output_dir, resume_from;
  bool resume = false;
  data::dataset_config dc;
  std::string data_path;
  experiment::command_line cli("finetune: LoRA / QLoRA fine-tuning");
  auto& desc = cli.desc;
  desc.add_options()("model", po::value(&model_path)->required(), "llama2.c .bin, HF or Meta directory, or GGUF file")(
      "tokenizer", po::value(&tokenizer_path), "sentencepiece .model, llama2.c tokenizer.bin, tokenizer.json or GGUF (default: a GGUF --model's own)")(
      "data", po::value(&data_path)->required(), "dataset file")(
      "format", po::value(&format)->default_value(format), "alpaca, dolly, quotes, text, gsm8k (question, answer) or chat (messages)")(
      "template", po::value(&tmpl), "alpaca, dolly, chatml, plain or chat (the model's chat template; default for alpaca/dolly "
                                    "data when a GGUF model has one, else the format's)")(
      "train-on-prompt", po::bool_switch(&train_on_prompt), "also train on prompt tokens (default: responses only)")(
      "output-dir", po::value(&output_dir)->required(), "adapter, checkpoints, metrics.jsonl, run.json")(
      "quant", po::value(&quant)->default_value(quant), "base weights: none (LoRA), bf16, nf4, fp4, int8 (QLoRA), or ggml's q4_0, q4_1, q8_0 (a GGUF's own blocks when it stored them so)")(
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
      "grad-accum", po::value(&o.grad_accum)->default_value(1), "micro-batches per optimizer step (under mpirun: over all ranks)")(
      "replicas", po::value(&o.replicas)->default_value(1), "model clones sharing each micro-batch's rows, one thread each: "
                                                            "faster for small models (each clone holds the frozen base)")(
      "seq-len", po::value(&dc.seq_len)->default_value(128), "tokens per row (truncation)")(
      "packing", po::bool_switch(&packing), "pack examples into full rows")(
      "max-grad-norm", po::value(&o.max_grad_norm)->default_value(1.0), "global grad-norm clipping (0: off)")(
      "gradient-checkpointing", po::bool_switch(), "recompute blocks in backward (on by default for quantized bases)")(
      "val-size", po::value(&val)->default_value(val), "validation records: a count or a fraction")(
      "eval-steps", po::value(&o.eval_steps)->default_value(0), "evaluate every N steps (0: at the end)")(
      "early-stopping-patience", po::value(&o.early_stopping_patience)->default_value(0), "evaluations without improvement")(
      "save-steps", po::value(&o.save_steps)->default_value(0), "checkpoint every N steps (0: none)")(
      "logging-steps", po::value(&o.logging_steps)->default_value(10), "log every N steps")(
      "resume", po::bool_switch(&resume), "continue from the newest OUTPUT/checkpoint-N (refused, with the file named, when it is damaged)")(
      "resume-from", po::value(&resume_from), "continue from this checkpoint directory (e.g. an older OUTPUT/checkpoint-N when the newest is damaged)")(
      "adapter-gguf", po::value(&adapter_gguf), "also write the finished adapter as a llama.cpp GGUF LoRA file (F32)")(
      "adapter", po::value(&adapter_dir), "start from this PEFT LoRA adapter's values (a new run; see --resume for continuing one)")(
      "export-base", po::value(&export_base), "write the base as an HF directory here and record it in adapter_config.json "
                                              "(default for a non-HF --model: OUTPUT/base_model; 'none': record --model as given)");
  cli.allow_device();
  if (auto code = cli.parse(argc, argv)) return *code;
  const auto& vm = cli.vm;
  lc.init = lora::parse_lora_init(init);
  lc.validate();
  o.seed = cli.seed;
  o.optim = optim;
  o.scheduler = train::parse_schedule_kind(scheduler);
  o.validate();
  LORALAB_CHECK(adapter_dir.empty() || (!resume && resume_from.empty()),
                "--adapter starts a new run from an adapter; --resume / --resume-from continue a run: use one");
  LORALAB_CHECK(!resume || resume_from.empty(), "--resume takes the newest checkpoint, --resume-from ", resume_from.string(),
                " a named one: use one");
  LORALAB_CHECK(resume_from.empty() || std::filesystem::is_directory(resume_from), "--resume-from ", resume_from.string(),
                ": not a directory (name a checkpoint-N directory)");
  const auto targets = lora::parse_targets(targets_text);
  dc.file = data_path;
  dc.format = data::parse_data_format(format);
  if (!tmpl.empty() && tmpl != "chat") dc.tmpl = data::parse_prompt_template(tmpl);  // refused before any work; "chat" once the tokenizer is read
  dc.train_on_prompt = train_on_prompt;
  dc.packing = packing;
  dc.val = data::val_size::parse(val);
  dc.seed = cli.seed;  // the train/validation split keeps its own seed: runs with other seeds share it
  dc.validate();

  (void)experiments::model_scheme<experiments::model_and_ggml_schemes>(quant, dq);  // refused before any work, with the known names
  tokenizer_path = experiments::tokenizer_for(tokenizer_path, model_path);
  // Nothing reads the float linears when the base is not exported: a GGUF's block-stored linears are then kept as
  // blocks only (nn::gguf_linears::blocks_only; each weight dequantized on its own when another base is asked for).
  dist::check_same_inputs(dist::group::world(), cli.arguments_fingerprint,
                          {{"model", model_path}, {"tokenizer", tokenizer_path}, {"data file", data_path}});
  const nn::model_file file = nn::load_model_file(model_path, export_base == "none" ? nn::gguf_linears::blocks_only : nn::gguf_linears::floats_and_blocks);
  train::check_finite_weights(file, model_path);  // the floats read (blocks-only linears have none here)
  LORALAB_CHECK(dc.seq_len <= file.config.max_seq_len, "--seq-len ", dc.seq_len, " exceeds the model's context of ",
                file.config.max_seq_len, " (", model_path, ")");
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  std::cout << experiment::choose_template(dc, tmpl, tokenizer_path, model_path, *tok) << "\n";
  data::prepared_dataset data = data::prepare_dataset(dc, *tok);
  std::cout << dc << "\n" << file.config << "\nbase: " << quant << (dq ? " + double quant" : "") << "\n";
  const std::string base_record = experiments::base_model_record(file, model_path, export_base, output_dir);
  const bool ckpt = vm["gradient-checkpointing"].as<bool>();
  adapter_start start{adapter_dir, !vm["r"].defaulted(), !vm["alpha"].defaulted(), !vm["targets"].defaulted(),
                      !vm["dropout"].defaulted()};
  int rc = 0;
  experiments::with_lora_model<experiments::model_and_ggml_schemes>(file, quant, dq, [&](auto& m) {
    m.gradient_checkpointing = ckpt;
    lora::prepare_for_kbit_training(m);  // a quantized base trains with checkpointing, as PEFT prepares it
    experiment::on_device(m, cli.device, [&](auto& model) {  // --device cuda: the model's twin on the GPU
      rc = run(model, data, lc, targets, o, output_dir, resume, resume_from, base_record, start, adapter_gguf);
    });
  });
  return rc;
} catch (const std::exception& e) {
  return experiment::report_error("finetune", e);
}

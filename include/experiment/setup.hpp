// SPDX-License-Identifier: MIT
#pragma once
// What every fine-tuning experiment shares: the flags for model, tokenizer, data and one run (setup_options), the
// files they name loaded and checked against each other (inputs), and the run_spec the flags describe (base_spec).
// The defaults are the repository's own: stories260K + tok512 from models/, Debian's fortunes, 200 training records,
// a validation split of 31 records, r 8 / alpha 16 on all linear layers, AdamW at 3e-3 for 2 epochs.
// --quick (what CI runs) shrinks a run to a few steps on 32 records so a whole experiment takes seconds.
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "core/check.hpp"
#include "data/dataset.hpp"
#include "experiment/cli.hpp"
#include "experiment/run.hpp"
#include "experiment/sweep.hpp"
#include "dist/fingerprint.hpp"
#include "lora/targets.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

namespace loralab::experiment {

struct setup_options {
  // inputs
  std::string model, tokenizer;  ///< empty: models/stories260K.bin, models/tok512.model
  std::string data = "/usr/share/games/fortunes/fortunes", format = "text", val = "31";
  std::string tmpl;  ///< --template: "" = the model's chat template for instruction data when it has one, else the format's
  std::size_t train_size = 200;  ///< records of the train split each run trains on (0: all)
  int batch_size = 8, seq_len = 128;
  // one run
  std::string scheme = "nf4-b64-dq", targets = "all-linear", optim = "adamw";
  int r = 8, replicas = 1;
  std::string device = "cpu";  ///< --device (the command line's), copied by finish()
  double alpha = 16, dropout = 0.05, lr = 3e-3, epochs = 2;
  int max_steps = 0;
  // the experiment
  int seeds = 1;
  bool quick = false, resume = false;
  std::string output_dir;
  std::uint64_t seed = 42;  ///< --seed (the command line's), copied by finish()
  std::uint64_t arguments_fingerprint = 0;  ///< the command line's, copied by finish(): ranks compare it

  /// Adds every flag to `cli`, the current values as defaults (--train-size only when the program has one training set).
  void add_to(command_line& cli, bool with_train_size = true) {
    cli.flag("model", model, "llama2.c .bin, HF or Meta directory, GGUF file (default: models/stories260K.bin)")
        .flag("tokenizer", tokenizer, "sentencepiece .model, tokenizer.bin, tokenizer.json or GGUF (default: a GGUF --model's own, else models/tok512.model)")
        .flag("data", data, "dataset file")
        .flag("format", format, "alpaca, dolly, quotes, text, gsm8k (question, answer) or chat (messages)")
        .flag("template", tmpl, "alpaca, dolly, chatml, plain or chat (the model's chat template); default: chat for "
                                "alpaca/dolly data when the model (a GGUF) has one, else the format's")
        .flag("val-size", val, "validation records shared by every run (a count or a fraction)")
        .flag("batch-size", batch_size, "rows per step")
        .flag("seq-len", seq_len, "tokens per row (truncation)")
        .flag("scheme", scheme, "base weights: a scheme name (float32, bfloat16, nf4-b64-dq, fp4-b64, int8-row, …)")
        .flag("r", r, "LoRA rank")
        .flag("alpha", alpha, "LoRA alpha")
        .flag("dropout", dropout, "dropout on the adapter input")
        .flag("targets", targets, "all-linear | q_proj,v_proj | REGEX")
        .flag("lr", lr, "peak learning rate (linear decay, no warmup)")
        .flag("optim", optim, "adamw, adamw8bit or sgd")
        .flag("epochs", epochs, "passes over the training records (when --max-steps is 0)")
        .flag("max-steps", max_steps, "optimizer steps per run (0: from --epochs)")
        .flag("replicas", replicas, "model clones sharing each batch's rows, one thread each (faster for small models; each clone holds the frozen base)")
        .flag("seeds", seeds, "runs per configuration (seeds --seed, --seed+1, …): mean ± std")
        .option_switch("quick", quick, "a few steps on 32 records: the whole experiment in seconds (CI)")
        .option_switch("resume", resume, "reuse the runs OUT/cells holds (finished earlier, e.g. before a failure) and run only the others")
        .flag("output-dir", output_dir, "table, CSV, JSON, figure and report.md");
    cli.allow_device();  // training runs on CUDA (run_spec::device)
    if (with_train_size) cli.flag("train-size", train_size, "training records per run: the first N of the shuffled train split (0: all)");
  }

  /// After cli.parse(): takes --seed, and --quick's sizes unless a flag was given explicitly.
  void finish(const command_line& cli) {
    seed = cli.seed;
    device = cli.device;
    arguments_fingerprint = cli.arguments_fingerprint;
    if (!quick) return;
    if (!cli.given("train-size")) train_size = 32;
    if (!cli.given("val-size")) val = "16";
    if (!cli.given("seq-len")) seq_len = 64;
    if (!cli.given("max-steps")) max_steps = 6;
  }

  /// A command line with only these flags: parses argv, then finish(). Returns an exit code when main should stop.
  std::optional<int> parse(int argc, char** argv, const std::string& caption) {
    command_line cli(caption);
    add_to(cli);
    if (auto code = cli.parse(argc, argv)) return code;
    finish(cli);
    return std::nullopt;
  }

  /// How run_sweep runs this experiment's grid: --seeds per configuration, every finished run kept in OUT/cells,
  /// --resume reusing them; under mpirun, the ranks share the runs.
  sweep_options sweep() const {
    sweep_options s(seeds);
    if (!output_dir.empty()) s.cells_dir = std::filesystem::path(output_dir) / "cells";
    s.resume = resume;
    return s;
  }

  /// Every flag checked before anything is read or trained.
  void validate() const {
    LORALAB_CHECK(seeds >= 1, "--seeds must be >= 1, got ", seeds);
    LORALAB_CHECK(epochs > 0 || max_steps > 0, "--epochs must be > 0, got ", epochs);
    LORALAB_CHECK(max_steps >= 0, "--max-steps must be >= 0, got ", max_steps);
    (void)data::parse_data_format(format);
    if (!tmpl.empty() && tmpl != "chat") (void)data::parse_prompt_template(tmpl);
    const data::val_size v = data::val_size::parse(val);
    LORALAB_CHECK(v.count > 0 || v.fraction > 0, "--val-size must be > 0: every run is judged on the validation loss");
  }
};

/// The spec of one run as the flags describe it (seed: --seed). Experiments copy it and change what they vary.
inline run_spec base_spec(const setup_options& o) {
  o.validate();
  run_spec s;
  s.scheme = o.scheme;
  s.lora.r = o.r, s.lora.alpha = o.alpha, s.lora.dropout = o.dropout;
  s.targets = lora::parse_targets(o.targets);
  s.train.lr = o.lr, s.train.optim = o.optim, s.train.epochs = o.epochs, s.train.max_steps = o.max_steps;
  s.train.seed = o.seed, s.train.replicas = o.replicas;
  s.device = o.device;
  s.train.logging_steps = 1000000;  // no log lines: the run_result holds every step's loss
  s.validate();
  return s;
}

/// One spec per item of a comma-list flag: make(item) returns the spec for it (usually base_spec with one field
/// changed). Every spec is validated; an empty list is an error naming the flag.
///   auto specs = specs_over<int>(ranks, "--ranks", [&](int r) { auto s = base_spec(o); s.lora.r = r; return s; });
template <class T, class F>
std::vector<run_spec> specs_over(const std::string& list, const char* flag, F&& make) {
  std::vector<run_spec> specs;
  for (const T& item : parse_list<T>(list, flag)) specs.push_back(make(item));
  LORALAB_CHECK(!specs.empty(), flag, " is empty: the sweep needs at least one value");
  for (const auto& s : specs) s.validate();
  return specs;
}

/// The model's chat template: tokenizer.chat_template of the GGUF tokenizer file, else of the GGUF model file
/// (recognised by data::detect_chat_template with the tokenizer's BOS/EOS pieces); nullopt when neither has one.
inline std::optional<data::chat_template> model_chat_template(const std::string& tokenizer_path, const std::string& model_path,
                                                              const nn::tokenizer& tok) {
  std::optional<std::string> jinja;
  for (const auto& p : {tokenizer_path, model_path})
    if (!jinja && nn::is_gguf_file(p)) jinja = nn::read_gguf_chat_template(p);
  if (!jinja || jinja->empty()) return std::nullopt;
  const auto piece = [&](int id) { return id >= 0 ? tok.piece(id) : std::string(); };
  return data::detect_chat_template(*jinja, piece(tok.bos_id()), piece(tok.eos_id()));
}

/// Applies --template to `dc` once the tokenizer is known: "chat" renders instruction records with the model's chat
/// template (an error when it has none); "" does so for alpaca/dolly/gsm8k/chat data when the model has one, else leaves the
/// format's template; any other name is that prompt template. Returns a line saying what was chosen.
inline std::string choose_template(data::dataset_config& dc, const std::string& tmpl, const std::string& tokenizer_path,
                                   const std::string& model_path, const nn::tokenizer& tok) {
  const bool instructions = dc.format == data::data_format::alpaca || dc.format == data::data_format::dolly ||
                            dc.format == data::data_format::gsm8k || dc.format == data::data_format::chat;
  if (tmpl == "chat" || (tmpl.empty() && instructions)) {
    auto chat = model_chat_template(tokenizer_path, model_path, tok);
    LORALAB_CHECK(chat || tmpl.empty(), "--template chat: neither ", tokenizer_path, " nor ", model_path,
                  " has a chat template (tokenizer.chat_template of a GGUF file); choose alpaca, dolly, chatml or plain");
    if (chat) {
      dc.chat = std::move(chat);
      dc.tmpl.reset();
      return fmt::format("template: the model's chat template ({}{}), loss on the assistant's reply only{}", data::chat_format_name(dc.chat->format),
                         dc.chat->default_system.empty() ? "" : ", with its default system turn",
                         dc.train_on_prompt ? " (--train-on-prompt: the whole text)" : "");
    }
  }
  if (!tmpl.empty()) dc.tmpl = data::parse_prompt_template(tmpl);
  return fmt::format("template: {}", std::string(data::to_string(dc.template_used())));
}

/// The model, tokenizer and data the flags name, checked against each other.
struct inputs {
  std::string model_path, tokenizer_path;
  nn::model_file file;
  std::unique_ptr<nn::tokenizer> tok;
  data::dataset_config dc;
  data::prepared_dataset all;   ///< the whole train split
  data::prepared_dataset data;  ///< train: its first --train-size records

  /// What every experiment's JSON records under "config".
  nlohmann::ordered_json config_json(const setup_options& o) const {
    return {{"model", model_path}, {"tokenizer", tokenizer_path}, {"data", o.data}, {"format", o.format},
            {"template", dc.chat ? "chat(" + std::string(data::chat_format_name(dc.chat->format)) + ")" : std::string(data::to_string(dc.template_used()))},
            {"records", all.records},
            {"train_split", all.train.size()}, {"train_size", data.train.size()}, {"val_records", all.val.size()},
            {"epochs", o.epochs}, {"max_steps", o.max_steps}, {"batch_size", o.batch_size}, {"seq_len", o.seq_len},
            {"scheme", quant::canonical_scheme_name(o.scheme)}, {"r", o.r}, {"alpha", o.alpha}, {"dropout", o.dropout},
            {"targets", o.targets}, {"lr", o.lr}, {"optim", o.optim}, {"seed", o.seed}, {"seeds", o.seeds},
            {"threads", omp_get_max_threads()}, {"quick", o.quick}};
  }

  /// The setting in a few lines (printed first, and in report.md).
  std::string describe() const {
    std::ostringstream os;
    os << dc << "\n" << file.config << "\n"
       << fmt::format("train split {} records (runs train on {}), validation {} records; model {}, tokenizer {}", all.train.size(),
                      data.train.size(), data.val.size(), model_path, tokenizer_path);
    return os.str();
  }
};

inline inputs load_inputs(const setup_options& o, const char* argv0) {
  o.validate();
  inputs in;
  in.model_path = o.model.empty() ? default_model_file("stories260K.bin", argv0) : o.model;
  in.tokenizer_path = !o.tokenizer.empty()             ? o.tokenizer
                      : nn::is_gguf_file(in.model_path) ? in.model_path  // a GGUF carries its own tokenizer
                                                        : default_model_file("tok512.model", argv0);
  for (const auto& [flag, path] : {std::pair{"--model", in.model_path}, {"--tokenizer", in.tokenizer_path}, {"--data", o.data}})
    LORALAB_CHECK(std::filesystem::exists(path), path, ": no such file or directory (", flag, ")");
  in.dc.file = o.data;
  in.dc.format = data::parse_data_format(o.format);
  in.dc.val = data::val_size::parse(o.val);
  in.dc.batch_size = o.batch_size, in.dc.seq_len = o.seq_len;
  in.dc.seed = o.seed;
  in.dc.validate();
  dist::check_same_inputs(dist::group::world(), o.arguments_fingerprint,
                          {{"model", in.model_path}, {"tokenizer", in.tokenizer_path}, {"data file", o.data}});
  in.file = nn::load_model_file(in.model_path);
  LORALAB_CHECK(o.seq_len <= in.file.config.max_seq_len, "--seq-len ", o.seq_len, " exceeds the model's context of ",
                in.file.config.max_seq_len, " (", in.model_path, ")");
  in.tok = nn::load_tokenizer(in.tokenizer_path, in.file.config.vocab_size);
  nn::check_vocab_matches(*in.tok, in.file.config.vocab_size, in.tokenizer_path, in.model_path);
  (void)choose_template(in.dc, o.tmpl, in.tokenizer_path, in.model_path, *in.tok);
  in.all = data::prepare_dataset(in.dc, *in.tok);
  LORALAB_CHECK(o.train_size <= in.all.train.size(), "--train-size ", o.train_size, " is larger than the train split: ",
                in.all.train.size(), " of ", in.all.records, " records of ", o.data, " (the rest are the --val-size ", in.dc.val,
                " validation records)");
  in.data = in.all;
  in.data.train = in.all.train.head(o.train_size);
  return in;
}

}  // namespace loralab::experiment

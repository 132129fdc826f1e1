// SPDX-License-Identifier: MIT
/// \file lora_vs_qlora.cpp
/// \brief LoRA vs QLoRA at several training-set sizes: what does the 4-bit base cost in loss, and what does it
///        save in memory and time?
///
/// QLoRA (Dettmers et al. 2023) claims that adapters trained over an NF4 + double-quantized base (block 64)
/// match adapters over a 16-bit base, while the frozen weights take 4.127 bits instead of 16 (or 32: float32
/// here; stories260K's tiny tensors need 5.4, see docs/lora.md) and the step runs slower. This program trains both,
/// with the same adapters, data, batches and dropout masks, at each size N of --sizes: LoRA over a float32 base
/// (gradient checkpointing off) and QLoRA over double_quant<nf4<64>> (checkpointing on, PEFT's k-bit
/// preparation). The training set of size N is the first N records of one shuffled train split; every run is
/// evaluated on the same validation split before and after training.
///
///   build/experiments/lora_vs_qlora        # stories260K + tok512 (models/), Debian's fortunes, N = 50…400
///   build/experiments/lora_vs_qlora --data ../shared/data/english_quotes.jsonl --format quotes --sizes 100,1000
///
/// A run takes ceil(epochs · ceil(N / batch)) steps, as HF Trainer counts them. Runtime ~15 s on 2 cores.
/// Output: the config, a Markdown table (2 rows per size) and one closing sentence on stdout;
/// OUT/lora_vs_qlora.{csv,json,png}, OUT/N<size>/{lora,qlora}/ (each run's adapter and run.json) and, for a
/// base that is not an HF directory, OUT/base_model (the base as one, named by every adapter_config.json),
/// OUT = --output-dir (default results/lora_vs_qlora). The same --seed and --threads give the same losses.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "model_cli.hpp"
#include "lora/lora.hpp"
#include "train/run_files.hpp"
#include "train/trainer.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;
namespace fs = std::filesystem;
using qlora_scheme = quant::double_quant<quant::nf4<64>>;  // the paper's recipe: NF4, block 64, 8-bit nested absmax

/// What every run shares.
struct setup {
  lora::lora_config lc;
  lora::target_spec targets;
  train::train_options train;
  fs::path out;
  std::string model_path;
};

/// One (size, method) run.
struct run_result {
  std::size_t size = 0;
  std::string method, base;
  train::run_record train;           // steps, runtime, tokens/s, planned memory, step losses, final eval loss
  lora::storage_breakdown storage;  // the frozen linears' bytes and bits/weight
  double eval_before = 0;
  bool checkpointing = false;
};

template <class Base>
run_result run_method(lora::lora_model<Base> m, data::prepared_dataset& data, const setup& s, std::size_t size,
                      std::string method, std::string base) {
  lora::attach_adapters(m, s.lc, s.targets, s.train.seed);  // B = 0
  lora::prepare_for_kbit_training(m);                        // a quantized base trains with checkpointing
  run_result r;
  r.size = size, r.method = std::move(method), r.base = std::move(base);
  r.storage = lora::count_storage(m);
  r.checkpointing = m.gradient_checkpointing;
  r.eval_before = train::evaluate(m, data.val);  // the base alone: QLoRA starts from the quantization's loss
  train::trainer<lora::lora_model<Base>> t(m, data, s.train);
  train::run_files<lora::lora_model<Base>> files(s.out / fmt::format("N{}", size) / (r.method == "LoRA" ? "lora" : "qlora"), s.lc,
                                                 s.targets, s.model_path);
  r.train = t.observe(files).run();
  return r;
}

/// "50,100,all" -> sizes (unsorted; 0 stands for "all"). Errors name the flag.
std::vector<std::size_t> parse_sizes(const std::string& text) {
  std::vector<std::size_t> sizes;
  std::size_t pos = 0;
  do {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string s = text.substr(pos, comma - pos);
    if (s == "all") sizes.push_back(0);
    else {
      LORALAB_CHECK(!s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos,
                    "--sizes must be a comma list of record counts > 0 or 'all', got '", s, "' in '", text, "'");
      sizes.push_back(std::stoull(s));
      LORALAB_CHECK(sizes.back() > 0, "--sizes: a training set needs at least 1 record, got 0 in '", text, "'");
    }
    pos = comma + 1;
  } while (pos <= text.size());
  return sizes;
}

int main(int argc, char** argv) try {
  namespace po = experiments::po;
  experiments::common_options common;
  setup s;
  data::dataset_config dc;
  std::string model_path, tokenizer_path, data_path = "/usr/share/games/fortunes/fortunes", format = "text",
              sizes_text = "50,100,200,400", val = "31", targets_text = "all-linear", out_dir = "results/lora_vs_qlora";
  po::options_description desc("lora_vs_qlora: LoRA (float32 base) vs QLoRA (nf4 + double quant base) at several data sizes");
  desc.add_options()("model", po::value(&model_path), "llama2.c .bin or HF directory (default: models/stories260K.bin)")(
      "tokenizer", po::value(&tokenizer_path), "sentencepiece .model or tokenizer.bin (default: models/tok512.model)")(
      "data", po::value(&data_path)->default_value(data_path), "dataset file (default: Debian's fortunes)")(
      "format", po::value(&format)->default_value(format), "alpaca, dolly, quotes or text")(
      "sizes", po::value(&sizes_text)->default_value(sizes_text), "training-set sizes in records, comma list ('all': the whole train split)")(
      "val-size", po::value(&val)->default_value(val), "validation records shared by every run (a count or a fraction)")(
      "epochs", po::value(&s.train.epochs)->default_value(2.0), "passes over each training set")(
      "batch-size", po::value(&dc.batch_size)->default_value(8), "rows per step")(
      "seq-len", po::value(&dc.seq_len)->default_value(128), "tokens per row (truncation)")(
      "r", po::value(&s.lc.r)->default_value(8), "LoRA rank")("alpha", po::value(&s.lc.alpha)->default_value(16), "LoRA alpha")(
      "dropout", po::value(&s.lc.dropout)->default_value(0.05), "dropout on the adapter input")(
      "targets", po::value(&targets_text)->default_value(targets_text), "all-linear (QLoRA's choice) | q_proj,v_proj | REGEX")(
      "lr", po::value(&s.train.lr)->default_value(3e-3), "peak learning rate (linear decay, no warmup)")(
      "optim", po::value(&s.train.optim)->default_value("adamw"), "adamw, adamw8bit or sgd")(
      "output-dir", po::value(&out_dir)->default_value(out_dir), "tables, JSON, figure and every run's adapter");
  experiments::add_common_options(desc, common);
  po::variables_map vm;
  if (int code = 0; !experiments::parse_command_line(argc, argv, desc, vm, common, code)) return code;

  // Every flag is checked before anything is read or trained.
  const std::vector<std::size_t> sizes = parse_sizes(sizes_text);
  LORALAB_CHECK(s.train.epochs > 0, "--epochs must be > 0, got ", s.train.epochs);
  s.lc.validate();
  s.targets = lora::parse_targets(targets_text);
  s.train.seed = common.seed;
  s.train.validate();
  dc.file = data_path;
  dc.format = data::parse_data_format(format);
  dc.val = data::val_size::parse(val);
  LORALAB_CHECK(dc.val.count > 0 || dc.val.fraction > 0, "--val-size must be > 0: every run is judged on the validation loss");
  dc.seed = common.seed;
  dc.validate();
  if (model_path.empty()) model_path = experiments::default_model_file("stories260K.bin", argv[0]);
  if (tokenizer_path.empty()) tokenizer_path = experiments::default_model_file("tok512.model", argv[0]);
  for (const auto& [flag, path] : {std::pair{"--model", model_path}, {"--tokenizer", tokenizer_path}, {"--data", data_path}})
    LORALAB_CHECK(fs::exists(path), path, ": no such file or directory (", flag, ")");
  s.model_path = model_path, s.out = out_dir;

  const nn::model_file file = nn::load_model_file(model_path);
  LORALAB_CHECK(dc.seq_len <= file.config.max_seq_len, "--seq-len ", dc.seq_len, " exceeds the model's context of ",
                file.config.max_seq_len, " (", model_path, ")");
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  const data::prepared_dataset all = data::prepare_dataset(dc, *tok);
  const std::size_t split = all.train.size();
  std::vector<std::size_t> ns;
  for (std::size_t n : sizes) {
    LORALAB_CHECK(n <= split, "--sizes ", n, " is larger than the train split: ", split, " of ", all.records, " records of ",
                  data_path, " (the rest are the --val-size ", dc.val, " validation records)");
    ns.push_back(n == 0 ? split : n);
  }
  std::sort(ns.begin(), ns.end());
  ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  s.model_path = experiments::base_model_record(file, model_path, "", s.out);  // adapters name an HF base PEFT can load

  std::cout << dc << "\n" << file.config << "\n" << s.lc << "\ntargets: " << s.targets.describe() << "; optimizer " << s.train.optim
            << " lr " << s.train.lr << " (linear decay), epochs " << s.train.epochs << ", seed " << common.seed << ", threads "
            << omp_get_max_threads() << "\nbases: LoRA float32, QLoRA " << quant::scheme_label<qlora_scheme>() << "\n";
  {
    auto m = lora::make_lora_dense_model<float>(file);
    lora::attach_adapters(m, s.lc, s.targets, common.seed);  // also checks the targets against the model
    std::cout << lora::trainable_parameters_line(m) << "\n";
  }
  fmt::print("train split {} records, validation {} records; sizes {}\n\n", split, all.val.size(), fmt::join(ns, ", "));

  // Size N trains on the first N records of the shuffled train split; LoRA and QLoRA see the same batches.
  std::vector<run_result> runs;
  for (std::size_t n : ns) {
    data::prepared_dataset d = all;
    d.train = data::batch_loader(std::vector(all.train.rows().begin(), all.train.rows().begin() + std::ptrdiff_t(n)),
                                 dc.batch_size, tok->eos_id(), dc.seed);
    runs.push_back(run_method(lora::make_lora_dense_model<float>(file), d, s, n, "LoRA", "float32"));
    runs.push_back(run_method(lora::make_lora_quantized_model<qlora_scheme>(file), d, s, n, "QLoRA", quant::scheme_label<qlora_scheme>()));
  }

  const auto mib = [](double bytes) { return bytes / (1 << 20); };
  experiments::table tab({"size", "method", "steps", "time s", "tokens/s", "QLoRA/LoRA time", "frozen linears MiB",
                          "bits/weight", "planned MiB", "peak RSS MiB", "eval loss before", "eval loss after", "gap vs LoRA %"});
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const run_result &r = runs[i], &lora_run = runs[i & ~std::size_t(1)];  // runs come in (LoRA, QLoRA) pairs
    tab.rows.push_back({std::to_string(r.size), r.method, std::to_string(r.train.steps), fmt::format("{:.2f}", r.train.train_runtime),
                        fmt::format("{:.0f}", r.train.tokens_per_second), fmt::format("{:.2f}", r.train.train_runtime / lora_run.train.train_runtime),
                        fmt::format("{:.3f}", mib(double(r.storage.linear_bytes))), fmt::format("{:.2f}", r.storage.linear_bits_per_weight()),
                        fmt::format("{:.2f}", mib(double(r.train.memory.total()))), fmt::format("{:.1f}", mib(double(r.train.peak_rss_bytes))),
                        fmt::format("{:.4f}", r.eval_before),
                        fmt::format("{:.4f}", r.train.final_eval_loss),
                        fmt::format("{:+.2f}", 100 * (r.train.final_eval_loss / lora_run.train.final_eval_loss - 1))});
  }
  tab.print_markdown();
  const run_result &lo = runs[runs.size() - 2], &q = runs.back();
  fmt::print("\nAt N={}, QLoRA's eval loss is {:.2f}% {} LoRA's ({:.4f} vs {:.4f}; before training {:.4f} vs {:.4f}); its frozen "
             "linears take {:.1f}x less memory ({:.2f} vs {:.0f} bits/weight) and its planned step memory (checkpointing on) is {:.2f}x LoRA's; "
             "it runs {:.2f}x LoRA's time.\n",
             q.size, std::abs(100 * (q.train.final_eval_loss / lo.train.final_eval_loss - 1)),
             q.train.final_eval_loss >= lo.train.final_eval_loss ? "above" : "below", q.train.final_eval_loss,
             lo.train.final_eval_loss, q.eval_before, lo.eval_before, double(lo.storage.linear_bytes) / double(q.storage.linear_bytes),
             q.storage.linear_bits_per_weight(), lo.storage.linear_bits_per_weight(),
             double(q.train.memory.total()) / double(lo.train.memory.total()), q.train.train_runtime / lo.train.train_runtime);

  const fs::path dir(out_dir);
  tab.write_csv(dir / "lora_vs_qlora.csv");
  nlohmann::ordered_json j;
  j["config"] = {{"model", model_path}, {"tokenizer", tokenizer_path}, {"data", data_path}, {"format", format},
                 {"records", all.records}, {"train_split", split}, {"val_records", all.val.size()}, {"sizes", ns},
                 {"epochs", s.train.epochs}, {"batch_size", dc.batch_size}, {"seq_len", dc.seq_len}, {"r", s.lc.r},
                 {"alpha", s.lc.alpha}, {"dropout", s.lc.dropout}, {"targets", s.targets.describe()}, {"lr", s.train.lr},
                 {"optim", s.train.optim}, {"seed", common.seed}, {"threads", omp_get_max_threads()},
                 {"qlora_scheme", quant::scheme_label<qlora_scheme>()}};
  for (const auto& r : runs) {
    const auto& m = r.train.memory;
    j["runs"].push_back({{"size", r.size}, {"method", r.method}, {"base", r.base}, {"gradient_checkpointing", r.checkpointing},
                         {"steps", r.train.steps}, {"train_runtime", r.train.train_runtime}, {"tokens_per_second", r.train.tokens_per_second},
                         {"planned_memory_bytes", m.total()}, {"frozen_weights_bytes", m.weights + m.quant_stats},
                         {"frozen_linears_bytes", r.storage.linear_bytes}, {"linear_bits_per_weight", r.storage.linear_bits_per_weight()},
                         {"peak_rss_bytes", r.train.peak_rss_bytes}, {"first_train_loss", r.train.step_losses.front()},
                         {"final_train_loss", r.train.step_losses.back()}, {"eval_loss_before", r.eval_before},
                         {"eval_loss_after", r.train.final_eval_loss}, {"step_losses", r.train.step_losses}});
  }
  {
    atomic_file f(dir / "lora_vs_qlora.json");
    f.write(j.dump(2));
    f.commit();
  }

  std::string script = fmt::format("set terminal pngcairo size 1200,480\nset output '{}'\nset multiplot layout 1,2 title "
                                   "'LoRA (float32 base) vs QLoRA ({} base), {} epochs'\nset logscale x 2\nset grid\n"
                                   "set xlabel 'training records'\nset xtics ({})\nset offsets graph 0.05, graph 0.05, 0, 0\n",
                                   (dir / "lora_vs_qlora.png").string(), quant::scheme_label<qlora_scheme>(), s.train.epochs,
                                   fmt::join(ns, ", "));
  for (const char* method : {"LoRA", "QLoRA"}) {
    script += fmt::format("${} << EOD\n", method);
    for (const auto& r : runs)
      if (r.method == method) script += fmt::format("{} {} {} {}\n", r.size, r.eval_before, r.train.final_eval_loss, r.train.train_runtime);
    script += "EOD\n";
  }
  script += "set title 'eval loss after training (dashed: before)'\nset ylabel 'eval loss'\nset key center right\n"
            "plot $LoRA using 1:3 with linespoints lc 1 title 'LoRA', $QLoRA using 1:3 with linespoints lc 2 title 'QLoRA', "
            "$LoRA using 1:2 with lines dt 2 lc 1 notitle, $QLoRA using 1:2 with lines dt 2 lc 2 notitle\n"
            "set title 'train time'\nset ylabel 'seconds'\nset key top left\n"
            "plot $LoRA using 1:4 with linespoints lc 1 title 'LoRA', $QLoRA using 1:4 with linespoints lc 2 title 'QLoRA'\n"
            "unset multiplot\n";
  experiments::run_gnuplot(script, dir / "lora_vs_qlora.gp");
  fmt::print("wrote {}, {} and {}\n", (dir / "lora_vs_qlora.csv").string(), (dir / "lora_vs_qlora.json").string(),
             (dir / "lora_vs_qlora.png").string());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "lora_vs_qlora: error: {}\n", e.what());
  return 1;
}

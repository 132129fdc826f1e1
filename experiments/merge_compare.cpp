// SPDX-License-Identifier: MIT
/// \file merge_compare.cpp
/// \brief The alpaca-lora lab's first task: compare merge methods. Does a merged model compute what base +
///        adapter computed, in each layout other tools read, and what does requantizing the merge cost?
///
/// Five ways to run one fine-tuned model: (1) the base alone, (2) base + adapter unmerged (PEFT's PeftModel),
/// (3) merged and written in HF layout (config.json + safetensors, what merge_and_unload + save_pretrained
/// give), (4) merged and written in Meta layout (params.json + consolidated.00.pth with wq/wk permuted back,
/// what the lab's export_state_dict_checkpoint.py writes), and for a 4-bit base (5) merged, then requantized
/// to the base's scheme (bitsandbytes' layout). (3)–(5) are read back from disk. Each gets greedy completions of
/// the prompts, perplexity on the validation text, max |Δlogit| against (2) over the validation tokens, load
/// time, tokens/s and file size. "files" of (2) is the adapter; "build/load" of (1) and (2) is building the base
/// from the model file already in memory (quantizing it) and reading the adapter, of (3)-(5) reading the directory
/// from disk and building the model.
///
///   build/experiments/merge_compare          # trains a short QLoRA adapter (nf4+dq) on Debian's fortunes first
///   build/experiments/merge_compare --adapter results/qlora --base nf4+dq --model models/stories260K.bin
///
/// Output: two Markdown tables (numbers; completions side by side) and a closing sentence on stdout;
/// OUT/merge_compare.{csv,json,png}, OUT/adapter (when trained here), OUT/merged_{hf,meta,requantized}/.
/// Runtime ~20 s on 2 cores with the default.
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "experiment/cli.hpp"
#include "experiment/report.hpp"
#include "core/atomic_dir.hpp"
#include "lora/lora.hpp"
#include "lora/merged_model.hpp"
#include "train/run_files.hpp"
#include "train/trainer.hpp"
#include "model_cli.hpp"
#include "nn/meta_dir.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"
#include "quant/bnb_serialization.hpp"

using namespace loralab;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

/// What one way of running the model gave.
struct variant {
  std::string name;
  double load_s = 0, tokens_per_s = 0, perplexity = 0, max_dlogit = 0;
  std::uintmax_t bytes = 0;  ///< files on disk (0: in memory)
  std::vector<std::string> completions;
  nn::matrix<float> logits;  ///< over the validation probe
};

struct inputs {
  const nn::tokenizer* tok;
  std::vector<int> val_ids, probe;  ///< validation tokens; the probe is their first context window
  std::vector<std::string> prompts;
  int max_new_tokens = 40, context = 0;
};

std::uintmax_t dir_bytes(const fs::path& d) {
  std::uintmax_t n = 0;
  for (const auto& e : fs::directory_iterator(d)) n += e.is_regular_file() ? e.file_size() : 0;
  return n;
}

/// Completions, perplexity, probe logits and tokens/s of a model.
template <class Model>
void measure(Model& m, const inputs& in, variant& v) {
  long long generated = 0;
  double secs = 0;
  nn::generation_options o;
  o.max_new_tokens = in.max_new_tokens;
  o.stop_ids = {in.tok->eos_id(), in.tok->bos_id()};
  for (const auto& p : in.prompts) {
    const auto ids = in.tok->encode(p, /*add_bos=*/true);
    const auto t0 = clock_type::now();
    const auto out = nn::generate(m, ids, o);
    secs += std::chrono::duration<double>(clock_type::now() - t0).count(), generated += (long long)out.size();
    std::string text;
    int prev = ids.back();
    for (int id : out) text += in.tok->decode_piece(prev, id), prev = id;
    v.completions.push_back(text);
  }
  v.tokens_per_s = double(generated) / secs;
  v.perplexity = experiments::teacher_forced_nll(m, in.val_ids, in.context).perplexity();
  nn::kv_cache_decoder<typename Model::linear_type> dec(m);
  dec.feed(in.probe, /*all_logits=*/true);
  v.logits = dec.all_logits().template cast<float>();
}

/// A 4-bit model built from the bitsandbytes tensors of a requantized HF directory, exactly as stored.
template <class S>
nn::llama_model<nn::linear<nn::quant_weight<S>>> load_requantized(const fs::path& dir) {
  const nn::model_file f = nn::read_hf_dir(dir);  // the float tensors (and the config)
  const auto st = io::safetensors_file::open(dir / "model.safetensors");
  return nn::llama_model<nn::linear<nn::quant_weight<S>>>::from_file(f, [&](const std::string& name, const float*, Eigen::Index n, Eigen::Index k) {
    nn::linear<nn::quant_weight<S>> l;
    l.weight.q = quant::read_bnb_4bit<S>(st, name + ".weight");
    l.weight.n = n, l.weight.k = k;
    return l;
  });
}

std::vector<std::string> read_prompts(const std::string& path) {
  if (path.empty()) return {"Once upon a time", "The little dog", "She looked at the sky and", "One day, Tom"};
  std::ifstream in(path);
  LORALAB_CHECK(in, path, ": cannot open the prompt file (--prompts)");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  LORALAB_CHECK(!out.empty(), path, ": no prompt (one per line)");
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  namespace po = experiment::po;
  std::string model_path, tokenizer_path, adapter, base = "nf4+dq", data_path = "/usr/share/games/fortunes/fortunes", format = "text",
              prompts_path, out_dir = "results/merge_compare";
  data::dataset_config dc;
  train::train_options o;
  int records = 400, max_new = 40;
  bool quick = false;
  experiment::command_line cli("merge_compare: base, unmerged adapter, HF and Meta merges, requantized merge side by side");
  auto& desc = cli.desc;
  desc.add_options()("model", po::value(&model_path), "llama2.c .bin, HF or Meta directory (default: models/stories260K.bin)")(
      "tokenizer", po::value(&tokenizer_path), "sentencepiece .model or tokenizer.bin (default: models/tok512.model)")(
      "adapter", po::value(&adapter), "PEFT adapter to compare (default: train one here first)")(
      "base", po::value(&base)->default_value(base), "the base the adapter works over: a scheme name (float32, bfloat16, nf4-b64, nf4-b64-dq, fp4-b64, fp4-b64-dq, int8-row) or float, nf4, nf4+dq, fp4, fp4+dq, int8")(
      "data", po::value(&data_path)->default_value(data_path), "dataset: training records and the validation text")(
      "format", po::value(&format)->default_value(format), "alpaca, dolly, quotes, text, gsm8k (question, answer) or chat (messages)")(
      "records", po::value(&records)->default_value(records), "training records when the adapter is trained here")(
      "epochs", po::value(&o.epochs)->default_value(2.0), "epochs when the adapter is trained here")(
      "quick", po::bool_switch(&quick), "a smoke run: 40 records x 1 epoch, 8 new tokens (what CI runs)")(
      "prompts", po::value(&prompts_path), "file of prompts, one per line (default: four story openings)")(
      "max-new-tokens", po::value(&max_new)->default_value(max_new), "greedy tokens per prompt")(
      "output-dir", po::value(&out_dir)->default_value(out_dir), "tables, JSON, figure, the adapter and the merged models");
  if (auto code = cli.parse(argc, argv)) return *code;
  const std::string scheme = experiments::model_scheme(base, false);  // canonical: nf4+dq -> nf4-b64-dq
  const std::string& quant = scheme;
  const bool dq = false;
  if (quick) records = 40, o.epochs = 1, max_new = 8;
  LORALAB_CHECK(records > 0 && max_new > 0, "--records and --max-new-tokens must be > 0");
  if (model_path.empty()) model_path = experiment::default_model_file("stories260K.bin", argv[0]);
  tokenizer_path = experiments::tokenizer_for(tokenizer_path, model_path, experiment::default_model_file("tok512.model", argv[0]));
  dc.file = data_path, dc.format = data::parse_data_format(format), dc.val = data::val_size::parse("31"), dc.seed = cli.seed;
  dc.validate();
  const fs::path out(out_dir);

  const nn::model_file file = nn::load_model_file(model_path);
  const auto tok = nn::load_tokenizer(tokenizer_path, file.config.vocab_size);
  nn::check_vocab_matches(*tok, file.config.vocab_size, tokenizer_path, model_path);
  data::prepared_dataset data = data::prepare_dataset(dc, *tok);
  inputs in{tok.get(), {}, {}, read_prompts(prompts_path), max_new, std::min(file.config.max_seq_len, 256)};
  for (const auto& r : data.val.rows()) in.val_ids.insert(in.val_ids.end(), r.input_ids.begin(), r.input_ids.end());
  in.probe.assign(in.val_ids.begin(), in.val_ids.begin() + std::min<std::ptrdiff_t>(in.context, std::ptrdiff_t(in.val_ids.size())));
  std::cout << file.config << "\nbase: " << base << "; validation text: " << in.val_ids.size() << " tokens of " << data_path << "\n";

  if (adapter.empty()) {  // a short QLoRA (or LoRA) run, so that base and adapter differ visibly
    adapter = (out / "adapter").string();
    data.train = data::batch_loader(std::vector(data.train.rows().begin(), data.train.rows().begin() +
                                                std::min<std::ptrdiff_t>(records, std::ptrdiff_t(data.train.size()))),
                                    dc.batch_size, tok->eos_id(), dc.seed);
    lora::lora_config lc;
    const auto targets = lora::parse_targets("all-linear");
    o.lr = 3e-3, o.seed = cli.seed;
    experiments::with_lora_model(file, quant, dq, [&]<class Base>(lora::lora_model<Base>& m) {
      lora::attach_adapters(m, lc, targets, o.seed);
      lora::prepare_for_kbit_training(m);
      train::trainer<lora::lora_model<Base>> t(m, data, o);
      train::run_files<lora::lora_model<Base>> files(adapter, lc, targets, experiments::base_model_record(file, model_path, "", adapter));
      const auto rec = t.observe(files).run();
      fmt::print("trained {}: {} steps in {:.1f} s, eval loss {:.4f}\n", adapter, rec.steps, rec.train_runtime, rec.final_eval_loss);
    });
  }

  std::vector<variant> v(4);
  v[0].name = "base", v[1].name = "unmerged", v[2].name = "merged hf", v[3].name = "merged meta";
  nn::model_file merged;
  auto t0 = clock_type::now();  // (1), (2): the base built from the model file in memory (quantized), + the adapter read
  experiments::with_model(file, quant, dq, "", [&](auto& m) {
    v[0].load_s = std::chrono::duration<double>(clock_type::now() - t0).count();
    measure(m, in, v[0]);
  });
  t0 = clock_type::now();
  experiments::with_lora_model(file, quant, dq, [&](auto& m) {
    lora::load_adapter(m, adapter);
    lora::set_adapter_mode(m, false, 0);
    v[1].load_s = std::chrono::duration<double>(clock_type::now() - t0).count(), v[1].bytes = dir_bytes(adapter);
    measure(m, in, v[1]);
    merged = lora::merged_model_file(m, file);
  });
  const auto written = [&](const std::string& name, auto&& write) {
    atomic_dir d(out / name, /*overwrite=*/true);
    write(d.path());
    d.commit();
    return out / name;
  };
  const auto load_and_measure = [&](variant& x, const fs::path& dir, auto&& load) {
    const auto t0 = clock_type::now();
    auto m = load(dir);
    x.load_s = std::chrono::duration<double>(clock_type::now() - t0).count(), x.bytes = dir_bytes(dir);
    measure(m, in, x);
  };
  load_and_measure(v[2], written("merged_hf", [&](const fs::path& d) { nn::write_hf_dir(merged, d); }),
                   [](const fs::path& d) { return nn::make_dense_model<float>(nn::read_hf_dir(d)); });
  load_and_measure(v[3], written("merged_meta", [&](const fs::path& d) { nn::write_meta_dir(merged, d); }),
                   [&](const fs::path& d) { return nn::make_dense_model<float>(nn::read_meta_dir(d, file.config.max_seq_len)); });
  lora::requantization_report requant;
  quant::dispatch_scheme<quant::model_schemes>(scheme, [&]<class S>(std::type_identity<S>) {
    if constexpr (!quant::is_unquantized<S> && S::bits == 4) {  // (5): a 4-bit base is requantized to its own scheme
      requant = lora::requantization_error<S>(merged);
      v.emplace_back().name = "requantized " + base;
      load_and_measure(v.back(), written("merged_requantized", [&](const fs::path& d) { nn::write_hf_dir_4bit<S>(merged, d); }),
                       [](const fs::path& d) { return load_requantized<S>(d); });
    }
  });

  experiment::table tab({"variant", "files MiB", "build/load s", "tokens/s", "perplexity", "Δppl vs unmerged %", "max |Δlogit| vs unmerged",
                          "greedy text = unmerged"});
  for (auto& x : v) {
    x.max_dlogit = double((x.logits - v[1].logits).cwiseAbs().maxCoeff());
    int same = 0;
    for (std::size_t p = 0; p < in.prompts.size(); ++p) same += x.completions[p] == v[1].completions[p];
    tab.rows.push_back({x.name, x.bytes ? fmt::format("{:.3f}", double(x.bytes) / (1 << 20)) : "-", fmt::format("{:.3f}", x.load_s),
                        fmt::format("{:.0f}", x.tokens_per_s), fmt::format("{:.4f}", x.perplexity),
                        fmt::format("{:+.4f}", 100 * (x.perplexity / v[1].perplexity - 1)), fmt::format("{:.2e}", x.max_dlogit),
                        fmt::format("{}/{}", same, in.prompts.size())});
  }
  tab.print_markdown();
  std::vector<std::string> cols = {"prompt"};
  for (const auto& x : v) cols.push_back(x.name);
  experiment::table texts(cols);
  const auto cell = [](std::string s) {
    for (char& c : s) c = (c == '\n' || c == '|') ? ' ' : c;
    return s;
  };
  for (std::size_t p = 0; p < in.prompts.size(); ++p) {
    texts.rows.push_back({cell(in.prompts[p])});
    for (const auto& x : v) texts.rows.back().push_back(cell(x.completions[p]));
  }
  std::cout << "\n";
  texts.print_markdown();

  // The closing sentence: do the merges agree with the unmerged model, and what did requantizing cost?
  const auto agree = [&](const variant& x) { return x.max_dlogit <= 1e-3 && std::abs(x.perplexity / v[1].perplexity - 1) <= 1e-5; };
  fmt::print("\nThe HF and Meta merges {} the unmerged model (max |Δlogit| {:.1e} and {:.1e}, perplexity {:.4f} and {:.4f} vs {:.4f})",
             agree(v[2]) && agree(v[3]) ? "agree with" : "DIFFER from", v[2].max_dlogit, v[3].max_dlogit, v[2].perplexity,
             v[3].perplexity, v[1].perplexity);
  if (v.size() > 4)
    fmt::print("; requantizing the merge to {} adds a weight error of {:.2e} relative RMS (max {:.2e}) and moves perplexity by {:+.2f}% "
               "(max |Δlogit| {:.2f}), keeping {:.0f}% of the adapter's perplexity gain over the base",
               base, requant.rel_rms, requant.max_abs, 100 * (v[4].perplexity / v[1].perplexity - 1), v[4].max_dlogit,
               100 * (v[0].perplexity - v[4].perplexity) / (v[0].perplexity - v[1].perplexity));
  fmt::print("; the adapter itself moves perplexity by {:+.2f}% from the base.\n", 100 * (v[1].perplexity / v[0].perplexity - 1));

  tab.write_csv(out / "merge_compare.csv");
  nlohmann::ordered_json j;
  j["config"] = {{"model", model_path}, {"tokenizer", tokenizer_path}, {"adapter", adapter}, {"base", base}, {"data", data_path},
                 {"validation_tokens", in.val_ids.size()}, {"prompts", in.prompts}, {"max_new_tokens", max_new}, {"seed", cli.seed}};
  for (const auto& x : v)
    j["variants"].push_back({{"name", x.name}, {"bytes", x.bytes}, {"load_seconds", x.load_s}, {"tokens_per_second", x.tokens_per_s},
                             {"perplexity", x.perplexity}, {"max_abs_dlogit_vs_unmerged", x.max_dlogit}, {"completions", x.completions}});
  if (v.size() > 4) j["requantization"] = {{"max_abs", requant.max_abs}, {"rel_rms", requant.rel_rms}};
  atomic_file f(out / "merge_compare.json");
  f.write(j.dump(2));
  f.commit();
  std::string script = fmt::format("set terminal pngcairo size 1100,420\nset output '{}'\nset multiplot layout 1,2 title 'merge methods ({} base)'\n"
                                   "set style fill solid 0.6\nset boxwidth 0.6\nset grid y\nset xtics rotate by -20\n$D << EOD\n",
                                   (out / "merge_compare.png").string(), base);
  for (std::size_t i = 0; i < v.size(); ++i)
    script += fmt::format("{} \"{}\" {} {}\n", i, v[i].name, v[i].perplexity, std::max(v[i].max_dlogit, 1e-9));
  script += "EOD\nset title 'validation perplexity'\nplot $D using 1:3:xtic(2) with boxes notitle\n"
            "set title 'max |Δlogit| vs unmerged (log)'\nset logscale y\nplot $D using 1:4:xtic(2) with boxes notitle\nunset multiplot\n";
  experiment::run_gnuplot(script, out / "merge_compare.gp");
  fmt::print("wrote {}, {} and {}\n", (out / "merge_compare.csv").string(), (out / "merge_compare.json").string(),
             (out / "merge_compare.png").string());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "merge_compare: error: {}\n", e.what());
  return 1;
}

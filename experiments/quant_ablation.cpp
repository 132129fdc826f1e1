// SPDX-License-Identifier: MIT
/// \file quant_ablation.cpp
/// \brief Which code, which block size, and is double quantization worth it?
///
/// QLoRA (Dettmers et al. 2023, §3) argues that NF4 loses less than FP4 on normally distributed weights, and
/// that double quantization saves 0.373 bits/param at block 64 for almost no error. This program measures both,
/// with every scheme bitsandbytes offers: {nf4, fp4} x block {32 … 4096} x DQ {off, on}, 8-bit blockwise, and
/// LLM.int8 row-wise. Storage is measured from the bytes each tensor allocated, not from a formula.
///
///   build/experiments/quant_ablation                        # Gaussian 4096x4096, N(0, 0.02), fresh per --seed
///   build/experiments/quant_ablation --weights model.safetensors   # every 2-D float tensor of a real model
///   build/experiments/quant_ablation --model stories260K.bin --tokenizer tok512.model --text-file story.txt
///       # a real model's linear layers, with the perplexity each scheme gives it next to the error metrics
///
/// Runtime ~10 s on 2 cores. Output: a Markdown table (31 rows) and two summary lines on stdout,
/// OUT/quant_ablation.csv and OUT/quant_ablation.png (OUT = --out-dir, default results/).
#include <cmath>
#include <fstream>
#include <sstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "experiment/report.hpp"
#include "io/safetensors.hpp"
#include "model_cli.hpp"
#include "nn/model_io.hpp"
#include "nn/tokenizer.hpp"
#include "quant/quant.hpp"

using namespace loralab;
using namespace loralab::quant;

struct weights {  // the tensors to quantize, as float32
  std::vector<std::string> names;
  std::vector<std::vector<float>> data;
  std::vector<std::vector<std::int64_t>> shapes;
  std::size_t numel() const { std::size_t n = 0; for (const auto& d : data) n += d.size(); return n; }
};

struct result {
  std::string family, label;
  int block = 0;
  double bits_analytic = 0, bits_measured = 0, mse = 0, sqnr_db = 0, max_abs_error = 0;
  double perplexity = 0;  // with --model: the model with these linears, on --text-file
};

/// With --model: the model, the scored text, and its window.
struct model_eval {
  const nn::model_file* file = nullptr;
  std::vector<int> ids;
  int context = 0;
};

/// Quantizes every tensor with S, dequantizes, and sums storage and error over all of them.
template <quant_scheme S>
result measure(const weights& w, float int8_threshold, const model_eval& eval) {
  std::size_t bytes = 0;
  double noise = 0, signal = 0, max_err = 0;
  for (std::size_t t = 0; t < w.data.size(); ++t) {
    const auto& x = w.data[t];
    std::vector<float> y(x.size());
    const std::size_t rows = static_cast<std::size_t>(w.shapes[t][0]), cols = x.size() / rows;
    const auto q = [&] {  // LLM.int8() may keep outlier columns apart; blockwise schemes have no threshold
      if constexpr (takes_outlier_threshold<S>) return quantize<S, float>(x, rows, cols, int8_threshold);
      else return quantize<S, float>(x, rows, cols);
    }();
    q.template dequantize_rows<float>(0, rows, y);
    const std::size_t stored = q.storage_bytes();
    const auto m = measure_error(x, y);
    bytes += stored;
    noise += m.mse * double(x.size());
    for (float v : x) signal += double(v) * v;
    max_err = std::max(max_err, m.max_abs_error);
  }
  result r;
  r.label = scheme_label<S>();
  const double n = double(w.numel());
  r.family = scheme_family<S>();
  r.block = scheme_block_size<S>();
  const std::size_t rows0 = std::size_t(w.shapes[0][0]);
  if constexpr (blockwise_scheme<S>) r.bits_analytic = bits_per_param<S>();  // the paper's formula (large-tensor limit)
  else r.bits_analytic = planned_bits_per_param<S>(rows0, w.data[0].size() / rows0);
  r.bits_measured = 8.0 * double(bytes) / n;
  r.mse = noise / n;
  r.sqnr_db = 10 * std::log10(signal / noise);
  r.max_abs_error = max_err;
  if (eval.file) {
    auto m = nn::make_quantized_model<S>(*eval.file);
    r.perplexity = experiments::teacher_forced_nll(m, eval.ids, eval.context).perplexity();
  }
  return r;
}

/// The 7·L linear weights of a model, the tensors QLoRA quantizes.
weights from_model(const nn::model_file& f) {
  weights w;
  for (const auto& [name, t] : f.tensors)
    if (name.find("_proj.weight") != std::string::npos) w.names.push_back(name), w.data.push_back(t.data), w.shapes.push_back(t.shape);
  return w;
}

weights gaussian(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  weights w;
  std::mt19937_64 g(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);  // a typical init scale of LLM linear layers
  w.data.emplace_back(std::size_t(rows * cols));
  for (auto& v : w.data.back()) v = normal(g);
  w.names.push_back("gaussian"), w.shapes.push_back({rows, cols});
  return w;
}

weights from_safetensors(const std::string& path) {
  weights w;
  const auto f = io::safetensors_file::open(path);
  for (const auto& t : f.tensors())
    if (t.shape.size() == 2 && t.numel() > 0 &&
        (t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16))
      w.names.push_back(t.name), w.data.push_back(t.to_float()), w.shapes.push_back(t.shape);
  LORALAB_CHECK(!w.data.empty(), path, ": no 2-D F32/F16/BF16 tensor to quantize");
  return w;
}

int main(int argc, char** argv) try {
  std::int64_t rows = 4096, cols = 4096;
  std::string weights_path, out_dir = "results", model_path, tokenizer_path, text_file;
  int context = 0;
  float int8_threshold = 0.0f;
  experiment::command_line cli("quant_ablation: storage vs error for every bitsandbytes scheme");
  auto& desc = cli.desc;
  desc.add_options()("rows", experiment::po::value(&rows)->default_value(rows), "rows of the Gaussian weight")(
      "cols", experiment::po::value(&cols)->default_value(cols), "columns of the Gaussian weight")(
      "weights", experiment::po::value(&weights_path), "a .safetensors file: ablate its 2-D float tensors instead")(
      "int8-threshold", experiment::po::value(&int8_threshold)->default_value(int8_threshold),
      "LLM.int8 outlier threshold for the int8 row-wise scheme (0 = none, bnb's default)")(
      "out-dir", experiment::po::value(&out_dir)->default_value(out_dir), "where the CSV and the plot go")(
      "model", experiment::po::value(&model_path), "a llama2.c checkpoint or HF directory: ablate its linear layers and "
                                                     "report perplexity (needs --tokenizer and --text-file)")(
      "tokenizer", experiment::po::value(&tokenizer_path), "with --model: sentencepiece .model or llama2.c tokenizer.bin")(
      "text-file", experiment::po::value(&text_file), "with --model: the text whose perplexity is reported")(
      "context", experiment::po::value(&context)->default_value(0), "with --model: window in tokens (0 = the model's)");
  if (auto code = cli.parse(argc, argv)) return *code;
  LORALAB_CHECK(rows > 0 && cols > 0, "--rows and --cols must be positive, got ", rows, " x ", cols);

  LORALAB_CHECK(weights_path.empty() || model_path.empty(), "--weights and --model exclude each other");
  if (tokenizer_path.empty() && !model_path.empty() && nn::is_gguf_file(model_path)) tokenizer_path = model_path;  // its own
  LORALAB_CHECK(model_path.empty() || (!tokenizer_path.empty() && !text_file.empty()),
                "--model needs --tokenizer and --text-file (the perplexity is measured on that text)");
  nn::model_file model;
  model_eval eval;
  double float_perplexity = 0;
  if (!model_path.empty()) {
    model = nn::load_model_file(model_path);
    const auto tok = nn::load_tokenizer(tokenizer_path, model.config.vocab_size);
    nn::check_vocab_matches(*tok, model.config.vocab_size, tokenizer_path, model_path);
    std::ifstream in(text_file, std::ios::binary);
    LORALAB_CHECK(in, text_file, ": cannot open the text file");
    std::stringstream text;
    text << in.rdbuf();
    eval = {&model, tok->encode(text.str(), /*add_bos=*/true), context == 0 ? model.config.max_seq_len : context};
    auto dense = nn::make_dense_model<float>(model);
    float_perplexity = experiments::teacher_forced_nll(dense, eval.ids, eval.context).perplexity();
  }
  const weights w = !model_path.empty() ? from_model(model)
                    : weights_path.empty() ? gaussian(rows, cols, cli.seed) : from_safetensors(weights_path);
  const std::string source = !model_path.empty() ? model_path + " (linear layers)"
                             : weights_path.empty() ? fmt::format("Gaussian {}x{} N(0, 0.02)", rows, cols) : weights_path;
  fmt::print("# quant_ablation: {} tensor(s), {} parameters ({}), seed {}, threads {}\n\n", w.data.size(), w.numel(), source,
             cli.seed, omp_get_max_threads());
  if (eval.file)
    fmt::print("float32 perplexity on {} ({} tokens): {:.4f}\n\n", text_file, eval.ids.size() - 1, float_perplexity);

  std::vector<result> results;
  const auto per_block = [&]<int... Bs>(std::integer_sequence<int, Bs...>) {
    ((results.push_back(measure<nf4<Bs>>(w, 0, eval)), results.push_back(measure<double_quant<nf4<Bs>>>(w, 0, eval)),
      results.push_back(measure<fp4<Bs>>(w, 0, eval)), results.push_back(measure<double_quant<fp4<Bs>>>(w, 0, eval)),
      results.push_back(measure<dynamic8<Bs>>(w, 0, eval))), ...);
  };
  per_block(std::integer_sequence<int, 32, 64, 128, 256, 1024, 4096>{});
  results.push_back(measure<int8_rowwise>(w, int8_threshold, eval));

  experiment::table tab({"scheme", "family", "block", "bits/param (analytic)", "bits/param (measured)", "MSE",
                          "SQNR dB", "max |err|"});
  if (eval.file) tab.header.push_back("perplexity");
  for (const auto& r : results) {
    tab.rows.push_back({r.label, r.family, r.block ? std::to_string(r.block) : "row", fmt::format("{:.4f}", r.bits_analytic),
                        fmt::format("{:.4f}", r.bits_measured), fmt::format("{:.4e}", r.mse),
                        fmt::format("{:.2f}", r.sqnr_db), fmt::format("{:.4e}", r.max_abs_error)});
    if (eval.file) tab.rows.back().push_back(fmt::format("{:.4f}", r.perplexity));
  }
  tab.print_markdown();

  const auto find = [&](const std::string& label) { return *std::find_if(results.begin(), results.end(), [&](auto& r) { return r.label == label; }); };
  bool nf4_wins = true;
  for (int b : {32, 64, 128, 256, 1024, 4096})
    nf4_wins &= find(fmt::format("nf4-b{}", b)).sqnr_db > find(fmt::format("fp4-b{}", b)).sqnr_db;
  const auto nf4 = find("nf4-b64"), fp4 = find("fp4-b64"), dq = find("nf4-b64-dq");
  fmt::print("\nNF4 vs FP4 at block 64: SQNR {:.2f} dB vs {:.2f} dB; NF4 beats FP4 at every block size: {}\n",
             nf4.sqnr_db, fp4.sqnr_db, nf4_wins ? "yes" : "no");
  fmt::print("double quantization at block 64 saves {:.4f} bits/param ({:.4f} -> {:.4f}) for {:+.3f} dB SQNR\n",
             nf4.bits_measured - dq.bits_measured, nf4.bits_measured, dq.bits_measured, dq.sqnr_db - nf4.sqnr_db);

  const std::filesystem::path dir(out_dir);
  tab.write_csv(dir / "quant_ablation.csv");
  std::string script = fmt::format(
      "set terminal pngcairo size 900,600\nset output '{}'\nset title 'Storage vs error ({})'\n"
      "set xlabel 'bits per parameter (measured)'\nset ylabel 'SQNR (dB)'\nset key bottom right\nset grid\n",
      (dir / "quant_ablation.png").string(), weights_path.empty() ? "Gaussian weights" : weights_path);
  const std::vector<std::string> families = {"nf4", "nf4+dq", "fp4", "fp4+dq", "dynamic8", "int8-row"};
  for (const auto& fam : families) {
    script += "$" + std::string(fam == "nf4+dq" ? "nf4dq" : fam == "fp4+dq" ? "fp4dq" : fam == "int8-row" ? "int8" : fam) + " << EOD\n";
    for (const auto& r : results)
      if (r.family == fam) script += fmt::format("{} {} {}\n", r.bits_measured, r.sqnr_db, r.block);
    script += "EOD\n";
  }
  script += "plot $nf4 using 1:2 with linespoints title 'nf4', $nf4dq using 1:2 with linespoints title 'nf4 + DQ', "
            "$fp4 using 1:2 with linespoints title 'fp4', $fp4dq using 1:2 with linespoints title 'fp4 + DQ', "
            "$dynamic8 using 1:2 with linespoints title 'dynamic 8-bit', $int8 using 1:2 with points pt 7 ps 2 title 'int8 row-wise'\n";
  experiment::run_gnuplot(script, dir / "quant_ablation.gp");
  fmt::print("wrote {} and {}\n", (dir / "quant_ablation.csv").string(), (dir / "quant_ablation.png").string());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "quant_ablation: error: {}\n", e.what());
  return 1;
}

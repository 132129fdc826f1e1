// SPDX-License-Identifier: MIT
/// \file merge.cpp
/// \brief Adapter + base -> one model: PEFT's merge_and_unload, written for other tools (HF or Meta layout).
///
///   build/experiments/merge --model models/stories260K.bin --adapter results/lora --out results/merged-hf
///   build/experiments/merge --model models/stories260K.bin --adapter results/lora --out results/merged-meta --format meta
///   build/experiments/merge --model models/stories260K.bin --adapter results/qlora --quant nf4 --double-quant
///       --requantize nf4 --out results/merged-nf4   (one command)
///
/// Every adapted linear becomes W' = W + s·B·A. With --quant (the adapter was trained over a quantized base,
/// QLoRA), W is the dequantized base the adapter saw, deq(Q(W)), for every linear, so the merged float model
/// computes what the unmerged one did. --format hf writes config.json + model.safetensors (sharded above
/// --max-shard-size, with model.safetensors.index.json) that transformers' LlamaForCausalLM.from_pretrained and
/// every loralab program (--model DIR) load; --format meta writes params.json + consolidated.00.pth with Meta's
/// names and wq/wk in Meta's rotary layout (the alpaca-lora lab's export). --dtype sets the float type written;
/// --requantize nf4|fp4 (hf only) quantizes the merged linears again in bitsandbytes' 4-bit layout with a
/// quantization_config, and prints the error that adds against the exact merged weights (PEFT only warns).
/// --tokenizer FILE is copied in as tokenizer.model. The directory is written whole or not at all (a hidden
/// temporary directory renamed into place); an existing --out is refused unless --overwrite.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>

#include <fmt/core.h>

#include "experiment/cli.hpp"
#include "core/atomic_dir.hpp"
#include "lora/merged_model.hpp"
#include "model_cli.hpp"
#include "nn/meta_dir.hpp"
#include "nn/model_io.hpp"

using namespace loralab;
namespace fs = std::filesystem;

namespace {

io::dtype parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return io::dtype::F32;
  if (s == "f16" || s == "float16") return io::dtype::F16;
  if (s == "bf16" || s == "bfloat16") return io::dtype::BF16;
  fail("--dtype must be f32, f16 or bf16, got '", s, "'");
}

/// "5GB", "200MB", "64KB", "1000": bytes (decimal units, as transformers' max_shard_size).
std::uint64_t parse_size(const std::string& s) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    fail("--max-shard-size must be a size such as 5GB, 200MB or 1000000, got '", s, "'");
  }
  const std::string unit = s.substr(used);
  const double scale = unit.empty() || unit == "B" ? 1 : unit == "KB" ? 1e3 : unit == "MB" ? 1e6 : unit == "GB" ? 1e9 : -1;
  LORALAB_CHECK(scale > 0 && v >= 0, "--max-shard-size must be a size such as 5GB, 200MB or 1000000, got '", s, "'");
  return std::uint64_t(v * scale);
}

}  // namespace

int main(int argc, char** argv) try {
  namespace po = experiment::po;
  std::string model_path, adapter, out, format = "hf", dtype = "f32", quant = "none", requantize = "none", tokenizer,
              shard = "5GB";
  bool dq = false, overwrite = false;
  experiment::command_line cli("merge: a LoRA adapter merged into its base, written as one model");
  auto& desc = cli.desc;
  desc.add_options()("model", po::value(&model_path)->required(), "the base: llama2.c .bin, HF or Meta directory")(
      "adapter", po::value(&adapter)->required(), "PEFT LoRA adapter directory")(
      "out", po::value(&out)->required(), "output directory (written whole or not at all)")(
      "format", po::value(&format)->default_value(format), "hf (config.json + safetensors) or meta (params.json + consolidated.00.pth)")(
      "dtype", po::value(&dtype)->default_value(dtype), "float type written: f32, f16 or bf16")(
      "quant", po::value(&quant)->default_value(quant), "the base the adapter was trained over: none, nf4, fp4 or int8 (QLoRA)")(
      "double-quant", po::bool_switch(&dq), "the 4-bit base (and --requantize) double-quantize the absmax")(
      "requantize", po::value(&requantize)->default_value(requantize), "none, nf4 or fp4: write the merged linears in bnb 4-bit (hf only)")(
      "max-shard-size", po::value(&shard)->default_value(shard), "hf: split model.safetensors above this size (0: never)")(
      "tokenizer", po::value(&tokenizer), "copy this tokenizer into the output as tokenizer.model")(
      "overwrite", po::bool_switch(&overwrite), "replace an existing output directory");
  if (auto code = cli.parse(argc, argv)) return *code;
  LORALAB_CHECK(format == "hf" || format == "meta", "--format must be hf or meta, got '", format, "'");
  LORALAB_CHECK(quant != "bf16", "--quant bf16 is not a QLoRA base; merge the float model (--quant none)");
  LORALAB_CHECK(requantize == "none" || requantize == "nf4" || requantize == "fp4", "--requantize must be none, nf4 or fp4, got '",
                requantize, "'");
  LORALAB_CHECK(requantize == "none" || format == "hf", "--requantize writes bitsandbytes' layout, which only --format hf holds");
  const bool base_dq = dq && (quant == "nf4" || quant == "fp4");
  LORALAB_CHECK(!dq || base_dq || requantize != "none", "--double-quant needs a 4-bit --quant or --requantize");
  const io::dtype type = parse_dtype(dtype);
  const std::uint64_t max_shard = parse_size(shard);
  LORALAB_CHECK(tokenizer.empty() || fs::is_regular_file(tokenizer), tokenizer, ": no such tokenizer file");

  const auto t0 = std::chrono::steady_clock::now();
  const nn::model_file base = nn::load_model_file(model_path);
  atomic_dir dir(out, overwrite);  // refuses an existing --out before any work
  lora::merged_summary sum;
  lora::requantization_report requant;
  nn::model_file merged;
  experiments::with_lora_model(base, quant, base_dq, [&](auto& m) {
    const auto cfg = lora::load_adapter(m, adapter);
    std::cout << experiments::describe_adapter(m, adapter, cfg) << "\nbase: " << model_path << " (" << quant
              << (base_dq ? " + double quant" : "") << ")\n";
    merged = lora::merged_model_file(m, base, &sum);
  });
  if (format == "meta") {
    nn::write_meta_dir(merged, dir.path(), {type});
  } else if (requantize == "none") {
    nn::write_hf_dir(merged, dir.path(), {type, max_shard});
  } else {
    quant::dispatch_4bit_b64(requantize, dq, [&]<class S>(std::type_identity<S>) {
      requant = lora::requantization_error<S>(merged);
      nn::write_hf_dir_4bit<S>(merged, dir.path(), {type, max_shard});
    });
  }
  if (!tokenizer.empty()) fs::copy_file(tokenizer, dir.path() / "tokenizer.model");
  dir.commit();

  std::uintmax_t bytes = 0;
  for (const auto& e : fs::directory_iterator(out)) bytes += e.is_regular_file() ? e.file_size() : 0;
  fmt::print("merged {} adapted linears (max |s·B·A| {:.3e}) into {} ({} layout, {}{}): {:.2f} MiB in {:.2f} s\n", sum.modules,
             sum.max_update, out, format, dtype, requantize == "none" ? "" : ", linears requantized to " + requantize + (dq ? "+dq" : ""),
             double(bytes) / (1 << 20), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (requantize != "none")
    fmt::print("requantization error vs the exact merged weights: max |Δw| {:.4e}, relative RMS {:.4e}\n", requant.max_abs,
               requant.rel_rms);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "merge: error: {}\n", e.what());
  return 1;
}

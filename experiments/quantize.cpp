// SPDX-License-Identifier: MIT
/// \file quantize.cpp
/// \brief Quantize a safetensors file into bitsandbytes' 4-bit layout, or dequantize one back to float32; or turn a
/// Hugging Face model directory into a pre-quantized one.
///
///   build/experiments/quantize --scheme nf4 --double-quant --in model.safetensors --out model-nf4.safetensors
///   build/experiments/quantize --dequantize --in model-nf4.safetensors --out model-f32.safetensors
///   build/experiments/quantize --scheme nf4 --double-quant --in stories260K-hf --out stories260K-nf4 [--overwrite]
///
/// Directory mode (--in is a directory): the model is read as an HF LlamaForCausalLM directory and written as the
/// directory transformers saves for BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=--scheme,
/// bnb_4bit_use_double_quant=--double-quant, bnb_4bit_compute_dtype=float32) (nn::write_hf_dir_4bit): the 7 linear
/// weights of every layer in 4-bit, everything else F32, config.json with quantization_config, so that
/// LlamaForCausalLM.from_pretrained(OUT) loads it as is. The whole directory appears at once (core/atomic_dir.hpp);
/// an existing OUT is refused unless --overwrite. The block size is bitsandbytes' 64.
///
/// File mode:
/// Every 2-D F32/F16/BF16 tensor whose name matches --only (regex search; default all) and not --skip is
/// quantized; every other tensor is copied unchanged (a tensor that --only names but that is not a 2-D float
/// tensor is an error). The output is what transformers' bitsandbytes loader reads
/// (W, W.absmax, W.quant_map, [W.nested_*], W.quant_state.bitsandbytes__nf4|fp4). Per tensor it prints the
/// shape, the bits/param measured from the stored bytes, MSE and SQNR. Writes are atomic: on any error no
/// output file is left behind. Runtime: about a second per 100M parameters.
#include <filesystem>
#include <iostream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "experiment/cli.hpp"
#include "experiment/report.hpp"
#include "core/atomic_dir.hpp"
#include "io/safetensors.hpp"
#include "nn/model_io.hpp"
#include "quant/quant.hpp"

using namespace loralab;
using namespace loralab::quant;

namespace {

std::string dtype_long_name(io::dtype t) {  // torch's spelling, as bnb records it in quant_state
  return t == io::dtype::F16 ? "float16" : t == io::dtype::BF16 ? "bfloat16" : "float32";
}

int quantize_file(const std::string& in, const std::string& out, const std::string& scheme, int block, bool dq,
                  const std::string& only, const std::string& skip) {
  const auto f = io::safetensors_file::open(in);
  const std::regex only_re(only.empty() ? ".*" : only), skip_re(skip);
  bnb_writer writer;
  std::vector<std::shared_ptr<const void>> keep_alive;  // quantized tensors referenced by the writer
  std::vector<std::vector<float>> dense_keep;
  experiment::table tab({"tensor", "shape", "action", "bits/param", "MSE", "SQNR dB"});
  for (const auto& t : f.tensors()) {
    const bool floating = t.type == io::dtype::F32 || t.type == io::dtype::F16 || t.type == io::dtype::BF16;
    const bool selected = std::regex_search(t.name, only_re) && (skip.empty() || !std::regex_search(t.name, skip_re));
    const std::string shape = fmt::format("[{}]", fmt::join(t.shape, ", "));
    // Named on purpose with --only but not quantizable: say so rather than copy it silently.
    LORALAB_CHECK(!(selected && !only.empty() && !(t.shape.size() == 2 && floating)), in, ": tensor '", t.name,
                  "' matches --only but is ", io::dtype_name(t.type), " ", shape,
                  ": only 2-D F32/F16/BF16 tensors can be quantized");
    if (!(t.shape.size() == 2 && floating && selected)) {
      writer.raw().add(t.name, t.type, t.shape, t.bytes);
      tab.rows.push_back({t.name, shape, fmt::format("copied ({})", io::dtype_name(t.type)), "", "", ""});
      continue;
    }
    LORALAB_CHECK(t.numel() > 0, in, ": tensor '", t.name, "' has no elements (shape ", shape, "): nothing to quantize");
    const std::vector<float> x = t.to_float();
    dispatch_4bit(scheme, block, dq, [&]<class S>(std::type_identity<S>) {
      auto q = std::make_shared<const blockwise_tensor<S>>(blockwise_tensor<S>::template quantize<float>(x, t.shape));
      std::vector<float> y(x.size());
      q->template dequantize<float>(y);
      const auto m = measure_error(x, y);
      writer.add_4bit(t.name, *q, dtype_long_name(t.type));
      tab.rows.push_back({t.name, shape, scheme_label<S>(), fmt::format("{:.4f}", q->measured_bits_per_param()),
                          fmt::format("{:.3e}", m.mse), fmt::format("{:.2f}", m.sqnr_db)});
      keep_alive.push_back(std::move(q));
    });
  }
  tab.print_markdown();
  writer.write(out);
  fmt::print("wrote {}\n", out);
  return 0;
}

int dequantize_file(const std::string& in, const std::string& out) {
  const auto f = io::safetensors_file::open(in);
  const auto quantized = bnb_4bit_weights(f);
  LORALAB_CHECK(!quantized.empty(), in, ": no bitsandbytes 4-bit weight (no *.quant_state.bitsandbytes__nf4|fp4 key)");
  io::safetensors_writer writer;
  std::vector<std::vector<float>> keep;
  experiment::table tab({"tensor", "shape", "action"});
  for (const auto& t : f.tensors()) {
    if (is_bnb_aux_key(t.name, quantized)) continue;
    if (std::find(quantized.begin(), quantized.end(), t.name) == quantized.end()) {
      writer.add(t.name, t.type, t.shape, t.bytes);
      tab.rows.push_back({t.name, fmt::format("[{}]", fmt::join(t.shape, ", ")), "copied"});
      continue;
    }
    visit_bnb_4bit(f, t.name, [&](const auto& q) {
      auto& y = keep.emplace_back(q.numel());
      q.template dequantize<float>(y);
      writer.add<float>(t.name, q.shape(), y);
      tab.rows.push_back({t.name, fmt::format("[{}]", fmt::join(q.shape(), ", ")),
                          "dequantized from " + scheme_label<typename std::decay_t<decltype(q)>::scheme>()});
    });
  }
  tab.print_markdown();
  writer.write(out);
  fmt::print("wrote {}\n", out);
  return 0;
}

int quantize_dir(const std::string& in, const std::string& out, const std::string& scheme, int block, bool dq,
                 bool overwrite) {
  LORALAB_CHECK(block == 64, "--blocksize ", block, ": a model directory is quantized with block 64, as transformers' "
                "bitsandbytes integration does");
  atomic_dir dir(out, overwrite);  // refuses an existing OUT before any work
  const nn::model_file m = nn::read_hf_dir(in);
  LORALAB_CHECK(m.quantization.empty(), in, ": is already quantized (", m.quantization, ")");
  std::cout << m.config << "\n";
  dispatch_4bit_b64(scheme, dq, [&]<class S>(std::type_identity<S>) {
    nn::write_hf_dir_4bit<S>(m, dir.path());
    fmt::print("quantized the {} linear weights to {}, the other {} tensors kept in F32\n", 7 * m.config.n_layers,
               scheme_label<S>(), m.tensors.size() - 7 * std::size_t(m.config.n_layers));
  });
  dir.commit();
  std::uintmax_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(out)) bytes += e.is_regular_file() ? e.file_size() : 0;
  fmt::print("wrote {} ({:.2f} MiB)\n", out, double(bytes) / (1 << 20));
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string in, out, scheme = "nf4", only, skip;
  int block = 64;
  bool dq = false, dequantize = false, overwrite = false;
  experiment::command_line cli("quantize: safetensors <-> bitsandbytes 4-bit safetensors; HF directory -> pre-quantized HF directory");
  auto& desc = cli.desc;
  desc.add_options()("in", experiment::po::value(&in)->required(), "input .safetensors, or an HF model directory")(
      "out", experiment::po::value(&out)->required(), "output .safetensors or directory (written atomically)")(
      "scheme", experiment::po::value(&scheme)->default_value(scheme), "nf4 or fp4")(
      "blocksize", experiment::po::value(&block)->default_value(block),
      "32, 64, 128, 256, 512, 1024, 2048 or 4096 (a directory: 64)")(
      "double-quant", experiment::po::bool_switch(&dq), "quantize the absmax statistics too (QLoRA's DQ)")(
      "only", experiment::po::value(&only), "quantize only tensors whose name matches this regex (search)")(
      "skip", experiment::po::value(&skip), "never quantize tensors whose name matches this regex (search)")(
      "dequantize", experiment::po::bool_switch(&dequantize), "read a bnb 4-bit file and write float32")(
      "overwrite", experiment::po::bool_switch(&overwrite), "directory mode: replace an existing --out directory");
  if (auto code = cli.parse(argc, argv)) return *code;
  const bool dir_mode = std::filesystem::is_directory(in);
  LORALAB_CHECK(!(dir_mode && dequantize), in, ": is a directory; convert --in DIR --out DIR writes a 4-bit "
                "directory's dequantized float model");
  LORALAB_CHECK(!(dir_mode && (!only.empty() || !skip.empty())), in, ": is a directory, whose 7 linear weights per "
                "layer are all quantized (as transformers does); --only/--skip apply to a single file");
  if (dequantize) return dequantize_file(in, out);
  LORALAB_CHECK(scheme == "nf4" || scheme == "fp4", "--scheme must be nf4 or fp4, got '", scheme, "'");
  if (dir_mode) return quantize_dir(in, out, scheme, block, dq, overwrite);
  try {
    (void)std::regex(only), (void)std::regex(skip);
  } catch (const std::regex_error& e) {
    fail("--only/--skip: invalid regex: ", e.what());
  }
  return quantize_file(in, out, scheme, block, dq, only, skip);
} catch (const std::exception& e) {
  fmt::print(stderr, "quantize: error: {}\n", e.what());
  return 1;
}

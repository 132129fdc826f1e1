// SPDX-License-Identifier: MIT
#pragma once
// What the model programs share: loading a model file, choosing the base weights' scheme from --quant and
// --double-quant (the one run-time switch over compile-time schemes), applying a PEFT adapter (--adapter),
// and teacher-forced NLL.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include <fmt/core.h>

#include "core/atomic_dir.hpp"
#include "core/check.hpp"
#include "experiment/cli.hpp"
#include "experiment/on_device.hpp"
#include "lora/lora_model.hpp"
#include "lora/peft_io.hpp"
#include "nn/generate.hpp"
#include "nn/llama.hpp"
#include "nn/model_io.hpp"
#include "nn/perplexity.hpp"
#include "nn/weight_of.hpp"
#include "quant/scheme_registry.hpp"

namespace loralab::experiments {

/// The model schemes and ggml's q4_0 / q4_1 / q8_0, for programs that take a GGUF base as it is (each scheme costs
/// a model's worth of compile time, so programs opt in: with_model<model_and_ggml_schemes>).
using model_and_ggml_schemes = quant::scheme_list_cat_t<quant::model_schemes, quant::ggml_schemes>;

/// The canonical scheme name (quant/scheme_registry.hpp) for --quant and --double-quant, refused with the list of
/// model schemes when it is not one: "nf4" + --double-quant -> "nf4-b64-dq", "none" -> "float32", "int8" -> "int8-row".
template <class Schemes = quant::model_schemes>
std::string model_scheme(const std::string& quant, bool double_quant) {
  const std::string name = quant::canonical_scheme_name(quant, double_quant);
  if (!Schemes::contains(name))
    fail("--quant: unknown scheme '", quant, "'", double_quant ? " with --double-quant" : "", "; known: ", Schemes::names(),
         " (or none, bf16, nf4, fp4, int8 with --double-quant for nf4/fp4)");
  return name;
}

/// Calls fn(std::type_identity<W>{}) with the frozen weight type of the scheme --quant names (model_scheme): the one
/// run-time switch over the compile-time weight types, through the scheme registry.
template <class Schemes = quant::model_schemes, class F>
void with_weight_type(const std::string& quant, bool double_quant, F&& fn) {
  quant::dispatch_scheme<Schemes>(model_scheme<Schemes>(quant, double_quant), [&]<class S>(std::type_identity<S>) {
    fn(std::type_identity<nn::weight_of_t<S>>{});
  });
}

/// The --tokenizer a program uses: the flag when given, else a GGUF --model's own tokenizer (empty `fallback`:
/// an error naming both flags; otherwise `fallback`, a program's default such as models/tok512.model).
inline std::string tokenizer_for(const std::string& tokenizer_path, const std::string& model_path, const std::string& fallback = "") {
  if (!tokenizer_path.empty()) return tokenizer_path;
  if (nn::is_gguf_file(model_path)) return model_path;
  LORALAB_CHECK(!fallback.empty(), "--tokenizer is required unless --model is a GGUF file, which carries its own (", model_path, ")");
  return fallback;
}

/// Calls fn(model) with the base built as --quant asks (see with_weight_type). Linears a GGUF file stored in the
/// scheme asked for (--quant q4_1 over a Q4_1 file) are its own blocks, not requantized (nn::make_linear_from_file).
template <class Schemes = quant::model_schemes, class F>
void with_model(const nn::model_file& file, const std::string& quant, bool double_quant, F&& fn) {
  with_weight_type<Schemes>(quant, double_quant, [&]<class W>(std::type_identity<W>) {
    auto m = nn::llama_model<nn::linear<W>>::from_file(file, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
      return nn::make_linear_from_file<W>(file, name, d, n, k);
    });
    fn(m);
  });
}

/// Calls fn(model) with a LoRA-ready model (no adapter attached yet) whose base is built as --quant asks.
template <class Schemes = quant::model_schemes, class F>
void with_lora_model(const nn::model_file& file, const std::string& quant, bool double_quant, F&& fn) {
  with_weight_type<Schemes>(quant, double_quant, [&]<class W>(std::type_identity<W>) {
    auto m = lora::make_lora_model<nn::linear<W>>(file, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
      return nn::make_linear_from_file<W>(file, name, d, n, k);
    });
    fn(m);
  });
}

/// "adapter DIR: r 8, alpha 16, 14 modules (q_proj,v_proj)", for the programs' headers.
template <class Base>
std::string describe_adapter(lora::lora_model<Base>& m, const std::filesystem::path& dir, const lora::loaded_adapter_config& c) {
  int modules = 0;
  lora::for_each_adapter(m, [&](const std::string&, auto&, auto&) { ++modules; });
  return "adapter " + dir.string() + ": r " + std::to_string(c.config.r) + ", alpha " + fmt::format("{}", c.config.alpha) +
         (c.config.use_rslora ? " (rsLoRA)" : "") + ", " + std::to_string(modules) + " modules (" + c.targets.describe() + ")";
}

/// The PEFT LoRA adapter in `adapter` (written by loralab or by PEFT) loaded over m's base, in eval mode (no dropout),
/// without gradient buffers; its description goes to stderr.
template <class Base>
void load_for_inference(lora::lora_model<Base>& m, const std::filesystem::path& adapter) {
  const auto cfg = lora::load_adapter(m, adapter);
  lora::set_adapter_mode(m, /*training=*/false, 0);
  lora::for_each_adapter(m, [](const std::string&, auto& a, auto&) { a.dA.resize(0, 0), a.dB.resize(0, 0); });  // inference only
  std::cerr << describe_adapter(m, adapter, cfg) << "\n";
}

/// As with_model, and when `adapter` is not empty, the PEFT LoRA adapter in that directory (written by loralab or
/// by PEFT) is loaded over the base and applied unmerged, in eval mode (no dropout). Its description goes to
/// stderr.
template <class Schemes = quant::model_schemes, class F>
void with_model(const nn::model_file& file, const std::string& quant, bool double_quant, const std::filesystem::path& adapter,
                F&& fn) {
  if (adapter.empty()) return with_model<Schemes>(file, quant, double_quant, std::forward<F>(fn));
  with_lora_model<Schemes>(file, quant, double_quant, [&](auto& m) {
    load_for_inference(m, adapter);
    fn(m);
  });
}

/// As with_model (with its --adapter) on the --device asked: "cpu" is with_model; "cuda" builds the LoRA-ready model
/// (the adapter loaded when given, none attached otherwise), moves it to the GPU (experiment::on_device) and calls fn
/// there: generation and scoring through the same kv_cache_decoder, the cache in device memory.
template <class Schemes = quant::model_schemes, class F>
void with_model_on(const std::string& device, const nn::model_file& file, const std::string& quant, bool double_quant,
                   const std::filesystem::path& adapter, F&& fn) {
  if (device == "cpu") return with_model<Schemes>(file, quant, double_quant, adapter, std::forward<F>(fn));
  with_lora_model<Schemes>(file, quant, double_quant, [&](auto& m) {
    if (!adapter.empty()) load_for_inference(m, adapter);
    experiment::on_device(m, device, fn);
  });
}

/// What adapter_config.json records as base_model_name_or_path, so that PEFT's AutoPeftModelForCausalLM finds
/// the base: an HF --model directory itself (absolute path); otherwise the base written as an HF directory to
/// `export_base` (empty: OUTPUT/base_model), reused when it already holds this very model; "none": --model as
/// given (PEFT cannot resolve a llama2.c file, and a note says so).
inline std::string base_model_record(const nn::model_file& file, const std::string& model_path, const std::string& export_base,
                                     const std::filesystem::path& output_dir) {
  namespace fs = std::filesystem;
  if (export_base == "none") {
    if (!fs::exists(fs::path(model_path) / "config.json"))
      std::cerr << "note: adapter_config.json will name " << model_path
                << ", which PEFT cannot load as a base (drop --export-base none to record an HF copy)\n";
    return model_path;
  }
  if (export_base.empty() && fs::is_directory(model_path) && fs::exists(fs::path(model_path) / "config.json"))
    return fs::absolute(model_path).lexically_normal().string();
  const fs::path dir = export_base.empty() ? output_dir / "base_model" : fs::path(export_base);
  if (!dist::group::world().is_root()) return fs::absolute(dir).lexically_normal().string();  // rank 0 writes it
  if (fs::exists(dir / "config.json")) {
    const nn::model_file existing = nn::read_hf_dir(dir);
    bool same = existing.config == file.config && existing.tensors.size() == file.tensors.size();
    for (const auto& [name, t] : file.tensors) {
      const auto it = existing.tensors.find(name);
      same = same && it != existing.tensors.end() && it->second.shape == t.shape && it->second.data == t.data;
    }
    LORALAB_CHECK(same, dir.string(), ": already holds a different model than ", model_path, "; choose another --export-base");
  } else {
    atomic_dir out(dir, /*overwrite=*/false);
    nn::write_hf_dir(file, out.path());
    out.commit();
    std::cerr << "base model written as an HF directory to " << dir.string() << "\n";
  }
  return fs::absolute(dir).lexically_normal().string();
}

/// Teacher-forced NLL lives in the library (nn/perplexity.hpp), so tests check what the programs print.
using nn::nll_result;
using nn::teacher_forced_nll;

}  // namespace loralab::experiments

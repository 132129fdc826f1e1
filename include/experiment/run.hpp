// SPDX-License-Identifier: MIT
#pragma once
// A run is a value. A run_spec says everything one fine-tuning run is (the base's scheme, the adapters, where they
// go, the training, checkpointing, whether anything is written); train_one() builds the base with that scheme from a
// model file, attaches the adapters, evaluates, trains, evaluates again and returns a run_result: parameter counts,
// storage census, planned memory, peak RSS, tokens/s, step times and losses, printable, as JSON or as a table row.
//
//   experiment::run_spec s;
//   s.scheme = "nf4-b64-dq";                    // any name of quant/scheme_registry.hpp (aliases: nf4+dq, f32, int8)
//   s.lora.r = 16, s.lora.alpha = 32;
//   s.targets = lora::parse_targets("q_proj,v_proj");
//   s.train.max_steps = 100;
//   const experiment::run_result r = experiment::train_one(file, data, s);
//   experiment::train_one<quant::model_schemes, 16>(file, data, s);   // rank fixed at compile time (s.lora.r == 16)
//   std::cout << r << "\n";                      // or r.to_json(), or a row of experiment/report.hpp's tables
//
// Nothing is written unless `output` names a directory (then: PEFT adapter, checkpoints, metrics.jsonl, run.json, as
// finetune writes them); nothing is printed unless `verbose`. The schemes a program can run are a compile-time list
// (each costs a model's worth of compile time): train_one<quant::model_schemes> by default, any scheme_list on request.
#include <cmath>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "data/dataset.hpp"
#include "lora/lora_model.hpp"
#include "lora/targets.hpp"
#include "nn/config.hpp"
#include "nn/gguf_model.hpp"
#include "nn/weight_of.hpp"
#include "quant/scheme_registry.hpp"
#include "train/console_log.hpp"
#include "train/run_files.hpp"
#include "train/trainer.hpp"
#include "experiment/on_device.hpp"

namespace loralab::experiment {

/// Gradient checkpointing of a run: `automatic` is PEFT's prepare_model_for_kbit_training — on for a base stored
/// in k bits (quantized, bf16), off for a dense float one.
enum class checkpointing { automatic, on, off };

inline std::string_view to_string(checkpointing c) {
  return c == checkpointing::on ? "on" : c == checkpointing::off ? "off" : "automatic";
}

struct run_spec {
  std::string label;              ///< the run's name in tables ("" : describe())
  std::string scheme = "float32"; ///< the base's storage: a scheme-registry name or alias (float32, nf4-b64-dq, int8-row, …)
  lora::lora_config lora;         ///< rank, alpha, dropout, rsLoRA, initialisation
  lora::target_spec targets = lora::parse_targets("all-linear");
  train::train_options train;     ///< learning rate, steps or epochs, optimizer, seed, …
  checkpointing gradient_checkpointing = checkpointing::automatic;
  std::filesystem::path output;   ///< empty: nothing written; else the run's directory (adapter, checkpoints, run.json)
  std::string base_model;         ///< with `output`: adapter_config.json's base_model_name_or_path
  bool verbose = false;           ///< print HF's log lines and the planned memory
  std::string device = "cpu";     ///< cpu or cuda: where the model trains (cuda: include/cuda/, float32 and 4-bit bases)

  /// Every field checked before any work; the scheme name against the registry's canonical names.
  void validate() const {
    lora.validate();
    train.validate();
    (void)quant::canonical_scheme_name(scheme);
    LORALAB_CHECK(is_device_name(device), "run_spec: device must be cpu or cuda, got '", device, "'");
  }
  /// "nf4-b64-dq r8 all-linear adamw seed 42"
  std::string describe() const {
    return fmt::format("{} r{} {} {} seed {}", quant::canonical_scheme_name(scheme), lora.r, targets.describe(), train.optim,
                       train.seed);
  }
  std::string name() const { return label.empty() ? describe() : label; }
};

/// What one run measured. The trainer's record (losses, step times, tokens/s, planned memory, peak RSS) is `train`.
struct run_result {
  run_spec spec;
  std::string scheme;              ///< canonical scheme name
  int adapted_modules = 0;
  lora::parameter_counts parameters;
  lora::storage_breakdown storage;  ///< frozen linears' bytes and bits/weight, dtype census
  bool gradient_checkpointing = false;
  double eval_before = NAN;         ///< validation loss of the base + zero adapters (NaN: no validation set)
  train::run_record train;

  double eval_after() const { return train.final_eval_loss; }
  /// Median wall time of the optimizer steps (less noisy than the mean on a shared machine).
  double median_step_seconds() const {
    std::vector<double> t = train.step_seconds;
    if (t.empty()) return NAN;
    std::sort(t.begin(), t.end());
    return 0.5 * (t[(t.size() - 1) / 2] + t[t.size() / 2]);
  }

  nlohmann::ordered_json to_json() const {
    const auto num = [](double x) { return std::isfinite(x) ? nlohmann::ordered_json(x) : nlohmann::ordered_json(nullptr); };
    const auto& m = train.memory;
    nlohmann::ordered_json j;
    j["label"] = spec.name();
    j["scheme"] = scheme;
    j["r"] = spec.lora.r, j["alpha"] = spec.lora.alpha, j["dropout"] = spec.lora.dropout, j["targets"] = spec.targets.describe();
    j["optimizer"] = spec.train.optim, j["lr"] = spec.train.lr, j["seed"] = spec.train.seed, j["device"] = spec.device;
    j["adapted_modules"] = adapted_modules;
    j["trainable_parameters"] = parameters.trainable, j["all_parameters"] = parameters.all;
    j["gradient_checkpointing"] = gradient_checkpointing;
    j["frozen_linears_bytes"] = storage.linear_bytes, j["linear_bits_per_weight"] = storage.linear_bits_per_weight();
    j["memory"] = {{"weights", m.weights},         {"quant_stats", m.quant_stats}, {"adapters", m.adapters},
                   {"grads", m.grads},             {"optimizer", m.optimizer},     {"activations", m.activations},
                   {"workspace", m.workspace},     {"total", m.total()}};
    j["planned_memory_bytes"] = m.total(), j["frozen_weights_bytes"] = m.weights + m.quant_stats;
    j["peak_rss_bytes"] = train.peak_rss_bytes;
    j["steps"] = train.steps, j["train_runtime"] = train.train_runtime, j["tokens_per_second"] = train.tokens_per_second;
    j["median_step_seconds"] = num(median_step_seconds());
    j["eval_loss_before"] = num(eval_before), j["eval_loss_after"] = num(eval_after());
    j["stopped_early"] = train.stopped_early, j["interrupted"] = train.interrupted;
    j["first_train_loss"] = num(train.step_losses.empty() ? NAN : train.step_losses.front());
    j["final_train_loss"] = num(train.step_losses.empty() ? NAN : train.step_losses.back());
    j["step_losses"] = train.step_losses;
    return j;
  }

  friend std::ostream& operator<<(std::ostream& os, const run_result& r) {
    return os << fmt::format("{}: {} modules, {} trainable of {} parameters; frozen linears {:.3f} MiB ({:.2f} bits/weight); "
                             "checkpointing {}; {} steps in {:.2f} s ({:.0f} tokens/s); planned {:.2f} MiB, peak RSS {:.1f} MiB; "
                             "eval loss {:.4f} -> {:.4f}",
                             r.spec.name(), r.adapted_modules, lora::with_commas(r.parameters.trainable),
                             lora::with_commas(r.parameters.all), double(r.storage.linear_bytes) / (1 << 20),
                             r.storage.linear_bits_per_weight(), r.gradient_checkpointing ? "on" : "off", r.train.steps,
                             r.train.train_runtime, r.train.tokens_per_second, double(r.train.memory.total()) / (1 << 20),
                             double(r.train.peak_rss_bytes) / (1 << 20), r.eval_before, r.eval_after());
  }
};

/// The run of `spec` on a LoRA-ready model whose base is already built (no adapter attached): the compile-time
/// path, for programs that fix the base type themselves.
template <class Model>
run_result train_model(Model& m, const data::prepared_dataset& data, const run_spec& spec) {
  spec.validate();
  run_result r;
  r.spec = spec;
  r.scheme = quant::canonical_scheme_name(spec.scheme);
  r.adapted_modules = lora::attach_adapters(m, spec.lora, spec.targets, spec.train.seed);
  switch (spec.gradient_checkpointing) {
    case checkpointing::automatic: lora::prepare_for_kbit_training(m); break;
    case checkpointing::on: m.gradient_checkpointing = true; break;
    case checkpointing::off: m.gradient_checkpointing = false; break;
  }
  r.gradient_checkpointing = m.gradient_checkpointing;
  r.parameters = lora::count_parameters(m);
  r.storage = lora::count_storage(m);
  if (data.val.size() > 0) r.eval_before = train::evaluate(m, data.val);
  train::trainer<Model> t(m, data, spec.train);
  std::optional<train::console_log<Model>> console;
  std::optional<train::run_files<Model>> files;
  if (spec.verbose) t.observe(console.emplace());
  if (!spec.output.empty()) t.observe(files.emplace(spec.output, spec.lora, spec.targets, spec.base_model));
  r.train = t.run();
  return r;
}

template <class S, int Rank>
run_result train_scheme(const nn::model_file& file, const data::prepared_dataset& data, const run_spec& spec);

/// Builds the base of `file` with spec.scheme (one of Schemes: an unknown name is an error listing them; a ggml scheme
/// over a GGUF that stored its linears so takes the file's blocks as they are, nn::make_linear_from_file), attaches
/// adapters, evaluates on data.val, trains on data.train, evaluates again. Rank fixes the adapters' rank at compile
/// time (lora::lora_linear<Base, Rank>); spec.lora.r must then equal it, or the run is refused before it starts.
template <class Schemes = quant::model_schemes, int Rank = lora::dynamic_rank>
run_result train_one(const nn::model_file& file, const data::prepared_dataset& data, const run_spec& spec) {
  spec.validate();
  LORALAB_CHECK(data.train.size() > 0, "train_one: the training set is empty");
  run_result r;
  quant::dispatch_scheme<Schemes>(quant::canonical_scheme_name(spec.scheme),
                                  [&]<class S>(std::type_identity<S>) { r = train_scheme<S, Rank>(file, data, spec); });
  return r;
}

/// train_one's run for the one scheme S (spec.scheme names it; train_one checked the rest). Not inline, on purpose:
/// experiment/prebuilt_runs.hpp declares it extern for model_schemes, so a program linking loralab_runs calls the
/// copy compiled once there instead of instantiating seven models and their trainers itself.
template <class S, int Rank>
run_result train_scheme(const nn::model_file& file, const data::prepared_dataset& data, const run_spec& spec) {
  using W = nn::weight_of_t<S>;
  auto m = lora::make_lora_model<nn::linear<W>, Rank>(file, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_linear_from_file<W>(file, name, d, n, k);  // a GGUF's own blocks when it stored them in S (q4_1)
  });
  run_result r;
  on_device(m, spec.device, [&](auto& model) { r = train_model(model, data, spec); });
  return r;
}

}  // namespace loralab::experiment

#ifdef LORALAB_PREBUILT_RUNS
#include "experiment/prebuilt_runs.hpp"  // IWYU pragma: export
#endif

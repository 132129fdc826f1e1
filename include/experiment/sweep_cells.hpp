// SPDX-License-Identifier: MIT
#pragma once
// A sweep's grid cells: (configuration, seed) pairs numbered c = configuration · seeds + seed index, the unit that
// ranks share (rank r runs c ≡ r mod N under mpirun: the cell, and so its seed, is the same whichever rank runs it)
// and that --resume skips when OUT/cells/cell-C.json holds its result.
//
// A cell's result travels and is kept as JSON (cell_to_json / cell_from_json): every measured field of run_result,
// numbers exactly (nlohmann writes the shortest text that reads back to the same double), NaN as null. The spec
// is not sent: every rank builds the same spec list, and the file keeps the spec's key to tell a stale cell from
// this sweep's (a cell file of another configuration is refused, naming the file and both keys).
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/read_file.hpp"
#include "experiment/run.hpp"
#include "io/json.hpp"

namespace loralab::experiment {

/// What makes two runs the same run: every field of the spec that changes its numbers.
inline std::string spec_key(const run_spec& s) {
  const auto& t = s.train;
  return fmt::format("{} | {} | alpha {} dropout {} rslora {} init {} | lr {} steps {} epochs {} ga {} clip {} wd {} sched {} warmup {} | "
                     "checkpointing {}",
                     s.name(), s.describe(), s.lora.alpha, s.lora.dropout, s.lora.use_rslora,
                     s.lora.init == lora::lora_init::gaussian ? "gaussian" : "kaiming_uniform", t.lr, t.max_steps, t.epochs, t.grad_accum,
                     t.max_grad_norm, t.weight_decay, train::to_string(t.scheduler), t.warmup_steps,
                     to_string(s.gradient_checkpointing)) +
         (s.device == "cpu" ? "" : " | device " + s.device);  // a CPU cell keeps the key it had before --device
}

namespace detail {
using ojson = nlohmann::ordered_json;
inline ojson number(double x) { return std::isfinite(x) ? ojson(x) : ojson(nullptr); }
template <class Json>
double number(const Json& j) {
  return j.is_null() ? NAN : j.template get<double>();
}
}  // namespace detail

/// Every measured field of `r` (not its spec).
inline nlohmann::ordered_json cell_to_json(const run_result& r) {
  using detail::number;
  detail::ojson j, t, mem, storage;
  const auto& m = r.train.memory;
  mem = {{"weights", m.weights}, {"quant_stats", m.quant_stats}, {"adapters", m.adapters}, {"grads", m.grads},
         {"optimizer", m.optimizer}, {"activations", m.activations}, {"workspace", m.workspace}};
  detail::ojson elements = detail::ojson::array();
  for (const auto& [dtype, n] : r.storage.elements) elements.push_back({dtype, n});
  storage = {{"elements", elements}, {"linear_weights", r.storage.linear_weights}, {"linear_bytes", r.storage.linear_bytes}};
  detail::ojson losses = detail::ojson::array(), history = detail::ojson::array();
  for (double l : r.train.step_losses) losses.push_back(number(l));
  for (const auto& e : r.train.history) history.push_back({{"step", e.step}, {"values", e.values}});
  t = {{"step_losses", losses}, {"step_seconds", r.train.step_seconds}, {"history", history},
       {"final_eval_loss", number(r.train.final_eval_loss)}, {"train_runtime", r.train.train_runtime},
       {"samples_per_second", r.train.samples_per_second}, {"steps_per_second", r.train.steps_per_second},
       {"tokens_per_second", r.train.tokens_per_second}, {"train_loss", number(r.train.train_loss)}, {"steps", r.train.steps},
       {"stopped_early", r.train.stopped_early}, {"interrupted", r.train.interrupted}, {"memory", mem},
       {"peak_rss_bytes", r.train.peak_rss_bytes}};
  j = {{"scheme", r.scheme}, {"adapted_modules", r.adapted_modules}, {"trainable", r.parameters.trainable},
       {"all", r.parameters.all}, {"storage", storage}, {"gradient_checkpointing", r.gradient_checkpointing},
       {"eval_before", number(r.eval_before)}, {"train", t}};
  return j;
}

/// The result of `spec` from cell_to_json's object (nlohmann::json or ordered_json); `where` names the file or rank in
/// errors.
template <class Json>
run_result cell_from_json(const Json& j, const run_spec& spec, const std::string& where) {
  using detail::number;
  try {
    run_result r;
    r.spec = spec;
    r.scheme = j.at("scheme").template get<std::string>();
    r.adapted_modules = io::json_integer<int>(j.at("adapted_modules"), where, "adapted_modules");
    r.parameters.trainable = io::json_integer<std::size_t>(j.at("trainable"), where, "trainable"), r.parameters.all = io::json_integer<std::size_t>(j.at("all"), where, "all");
    const auto& st = j.at("storage");
    for (const auto& e : st.at("elements")) r.storage.elements.emplace_back(e.at(0).template get<std::string>(), io::json_integer<std::size_t>(e.at(1), where, "storage.elements[][1]"));
    r.storage.linear_weights = io::json_integer<std::size_t>(st.at("linear_weights"), where, "linear_weights"), r.storage.linear_bytes = io::json_integer<std::size_t>(st.at("linear_bytes"), where, "linear_bytes");
    r.gradient_checkpointing = j.at("gradient_checkpointing").template get<bool>();
    r.eval_before = number(j.at("eval_before"));
    const auto& t = j.at("train");
    for (const auto& l : t.at("step_losses")) r.train.step_losses.push_back(number(l));
    r.train.step_seconds = t.at("step_seconds").template get<std::vector<double>>();
    for (const auto& e : t.at("history")) r.train.history.push_back({io::json_integer<int>(e.at("step"), where, "train.history[].step"), nlohmann::ordered_json(e.at("values"))});
    r.train.final_eval_loss = number(t.at("final_eval_loss"));
    r.train.train_runtime = t.at("train_runtime").template get<double>();
    r.train.samples_per_second = t.at("samples_per_second").template get<double>();
    r.train.steps_per_second = t.at("steps_per_second").template get<double>();
    r.train.tokens_per_second = t.at("tokens_per_second").template get<double>();
    r.train.train_loss = number(t.at("train_loss"));
    r.train.steps = io::json_integer<int>(t.at("steps"), where, "train.steps");
    r.train.stopped_early = t.at("stopped_early").template get<bool>(), r.train.interrupted = t.at("interrupted").template get<bool>();
    const auto& m = t.at("memory");
    auto& mem = r.train.memory;
    const auto bytes = [&](const char* k) { return io::json_integer<std::size_t>(m.at(k), where, k); };
    mem.weights = bytes("weights"), mem.quant_stats = bytes("quant_stats"), mem.adapters = bytes("adapters"), mem.grads = bytes("grads");
    mem.optimizer = bytes("optimizer"), mem.activations = bytes("activations"), mem.workspace = bytes("workspace");
    r.train.peak_rss_bytes = io::json_integer<std::size_t>(t.at("peak_rss_bytes"), where, "peak_rss_bytes");
    return r;
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not a run result as a sweep writes it (", e.what(), ")");
  }
}

/// OUT/cells/cell-C.json: {"key": spec_key, "seed": …, "result": cell_to_json}, written atomically when the cell ends.
inline std::filesystem::path cell_file(const std::filesystem::path& cells_dir, std::size_t cell) {
  return cells_dir / fmt::format("cell-{}.json", cell);
}

inline void save_cell(const std::filesystem::path& cells_dir, std::size_t cell, const run_result& r) {
  std::filesystem::create_directories(cells_dir);
  nlohmann::ordered_json j;
  j["key"] = spec_key(r.spec), j["seed"] = r.spec.train.seed, j["result"] = cell_to_json(r);
  atomic_file f(cell_file(cells_dir, cell));
  f.write(j.dump(1));
  f.commit();
}

/// The saved result of `cell` when its file exists (--resume); a file of another configuration or a damaged one
/// is an error naming it.
inline std::optional<run_result> load_cell(const std::filesystem::path& cells_dir, std::size_t cell, const run_spec& spec) {
  const std::filesystem::path path = cell_file(cells_dir, cell);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  const nlohmann::json j = io::parse_json(core::read_file(path, "sweep cell"), path.string());
  const std::string key = j.contains("key") && j["key"].is_string() ? j["key"].get<std::string>() : "(none)";
  LORALAB_CHECK(key == spec_key(spec), path.string(), ": holds the run '", key, "', but this sweep's cell ", cell, " is '",
                spec_key(spec), "': another configuration wrote it; remove OUT/cells or use another --output-dir");
  LORALAB_CHECK(j.contains("result"), path.string(), ": no \"result\"");
  return cell_from_json(j["result"], spec, path.string());
}

}  // namespace loralab::experiment

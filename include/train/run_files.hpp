// SPDX-License-Identifier: MIT
#pragma once
// A trainer observer that keeps a run on disk, as HF Trainer lays out output_dir:
//   OUTPUT/adapter_config.json, adapter_model.safetensors   the final adapter (PEFT's files; not after an interrupt)
//   OUTPUT/checkpoint-N/                                    adapter + optimizer.safetensors + trainer_state.json
//   OUTPUT/best/                                            the best adapter while early stopping is on
//   OUTPUT/metrics.jsonl                                    one JSON line per log or eval event
//   OUTPUT/run.json                                         the run's settings, memory, speed and losses
// and resume_latest() continues a run from the newest complete checkpoint. trainer_state.json is written last:
// its presence marks a complete checkpoint, so a run killed while saving resumes from the previous one.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/safetensors.hpp"
#include "lora/peft_io.hpp"
#include "train/trainer.hpp"

namespace loralab::train {

namespace detail {
inline void write_json_atomic(const std::filesystem::path& path, const nlohmann::ordered_json& j) {
  atomic_file f(path);
  f.write(j.dump(2));
  f.commit();
}
inline nlohmann::ordered_json history_json(const std::vector<log_event>& history) {
  nlohmann::ordered_json hist = nlohmann::ordered_json::array();
  for (const auto& e : history) {
    nlohmann::ordered_json x = e.values;
    x["step"] = e.step;
    hist.push_back(x);
  }
  return hist;
}
}  // namespace detail

/// The newest OUTPUT/checkpoint-N with a trainer_state.json, or empty.
inline std::filesystem::path latest_checkpoint(const std::filesystem::path& output_dir) {
  std::filesystem::path best;
  int best_step = -1;
  if (!std::filesystem::is_directory(output_dir)) return best;
  const std::regex re("checkpoint-([0-9]+)");
  for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re) && m[1].length() < 9 &&
        std::filesystem::exists(e.path() / "trainer_state.json") && std::stoi(m[1]) > best_step)
      best_step = std::stoi(m[1]), best = e.path();
  }
  return best;
}

template <class Model>
class run_files final : public train_observer<Model> {
 public:
  /// `lora` and `targets` go into every adapter_config.json, with `base_model` as base_model_name_or_path.
  run_files(std::filesystem::path output_dir, lora::lora_config lora, lora::target_spec targets, std::string base_model)
      : dir_(std::move(output_dir)), lora_(lora), targets_(std::move(targets)), base_model_(std::move(base_model)) {}

  const std::filesystem::path& output_dir() const { return dir_; }

  void on_begin(trainer<Model>&, int start_step) override {
    std::filesystem::create_directories(dir_);
    metrics_.open(dir_ / "metrics.jsonl", start_step > 0 ? std::ios::app : std::ios::trunc);
    LORALAB_CHECK(metrics_.good(), (dir_ / "metrics.jsonl").string(), ": cannot be opened for writing");
  }
  void on_log(trainer<Model>&, const log_event& e) override {
    nlohmann::ordered_json line;
    line["step"] = e.step;
    for (auto it = e.values.begin(); it != e.values.end(); ++it) line[it.key()] = it.value();
    metrics_ << line.dump() << "\n" << std::flush;
  }
  void on_best(trainer<Model>& t) override { save_adapter(t, dir_ / "best"); }
  void on_checkpoint(trainer<Model>& t, const trainer_state& s) override {
    const auto dir = dir_ / ("checkpoint-" + std::to_string(s.global_step));
    save_adapter(t, dir);
    const state_dict_t state = t.opt().state_dict();  // the writer keeps views of these bytes until write()
    io::safetensors_writer w;
    for (const auto& [name, bytes] : state) w.add<std::uint8_t>(name, {std::int64_t(bytes.size())}, bytes);
    w.write(dir / "optimizer.safetensors");
    nlohmann::ordered_json j;
    j["global_step"] = s.global_step;
    j["epoch"] = s.epoch;
    j["best_eval_loss"] = std::isfinite(s.best_eval_loss) ? nlohmann::ordered_json(s.best_eval_loss) : nlohmann::ordered_json(nullptr);
    j["bad_evals"] = s.bad_evals;
    j["seed"] = s.seed;
    j["step_losses"] = s.step_losses;
    j["log_history"] = detail::history_json(s.history);
    detail::write_json_atomic(dir / "trainer_state.json", j);  // last: its presence marks a complete checkpoint
  }
  void on_end(trainer<Model>& t, const run_record& rec, const nlohmann::ordered_json& summary) override {
    if (!rec.interrupted) save_adapter(t, dir_);
    write_run_json(t, rec, summary);
  }

 private:
  void save_adapter(trainer<Model>& t, const std::filesystem::path& dir) const {
    lora::save_adapter(t.model(), dir, lora_, targets_, base_model_);
  }

  void write_run_json(trainer<Model>& t, const run_record& rec, const nlohmann::ordered_json& summary) const {
    const train_options& o = t.options();
    nlohmann::ordered_json j;
    std::ostringstream lc, mem;
    lc << lora_;
    mem << rec.memory;
    j["lora"] = lc.str();
    j["targets"] = targets_.describe();
    j["base_model"] = base_model_;
    j["optimizer"] = t.opt().describe();
    j["lr"] = o.lr, j["scheduler"] = std::string(to_string(o.scheduler)), j["warmup_steps"] = o.warmup_steps;
    j["total_steps"] = t.total_steps(), j["grad_accum"] = o.grad_accum, j["batch_size"] = t.data().train.batch_size();
    j["max_grad_norm"] = o.max_grad_norm, j["seed"] = o.seed;
    j["memory"] = {{"weights", rec.memory.weights},     {"quant_stats", rec.memory.quant_stats},
                   {"adapters", rec.memory.adapters},   {"grads", rec.memory.grads},
                   {"optimizer", rec.memory.optimizer}, {"activations", rec.memory.activations},
                   {"workspace", rec.memory.workspace}, {"total", rec.memory.total()},
                   {"text", mem.str()}};
    j["peak_rss_bytes"] = rec.peak_rss_bytes;
    j["summary"] = summary;
    j["tokens_per_second"] = rec.tokens_per_second;
    j["final_eval_loss"] = std::isfinite(rec.final_eval_loss) ? nlohmann::ordered_json(rec.final_eval_loss) : nlohmann::ordered_json(nullptr);
    j["step_losses"] = rec.step_losses;
    j["stopped_early"] = rec.stopped_early, j["interrupted"] = rec.interrupted;
    detail::write_json_atomic(dir_ / "run.json", j);
  }

  std::filesystem::path dir_;
  lora::lora_config lora_;
  lora::target_spec targets_;
  std::string base_model_;
  std::ofstream metrics_;
};

/// Continues `t` from the newest complete checkpoint in `output_dir`: its adapters are loaded into the model, the
/// optimizer and trainer state restored. Returns the step it continues from (0: no checkpoint, a fresh start); says
/// which on `log` when given. A checkpoint saved with another seed is refused: the rest would not be the same run.
template <class Model>
int resume_latest(trainer<Model>& t, const std::filesystem::path& output_dir, std::ostream* log = &std::cout) {
  const auto dir = latest_checkpoint(output_dir);
  if (dir.empty()) {
    if (log) *log << "resume: no checkpoint in " << output_dir << ", starting from step 0\n";
    return 0;
  }
  lora::load_adapter(t.model(), dir);
  const auto f = io::safetensors_file::open(dir / "optimizer.safetensors");
  state_dict_t sd;
  for (const auto& x : f.tensors()) sd[x.name] = x.to_vector<std::uint8_t>();
  const std::string where = (dir / "trainer_state.json").string();
  std::ifstream in(dir / "trainer_state.json");
  const auto j = nlohmann::json::parse(in, nullptr, false);
  LORALAB_CHECK(j.is_object() && j.contains("global_step"), where, ": not a trainer state");
  trainer_state s;
  try {
    s.global_step = j.at("global_step").get<int>();
    s.epoch = j.at("epoch").get<double>();
    s.seed = j.at("seed").get<std::uint64_t>();
    s.step_losses = j.at("step_losses").get<std::vector<double>>();
    for (const auto& e : j.at("log_history")) {
      nlohmann::ordered_json v = e;
      const int step = v.at("step").get<int>();
      v.erase("step");
      s.history.push_back({step, v});
    }
    if (!j.at("best_eval_loss").is_null()) s.best_eval_loss = j.at("best_eval_loss").get<double>();
    s.bad_evals = j.at("bad_evals").get<int>();
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": malformed trainer state (", e.what(), ")");
  }
  LORALAB_CHECK(s.global_step >= 0 && std::size_t(s.global_step) == s.step_losses.size(), where, ": global_step ",
                s.global_step, " does not match its ", s.step_losses.size(), " step losses");
  try {
    t.restore(s, sd);
  } catch (const loralab::error& e) {
    fail(where, ": ", e.what());
  }
  if (log) *log << "resume: continuing from " << dir << " (step " << s.global_step << ")\n";
  return s.global_step;
}

}  // namespace loralab::train

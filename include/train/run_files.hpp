// SPDX-License-Identifier: MIT
#pragma once
// A trainer observer that keeps a run on disk, as HF Trainer lays out output_dir:
//   OUTPUT/adapter_config.json, adapter_model.safetensors   the final adapter (PEFT's files; not after an interrupt)
//   OUTPUT/checkpoint-N/                                    adapter + optimizer.safetensors + trainer_state.json
//   OUTPUT/best/                                            the best adapter while early stopping is on
//   OUTPUT/metrics.jsonl                                    one JSON line per log or eval event
//   OUTPUT/run.json                                         the run's settings, memory, speed and losses
// and resume_latest() continues a run from the newest checkpoint, resume_from() from a named one. A checkpoint is
// written into a hidden partial directory, its integrity record (manifest.json, train/checkpoint_files.hpp) last,
// then renamed into place: a run killed or out of disk space while saving leaves the previous checkpoints as they
// were and nothing named checkpoint-N. Resuming verifies the checkpoint first and names a damaged file; it falls
// back to an older checkpoint only when that one is named (resume_from), never by itself.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/atomic_dir.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/read_file.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "lora/peft_io.hpp"
#include "train/checkpoint_files.hpp"
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

template <class Model>
class run_files final : public train_observer<Model> {
 public:
  /// `lora` and `targets` go into every adapter_config.json, with `base_model` as base_model_name_or_path.
  run_files(std::filesystem::path output_dir, lora::lora_config lora, lora::target_spec targets, std::string base_model)
      : dir_(std::move(output_dir)), lora_(lora), targets_(std::move(targets)), base_model_(std::move(base_model)) {}

  const std::filesystem::path& output_dir() const { return dir_; }

  void on_begin(trainer<Model>&, int start_step) override {
    std::filesystem::create_directories(dir_);
    remove_stale_partials(dir_);
    if (start_step > 0) metrics_up_to(dir_ / "metrics.jsonl", start_step);  // a killed run's lines past its checkpoint
    metrics_.open(dir_ / "metrics.jsonl", start_step > 0 ? std::ios::app : std::ios::trunc);
    LORALAB_CHECK(metrics_.good(), (dir_ / "metrics.jsonl").string(), ": cannot be opened for writing");
  }
  void on_log(trainer<Model>&, const log_event& e) override {
    nlohmann::ordered_json line;
    line["step"] = e.step;
    for (auto it = e.values.begin(); it != e.values.end(); ++it) line[it.key()] = it.value();
    metrics_ << line.dump() << "\n" << std::flush;
    LORALAB_CHECK(metrics_.good(), (dir_ / "metrics.jsonl").string(), ": write failed at step ", e.step,
                  " (disk full or file size limit?); the run stopped");
  }
  void on_best(trainer<Model>& t) override {
    atomic_dir d(dir_ / "best", true);
    save_adapter(t, d.path());
    d.commit();
  }
  void on_checkpoint(trainer<Model>& t, const trainer_state& s) override {
    const std::string name = "checkpoint-" + std::to_string(s.global_step);
    try {
      write_checkpoint(t, s, dir_ / name);
    } catch (const std::exception& e) {  // the partial directory is gone: the older checkpoints are as they were
      const auto prev = latest_checkpoint(dir_);
      fail("step ", s.global_step, ": ", name, " could not be saved: ", e.what(), "; the run stopped. ",
           prev.empty() ? std::string("No checkpoint is saved yet") : "The newest complete checkpoint is " + prev.string() +
                                                                          " (--resume continues from it)");
    }
  }
  void on_end(trainer<Model>& t, const run_record& rec, const nlohmann::ordered_json& summary) override {
    if (!rec.interrupted) save_adapter(t, dir_);
    write_run_json(t, rec, summary);
  }

 private:
  void save_adapter(trainer<Model>& t, const std::filesystem::path& dir) const {
    lora::save_adapter(t.model(), dir, lora_, targets_, base_model_);
  }

  /// adapter + optimizer.safetensors + trainer_state.json + manifest.json (last) into a partial directory, then
  /// renamed to `target` (replacing one of the same step, from a run resumed before it).
  void write_checkpoint(trainer<Model>& t, const trainer_state& s, const std::filesystem::path& target) const {
    atomic_dir d(target, true);
    const auto dir = d.path();
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
    detail::write_json_atomic(dir / "trainer_state.json", j);
    write_manifest(dir);  // last: the integrity record of everything above
    d.commit();
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

/// Continues `t` from checkpoint directory `dir`: verified against its manifest.json first (a damaged file is named;
/// a checkpoint without one, from an older loralab, is used with a warning on `log`), then its adapters are loaded
/// into the model (refused when not finite), the optimizer state (refused when not finite) and trainer state
/// restored. Returns the step it continues from. A checkpoint saved with another seed is refused: the rest would
/// not be the same run.
template <class Model>
int resume_from(trainer<Model>& t, const std::filesystem::path& dir, std::ostream* log = &std::cout) {
  const std::string note = verify_checkpoint(dir, true);
  if (!note.empty() && log) *log << "resume: warning: " << note << "\n";
  const std::string where = (dir / "trainer_state.json").string();
  const nlohmann::json j = io::parse_json(core::read_file(dir / "trainer_state.json", "trainer state"), where);
  LORALAB_CHECK(j.is_object() && j.contains("global_step"), where, ": not a trainer state");
  trainer_state s;
  try {
    s.global_step = io::json_integer<int>(j.at("global_step"), where, "global_step");
    s.epoch = j.at("epoch").get<double>();
    s.seed = io::json_integer<std::uint64_t>(j.at("seed"), where, "seed");
    s.step_losses = j.at("step_losses").get<std::vector<double>>();
    for (const auto& e : j.at("log_history")) {
      nlohmann::ordered_json v = e;
      const int step = io::json_integer<int>(v.at("step"), where, "log_history[].step");
      v.erase("step");
      s.history.push_back({step, v});
    }
    if (!j.at("best_eval_loss").is_null()) s.best_eval_loss = j.at("best_eval_loss").get<double>();
    s.bad_evals = io::json_integer<int>(j.at("bad_evals"), where, "bad_evals");
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": malformed trainer state (", e.what(), ")");
  }
  LORALAB_CHECK(s.global_step >= 0 && std::size_t(s.global_step) == s.step_losses.size(), where, ": global_step ",
                s.global_step, " does not match its ", s.step_losses.size(), " step losses");
  LORALAB_CHECK(s.seed == t.options().seed, where, ": the checkpoint was saved with --seed ", s.seed, ", resumed with --seed ",
                t.options().seed, ": the rest would not be the same run");
  lora::load_adapter(t.model(), dir);
  for (const param_ref& p : adapter_parameters(t.model()))
    if (const auto bad = detail::first_non_finite(p.value, p.size); bad.index >= 0)
      fail((dir / "adapter_model.safetensors").string(), ": tensor '", p.name, "' holds ", bad.what, " at element ", bad.index,
           "; not resuming from non-finite weights");
  const auto opt_path = dir / "optimizer.safetensors";
  const auto f = io::safetensors_file::open(opt_path);
  state_dict_t sd;
  for (const auto& x : f.tensors()) sd[x.name] = x.to_vector<std::uint8_t>();
  try {
    t.restore(s, sd);
  } catch (const loralab::error& e) {
    fail(opt_path.string(), ": ", e.what());
  }
  if (log) *log << "resume: continuing from " << dir << " (step " << s.global_step << ")" << std::endl;  // shown before a kill
  return s.global_step;
}

/// Continues `t` from the newest checkpoint in `output_dir` (0: none, a fresh start; says which on `log`). A newest
/// checkpoint that fails verification stops the run with the bad file named and the newest intact one suggested for
/// resume_from (--resume-from): an older checkpoint is never taken silently.
template <class Model>
int resume_latest(trainer<Model>& t, const std::filesystem::path& output_dir, std::ostream* log = &std::cout) {
  const auto all = list_checkpoints(output_dir);
  if (all.empty()) {
    if (log) *log << "resume: no checkpoint in " << output_dir << ", starting from step 0" << std::endl;
    return 0;
  }
  try {
    verify_checkpoint(all.front().second);
  } catch (const loralab::error& e) {
    std::string intact;
    for (std::size_t i = 1; i < all.size() && intact.empty(); ++i) try {
        verify_checkpoint(all[i].second);
        intact = all[i].second.string();
      } catch (const loralab::error&) {
      }
    fail(e.what(), "; not resuming from a damaged checkpoint. ",
         intact.empty() ? std::string("No older checkpoint in ") + output_dir.string() + " is intact either"
                        : "The newest intact checkpoint is " + intact + ": pass --resume-from " + intact + " to continue from it");
  }
  return resume_from(t, all.front().second, log);
}

}  // namespace loralab::train

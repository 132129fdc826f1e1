// SPDX-License-Identifier: MIT
#pragma once
// The training loop of HF Trainer, for LoRA adapters on a lora_model (dense or quantized base):
//   per optimizer step: GA micro-batches (loss = token mean over the whole window), clip the global grad norm
//   (pre-clip norm logged), optimizer step at lr_at(step), zero grads; log {'loss', 'grad_norm',
//   'learning_rate', 'epoch'} every logging_steps (loss = mean over the steps since the last log, rounded to 4);
//   eval loss every eval_steps with early stopping; checkpoints every save_steps in OUTPUT/checkpoint-N/
//   (PEFT adapter + optimizer state + trainer state); resume continues bit-identically, because batches and
//   dropout masks are pure functions of (seed, step). SIGINT saves a checkpoint and stops; a NaN/Inf loss stops
//   with a clear message and leaves the last good checkpoint alone.
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "io/python_float.hpp"
#include "io/safetensors.hpp"
#include "lora/dataset.hpp"
#include "lora/lora_model.hpp"
#include "lora/lr_schedule.hpp"
#include "lora/optimizer.hpp"
#include "lora/peft_io.hpp"

namespace loralab::lora {

struct train_options {
  double lr = 2e-4;
  schedule_kind scheduler = schedule_kind::linear;
  int warmup_steps = 0;
  int max_steps = 0;       ///< > 0: exactly this many optimizer steps; else from epochs
  double epochs = 1;
  int grad_accum = 1;
  double max_grad_norm = 1.0;
  std::string optim = "adamw";
  double weight_decay = 0;
  int logging_steps = 10;
  int eval_steps = 0;      ///< 0: evaluate only at the end (when there is a validation set)
  int save_steps = 0;      ///< 0: no intermediate checkpoints
  /// Evaluations without improvement before stopping (0: never). As HF's EarlyStoppingCallback, which requires
  /// load_best_model_at_end: the best adapter is kept in OUTPUT/best/ and is the final adapter of a stopped run.
  int early_stopping_patience = 0;
  std::filesystem::path output_dir = "results/finetune";
  std::uint64_t seed = 42;
  bool resume = false;
  bool quiet = false;      ///< no per-step output (tests)
  int stop_after_steps = 0;  ///< > 0: stop (with a checkpoint) after this many steps of this run: interrupt tests

  void validate() const {
    LORALAB_CHECK(lr > 0 && std::isfinite(lr), "--lr must be a finite value > 0, got ", lr);
    LORALAB_CHECK(warmup_steps >= 0, "--warmup-steps must be >= 0, got ", warmup_steps);
    LORALAB_CHECK(grad_accum >= 1, "--grad-accum must be >= 1, got ", grad_accum);
    LORALAB_CHECK(max_steps > 0 || epochs > 0, "--max-steps or --epochs must be > 0");
    LORALAB_CHECK(logging_steps >= 1, "--logging-steps must be >= 1, got ", logging_steps);
    LORALAB_CHECK(eval_steps >= 0 && save_steps >= 0, "--eval-steps and --save-steps must be >= 0");
    LORALAB_CHECK(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
    (void)parse_optimizer_kind(optim);
  }
};

/// One log or eval event, as HF Trainer's log_history holds it.
struct log_event {
  int step = 0;
  nlohmann::ordered_json values;
};

/// What a run produced: experiments turn it into tables, CSV/JSON and plots.
struct run_record {
  std::vector<double> step_losses;  ///< training loss of every optimizer step (token mean over its window)
  std::vector<double> step_seconds; ///< wall time of each optimizer step this run took (forward to optimizer update)
  std::vector<log_event> history;
  double final_eval_loss = NAN;
  double train_runtime = 0, samples_per_second = 0, steps_per_second = 0, tokens_per_second = 0, train_loss = 0;
  int steps = 0;
  bool stopped_early = false, interrupted = false;
  nn::memory_report memory;
  std::size_t peak_rss_bytes = 0;  ///< this run's peak resident memory (the process's, where Linux can't reset it)
};

namespace detail {
inline std::atomic<bool> sigint_seen{false};
extern "C" inline void on_sigint(int) { sigint_seen = true; }

/// The run's own peak resident memory: Linux resets the high-water mark VmHWM when "5" is written to
/// /proc/self/clear_refs, so a program that trains several times does not pass one run's peak on to the next.
/// Where the reset is refused, VmHWM is the process's peak; without /proc, ru_maxrss (the same).
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }
inline std::size_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::size_t(std::stoull(line.substr(6))) * 1024;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return std::size_t(u.ru_maxrss) * 1024;
}

/// HF's printed dict: {'loss': 2.3456, 'learning_rate': 0.0002, 'epoch': 0.5}
inline std::string python_dict(const nlohmann::ordered_json& j) {
  std::string s = "{";
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it != j.begin()) s += ", ";
    s += "'" + it.key() + "': ";
    s += it->is_number_integer() ? std::to_string(it->get<long long>()) : io::python_float_repr(it->get<double>());
  }
  return s + "}";
}

inline void write_json_atomic(const std::filesystem::path& path, const nlohmann::ordered_json& j) {
  atomic_file f(path);
  f.write(j.dump(2));
  f.commit();
}

inline double round4(double x) { return std::round(x * 1e4) / 1e4; }
}  // namespace detail

/// The adapters' trainable parameters, named as PEFT saves them.
template <class Base>
std::vector<param_ref> adapter_parameters(lora_model<Base>& m) {
  static_assert(std::same_as<typename Base::scalar, float>, "the trainer works on float models");
  std::vector<param_ref> params;
  for_each_adapter(m, [&](const std::string& key, auto& a, auto&) {
    params.push_back({key + ".lora_A.weight", a.A.data(), a.dA.data(), std::size_t(a.A.size()), true});
    params.push_back({key + ".lora_B.weight", a.B.data(), a.dB.data(), std::size_t(a.B.size()), true});
  });
  return params;
}

/// Token-mean loss over every batch of `loader` with adapters in eval mode (no dropout).
template <class Base>
double evaluate(lora_model<Base>& m, const batch_loader& loader) {
  set_adapter_mode(m, false, 0);
  double sum = 0;
  long long count = 0;
  for (int i = 0; i < loader.num_batches(); ++i) {
    const batch b = loader.batch_at(0, i);
    m.forward(b.tokens, b.B, b.T);
    sum += m.loss(b.targets, 1.0);  // denominator 1: the sum over the batch's targets
    count += b.trainable_tokens;
  }
  return sum / double(count);
}

/// The newest OUTPUT/checkpoint-N, or empty.
inline std::filesystem::path latest_checkpoint(const std::filesystem::path& output_dir) {
  std::filesystem::path best;
  int best_step = -1;
  if (!std::filesystem::is_directory(output_dir)) return best;
  const std::regex re("checkpoint-([0-9]+)");
  for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re) && std::filesystem::exists(e.path() / "trainer_state.json") &&
        std::stoi(m[1]) > best_step)
      best_step = std::stoi(m[1]), best = e.path();
  }
  return best;
}

template <class Base>
class trainer {
 public:
  trainer(lora_model<Base>& m, prepared_dataset& data, lora_config lcfg, target_spec targets, train_options o,
          std::string base_model)
      : m_(m), data_(data), lcfg_(lcfg), targets_(std::move(targets)), o_(std::move(o)), base_model_(std::move(base_model)) {
    o_.validate();
    LORALAB_CHECK(data_.train.size() > 0, "the training set is empty");
    const long long per_epoch = (data_.train.num_batches() + o_.grad_accum - 1) / o_.grad_accum;
    total_ = o_.max_steps > 0 ? o_.max_steps : int(std::ceil(o_.epochs * double(per_epoch)));
    sched_ = lr_schedule{o_.scheduler, o_.lr, o_.warmup_steps, total_};
    sched_.validate();
    opt_ = make_optimizer(o_.optim, o_.weight_decay);
    params_ = adapter_parameters(m_);
    LORALAB_CHECK(!params_.empty(), "no adapter is attached: nothing to train");
  }

  int total_steps() const { return total_; }

  /// The memory a step will hold (adapters, grads, activations, workspace, optimizer), before step 0.
  nn::memory_report planned_memory() const {
    nn::memory_report r = m_.planned_memory(data_.train.batch_size(), max_T());
    r.optimizer = opt_->planned_state_bytes(params_);
    return r;
  }

  run_record run() {
    run_record rec;
    int start = 0;
    if (o_.resume) start = restore(rec);
    std::filesystem::create_directories(o_.output_dir);
    metrics_.open(o_.output_dir / "metrics.jsonl", start > 0 ? std::ios::app : std::ios::trunc);
    rec.memory = planned_memory();
    if (!o_.quiet) std::cout << rec.memory << "\n";
    detail::reset_peak_rss();
    detail::sigint_seen = false;
    auto previous = std::signal(SIGINT, detail::on_sigint);
    const bool tty = isatty(STDOUT_FILENO) && !o_.quiet;
    const auto t0 = std::chrono::steady_clock::now();
    long long tokens = 0, samples = 0;
    double since_log = 0;
    int logged_at = start;
    for (int step = start; step < total_; ++step) {
      const auto s0 = std::chrono::steady_clock::now();
      const double loss = train_step(step, tokens, samples);
      rec.step_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
      if (!std::isfinite(loss))
        fail("loss is ", std::isnan(loss) ? "NaN" : loss > 0 ? "+Inf" : "-Inf", " at step ", step + 1, ": training stopped; the last good checkpoint is kept (",
             latest_checkpoint(o_.output_dir).empty() ? std::string("none saved yet") : latest_checkpoint(o_.output_dir).string(), ")");
      rec.step_losses.push_back(loss);
      since_log += loss;
      const int done = step + 1;
      rec.steps = done;
      if (done % o_.logging_steps == 0 || done == total_) {
        nlohmann::ordered_json j;
        j["loss"] = detail::round4(since_log / (done - logged_at));
        j["grad_norm"] = last_grad_norm_;
        j["learning_rate"] = sched_.lr_at(done + 1);
        j["epoch"] = epoch_at(done);
        log(rec, done, j);
        since_log = 0, logged_at = done;
      }
      if (data_.val.size() > 0 && o_.eval_steps > 0 && done % o_.eval_steps == 0 && done != total_) {
        if (eval_and_check_stop(rec, done)) {
          rec.stopped_early = true;
          save_checkpoint(done, rec);
          break;
        }
      }
      if (tty) std::printf("\r[%d/%d] loss %.4f", done, total_, loss), std::fflush(stdout);
      const bool interrupt = detail::sigint_seen || (o_.stop_after_steps > 0 && done - start >= o_.stop_after_steps);
      if ((o_.save_steps > 0 && done % o_.save_steps == 0) || interrupt) save_checkpoint(done, rec);
      if (interrupt) {
        rec.interrupted = true;
        if (!o_.quiet) std::cout << "\ninterrupted at step " << done << ": checkpoint saved\n";
        break;
      }
    }
    std::signal(SIGINT, previous);
    if (tty) std::printf("\n");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rec.stopped_early) {  // load_best_model_at_end: the adapter of the best evaluation, as HF does
      load_adapter(m_, o_.output_dir / "best");
      rec.final_eval_loss = best_eval_;
      if (!o_.quiet) std::cout << "early stopping: the final adapter is the best one (eval_loss " << best_eval_ << ")\n";
      save_adapter(m_, o_.output_dir, lcfg_, targets_, base_model_);
    } else if (!rec.interrupted) {
      if (data_.val.size() > 0) {
        rec.final_eval_loss = evaluate(m_, data_.val);
        nlohmann::ordered_json j;
        j["eval_loss"] = rec.final_eval_loss;
        j["epoch"] = epoch_at(rec.steps);
        log(rec, rec.steps, j);
      }
      save_adapter(m_, o_.output_dir, lcfg_, targets_, base_model_);
    }
    const int steps_run = rec.steps - start;
    rec.train_runtime = secs;
    rec.steps_per_second = steps_run / secs;
    rec.samples_per_second = double(samples) / secs;
    rec.tokens_per_second = double(tokens) / secs;
    double sum = 0;
    for (double l : rec.step_losses) sum += l;
    rec.train_loss = rec.step_losses.empty() ? 0 : sum / double(rec.step_losses.size());
    rec.peak_rss_bytes = detail::peak_rss_bytes();
    nlohmann::ordered_json summary;
    summary["train_runtime"] = detail::round4(secs);
    summary["train_samples_per_second"] = detail::round4(rec.samples_per_second);
    summary["train_steps_per_second"] = detail::round4(rec.steps_per_second);
    summary["train_loss"] = rec.train_loss;
    summary["epoch"] = epoch_at(rec.steps);
    if (!o_.quiet) std::cout << detail::python_dict(summary) << "\n";
    write_run_json(rec, summary);
    return rec;
  }

 private:
  int max_T() const {
    int T = 0;
    for (const auto& r : data_.train.rows()) T = std::max(T, int(r.input_ids.size()));
    return T;
  }

  double epoch_at(int step) const {
    return double(step) * o_.grad_accum / double(data_.train.num_batches());
  }

  /// One optimizer step: GA micro-batches number step·GA … step·GA + GA − 1 of the endless epoch sequence.
  double train_step(int step, long long& tokens, long long& samples) {
    const int nb = data_.train.num_batches();
    std::vector<batch> window;
    double count = 0;
    for (int k = 0; k < o_.grad_accum; ++k) {
      const long long micro = (long long)step * o_.grad_accum + k;
      window.push_back(data_.train.batch_at(int(micro / nb), int(micro % nb)));
      count += window.back().trainable_tokens;
    }
    for (auto& p : params_) std::fill(p.grad, p.grad + p.size, 0.0f);
    double loss = 0;
    for (int k = 0; k < o_.grad_accum; ++k) {
      const batch& b = window[std::size_t(k)];
      set_adapter_mode(m_, true, o_.seed * 1000003ull + std::uint64_t(step) * 1009ull + std::uint64_t(k));
      m_.forward(b.tokens, b.B, b.T);
      loss += m_.loss(b.targets, count);
      m_.backward();
      tokens += (long long)b.B * b.T, samples += b.B;
    }
    if (!std::isfinite(loss)) return loss;
    last_grad_norm_ = clip_grad_norm(params_, o_.max_grad_norm);
    opt_->step(params_, sched_.lr_at(step + 1));
    return loss;
  }

  bool eval_and_check_stop(run_record& rec, int done) {
    const double l = evaluate(m_, data_.val);
    nlohmann::ordered_json j;
    j["eval_loss"] = l;
    j["epoch"] = epoch_at(done);
    log(rec, done, j);
    if (l < best_eval_) {
      best_eval_ = l, bad_evals_ = 0;
      if (o_.early_stopping_patience > 0) save_adapter(m_, o_.output_dir / "best", lcfg_, targets_, base_model_);
    } else {
      ++bad_evals_;
    }
    return o_.early_stopping_patience > 0 && bad_evals_ >= o_.early_stopping_patience;
  }

  void log(run_record& rec, int step, const nlohmann::ordered_json& values) {
    rec.history.push_back({step, values});
    if (!o_.quiet) std::cout << (isatty(STDOUT_FILENO) ? "\n" : "") << detail::python_dict(values) << "\n";
    nlohmann::ordered_json line;
    line["step"] = step;
    for (auto it = values.begin(); it != values.end(); ++it) line[it.key()] = it.value();
    metrics_ << line.dump() << "\n" << std::flush;
  }

  void save_checkpoint(int step, const run_record& rec) {
    const auto dir = o_.output_dir / ("checkpoint-" + std::to_string(step));
    save_adapter(m_, dir, lcfg_, targets_, base_model_);
    const auto state = opt_->state_dict();
    io::safetensors_writer w;
    for (const auto& [name, bytes] : state) w.add<std::uint8_t>(name, {std::int64_t(bytes.size())}, bytes);
    w.write(dir / "optimizer.safetensors");
    nlohmann::ordered_json t;
    t["global_step"] = step;
    t["epoch"] = epoch_at(step);
    t["best_eval_loss"] = std::isfinite(best_eval_) ? nlohmann::ordered_json(best_eval_) : nlohmann::ordered_json(nullptr);
    t["bad_evals"] = bad_evals_;
    t["seed"] = o_.seed;
    t["step_losses"] = rec.step_losses;
    nlohmann::ordered_json hist = nlohmann::ordered_json::array();
    for (const auto& e : rec.history) {
      nlohmann::ordered_json x = e.values;
      x["step"] = e.step;
      hist.push_back(x);
    }
    t["log_history"] = hist;
    detail::write_json_atomic(dir / "trainer_state.json", t);  // written last: its presence marks a complete checkpoint
  }

  /// Loads the newest checkpoint; returns the step to continue from.
  int restore(run_record& rec) {
    const auto dir = latest_checkpoint(o_.output_dir);
    if (dir.empty()) {
      if (!o_.quiet) std::cout << "resume: no checkpoint in " << o_.output_dir << ", starting from step 0\n";
      return 0;
    }
    load_adapter(m_, dir);
    params_ = adapter_parameters(m_);
    const auto f = io::safetensors_file::open(dir / "optimizer.safetensors");
    state_dict_t sd;
    for (const auto& t : f.tensors()) sd[t.name] = t.to_vector<std::uint8_t>();
    opt_->load_state_dict(sd);
    std::ifstream in(dir / "trainer_state.json");
    const auto t = nlohmann::json::parse(in, nullptr, false);
    LORALAB_CHECK(t.is_object() && t.contains("global_step"), (dir / "trainer_state.json").string(), ": not a trainer state");
    LORALAB_CHECK(t.at("seed").get<std::uint64_t>() == o_.seed, (dir / "trainer_state.json").string(), ": saved with --seed ",
                  t.at("seed").get<std::uint64_t>(), ", resumed with --seed ", o_.seed, ": the rest would not be the same run");
    rec.step_losses = t.at("step_losses").get<std::vector<double>>();
    for (const auto& e : t.at("log_history")) {
      nlohmann::ordered_json v = e;
      const int s = v.at("step").get<int>();
      v.erase("step");
      rec.history.push_back({s, v});
    }
    if (!t.at("best_eval_loss").is_null()) best_eval_ = t.at("best_eval_loss").get<double>();
    bad_evals_ = t.at("bad_evals").get<int>();
    const int step = t.at("global_step").get<int>();
    rec.steps = step;
    if (!o_.quiet) std::cout << "resume: continuing from " << dir << " (step " << step << ")\n";
    return step;
  }

  void write_run_json(const run_record& rec, const nlohmann::ordered_json& summary) const {
    nlohmann::ordered_json j;
    std::ostringstream lc, mem;
    lc << lcfg_;
    mem << rec.memory;
    j["lora"] = lc.str();
    j["targets"] = targets_.describe();
    j["base_model"] = base_model_;
    j["optimizer"] = opt_->describe();
    j["lr"] = o_.lr, j["scheduler"] = std::string(to_string(o_.scheduler)), j["warmup_steps"] = o_.warmup_steps;
    j["total_steps"] = total_, j["grad_accum"] = o_.grad_accum, j["batch_size"] = data_.train.batch_size();
    j["max_grad_norm"] = o_.max_grad_norm, j["seed"] = o_.seed;
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
    detail::write_json_atomic(o_.output_dir / "run.json", j);
  }

  lora_model<Base>& m_;
  prepared_dataset& data_;
  lora_config lcfg_;
  target_spec targets_;
  train_options o_;
  std::string base_model_;
  int total_ = 0;
  lr_schedule sched_;
  std::unique_ptr<optimizer> opt_;
  std::vector<param_ref> params_;
  double last_grad_norm_ = 0, best_eval_ = INFINITY;
  int bad_evals_ = 0;
  std::ofstream metrics_;
};

}  // namespace loralab::lora

// SPDX-License-Identifier: MIT
#pragma once
// The training loop of HF Trainer, for LoRA adapters on a lora_model (dense or quantized base):
//   per optimizer step: GA micro-batches (loss = token mean over the whole window), clip the global grad norm
//   (pre-clip norm logged), optimizer step at lr_at(step), zero grads; log {'loss', 'grad_norm',
//   'learning_rate', 'epoch'} every logging_steps (loss = mean over the steps since the last log, rounded to 4);
//   eval loss every eval_steps with early stopping (the best adapter is kept and restored, as HF's
//   load_best_model_at_end); a checkpoint every save_steps, at an interrupt and at an early stop. Batches and dropout
//   masks are pure functions of (seed, step), so a run restored from a checkpoint continues bit-identically.
//   SIGINT finishes the step in flight, checkpoints and stops. A non-finite loss, gradient or updated weight stops
//   the run naming the step and the first non-finite tensor, before any checkpoint of that step is written.
//
// Data parallel (dist::group of N processes, e.g. under mpirun): the GA micro-batches of a step are shared round
// robin (rank r takes k = r, r + N, …), each rank's gradients are token-mean terms over the whole window, and one flat
// sum per step (gradients, loss, the interrupt flag) gives every rank the same gradients; each then clips and steps
// alike, so the adapters stay equal on every rank without being sent. The step's batches and dropout masks are those
// of one process with the same --grad-accum: the run equals it up to the order of float additions, whatever N is
// (a checkpoint resumes under another N). Only rank 0 tells its observers (console, files).
//
// Replicas (train_options::replicas = R > 1): the same split inside one process, by rows. Each micro-batch's B rows are
// cut into R slices that R clones of the model run at once, one thread each (no barrier inside a step, where R
// threads inside every product barely pay at small sizes), their dropout masks those of the rows in the whole batch;
// the clones' gradients are added to the model's in a fixed order and their adapters copied from it every step.
//
// The trainer computes; it writes nothing. What a run shows or keeps is up to its observers (train_observer):
// train/console_log.hpp prints HF's log lines, train/run_files.hpp writes the output directory (adapter,
// checkpoints, metrics.jsonl, run.json) and resumes from it. A run with no observer is a pure computation whose
// result is the returned run_record.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <exception>
#include <fstream>
#include <memory>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "core/check.hpp"
#include "data/dataset.hpp"
#include "dist/group.hpp"
#include "lora/lora_model.hpp"
#include "train/lr_schedule.hpp"
#include "train/optimizer.hpp"

namespace loralab::train {

struct train_options {
  double lr = 2e-4;
  schedule_kind scheduler = schedule_kind::linear;
  int warmup_steps = 0;
  int max_steps = 0;       ///< > 0: exactly this many optimizer steps; else from epochs
  double epochs = 1;
  int grad_accum = 1;
  /// Model replicas that share each micro-batch's rows, one thread each (the model cloned: its frozen weights too);
  /// 1: the whole micro-batch on one model, its products threaded. Same batches, masks and token-mean loss either way.
  int replicas = 1;
  double max_grad_norm = 1.0;
  std::string optim = "adamw";
  double weight_decay = 0;
  int logging_steps = 10;
  int eval_steps = 0;      ///< 0: evaluate only at the end (when there is a validation set)
  int save_steps = 0;      ///< 0: no intermediate checkpoints (observers decide where a checkpoint goes)
  /// Evaluations without improvement before stopping (0: never). As HF's EarlyStoppingCallback, which requires
  /// load_best_model_at_end: the best adapter is the final adapter of a stopped run.
  int early_stopping_patience = 0;
  std::uint64_t seed = 42;
  int stop_after_steps = 0;  ///< > 0: stop (with a checkpoint) after this many steps of this run: interrupt tests

  void validate() const {
    LORALAB_CHECK(lr > 0 && std::isfinite(lr), "--lr must be a finite value > 0, got ", lr);
    LORALAB_CHECK(warmup_steps >= 0, "--warmup-steps must be >= 0, got ", warmup_steps);
    LORALAB_CHECK(grad_accum >= 1, "--grad-accum must be >= 1, got ", grad_accum);
    LORALAB_CHECK(replicas >= 1 && replicas <= 256, "--replicas must be in [1, 256], got ", replicas);
    LORALAB_CHECK(max_steps > 0 || epochs > 0, "--max-steps or --epochs must be > 0");
    LORALAB_CHECK(logging_steps >= 1, "--logging-steps must be >= 1, got ", logging_steps);
    LORALAB_CHECK(eval_steps >= 0 && save_steps >= 0, "--eval-steps and --save-steps must be >= 0");
    LORALAB_CHECK(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
    LORALAB_CHECK(early_stopping_patience >= 0, "--early-stopping-patience must be >= 0, got ", early_stopping_patience);
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

/// What a checkpoint holds besides the adapters and the optimizer state: enough to continue bit-identically.
struct trainer_state {
  int global_step = 0;
  double epoch = 0;
  double best_eval_loss = INFINITY;
  int bad_evals = 0;
  std::uint64_t seed = 0;
  std::vector<double> step_losses;
  std::vector<log_event> history;
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

inline double round4(double x) { return std::round(x * 1e4) / 1e4; }

/// Where `n` floats first stop being finite: index -1 when all are finite.
struct non_finite {
  std::ptrdiff_t index = -1;
  const char* what = "";
};
inline non_finite first_non_finite(const float* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return {std::ptrdiff_t(i), std::isnan(p[i]) ? "NaN" : p[i] > 0 ? "+Inf" : "-Inf"};
  return {};
}

/// Puts the previous SIGINT handler back however run() ends (an exception from a failed save included).
struct sigint_scope {
  using handler = void (*)(int);
  handler previous;
  sigint_scope() : previous(std::signal(SIGINT, on_sigint)) { sigint_seen = false; }
  ~sigint_scope() { std::signal(SIGINT, previous); }
};
}  // namespace detail

/// Refuses base weights that are not finite, naming `path`, the tensor and the element: a NaN in the frozen base
/// would make every loss NaN with no adapter to blame.
inline void check_finite_weights(const nn::model_file& f, const std::string& path) {
  for (const auto& [name, t] : f.tensors)
    if (const auto bad = detail::first_non_finite(t.data.data(), t.data.size()); bad.index >= 0)
      fail(path, ": base weight '", name, "' holds ", bad.what, " at element ", bad.index,
           "; the model file is damaged or was saved from a diverged run");
}

/// The adapters' trainable parameters, named as PEFT saves them.
template <class Model>
std::vector<param_ref> adapter_parameters(Model& m) {
  static_assert(std::same_as<typename Model::S, float>, "the trainer works on float models");
  std::vector<param_ref> params;
  lora::for_each_adapter(m, [&](const std::string& key, auto& a, auto&) {
    params.push_back({key + ".lora_A.weight", a.A.data(), a.dA.data(), std::size_t(a.A.size()), true});
    params.push_back({key + ".lora_B.weight", a.B.data(), a.dB.data(), std::size_t(a.B.size()), true});
  });
  return params;
}

/// Token-mean loss over every batch of `loader` with adapters in eval mode (no dropout); the batches shared round robin
/// by the ranks of `g`.
template <class Model>
double evaluate(Model& m, const data::batch_loader& loader, const dist::group& g = dist::group::self()) {
  lora::set_adapter_mode(m, false, 0);
  double sum_count[2] = {0, 0};
  for (int i = g.rank(); i < loader.num_batches(); i += g.size()) {
    const data::batch b = loader.batch_at(0, i);
    m.forward(b.tokens, b.B, b.T);
    sum_count[0] += m.loss(b.targets, 1.0);  // denominator 1: the sum over the batch's targets
    sum_count[1] += double(b.trainable_tokens);
  }
  g.sum(sum_count, 2);
  return sum_count[0] / sum_count[1];
}

template <class Model>
class trainer;

/// Watches a run: every hook is optional. Observers are called in the order they were added.
template <class Model>
struct train_observer {
  virtual ~train_observer() = default;
  /// Before the first step of this run (start_step > 0 after restore()).
  virtual void on_begin(trainer<Model>&, int /*start_step*/) {}
  /// After every optimizer step (1-based step).
  virtual void on_step(trainer<Model>&, int /*step*/, double /*loss*/) {}
  /// Every log line (loss, grad_norm, learning_rate, epoch) and every evaluation (eval_loss, epoch).
  virtual void on_log(trainer<Model>&, const log_event&) {}
  /// A new best eval loss while early stopping is on: the model holds that adapter now.
  virtual void on_best(trainer<Model>&) {}
  /// A checkpoint: every save_steps, at an interrupt, at an early stop (the model holds the step's adapter).
  virtual void on_checkpoint(trainer<Model>&, const trainer_state&) {}
  /// The run is over (finished, stopped early with the best adapter restored, or interrupted).
  virtual void on_end(trainer<Model>&, const run_record&, const nlohmann::ordered_json& /*summary*/) {}
};

/// Trains the adapters of a lora::lora_model (any base, any rank type).
template <class Model>
class trainer {
 public:
  using model_type = Model;

  /// `g`: the processes that train this run together (data parallel); by default this one alone.
  trainer(model_type& m, const data::prepared_dataset& data, train_options o, const dist::group& g = dist::group::self())
      : m_(m), data_(data), o_(std::move(o)), g_(g) {
    o_.validate();
    dist::check_collective(g_.size() <= o_.grad_accum, "--grad-accum ", o_.grad_accum, " gives ", o_.grad_accum,
                           " micro-batch(es) per optimizer step, shared by ", g_.size(), " ranks: every rank needs one; use "
                           "--grad-accum ", g_.size(), " or a multiple of it (the step's batch is the same whatever the rank count)");
    LORALAB_CHECK(data_.train.size() > 0, "the training set is empty");
    if constexpr (nn::storage_of<typename Model::linear_type>::on_device)  // one model per device; its products fill it
      LORALAB_CHECK(o_.replicas == 1, "--replicas ", o_.replicas, " with --device cuda: replicas split a batch among CPU threads; "
                    "on a GPU the batch runs as one (use --replicas 1)");
    const long long per_epoch = (data_.train.num_batches() + o_.grad_accum - 1) / o_.grad_accum;
    total_ = o_.max_steps > 0 ? o_.max_steps : int(std::ceil(o_.epochs * double(per_epoch)));
    sched_ = lr_schedule{o_.scheduler, o_.lr, o_.warmup_steps, total_};
    sched_.validate();
    opt_ = make_optimizer(o_.optim, o_.weight_decay);
    params_ = adapter_parameters(m_);
    LORALAB_CHECK(!params_.empty(), "no adapter is attached: nothing to train");
    for (int j = 1; j < std::min(o_.replicas, data_.train.batch_size()); ++j) {
      replicas_.push_back(std::make_unique<model_type>(m_.clone()));
      replica_params_.push_back(adapter_parameters(*replicas_.back()));
    }
  }

  /// Observers are not owned: they must outlive run(). Only rank 0 of a data-parallel group has observers (the
  /// others compute the same adapters; one writes them).
  trainer& observe(train_observer<Model>& o) {
    if (g_.is_root()) observers_.push_back(&o);
    return *this;
  }
  const dist::group& group() const { return g_; }

  int total_steps() const { return total_; }
  const train_options& options() const { return o_; }
  const optimizer& opt() const { return *opt_; }
  model_type& model() { return m_; }
  const data::prepared_dataset& data() const { return data_; }
  double epoch_at(int step) const { return double(step) * o_.grad_accum / double(data_.train.num_batches()); }

  /// The memory a step will hold (adapters, grads, activations, workspace, optimizer), before step 0.
  nn::memory_report planned_memory() const {
    nn::memory_report r;
    const int B = data_.train.batch_size(), R = std::min(o_.replicas, B);
    for (int j = 0; j < R; ++j) r = r + m_.planned_memory(std::size_t((j + 1) * B / R - j * B / R), max_T());  // a clone each
    r.optimizer = opt_->planned_state_bytes(params_);
    return r;
  }

  /// Continues a run from a checkpoint whose adapters are already in the model (train/run_files.hpp reads one).
  void restore(const trainer_state& s, const state_dict_t& optimizer_state) {
    LORALAB_CHECK(s.seed == o_.seed, "the checkpoint was saved with --seed ", s.seed, ", resumed with --seed ", o_.seed,
                  ": the rest would not be the same run");
    params_ = adapter_parameters(m_);
    opt_->load_state_dict(optimizer_state);
    state_ = s;
  }

  run_record run() {
    run_record rec;
    const int start = state_.global_step;
    rec.step_losses = state_.step_losses, rec.history = state_.history, rec.steps = start;
    rec.memory = planned_memory();
    for (auto* o : observers_) o->on_begin(*this, start);
    detail::reset_peak_rss();
    std::optional<detail::sigint_scope> sigint(std::in_place);
    const auto t0 = std::chrono::steady_clock::now();
    long long tokens = 0, samples = 0;
    double since_log = 0;
    int logged_at = start;
    bool interrupt_seen = false;  // SIGINT on any rank (summed with the step's gradients)
    for (int step = start; step < total_; ++step) {
      const auto s0 = std::chrono::steady_clock::now();
      const double loss = train_step(step, tokens, samples, interrupt_seen);
      rec.step_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
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
      for (auto* o : observers_) o->on_step(*this, done, loss);
      if (data_.val.size() > 0 && o_.eval_steps > 0 && done % o_.eval_steps == 0 && done != total_) {
        if (eval_and_check_stop(rec, done)) {
          rec.stopped_early = true;
          checkpoint(rec, done);
          break;
        }
      }
      const bool interrupt = interrupt_seen || (o_.stop_after_steps > 0 && done - start >= o_.stop_after_steps);
      if ((o_.save_steps > 0 && done % o_.save_steps == 0) || interrupt) checkpoint(rec, done);
      if (interrupt) {
        rec.interrupted = true;
        break;
      }
    }
    sigint.reset();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rec.stopped_early) {  // load_best_model_at_end: the adapter of the best evaluation, as HF does
      restore_best();
      rec.final_eval_loss = state_.best_eval_loss;
    } else if (!rec.interrupted && data_.val.size() > 0) {
      rec.final_eval_loss = evaluate(m_, data_.val, g_);
      nlohmann::ordered_json j;
      j["eval_loss"] = rec.final_eval_loss;
      j["epoch"] = epoch_at(rec.steps);
      log(rec, rec.steps, j);
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
    for (auto* o : observers_) o->on_end(*this, rec, summary);
    return rec;
  }

 private:
  int max_T() const {
    int T = 0;
    for (const auto& r : data_.train.rows()) T = std::max(T, int(r.input_ids.size()));
    return T;
  }

  /// One optimizer step: GA micro-batches number step·GA … step·GA + GA − 1 of the endless epoch sequence; under a
  /// group of N ranks this rank computes k ≡ rank (mod N) and the sum gives every rank the whole window's gradients.
  double train_step(int step, long long& tokens, long long& samples, bool& interrupt) {
    const int nb = data_.train.num_batches();
    std::vector<data::batch> window;
    double count = 0;
    for (int k = 0; k < o_.grad_accum; ++k) {
      const long long micro = (long long)step * o_.grad_accum + k;
      window.push_back(data_.train.batch_at(int(micro / nb), int(micro % nb)));
      count += window.back().trainable_tokens;
      tokens += (long long)window.back().B * window.back().T, samples += window.back().B;  // the whole window, every rank
    }
    for (auto& p : params_) std::fill(p.grad, p.grad + p.size, 0.0f);
    for (std::size_t j = 0; j < replicas_.size(); ++j) {  // the clones start the step with the model's adapters, zero gradients
      replicas_[j]->gradient_checkpointing = m_.gradient_checkpointing;
      for (std::size_t i = 0; i < params_.size(); ++i) {
        const param_ref &p = params_[i], &q = replica_params_[j][i];
        std::copy(p.value, p.value + p.size, q.value);
        std::fill(q.grad, q.grad + q.size, 0.0f);
      }
    }
    double loss_flag[2] = {0, 0};
    for (int k = g_.rank(); k < o_.grad_accum; k += g_.size()) {
      const data::batch& b = window[std::size_t(k)];
      const std::uint64_t mask_seed = o_.seed * 1000003ull + std::uint64_t(step) * 1009ull + std::uint64_t(k);
      if (replicas_.empty()) {
        lora::set_adapter_mode(m_, true, mask_seed);
        m_.forward(b.tokens, b.B, b.T);
        loss_flag[0] += m_.loss(b.targets, count);
        m_.backward();
      } else {
        loss_flag[0] += replicated_micro_batch(b, mask_seed, count);
      }
    }
    for (std::size_t j = 0; j < replicas_.size(); ++j)  // the clones' gradients, in clone order
      for (std::size_t i = 0; i < params_.size(); ++i) {
        const param_ref &p = params_[i], &q = replica_params_[j][i];
        for (std::size_t e = 0; e < p.size; ++e) p.grad[e] += q.grad[e];
      }
    loss_flag[1] = detail::sigint_seen ? 1.0 : 0.0;  // a SIGINT during this step stops after it, as before
    if (g_.size() > 1) sum_over_group(loss_flag);
    interrupt = interrupt || loss_flag[1] > 0;
    const double loss = loss_flag[0];
    check_finite(step, loss, (long long)step * o_.grad_accum);
    last_grad_norm_ = clip_grad_norm(params_, o_.max_grad_norm);
    opt_->step(params_, sched_.lr_at(step + 1));
    for (const param_ref& p : params_)  // a finite gradient through a non-finite optimizer state
      if (const auto bad = detail::first_non_finite(p.value, p.size); bad.index >= 0)
        stop(step, "the optimizer update made '" + p.name + "' " + bad.what + " at element " + std::to_string(bad.index) +
                       " (its optimizer state is not finite)");
    return loss;
  }

  /// One micro-batch over the model and its clones, rows cut in R slices, one thread each; returns the summed loss
  /// terms (slice order). The clones' gradients accumulate over the step's micro-batches (train_step adds them).
  double replicated_micro_batch(const data::batch& b, std::uint64_t mask_seed, double count) {
    const int R = std::min(int(replicas_.size()) + 1, b.B);
    const std::size_t parts = std::size_t(R);
    std::vector<data::batch> slices(parts);
    for (int j = 0; j < R; ++j) {
      const int r0 = j * b.B / R, r1 = (j + 1) * b.B / R;
      data::batch& s = slices[std::size_t(j)];
      s.B = r1 - r0, s.T = b.T;
      const auto at = std::size_t(r0) * std::size_t(b.T), end = std::size_t(r1) * std::size_t(b.T);
      s.tokens.assign(b.tokens.begin() + std::ptrdiff_t(at), b.tokens.begin() + std::ptrdiff_t(end));
      s.targets.assign(b.targets.begin() + std::ptrdiff_t(at), b.targets.begin() + std::ptrdiff_t(end));
    }
    std::vector<double> losses(parts, 0.0);
    std::vector<std::exception_ptr> errors(parts);
#pragma omp parallel num_threads(R)
    {
      const int j = omp_get_thread_num();
      omp_set_num_threads(1);  // what this slice calls (BLAS, inner loops) stays on this thread
      try {
        model_type& mj = j == 0 ? m_ : *replicas_[std::size_t(j - 1)];
        const data::batch& s = slices[std::size_t(j)];
        lora::set_adapter_mode(mj, true, mask_seed, std::int64_t(j * b.B / R) * b.T);
        mj.forward(s.tokens, s.B, s.T);
        losses[std::size_t(j)] = mj.loss(s.targets, count);
        mj.backward();
      } catch (...) {
        errors[std::size_t(j)] = std::current_exception();
      }
    }
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    double loss = 0;
    for (double l : losses) loss += l;
    return loss;
  }

  /// The step's one exchange: every gradient in one flat buffer, and the loss with the interrupt flag.
  void sum_over_group(double* loss_flag) {
    std::size_t n = 0;
    for (const auto& p : params_) n += p.size;
    flat_.resize(n);
    float* at = flat_.data();
    for (const auto& p : params_) at = std::copy(p.grad, p.grad + p.size, at);
    g_.sum(flat_.data(), flat_.size());
    g_.sum(loss_flag, 2);
    at = flat_.data();
    for (auto& p : params_) std::copy(at, at + p.size, p.grad), at += p.size;
  }

  /// After the backward pass of step (0-based) `step`: the loss, then every adapter weight and gradient must be
  /// finite. Names the first non-finite tensor (weights first: a bad weight makes every gradient bad).
  void check_finite(int step, double loss, long long first_micro) const {
    std::string first;
    for (const char* kind : {"weight", "gradient"}) {
      for (const param_ref& p : params_) {
        const float* v = std::string_view(kind) == "weight" ? p.value : p.grad;
        if (const auto bad = detail::first_non_finite(v, p.size); bad.index >= 0) {
          first = std::string(kind) + " '" + p.name + "' is " + bad.what + " at element " + std::to_string(bad.index);
          break;
        }
      }
      if (!first.empty()) break;
    }
    if (std::isfinite(loss) && first.empty()) return;
    const int nb = data_.train.num_batches();
    const std::string batch = "micro-batch " + std::to_string(first_micro % nb) + " of epoch " + std::to_string(first_micro / nb);
    if (std::isfinite(loss)) stop(step, "the " + first + " (the loss " + std::to_string(loss) + " is finite; " + batch + ")");
    const char* l = std::isnan(loss) ? "NaN" : loss > 0 ? "+Inf" : "-Inf";
    stop(step, "loss is " + std::string(l) + " (" + batch + "); " +
                   (first.empty() ? std::string("every adapter weight and gradient is finite: the batch or the base produced it")
                                  : "first non-finite tensor: " + first));
  }

  /// Stops the run at step (0-based) `step`: nothing of this step is saved.
  [[noreturn]] void stop(int step, const std::string& why) const {
    fail("step ", step + 1, ": ", why, ": training stopped; the last good checkpoint is kept (",
         last_checkpoint_ > 0 ? "checkpoint-" + std::to_string(last_checkpoint_) : std::string("none saved yet"), ")");
  }

  bool eval_and_check_stop(run_record& rec, int done) {
    const double l = evaluate(m_, data_.val, g_);
    nlohmann::ordered_json j;
    j["eval_loss"] = l;
    j["epoch"] = epoch_at(done);
    log(rec, done, j);
    if (l < state_.best_eval_loss) {
      state_.best_eval_loss = l, state_.bad_evals = 0;
      if (o_.early_stopping_patience > 0) {
        best_.clear();
        for (const auto& p : params_) best_.emplace_back(p.value, p.value + p.size);
        for (auto* o : observers_) o->on_best(*this);
      }
    } else {
      ++state_.bad_evals;
    }
    return o_.early_stopping_patience > 0 && state_.bad_evals >= o_.early_stopping_patience;
  }

  void restore_best() {
    LORALAB_CHECK(best_.size() == params_.size(), "early stopping: no best adapter was kept");
    for (std::size_t i = 0; i < params_.size(); ++i) std::copy(best_[i].begin(), best_[i].end(), params_[i].value);
  }

  void log(run_record& rec, int step, const nlohmann::ordered_json& values) {
    rec.history.push_back({step, values});
    for (auto* o : observers_) o->on_log(*this, rec.history.back());
  }

  void checkpoint(const run_record& rec, int step) {
    state_.global_step = step;
    state_.epoch = epoch_at(step);
    state_.seed = o_.seed;
    state_.step_losses = rec.step_losses;
    state_.history = rec.history;
    last_checkpoint_ = step;
    for (auto* o : observers_) o->on_checkpoint(*this, state_);
  }

  model_type& m_;
  const data::prepared_dataset& data_;
  train_options o_;
  const dist::group& g_;
  std::vector<float> flat_;  ///< the step's gradients, flat, for the group's sum
  std::vector<std::unique_ptr<model_type>> replicas_;   ///< clones 1 … R−1 of the model (train_options::replicas)
  std::vector<std::vector<param_ref>> replica_params_;  ///< their adapter parameters, in params_'s order
  int total_ = 0;
  lr_schedule sched_;
  std::unique_ptr<optimizer> opt_;
  std::vector<param_ref> params_;
  std::vector<std::vector<float>> best_;  ///< the adapters at the best evaluation (early stopping)
  double last_grad_norm_ = 0;
  trainer_state state_;
  int last_checkpoint_ = 0;
  std::vector<train_observer<Model>*> observers_;
};

}  // namespace loralab::train

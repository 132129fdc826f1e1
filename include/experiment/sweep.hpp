// SPDX-License-Identifier: MIT
#pragma once
// Sweeps: a list of run_specs, each run with N seeds; the results grouped per configuration with mean ± std of
// any metric, and the one question every ablation ends with — is a difference larger than the seed spread?
//
//   std::vector<experiment::run_spec> specs = …;                       // one per configuration
//   const auto groups = experiment::run_sweep(file, data, specs, 3);  // seeds 42, 43, 44 for each
//   const auto loss = experiment::metric_named("eval loss after");
//   std::cout << experiment::compare(groups[0], groups[1], loss) << "\n";
//
// A seed changes the adapters' initialisation, the dropout masks and the optimizer's stochastic parts; the data split
// and batch order stay those of the dataset's own seed, so the spread is the training's, not the data's.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "core/check.hpp"
#include "experiment/run.hpp"

namespace loralab::experiment {

/// A number read from a run_result, with how to print it and which way is better.
struct metric {
  std::string name;    ///< column header: "eval loss after"
  std::string format;  ///< fmt format of one value: "{:.4f}"
  std::function<double(const run_result&)> get;
  bool lower_is_better = true;
  std::string key;     ///< JSON key: "eval_loss_after"
};

/// Every metric a run_result carries, in table order.
inline const std::vector<metric>& run_metrics() {
  static const std::vector<metric> all = {
      {"trainable params", "{:.0f}", [](const run_result& r) { return double(r.parameters.trainable); }, true, "trainable_parameters"},
      {"frozen linears MiB", "{:.3f}", [](const run_result& r) { return double(r.storage.linear_bytes) / (1 << 20); }, true,
       "frozen_linears_mib"},
      {"bits/weight", "{:.2f}", [](const run_result& r) { return r.storage.linear_bits_per_weight(); }, true, "linear_bits_per_weight"},
      {"optimizer KiB", "{:.1f}", [](const run_result& r) { return double(r.train.memory.optimizer) / 1024; }, true, "optimizer_kib"},
      {"planned MiB", "{:.2f}", [](const run_result& r) { return double(r.train.memory.total()) / (1 << 20); }, true, "planned_mib"},
      {"peak RSS MiB", "{:.1f}", [](const run_result& r) { return double(r.train.peak_rss_bytes) / (1 << 20); }, true, "peak_rss_mib"},
      {"steps", "{:.0f}", [](const run_result& r) { return double(r.train.steps); }, true, "steps"},
      {"time s", "{:.2f}", [](const run_result& r) { return r.train.train_runtime; }, true, "train_runtime"},
      {"ms/step", "{:.1f}", [](const run_result& r) { return 1e3 * r.median_step_seconds(); }, true, "ms_per_step"},
      {"tokens/s", "{:.0f}", [](const run_result& r) { return r.train.tokens_per_second; }, false, "tokens_per_second"},
      {"eval loss before", "{:.4f}", [](const run_result& r) { return r.eval_before; }, true, "eval_loss_before"},
      {"final train loss", "{:.4f}", [](const run_result& r) { return r.train.step_losses.empty() ? NAN : r.train.step_losses.back(); },
       true, "final_train_loss"},
      {"eval loss after", "{:.4f}", [](const run_result& r) { return r.eval_after(); }, true, "eval_loss_after"},
  };
  return all;
}

/// The metric with this column name; an unknown name is an error listing the known ones.
inline const metric& metric_named(const std::string& name) {
  std::string known;
  for (const auto& m : run_metrics()) {
    if (m.name == name) return m;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  fail("unknown metric '", name, "'; known: ", known);
}

/// Mean and sample standard deviation (n − 1) of the finite values; n counts them.
struct spread {
  double mean = NAN, std = NAN;
  int n = 0;
  /// "2.3456 ± 0.0123"; just the mean for one value or none spread (a parameter count does not vary with the seed).
  std::string format(const std::string& fmt_one) const {
    if (n == 0) return "-";
    const std::string m = fmt::format(fmt::runtime(fmt_one), mean);
    return n > 1 && std > 0 ? m + " ± " + fmt::format(fmt::runtime(fmt_one), std) : m;
  }
};

inline spread spread_of(const std::vector<double>& xs) {
  spread s;
  double sum = 0;
  for (double x : xs)
    if (std::isfinite(x)) sum += x, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  double ss = 0;
  for (double x : xs)
    if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
  s.std = s.n > 1 ? std::sqrt(ss / (s.n - 1)) : 0;
  return s;
}

/// One configuration and its runs, one per seed.
struct run_group {
  run_spec spec;
  std::vector<run_result> runs;

  std::string name() const { return spec.name(); }
  spread of(const metric& m) const {
    std::vector<double> xs;
    for (const auto& r : runs) xs.push_back(m.get(r));
    return spread_of(xs);
  }
};

/// Runs every spec with seeds spec.train.seed, +1, …, +seeds−1 (train_one<Schemes>); `progress` is called after each
/// run. An empty sweep or seeds < 1 is an error.
template <class Schemes = quant::model_schemes, class Progress>
std::vector<run_group> run_sweep(const nn::model_file& file, const data::prepared_dataset& data, const std::vector<run_spec>& specs,
                                 int seeds, Progress&& progress) {
  LORALAB_CHECK(!specs.empty(), "the sweep is empty: no configuration to run");
  LORALAB_CHECK(seeds >= 1, "--seeds must be >= 1, got ", seeds);
  for (const auto& s : specs) {  // every configuration checked before the first run
    s.validate();
    const std::string name = quant::canonical_scheme_name(s.scheme);
    LORALAB_CHECK(Schemes::contains(name), "unknown scheme '", s.scheme, "'; known: ", Schemes::names());
  }
  std::vector<run_group> groups;
  for (const auto& s : specs) {
    run_group g;
    g.spec = s;
    for (int i = 0; i < seeds; ++i) {
      run_spec one = s;
      one.train.seed = s.train.seed + std::uint64_t(i);
      if (!one.output.empty() && seeds > 1) one.output /= fmt::format("seed{}", one.train.seed);
      g.runs.push_back(train_one<Schemes>(file, data, one));
      progress(g.runs.back());
    }
    groups.push_back(std::move(g));
  }
  return groups;
}
template <class Schemes = quant::model_schemes>
std::vector<run_group> run_sweep(const nn::model_file& file, const data::prepared_dataset& data, const std::vector<run_spec>& specs,
                                 int seeds = 1) {
  return run_sweep<Schemes>(file, data, specs, seeds, [](const run_result&) {});
}

/// Is a's mean of m different from b's by more than the seed spread? Larger when |Δ| > 2·√(sa²/na + sb²/nb)
/// (two standard errors of the difference); with one seed per side there is no spread to compare with.
struct comparison {
  spread a, b;
  double difference = NAN;  ///< a.mean − b.mean
  bool measured_spread = false, beyond_spread = false;
};

inline comparison compare_spread(const run_group& a, const run_group& b, const metric& m) {
  comparison c;
  c.a = a.of(m), c.b = b.of(m);
  c.difference = c.a.mean - c.b.mean;
  c.measured_spread = c.a.n > 1 && c.b.n > 1;
  const double se = std::sqrt(c.a.std * c.a.std / std::max(1, c.a.n) + c.b.std * c.b.std / std::max(1, c.b.n));
  c.beyond_spread = c.measured_spread && std::abs(c.difference) > 2 * se;
  return c;
}

/// "r=16's eval loss after is 0.0312 lower than r=1's (2.1012 ± 0.0040 vs 2.1324 ± 0.0051, 3 seeds): larger than the
/// seed spread." The verdict says "within the seed spread" or, with one seed, that no spread was measured.
inline std::string compare(const run_group& a, const run_group& b, const metric& m) {
  const comparison c = compare_spread(a, b, m);
  if (!std::isfinite(c.difference)) return fmt::format("{} is not measured for {} and {}.", m.name, a.name(), b.name());
  const std::string fmt_one = m.format;
  std::string s = fmt::format("{}'s {} is {} {} than {}'s ({} vs {}", a.name(), m.name,
                              fmt::format(fmt::runtime(fmt_one), std::abs(c.difference)), c.difference < 0 ? "lower" : "higher",
                              b.name(), c.a.format(fmt_one), c.b.format(fmt_one));
  if (!c.measured_spread) return s + ", one seed): no seed spread measured (run with --seeds 3 to tell).";
  return s + fmt::format(", {} seeds): {} the seed spread.", c.a.n, c.beyond_spread ? "larger than" : "within");
}

/// The group with the best mean of m (lowest, or highest when !m.lower_is_better).
inline const run_group& best_of(const std::vector<run_group>& groups, const metric& m) {
  LORALAB_CHECK(!groups.empty(), "best_of: no groups");
  const run_group* best = &groups.front();
  for (const auto& g : groups) {
    const double x = g.of(m).mean, y = best->of(m).mean;
    if (std::isfinite(x) && (!std::isfinite(y) || (m.lower_is_better ? x < y : x > y))) best = &g;
  }
  return *best;
}

}  // namespace loralab::experiment

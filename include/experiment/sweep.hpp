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
//
// Under mpirun the grid's cells (configuration × seed, experiment/sweep_cells.hpp) are shared by the ranks, rank r
// running cells c ≡ r (mod N), each alone on its rank; the results are gathered so that every rank returns the same
// groups, and rank 0 writes the report (experiment/report.hpp). A cell that fails is a hole with a name: its group
// lists it in `failed`, the report names it and the program exits 1. With sweep_options::cells_dir each finished cell
// is kept in DIR/cell-C.json, and `resume` runs only the cells without one (experiments: OUT/cells, --resume).
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "core/check.hpp"
#include "dist/group.hpp"
#include "experiment/run.hpp"
#include "experiment/sweep_cells.hpp"

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
  std::vector<run_result> runs;     ///< the seeds that finished, in seed order
  std::vector<std::string> failed;  ///< "seed 43 (rank 1): MESSAGE" for each seed that did not

  std::string name() const { return spec.name(); }
  /// The first finished run (what every seed shares: parameter counts, storage); an error naming the group and its
  /// failures when none finished.
  const run_result& first_run() const {
    if (runs.empty()) {
      std::string why;
      for (const auto& f : failed) why += (why.empty() ? "" : "; ") + f;
      throw dist::collective_error("no run of " + name() + " finished (" + why + "); rerun with --resume once the cause is fixed");
    }
    return runs.front();
  }
  spread of(const metric& m) const {
    std::vector<double> xs;
    for (const auto& r : runs) xs.push_back(m.get(r));
    return spread_of(xs);
  }
};

/// How a sweep runs: seeds per configuration, where finished cells are kept, whether those are reused, over which
/// processes. An int converts to it (seeds), so run_sweep(file, data, specs, 3) reads as before.
struct sweep_options {
  int seeds = 1;
  std::filesystem::path cells_dir;  ///< empty: cells are not kept
  bool resume = false;              ///< reuse cells_dir's finished cells, run only the others
  const dist::group* group = nullptr;  ///< nullptr: dist::group::world() (every rank of an mpirun, else this process)
  sweep_options(int s = 1) : seeds(s) {}  // NOLINT: implicit on purpose
};

namespace detail {
/// Every run of this process's sweeps that did not finish, in the words the report prints (report::write names them
/// and ends the program with exit code 1).
inline std::vector<std::string>& unfinished_runs() {
  static std::vector<std::string> all;
  return all;
}
}  // namespace detail

/// Runs every spec with seeds spec.train.seed, +1, …, +seeds−1 (train_one<Schemes>); `progress` is called after each
/// run this rank makes. An empty sweep, seeds < 1 or more ranks than cells is an error before any run. A run that
/// fails does not stop the others: its group lists it in `failed`.
template <class Schemes = quant::model_schemes, class Progress>
std::vector<run_group> run_sweep(const nn::model_file& file, const data::prepared_dataset& data, const std::vector<run_spec>& specs,
                                 const sweep_options& o, Progress&& progress) {
  const int seeds = o.seeds;
  LORALAB_CHECK(!specs.empty(), "the sweep is empty: no configuration to run");
  LORALAB_CHECK(seeds >= 1, "--seeds must be >= 1, got ", seeds);
  LORALAB_CHECK(data.train.size() > 0, "the training set is empty");
  for (const auto& s : specs) {  // every configuration checked before the first run
    s.validate();
    const std::string name = quant::canonical_scheme_name(s.scheme);
    LORALAB_CHECK(Schemes::contains(name), "unknown scheme '", s.scheme, "'; known: ", Schemes::names());
  }
  const dist::group& g = o.group ? *o.group : dist::group::world();
  const std::size_t cells = specs.size() * std::size_t(seeds);
  dist::check_collective(std::size_t(g.size()) <= cells, "mpirun started ", g.size(), " ranks for a sweep of ", cells, " run(s) (",
                         specs.size(), " configuration(s) x ", seeds, " seed(s)): a rank would have nothing to do; use -np ", cells,
                         " or fewer");
  const auto spec_of = [&](std::size_t c) {
    run_spec one = specs[c / std::size_t(seeds)];
    const std::uint64_t base = one.train.seed;
    one.train.seed = base + std::uint64_t(c % std::size_t(seeds));
    if (!one.output.empty() && seeds > 1) one.output /= fmt::format("seed{}", one.train.seed);
    return one;
  };
  // This rank's cells, each kept as JSON: {"cell": c, "result": …} or {"cell": c, "error": …}.
  nlohmann::ordered_json mine = nlohmann::ordered_json::array();
  for (std::size_t c = std::size_t(g.rank()); c < cells; c += std::size_t(g.size())) {
    const run_spec one = spec_of(c);
    nlohmann::ordered_json cell;
    cell["cell"] = c;
    try {
      std::optional<run_result> r;
      if (o.resume && !o.cells_dir.empty()) r = load_cell(o.cells_dir, c, one);
      if (!r) {
        r = train_one<Schemes>(file, data, one);
        if (!o.cells_dir.empty()) save_cell(o.cells_dir, c, *r);
        progress(*r);
      }
      cell["result"] = cell_to_json(*r);
    } catch (const std::exception& e) {
      cell["error"] = e.what();
      fmt::print(stderr, "sweep: {} seed {}{} failed: {}\n", one.name(), one.train.seed,
                 g.size() > 1 ? fmt::format(" (rank {})", g.rank()) : "", e.what());
    }
    mine.push_back(cell);
  }
  std::vector<run_group> groups(specs.size());
  for (std::size_t k = 0; k < specs.size(); ++k) groups[k].spec = specs[k];
  const std::vector<std::string> all = g.all_gather(mine.dump());
  std::vector<std::optional<nlohmann::ordered_json>> by_cell(cells);
  for (std::size_t r = 0; r < all.size(); ++r)
    for (const auto& cell : nlohmann::ordered_json::parse(all[r])) by_cell[cell.at("cell").get<std::size_t>()] = cell;
  std::size_t finished = 0;
  for (std::size_t c = 0; c < cells; ++c) {
    const run_spec one = spec_of(c);
    run_group& grp = groups[c / std::size_t(seeds)];
    const nlohmann::ordered_json& cell = *by_cell[c];
    const std::string rank = g.size() > 1 ? fmt::format(" (rank {})", c % std::size_t(g.size())) : "";
    if (cell.contains("result")) {
      grp.runs.push_back(cell_from_json(cell["result"], one, "the result of cell " + std::to_string(c) + rank));
      ++finished;
    } else {
      grp.failed.push_back(fmt::format("seed {}{}: {}", one.train.seed, rank, cell.at("error").get<std::string>()));
      detail::unfinished_runs().push_back(fmt::format("{}, {}", one.name(), grp.failed.back()));
    }
  }
  dist::check_collective(finished > 0, "every run of the sweep failed; the first: ", groups.front().spec.name(), ", ",
                         groups.front().failed.empty() ? std::string("?") : groups.front().failed.front());
  return groups;
}
template <class Schemes = quant::model_schemes>
std::vector<run_group> run_sweep(const nn::model_file& file, const data::prepared_dataset& data, const std::vector<run_spec>& specs,
                                 const sweep_options& o = {}) {
  return run_sweep<Schemes>(file, data, specs, o, [](const run_result&) {});
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

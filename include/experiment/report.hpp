// SPDX-License-Identifier: MIT
#pragma once
// What an experiment hands over: a Markdown table on stdout and the same numbers as NAME.csv, everything as
// NAME.json, a figure NAME.png (gnuplot), and report.md with the question, the table, the figure and the closing
// sentence. Tables of sweeps are derived from the results (experiment/sweep.hpp's metrics), not formatted by hand.
//
//   experiment::report rep(out_dir, "rank_ablation", "Which rank?");
//   rep.table = experiment::sweep_table(groups, {{"r", …}, "trainable params", "eval loss after"});
//   rep.figure = experiment::sweep_figure(groups, "r", [](const auto& g) { return g.spec.lora.r; }, {"eval loss after"});
//   rep.json["runs"] = experiment::sweep_json(groups);
//   rep.conclusion = experiment::compare(…);
//   rep.write();                                     // stdout + OUT/rank_ablation.{csv,json,png} + OUT/report.md
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "dist/group.hpp"
#include "experiment/sweep.hpp"

namespace loralab::experiment {

namespace detail {
inline void write_text_atomic(const std::filesystem::path& path, const std::string& text) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  atomic_file f(path);
  f.write(text);
  f.commit();
}
inline std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}
}  // namespace detail

/// A results table: Markdown for people, CSV for programs. `csv_header`/`csv_rows` default to the same cells; a sweep
/// table puts "mean ± std" in Markdown and mean, std as two columns in CSV.
struct table {
  table() = default;
  explicit table(std::vector<std::string> columns) : header(std::move(columns)) {}
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> csv_header;
  std::vector<std::vector<std::string>> csv_rows;

  std::string markdown() const {
    std::vector<std::size_t> w(header.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
      w[c] = utf8_width(header[c]);
      for (const auto& r : rows) w[c] = std::max(w[c], utf8_width(r.at(c)));
    }
    const auto line = [&](const std::vector<std::string>& cells) {
      std::string s = "|";
      for (std::size_t c = 0; c < cells.size(); ++c) s += " " + cells[c] + std::string(w[c] - utf8_width(cells[c]), ' ') + " |";
      return s + "\n";
    };
    std::string out = line(header) + "|";
    for (auto n : w) out += std::string(n + 2, '-') + "|";
    out += "\n";
    for (const auto& r : rows) out += line(r);
    return out;
  }
  void print_markdown(std::FILE* out = stdout) const { fmt::print(out, "{}", markdown()); }

  std::string csv() const {
    const auto& h = csv_header.empty() ? header : csv_header;
    const auto& rs = csv_header.empty() ? rows : csv_rows;
    std::string text;
    const auto add = [&](const std::vector<std::string>& cells) {
      for (std::size_t c = 0; c < cells.size(); ++c) {
        if (c) text += ",";
        text += detail::csv_cell(cells[c]);
      }
      text += "\n";
    };
    add(h);
    for (const auto& r : rs) add(r);
    return text;
  }
  void write_csv(const std::filesystem::path& path) const { detail::write_text_atomic(path, csv()); }

 private:
  static std::size_t utf8_width(const std::string& s) {  // code points: "±" is one column
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  }
};

/// A column of a sweep table: a metric (by its name: mean ± std over the group's seeds; in CSV, mean and std as two
/// columns) or a cell computed from the group (a label such as "r", or a ratio to a neighbouring group).
struct column {
  column(const char* metric_name) : header(metric_named(metric_name).name), m(&metric_named(metric_name)) {}
  column(const std::string& metric_name) : column(metric_name.c_str()) {}
  column(std::string h, std::function<std::string(const run_group&)> f) : header(std::move(h)), cell(std::move(f)) {}
  std::string header;
  std::function<std::string(const run_group&)> cell;
  const metric* m = nullptr;
};

/// One row per group, one cell per column; CSV adds a "seeds" column after the computed columns that lead.
inline table sweep_table(const std::vector<run_group>& groups, const std::vector<column>& columns) {
  table t;
  bool seeds_written = false;
  const auto seeds_here = [&](const column& c) { return !seeds_written && c.m; };
  for (const auto& c : columns) {
    if (seeds_here(c)) t.csv_header.push_back("seeds"), seeds_written = true;
    t.header.push_back(c.header);
    t.csv_header.push_back(c.header);
    if (c.m) t.csv_header.push_back(c.header + " std");
  }
  for (const auto& g : groups) {
    std::vector<std::string> row, csv;
    seeds_written = false;
    for (const auto& c : columns) {
      if (seeds_here(c)) csv.push_back(std::to_string(g.runs.size())), seeds_written = true;
      if (!c.m) {
        row.push_back(c.cell(g)), csv.push_back(row.back());
        continue;
      }
      const spread s = g.of(*c.m);
      row.push_back(s.format(c.m->format));
      csv.push_back(s.n ? fmt::format("{}", s.mean) : ""), csv.push_back(s.n > 1 ? fmt::format("{}", s.std) : "");
    }
    t.rows.push_back(std::move(row)), t.csv_rows.push_back(std::move(csv));
  }
  return t;
}

/// Every group: its spec, each metric's mean/std/n, and every run (run_result::to_json).
inline nlohmann::ordered_json sweep_json(const std::vector<run_group>& groups) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& g : groups) {
    nlohmann::ordered_json j;
    j["label"] = g.name();
    nlohmann::ordered_json metrics;
    for (const auto& m : run_metrics()) {
      const spread s = g.of(m);
      metrics[m.key] = {{"mean", s.n ? nlohmann::ordered_json(s.mean) : nlohmann::ordered_json(nullptr)},
                        {"std", s.n > 1 ? nlohmann::ordered_json(s.std) : nlohmann::ordered_json(nullptr)},
                        {"n", s.n}};
    }
    j["metrics"] = metrics;
    j["runs"] = nlohmann::ordered_json::array();
    for (const auto& r : g.runs) j["runs"].push_back(r.to_json());
    out.push_back(j);
  }
  return out;
}

/// A figure: up to a few panels side by side, each with lines of (x, y, y error) points.
struct figure {
  struct series {
    std::string title;
    std::vector<double> x, y, yerr;  ///< yerr empty: no error bars
  };
  struct panel {
    std::string title, xlabel, ylabel;
    bool logscale_x = false;
    std::vector<std::string> xtics;  ///< labels at x = 0, 1, … (categorical axis); empty: numeric axis
    std::vector<series> lines;
  };
  std::string title;
  std::vector<panel> panels;

  /// The gnuplot script that draws the figure into `png`.
  std::string gnuplot_script(const std::filesystem::path& png) const {
    std::string s = fmt::format("set terminal pngcairo size {},480\nset output '{}'\nset multiplot layout 1,{} title '{}'\nset grid\n",
                                480 * std::max<std::size_t>(1, panels.size()) + 120, png.string(), std::max<std::size_t>(1, panels.size()),
                                escape(title));
    int block = 0;
    for (const auto& p : panels) {
      s += fmt::format("set title '{}'\nset xlabel '{}'\nset ylabel '{}'\n{}\nset offsets graph 0.05, graph 0.05, 0, 0\n",
                       escape(p.title), escape(p.xlabel), escape(p.ylabel), p.logscale_x ? "set logscale x 2" : "unset logscale x");
      if (!p.xtics.empty()) {
        s += "set xtics (";
        for (std::size_t i = 0; i < p.xtics.size(); ++i) s += fmt::format("{}'{}' {}", i ? ", " : "", escape(p.xtics[i]), i);
        s += ")\n";
      } else {
        s += "set xtics autofreq\n";
      }
      std::string plot = "plot ";
      for (std::size_t i = 0; i < p.lines.size(); ++i) {
        const auto& l = p.lines[i];
        const std::string name = fmt::format("$d{}", block++);
        s += name + " << EOD\n";
        for (std::size_t k = 0; k < l.x.size(); ++k)
          s += fmt::format("{} {} {}\n", l.x[k], l.y[k], k < l.yerr.size() ? l.yerr[k] : 0.0);
        s += "EOD\n";
        plot += fmt::format("{}{} using 1:2{} with {} lc {} title '{}'", i ? ", " : "", name, l.yerr.empty() ? "" : ":3",
                            l.yerr.empty() ? "linespoints" : "yerrorlines", i + 1, escape(l.title));
      }
      s += plot + "\n";
    }
    return s + "unset multiplot\n";
  }

 private:
  static std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) o += c == '\'' ? std::string("''") : std::string(1, c);
    return o;
  }
};

/// A panel with one line per metric over the groups: x = x_of(group) (or the group's index, labelled by name, when
/// x_of is empty), y = the metric's mean with its seed std as error bars.
inline figure::panel sweep_panel(const std::vector<run_group>& groups, const std::string& xlabel,
                                 const std::function<double(const run_group&)>& x_of, const std::string& metric_name,
                                 bool logscale_x = false) {
  const metric& m = metric_named(metric_name);
  figure::panel p;
  p.title = m.name, p.xlabel = xlabel, p.ylabel = m.name, p.logscale_x = logscale_x && bool(x_of);
  figure::series s;
  s.title = m.name;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const spread v = groups[i].of(m);
    s.x.push_back(x_of ? x_of(groups[i]) : double(i));
    s.y.push_back(v.mean);
    if (groups[i].runs.size() > 1) s.yerr.push_back(v.std);
    if (!x_of) p.xtics.push_back(groups[i].name());
  }
  if (s.yerr.size() != s.y.size()) s.yerr.clear();
  p.lines.push_back(std::move(s));
  return p;
}

/// Runs gnuplot on `script` (which `set output`s itself). Returns false, with a note on stderr, when gnuplot is missing
/// or fails: a figure is a convenience, the CSV is the result.
inline bool run_gnuplot(const std::string& script, const std::filesystem::path& script_path) {
  detail::write_text_atomic(script_path, script);
  const std::string cmd = "gnuplot '" + script_path.string() + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::cerr << "note: gnuplot failed or is missing; the figure was not made (script: " << script_path << ")\n";
    return false;
  }
  return true;
}

/// An experiment's outputs, written together by write().
struct report {
  report(std::filesystem::path out_dir, std::string name, std::string question)
      : dir(std::move(out_dir)), name(std::move(name)), question(std::move(question)) {}

  std::filesystem::path dir;
  std::string name;        ///< file stem: NAME.csv, NAME.json, NAME.png
  std::string question;    ///< report.md's first paragraph
  std::string setup;       ///< what was run (config), for report.md
  experiment::table table;
  std::optional<experiment::figure> figure;
  std::string conclusion;  ///< the closing sentence(s)
  nlohmann::ordered_json json = nlohmann::ordered_json::object();

  std::filesystem::path path(const std::string& ext) const { return dir / (name + ext); }

  /// Prints the table and the conclusion; writes NAME.csv, NAME.json, NAME.png (when gnuplot works) and report.md.
  /// Under mpirun only rank 0 does (every rank has the same results). When a sweep of this program left runs
  /// unfinished (experiment/sweep.hpp), the outputs name them (stdout, report.md, NAME.json "unfinished") and write()
  /// then ends the program with an error that says how to run only those.
  void write() const {
    const auto& unfinished = detail::unfinished_runs();
    if (dist::group::world().is_root()) write_files(unfinished);
    dist::check_collective(unfinished.empty(), unfinished.size(), " run(s) did not finish (named in ", (dir / "report.md").string(),
                           "; the table holds the others): fix the cause and rerun with --resume to run only those");
  }

 private:
  void write_files(const std::vector<std::string>& unfinished) const {
    std::string missing;
    for (const auto& u : unfinished) missing += "- " + u + "\n";
    table.print_markdown();
    if (!missing.empty()) fmt::print("\nNot finished ({} run(s); the table holds the others):\n{}", unfinished.size(), missing);
    if (!conclusion.empty()) fmt::print("\n{}\n", conclusion);
    std::filesystem::create_directories(dir);
    table.write_csv(path(".csv"));
    nlohmann::ordered_json j = json;
    j["conclusion"] = conclusion;
    if (!unfinished.empty()) j["unfinished"] = unfinished;
    detail::write_text_atomic(path(".json"), j.dump(2));
    bool plotted = false;
    if (figure) plotted = run_gnuplot(figure->gnuplot_script(path(".png")), path(".gp"));
    std::string md = "# " + name + "\n\n" + question + "\n\n";
    if (!setup.empty()) md += "```\n" + setup + (setup.ends_with("\n") ? "" : "\n") + "```\n\n";
    md += table.markdown() + "\n";
    if (!missing.empty()) md += "**Not finished** (" + std::to_string(unfinished.size()) + " run(s); the table holds the others):\n\n" + missing + "\n";
    if (plotted) md += "![" + name + "](" + name + ".png)\n\n";
    if (!conclusion.empty()) md += conclusion + "\n";
    md += "\nData: [" + name + ".csv](" + name + ".csv), [" + name + ".json](" + name + ".json).\n";
    detail::write_text_atomic(dir / "report.md", md);
    fmt::print("wrote {}, {}, {}{}\n", path(".csv").string(), path(".json").string(), (dir / "report.md").string(),
               plotted ? " and " + path(".png").string() : "");
  }
};

}  // namespace loralab::experiment

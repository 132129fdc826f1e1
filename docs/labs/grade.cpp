// SPDX-License-Identifier: MIT
/// \file grade.cpp
/// \brief Grades a student's results directory for the labs in docs/labs/: are the program's files there and
///        readable, do they agree with each other, and does every claim in answers.json follow from the data?
///
///   build/labs/grade --lab merge   results/lab_merge     # merge_compare.{json,csv,png} + answers.json
///   build/labs/grade --lab speedup results/lab_speedup   # lora_vs_qlora.{json,csv,png} + answers.json
///
/// Output: one line per check, `ok   WHAT (note)` or `FAIL WHAT: WHY` (WHY names the file, the key and the value),
/// then `score: PASSED/CHECKS`. Exit code 0 when it graded, whatever the score; 2 for a usage error (no or unknown
/// --lab, no DIR, DIR not a directory). Malformed input is never a crash: a missing file, invalid JSON, a wrong
/// type, a null (what nlohmann writes for NaN), a missing key or an empty list is a FAIL of the checks that need it.
///
/// Tolerances: a CSV cell agrees with the JSON when they differ by at most half a unit in the CSV's last printed
/// digit (the programs print rounded values of the JSON's numbers). A claimed number agrees with the data within
/// 5% of the data's value or a stated floor, whichever is larger (the floor covers numbers read off the CSV's
/// rounding, e.g. a loss gap of 0.30%); counts, names and true/false claims must match exactly. Each lab's page
/// (docs/labs/merge_methods.md, docs/labs/lora_vs_qlora_speedup.md) defines every key and its rule.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---- faults: what is wrong with a submission, as one sentence naming the file, the key and the value ----

struct fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... A>
[[noreturn]] void fail_with(fmt::format_string<A...> f, A&&... a) {
  throw fault(fmt::format(f, std::forward<A>(a)...));
}

/// A value as it reads in the file, cut short: `"abc"`, `[1,2,…`.
std::string show(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

/// `s` with every byte that is not part of well-formed UTF-8 replaced by '?': messages quote a student's bytes.
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok) out.append(s.substr(i, n)), i += n;
    else out += '?', ++i;
  }
  return out;
}

// ---- node: a JSON value and the path that reached it ("merge_compare.json: variants[2] (merged hf).perplexity") ----

class node {
 public:
  node(const json& j, std::string file, std::string path = {}) : j_(&j), file_(std::move(file)), path_(std::move(path)) {}

  std::string name() const { return path_.empty() ? file_ : file_ + ": " + path_; }
  const json& raw() const { return *j_; }

  bool has(std::string_view key) const { return j_->is_object() && j_->contains(key); }
  node operator[](std::string_view key) const {
    if (!j_->is_object()) fail_with("{} is {} {}, not an object", name(), j_->type_name(), show(*j_));
    const auto it = j_->find(key);
    if (it == j_->end()) fail_with("{}: key '{}' is missing", name(), key);
    return node(*it, file_, path_.empty() ? std::string(key) : path_ + "." + std::string(key));
  }
  /// The elements of an array; `label(i)` may add a name to each element's path.
  std::vector<node> items(const std::function<std::string(std::size_t)>& label = {}) const {
    if (!j_->is_array()) fail_with("{} is {} {}, not a list", name(), j_->type_name(), show(*j_));
    std::vector<node> out;
    for (std::size_t i = 0; i < j_->size(); ++i) {
      std::string p = fmt::format("{}[{}]", path_, i);
      if (label) p += " (" + label(i) + ")";
      out.emplace_back((*j_)[i], file_, p);
    }
    return out;
  }
  std::vector<node> non_empty_items(const std::function<std::string(std::size_t)>& label = {}) const {
    auto v = items(label);
    if (v.empty()) fail_with("{} is an empty list", name());
    return v;
  }

  double number() const {
    if (j_->is_null()) fail_with("{} is null, not a number (a NaN or an infinity is written as null)", name());
    if (!j_->is_number()) fail_with("{} is {} {}, not a number", name(), j_->type_name(), show(*j_));
    const double x = j_->get<double>();
    if (!std::isfinite(x)) fail_with("{} = {} is not a finite number", name(), x);
    return x;
  }
  double positive() const {
    const double x = number();
    if (!(x > 0)) fail_with("{} = {} must be > 0", name(), x);
    return x;
  }
  double non_negative() const {
    const double x = number();
    if (!(x >= 0)) fail_with("{} = {} must be >= 0", name(), x);
    return x;
  }
  long long integer() const {
    const double x = number();
    if (x != std::floor(x) || std::abs(x) > 9.0e15) fail_with("{} = {} is not a whole number", name(), show(*j_));
    return j_->is_number_float() ? (long long)x : j_->get<long long>();
  }
  bool boolean() const {
    if (!j_->is_boolean()) fail_with("{} is {} {}, not true or false", name(), j_->type_name(), show(*j_));
    return j_->get<bool>();
  }
  std::string string() const {
    if (!j_->is_string()) fail_with("{} is {} {}, not a string", name(), j_->type_name(), show(*j_));
    return j_->get<std::string>();
  }

 private:
  const json* j_;
  std::string file_, path_;
};

// ---- CSV: the programs write a header and rows of unquoted fields separated by commas ----

struct csv_file {
  std::string file;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;

  std::size_t column(std::string_view col) const {
    for (std::size_t c = 0; c < header.size(); ++c)
      if (header[c] == col) return c;
    fail_with("{} has no column '{}'", file, col);
  }
};

/// Half a unit in the last digit of a printed number: 0.005 for "1.23", 5e-8 for "2.77e-05", 0.5 for "5758".
double printed_tolerance(std::string_view s) {
  const std::size_t e = s.find_first_of("eE");
  const std::string_view mantissa = s.substr(0, e);
  const std::size_t dot = mantissa.find('.');
  const int decimals = dot == std::string_view::npos ? 0 : int(mantissa.size() - dot - 1);
  int exponent = 0;
  if (e != std::string_view::npos) {
    std::string_view ex = s.substr(e + 1);
    if (!ex.empty() && ex.front() == '+') ex.remove_prefix(1);
    std::from_chars(ex.data(), ex.data() + ex.size(), exponent);
  }
  return 0.5 * std::pow(10.0, exponent - decimals);
}

/// One row of a CSV, named by its key ("merged hf", "N=32 QLoRA") in messages.
class csv_row {
 public:
  csv_row(const csv_file& f, std::size_t i, std::string label) : f_(&f), i_(i), label_(std::move(label)) {}
  std::string where(std::string_view col) const { return fmt::format("{}: row '{}', column '{}'", f_->file, label_, col); }
  const std::string& cell(std::string_view col) const { return f_->rows[i_][f_->column(col)]; }
  double number(std::string_view col) const {
    const std::string& s = cell(col);
    char* end = nullptr;
    const double x = s.empty() ? NAN : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) fail_with("{} = '{}' is not a number", where(col), s);
    if (!std::isfinite(x)) fail_with("{} = '{}' is not a finite number", where(col), s);
    return x;
  }
  /// Records a difference when the cell and the JSON's value differ by more than the cell's rounding.
  void agree(std::vector<std::string>& diffs, std::string_view col, double truth, const std::string& source) const {
    const double x = number(col);
    const double tol = printed_tolerance(cell(col)) * (1 + 1e-9) + 1e-12 * std::abs(truth);
    if (!(std::abs(x - truth) <= tol))
      diffs.push_back(fmt::format("{} = {} but {} = {:.8g} (allowed ±{:.2g}, the CSV's rounding)", where(col), cell(col), source, truth, tol));
  }

 private:
  const csv_file* f_;
  std::size_t i_;
  std::string label_;
};

// ---- the grader: runs checks, prints one line each, counts ----

struct verdict {
  bool ok = true;
  std::string note;  ///< ok: what was found (optional); not ok: why
};
verdict pass(std::string note = {}) { return {true, std::move(note)}; }
verdict reject(std::string why) { return {false, std::move(why)}; }

const std::string answers_json = "answers.json";

class grader {
 public:
  explicit grader(fs::path dir) : dir_(std::move(dir)) {}
  int passed() const { return passed_; }
  int total() const { return total_; }

  /// Runs one check: `body` returns its verdict, or throws a fault that becomes the reason it failed.
  template <class F>
  void check(const std::string& what, F&& body) {
    verdict v;
    try {
      v = body();
    } catch (const fault& e) {
      v = reject(e.what());
    } catch (const std::exception& e) {
      v = reject(std::string("unexpected error: ") + e.what());
    }
    ++total_;
    if (v.ok) ++passed_, fmt::print("ok   {}{}\n", printable(what), v.note.empty() ? "" : " (" + printable(v.note) + ")");
    else fmt::print("FAIL {}: {}\n", printable(what), printable(v.note));
    std::fflush(stdout);
  }

  /// One check: FILE is present and valid JSON. Empty when it is not.
  std::optional<json> load_json(const std::string& file) {
    std::optional<json> out;
    check(file + ": present and valid JSON", [&] {
      const std::string text = read(file);
      try {
        out = json::parse(text);
      } catch (const json::exception& e) {  // a syntax error, or a number too large for a double (1e400)
        fail_with("{} is not valid JSON: {}", file, e.what());
      }
      return pass();
    });
    return out;
  }

  /// One check: FILE is present, has a header and at least one row, every row as many fields as the header.
  std::optional<csv_file> load_csv(const std::string& file) {
    std::optional<csv_file> out;
    check(file + ": present and well-formed CSV", [&] {
      std::istringstream in(read(file));
      csv_file f{file, {}, {}};
      std::size_t line_no = 0;
      for (std::string line; std::getline(in, line);) {
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        std::vector<std::string> cells;
        for (std::size_t pos = 0;;) {
          const std::size_t comma = line.find(',', pos);
          cells.push_back(line.substr(pos, comma - pos));
          if (comma == std::string::npos) break;
          pos = comma + 1;
        }
        if (f.header.empty()) f.header = std::move(cells);
        else if (cells.size() != f.header.size())
          fail_with("{}: line {} has {} fields, the header {}", file, line_no, cells.size(), f.header.size());
        else f.rows.push_back(std::move(cells));
      }
      if (f.header.empty()) fail_with("{} is empty", file);
      if (f.rows.empty()) fail_with("{} has a header and no rows", file);
      out = std::move(f);
      return pass(fmt::format("{} rows", out->rows.size()));
    });
    return out;
  }

  /// One check: FILE is present and starts with PNG's 8-byte signature.
  void check_png(const std::string& file) {
    check(file + ": present and a PNG image", [&] {
      const std::string bytes = read(file);
      if (bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || bytes.size() <= 8)
        fail_with("{} does not start with the PNG signature 89 50 4E 47 0D 0A 1A 0A", file);
      return pass();
    });
  }

 private:
  std::string read(const std::string& file) const {
    const fs::path p = dir_ / file;
    std::error_code ec;
    if (!fs::exists(p, ec)) fail_with("{} is missing from {}", file, dir_.string());
    if (!fs::is_regular_file(p, ec)) fail_with("{} is not a regular file", file);
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    if (!in) fail_with("{}: cannot read it", file);
    return s.str();
  }

  fs::path dir_;
  int passed_ = 0, total_ = 0;
};

/// The root of a loaded file, or a fault saying that the file's own check failed.
node need(const std::optional<json>& j, const std::string& file) {
  if (!j) fail_with("cannot check: {} is missing or not valid (see its line above)", file);
  return node(*j, file);
}
const csv_file& need(const std::optional<csv_file>& f, const std::string& file) {
  if (!f) fail_with("cannot check: {} is missing or not valid (see its line above)", file);
  return *f;
}

/// One check: the CSV has the program's columns (extra columns are allowed).
void check_columns(grader& g, const std::optional<csv_file>& csv, const std::string& file, const std::vector<std::string>& columns) {
  g.check(file + ": has the program's columns", [&] {
    const csv_file& f = need(csv, file);
    std::string missing;
    for (const auto& c : columns)
      if (std::find(f.header.begin(), f.header.end(), c) == f.header.end()) missing += (missing.empty() ? "'" : ", '") + c + "'";
    if (!missing.empty()) fail_with("{} lacks the column(s) {}", file, missing);
    return pass();
  });
}

// ---- claims: a key of answers.json against the value the data give ----

/// What the data say, and how that was computed (for the message).
template <class T>
struct fact {
  T value;
  std::string because;
};

/// The data's value for a claim; a fault in the data says the claim cannot be verified.
template <class T>
fact<T> from_data(const std::function<fact<T>()>& truth) {
  try {
    return truth();
  } catch (const fault& e) {
    fail_with("cannot verify it: {}", e.what());
  }
}

/// The claimed number agrees with the data within max(rel·|data|, floor).
void claim_number(grader& g, const std::optional<json>& ans, const std::string& key, double rel, double floor,
                  const std::function<node(node)>& pick, const std::function<fact<double>()>& truth) {
  g.check(answers_json + ": " + key, [&] {
    const node c = pick(need(ans, answers_json));
    const double claim = c.number();
    const fact<double> t = from_data(truth);
    const double tol = std::max(rel * std::abs(t.value), floor);
    if (!(std::abs(claim - t.value) <= tol))
      return reject(fmt::format("{} = {} but the data give {:.6g} ({}); allowed ±{:.2g} (the larger of {:g}% and {:g})", c.name(),
                                show(c.raw()), t.value, t.because, tol, 100 * rel, floor));
    return pass(fmt::format("claimed {}, data {:.6g}", show(c.raw()), t.value));
  });
}
void claim_number(grader& g, const std::optional<json>& ans, const std::string& key, double rel, double floor,
                  const std::function<fact<double>()>& truth) {
  claim_number(g, ans, key, rel, floor, [&](node a) { return a[key]; }, truth);
}

void claim_bool(grader& g, const std::optional<json>& ans, const std::string& key, const std::function<fact<bool>()>& truth) {
  g.check(answers_json + ": " + key, [&] {
    const node c = need(ans, answers_json)[key];
    const bool claim = c.boolean();
    const fact<bool> t = from_data(truth);
    if (claim != t.value) return reject(fmt::format("{} = {} but the data say {} ({})", c.name(), claim, t.value, t.because));
    return pass(fmt::format("claimed {}: {}", claim, t.because));
  });
}

void claim_string(grader& g, const std::optional<json>& ans, const std::string& key, const std::function<fact<std::string>()>& truth) {
  g.check(answers_json + ": " + key, [&] {
    const node c = need(ans, answers_json)[key];
    const std::string claim = c.string();
    const fact<std::string> t = from_data(truth);
    if (claim != t.value) return reject(fmt::format("{} = \"{}\" but the data say \"{}\" ({})", c.name(), claim, t.value, t.because));
    return pass(fmt::format("claimed \"{}\"", claim));
  });
}

void claim_integer(grader& g, const std::optional<json>& ans, const std::string& key, const std::function<fact<long long>()>& truth) {
  g.check(answers_json + ": " + key, [&] {
    const node c = need(ans, answers_json)[key];
    const long long claim = c.integer();
    const fact<long long> t = from_data(truth);
    if (claim != t.value) return reject(fmt::format("{} = {} but the data give {} ({})", c.name(), claim, t.value, t.because));
    return pass(fmt::format("claimed {}", claim));
  });
}

void check_lab_key(grader& g, const std::optional<json>& ans, const std::string& lab) {
  g.check(answers_json + ": lab", [&] {
    const node c = need(ans, answers_json)["lab"];
    if (c.string() != lab) fail_with("{} = {} but this is the \"{}\" lab", c.name(), show(c.raw()), lab);
    return pass();
  });
}

// ---- lab 1: merge methods (merge_compare) ----

const std::string merge_json = "merge_compare.json", merge_csv = "merge_compare.csv", merge_png = "merge_compare.png";
/// A merge counts as equal to the unmerged model when no logit differs by more than PEFT's test tolerance (atol 1e-3).
constexpr double merge_equal_tolerance = 1e-3;

/// merge_compare.json, read far enough to name its variants.
struct merge_data {
  std::string base;
  std::size_t prompts = 0;
  std::vector<std::pair<std::string, node>> variants;  // in file order

  static merge_data read(const std::optional<json>& j) {
    const node root = need(j, merge_json);
    merge_data d;
    d.base = root["config"]["base"].string();
    d.prompts = root["config"]["prompts"].non_empty_items().size();
    std::vector<std::string> names;
    const json& raw = root["variants"].raw();
    for (const node& v : root["variants"].non_empty_items([&](std::size_t i) {
           return raw[i].is_object() && raw[i].contains("name") && raw[i]["name"].is_string() ? raw[i]["name"].get<std::string>() : "?";
         }))
      d.variants.emplace_back(v["name"].string(), v);
    return d;
  }
  std::string requantized() const { return "requantized " + base; }
  node variant(const std::string& name) const {
    for (const auto& [n, v] : variants)
      if (n == name) return v;
    fail_with("{}: variants has no '{}'", merge_json, name);
  }
  double perplexity(const std::string& name) const { return variant(name)["perplexity"].positive(); }
  double dlogit(const std::string& name) const { return variant(name)["max_abs_dlogit_vs_unmerged"].non_negative(); }
  /// How many greedy completions of `name` equal the unmerged model's.
  long long same_completions(const std::string& name) const {
    const auto a = variant(name)["completions"].items(), b = variant("unmerged")["completions"].items();
    if (a.size() != prompts || b.size() != prompts)
      fail_with("{}: completions of '{}' and 'unmerged' must have one entry per prompt ({})", merge_json, name, prompts);
    long long same = 0;
    for (std::size_t p = 0; p < prompts; ++p) same += a[p].string() == b[p].string();
    return same;
  }
};

void grade_merge(grader& g) {
  const auto js = g.load_json(merge_json);
  const auto csv = g.load_csv(merge_csv);
  g.check_png(merge_png);
  const auto ans = g.load_json(answers_json);

  // merge_compare.json on its own: the config, the five variants, every value finite and in range.
  g.check(merge_json + ": config names the base, the prompts and the validation text", [&] {
    const node c = need(js, merge_json)["config"];
    const std::string base = c["base"].string();
    const auto prompts = c["prompts"].non_empty_items();
    for (const auto& p : prompts) p.string();
    if (c["validation_tokens"].integer() <= 0) fail_with("{} must be > 0", c["validation_tokens"].name());
    return pass(fmt::format("base {}, {} prompts", base, prompts.size()));
  });
  std::optional<merge_data> d;
  g.check(merge_json + ": variants is a list of distinct names", [&] {
    d = merge_data::read(js);
    std::set<std::string> seen;
    for (const auto& [n, v] : d->variants)
      if (!seen.insert(n).second) fail_with("{}: variant '{}' appears twice", merge_json, n);
    return pass(fmt::format("{} variants", d->variants.size()));
  });
  // (5) is the merge requantized to the base's own 4-bit scheme: the lab runs on a 4-bit base (nf4+dq, the default).
  for (const std::string& name : {std::string("base"), std::string("unmerged"), std::string("merged hf"), std::string("merged meta"),
                                 d ? d->requantized() : std::string("requantized (the base's scheme)")})
    g.check(fmt::format("{}: variant '{}' present", merge_json, name), [&] {
      if (!d) fail_with("cannot check: {}'s variants are unreadable (see above)", merge_json);
      for (const auto& v : d->variants)
        if (v.first == name) return pass();
      fail_with("{}: variants has no '{}'{}", merge_json, name,
                name.starts_with("requantized") ? " (merge_compare writes it only over a 4-bit --base; the lab's is nf4+dq)" : "");
    });
  if (d)
    for (const auto& [name, v] : d->variants)
      g.check(fmt::format("{}: variant '{}' values finite and in range", merge_json, name), [&, &name = name, &v = v] {
        const long long bytes = v["bytes"].integer();
        if (bytes < 0 || (name == "base") != (bytes == 0))
          fail_with("{} = {}: the base is in memory (0 bytes), every other variant has files (> 0)", v["bytes"].name(), bytes);
        (void)v["load_seconds"].non_negative();
        (void)v["tokens_per_second"].positive();
        if (v["perplexity"].number() < 1) fail_with("{} = {} is below 1, which no perplexity is", v["perplexity"].name(), v["perplexity"].number());
        v["max_abs_dlogit_vs_unmerged"].non_negative();
        const auto comp = v["completions"].items();
        if (comp.size() != d->prompts) fail_with("{} has {} entries, one per prompt is {}", v["completions"].name(), comp.size(), d->prompts);
        for (const auto& c : comp) c.string();
        return pass();
      });
  g.check(merge_json + ": the unmerged model is the reference (its max |Δlogit| is 0)", [&] {
    if (!d) fail_with("cannot check: {}'s variants are unreadable (see above)", merge_json);
    if (const double x = d->dlogit("unmerged"); x != 0) fail_with("{}: unmerged's max_abs_dlogit_vs_unmerged = {}, not 0", merge_json, x);
    return pass();
  });
  g.check(merge_json + ": requantization error (max_abs, rel_rms) finite and >= 0", [&] {
    const node r = need(js, merge_json)["requantization"];
    return pass(fmt::format("rel_rms {:.3g}, max_abs {:.3g}", r["rel_rms"].non_negative(), r["max_abs"].non_negative()));
  });

  // merge_compare.csv against merge_compare.json: the same variants in the same order, every number the JSON's rounded.
  check_columns(g, csv, merge_csv, {"variant", "files MiB", "build/load s", "tokens/s", "perplexity", "Δppl vs unmerged %",
                                    "max |Δlogit| vs unmerged", "greedy text = unmerged"});
  g.check(merge_csv + ": one row per variant of " + merge_json + ", in the same order", [&] {
    const csv_file& f = need(csv, merge_csv);
    if (!d) fail_with("cannot check: {}'s variants are unreadable (see above)", merge_json);
    std::vector<std::string> rows, vars;
    for (std::size_t i = 0; i < f.rows.size(); ++i) rows.push_back(csv_row(f, i, "").cell("variant"));
    for (const auto& v : d->variants) vars.push_back(v.first);
    if (rows != vars) fail_with("{} has rows '{}' but {} has variants '{}'", merge_csv, fmt::join(rows, "', '"), merge_json, fmt::join(vars, "', '"));
    return pass();
  });
  if (d)
    for (const auto& [name, v] : d->variants)
      g.check(fmt::format("{}: row '{}' agrees with {}", merge_csv, name, merge_json), [&, &name = name, &v = v] {
        const csv_file& f = need(csv, merge_csv);
        std::optional<csv_row> row;
        for (std::size_t i = 0; i < f.rows.size() && !row; ++i)
          if (f.rows[i][f.column("variant")] == name) row.emplace(f, i, name);
        if (!row) fail_with("{} has no row '{}'", merge_csv, name);
        std::vector<std::string> diffs;
        const long long bytes = v["bytes"].integer();
        if (bytes == 0 && row->cell("files MiB") != "-")
          diffs.push_back(fmt::format("{} = {} but {} = 0 (printed '-')", row->where("files MiB"), row->cell("files MiB"), v["bytes"].name()));
        if (bytes != 0) row->agree(diffs, "files MiB", double(bytes) / (1 << 20), v["bytes"].name() + " / 2^20");
        row->agree(diffs, "build/load s", v["load_seconds"].number(), v["load_seconds"].name());
        row->agree(diffs, "tokens/s", v["tokens_per_second"].number(), v["tokens_per_second"].name());
        row->agree(diffs, "perplexity", v["perplexity"].number(), v["perplexity"].name());
        row->agree(diffs, "Δppl vs unmerged %", 100 * (d->perplexity(name) / d->perplexity("unmerged") - 1),
                   "100·(perplexity / unmerged's − 1)");
        row->agree(diffs, "max |Δlogit| vs unmerged", v["max_abs_dlogit_vs_unmerged"].number(), v["max_abs_dlogit_vs_unmerged"].name());
        const std::string greedy = fmt::format("{}/{}", d->same_completions(name), d->prompts);
        if (row->cell("greedy text = unmerged") != greedy)
          diffs.push_back(fmt::format("{} = {} but the completions in {} give {}", row->where("greedy text = unmerged"),
                                      row->cell("greedy text = unmerged"), merge_json, greedy));
        if (!diffs.empty()) return reject(fmt::format("{}", fmt::join(diffs, "; ")));
        return pass();
      });

  // The claims.
  const auto data = [&] {
    if (!d) fail_with("{}'s variants are unreadable (see above)", merge_json);
    return *d;
  };
  check_lab_key(g, ans, "merge");
  claim_bool(g, ans, "merged_equals_unmerged", [&] {
    const double hf = data().dlogit("merged hf"), meta = data().dlogit("merged meta");
    const bool eq = hf <= merge_equal_tolerance && meta <= merge_equal_tolerance;
    return fact<bool>{eq, fmt::format("max |Δlogit| vs unmerged: merged hf {:.3g}, merged meta {:.3g}; equal means both <= {:g}", hf,
                                      meta, merge_equal_tolerance)};
  });
  claim_number(g, ans, "max_abs_dlogit", 0.05, 1e-9, [&] {
    return fact<double>{std::max(data().dlogit("merged hf"), data().dlogit("merged meta")),
                        "the larger max |Δlogit| of merged hf and merged meta"};
  });
  claim_number(g, ans, "adapter_perplexity_change_percent", 0.05, 0.05, [&] {
    return fact<double>{100 * (data().perplexity("unmerged") / data().perplexity("base") - 1), "100·(unmerged / base perplexity − 1)"};
  });
  claim_number(g, ans, "requantized_perplexity_increase_percent", 0.05, 0.05, [&] {
    return fact<double>{100 * (data().perplexity(data().requantized()) / data().perplexity("unmerged") - 1),
                        "100·(requantized / unmerged perplexity − 1)"};
  });
  claim_number(g, ans, "fraction_of_gain_kept", 0.05, 0.01, [&] {
    const double base = data().perplexity("base"), un = data().perplexity("unmerged"), rq = data().perplexity(data().requantized());
    if (base == un) fail_with("{}: the adapter does not change perplexity (base = unmerged = {})", merge_json, base);
    return fact<double>{(base - rq) / (base - un), "(base − requantized) / (base − unmerged) perplexity"};
  });
  claim_string(g, ans, "smallest_merged_layout", [&] {
    std::string best;
    long long best_bytes = -1;
    for (const std::string& name : {std::string("merged hf"), std::string("merged meta"), data().requantized()})
      if (const long long b = data().variant(name)["bytes"].integer(); best_bytes < 0 || b < best_bytes) best = name, best_bytes = b;
    return fact<std::string>{best, fmt::format("{} bytes, the fewest of the merged layouts", best_bytes)};
  });
  claim_integer(g, ans, "requantized_greedy_matches", [&] {
    return fact<long long>{data().same_completions(data().requantized()),
                           fmt::format("requantized completions equal to unmerged's, of {}", data().prompts)};
  });
  claim_number(g, ans, "merged_speedup_over_unmerged", 0.05, 0, [&] {
    return fact<double>{data().variant("merged hf")["tokens_per_second"].positive() / data().variant("unmerged")["tokens_per_second"].positive(),
                        "tokens/s of merged hf / unmerged"};
  });
}

// ---- lab 2: LoRA vs QLoRA speed-up (lora_vs_qlora) ----

const std::string speed_json = "lora_vs_qlora.json", speed_csv = "lora_vs_qlora.csv", speed_png = "lora_vs_qlora.png";
/// QLoRA "matches" LoRA when its eval loss after training is within this many percent of LoRA's.
constexpr double loss_match_percent = 1.0;

/// lora_vs_qlora.json, read far enough to find each (size, method) run.
struct speed_data {
  double epochs = 0;
  long long batch = 0;
  std::vector<long long> sizes;  // config.sizes, ascending
  std::vector<std::pair<std::string, node>> runs;  // "N=32 QLoRA", in file order

  static std::string label(long long size, const std::string& method) { return fmt::format("N={} {}", size, method); }
  static speed_data read(const std::optional<json>& j) {
    const node root = need(j, speed_json), c = root["config"];
    speed_data d;
    d.epochs = c["epochs"].positive();
    d.batch = c["batch_size"].integer();
    if (d.batch <= 0) fail_with("{} = {} must be > 0", c["batch_size"].name(), d.batch);
    for (const node& s : c["sizes"].non_empty_items()) {
      d.sizes.push_back(s.integer());
      if (d.sizes.back() <= 0) fail_with("{} = {}: a training set has at least 1 record", s.name(), d.sizes.back());
    }
    if (!std::is_sorted(d.sizes.begin(), d.sizes.end()) || std::adjacent_find(d.sizes.begin(), d.sizes.end()) != d.sizes.end())
      fail_with("{}: config.sizes [{}] must be distinct and ascending", speed_json, fmt::join(d.sizes, ", "));
    const json& raw = root["runs"].raw();
    for (const node& r : root["runs"].non_empty_items([&](std::size_t i) {
           const json& x = raw[i];
           return x.is_object() && x.contains("size") && x["size"].is_number_integer() && x.contains("method") && x["method"].is_string()
                      ? label(x["size"].get<long long>(), x["method"].get<std::string>())
                      : "?";
         }))
      d.runs.emplace_back(label(r["size"].integer(), r["method"].string()), r);
    return d;
  }
  long long largest() const { return sizes.back(); }
  long long smallest() const { return sizes.front(); }
  node run(long long size, const std::string& method) const {
    for (const auto& [n, r] : runs)
      if (n == label(size, method)) return r;
    fail_with("{}: runs has no {} run at size {}", speed_json, method, size);
  }
  double value(long long size, const std::string& method, const std::string& key) const { return run(size, method)[key].positive(); }
  double ratio(long long size, const std::string& key) const { return value(size, "QLoRA", key) / value(size, "LoRA", key); }
  /// QLoRA's eval loss after training against LoRA's, in percent.
  double gap_percent(long long size) const { return 100 * (ratio(size, "eval_loss_after") - 1); }
};

void grade_speedup(grader& g) {
  const auto js = g.load_json(speed_json);
  const auto csv = g.load_csv(speed_csv);
  g.check_png(speed_png);
  const auto ans = g.load_json(answers_json);

  // lora_vs_qlora.json on its own.
  std::optional<speed_data> d;
  g.check(speed_json + ": config (sizes, epochs, batch size) and runs readable, at two sizes or more", [&] {
    d = speed_data::read(js);
    if (d->sizes.size() < 2) fail_with("{}: config.sizes has one size ({}): the trend questions need two or more", speed_json, d->sizes[0]);
    return pass(fmt::format("sizes {}, {} runs", fmt::join(d->sizes, ","), d->runs.size()));
  });
  g.check(speed_json + ": runs are distinct (size, method) pairs of LoRA and QLoRA at config.sizes", [&] {
    if (!d) fail_with("cannot check: {}'s config or runs are unreadable (see above)", speed_json);
    std::set<std::string> seen;
    for (const auto& [label, r] : d->runs) {
      const std::string method = r["method"].string();
      const long long size = r["size"].integer();
      if (method != "LoRA" && method != "QLoRA") fail_with("{} = \"{}\", not LoRA or QLoRA", r["method"].name(), method);
      if (std::find(d->sizes.begin(), d->sizes.end(), size) == d->sizes.end())
        fail_with("{} = {} is not in config.sizes [{}]", r["size"].name(), size, fmt::join(d->sizes, ", "));
      if (!seen.insert(label).second)
        fail_with("{}: two runs are {} (--seeds N > 1 writes one run per seed; the lab grades a one-seed run)", speed_json, label);
    }
    return pass();
  });
  if (d)
    for (long long n : d->sizes)
      g.check(fmt::format("{}: size {} has a LoRA and a QLoRA run", speed_json, n), [&] {
        (void)d->run(n, "LoRA");
        (void)d->run(n, "QLoRA");
        return pass();
      });
  if (d)
    for (const auto& [label, r] : d->runs) {
      g.check(fmt::format("{}: run {} values finite and in range", speed_json, label), [&, &r = r] {
        if (r["steps"].integer() <= 0) fail_with("{} must be > 0", r["steps"].name());
        for (const char* key : {"train_runtime", "tokens_per_second", "eval_loss_before", "eval_loss_after"}) (void)r[key].positive();
        for (const char* key : {"planned_memory_bytes", "frozen_linears_bytes", "peak_rss_bytes"})
          if (r[key].integer() <= 0) fail_with("{} must be > 0", r[key].name());
        if (const double b = r["linear_bits_per_weight"].positive(); b > 64) fail_with("{} = {} is more than 64", r["linear_bits_per_weight"].name(), b);
        for (const node& l : r["step_losses"].items()) l.positive();
        return pass();
      });
      g.check(fmt::format("{}: run {} steps = ceil(epochs · ceil(size / batch_size)), one loss each", speed_json, label), [&, &r = r] {
        const long long n = r["size"].integer(), steps = r["steps"].integer();
        const long long expected = (long long)std::ceil(d->epochs * double((n + d->batch - 1) / d->batch));
        if (steps != expected)
          fail_with("{} = {} but size {}, batch_size {}, epochs {:g} give {}", r["steps"].name(), steps, n, d->batch, d->epochs, expected);
        if (const auto losses = r["step_losses"].items(); (long long)losses.size() != steps)
          fail_with("{} has {} entries for {} steps", r["step_losses"].name(), losses.size(), steps);
        return pass(fmt::format("{} steps", steps));
      });
    }
  g.check(speed_json + ": every run freezes the same linears (bytes per method equal at every size, the same weight count)", [&] {
    if (!d) fail_with("cannot check: {}'s config or runs are unreadable (see above)", speed_json);
    std::map<std::string, std::pair<long long, std::string>> bytes;  // method → (bytes, where)
    double weights = 0;
    std::string weights_at;
    for (const auto& [label, r] : d->runs) {
      const long long b = r["frozen_linears_bytes"].integer();
      const auto [it, fresh] = bytes.try_emplace(r["method"].string(), b, r["frozen_linears_bytes"].name());
      if (!fresh && it->second.first != b) fail_with("{} = {} but {} = {}", r["frozen_linears_bytes"].name(), b, it->second.second, it->second.first);
      const double w = 8.0 * double(b) / r["linear_bits_per_weight"].positive();
      if (weights_at.empty()) weights = w, weights_at = label;
      else if (std::abs(w - weights) > 1e-6 * weights)
        fail_with("{}: frozen_linears_bytes · 8 / linear_bits_per_weight gives {:.0f} weights for {} but {:.0f} for {}", speed_json, w, label,
              weights, weights_at);
    }
    return pass(fmt::format("{:.0f} frozen linear weights", weights));
  });

  // lora_vs_qlora.csv against lora_vs_qlora.json.
  check_columns(g, csv, speed_csv, {"size", "method", "steps", "time s", "tokens/s", "QLoRA/LoRA time", "frozen linears MiB", "bits/weight",
                                    "planned MiB", "peak RSS MiB", "eval loss before", "eval loss after", "gap vs LoRA %"});
  const auto row_label = [](const csv_file& f, std::size_t i) {
    const csv_row row(f, i, "");
    return fmt::format("N={} {}", row.cell("size"), row.cell("method"));
  };
  g.check(speed_csv + ": one row per run of " + speed_json + ", in the same order", [&] {
    const csv_file& f = need(csv, speed_csv);
    if (!d) fail_with("cannot check: {}'s config or runs are unreadable (see above)", speed_json);
    std::vector<std::string> rows, runs;
    for (std::size_t i = 0; i < f.rows.size(); ++i) rows.push_back(row_label(f, i));
    for (const auto& r : d->runs) runs.push_back(r.first);
    if (rows != runs) fail_with("{} has rows '{}' but {} has runs '{}'", speed_csv, fmt::join(rows, "', '"), speed_json, fmt::join(runs, "', '"));
    return pass();
  });
  if (d)
    for (const auto& [label, r] : d->runs)
      g.check(fmt::format("{}: row {} agrees with {}", speed_csv, label, speed_json), [&, &label = label, &r = r] {
        const csv_file& f = need(csv, speed_csv);
        std::optional<csv_row> row;
        for (std::size_t i = 0; i < f.rows.size() && !row; ++i)
          if (row_label(f, i) == label) row.emplace(f, i, label);
        if (!row) fail_with("{} has no row {}", speed_csv, label);
        const long long n = r["size"].integer();
        std::vector<std::string> diffs;
        if (row->cell("steps") != std::to_string(r["steps"].integer()))
          diffs.push_back(fmt::format("{} = {} but {} = {}", row->where("steps"), row->cell("steps"), r["steps"].name(), r["steps"].integer()));
        row->agree(diffs, "time s", r["train_runtime"].number(), r["train_runtime"].name());
        row->agree(diffs, "tokens/s", r["tokens_per_second"].number(), r["tokens_per_second"].name());
        row->agree(diffs, "QLoRA/LoRA time", r["train_runtime"].positive() / d->value(n, "LoRA", "train_runtime"),
                   fmt::format("train_runtime / LoRA's at size {}", n));
        row->agree(diffs, "frozen linears MiB", double(r["frozen_linears_bytes"].integer()) / (1 << 20), r["frozen_linears_bytes"].name() + " / 2^20");
        row->agree(diffs, "bits/weight", r["linear_bits_per_weight"].number(), r["linear_bits_per_weight"].name());
        row->agree(diffs, "planned MiB", double(r["planned_memory_bytes"].integer()) / (1 << 20), r["planned_memory_bytes"].name() + " / 2^20");
        row->agree(diffs, "peak RSS MiB", double(r["peak_rss_bytes"].integer()) / (1 << 20), r["peak_rss_bytes"].name() + " / 2^20");
        row->agree(diffs, "eval loss before", r["eval_loss_before"].number(), r["eval_loss_before"].name());
        row->agree(diffs, "eval loss after", r["eval_loss_after"].number(), r["eval_loss_after"].name());
        row->agree(diffs, "gap vs LoRA %", 100 * (r["eval_loss_after"].positive() / d->value(n, "LoRA", "eval_loss_after") - 1),
                   fmt::format("100·(eval_loss_after / LoRA's at size {} − 1)", n));
        if (!diffs.empty()) return reject(fmt::format("{}", fmt::join(diffs, "; ")));
        return pass();
      });

  // The claims.
  const auto data = [&] {
    if (!d) fail_with("{}'s config or runs are unreadable (see above)", speed_json);
    return *d;
  };
  check_lab_key(g, ans, "speedup");
  const std::string per_size = "qlora_over_lora_time";
  if (d) {
    for (long long n : d->sizes)
      claim_number(g, ans, fmt::format("{}[\"{}\"]", per_size, n), 0.05, 0, [&](node a) { return a[per_size][std::to_string(n)]; },
                   [&] { return fact<double>{data().ratio(n, "train_runtime"), fmt::format("QLoRA / LoRA train_runtime at size {}", n)}; });
    g.check(fmt::format("{}: {} has no size the data lack", answers_json, per_size), [&] {
      const node c = need(ans, answers_json)[per_size];
      if (!c.raw().is_object()) fail_with("{} is {} {}, not an object keyed by size", c.name(), c.raw().type_name(), show(c.raw()));
      for (const auto& [key, value] : c.raw().items())
        if (std::none_of(d->sizes.begin(), d->sizes.end(), [&](long long n) { return std::to_string(n) == key; }))
          fail_with("{} has size \"{}\", which {} has no runs for (sizes {})", c.name(), key, speed_json, fmt::join(d->sizes, ", "));
      return pass();
    });
  } else {
    g.check(answers_json + ": " + per_size, [&] { return reject(fmt::format("cannot verify it: {}'s config or runs are unreadable (see above)", speed_json)); });
  }
  claim_bool(g, ans, "qlora_over_lora_time_grows_with_size", [&] {
    const speed_data s = data();
    const double a = s.ratio(s.smallest(), "train_runtime"), b = s.ratio(s.largest(), "train_runtime");
    return fact<bool>{b > a, fmt::format("QLoRA/LoRA time {:.3f} at size {}, {:.3f} at size {}", a, s.smallest(), b, s.largest())};
  });
  claim_bool(g, ans, "qlora_frozen_memory_below_lora", [&] {
    const speed_data s = data();
    for (long long n : s.sizes)
      if (s.value(n, "QLoRA", "frozen_linears_bytes") >= s.value(n, "LoRA", "frozen_linears_bytes"))
        return fact<bool>{false, fmt::format("frozen_linears_bytes at size {}: QLoRA {:.0f} >= LoRA {:.0f}", n,
                                             s.value(n, "QLoRA", "frozen_linears_bytes"), s.value(n, "LoRA", "frozen_linears_bytes"))};
    return fact<bool>{true, "QLoRA's frozen_linears_bytes < LoRA's at every size"};
  });
  claim_number(g, ans, "frozen_memory_ratio", 0.05, 0, [&] {
    const speed_data s = data();
    return fact<double>{1 / s.ratio(s.largest(), "frozen_linears_bytes"), fmt::format("LoRA / QLoRA frozen_linears_bytes at size {}", s.largest())};
  });
  claim_number(g, ans, "qlora_bits_per_weight", 0.05, 0, [&] {
    const speed_data s = data();
    return fact<double>{s.value(s.largest(), "QLoRA", "linear_bits_per_weight"), fmt::format("QLoRA's linear_bits_per_weight at size {}", s.largest())};
  });
  claim_number(g, ans, "planned_memory_ratio", 0.05, 0, [&] {
    const speed_data s = data();
    return fact<double>{s.ratio(s.largest(), "planned_memory_bytes"), fmt::format("QLoRA / LoRA planned_memory_bytes at size {}", s.largest())};
  });
  claim_bool(g, ans, "both_methods_lower_eval_loss", [&] {
    for (const auto& [label, r] : data().runs)
      if (!(r["eval_loss_after"].positive() < r["eval_loss_before"].positive()))
        return fact<bool>{false, fmt::format("run {}: eval loss {:.4f} before, {:.4f} after", label, r["eval_loss_before"].number(),
                                             r["eval_loss_after"].number())};
    return fact<bool>{true, "eval_loss_after < eval_loss_before in every run"};
  });
  claim_number(g, ans, "loss_gap_percent", 0.05, 0.05, [&] {
    const speed_data s = data();
    return fact<double>{s.gap_percent(s.largest()), fmt::format("100·(QLoRA / LoRA eval_loss_after − 1) at size {}", s.largest())};
  });
  claim_bool(g, ans, "qlora_matches_lora", [&] {
    const speed_data s = data();
    const double gap = s.gap_percent(s.largest());
    return fact<bool>{std::abs(gap) <= loss_match_percent,
                      fmt::format("loss gap {:+.2f}% at size {}; matching means within ±{:g}%", gap, s.largest(), loss_match_percent)};
  });
}

}  // namespace

int main(int argc, char** argv) try {
  namespace po = boost::program_options;
  std::string lab, dir;
  po::options_description desc(
      "grade: checks a lab's results directory (docs/labs/): the program's files, their agreement, the claims in answers.json\n"
      "usage: grade --lab merge|speedup DIR\noptions");
  desc.add_options()("help,h", "this text")("lab", po::value(&lab), "merge (merge_compare) or speedup (lora_vs_qlora)")(
      "dir", po::value(&dir), "the results directory (or the first argument without a flag)");
  po::positional_options_description positional;
  positional.add("dir", 1);
  po::variables_map vm;
  const auto usage_error = [&](const std::string& what) {
    fmt::print(stderr, "grade: {}\n", what);
    std::ostringstream s;
    s << desc;
    fmt::print(stderr, "{}", s.str());
    return 2;
  };
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage_error(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (lab != "merge" && lab != "speedup")
    return usage_error(lab.empty() ? "--lab is required: merge or speedup" : "unknown --lab '" + lab + "': merge or speedup");
  if (dir.empty()) return usage_error("no results directory given");
  if (std::error_code ec; !fs::is_directory(dir, ec)) return usage_error(dir + ": no such directory");

  fmt::print("grading the {} lab in {}\n", lab, dir);
  grader g(dir);
  if (lab == "merge") grade_merge(g);
  else grade_speedup(g);
  fmt::print("score: {}/{}\n", g.passed(), g.total());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "grade: internal error: {}\n", e.what());
  return 1;
}

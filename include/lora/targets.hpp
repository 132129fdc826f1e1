// SPDX-License-Identifier: MIT
#pragma once
// Which linear layers get an adapter, two ways:
//   at compile time   target_set<"q_proj", "v_proj">   (a program that fixes its targets says so in its types)
//   at run time       PEFT's rules: a list of names matches a module equal to a name or ending in "." + name;
//                     a regex string must match the whole module name; "all-linear" is every linear layer but
//                     the output head.
#include <algorithm>
#include <array>
#include <cctype>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.hpp"

namespace loralab::lora {

/// The linear layers of a Llama block, by their HF names.
inline constexpr std::array<std::string_view, 7> llama_linear_names = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "gate_proj", "up_proj", "down_proj"};

/// A string usable as a template argument: target_set<"q_proj">.
template <std::size_t N>
struct fixed_string {
  char text[N]{};
  constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, text); }
  constexpr std::string_view view() const { return {text, N - 1}; }
};

constexpr bool is_llama_linear(std::string_view name) {
  for (auto n : llama_linear_names)
    if (n == name) return true;
  return false;
}

/// Targets fixed at compile time. Unknown names do not compile.
template <fixed_string... Names>
struct target_set {
  static_assert(sizeof...(Names) > 0, "target_set: name at least one module");
  static_assert((is_llama_linear(Names.view()) && ...),
                "target_set: every name must be a Llama linear layer: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  static constexpr std::array<std::string_view, sizeof...(Names)> names = {Names.view()...};
};

/// PEFT's default for Llama, and the QLoRA paper's choice.
using qv_targets = target_set<"q_proj", "v_proj">;
using all_linear_targets = target_set<"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj">;

/// Targets chosen at run time.
struct target_spec {
  enum class kind { names, regex, all_linear } how = kind::names;
  std::vector<std::string> names;  ///< kind::names
  std::string pattern;             ///< kind::regex (full match)

  template <fixed_string... Names>
  static target_spec from(target_set<Names...>) {
    target_spec t;
    for (auto n : target_set<Names...>::names) t.names.emplace_back(n);
    return t;
  }

  /// Does module `key` (model.layers.3.self_attn.q_proj) get an adapter?
  bool matches(const std::string& key) const {
    switch (how) {
      case kind::all_linear: return true;
      case kind::regex: return std::regex_match(key, std::regex(pattern));
      case kind::names:
        return std::any_of(names.begin(), names.end(),
                           [&](const std::string& n) { return key == n || key.ends_with("." + n); });
    }
    return false;
  }

  /// The list PEFT writes to adapter_config.json's target_modules (a string for a regex).
  std::string describe() const {
    if (how == kind::all_linear) return "all-linear";
    if (how == kind::regex) return pattern;
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ",") + n;
    return s;
  }

  /// Checks the spec against the modules a model has: every listed name (or the regex) must match one.
  /// The error lists the names the model has.
  void check_against(const std::vector<std::string>& modules) const {
    const auto known = [&] {
      std::set<std::string> suffixes;
      for (const auto& m : modules) suffixes.insert(m.substr(m.rfind('.') + 1));
      std::string s;
      for (const auto& x : suffixes) s += (s.empty() ? "" : ", ") + x;
      return s + " (full names like " + (modules.empty() ? std::string("-") : modules.front()) + ")";
    };
    if (how == kind::names) {
      LORALAB_CHECK(!names.empty(), "--targets names no module; the model has: ", known());
      for (const auto& n : names)
        LORALAB_CHECK(std::any_of(modules.begin(), modules.end(), [&](const std::string& k) { return k == n || k.ends_with("." + n); }),
                      "unknown target module '", n, "'; the model has: ", known());
    } else if (how == kind::regex) {
      LORALAB_CHECK(std::any_of(modules.begin(), modules.end(), [&](const std::string& k) { return matches(k); }),
                    "the target regex '", pattern, "' matches no module (it must match the whole name); the model has: ", known());
    }
  }
};

/// Parses --targets: "all-linear" (any case), a regex when the text holds regex syntax, else a comma list.
inline target_spec parse_targets(std::string_view text) {
  target_spec t;
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (lower == "all-linear") {
    t.how = target_spec::kind::all_linear;
    return t;
  }
  if (text.find_first_of("[](){}*+?|^$\\") != std::string_view::npos) {
    t.how = target_spec::kind::regex;
    t.pattern = std::string(text);
    try {
      (void)std::regex(t.pattern);
    } catch (const std::regex_error& e) {
      fail("--targets: invalid regex '", text, "': ", e.what());
    }
    return t;
  }
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const auto item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    LORALAB_CHECK(!item.empty(), "--targets: empty name in '", text, "'");
    t.names.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return t;
}

}  // namespace loralab::lora

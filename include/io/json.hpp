// SPDX-License-Identifier: MIT
#pragma once
// JSON text from files (config.json, adapter_config.json, tokenizer.json, safetensors headers, bnb quant states,
// dataset records) parsed with limits a hostile file cannot get past. nlohmann parses without recursion, but
// dump(), comparison and copying of the tree recurse once per level, so a file of 10^5 '[' would overflow the stack
// later; nesting is refused while parsing, before that level is built. Every error is a loralab::error that names
// the file (and the key, where there is one).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "core/check.hpp"

namespace loralab::io {

/// Objects and arrays nested deeper than this are refused (real configs, tokenizers and records nest < 10 levels).
inline constexpr int max_json_depth = 512;

/// A parser callback that refuses nesting deeper than max_json_depth, naming `where`, then calls `next` (if set).
/// For json::parse(text, callback): the callback is what keeps a deep document from being built.
inline nlohmann::json::parser_callback_t json_depth_limit(std::string where,
                                                          nlohmann::json::parser_callback_t next = nullptr) {
  return [where = std::move(where), next = std::move(next)](int depth, nlohmann::json::parse_event_t event,
                                                            nlohmann::json& parsed) {
    using event_t = nlohmann::json::parse_event_t;
    if ((event == event_t::object_start || event == event_t::array_start) && depth >= max_json_depth)
      fail(where, ": JSON nested deeper than the limit of ", max_json_depth, " levels");
    return next ? next(depth, event, parsed) : true;
  };
}

/// Parses `text` (the contents of `where`) as JSON: nesting limited to max_json_depth; invalid JSON, including a
/// number too large for a double (nlohmann's out_of_range 406), throws loralab::error "<where>: not valid JSON: …".
inline nlohmann::json parse_json(std::string_view text, const std::string& where) {
  try {
    return nlohmann::json::parse(text, json_depth_limit(where));
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
}

/// The integer a JSON value holds, as T: an integer, or a float with an integral value (some writers emit 8.0),
/// within T's range. Anything else (1e200, 8.5, "8", true, null) throws loralab::error "<where>: key '<key>' is
/// <value>, not an integer in [min, max]" — nlohmann's get<int>() would cast 1e200 (undefined behaviour) or
/// truncate 8.5 without a word.
template <class T, class Json>
T json_integer(const Json& v, const std::string& where, std::string_view key) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "json_integer reads integer types");
  using lim = std::numeric_limits<T>;
  bool ok = false;
  T out{};
  if (v.is_number_unsigned()) {
    const auto x = v.template get<std::uint64_t>();
    ok = x <= static_cast<std::uint64_t>(lim::max());
    out = static_cast<T>(x);
  } else if (v.is_number_integer()) {
    const auto x = v.template get<std::int64_t>();
    ok = x >= static_cast<std::int64_t>(lim::min()) &&
         (x < 0 || static_cast<std::uint64_t>(x) <= static_cast<std::uint64_t>(lim::max()));
    out = static_cast<T>(x);
  } else if (v.is_number_float()) {
    const double x = v.template get<double>();
    // [min, max + 1) as doubles: both bounds are powers of two (or zero), so exact.
    const double lo = static_cast<double>(lim::min()), hi = 2.0 * static_cast<double>(lim::max() / 2 + 1);
    ok = std::isfinite(x) && std::trunc(x) == x && x >= lo && x < hi;
    if (ok) out = static_cast<T>(x);
  }
  if (!ok) fail(where, ": key '", key, "' is ", v.dump(), ", not an integer in [", +lim::min(), ", ", +lim::max(), "]");
  return out;
}

}  // namespace loralab::io

// SPDX-License-Identifier: MIT
#pragma once
// JSON text from files (config.json, adapter_config.json, tokenizer.json, safetensors headers, bnb quant states,
// dataset records) parsed with limits a hostile file cannot get past. nlohmann parses without recursion, but
// dump(), comparison and copying of the tree recurse once per level, so a file of 10^5 '[' would overflow the stack
// later; nesting is refused while parsing, before that level is built. Every error is a loralab::error that names
// the file (and the key, where there is one).
#include <cstddef>
#include <string>
#include <string_view>

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

}  // namespace loralab::io

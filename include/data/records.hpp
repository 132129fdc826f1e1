// SPDX-License-Identifier: MIT
#pragma once
// Data files as records: the formats loralab reads (alpaca, dolly, quotes, plain text split into documents, GSM8K
// question/answer, chat messages) and
// their parsing, where every malformed record is an error naming file:line and the field. data/dataset.hpp turns
// records into batches.
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/read_file.hpp"
#include "io/json.hpp"
#include "data/prompt_template.hpp"

namespace loralab::data {

/// Label value with no loss (PyTorch's CrossEntropyLoss ignore_index default).
inline constexpr int ignore_index = -100;

// ---- formats ------------------------------------------------------------------------------------------------------

/// What a data file holds:
///   alpaca  a JSON array (or JSONL) of {instruction, input (optional), output}           → alpaca template
///   dolly   JSONL (or a JSON array) of {instruction, context (optional), response, category (optional)}
///                                                                                          → dolly template
///   quotes  JSONL of {quote, author (optional)}: one document "quote — author" each        → plain template
///   text    plain text, split into documents by text_split                                → plain template
///   gsm8k   JSONL (or a JSON array) of {question, answer}: an instruction record            → alpaca template
///   chat    JSONL (or a JSON array) of {messages: [{role, content}, …]} (TRL's conversational format; roles
///           system, user, assistant)                                                       → chat template (chatml)
/// Other keys in an object are ignored (english_quotes.jsonl has tags, id, quoteLength).
enum class data_format { alpaca, dolly, quotes, text, gsm8k, chat };

/// How a plain-text corpus splits into documents:
///   fortune  entries between lines holding only "%" (fortune(6) files, /usr/share/games/fortunes/*)
///   eot      pieces between "<|endoftext|>" markers (TinyStories)
///   line     one document per non-blank line
///   automatic ("auto") eot when the text holds "<|endoftext|>", else fortune when some line is exactly "%",
///            else line.
/// A document keeps its inner text as is; blank lines before it and whitespace after it are removed, and
/// documents left empty are skipped.
enum class text_split { automatic, fortune, eot, line };

namespace detail {

template <class E>
struct name_row {
  E value;
  std::string_view name;
};
inline constexpr std::array<name_row<data_format>, 6> format_table = {{
    {data_format::alpaca, "alpaca"},
    {data_format::dolly, "dolly"},
    {data_format::quotes, "quotes"},
    {data_format::text, "text"},
    {data_format::gsm8k, "gsm8k"},
    {data_format::chat, "chat"},
}};
inline constexpr std::array<name_row<text_split>, 4> split_table = {{
    {text_split::automatic, "auto"},
    {text_split::fortune, "fortune"},
    {text_split::eot, "eot"},
    {text_split::line, "line"},
}};
template <class Table>
constexpr bool in_enum_order(const Table& table) {
  for (std::size_t i = 0; i < table.size(); ++i)
    if (static_cast<std::size_t>(table[i].value) != i) return false;
  return true;
}
static_assert(in_enum_order(format_table), "format_table rows must follow the order of enum class data_format");
static_assert(in_enum_order(split_table), "split_table rows must follow the order of enum class text_split");

template <class E, std::size_t N>
E parse_name(const std::array<name_row<E>, N>& table, std::string_view s, std::string_view flag) {
  std::string names;
  for (const auto& row : table) {
    if (row.name == s) return row.value;
    names += names.empty() ? "" : ", ";
    names += row.name;
  }
  fail(flag, " must be one of ", names, "; got '", s, "'");
}

}  // namespace detail

inline std::string_view to_string(data_format f) { return detail::format_table[static_cast<std::size_t>(f)].name; }
inline std::string_view to_string(text_split s) { return detail::split_table[static_cast<std::size_t>(s)].name; }
inline std::ostream& operator<<(std::ostream& os, data_format f) { return os << to_string(f); }
inline std::ostream& operator<<(std::ostream& os, text_split s) { return os << to_string(s); }

/// "alpaca" | "dolly" | "quotes" | "text" | "gsm8k" | "chat"; anything else is an error listing the valid names.
inline data_format parse_data_format(std::string_view s) {
  return detail::parse_name(detail::format_table, s, "--format");
}
/// "auto" | "fortune" | "eot" | "line".
inline text_split parse_text_split(std::string_view s) {
  return detail::parse_name(detail::split_table, s, "--text-split");
}

/// The template a format is written for: alpaca and gsm8k → alpaca, dolly → dolly, quotes and text → plain, chat →
/// chatml (a model's own chat template replaces it: experiment::choose_template).
inline prompt_template default_template(data_format f) {
  switch (f) {
    case data_format::alpaca:
    case data_format::gsm8k: return prompt_template::alpaca;
    case data_format::chat: return prompt_template::chatml;
    case data_format::dolly: return prompt_template::dolly;
    case data_format::quotes:
    case data_format::text: return prompt_template::plain;
  }
  fail("default_template: unknown data_format value ", static_cast<int>(f));
}

// ---- loading ------------------------------------------------------------------------------------------------------

namespace detail {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

inline bool is_blank(std::string_view s) { return std::all_of(s.begin(), s.end(), is_space); }

/// 1-based line and column of byte `offset` in `text`.
inline std::pair<std::size_t, std::size_t> line_column(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  const std::string_view before = text.substr(0, offset);
  const std::size_t line = 1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
  const std::size_t nl = before.rfind('\n');
  return {line, nl == std::string_view::npos ? offset + 1 : offset - nl};
}

/// nlohmann's parse_error text without its "[json.exception…] parse error at line L, column C: " prefix (the
/// caller names the position in the file; for a JSONL line nlohmann's own "line 1" would mislead).
inline std::string json_reason(const nlohmann::json::parse_error& e) {
  const std::string_view what = e.what();
  const std::size_t at = what.find("column ");
  const std::size_t colon = at == std::string_view::npos ? at : what.find(": ", at);
  return std::string(colon == std::string_view::npos ? what : what.substr(colon + 2));
}

/// A JSON object read from a data file, with the 1-based line it starts on.
struct json_record {
  nlohmann::json value;
  std::size_t line;
};

/// Byte offsets of the elements of the top-level array in `text`, which must be valid JSON (already parsed):
/// a scan that tracks strings and nesting depth, so every record can be named by its line.
inline std::vector<std::size_t> array_element_offsets(std::string_view text) {
  std::vector<std::size_t> offsets;
  int depth = 0;
  bool in_string = false, escaped = false, expect_value = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (depth == 1 && expect_value && !is_space(c) && c != ']') {
      offsets.push_back(i);
      expect_value = false;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth == 1) expect_value = true;
        break;
      case ']':
      case '}': --depth; break;
      case ',':
        if (depth == 1) expect_value = true;
        break;
      default: break;
    }
  }
  return offsets;
}

/// The objects of a JSON array file or a JSONL file (chosen by the first non-blank byte: '[' means an array).
/// Invalid JSON is an error naming file:line:column; a record that is not an object names its line.
inline std::vector<json_record> read_json_records(std::string_view text, const std::string& file) {
  std::vector<json_record> out;
  std::size_t first = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") first = 3;  // UTF-8 byte order mark
  while (first < text.size() && is_space(text[first])) ++first;
  if (first < text.size() && text[first] == '[') {
    nlohmann::json array;
    try {
      array = nlohmann::json::parse(text, io::json_depth_limit(file));
    } catch (const nlohmann::json::parse_error& e) {
      const auto [line, col] = line_column(text, e.byte == 0 ? 0 : e.byte - 1);
      fail(file, ":", line, ":", col, ": invalid JSON: ", json_reason(e));
    } catch (const nlohmann::json::exception& e) {  // a number beyond a double (out_of_range 406) has no offset
      fail(file, ": invalid JSON: ", e.what());
    }
    LORALAB_CHECK(array.is_array(), file, ": expected a JSON array of objects");
    const std::vector<std::size_t> offsets = array_element_offsets(text);
    LORALAB_CHECK(offsets.size() == array.size(), file, ": internal error: found ", offsets.size(),
                  " array elements by scanning but nlohmann parsed ", array.size());
    out.reserve(array.size());
    for (std::size_t i = 0; i < array.size(); ++i)
      out.push_back({std::move(array[i]), line_column(text, offsets[i]).first});
  } else {
    std::size_t line = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      const std::size_t end = std::min(text.find('\n', pos), text.size());
      const std::string_view s = text.substr(pos, end - pos);
      ++line;
      pos = end + 1;
      if (is_blank(s)) continue;
      try {
        out.push_back({nlohmann::json::parse(s, io::json_depth_limit(file + ":" + std::to_string(line))), line});
      } catch (const nlohmann::json::parse_error& e) {
        const std::size_t col = e.byte == 0 ? 1 : std::min<std::size_t>(e.byte, s.size() + 1);
        fail(file, ":", line, ":", col, ": invalid JSON: ", json_reason(e));
      } catch (const nlohmann::json::exception& e) {  // a number beyond a double (out_of_range 406)
        fail(file, ":", line, ": invalid JSON: ", e.what());
      }
    }
  }
  for (const json_record& r : out)
    LORALAB_CHECK(r.value.is_object(), file, ":", r.line, ": a record must be a JSON object, got ",
                  r.value.type_name());
  return out;
}

/// The string field `key` of a record. Missing or null: "" if optional, else an error; not a string: an error;
/// required and blank (only whitespace): an error. Errors name file:line and the field.
inline std::string string_field(const json_record& r, const std::string& file, const char* key, bool required) {
  const auto it = r.value.find(key);
  if (it == r.value.end() || it->is_null()) {
    LORALAB_CHECK(!required, file, ":", r.line, ": field '", key, "' is missing");
    return {};
  }
  LORALAB_CHECK(it->is_string(), file, ":", r.line, ": field '", key, "' must be a string, got ", it->type_name());
  std::string s = it->get<std::string>();
  LORALAB_CHECK(!required || !is_blank(s), file, ":", r.line, ": field '", key, "' is empty");
  return s;
}

/// A chat record's "messages": a non-empty array of {role, content} objects with string fields (content may be
/// empty; roles are checked when rendered). Errors name file:line and messages[i].
inline std::vector<chat_message> messages_field(const json_record& r, const std::string& file) {
  const auto it = r.value.find("messages");
  LORALAB_CHECK(it != r.value.end() && !it->is_null(), file, ":", r.line, ": field 'messages' is missing");
  LORALAB_CHECK(it->is_array(), file, ":", r.line, ": field 'messages' must be an array, got ", it->type_name());
  LORALAB_CHECK(!it->empty(), file, ":", r.line, ": field 'messages' is empty");
  std::vector<chat_message> out;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& m = (*it)[i];
    LORALAB_CHECK(m.is_object(), file, ":", r.line, ": messages[", i, "] must be an object, got ", m.type_name());
    chat_message msg;
    for (const auto& [key, into] : {std::pair<const char*, std::string*>{"role", &msg.role}, {"content", &msg.content}}) {
      const auto f = m.find(key);
      LORALAB_CHECK(f != m.end() && f->is_string(), file, ":", r.line, ": messages[", i, "].", key,
                    f == m.end() ? std::string(" is missing") : " must be a string, got " + std::string(f->type_name()));
      *into = f->get<std::string>();
    }
    out.push_back(std::move(msg));
  }
  return out;
}

/// `text` without blank lines at its start and whitespace at its end (the first line's indentation stays).
inline std::string_view trim_document(std::string_view text, std::size_t& skipped_lines) {
  skipped_lines = 0;
  for (;;) {
    const std::size_t nl = text.find('\n');
    if (nl == std::string_view::npos || !is_blank(text.substr(0, nl))) break;
    text.remove_prefix(nl + 1);
    ++skipped_lines;
  }
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

inline constexpr std::string_view end_of_text = "<|endoftext|>";

/// The line (without '\n' and a trailing '\r') of `text` that starts at `pos`, and the offset after it.
inline std::pair<std::string_view, std::size_t> next_line(std::string_view text, std::size_t pos) {
  const std::size_t end = std::min(text.find('\n', pos), text.size());
  std::string_view s = text.substr(pos, end - pos);
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return {s, end + 1};
}

inline bool has_fortune_separator(std::string_view text) {
  for (std::size_t pos = 0; pos < text.size();) {
    const auto [s, next] = next_line(text, pos);
    if (s == "%") return true;
    pos = next;
  }
  return false;
}

}  // namespace detail

/// The split `automatic` resolves to for `text` (see text_split).
inline text_split detect_text_split(std::string_view text) {
  if (text.find(detail::end_of_text) != std::string_view::npos) return text_split::eot;
  if (detail::has_fortune_separator(text)) return text_split::fortune;
  return text_split::line;
}

/// The documents of a plain-text corpus as text records (document in `output`), each with its first line.
inline std::vector<record> split_text(std::string_view text, text_split split) {
  if (split == text_split::automatic) split = detect_text_split(text);
  std::vector<record> out;
  // A document is text[begin, end); `line` is the 1-based line holding `begin`.
  const auto add = [&](std::size_t begin, std::size_t end, std::size_t line) {
    std::size_t skipped = 0;
    const std::string_view doc = detail::trim_document(text.substr(begin, end - begin), skipped);
    if (!doc.empty()) out.push_back({{}, {}, std::string(doc), line + skipped, {}});
  };
  switch (split) {
    case text_split::line: {
      std::size_t line = 1;
      for (std::size_t pos = 0; pos < text.size(); ++line) {
        const auto [s, next] = detail::next_line(text, pos);
        if (!detail::is_blank(s)) out.push_back({{}, {}, std::string(s), line, {}});
        pos = next;
      }
      break;
    }
    case text_split::fortune: {
      std::size_t begin = 0, begin_line = 1, line = 1;
      for (std::size_t pos = 0; pos < text.size(); ++line) {
        const auto [s, next] = detail::next_line(text, pos);
        if (s == "%") {
          add(begin, pos, begin_line);
          begin = std::min(next, text.size());
          begin_line = line + 1;
        }
        pos = next;
      }
      add(begin, text.size(), begin_line);
      break;
    }
    case text_split::eot: {
      std::size_t begin = 0, begin_line = 1;
      for (;;) {
        const std::size_t at = text.find(detail::end_of_text, begin);
        const std::size_t end = at == std::string_view::npos ? text.size() : at;
        add(begin, end, begin_line);
        if (at == std::string_view::npos) break;
        const std::string_view between = text.substr(begin, at + detail::end_of_text.size() - begin);
        begin_line += static_cast<std::size_t>(std::count(between.begin(), between.end(), '\n'));
        begin = at + detail::end_of_text.size();
      }
      break;
    }
    case text_split::automatic: break;  // resolved above
  }
  return out;
}

/// The records of `text`, the contents of `file` (named in errors) in `format`. Every malformed record is a
/// loralab::error naming file:line (and file:line:column for invalid JSON) and the field: a missing or blank
/// instruction/output (response, quote), a non-string field, a record that is not an object. No record at all
/// is an error too.
inline std::vector<record> parse_records(std::string_view text, data_format format, const std::string& file,
                                         text_split split = text_split::automatic) {
  std::vector<record> out;
  if (format == data_format::text) {
    out = split_text(text, split);
  } else {
    const std::vector<detail::json_record> objects = detail::read_json_records(text, file);
    out.reserve(objects.size());
    for (const detail::json_record& r : objects) {
      record rec;
      rec.line = r.line;
      switch (format) {
        case data_format::alpaca:
          rec.instruction = detail::string_field(r, file, "instruction", true);
          rec.input = detail::string_field(r, file, "input", false);
          rec.output = detail::string_field(r, file, "output", true);
          break;
        case data_format::dolly:
          rec.instruction = detail::string_field(r, file, "instruction", true);
          rec.input = detail::string_field(r, file, "context", false);
          rec.output = detail::string_field(r, file, "response", true);
          (void)detail::string_field(r, file, "category", false);  // checked, not used
          break;
        case data_format::quotes: {
          // english_quotes: the quote keeps its curly quotes; some authors end with a comma ("J.K. Rowling,").
          rec.output = detail::string_field(r, file, "quote", true);
          std::string author = detail::string_field(r, file, "author", false);
          while (!author.empty() && (detail::is_space(author.back()) || author.back() == ',')) author.pop_back();
          const std::size_t lead = author.find_first_not_of(" \t\r\n");
          author.erase(0, lead == std::string::npos ? author.size() : lead);
          if (!author.empty()) rec.output += " \xE2\x80\x94 " + author;  // U+2014 em dash
          break;
        }
        case data_format::gsm8k:  // GSM8K: the answer keeps its worked solution and "#### <number>" line
          rec.instruction = detail::string_field(r, file, "question", true);
          rec.output = detail::string_field(r, file, "answer", true);
          break;
        case data_format::chat: rec.messages = detail::messages_field(r, file); break;
        case data_format::text: break;  // handled above
      }
      out.push_back(std::move(rec));
    }
  }
  LORALAB_CHECK(!out.empty(), file, ": no records (an empty ", to_string(format), " dataset)");
  return out;
}

/// Reads `path` and parses it (see parse_records).
inline std::vector<record> load_records(const std::filesystem::path& path, data_format format,
                                        text_split split = text_split::automatic) {
  return parse_records(core::read_file(path, "data"), format, path.string(), split);
}
}  // namespace loralab::data

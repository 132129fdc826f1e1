// SPDX-License-Identifier: MIT
// data/dataset.hpp and data/prompt_template.hpp on the real data in shared/data and the Debian fortunes:
// record counts, exact template strings, the loss mask, truncation and packing, seeded shuffles and splits,
// shifted targets in batches, and the errors malformed files give.
#include "data/dataset.hpp"

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <numeric>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "data/prompt_template.hpp"
#include "nn/tokenizer.hpp"
#include "test_support.hpp"

#ifndef LORALAB_SHARED_DIR
#error "LORALAB_SHARED_DIR must name the shared/ folder (tests/dataset/CMakeLists.txt defines it)"
#endif

namespace fs = std::filesystem;
using namespace loralab::data;

namespace {

const std::string data_dir = LORALAB_SHARED_DIR "/data/";
const std::string alpaca_file = data_dir + "alpaca_en_demo.json";
const std::string quotes_file = data_dir + "english_quotes.jsonl";
const std::string stories_file = data_dir + "tinystories_validation_100.txt";
const std::string stories_sample_file = data_dir + "tinystories_sample.txt";
const fs::path fortunes_dir = "/usr/share/games/fortunes";

const loralab::nn::sentencepiece_tokenizer& tok() {
  static const loralab::nn::sentencepiece_tokenizer t(LORALAB_SHARED_DIR "/models/tok512.model");
  return t;
}

const std::vector<record>& alpaca() {
  static const std::vector<record> r = load_records(alpaca_file, data_format::alpaca);
  return r;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& p, std::string_view s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

/// Runs `f`, which must throw loralab::error whose message contains every one of `parts`.
void check_error(const std::function<void()>& f, std::initializer_list<std::string_view> parts) {
  try {
    f();
    BOOST_ERROR("no loralab::error thrown; expected one containing '" << *parts.begin() << "'");
  } catch (const loralab::error& e) {
    const std::string_view msg = e.what();
    for (const std::string_view p : parts)
      BOOST_CHECK_MESSAGE(msg.find(p) != msg.npos, "'" << msg << "' lacks '" << p << "'");
  }
}

/// The number of entries a strfile .dat index records: the big-endian uint32 at offset 4.
std::uint32_t strfile_count(const fs::path& dat) {
  const std::string b = read_text(dat);
  BOOST_REQUIRE(b.size() >= 8);
  std::uint32_t n = 0;
  for (int i = 4; i < 8; ++i) n = (n << 8) | static_cast<unsigned char>(b[i]);
  return n;
}

/// Lines of `text`, 1-based (index 0 unused).
std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines{{}};
  for (std::size_t pos = 0; pos <= text.size();) {
    const std::size_t end = std::min(text.find('\n', pos), text.size());
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

std::vector<int> concat_ids(const std::vector<example>& xs) {
  std::vector<int> out;
  for (const example& x : xs) out.insert(out.end(), x.input_ids.begin(), x.input_ids.end());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(dataset)

// ---- names ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(enum_names_round_trip_and_errors_list_the_valid_names) {
  for (const auto f : {data_format::alpaca, data_format::dolly, data_format::quotes, data_format::text})
    BOOST_TEST((parse_data_format(to_string(f)) == f));
  for (const auto s : {text_split::automatic, text_split::fortune, text_split::eot, text_split::line})
    BOOST_TEST((parse_text_split(to_string(s)) == s));
  for (const auto t : {prompt_template::alpaca, prompt_template::dolly, prompt_template::plain, prompt_template::chatml})
    BOOST_TEST((parse_prompt_template(to_string(t)) == t));
  check_error([] { parse_data_format("json"); }, {"--format", "alpaca, dolly, quotes, text", "'json'"});
  check_error([] { parse_text_split("para"); }, {"--text-split", "auto, fortune, eot, line"});
  check_error([] { parse_prompt_template("vicuna"); }, {"--template", "alpaca, dolly, plain, chatml", "'vicuna'"});
  BOOST_TEST((default_template(data_format::alpaca) == prompt_template::alpaca));
  BOOST_TEST((default_template(data_format::dolly) == prompt_template::dolly));
  BOOST_TEST((default_template(data_format::quotes) == prompt_template::plain));
  BOOST_TEST((default_template(data_format::text) == prompt_template::plain));
}

// ---- loading the real files ----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(alpaca_demo_has_999_records_412_with_input_and_their_lines) {
  const std::vector<record>& r = alpaca();
  BOOST_TEST(r.size() == 999u);
  BOOST_TEST(std::count_if(r.begin(), r.end(), [](const record& x) { return !x.input.empty(); }) == 412);
  BOOST_TEST(r[0].instruction == "Describe a process of making crepes.");
  BOOST_TEST(r[0].input == "");
  BOOST_TEST(r[0].output.starts_with("Making crepes is an easy and delicious process!"));
  BOOST_TEST(r[0].line == 2u);  // "[" on line 1, the first "{" on line 2
  // Every record's line is the one holding its opening brace.
  const std::string text = read_text(alpaca_file);
  const auto lines = lines_of(text);
  for (const record& x : r) {
    BOOST_REQUIRE(x.line < lines.size());
    BOOST_TEST(lines[x.line].find('{') != std::string_view::npos, "line " << x.line);
  }
  BOOST_TEST(std::is_sorted(r.begin(), r.end(), [](const record& a, const record& b) { return a.line < b.line; }));
}

BOOST_AUTO_TEST_CASE(english_quotes_has_2507_documents_quote_dash_author) {
  const std::vector<record> r = load_records(quotes_file, data_format::quotes);
  BOOST_TEST(r.size() == 2507u);
  BOOST_TEST(r[0].output ==
             "\xE2\x80\x9C"
             "Be yourself; everyone else is already taken.\xE2\x80\x9D \xE2\x80\x94 Oscar Wilde");
  for (std::size_t i = 0; i < r.size(); ++i) {
    BOOST_TEST(r[i].line == i + 1);
    BOOST_TEST(r[i].instruction.empty());
    BOOST_TEST(!r[i].output.ends_with(","), "line " << r[i].line << ": the author's trailing comma is dropped");
  }
}

BOOST_AUTO_TEST_CASE(tinystories_split_on_endoftext) {
  const std::string text = read_text(stories_file);
  BOOST_TEST((detect_text_split(text) == text_split::eot));
  const std::vector<record> r = load_records(stories_file, data_format::text);
  BOOST_TEST(r.size() == 100u);
  BOOST_TEST(r[0].output.starts_with("u don't have to be scared"));  // SOURCES.md: it begins mid-sentence
  BOOST_TEST(r[0].line == 1u);
  const auto lines = lines_of(text);
  for (const record& x : r) {
    BOOST_TEST(x.output.find("<|endoftext|>") == std::string::npos);
    BOOST_TEST(x.output.front() != '\n');
    BOOST_TEST(x.output.back() != '\n');
    BOOST_TEST(std::string(lines[x.line]).starts_with(x.output.substr(0, x.output.find('\n'))), "line " << x.line);
  }
  BOOST_TEST(load_records(stories_sample_file, data_format::text).size() == 5u);
  BOOST_TEST(load_records(stories_sample_file, data_format::text)[0].line == 2u);  // the file starts with "\n"
}

BOOST_AUTO_TEST_CASE(fortune_files_split_on_percent_lines_as_many_as_their_dat_index) {
  if (!fs::exists(fortunes_dir / "fortunes")) {
    BOOST_TEST_MESSAGE("skipped: " << (fortunes_dir / "fortunes") << " is absent (apt-get install fortunes-min)");
    return;
  }
  for (const char* name : {"fortunes", "literature", "riddles"}) {
    const fs::path file = fortunes_dir / name;
    if (!fs::exists(file)) continue;
    const std::string text = read_text(file);
    BOOST_TEST((detect_text_split(text) == text_split::fortune), name);
    const std::vector<record> r = load_records(file, data_format::text);
    BOOST_TEST(r.size() == strfile_count(fortunes_dir / (std::string(name) + ".dat")), name);
    const auto lines = lines_of(text);
    for (const record& x : r) {
      BOOST_TEST(x.output.find("\n%\n") == std::string::npos);
      BOOST_TEST((x.line == 1 || lines[x.line - 1] == "%"), name << " line " << x.line);
    }
  }
  BOOST_TEST(load_records(fortunes_dir / "fortunes", data_format::text).size() == 431u);  // SOURCES.md
}

BOOST_AUTO_TEST_CASE(text_splits_by_line_and_by_choice) {
  const std::string text = "first line\n\n  \nsecond\r\nthird\n";
  BOOST_TEST((detect_text_split(text) == text_split::line));
  const std::vector<record> r = parse_records(text, data_format::text, "mem");
  BOOST_REQUIRE(r.size() == 3u);
  BOOST_TEST(r[0].output == "first line");
  BOOST_TEST(r[1].output == "second");
  BOOST_TEST(r[1].line == 4u);
  BOOST_TEST(r[2].line == 5u);
  // The split can be forced: "%" lines are ordinary text under `line`, and a fortune entry keeps its indentation.
  const std::string fortune = "\tIndented first\nsecond line\n%\n%\nnext\n%\n";
  BOOST_TEST(parse_records(fortune, data_format::text, "mem", text_split::line).size() == 6u);
  const std::vector<record> f = parse_records(fortune, data_format::text, "mem", text_split::fortune);
  BOOST_REQUIRE(f.size() == 2u);
  BOOST_TEST(f[0].output == "\tIndented first\nsecond line");
  BOOST_TEST(f[1].output == "next");
  BOOST_TEST(f[1].line == 5u);
  const std::vector<record> e = parse_records("a<|endoftext|>\n\nb\nc<|endoftext|>", data_format::text, "mem");
  BOOST_REQUIRE(e.size() == 2u);
  BOOST_TEST(e[1].output == "b\nc");
  BOOST_TEST(e[1].line == 3u);
}

BOOST_AUTO_TEST_CASE(dolly_jsonl_and_alpaca_jsonl_are_read) {
  loralab::testing::temp_dir dir;
  const fs::path dolly = dir.path / "dolly.jsonl";
  write_text(
      dolly,
      R"({"instruction": "Who wrote Hamlet?", "context": "", "response": "Shakespeare.", "category": "open_qa"})"
      "\n\n"
      R"({"instruction": "Summarize.", "context": "A long text.", "response": "Short.", "category": "summarization"})"
      "\n");
  const std::vector<record> r = load_records(dolly, data_format::dolly);
  BOOST_REQUIRE(r.size() == 2u);
  BOOST_TEST(r[1].instruction == "Summarize.");
  BOOST_TEST(r[1].input == "A long text.");
  BOOST_TEST(r[1].output == "Short.");
  BOOST_TEST(r[1].line == 3u);
  const fs::path jsonl = dir.path / "alpaca.jsonl";
  write_text(jsonl, R"({"instruction": "Say hi.", "output": "Hi."})"
                    "\n");
  const std::vector<record> a = load_records(jsonl, data_format::alpaca);
  BOOST_REQUIRE(a.size() == 1u);
  BOOST_TEST(a[0].input == "");  // optional
}

// ---- malformed files -----------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(malformed_records_name_the_file_the_line_and_the_field) {
  loralab::testing::temp_dir dir;
  const auto file = [&](const std::string& name, std::string_view text) {
    const fs::path p = dir.path / name;
    write_text(p, text);
    return p;
  };
  const auto expect = [&](const fs::path& p, data_format f, std::initializer_list<std::string_view> parts) {
    check_error([&] { load_records(p, f); }, parts);
  };
  const std::string ok = R"({"instruction": "a", "input": "", "output": "b"})";
  // JSON array: a missing comma between records 2 and 3, on line 4.
  const fs::path syntax = file("syntax.json", "[\n" + ok + ",\n" + ok + "\n" + ok + "\n]\n");
  expect(syntax, data_format::alpaca, {syntax.string() + ":4:1: invalid JSON", "syntax error"});
  // JSONL: invalid JSON on line 3.
  const fs::path bad_line = file("bad.jsonl", ok + "\n" + ok + "\n{\"instruction\": \"a\", \"output\": }\n");
  expect(bad_line, data_format::alpaca, {bad_line.string() + ":3:", "invalid JSON"});
  // Missing field, wrong type, empty required field, not an object, in a pretty-printed array.
  const fs::path missing =
      file("missing.json", "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\"}\n]");
  expect(missing, data_format::alpaca, {missing.string() + ":3: field 'output' is missing"});
  const fs::path type = file("type.jsonl", ok + "\n" + R"({"instruction": "a", "input": 7, "output": "b"})");
  expect(type, data_format::alpaca, {type.string() + ":2: field 'input' must be a string, got number"});
  const fs::path blank = file("blank.json", "[" + ok + ",\n\n" + R"({"instruction": "  ", "output": "b"}])");
  expect(blank, data_format::alpaca, {blank.string() + ":3: field 'instruction' is empty"});
  const fs::path empty_out = file("empty_out.jsonl", R"({"instruction": "q", "context": "", "response": ""})");
  expect(empty_out, data_format::dolly, {empty_out.string() + ":1: field 'response' is empty"});
  const fs::path not_obj = file("not_obj.json", "[\n" + ok + ",\n  [1, 2]\n]");
  expect(not_obj, data_format::alpaca, {not_obj.string() + ":3: a record must be a JSON object, got array"});
  const fs::path quote = file("quote.jsonl", R"({"quote": "x", "author": "y"})"
                                             "\n"
                                             R"({"author": "z"})"
                                             "\n");
  expect(quote, data_format::quotes, {quote.string() + ":2: field 'quote' is missing"});
  const fs::path wrong_format = file("wrong.jsonl", R"({"quote": "x", "author": "y"})");
  expect(wrong_format, data_format::alpaca, {wrong_format.string() + ":1: field 'instruction' is missing"});
  // Hostile JSON: nesting 10^5 deep (refused while parsing, naming the limit), a number beyond a double.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect(file("deep.json", "[" + deep + "]"), data_format::alpaca, {"deep.json: JSON nested deeper than the limit of 512"});
  expect(file("deep.jsonl", ok + "\n" + deep), data_format::alpaca, {"deep.jsonl:2: JSON nested deeper than the limit"});
  expect(file("huge.json", R"([{"instruction": 1e400}])"), data_format::alpaca, {"huge.json: invalid JSON", "1e400"});
  expect(file("huge.jsonl", R"({"instruction": -1e999})"), data_format::alpaca, {"huge.jsonl:1: invalid JSON"});
  // Empty datasets.
  expect(file("empty.json", "[]"), data_format::alpaca, {"empty.json: no records"});
  expect(file("empty.jsonl", "\n\n"), data_format::dolly, {"empty.jsonl: no records"});
  expect(file("empty.txt", "\n%\n%\n"), data_format::text, {"empty.txt: no records"});
  expect(dir.path / "absent.json", data_format::alpaca, {"absent.json: data file not found"});
}

// ---- templates -----------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(templates_render_the_exact_strings) {
  const record with_input{"Translate.", "Bonjour", "Hello", 1};
  const record no_input{"Say hi.", "", "Hi.", 2};
  BOOST_TEST(render(prompt_template::alpaca, with_input).prompt ==
             "Below is an instruction that describes a task, paired with an input that provides further context. "
             "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n"
             "### Input:\nBonjour\n\n### Response:\n");
  BOOST_TEST(render(prompt_template::alpaca, with_input).response == "Hello");
  BOOST_TEST(render(prompt_template::alpaca, no_input).prompt ==
             "Below is an instruction that describes a task. Write a response that appropriately completes the "
             "request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
  BOOST_TEST(render(prompt_template::dolly, with_input).prompt ==
             "Below is an instruction that describes a task. Write a response that appropriately completes the "
             "request.\n\n### Instruction:\nTranslate.\n\nInput:\nBonjour\n\n### Response:\n");
  BOOST_TEST(render(prompt_template::dolly, with_input).response == "Hello\n\n### End");
  BOOST_TEST(render(prompt_template::dolly, no_input).prompt ==
             "Below is an instruction that describes a task. Write a response that appropriately completes the "
             "request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
  BOOST_TEST((render(prompt_template::plain, record{"", "", "Once upon a time.", 3}) ==
              rendered_record{"", "Once upon a time."}));
  BOOST_TEST((render(prompt_template::plain, with_input) == rendered_record{"", "Translate.\n\nBonjour\n\nHello"}));
  BOOST_TEST((render(prompt_template::chatml, with_input) ==
              rendered_record{"<|im_start|>user\nTranslate.\n\nBonjour<|im_end|>\n<|im_start|>assistant\n", "Hello<|im_end|>"}));
  BOOST_TEST(render(prompt_template::chatml, no_input).prompt == "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n");
  BOOST_TEST(end_marker(prompt_template::alpaca) == "");
  BOOST_TEST(end_marker(prompt_template::chatml) == "<|im_end|>");
  check_error([] { render(prompt_template::alpaca, record{"", "", "text", 7}); }, {"line 7", "needs an instruction"});
  check_error([] { render(prompt_template::chatml, record{"", "", "text", 8}); }, {"line 8", "chatml needs an instruction"});
  // The first real record, whole.
  const rendered_record r = render(prompt_template::alpaca, alpaca()[0]);
  BOOST_TEST(r.prompt.ends_with("### Instruction:\nDescribe a process of making crepes.\n\n### Response:\n"));
  BOOST_TEST(r.response == alpaca()[0].output);
}

// ---- tokenization --------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(prompt_tokens_are_masked_response_and_eos_are_trained) {
  for (const record& rec : {alpaca()[0], alpaca()[1]}) {
    const rendered_record r = render(prompt_template::alpaca, rec);
    const std::vector<int> prompt = tok().encode(r.prompt, false), response = tok().encode(r.response, false);
    const example ex = tokenize(tok(), r, false);
    const std::size_t P = prompt.size(), n = ex.input_ids.size();
    BOOST_REQUIRE(n == 1 + P + response.size() + 1);
    BOOST_REQUIRE(ex.labels.size() == n);
    BOOST_TEST(ex.input_ids.front() == tok().bos_id());
    BOOST_TEST(ex.input_ids.back() == tok().eos_id());
    BOOST_TEST(std::equal(prompt.begin(), prompt.end(), ex.input_ids.begin() + 1));
    BOOST_TEST(std::equal(response.begin(), response.end(), ex.input_ids.begin() + 1 + std::ptrdiff_t(P)));
    for (std::size_t t = 0; t <= P; ++t) BOOST_TEST(ex.labels[t] == ignore_index, "t=" << t);  // BOS + prompt
    for (std::size_t t = P + 1; t < n; ++t) BOOST_TEST(ex.labels[t] == ex.input_ids[t], "t=" << t);
    BOOST_TEST(ex.labels.back() == tok().eos_id());  // the model learns to stop
    BOOST_TEST(count_targets(ex.labels) == response.size() + 1);
    BOOST_TEST(tok().decode(std::span(ex.input_ids).subspan(1 + P, response.size())) == r.response);
    // train_on_prompt: only BOS is masked.
    const example all = tokenize(tok(), r, true);
    BOOST_TEST(all.input_ids == ex.input_ids);
    BOOST_TEST(all.labels[0] == ignore_index);
    BOOST_TEST(std::equal(all.labels.begin() + 1, all.labels.end(), all.input_ids.begin() + 1));
  }
  // plain: an empty prompt, so everything after BOS is trained whatever train_on_prompt says.
  const example plain = tokenize(tok(), render(prompt_template::plain, record{"", "", "Once upon a time.", 1}), false);
  BOOST_TEST(count_targets(plain.labels) == plain.input_ids.size() - 1);
}

// ---- rows ----------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(truncation_keeps_the_beginning_and_drops_rows_without_targets) {
  const std::vector<example> ex = tokenize_records(alpaca(), tok(), prompt_template::alpaca, false);
  for (const int seq_len : {128, 256, 1024}) {
    const rows_result r = make_rows(ex, seq_len, false, "alpaca");
    std::size_t truncated = 0, dropped = 0, tokens = 0, targets = 0;
    for (const example& x : ex) {
      const std::size_t n = std::min<std::size_t>(x.input_ids.size(), std::size_t(seq_len));
      truncated += x.input_ids.size() > std::size_t(seq_len);
      const std::size_t k = count_targets(std::span(x.labels).first(n));
      if (k == 0)
        ++dropped;
      else
        tokens += n, targets += k;
    }
    BOOST_TEST_MESSAGE("seq_len=" << seq_len << ": " << r.stats);
    BOOST_TEST(r.stats.examples == ex.size());
    BOOST_TEST(r.stats.truncated == truncated);
    BOOST_TEST(r.stats.dropped == dropped);
    BOOST_TEST(r.stats.rows == ex.size() - dropped);
    BOOST_TEST(r.rows.size() == r.stats.rows);
    BOOST_TEST(r.stats.tokens == tokens);
    BOOST_TEST(r.stats.targets == targets);
    for (const example& row : r.rows) {
      BOOST_TEST(row.input_ids.size() <= std::size_t(seq_len));
      BOOST_TEST(count_targets(row.labels) >= 1u);
    }
  }
  // Rows are prefixes of their examples (same order, dropped ones skipped).
  const rows_result r = make_rows(ex, 128, false);
  std::size_t j = 0;
  for (const example& x : ex) {
    if (j < r.rows.size() && std::equal(r.rows[j].input_ids.begin(), r.rows[j].input_ids.end(), x.input_ids.begin()) &&
        std::equal(r.rows[j].labels.begin(), r.rows[j].labels.end(), x.labels.begin()))
      ++j;
  }
  BOOST_TEST(j == r.rows.size());
  BOOST_TEST(r.stats.dropped > 0u);  // alpaca prompts are long for tok512: some lose every response token at 128
}

BOOST_AUTO_TEST_CASE(packing_keeps_every_token_in_full_rows) {
  const std::vector<record> stories = load_records(stories_file, data_format::text);
  const std::vector<example> ex = tokenize_records(stories, tok(), prompt_template::plain, false);
  const std::size_t total = concat_ids(ex).size();
  for (const int seq_len : {3, 37, 256}) {  // >= 3: every row holds a target (a BOS label is -100, the next is not)
    const rows_result r = make_rows(ex, seq_len, true);
    BOOST_TEST(concat_ids(r.rows) == concat_ids(ex));
    BOOST_TEST(r.stats.dropped == 0u);
    BOOST_TEST(r.stats.truncated == 0u);
    for (std::size_t i = 0; i + 1 < r.rows.size(); ++i) BOOST_TEST(r.rows[i].input_ids.size() == std::size_t(seq_len));
    BOOST_TEST(r.rows.back().input_ids.size() <= std::size_t(seq_len));
  }
  // seq_len 2: a row [EOS, BOS] has no target (BOS is never one) and is dropped, the rest kept.
  const rows_result two = make_rows(ex, 2, true);
  BOOST_TEST(two.stats.dropped > 0u);
  BOOST_TEST(two.stats.rows + two.stats.dropped == (total + 1) / 2);
  BOOST_TEST(two.stats.tokens == total - 2 * two.stats.dropped);
  // Prompt labels stay -100 when packed: the concatenated labels are the examples' labels.
  const std::vector<record> few(alpaca().begin(), alpaca().begin() + 20);
  const std::vector<example> inst = tokenize_records(few, tok(), prompt_template::alpaca, false);
  const rows_result packed = make_rows(inst, 4096, true);
  std::vector<int> want, got;
  for (const example& x : inst) want.insert(want.end(), x.labels.begin(), x.labels.end());
  for (const example& x : packed.rows) got.insert(got.end(), x.labels.begin(), x.labels.end());
  BOOST_TEST(got == want);
}

BOOST_AUTO_TEST_CASE(no_trainable_tokens_is_an_error_before_training) {
  const std::vector<example> ex = tokenize_records(alpaca(), tok(), prompt_template::alpaca, false);
  check_error(
      [&] { make_rows(ex, 8, false, "train split"); },
      {"no trainable tokens: every label is -100 after truncation to seq_len=8", "train split", "999 examples"});
  check_error([&] { make_rows(ex, 1, false); }, {"--seq-len must be >= 2", "got 1"});
  BOOST_TEST(make_rows(std::vector<example>{}, 8, false).rows.empty());  // nothing in, nothing to complain about
}

// ---- shuffles and splits -------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(shuffle_is_reproducible_per_seed_and_differs_across_seeds) {
  std::vector<int> base(1000);
  std::iota(base.begin(), base.end(), 0);
  const auto shuffled = [&](std::uint64_t seed) {
    std::vector<int> v = base;
    std::mt19937_64 rng(seed);
    shuffle_in_place(v, rng);
    return v;
  };
  const std::uint64_t seed = loralab::testing::rng(101)();
  BOOST_TEST(shuffled(seed) == shuffled(seed));
  BOOST_TEST(shuffled(seed) != shuffled(seed + 1));
  BOOST_TEST(shuffled(seed) != base);
  std::vector<int> sorted = shuffled(seed);
  std::sort(sorted.begin(), sorted.end());
  BOOST_TEST(sorted == base);
  // Pinned: the algorithm is written down, so seed 42 gives this order everywhere.
  std::vector<int> ten(10);
  std::iota(ten.begin(), ten.end(), 0);
  std::mt19937_64 rng(42);
  shuffle_in_place(ten, rng);
  BOOST_TEST(ten == (std::vector<int>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));  // mt19937_64's outputs are standardized
}

BOOST_AUTO_TEST_CASE(split_is_disjoint_complete_and_reproducible) {
  const std::vector<record>& all = alpaca();
  for (const val_size v :
       {val_size::parse("100"), val_size::parse("0.1"), val_size::parse("0"), val_size::parse("998")}) {
    const train_val<record> a = split_train_val(all, v, 7);
    const train_val<record> b = split_train_val(all, v, 7);
    BOOST_TEST(a.val.size() == v.resolve(all.size()));
    BOOST_TEST(a.train.size() + a.val.size() == all.size());
    BOOST_TEST((a.train == b.train && a.val == b.val));
    std::set<std::size_t> lines;  // lines are unique per record
    for (const record& r : a.train) lines.insert(r.line);
    for (const record& r : a.val) BOOST_TEST(lines.insert(r.line).second, "line " << r.line << " is in both");
    BOOST_TEST(lines.size() == all.size());
  }
  BOOST_TEST(val_size::parse("0.1").resolve(999) == 100u);  // ceil(99.9)
  BOOST_TEST(
      (split_train_val(all, val_size::parse("100"), 7).val != split_train_val(all, val_size::parse("100"), 8).val));
  check_error([] { val_size::parse("999").resolve(999); },
              {"--val-size 999", "999 records", "smaller than the dataset"});
  check_error([] { val_size::parse("0.9999").resolve(999); }, {"leaving none for training"});
  for (const char* bad : {"1.0", "0.0", "-3", "1.5", "ten", "", "0.1x"})
    check_error([&] { val_size::parse(bad); }, {"--val-size must be a count >= 0", "or a fraction in (0, 1)"});
}

// ---- batches -------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(batch_targets_are_the_shifted_labels_and_padding_is_masked) {
  const std::vector<record> few(alpaca().begin(), alpaca().begin() + 50);
  const rows_result r = make_rows(tokenize_records(few, tok(), prompt_template::alpaca, false), 192, false);
  const int eos = tok().eos_id();
  for (const int pad_to : {0, 192}) {
    batch_loader loader(r.rows, 8, eos, 1234, true, pad_to);
    BOOST_TEST(loader.num_batches() == int((r.rows.size() + 7) / 8));
    const std::vector<std::size_t> order = loader.order(0);
    for (int i = 0; i < loader.num_batches(); ++i) {
      const batch b = loader.batch_at(0, i);
      BOOST_TEST(b.B == std::min<int>(8, int(r.rows.size()) - 8 * i));  // the last batch is smaller
      if (pad_to) BOOST_TEST(b.T == pad_to);
      int trainable = 0;
      for (int row = 0; row < b.B; ++row) {
        const example& x = r.rows[order[std::size_t(8 * i + row)]];
        const int n = int(x.input_ids.size());
        BOOST_TEST(n <= b.T);
        for (int t = 0; t < b.T; ++t) {
          const int tokv = b.tokens[std::size_t(row * b.T + t)], target = b.targets[std::size_t(row * b.T + t)];
          BOOST_TEST(tokv == (t < n ? x.input_ids[std::size_t(t)] : eos));
          BOOST_TEST(target == (t + 1 < n ? x.labels[std::size_t(t + 1)] : ignore_index));
          trainable += target != ignore_index;
        }
        BOOST_TEST(b.targets[std::size_t(row * b.T + b.T - 1)] == ignore_index);
      }
      BOOST_TEST(b.trainable_tokens == trainable);
      BOOST_TEST(b.trainable_tokens > 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(epochs_visit_every_row_once_in_a_seeded_order) {
  std::vector<example> rows;
  for (int i = 0; i < 23; ++i) rows.push_back({{1, 100 + i, 2}, {ignore_index, 100 + i, 2}});
  batch_loader loader(rows, 5, 2, 99);
  batch_loader same(rows, 5, 2, 99), other(rows, 5, 2, 100);
  BOOST_TEST(loader.num_batches() == 5);
  BOOST_TEST(loader.order(0) != loader.order(1));
  BOOST_TEST(loader.order(3) == same.order(3));
  BOOST_TEST(loader.order(0) != other.order(0));
  for (int e = 0; e < 3; ++e) {
    std::multiset<int> seen;
    for (int i = 0; i < 5; ++i) {
      BOOST_TEST(loader.epoch() == e);
      BOOST_TEST(loader.batch_in_epoch() == i);
      const batch b = loader.next();
      const batch again = same.batch_at(e, i);
      BOOST_TEST(b.tokens == again.tokens);
      BOOST_TEST(b.B == (i < 4 ? 5 : 3));
      for (int row = 0; row < b.B; ++row) seen.insert(b.tokens[std::size_t(row * b.T + 1)]);
    }
    BOOST_TEST(seen.size() == 23u);
    BOOST_TEST(std::set<int>(seen.begin(), seen.end()).size() == 23u);
  }
  BOOST_TEST(loader.epoch() == 3);
  batch_loader unshuffled(rows, 5, 2, 99, false);
  BOOST_TEST(unshuffled.batch_at(0, 0).tokens[1] == 100);
  check_error([&] { loader.batch_at(0, 5); }, {"batch index 5", "[0, 5)"});
  check_error([&] { batch_loader(rows, 0, 2, 1); }, {"--batch-size must be >= 1", "got 0"});
  check_error([] { batch_loader().next(); }, {"no rows"});
}

// ---- all at once ---------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(prepare_dataset_end_to_end_and_config_validation) {
  dataset_config c;
  c.file = alpaca_file;
  c.format = data_format::alpaca;
  c.seq_len = 256;
  c.batch_size = 16;
  c.val = val_size::parse("0.1");
  BOOST_TEST_MESSAGE(c);
  const prepared_dataset d = prepare_dataset(c, tok());
  BOOST_TEST_MESSAGE("train " << d.train_stats << "\nval " << d.val_stats);
  BOOST_TEST(d.records == 999u);
  BOOST_TEST(d.train_stats.examples == 899u);
  BOOST_TEST(d.val_stats.examples == 100u);
  BOOST_TEST(d.train.size() == d.train_stats.rows);
  BOOST_TEST(d.val.size() == d.val_stats.rows);
  BOOST_TEST(d.train.num_batches() == int((d.train.size() + 15) / 16));
  BOOST_TEST(d.val.order(0) == d.val.order(1));  // validation is not shuffled

  dataset_config quotes;
  quotes.file = quotes_file;
  quotes.format = data_format::quotes;
  quotes.seq_len = 64;
  quotes.packing = true;
  quotes.pad_to_seq_len = true;
  const prepared_dataset q = prepare_dataset(quotes, tok());
  BOOST_TEST(q.val.size() == 0u);
  BOOST_TEST(q.val.num_batches() == 0);
  BOOST_TEST(q.train.batch_at(0, 0).T == 64);

  dataset_config bad = c;
  bad.seq_len = 1;
  check_error([&] { prepare_dataset(bad, tok()); }, {"--seq-len must be >= 2"});
  bad = c;
  bad.batch_size = 0;
  check_error([&] { prepare_dataset(bad, tok()); }, {"--batch-size must be >= 1"});
  bad = c;
  bad.val = val_size{0, 1.5};
  check_error([&] { prepare_dataset(bad, tok()); }, {"--val-size fraction must be in (0, 1)"});
  bad = c;
  bad.val = val_size::parse("5000");
  check_error([&] { prepare_dataset(bad, tok()); }, {"--val-size 5000", "999 records"});
  bad = c;
  bad.seq_len = 8;
  check_error([&] { prepare_dataset(bad, tok()); },
              {"no trainable tokens: every label is -100 after truncation to seq_len=8"});
}

BOOST_AUTO_TEST_SUITE_END()

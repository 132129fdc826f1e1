// SPDX-License-Identifier: MIT
// nn/tokenizer.hpp on the real tok512 files: the llama2.c tokenizer.bin against run.c's golden output and against
// the SentencePiece model it was exported from, the fast merge against run.c's loop, byte fallback, and every way
// a tokenizer.bin can be corrupt.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/tokenizer.hpp"
#include "test_support.hpp"
#include "expect_error.hpp"

#ifndef LORALAB_SHARED_DIR
#error "LORALAB_SHARED_DIR must name the shared/ folder (tests/nn/CMakeLists.txt defines it)"
#endif

namespace fs = std::filesystem;
using namespace loralab::nn;

namespace {

const std::string tok_bin = LORALAB_SHARED_DIR "/models/tok512.bin";
const std::string tok_model = LORALAB_SHARED_DIR "/models/tok512.model";
const std::string golden_file = LORALAB_SHARED_DIR "/models/stories260K.golden.json";
constexpr int tok512_vocab = 512;

const llama2c_tokenizer& bin_tok() {
  static const llama2c_tokenizer t(tok_bin, tok512_vocab);
  return t;
}
const sentencepiece_tokenizer& sp_tok() {
  static const sentencepiece_tokenizer t(tok_model);
  return t;
}
// The suite is called `tokenizer` too, so the interface gets another name here.
using tokenizer_base = loralab::nn::tokenizer;
std::array<const tokenizer_base*, 2> both() { return {&bin_tok(), &sp_tok()}; }

const nlohmann::json& golden() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(golden_file));
  return j;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  BOOST_REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

using loralab::testing::expect_error;

/// A tokenizer.bin image: int32 max_token_length, then (f32 score, int32 length, bytes) per token.
struct bin_writer {
  std::string bytes;
  void i32(std::int32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); }
  void f32(float v) { bytes.append(reinterpret_cast<const char*>(&v), 4); }
  void token(float score, std::string_view piece) {
    f32(score);
    i32(static_cast<std::int32_t>(piece.size()));
    bytes += piece;
  }
  fs::path write(const fs::path& path) const {
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
  }
};

/// The piece llama2.c's tokenizer.py exports for a SentencePiece piece: BOS/EOS get "\n<s>\n"/"\n</s>\n" and
/// U+2581 becomes a space. Spelled out here independently of sentencepiece_tokenizer::exported_piece.
std::string export_rule(const std::string& sp_piece, int id) {
  if (id == 1) return "\n<s>\n";
  if (id == 2) return "\n</s>\n";
  std::string out;
  for (std::size_t i = 0; i < sp_piece.size();) {
    const bool space = sp_piece.compare(i, 3, "\xE2\x96\x81") == 0;
    out += space ? ' ' : sp_piece[i];
    i += space ? 3 : 1;
  }
  return out;
}

std::string streamed(const tokenizer_base& tok, int first_prev, const std::vector<int>& ids) {
  std::string out;
  int prev = first_prev;
  for (const int id : ids) {
    out += tok.decode_piece(prev, id);
    prev = id;
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tokenizer)

BOOST_AUTO_TEST_CASE(prompt_encodes_to_golden_ids) {
  const auto expected = golden().at("prompt_token_ids").get<std::vector<int>>();
  BOOST_TEST(expected == (std::vector<int>{1, 403, 407, 261, 378}), boost::test_tools::per_element());
  const std::string prompt = golden().at("prompt").get<std::string>();
  BOOST_TEST(bin_tok().encode(prompt, true) == expected, boost::test_tools::per_element());
  BOOST_TEST(bin_tok().encode_ref(prompt, true) == expected, boost::test_tools::per_element());
  BOOST_TEST(sp_tok().encode(prompt, true) == expected, boost::test_tools::per_element());
  // EOS is appended after merging; empty text gets no dummy prefix.
  auto with_eos = expected;
  with_eos.push_back(2);
  BOOST_TEST(bin_tok().encode(prompt, true, true) == with_eos, boost::test_tools::per_element());
  BOOST_TEST(sp_tok().encode(prompt, true, true) == with_eos, boost::test_tools::per_element());
  BOOST_TEST(bin_tok().encode("", true) == std::vector<int>{1}, boost::test_tools::per_element());
  BOOST_TEST(sp_tok().encode("", true) == std::vector<int>{1}, boost::test_tools::per_element());
  BOOST_TEST(bin_tok().encode("", false).empty());
  BOOST_TEST(sp_tok().encode("", false).empty());
}

BOOST_AUTO_TEST_CASE(vocab_special_ids_and_all_pieces_agree) {
  for (const tokenizer_base* t : both()) {
    BOOST_TEST(t->vocab_size() == tok512_vocab);
    BOOST_TEST(t->bos_id() == 1);
    BOOST_TEST(t->eos_id() == 2);
  }
  BOOST_TEST(bin_tok().max_token_length() == 7);
  for (int id = 0; id < tok512_vocab; ++id) {
    BOOST_TEST(bin_tok().piece(id) == export_rule(sp_tok().piece(id), id), "id " << id);
    BOOST_TEST(sp_tok().exported_piece(id) == bin_tok().piece(id), "id " << id);
    BOOST_TEST(bin_tok().score(id) == sp_tok().score(id), "id " << id);  // copied, not recomputed: exact
  }
  BOOST_TEST(sp_tok().piece(261) == "\xE2\x96\x81" "a");  // raw SentencePiece spelling, for messages
}

BOOST_AUTO_TEST_CASE(decode_piece_agrees_for_every_id) {
  for (const int prev : {0, 1, 2, 3, 261, 403, 511})
    for (int id = 0; id < tok512_vocab; ++id)
      BOOST_TEST(bin_tok().decode_piece(prev, id) == sp_tok().decode_piece(prev, id), "prev " << prev << " id " << id);
  // run.c's rules: the space goes after BOS only; <0x0A> is a raw newline.
  BOOST_TEST(bin_tok().decode_piece(1, 403) == "Once");
  BOOST_TEST(bin_tok().decode_piece(403, 407) == " upon");
  BOOST_TEST(bin_tok().decode_piece(5, 3 + 0x0A) == "\n");
}

BOOST_AUTO_TEST_CASE(streamed_golden_sequence_reproduces_run_c_stdout) {
  const auto seq = golden().at("sequence_token_ids").get<std::vector<int>>();
  const auto printed = golden().at("printed_token_ids_n64").get<std::vector<int>>();
  const std::string stdout_bytes = golden().at("run_c_stdout").get<std::string>();
  BOOST_REQUIRE(seq.size() == 64 && printed.size() == 64 && seq.front() == 1);
  // run.c prints, for each position, the piece of the next token after the current one: seq[1:] then the argmax.
  BOOST_TEST(std::vector<int>(seq.begin() + 1, seq.end()) == std::vector<int>(printed.begin(), printed.end() - 1),
             boost::test_tools::per_element());
  for (const tokenizer_base* t : both()) {
    BOOST_TEST(streamed(*t, seq.front(), printed) + "\n" == stdout_bytes);
    // Whole-sequence decoding of the same ids drops BOS and the dummy-prefix space: the same text.
    std::vector<int> all = seq;
    all.push_back(printed.back());
    BOOST_TEST(t->decode(all) + "\n" == stdout_bytes);
  }
}

// run.c does not collapse whitespace and SentencePiece (remove_extra_whitespaces) does, so the lines compared are
// those without double, leading or trailing spaces. tinystories_sample.txt has only 18 such lines, so the 425 of
// tinystories_validation_100.txt (the same distribution) are added: 443 lines, every one of which must agree.
// They do: run.c's greedy highest-score merge is SentencePiece's BPE (which also merges the best-scoring pair,
// leftmost on ties), and the non-ASCII characters here (curly quotes and apostrophe) are single pieces in both.
BOOST_AUTO_TEST_CASE(tinystories_lines_encode_the_same) {
  std::vector<std::string> lines;
  for (const char* file : {"/data/tinystories_sample.txt", "/data/tinystories_validation_100.txt"})
    for (auto& line : read_lines(std::string(LORALAB_SHARED_DIR) + file))
      if (!line.empty() && line != "<|endoftext|>" && line.find("  ") == std::string::npos && line.front() != ' ' &&
          line.back() != ' ')
        lines.push_back(std::move(line));
  BOOST_TEST(lines.size() == 443u);
  std::size_t agree = 0, tokens = 0;
  for (const auto& line : lines) {
    const auto ids = bin_tok().encode(line, true);
    const auto sp_ids = sp_tok().encode(line, true);
    agree += ids == sp_ids;
    BOOST_TEST(ids == sp_ids, "line: " << line);
    BOOST_TEST(ids == bin_tok().encode_ref(line, true), "line: " << line);
    BOOST_TEST(bin_tok().decode(ids) == line);
    BOOST_TEST(sp_tok().decode(ids) == line);
    tokens += ids.size();
  }
  std::cout << "[tokenizer] llama2.c and SentencePiece encodings agree on " << agree << " of " << lines.size()
            << " TinyStories lines (" << tokens << " tokens)\n";
  BOOST_TEST(agree == lines.size());
}

BOOST_AUTO_TEST_CASE(whitespace_runs_are_kept_by_run_c_and_collapsed_by_sentencepiece) {
  for (const std::string text : {"a  b", " leading", "trailing ", "tab\tand\nnewline"}) {
    BOOST_TEST(bin_tok().decode(bin_tok().encode(text, true)) == text);
    BOOST_TEST(bin_tok().encode(text, true) == bin_tok().encode_ref(text, true));
  }
  BOOST_TEST(sp_tok().decode(sp_tok().encode("a  b", true)) == "a b");
  BOOST_TEST(bin_tok().encode("a  b", true) != sp_tok().encode("a  b", true));
}

BOOST_AUTO_TEST_CASE(byte_fallback_round_trips) {
  // tok512's only non-ASCII pieces are “ ” ’ ‘ – — é … ñ â € ™, U+00A0 and U+200A: everything here falls back.
  const std::vector<std::string> texts = {"ü", "Zürich", "Lily saw a 🐶 and said “hi”!", "naïve façade", "日本語",
                                          "\xF0\x9F\x98\x80\xF0\x9F\x98\x80"};
  for (const auto& text : texts) {
    const auto ids = bin_tok().encode(text, true, true);
    BOOST_TEST(ids == sp_tok().encode(text, true, true), "text: " << text);
    BOOST_TEST(std::any_of(ids.begin(), ids.end(), [](int id) { return id >= 3 && id < 259; }), "text: " << text);
    BOOST_TEST(bin_tok().decode(ids) == text);
    BOOST_TEST(sp_tok().decode(ids) == text);
    // Streaming byte by byte also reassembles the UTF-8 (run.c's safe_printf would drop these bytes).
    BOOST_TEST(streamed(bin_tok(), 1, std::vector<int>(ids.begin() + 1, ids.end() - 1)) == text);
  }
  // "ü" is U+00FC = C3 BC: the dummy prefix, then the two byte tokens; "é" is a piece of its own.
  const int space = bin_tok().encode(" ", false).front();
  BOOST_TEST(bin_tok().encode("ü", false) == (std::vector<int>{space, 0xC3 + 3, 0xBC + 3}),
             boost::test_tools::per_element());
  BOOST_TEST(bin_tok().encode("é", false).size() == 2u);
  // A lone continuation byte or truncated sequence decodes to U+FFFD in both, as SentencePiece does.
  const std::vector<int> broken = {1, 3 + 0xA9, 3 + 0xE2, 3 + 0x82, 403};
  BOOST_TEST(bin_tok().decode(broken) == sp_tok().decode(broken));
  BOOST_TEST(bin_tok().decode(broken) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD Once");
}

// The priority-queue merge against run.c's O(n²) loop on random text: pieces of the vocab glued together with
// spaces, punctuation, digits, multi-byte characters (in and out of the vocab) and malformed UTF-8. Every other
// text is made valid UTF-8 with single inner spaces only, and there SentencePiece must agree as well.
BOOST_AUTO_TEST_CASE(fast_merge_matches_run_c_loop_on_random_text) {
  auto g = loralab::testing::rng(0x70CE);
  const std::vector<std::string> valid = {" ", ".", ",", "é", "“", "ü", "🐶", "0", "42", "\n"};
  const std::vector<std::string> malformed = {"\xA9", "\xE2\x82", "\xFF", "\xF0\x9F"};
  std::uniform_int_distribution<int> pick_piece(259, tok512_vocab - 1), pick_valid(0, int(valid.size()) - 1),
      pick_malformed(0, int(malformed.size()) - 1), length(0, 40), coin(0, 3);
  int compared_with_sp = 0;
  for (int trial = 0; trial < 500; ++trial) {
    const bool sp_comparable = trial % 2 == 1;
    std::string text;
    for (int n = length(g); n > 0; --n) {
      const int c = coin(g);
      text += c >= 2 ? bin_tok().piece(pick_piece(g))
              : c == 1 || sp_comparable ? valid[pick_valid(g)]
                                        : malformed[pick_malformed(g)];
    }
    if (sp_comparable) {  // SentencePiece's whitespace rules: no runs, no leading or trailing space
      for (std::size_t at; (at = text.find("  ")) != std::string::npos;) text.erase(at, 1);
      while (!text.empty() && text.front() == ' ') text.erase(0, 1);
      while (!text.empty() && text.back() == ' ') text.pop_back();
    }
    const bool bos = trial % 4 < 2, eos = trial % 3 == 0;
    const auto ids = bin_tok().encode(text, bos, eos);
    BOOST_TEST(ids == bin_tok().encode_ref(text, bos, eos), "text: '" << text << "'");
    if (sp_comparable) {
      ++compared_with_sp;
      BOOST_TEST(ids == sp_tok().encode(text, bos, eos), "text: '" << text << "'");
      BOOST_TEST(bin_tok().decode(ids) == text);
    }
  }
  BOOST_TEST(compared_with_sp == 250);
}

// Whole-sequence decoding of random ids (byte tokens, BOS/EOS included) matches SentencePiece's DecodeIds, with
// two differences on purpose:
// * tok512 has remove_extra_whitespaces on, so SentencePiece drops the leading space of *every* piece until some
//   text is out, while llama2c_tokenizer drops only the first (the dummy prefix), which keeps
//   decode(encode(text)) == text for run.c's whitespace-preserving encoding. They differ only when the first piece
//   to print is nothing but spaces (tok512: the piece " "), so such sequences are skipped.
// * <unk> (id 0): tok512.model's trainer_spec stores unk_surface as the 14 literal characters " \342\201\207 "
//   (octal escapes written out by the trainer instead of U+2047), and SentencePiece prints exactly that.
//   llama2c_tokenizer has no trainer_spec and prints SentencePiece's default " ⁇ ". Random ids skip id 0.
BOOST_AUTO_TEST_CASE(decode_matches_sentencepiece_on_random_ids) {
  auto g = loralab::testing::rng(0xDEC0);
  std::uniform_int_distribution<int> any_id(1, tok512_vocab - 1), byte_id(3 + 0x80, 3 + 0xFF), length(0, 12),
      coin(0, 2);
  const int space = bin_tok().encode(" ", false).front();
  int compared = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<int> ids;
    for (int n = length(g); n > 0; --n) ids.push_back(coin(g) ? any_id(g) : byte_id(g));
    const auto first_text = std::find_if(ids.begin(), ids.end(), [](int id) { return id > 2; });
    if (first_text != ids.end() && *first_text == space) continue;
    ++compared;
    BOOST_TEST(bin_tok().decode(ids) == sp_tok().decode(ids), "ids " << [&] {
      std::string s;
      for (const int id : ids) s += std::to_string(id) + " ";
      return s;
    }());
  }
  BOOST_TEST(compared > 2000);
  const std::vector<int> leading_space = {space, space, 403};
  BOOST_TEST(bin_tok().decode(leading_space) == "  Once");
  BOOST_TEST(sp_tok().decode(leading_space) == "Once");
  const std::vector<int> unk = {403, 0};
  BOOST_TEST(bin_tok().decode(unk) == "Once \xE2\x81\x87 ");
  BOOST_TEST(sp_tok().decode(unk) == "Once \\342\\201\\207 ");
}

BOOST_AUTO_TEST_CASE(out_of_range_ids_are_errors) {
  expect_error([] { (void)bin_tok().decode_piece(1, 512); }, {tok_bin, "512"});
  expect_error([] { (void)sp_tok().decode_piece(1, -1); }, {tok_model, "-1"});
  const std::vector<int> bad = {1, 600};
  expect_error([&] { (void)bin_tok().decode(bad); }, {tok_bin, "600"});
  expect_error([&] { (void)sp_tok().decode(bad); }, {tok_model, "600"});
}

BOOST_AUTO_TEST_CASE(corrupt_tokenizer_bin_files_are_errors) {
  loralab::testing::temp_dir dir;
  const auto good_prefix = [] {
    bin_writer w;
    w.i32(6);
    w.token(0, "<unk>");
    w.token(0, "\n<s>\n");
    return w;
  };
  {  // shorter than the header
    bin_writer w;
    w.bytes = "ab";
    const auto p = w.write(dir.path / "short.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "max_token_length"});
  }
  {  // negative and absurd max_token_length
    bin_writer w;
    w.i32(-4);
    const auto p = w.write(dir.path / "negative_max.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "max_token_length -4"});
    bin_writer w2;
    w2.i32(1 << 30);
    const auto p2 = w2.write(dir.path / "absurd_max.bin");
    expect_error([&] { llama2c_tokenizer(p2, 3); }, {p2.string(), "max_token_length 1073741824"});
  }
  {  // negative length at token 2
    auto w = good_prefix();
    w.f32(0);
    w.i32(-1);
    const auto p = w.write(dir.path / "negative_len.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "token 2 ", "length -1"});
  }
  {  // a length past max_token_length
    auto w = good_prefix();
    w.token(0, "1234567");
    const auto p = w.write(dir.path / "long_piece.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "token 2 ", "length 7"});
  }
  {  // EOF in the middle of a piece
    auto w = good_prefix();
    w.f32(0);
    w.i32(5);
    w.bytes += "ab";
    const auto p = w.write(dir.path / "eof_in_piece.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "inside token 2 "});
  }
  {  // EOF in a score, in a length
    auto w = good_prefix();
    w.bytes += "xy";
    const auto p = w.write(dir.path / "eof_in_score.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "score of token 2 "});
    auto w2 = good_prefix();
    w2.f32(0);
    w2.bytes += "x";
    const auto p2 = w2.write(dir.path / "eof_in_length.bin");
    expect_error([&] { llama2c_tokenizer(p2, 3); }, {p2.string(), "length of token 2 "});
  }
  {  // NaN score
    auto w = good_prefix();
    w.token(std::numeric_limits<float>::quiet_NaN(), "x");
    const auto p = w.write(dir.path / "nan.bin");
    expect_error([&] { llama2c_tokenizer(p, 3); }, {p.string(), "token 2 ", "NaN"});
  }
  {  // vocab_size <= 0, a missing file
    const auto p = good_prefix().write(dir.path / "ok.bin");
    BOOST_TEST(llama2c_tokenizer(p, 2).vocab_size() == 2);
    expect_error([&] { llama2c_tokenizer(p, 0); }, {p.string(), "vocab_size", "0"});
    expect_error([&] { llama2c_tokenizer(p, -512); }, {p.string(), "-512"});
    expect_error([&] { llama2c_tokenizer(dir.path / "missing.bin", 3); }, {(dir.path / "missing.bin").string()});
  }
  // The real file with the wrong vocab size: too big runs out of file at token 512, too small leaves bytes over.
  expect_error([] { llama2c_tokenizer(tok_bin, 32000); }, {tok_bin, "token 512 ", "32000"});
  expect_error([] { llama2c_tokenizer(tok_bin, 500); }, {tok_bin, "left after 500 tokens"});
}

BOOST_AUTO_TEST_CASE(sentencepiece_model_errors_and_load_tokenizer) {
  loralab::testing::temp_dir dir;
  const auto missing = (dir.path / "missing.model").string();
  expect_error([&] { sentencepiece_tokenizer{missing}; }, {missing});
  expect_error([&] { (void)load_tokenizer(missing, 512); }, {missing});
  bin_writer junk;
  junk.bytes = "\x0A\x05garbage that is not a protobuf";
  const auto corrupt = junk.write(dir.path / "corrupt.model").string();
  expect_error([&] { sentencepiece_tokenizer{corrupt}; }, {corrupt, "cannot load SentencePiece model"});

  const auto by_ext_sp = load_tokenizer(tok_model, 0);
  const auto by_ext_bin = load_tokenizer(tok_bin, 512);
  BOOST_TEST(dynamic_cast<const sentencepiece_tokenizer*>(by_ext_sp.get()) != nullptr);
  BOOST_TEST(dynamic_cast<const llama2c_tokenizer*>(by_ext_bin.get()) != nullptr);
  expect_error([] { (void)load_tokenizer(tok_bin, 0); }, {tok_bin, "vocab_size"});
  // Without a known extension the content decides.
  fs::copy_file(tok_model, dir.path / "tok.sp");
  fs::copy_file(tok_bin, dir.path / "tok.dat");
  BOOST_TEST(dynamic_cast<const sentencepiece_tokenizer*>(load_tokenizer(dir.path / "tok.sp", 0).get()) != nullptr);
  BOOST_TEST(dynamic_cast<const llama2c_tokenizer*>(load_tokenizer(dir.path / "tok.dat", 512).get()) != nullptr);
}

BOOST_AUTO_TEST_CASE(vocab_mismatch_names_both_files_and_sizes) {
  check_vocab_matches(sp_tok(), 512, tok_model, "stories260K.bin");
  expect_error([] { check_vocab_matches(sp_tok(), 32000, tok_model, "llama2_7b.bin"); },
               {tok_model, "llama2_7b.bin", "512", "32000"});
}

BOOST_AUTO_TEST_SUITE_END()

// SPDX-License-Identifier: MIT
// nn/bpe_tokenizer.hpp against HF tokenizers (tests/data/bpe_golden.json, written by tests/reference/
// make_bpe_golden.py): a 1000-token vocab trained on Debian's fortunes (tests/data/bpe_small) and SmolLM2-135M's
// real 49,152-token vocab (its tokenizer.json is rebuilt from the GGUF by the same script into
// ${LORALAB_CACHE:-~/.cache/loralab}/smollm2-tokenizer/; those cases are skipped, with the reason, without it).
// Also: the fast merge against the plain loop, round trips, invalid UTF-8, the plain-data constructor, and every
// way a tokenizer.json is refused.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/bpe_tokenizer.hpp"
#include "test_support.hpp"
#include "expect_error.hpp"

namespace fs = std::filesystem;
using namespace loralab::nn;
using nlohmann::json;

namespace {

const std::string small_json = LORALAB_TEST_DATA_DIR "/bpe_small/tokenizer.json";

const json& golden() {
  static const json j = json::parse(std::ifstream(LORALAB_TEST_DATA_DIR "/bpe_golden.json"));
  return j;
}
const bpe_tokenizer& small() {
  static const bpe_tokenizer t = bpe_tokenizer::from_json(small_json);
  return t;
}

fs::path smollm2_json() {
  const char* cache = std::getenv("LORALAB_CACHE");
  const char* home = std::getenv("HOME");
  const fs::path dir = cache ? fs::path(cache) : fs::path(home ? home : "/") / ".cache/loralab";
  return dir / "smollm2-tokenizer/tokenizer.json";
}
/// SmolLM2's tokenizer, or nullptr after printing why its tests are skipped.
const bpe_tokenizer* smollm2() {
  static const std::optional<bpe_tokenizer> t = []() -> std::optional<bpe_tokenizer> {
    if (!fs::exists(smollm2_json())) return std::nullopt;
    return bpe_tokenizer::from_json(smollm2_json());
  }();
  if (!t) BOOST_TEST_MESSAGE("skipped: " << smollm2_json() << " is absent (run tests/reference/make_bpe_golden.py)");
  return t ? &*t : nullptr;
}

std::vector<int> ids_of(const json& a) { return a.get<std::vector<int>>(); }

using loralab::testing::expect_error;

/// Random valid UTF-8: code points drawn from ASCII, Latin-1, Cyrillic, CJK, emoji, spaces, digits of all kinds.
std::string random_utf8(std::mt19937_64& g, int n) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0xFF}, {0x400, 0x4FF}, {0x4E00, 0x4E80}, {0x1F600, 0x1F64F},
      {0x2000, 0x200D}, {0x660, 0x669}, {0x2160, 0x2188}, {0x0, 0x1F}, {0xFE0F, 0xFE0F}, {0x10000, 0x10FFFF}};
  std::string s;
  for (int i = 0; i < n; ++i) {
    const auto& [lo, hi] = ranges[g() % ranges.size()];
    char32_t cp = lo + static_cast<char32_t>(g() % (hi - lo + 1));
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    loralab::nn::detail::append_utf8(s, cp);
  }
  return s;
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

}  // namespace

BOOST_AUTO_TEST_SUITE(bpe)

BOOST_AUTO_TEST_CASE(pre_tokenizer_splits_like_llama_cpp_smollm) {
  using v = std::vector<std::string_view>;
  BOOST_TEST((bpe_pre_tokenize("x  12", bpe_pre_tokenizer::smollm) == v{"x", "  ", "1", "2"}));
  BOOST_TEST((bpe_pre_tokenize("x  12", bpe_pre_tokenizer::gpt2) == v{"x", " ", " 12"}));
  BOOST_TEST((bpe_pre_tokenize("Hi  there's\n\n", bpe_pre_tokenizer::gpt2) == v{"Hi", " ", " there", "'s", "\n\n"}));
  BOOST_TEST((bpe_pre_tokenize("a ?!b", bpe_pre_tokenizer::gpt2) == v{"a", " ?!", "b"}));
  BOOST_TEST(bpe_pre_tokenize("", bpe_pre_tokenizer::smollm).empty());
}

BOOST_AUTO_TEST_CASE(small_vocab_matches_tokenizers) {
  const auto& t = small();
  BOOST_TEST(t.vocab_size() == 1000);
  BOOST_TEST(t.vocab().pre == bpe_pre_tokenizer::smollm);
  BOOST_TEST(t.bos_id() == 0);  // no tokenizer_config.json: GPT-2's <|endoftext|>
  int n = 0;
  for (const auto& c : golden()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int> ids = t.encode(text, false);
    BOOST_TEST(ids == ids_of(c["small"]), "case " << n << ": '" << text << "'");
    BOOST_TEST(t.decode(ids) == c["small_decoded"].get<std::string>(), "case " << n);
    BOOST_TEST(t.decode(ids) == text, "case " << n);
    ++n;
  }
  BOOST_TEST(n >= 100);
}

BOOST_AUTO_TEST_CASE(smollm2_vocab_matches_tokenizers) {
  const bpe_tokenizer* t = smollm2();
  if (!t) return;
  BOOST_TEST(t->vocab_size() == 49152);
  BOOST_TEST(t->bos_id() == 1);
  BOOST_TEST(t->eos_id() == 2);
  BOOST_TEST(t->piece(1) == "<|im_start|>");
  BOOST_TEST(t->type(2) == token_type::control);
  BOOST_TEST((t->encode("x  12", false) == std::vector<int>{104, 256, 33, 34}));  // llama.cpp's ids
  BOOST_TEST((t->encode("x  12") == std::vector<int>{104, 256, 33, 34}));         // add_bos_token false
  BOOST_TEST((t->encode("hi", true, true) == std::vector<int>{1, t->encode("hi", false)[0], 2}));
  int n = 0;
  for (const auto& c : golden()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int> ids = t->encode(text, false);
    BOOST_TEST(ids == ids_of(c["smollm2"]), "case " << n << ": '" << text << "'");
    BOOST_TEST(t->decode(ids) == c["smollm2_decoded"].get<std::string>(), "case " << n);
    ++n;
  }
}

BOOST_AUTO_TEST_CASE(smollm2_encode_speed) {
  const bpe_tokenizer* t = smollm2();
  if (!t) return;
  std::string text;  // Debian's fortunes, or the golden corpus repeated when they are absent
  for (const auto& e : fs::directory_iterator("/usr/share/games/fortunes", std::filesystem::directory_options::skip_permission_denied)) {
    const auto ext = e.path().extension();
    if (e.is_regular_file() && ext != ".dat" && ext != ".u8") text += loralab::core::read_file(e.path(), "text");
  }
  while (text.size() < 2'000'000)
    for (const auto& c : golden()["cases"]) text += c["text"].get<std::string>();
  const bpe_tokenizer fresh = bpe_tokenizer::from_json(smollm2_json());  // an empty word cache
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> ids = fresh.encode(text, false);
  const double cold = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  const std::vector<int> again = fresh.encode(text, false);
  const double warm = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  BOOST_TEST(ids == again);
  BOOST_TEST(fresh.decode(ids) == text);
  std::cout << "bpe: SmolLM2 encode of " << text.size() / 1e6 << " MB (" << ids.size() << " tokens): "
            << text.size() / 1e6 / cold << " MB/s cold cache, " << text.size() / 1e6 / warm << " MB/s warm\n";
}

BOOST_AUTO_TEST_CASE(fast_merge_equals_the_plain_loop) {
  auto g = loralab::testing::rng(11);
  const auto& t = small();
  for (int i = 0; i < 300; ++i) {
    std::string s = random_utf8(g, 1 + static_cast<int>(g() % 40));
    if (i % 3 == 0) s = golden()["cases"].back()["text"].get<std::string>().substr(g() % 2000, 200);
    std::vector<int> ref;
    for (const auto w : bpe_pre_tokenize(s, bpe_pre_tokenizer::smollm)) {
      const auto ids = t.encode_word_ref(w);
      ref.insert(ref.end(), ids.begin(), ids.end());
    }
    BOOST_TEST(t.encode(s, false) == ref);
  }
}

BOOST_AUTO_TEST_CASE(round_trip_random_utf8) {
  auto g = loralab::testing::rng(12);
  std::vector<const bpe_tokenizer*> toks = {&small()};
  if (const auto* s = smollm2()) toks.push_back(s);
  for (const auto* t : toks) {
    for (int i = 0; i < 300; ++i) {
      const std::string s = random_utf8(g, static_cast<int>(g() % 60));
      std::string kept;  // without the bytes the vocab cannot spell (dropped: the vocabs have no unk_token)
      for (const char c : s)
        if (t->byte_token(static_cast<unsigned char>(c)) >= 0) kept += c;
      const auto ids = t->encode(s, false);
      std::string streamed;
      for (std::size_t k = 0; k < ids.size(); ++k) streamed += t->decode_piece(k ? ids[k - 1] : -1, ids[k]);
      BOOST_TEST(streamed == kept);
      std::string lossy;
      loralab::nn::detail::append_utf8_lossy(lossy, kept);
      BOOST_TEST(t->decode(ids) == lossy);
      if (t == &small()) BOOST_TEST(kept == s);  // trained with the whole byte alphabet
    }
  }
}

BOOST_AUTO_TEST_CASE(invalid_utf8_bytes) {
  const auto& t = small();
  auto g = loralab::testing::rng(13);
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = static_cast<int>(g() % 20); k > 0; --k) s += static_cast<char>(g() % 256);
    const auto ids = t.encode(s, false);
    std::string streamed;  // decode_piece gives raw bytes back
    for (const int id : ids) streamed += t.decode_piece(-1, id);
    BOOST_TEST(streamed == s);
  }
  // decode(): one U+FFFD per maximal invalid subsequence, as Python's errors="replace".
  const auto dec = [&](std::string_view s) { return t.decode(t.encode(s, false)); };
  BOOST_TEST(dec("a\xFF" "b") == "a\xEF\xBF\xBD" "b");
  BOOST_TEST(dec("\xE2\x82") == "\xEF\xBF\xBD");                 // truncated € : one replacement
  BOOST_TEST(dec("\xE2\x82x") == "\xEF\xBF\xBDx");
  BOOST_TEST(dec("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");     // overlong: two
  BOOST_TEST(dec("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  BOOST_TEST(dec("\xF0\x9F\x98") == "\xEF\xBF\xBD");             // truncated emoji: one
}

BOOST_AUTO_TEST_CASE(special_tokens_by_type) {
  const auto& t = small();
  const int im_start = t.token_id("<|im_start|>");
  BOOST_TEST(im_start == 1);
  BOOST_TEST(t.encode("<|im_start|>", false) == std::vector<int>{im_start});
  // The same vocab with <|im_start|> typed normal: the text is then ordinary bytes.
  bpe_vocab v = t.vocab();
  v.types[im_start] = token_type::normal;
  v.tokens[im_start] = "<|im_start|>";
  const bpe_tokenizer plain(v);
  BOOST_TEST(plain.encode("<|im_start|>", false).size() > 1);
  // user_defined is matched like control.
  v.types[im_start] = token_type::user_defined;
  BOOST_TEST(bpe_tokenizer(v).encode("a<|im_start|>b", false) == (std::vector<int>{t.token_id("a"), 1, t.token_id("b")}));
}

BOOST_AUTO_TEST_CASE(plain_data_like_gguf) {
  // GGUF's arrays: tokens, "a b" merges, token types, special ids and flags.
  const json j = json::parse(std::ifstream(small_json));
  bpe_vocab v;
  v.tokens.resize(1000);
  for (const auto& [tok, id] : j["model"]["vocab"].items()) v.tokens[id.get<int>()] = tok;
  for (std::size_t r = 0; r < j["model"]["merges"].size(); ++r) {
    const auto& m = j["model"]["merges"][r];
    v.merges.push_back(split_merge(m[0].get<std::string>() + " " + m[1].get<std::string>(), "gguf", r));
  }
  v.types.assign(1000, token_type::normal);
  for (int id : {0, 1, 2}) v.types[id] = token_type::control;
  v.pre = bpe_pre_tokenizer::smollm;
  v.bos_id = 1, v.eos_id = 2, v.add_bos = true;
  const bpe_tokenizer t(v);
  for (const auto& c : golden()["cases"]) {
    std::vector<int> want = {1};
    for (const int id : ids_of(c["small"])) want.push_back(id);
    BOOST_TEST(t.encode(c["text"].get<std::string>()) == want);
  }
  expect_error([&] { split_merge("ab", "f.gguf", 7); }, {"f.gguf", "merges[7]", "'ab'"});
  auto bad = v;
  bad.types.pop_back();
  expect_error([&] { bpe_tokenizer{bad}; }, {"<bpe_vocab>", "token_type has 999", "1000"});
  bad = v, bad.bos_id = 1000;
  expect_error([&] { bpe_tokenizer{bad}; }, {"bos_token_id 1000"});
  bad = v, bad.tokens[5] = bad.tokens[6];
  expect_error([&] { bpe_tokenizer{bad}; }, {"duplicate token", "ids 5 and 6"});
  bad = v, bad.merges[3].first = "nope";
  expect_error([&] { bpe_tokenizer{bad}; }, {"merges[3]", "'nope'", "not in the vocab"});
  bad = v, bad.unk_id = -2;
  expect_error([&] { bpe_tokenizer{bad}; }, {"unknown_token_id -2"});
  // A byte whose character is not a token is dropped, or becomes unk_id (SmolLM2 lacks 21 of them).
  auto gap = v;
  gap.merges.clear();
  gap.tokens[t.token_id("Ġ")] = "not-a-byte";
  gap.add_bos = false;
  BOOST_TEST(bpe_tokenizer(gap).encode("a b") == (std::vector<int>{t.token_id("a"), t.token_id("b")}));
  gap.unk_id = 0;
  BOOST_TEST(bpe_tokenizer(gap).encode("a b") == (std::vector<int>{t.token_id("a"), 0, t.token_id("b")}));
}

BOOST_AUTO_TEST_CASE(load_tokenizer_opens_tokenizer_json) {
  const auto t = load_tokenizer(small_json, 0);
  BOOST_TEST(t->vocab_size() == 1000);
  BOOST_TEST(t->encode("x  12", false) == small().encode("x  12", false));
  BOOST_TEST(dynamic_cast<const bpe_tokenizer*>(t.get()) != nullptr);
}

BOOST_AUTO_TEST_CASE(tokenizer_config_sets_bos_eos) {
  loralab::testing::temp_dir dir;
  fs::copy_file(small_json, dir.path / "tokenizer.json");
  write(dir.path / "tokenizer_config.json",
        R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": true})");
  const auto t = bpe_tokenizer::from_json(dir.path / "tokenizer.json");
  BOOST_TEST(t.bos_id() == 1);
  BOOST_TEST(t.eos_id() == 2);
  BOOST_TEST(t.encode("")== std::vector<int>{1});
}

BOOST_AUTO_TEST_CASE(bad_tokenizer_json_is_refused_by_name) {
  const json good = json::parse(std::ifstream(small_json));
  loralab::testing::temp_dir dir;
  const fs::path p = dir.path / "tokenizer.json";
  const auto check = [&](auto edit, const std::vector<std::string>& parts) {
    json j = good;
    edit(j);
    write(p, j.dump());
    std::vector<std::string> all = {p.string()};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_error([&] { bpe_tokenizer::from_json(p); }, all);
  };
  check([](json& j) { j.erase("model"); }, {"missing key 'model'"});
  check([](json& j) { j["model"].erase("vocab"); }, {"missing key 'model.vocab'"});
  check([](json& j) { j["model"].erase("merges"); }, {"missing key 'model.merges'"});
  check([](json& j) { j["model"]["type"] = "Unigram"; }, {"model.type", "'Unigram'"});
  check([](json& j) { j["model"]["merges"][4] = json::array({"Ġ", "qqq"}); }, {"merges[4]", "'qqq'", "not in the vocab"});
  check([](json& j) { j["model"]["merges"][4] = "Ġt"; }, {"merges[4]", "'Ġt'", "two tokens"});
  check([](json& j) { j["model"]["merges"][4] = json::array({"ÿ", "ÿ"}); }, {"merges[4]", "'ÿÿ'", "not in the vocab"});
  check([](json& j) { j["model"]["vocab"]["<|im_end|>"] = 7; }, {"model.vocab", "id 7", "<|im_end|>"});
  check([](json& j) { j["added_tokens"][1]["content"] = "<|im_end|>"; }, {"added_tokens", "id 1", "'<|im_start|>'"});
  check([](json& j) { j["added_tokens"].push_back({{"id", 1000}, {"content", "<|im_end|>"}}); },
        {"duplicate token '<|im_end|>'", "ids 2 and 1000"});
  check([](json& j) { j["model"]["unk_token"] = "<unk>"; }, {"model.unk_token", "'<unk>'", "not a token"});
  check([](json& j) { j["model"]["vocab"].erase("<|im_end|>"), j["added_tokens"].erase(2); }, {"no token has id 2"});
  check([](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, {"pre_tokenizer", "Metaspace", "not supported"});
  check([](json& j) { j["normalizer"] = {{"type", "NFC"}}; }, {"normalizer", "NFC"});
  check([](json& j) { j["model"]["byte_fallback"] = true; }, {"byte_fallback"});
  check([](json& j) { j["added_tokens"][0]["lstrip"] = true; }, {"<|endoftext|>", "lstrip"});
  write(p, "{\"model\": ");
  expect_error([&] { bpe_tokenizer::from_json(p); }, {p.string(), "not valid JSON"});
  expect_error([&] { bpe_tokenizer::from_json(dir.path / "absent.json"); }, {"absent.json", "not found"});
}

BOOST_AUTO_TEST_SUITE_END()

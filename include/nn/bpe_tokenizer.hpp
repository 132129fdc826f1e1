// SPDX-License-Identifier: MIT
#pragma once
// Byte-level BPE (GPT-2 style) behind nn::tokenizer: GPT-2, SmolLM/SmolLM2 and other `tokenizer.ggml.model ==
// "gpt2"` vocabularies, built from plain data (GGUF's arrays) or read from a Hugging Face `tokenizer.json`.
//
// encode(text):
//   1. Special tokens (types control and user_defined: HF's added_tokens) are cut out of the text first, leftmost
//      then longest, as HF's added-token matcher and llama.cpp's tokenizer_st_partition do.
//   2. Each remaining span is pre-tokenized into words. `smollm` (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM, HF's
//      Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]) first isolates every \p{N}
//      code point, then applies GPT-2's regex to each piece; `gpt2` applies the regex alone:
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      A piece's ends are string ends for the lookahead, so "x  12" is "x", "  ", "1", "2". \p{L}, \p{N} come
//      from nn/unicode_tables.hpp; \s is the White_Space property. A byte that is not well-formed UTF-8 counts
//      as a symbol (neither letter, number nor space) and is kept as the raw byte.
//   3. Each word's bytes become GPT-2's printable characters (bytes_to_unicode), one token per byte, and the
//      adjacent pair with the lowest merge rank is merged (ties: leftmost) until no pair has a rank. With
//      ignore_merges (HF model.ignore_merges), a word that is itself a token is that token. A byte whose
//      character is not a token (SmolLM2 lacks 21, e.g. 0x04, 0xF1, 0xFF) is unk_id, or dropped when there is
//      none, as HF's BPE without unk_token and llama.cpp do.
//   [bos_id() first / eos_id() last when asked; encode(text) alone uses the file's add_bos / add_eos flags.]
// decode(ids): the tokens' bytes (special tokens as their text, like HF with skip_special_tokens=False), read as
//   UTF-8 with each maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy, Python's
//   errors="replace"). decode_piece(prev, id): the raw bytes of `id`, for streaming (no replacement).
//
// Not supported (the reader says so, naming the key): normalizers, Split/Metaspace pre-tokenizers (Llama 3,
// Qwen 2: their regexes differ), add_prefix_space, byte_fallback, subword prefixes/suffixes, dropout, and added
// tokens with single_word/lstrip/rstrip.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/read_file.hpp"
#include "io/json.hpp"
#include "nn/tokenizer.hpp"
#include "nn/unicode_tables.hpp"

namespace loralab::nn {

/// llama.cpp's token types, as GGUF's tokenizer.ggml.token_type stores them.
enum class token_type : int { undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

inline std::ostream& operator<<(std::ostream& os, token_type t) { return os << "token_type(" << int(t) << ")"; }

/// How text is cut into words before BPE (GGUF tokenizer.ggml.pre).
enum class bpe_pre_tokenizer { gpt2, smollm };

inline std::ostream& operator<<(std::ostream& os, bpe_pre_tokenizer p) {
  return os << (p == bpe_pre_tokenizer::gpt2 ? "gpt2" : "smollm");
}

/// Everything a byte-level BPE tokenizer is made of, as plain data (GGUF arrays, or tokenizer.json's content).
struct bpe_vocab {
  std::vector<std::string> tokens;                          ///< by id, GPT-2 byte-level spelling ("Ġthe")
  std::vector<std::pair<std::string, std::string>> merges;  ///< by rank, best first
  std::vector<token_type> types;                            ///< by id; empty: all normal
  int bos_id = -1, eos_id = -1;                             ///< -1: none
  int unk_id = -1;  ///< stands for a byte whose character is not a token; -1: such bytes are dropped (HF, llama.cpp)
  bool add_bos = false, add_eos = false;                    ///< what encode(text) adds
  bpe_pre_tokenizer pre = bpe_pre_tokenizer::gpt2;
  bool ignore_merges = false;  ///< HF model.ignore_merges: a word that is a token is taken whole
  std::string source = "<bpe_vocab>";  ///< the file it came from, for messages
};

/// Splits a GGUF / tokenizer.json merge string "a b" into its two tokens; throws naming `source` and `index`.
inline std::pair<std::string, std::string> split_merge(std::string_view merge, std::string_view source,
                                                       std::size_t index) {
  const auto sp = merge.find(' ');
  LORALAB_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < merge.size() &&
                    merge.find(' ', sp + 1) == std::string_view::npos,
                source, ": merges[", index, "] = '", merge, "' is not two tokens separated by one space");
  return {std::string(merge.substr(0, sp)), std::string(merge.substr(sp + 1))};
}

namespace detail {

/// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 become U+0100.. in byte order.
inline const std::array<char32_t, 256>& byte_to_code_point() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? char32_t(b) : next++;
    }
    return t;
  }();
  return table;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
  }
}

/// The code point starting `s` and its length (utf8_char_length's rule), or {-1, 1} for an invalid byte.
inline std::pair<long, std::size_t> next_code_point(std::string_view s) {
  const std::size_t n = utf8_char_length(s);
  if (n == 0) return {-1, 1};
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  if (n == 1) return {b(0), 1};
  if (n == 2) return {((b(0) & 0x1F) << 6) | (b(1) & 0x3F), 2};
  if (n == 3) return {((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F), 3};
  return {((b(0) & 0x07L) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F), 4};
}

/// Appends `bytes` as UTF-8, each maximal invalid subsequence (Unicode 3.9, "U+FFFD substitution of maximal
/// subparts": Python's errors="replace", Rust's from_utf8_lossy) replaced by one U+FFFD.
inline void append_utf8_lossy(std::string& out, std::string_view bytes) {
  while (!bytes.empty()) {
    if (const std::size_t n = utf8_char_length(bytes); n > 0) {
      out += bytes.substr(0, n);
      bytes.remove_prefix(n);
      continue;
    }
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
    const unsigned c0 = b(0);
    const std::size_t want = c0 >= 0xC2 && c0 <= 0xDF ? 2 : c0 >= 0xE0 && c0 <= 0xEF ? 3 : c0 >= 0xF0 && c0 <= 0xF4 ? 4 : 1;
    const unsigned lo = c0 == 0xE0 ? 0xA0 : c0 == 0xF0 ? 0x90 : 0x80;  // the second byte's range
    const unsigned hi = c0 == 0xED ? 0x9F : c0 == 0xF4 ? 0x8F : 0xBF;
    std::size_t taken = 1;
    while (taken < want && taken < bytes.size() &&
           b(taken) >= (taken == 1 ? lo : 0x80) && b(taken) <= (taken == 1 ? hi : 0xBF))
      ++taken;
    out += utf8_replacement;
    bytes.remove_prefix(taken);
  }
}

enum char_class : std::uint8_t { cc_other = 0, cc_letter = 1, cc_number = 2, cc_space = 3 };

inline bool in_ranges(std::span<const unicode::code_range> ranges, char32_t cp) {
  const auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                   [](char32_t c, const unicode::code_range& r) { return c < r.lo; });
  return it != ranges.begin() && cp <= std::prev(it)->hi;
}

/// \p{L}, \p{N}, \s (the White_Space property) or neither; an invalid byte (-1) is neither.
inline char_class classify(long cp) {
  if (cp < 0) return cc_other;
  const auto c = static_cast<char32_t>(cp);
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return cc_letter;
    if (c >= '0' && c <= '9') return cc_number;
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 ? cc_space : cc_other;
  }
  if (c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
      c == 0x202F || c == 0x205F || c == 0x3000)
    return cc_space;
  if (in_ranges(unicode::letter_ranges, c)) return cc_letter;
  if (in_ranges(unicode::number_ranges, c)) return cc_number;
  return cc_other;
}

}  // namespace detail

/// Cuts `text` into the words BPE sees (the header comment's step 2); the views point into `text`.
inline std::vector<std::string_view> bpe_pre_tokenize(std::string_view text, bpe_pre_tokenizer pre) {
  struct cp_info {
    std::size_t offset;
    long cp;
    detail::char_class cls;
  };
  std::vector<cp_info> cps;
  cps.reserve(text.size() + 1);
  for (std::size_t off = 0; off < text.size();) {
    const auto [cp, len] = detail::next_code_point(text.substr(off));
    cps.push_back({off, cp, detail::classify(cp)});
    off += len;
  }
  cps.push_back({text.size(), 0, detail::cc_other});  // sentinel: the end offset
  std::vector<std::string_view> words;
  const auto emit = [&](std::size_t a, std::size_t b) {
    words.push_back(text.substr(cps[a].offset, cps[b].offset - cps[a].offset));
  };
  // GPT-2's regex over code points [s, e): e is a string end for the lookahead.
  const auto gpt2 = [&](std::size_t s, std::size_t e) {
    using detail::cc_letter, detail::cc_number, detail::cc_other, detail::cc_space;
    const auto cls = [&](std::size_t i) { return cps[i].cls; };
    const auto run = [&](std::size_t i, auto pred) {
      while (i < e && pred(cls(i))) ++i;
      return i;
    };
    for (std::size_t p = s; p < e;) {
      const long c = cps[p].cp;
      if (c == '\'' && p + 1 < e) {
        const long c1 = cps[p + 1].cp, c2 = p + 2 < e ? cps[p + 2].cp : 0;
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { emit(p, p + 2), p += 2; continue; }
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
          emit(p, p + 3), p += 3;
          continue;
        }
      }
      const std::size_t q = c == ' ' && p + 1 < e ? p + 1 : p;  // after the optional leading space
      const auto k = cls(q);
      if (q < e && k != cc_space) {  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
        const std::size_t end = run(q, [&](auto x) { return k == cc_other ? x == cc_other : x == k; });
        emit(p, end), p = end;
        continue;
      }
      const std::size_t end = run(p, [](auto x) { return x == cc_space; });  // '\s+(?!\S)|\s+'
      const std::size_t take = end == e || end - p == 1 ? end : end - 1;
      emit(p, take), p = take;
    }
  };
  const std::size_t n = cps.size() - 1;
  if (pre == bpe_pre_tokenizer::gpt2) {
    gpt2(0, n);
  } else {  // smollm: every \p{N} alone, the regex between them
    std::size_t start = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (cps[i].cls != detail::cc_number) continue;
      gpt2(start, i);
      emit(i, i + 1);
      start = i + 1;
    }
    gpt2(start, n);
  }
  return words;
}

/// A byte-level BPE tokenizer (see the header comment). Thread-safe: the word cache is behind a mutex.
class bpe_tokenizer final : public tokenizer {
 public:
  /// Validates `v` and builds the lookup tables. Throws loralab::error naming v.source, the key and the value
  /// when: there are no tokens, a token is empty or appears twice, types has another length than tokens, a
  /// bos/eos/unk id is out of range, or a merge names a token (or makes a pair) that is not in the vocab.
  explicit bpe_tokenizer(bpe_vocab v) : v_(std::move(v)), cache_(std::make_unique<word_cache>()) {
    const std::string& src = v_.source;
    const int n = static_cast<int>(v_.tokens.size());
    LORALAB_CHECK(n > 0, src, ": tokens is empty");
    if (v_.types.empty()) v_.types.assign(v_.tokens.size(), token_type::normal);
    LORALAB_CHECK(v_.types.size() == v_.tokens.size(), src, ": token_type has ", v_.types.size(),
                  " entries but tokens has ", n);
    LORALAB_CHECK(v_.bos_id >= -1 && v_.bos_id < n, src, ": bos_token_id ", v_.bos_id, " is not in [0, ", n, ")");
    LORALAB_CHECK(v_.eos_id >= -1 && v_.eos_id < n, src, ": eos_token_id ", v_.eos_id, " is not in [0, ", n, ")");
    LORALAB_CHECK(v_.unk_id >= -1 && v_.unk_id < n, src, ": unknown_token_id ", v_.unk_id, " is not in [0, ", n, ")");
    LORALAB_CHECK(!v_.add_bos || v_.bos_id >= 0, src, ": add_bos_token is set but there is no bos_token_id");
    LORALAB_CHECK(!v_.add_eos || v_.eos_id >= 0, src, ": add_eos_token is set but there is no eos_token_id");
    ids_.reserve(v_.tokens.size());
    bytes_.resize(v_.tokens.size());
    std::unordered_map<char32_t, int> cp_byte;
    for (int b = 0; b < 256; ++b) cp_byte[detail::byte_to_code_point()[b]] = b;
    for (int id = 0; id < n; ++id) {
      const std::string& t = v_.tokens[id];
      LORALAB_CHECK(!t.empty(), src, ": tokens[", id, "] is empty");
      const auto [it, fresh] = ids_.try_emplace(t, id);
      LORALAB_CHECK(fresh, src, ": duplicate token '", t, "' at ids ", it->second, " and ", id);
      if (is_special(id)) {
        bytes_[id] = t;
        specials_[static_cast<unsigned char>(t[0])].push_back(id);
        continue;
      }
      for (std::string_view s = t; !s.empty();) {  // byte-level characters back to bytes
        const auto [cp, len] = detail::next_code_point(s);
        const auto hit = cp < 0 ? cp_byte.end() : cp_byte.find(static_cast<char32_t>(cp));
        if (hit != cp_byte.end()) bytes_[id] += char(hit->second); else bytes_[id] += s.substr(0, len);
        s.remove_prefix(len);
      }
    }
    for (auto& bucket : specials_)  // longest first: the leftmost match is also the longest
      std::stable_sort(bucket.begin(), bucket.end(),
                       [&](int a, int b) { return v_.tokens[a].size() > v_.tokens[b].size(); });
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      detail::append_utf8(ch, detail::byte_to_code_point()[b]);
      byte_ids_[b] = token_id(ch) >= 0 ? token_id(ch) : v_.unk_id;
    }
    ranks_.reserve(v_.merges.size());
    for (std::size_t r = 0; r < v_.merges.size(); ++r) {
      const auto& [a, b] = v_.merges[r];
      const int ia = token_id(a), ib = token_id(b), im = token_id(a + b);
      LORALAB_CHECK(ia >= 0 && ib >= 0, src, ": merges[", r, "] = '", a, " ", b, "' names token '",
                    ia < 0 ? a : b, "', which is not in the vocab");
      LORALAB_CHECK(im >= 0, src, ": merges[", r, "] = '", a, " ", b, "' makes '", a + b,
                    "', which is not in the vocab");
      ranks_.try_emplace(pair_key(ia, ib), merge_rule{static_cast<int>(r), im});  // a repeated merge keeps its best rank
    }
  }

  /// Reads a Hugging Face tokenizer.json (model.type "BPE"), and the tokenizer_config.json beside it when there
  /// is one (bos_token, eos_token, add_bos_token, add_eos_token). Without it, BOS and EOS are "<|endoftext|>"
  /// when that token exists (GPT-2's convention), and add_bos/add_eos follow a TemplateProcessing post-processor.
  static bpe_tokenizer from_json(const std::filesystem::path& path);

  std::vector<int> encode(std::string_view text, bool add_bos, bool add_eos = false) const override {
    std::vector<int> out;
    if (add_bos) {
      LORALAB_CHECK(bos_id() >= 0, v_.source, ": BOS requested but the vocab has no bos_token_id");
      out.push_back(bos_id());
    }
    std::size_t plain = 0;  // start of the text not yet encoded
    for (std::size_t i = 0; i < text.size(); ++i) {
      for (const int id : specials_[static_cast<unsigned char>(text[i])]) {
        if (text.substr(i, v_.tokens[id].size()) != v_.tokens[id]) continue;
        encode_words(text.substr(plain, i - plain), out);
        out.push_back(id);
        plain = i + v_.tokens[id].size();
        i = plain - 1;
        break;
      }
    }
    encode_words(text.substr(plain), out);
    if (add_eos) {
      LORALAB_CHECK(eos_id() >= 0, v_.source, ": EOS requested but the vocab has no eos_token_id");
      out.push_back(eos_id());
    }
    return out;
  }
  /// encode() with the file's add_bos / add_eos flags.
  std::vector<int> encode(std::string_view text) const { return encode(text, v_.add_bos, v_.add_eos); }

  /// One word's tokens by the plain rule (find the best-ranked pair, merge its leftmost occurrence, repeat):
  /// the slow reference the tests check the fast merge against.
  std::vector<int> encode_word_ref(std::string_view word) const {
    std::vector<int> ids;
    for (const char c : word)
      if (const int id = byte_token(static_cast<unsigned char>(c)); id >= 0) ids.push_back(id);
    while (true) {
      int best = -1, best_rank = 0, best_id = 0;
      for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
        const auto it = ranks_.find(pair_key(ids[i], ids[i + 1]));
        if (it != ranks_.end() && (best < 0 || it->second.rank < best_rank))
          best = static_cast<int>(i), best_rank = it->second.rank, best_id = it->second.id;
      }
      if (best < 0) return ids;
      ids[best] = best_id;
      ids.erase(ids.begin() + best + 1);
    }
  }

  std::string decode(std::span<const int> ids) const override {
    std::string bytes, text;
    for (const int id : ids) bytes += bytes_[checked(id)];
    detail::append_utf8_lossy(text, bytes);
    return text;
  }
  std::string decode_piece(int /*prev_id*/, int id) const override { return bytes_[checked(id)]; }

  int vocab_size() const override { return static_cast<int>(v_.tokens.size()); }
  int bos_id() const override { return v_.bos_id; }
  int eos_id() const override { return v_.eos_id; }
  std::string piece(int id) const override { return v_.tokens[checked(id)]; }
  token_type type(int id) const { return v_.types[checked(id)]; }
  /// The id of the token spelled `piece` (byte-level spelling), or -1.
  int token_id(std::string_view piece) const {
    const auto it = ids_.find(piece);
    return it == ids_.end() ? -1 : it->second;
  }
  /// The token of one byte before merging: its byte-level character, else unk_id, else -1 (the byte is dropped).
  int byte_token(unsigned char b) const { return byte_ids_[b]; }
  const bpe_vocab& vocab() const { return v_; }

 private:
  struct merge_rule {
    int rank, id;
  };
  struct word_cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int>, detail::string_hash, std::equal_to<>> words;
  };
  static constexpr std::size_t max_cached_words = 1 << 18;  // then the cache starts over

  static std::uint64_t pair_key(int a, int b) { return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b); }
  bool is_special(int id) const { return v_.types[id] == token_type::control || v_.types[id] == token_type::user_defined; }

  std::size_t checked(int id) const {
    LORALAB_CHECK(id >= 0 && id < vocab_size(), v_.source, ": token id ", id, " is out of range [0, ", vocab_size(),
                  ")");
    return static_cast<std::size_t>(id);
  }

  void encode_words(std::string_view text, std::vector<int>& out) const {
    if (text.empty()) return;
    for (const std::string_view w : bpe_pre_tokenize(text, v_.pre)) {
      {
        std::lock_guard lock(cache_->mutex);
        if (const auto it = cache_->words.find(w); it != cache_->words.end()) {
          out.insert(out.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      std::vector<int> ids = encode_word(w);
      out.insert(out.end(), ids.begin(), ids.end());
      std::lock_guard lock(cache_->mutex);
      if (cache_->words.size() >= max_cached_words) cache_->words.clear();
      cache_->words.emplace(std::string(w), std::move(ids));
    }
  }

  /// encode_word_ref's merges in O(n log n): symbols in a linked list, candidate pairs in a min-heap keyed by
  /// (rank, left position); a candidate is stale once either side has changed since it was pushed.
  std::vector<int> encode_word(std::string_view word) const {
    if (v_.ignore_merges) {
      std::string spelled;
      for (const char c : word) detail::append_utf8(spelled, detail::byte_to_code_point()[static_cast<unsigned char>(c)]);
      if (const int id = token_id(spelled); id >= 0) return {id};
    }
    std::vector<int> id;
    id.reserve(word.size());
    for (const char c : word)
      if (const int t = byte_ids_[static_cast<unsigned char>(c)]; t >= 0) id.push_back(t);
    const int n = static_cast<int>(id.size());
    std::vector<int> prev(n), next(n);
    for (int i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
    struct candidate {
      int rank, left, right, left_id, right_id, merged;
      bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<candidate, std::vector<candidate>, std::greater<>> heap;
    const auto consider = [&](int left) {
      if (left < 0 || next[left] < 0) return;
      const int right = next[left];
      if (const auto it = ranks_.find(pair_key(id[left], id[right])); it != ranks_.end())
        heap.push({it->second.rank, left, right, id[left], id[right], it->second.id});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const candidate c = heap.top();
      heap.pop();
      if (next[c.left] != c.right || id[c.left] != c.left_id || id[c.right] != c.right_id) continue;  // stale
      id[c.left] = c.merged;
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      id[c.right] = -1;
      consider(prev[c.left]);
      consider(c.left);
    }
    std::vector<int> out;
    for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(id[i]);
    return out;
  }

  bpe_vocab v_;
  std::unordered_map<std::string, int, detail::string_hash, std::equal_to<>> ids_;  // token -> id
  std::vector<std::string> bytes_;                    // by id: what the token decodes to
  std::array<int, 256> byte_ids_{};                   // byte -> the id of its byte-level character, unk_id or -1
  std::array<std::vector<int>, 256> specials_;        // first byte -> special token ids, longest first
  std::unordered_map<std::uint64_t, merge_rule> ranks_;  // (left id, right id) -> rank and merged id
  std::unique_ptr<word_cache> cache_;                 // behind a pointer: keeps the tokenizer movable
};

// ---- tokenizer.json -------------------------------------------------------------------------------------------

namespace detail {

/// j[key] for a required key; throws naming the file and the dotted key.
inline const nlohmann::json& json_at(const nlohmann::json& j, std::string_view key, const std::string& file,
                                     std::string_view where) {
  LORALAB_CHECK(j.is_object() && j.contains(key), file, ": missing key '", where, "'");
  return j.find(key).value();
}

/// A tokenizer_config.json token entry: a string or {"content": …}; empty when absent or null.
inline std::string config_token(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key) || cfg[key].is_null()) return {};
  const auto& t = cfg[key];
  return t.is_string() ? t.get<std::string>() : t.value("content", std::string());
}

}  // namespace detail

inline bpe_tokenizer bpe_tokenizer::from_json(const std::filesystem::path& path) {
  using nlohmann::json;
  const std::string file = path.string();
  json j;
  try {
    j = io::parse_json(core::read_file(path, "tokenizer.json"), file);
    bpe_vocab v;
    v.source = file;
    const json& model = detail::json_at(j, "model", file, "model");
    const std::string type = model.value("type", std::string("BPE"));
    LORALAB_CHECK(type == "BPE", file, ": model.type is '", type, "'; only BPE is supported here");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
      LORALAB_CHECK(!model.contains(key) || model[key].is_null() || model[key] == "", file, ": model.", key, " = ",
                    model[key].dump(), " is not supported");
    LORALAB_CHECK(!model.value("byte_fallback", false), file,
                  ": model.byte_fallback = true (a SentencePiece-style BPE) is not supported");
    v.ignore_merges = model.value("ignore_merges", false);
    const bool has_unk = model.contains("unk_token") && !model["unk_token"].is_null();
    LORALAB_CHECK(!has_unk || !model.value("fuse_unk", false), file, ": model.fuse_unk = true is not supported");
    LORALAB_CHECK(!j.contains("normalizer") || j["normalizer"].is_null(), file, ": normalizer ",
                  j["normalizer"].dump(), " is not supported (only null)");

    // pre_tokenizer: ByteLevel (gpt2) or Sequence[Digits(individual_digits), ByteLevel] (smollm).
    const json& pre = detail::json_at(j, "pre_tokenizer", file, "pre_tokenizer");
    const auto byte_level = [&](const json& p) {
      return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) &&
             !p.value("add_prefix_space", false);
    };
    if (byte_level(pre)) {
      v.pre = bpe_pre_tokenizer::gpt2;
    } else if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
               pre["pretokenizers"].size() == 2 && pre["pretokenizers"][0].value("type", "") == "Digits" &&
               pre["pretokenizers"][0].value("individual_digits", false) && byte_level(pre["pretokenizers"][1])) {
      v.pre = bpe_pre_tokenizer::smollm;
    } else {
      fail(file, ": pre_tokenizer ", pre.dump().substr(0, 300),
           " is not supported (ByteLevel(add_prefix_space=false, use_regex=true), or Sequence[Digits("
           "individual_digits=true), that ByteLevel])");
    }

    // vocab and added_tokens -> tokens by id
    const json& vocab = detail::json_at(model, "vocab", file, "model.vocab");
    LORALAB_CHECK(vocab.is_object() && !vocab.empty(), file, ": model.vocab is not a non-empty object");
    std::vector<bool> seen;
    const auto put = [&](int id, const std::string& tok, const char* key) {
      LORALAB_CHECK(id >= 0 && id < (1 << 24), file, ": ", key, " gives '", tok, "' the id ", id);
      if (static_cast<std::size_t>(id) >= v.tokens.size()) v.tokens.resize(id + 1), seen.resize(id + 1);
      if (seen[id]) {
        LORALAB_CHECK(v.tokens[id] == tok, file, ": ", key, " gives id ", id, " to '", tok, "' but it is already '",
                      v.tokens[id], "'");
        return;
      }
      v.tokens[id] = tok, seen[id] = true;
    };
    for (const auto& [tok, id] : vocab.items()) put(io::json_integer<int>(id, file, "model.vocab." + tok), tok, "model.vocab");
    std::vector<std::pair<int, token_type>> added;
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      for (const json& a : j["added_tokens"]) {
        const std::string content = detail::json_at(a, "content", file, "added_tokens[].content").get<std::string>();
        const int id = io::json_integer<int>(detail::json_at(a, "id", file, "added_tokens[].id"), file, "added_tokens[].id");
        for (const char* flag : {"single_word", "lstrip", "rstrip"})
          LORALAB_CHECK(!a.value(flag, false), file, ": added token '", content, "' has ", flag,
                        " = true, which is not supported");
        put(id, content, "added_tokens");
        added.emplace_back(id, a.value("special", false) ? token_type::control : token_type::user_defined);
      }
    }
    for (std::size_t id = 0; id < v.tokens.size(); ++id)
      LORALAB_CHECK(seen[id], file, ": no token has id ", id, " (ids must be 0 .. ", v.tokens.size() - 1, ")");
    const auto id_of = [&](const std::string& tok, const char* key) {
      const auto it = std::find(v.tokens.begin(), v.tokens.end(), tok);
      LORALAB_CHECK(it != v.tokens.end(), file, ": ", key, " '", tok, "' is not a token");
      return static_cast<int>(it - v.tokens.begin());
    };
    v.types.assign(v.tokens.size(), token_type::normal);
    for (const auto& [id, t] : added) v.types[id] = t;
    if (has_unk) v.unk_id = id_of(model["unk_token"].get<std::string>(), "model.unk_token");

    const json& merges = detail::json_at(model, "merges", file, "model.merges");
    LORALAB_CHECK(merges.is_array(), file, ": model.merges is not an array");
    v.merges.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const json& m = merges[r];
      if (m.is_string()) {
        v.merges.push_back(split_merge(m.get<std::string>(), file, r));
      } else {
        LORALAB_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), file, ": model.merges[",
                      r, "] = ", m.dump(), " is neither \"a b\" nor [\"a\", \"b\"]");
        v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }

    // BOS / EOS and whether to add them
    if (const auto eot = std::find(v.tokens.begin(), v.tokens.end(), "<|endoftext|>"); eot != v.tokens.end())
      v.bos_id = v.eos_id = static_cast<int>(eot - v.tokens.begin());
    if (j.contains("post_processor") && j["post_processor"].is_object() &&
        j["post_processor"].value("type", "") == "TemplateProcessing") {
      const json& single = detail::json_at(j["post_processor"], "single", file, "post_processor.single");
      if (single.is_array() && !single.empty()) {
        if (single.front().contains("SpecialToken"))
          v.bos_id = id_of(single.front()["SpecialToken"].value("id", ""), "post_processor"), v.add_bos = true;
        if (single.size() > 1 && single.back().contains("SpecialToken"))
          v.eos_id = id_of(single.back()["SpecialToken"].value("id", ""), "post_processor"), v.add_eos = true;
      }
    }
    const auto config_path = path.parent_path() / "tokenizer_config.json";
    if (std::error_code ec; std::filesystem::is_regular_file(config_path, ec)) {
      const json cfg = io::parse_json(core::read_file(config_path, "tokenizer_config.json"), config_path.string());
      if (const std::string b = detail::config_token(cfg, "bos_token"); !b.empty()) v.bos_id = id_of(b, "bos_token");
      if (const std::string e = detail::config_token(cfg, "eos_token"); !e.empty()) v.eos_id = id_of(e, "eos_token");
      if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) v.add_bos = cfg["add_bos_token"].get<bool>();
      if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) v.add_eos = cfg["add_eos_token"].get<bool>();
    }
    return bpe_tokenizer(std::move(v));
  } catch (const json::exception& e) {
    fail(file, ": malformed tokenizer.json: ", e.what());
  }
}

inline std::unique_ptr<tokenizer> load_bpe_tokenizer_json(const std::filesystem::path& path) {
  return std::make_unique<bpe_tokenizer>(bpe_tokenizer::from_json(path));
}

}  // namespace loralab::nn

// The GGUF tokenizer (load_gguf_tokenizer, declared in nn/tokenizer.hpp) builds on everything above.
#include "nn/gguf_tokenizer.hpp"  // IWYU pragma: export

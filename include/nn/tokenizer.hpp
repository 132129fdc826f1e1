// SPDX-License-Identifier: MIT
#pragma once
// Tokenizers behind one interface: SentencePiece `.model` files and llama2.c `tokenizer.bin` files here, byte-level
// BPE (HF tokenizer.json, GGUF "gpt2" vocabularies) in nn/bpe_tokenizer.hpp.
//
// llama2c_tokenizer reproduces llama2.c run.c (karpathy/llama2.c @ 350e04fe) token for token:
//   encode: [BOS=1 if asked] + [the piece " " if the text is non-empty: SentencePiece's dummy prefix] + one token
//           per UTF-8 codepoint (a codepoint missing from the vocab becomes its bytes, id = byte + 3), then the
//           adjacent pair whose concatenated piece has the highest score is merged until none is in the vocab
//           (ties: leftmost pair; the BOS token takes part in the pair search, as in run.c), then [EOS=2 if asked].
//           Unlike SentencePiece, runs of whitespace are kept (no remove_extra_whitespaces).
//   decode_piece(prev, id): the piece, without its leading space when prev is BOS; a piece "<0xHH>" is the raw
//           byte. run.c's safe_printf (which then skips a lone non-printable byte) is a printing concern and is
//           not applied here.
// sentencepiece_tokenizer wraps sentencepiece::SentencePieceProcessor; its decode_piece follows the same run.c
// rule on the pieces llama2.c's tokenizer.py would export (U+2581 -> ' ', BOS -> "\n<s>\n", EOS -> "\n</s>\n"),
// so both classes stream identical text for the same ids.
//
// decode(ids) is whole-sequence detokenization like SentencePiece's DecodeIds: BOS/EOS print nothing, runs of byte
// tokens are joined and read as UTF-8 (each invalid byte becomes U+FFFD), and the leading space of the first
// piece is dropped (the dummy prefix).
//
// Where llama2c_tokenizer departs from run.c, on inputs run.c mishandles:
//   * text is a string_view, so a NUL byte is an ordinary codepoint (byte fallback id 3); run.c stops at it;
//   * duplicate pieces in a file resolve to the lowest id (run.c's bsearch picks an unspecified one);
//   * a vocab without the piece " " gets the byte token for 0x20 as dummy prefix (run.c would emit id -1);
//   * the reader rejects files run.c would read past or misread: see llama2c_tokenizer's constructor.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sentencepiece_processor.h>

#include "core/check.hpp"
#include "core/read_file.hpp"

namespace loralab::nn {

/// A text <-> token-id mapping. Ids are int32 in [0, vocab_size()).
class tokenizer {
 public:
  virtual ~tokenizer() = default;
  /// Token ids of `text`, with bos_id() prepended / eos_id() appended when asked.
  virtual std::vector<int> encode(std::string_view text, bool add_bos, bool add_eos = false) const = 0;
  /// The text of a whole sequence, like SentencePiece's DecodeIds (see the header comment).
  virtual std::string decode(std::span<const int> ids) const = 0;
  /// Streaming: the bytes run.c prints for `id` when it follows `prev_id`.
  virtual std::string decode_piece(int prev_id, int id) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  /// The raw piece string of `id` (SentencePiece spelling for .model, exported spelling for .bin), for messages.
  virtual std::string piece(int id) const = 0;
};

namespace detail {

inline constexpr std::string_view sp_space_symbol = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace mark
inline constexpr std::string_view utf8_replacement = "\xEF\xBF\xBD";  // U+FFFD

/// The byte a piece spelled exactly "<0xHH>" (two hex digits, either case) stands for, or -1.
inline int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/// Length of the well-formed UTF-8 character (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) that starts
/// `s`, or 0 when it is not one. The same rule as SentencePiece's IsValidDecodeUTF8.
inline std::size_t utf8_char_length(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto trail = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  if (s.empty()) return 0;
  const unsigned c0 = b(0);
  if (c0 < 0x80) return 1;
  if ((c0 & 0xE0) == 0xC0) {
    if (!trail(1)) return 0;
    const unsigned cp = ((c0 & 0x1F) << 6) | (b(1) & 0x3F);
    return cp >= 0x80 ? 2 : 0;
  }
  if ((c0 & 0xF0) == 0xE0) {
    if (!trail(1) || !trail(2)) return 0;
    const unsigned cp = ((c0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
  }
  if ((c0 & 0xF8) == 0xF0) {
    if (!trail(1) || !trail(2) || !trail(3)) return 0;
    const unsigned cp = ((c0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
  }
  return 0;
}

/// Appends raw `bytes` (from byte tokens) to `out`, each byte that does not start a well-formed character
/// replaced by U+FFFD, as SentencePiece's decoder does.
inline void append_bytes_as_utf8(std::string& out, std::string_view bytes) {
  while (!bytes.empty()) {
    const std::size_t n = utf8_char_length(bytes);
    if (n == 0) {
      out += utf8_replacement;
      bytes.remove_prefix(1);
    } else {
      out += bytes.substr(0, n);
      bytes.remove_prefix(n);
    }
  }
}

/// Hash for unordered_map<std::string, …> lookups by string_view without a temporary string.
struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace detail

// ---- llama2.c tokenizer.bin -------------------------------------------------------------------------------------

/// A llama2.c `tokenizer.bin`: int32 max_token_length, then per id in order: f32 score, int32 byte length, the
/// bytes (no terminator). The file does not store its vocab size; llama2.c takes it from the model header.
/// Ids follow the llama2.c export: 0 <unk>, 1 BOS ("\n<s>\n"), 2 EOS ("\n</s>\n"), byte pieces "<0xHH>".
class llama2c_tokenizer final : public tokenizer {
 public:
  /// Reads `vocab_size` pieces from `bin_file`. Throws loralab::error naming the file (and the token index) when
  /// vocab_size <= 0, the file is shorter than its header, max_token_length is not in [1, file size], a length
  /// is negative or longer than max_token_length, the file ends inside a token, a score is NaN, or bytes are
  /// left over after vocab_size tokens (the tokenizer is bigger than the model says; run.c would silently read a
  /// prefix of it).
  llama2c_tokenizer(const std::filesystem::path& bin_file, int vocab_size) : file_(bin_file.string()) {
    LORALAB_CHECK(vocab_size > 0, file_, ": vocab_size must be > 0 to read a llama2.c tokenizer, got ", vocab_size);
    const std::string bytes = core::read_file(bin_file, "llama2.c tokenizer");
    std::size_t pos = 0;
    const auto read_i32 = [&](std::int32_t& v) {
      if (bytes.size() - pos < 4) return false;
      std::memcpy(&v, bytes.data() + pos, 4);
      pos += 4;
      return true;
    };
    LORALAB_CHECK(read_i32(max_token_length_), file_, ": file is ", bytes.size(),
                  " bytes, shorter than the 4-byte max_token_length header");
    LORALAB_CHECK(max_token_length_ > 0 && static_cast<std::size_t>(max_token_length_) <= bytes.size(), file_,
                  ": max_token_length ", max_token_length_, " is not in [1, file size ", bytes.size(), "]");
    // Every token takes at least 8 bytes, so the reservation is bounded by the file, not by vocab_size.
    const auto n_reserve = std::min<std::size_t>(static_cast<std::size_t>(vocab_size), bytes.size() / 8);
    pieces_.reserve(n_reserve);
    scores_.reserve(n_reserve);
    for (int id = 0; id < vocab_size; ++id) {
      float score = 0;
      std::int32_t len = 0;
      LORALAB_CHECK(bytes.size() - pos >= 4, file_, ": file ends in the score of token ", id, " of ", vocab_size,
                    " (at byte ", pos, "); is the model's vocab_size ", vocab_size, " right for this tokenizer?");
      std::memcpy(&score, bytes.data() + pos, 4);
      pos += 4;
      LORALAB_CHECK(read_i32(len), file_, ": file ends in the length of token ", id, " of ", vocab_size,
                    " (at byte ", pos, ")");
      LORALAB_CHECK(!std::isnan(score), file_, ": token ", id, " has a NaN score");
      LORALAB_CHECK(len >= 0 && len <= max_token_length_, file_, ": token ", id, " has length ", len,
                    ", not in [0, max_token_length ", max_token_length_, "]");
      LORALAB_CHECK(bytes.size() - pos >= static_cast<std::size_t>(len), file_, ": file ends inside token ", id,
                    " (", len, " bytes at byte ", pos, ", ", bytes.size() - pos, " left)");
      pieces_.emplace_back(bytes.data() + pos, static_cast<std::size_t>(len));
      scores_.push_back(score);
      pos += static_cast<std::size_t>(len);
    }
    LORALAB_CHECK(pos == bytes.size(), file_, ": ", bytes.size() - pos, " bytes left after ", vocab_size,
                  " tokens; the tokenizer has more tokens than the model's vocab_size ", vocab_size);
    for (int id = 0; id < vocab_size; ++id) ids_.try_emplace(pieces_[id], id);
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool add_eos = false) const override {
    std::vector<int> tokens = initial_tokens(text, add_bos);
    merge_pairs(tokens);
    if (add_eos) tokens.push_back(eos_id());
    return tokens;
  }

  /// run.c's encode as written: an O(n²) scan for the best pair after every merge. encode() does the same merges
  /// with a priority queue; the tests check the two agree.
  std::vector<int> encode_ref(std::string_view text, bool add_bos, bool add_eos = false) const {
    std::vector<int> tokens = initial_tokens(text, add_bos);
    std::string merged;
    while (true) {
      float best_score = no_merge_score;
      int best_id = -1;
      std::size_t best_idx = 0;
      for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
        merged = pieces_[tokens[i]];
        merged += pieces_[tokens[i + 1]];
        const int id = lookup(merged);
        if (id != -1 && scores_[id] > best_score) {
          best_score = scores_[id];
          best_id = id;
          best_idx = i;
        }
      }
      if (best_id == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
    }
    if (add_eos) tokens.push_back(eos_id());
    return tokens;
  }

  std::string decode(std::span<const int> ids) const override {
    std::string text, bytes;
    bool strip_space = true;  // the first piece that prints loses its leading space (the dummy prefix)
    for (const int id : ids) {
      const std::string& p = pieces_[checked(id)];
      if (const int b = detail::byte_piece_value(p); b >= 0) {
        bytes += static_cast<char>(b);
        continue;
      }
      detail::append_bytes_as_utf8(text, bytes);
      bytes.clear();
      if (!text.empty()) strip_space = false;
      if (id == bos_id() || id == eos_id()) continue;
      if (id == 0 && p == "<unk>") {  // SentencePiece's default unk surface " ⁇ "
        text += " \xE2\x81\x87 ";
        continue;
      }
      std::string_view s = p;
      if (strip_space && !s.empty() && s.front() == ' ') {
        s.remove_prefix(1);
        strip_space = false;  // only the dummy prefix is dropped: runs of spaces survive (run.c keeps them)
      }
      text += s;
    }
    detail::append_bytes_as_utf8(text, bytes);
    return text;
  }

  std::string decode_piece(int prev_id, int id) const override {
    std::string_view p = pieces_[checked(id)];
    if (prev_id == bos_id() && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    if (const int b = detail::byte_piece_value(p); b >= 0) return std::string(1, static_cast<char>(b));
    return std::string(p);
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return 1; }  // llama2.c convention
  int eos_id() const override { return 2; }
  std::string piece(int id) const override { return pieces_[checked(id)]; }
  float score(int id) const { return scores_[checked(id)]; }
  int max_token_length() const { return max_token_length_; }
  const std::string& file() const { return file_; }

 private:
  // run.c: `float best_score = -1e10;` and a pair merges only when its score is strictly greater.
  static constexpr float no_merge_score = -1e10f;

  std::size_t checked(int id) const {
    LORALAB_CHECK(id >= 0 && id < vocab_size(), file_, ": token id ", id, " is out of range [0, ", vocab_size(), ")");
    return static_cast<std::size_t>(id);
  }

  int lookup(std::string_view s) const {
    const auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }

  int byte_token(unsigned char byte) const {
    const int id = byte + 3;
    LORALAB_CHECK(id < vocab_size(), file_, ": byte fallback for byte ", int(byte), " needs id ", id,
                  " but vocab_size is ", vocab_size());
    return id;
  }

  /// run.c's tokens before merging: [BOS], dummy-prefix " ", then one id per codepoint (or its bytes + 3).
  /// Codepoint grouping is run.c's: a non-continuation byte starts a group, continuation bytes join it up to
  /// 4 bytes, so malformed UTF-8 still falls back to single bytes.
  std::vector<int> initial_tokens(std::string_view text, bool add_bos) const {
    std::vector<int> tokens;
    tokens.reserve(text.size() + 2);
    if (add_bos) tokens.push_back(bos_id());
    if (!text.empty()) {
      const int space = lookup(" ");
      tokens.push_back(space != -1 ? space : byte_token(' '));
    }
    const auto continuation = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
    std::size_t start = 0;  // first byte of the current group
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (!continuation(text[i])) start = i;
      const std::size_t len = i + 1 - start;
      if (i + 1 < text.size() && continuation(text[i + 1]) && len < 4) continue;
      const std::string_view cp = text.substr(start, len);
      if (const int id = lookup(cp); id != -1) {
        tokens.push_back(id);
      } else {
        for (const char c : cp) tokens.push_back(byte_token(static_cast<unsigned char>(c)));
      }
      start = i + 1;  // run.c resets str_len after a flush, so stray continuation bytes start a new group
    }
    return tokens;
  }

  /// Merges exactly as encode_ref does, in O(n log n): a doubly linked list of symbols and a max-heap of
  /// candidate pairs keyed by (score, leftmost position). A candidate is stale once either symbol has changed;
  /// a symbol's id only ever becomes a longer piece, so comparing ids detects that.
  void merge_pairs(std::vector<int>& tokens) const {
    const int n = static_cast<int>(tokens.size());
    if (n < 2) return;
    struct symbol {
      int id, prev, next;  // prev/next: -1 at the ends
    };
    struct candidate {
      float score;
      int left, right, left_id, right_id, merged_id;
    };
    const auto worse = [](const candidate& a, const candidate& b) {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::vector<symbol> sym(n);
    for (int i = 0; i < n; ++i) sym[i] = {tokens[i], i - 1, i + 1 < n ? i + 1 : -1};
    std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> queue(worse);
    std::string merged;
    const auto consider = [&](int left) {
      if (left < 0) return;
      const int right = sym[left].next;
      if (right < 0) return;
      const int a = sym[left].id, b = sym[right].id;
      merged = pieces_[a];
      merged += pieces_[b];
      const int id = lookup(merged);
      if (id != -1 && scores_[id] > no_merge_score) queue.push({scores_[id], left, right, a, b, id});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!queue.empty()) {
      const candidate c = queue.top();
      queue.pop();
      symbol& l = sym[c.left];
      symbol& r = sym[c.right];
      if (l.next != c.right || l.id != c.left_id || r.id != c.right_id) continue;  // stale
      l.id = c.merged_id;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = c.left;
      r.id = -1;
      consider(l.prev);
      consider(c.left);
    }
    tokens.clear();
    for (int i = 0; i >= 0; i = sym[i].next) tokens.push_back(sym[i].id);
  }

  std::string file_;
  std::int32_t max_token_length_ = 0;
  std::vector<std::string> pieces_;  // by id, as stored (spaces, not U+2581)
  std::vector<float> scores_;        // by id; merged pieces: minus their merge rank
  std::unordered_map<std::string, int, detail::string_hash, std::equal_to<>> ids_;  // piece -> lowest id
};

// ---- SentencePiece .model ------------------------------------------------------------------------------------------

/// A SentencePiece model (protobuf), encoded and decoded by the SentencePiece library itself.
class sentencepiece_tokenizer final : public tokenizer {
 public:
  /// Throws loralab::error naming the file and SentencePiece's status message when it is missing or corrupt.
  explicit sentencepiece_tokenizer(const std::filesystem::path& model_file)
      : file_(model_file.string()), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    std::error_code ec;
    LORALAB_CHECK(std::filesystem::is_regular_file(model_file, ec), file_,
                  ": SentencePiece model file not found (or not a file)");
    const auto status = sp_->Load(file_);
    LORALAB_CHECK(status.ok(), file_, ": cannot load SentencePiece model: ", status.ToString());
    LORALAB_CHECK(sp_->GetPieceSize() > 0, file_, ": SentencePiece model has no pieces");
  }

  std::vector<int> encode(std::string_view text, bool add_bos, bool add_eos = false) const override {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    LORALAB_CHECK(status.ok(), file_, ": SentencePiece encode failed: ", status.ToString());
    if (add_bos) {
      LORALAB_CHECK(bos_id() >= 0, file_, ": BOS requested but the model defines no BOS piece");
      ids.insert(ids.begin(), bos_id());
    }
    if (add_eos) {
      LORALAB_CHECK(eos_id() >= 0, file_, ": EOS requested but the model defines no EOS piece");
      ids.push_back(eos_id());
    }
    return ids;
  }

  std::string decode(std::span<const int> ids) const override {
    for (const int id : ids) checked(id);
    std::string text;
    const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    LORALAB_CHECK(status.ok(), file_, ": SentencePiece decode failed: ", status.ToString());
    return text;
  }

  /// run.c's rule applied to the piece llama2.c's tokenizer.py would export for `id`.
  std::string decode_piece(int prev_id, int id) const override {
    checked(id);
    if (sp_->IsByte(id)) {
      const int b = detail::byte_piece_value(sp_->IdToPiece(id));
      LORALAB_CHECK(b >= 0, file_, ": byte piece ", id, " is spelled '", sp_->IdToPiece(id), "', not <0xHH>");
      return std::string(1, static_cast<char>(b));
    }
    std::string p = exported_piece(id);
    if (prev_id == bos_id() && !p.empty() && p.front() == ' ') p.erase(0, 1);
    return p;
  }

  int vocab_size() const override { return sp_->GetPieceSize(); }
  int bos_id() const override { return sp_->bos_id(); }  // -1 when the model has none
  int eos_id() const override { return sp_->eos_id(); }
  std::string piece(int id) const override { return sp_->IdToPiece(static_cast<int>(checked(id))); }
  float score(int id) const { return sp_->GetScore(static_cast<int>(checked(id))); }
  const std::string& file() const { return file_; }
  const sentencepiece::SentencePieceProcessor& processor() const { return *sp_; }

  /// The piece as llama2.c's tokenizer.py writes it to tokenizer.bin: BOS "\n<s>\n", EOS "\n</s>\n", U+2581 -> ' '.
  std::string exported_piece(int id) const {
    checked(id);
    if (id == bos_id()) return "\n<s>\n";
    if (id == eos_id()) return "\n</s>\n";
    const std::string& raw = sp_->IdToPiece(id);
    std::string out;
    out.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size();) {
      if (std::string_view(raw).substr(i, detail::sp_space_symbol.size()) == detail::sp_space_symbol) {
        out += ' ';
        i += detail::sp_space_symbol.size();
      } else {
        out += raw[i++];
      }
    }
    return out;
  }

 private:
  std::size_t checked(int id) const {
    LORALAB_CHECK(id >= 0 && id < vocab_size(), file_, ": token id ", id, " is out of range [0, ", vocab_size(), ")");
    return static_cast<std::size_t>(id);
  }

  std::string file_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;  // behind a pointer: the processor is not movable
};

// ---- opening by file ----------------------------------------------------------------------------------------------

/// A Hugging Face tokenizer.json as an nn::bpe_tokenizer; defined in nn/bpe_tokenizer.hpp (included at the end).
std::unique_ptr<tokenizer> load_bpe_tokenizer_json(const std::filesystem::path& path);
/// The byte-level BPE tokenizer a GGUF file carries; defined in nn/gguf_tokenizer.hpp (included at the end).
std::unique_ptr<tokenizer> load_gguf_tokenizer(const std::filesystem::path& path);

/// Opens `path` as a GGUF model file (by its magic "GGUF": its tokenizer.ggml.* BPE, nn/gguf_tokenizer.hpp), a
/// Hugging Face tokenizer.json (extension .json: byte-level BPE, nn/bpe_tokenizer.hpp), a
/// SentencePiece model (extension .model) or a llama2.c tokenizer (extension .bin); any other
/// extension is decided by content (a protobuf starts with field 1 / wire type 2, byte 0x0A, followed by a
/// non-zero length; a tokenizer.bin starts with a small int32). `vocab_size` (from the model header) is needed
/// for llama2.c files and ignored for SentencePiece ones.
inline std::unique_ptr<tokenizer> load_tokenizer(const std::filesystem::path& path, int vocab_size) {
  const std::string ext = path.extension().string();
  if (ext == ".json") return load_bpe_tokenizer_json(path);
  bool sentencepiece = ext == ".model";
  if (ext != ".model") {
    std::error_code ec;
    LORALAB_CHECK(std::filesystem::is_regular_file(path, ec), path.string(),
                  ": tokenizer file not found (or not a file)");
    std::ifstream in(path, std::ios::binary);
    char head[4] = {0, 0, 0, 0};
    in.read(head, 4);
    LORALAB_CHECK(in.gcount() >= 2, path.string(), ": tokenizer file is shorter than 2 bytes");
    if (in.gcount() == 4 && std::memcmp(head, "GGUF", 4) == 0) return load_gguf_tokenizer(path);
    if (ext == ".bin") return std::make_unique<llama2c_tokenizer>(path, vocab_size);
    sentencepiece = head[0] == 0x0A && head[1] != 0;
  }
  if (sentencepiece) return std::make_unique<sentencepiece_tokenizer>(path);
  return std::make_unique<llama2c_tokenizer>(path, vocab_size);
}

/// Throws loralab::error naming both files and both sizes unless the tokenizer's vocabulary is the model's.
inline void check_vocab_matches(const tokenizer& tok, int model_vocab, const std::string& tokenizer_path,
                                const std::string& model_path) {
  LORALAB_CHECK(tok.vocab_size() == model_vocab, "tokenizer ", tokenizer_path, " has vocab_size ", tok.vocab_size(),
                " but model ", model_path, " has vocab_size ", model_vocab);
}

}  // namespace loralab::nn

// The byte-level BPE tokenizer implements the interface above and defines load_bpe_tokenizer_json; it includes this
// header first, so either header may be included alone.
#include "nn/bpe_tokenizer.hpp"  // IWYU pragma: export (it includes nn/gguf_tokenizer.hpp at its end)

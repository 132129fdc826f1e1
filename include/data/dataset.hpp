// SPDX-License-Identifier: MIT
#pragma once
// Fine-tuning data: records from a file, tokenized examples with a loss mask, rows of at most seq_len tokens,
// a seeded train/validation split and shuffled batches with the targets already shifted.
//
//   file ──load_records (data/records.hpp)──▶ records ──split_train_val──▶ train / val records
//        ──render + tokenize_records──▶ examples (input_ids, labels) ──make_rows──▶ rows (truncated or packed)
//        ──batch_loader──▶ batches {tokens (B,T), targets (B,T)}            (prepare_dataset does all of it)
//
// Labels (aligned, HF style). An example is   input_ids = [BOS] + prompt tokens + response tokens + [EOS]
// and its labels have the same length: labels[t] = input_ids[t], except ignore_index (-100) for the prompt
// tokens (unless train_on_prompt), for BOS (nothing should learn to predict the start of a document) and later
// for padding. Like transformers' labels they are NOT shifted: the model shifts (ForCausalLMLoss):
//
//     the target of position t is labels[t + 1];  the last position of a row has no target (-100).
//
// so labels[0] never counts and EOS (the last label) is a target: the model learns to stop. The batches below
// hold the shifted version, `targets[b, t] = labels[b][t + 1]`, so a trainer computes
//     loss = Σ_{targets != -100} CE(logits[b, t, :], targets[b, t]) / trainable_tokens
// with trainable_tokens = #targets != -100 (sum it over the micro-batches of a gradient-accumulation step for
// HF's token-mean over the step). transformers' num_items_in_batch counts the unshifted labels, i.e. one more
// per row whose labels[0] is not -100. An example's labels[0] is BOS, always -100, so the counts agree; only a
// packed row that starts inside a document differs (HF counts its first label, which nothing predicts).
//
// Padding uses the EOS id, and the padded labels are -100 by construction (the mask never comes from comparing
// ids with a pad id), so real EOS tokens stay trained — the pad == eos pitfall of DataCollatorForLanguageModeling
// (transformers#23530) cannot happen. Rows are padded on the right; attention is causal, so a real token never
// sees the padding after it, and padded positions carry no target.
//
// Packing concatenates whole examples (each with its BOS and EOS, prompt labels still -100) into one stream and
// cuts it into rows of exactly seq_len (the last row shorter, then padded in its batch). A row attends across the
// documents it holds (causal attention, no block mask), as in TRL's ConstantLengthDataset. The token at position
// 0 of a row is never a target, and an example split across two rows continues without its beginning.
//
// Randomness: std::mt19937_64 with a written-down Fisher-Yates (uniform draws by rejection, not std::shuffle or
// std::uniform_int_distribution, whose algorithms differ between standard libraries), so the same seed gives the
// same split and the same batch order on any platform.
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
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "data/prompt_template.hpp"
#include "data/records.hpp"
#include "nn/tokenizer.hpp"

namespace loralab::data {

// ---- seeded shuffling and the validation split ---------------------------------------------------------------------

namespace detail {

/// Uniform in [0, n) by rejection: the 2^64 mod n lowest outputs are redrawn, so every value is equally likely.
inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
  for (;;) {
    const std::uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

/// SplitMix64's finalizer: decorrelates nearby seeds (seed, seed + 1, …) before they seed an mt19937_64.
inline std::uint64_t mix_seed(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace detail

/// Fisher-Yates with detail::uniform_below: for i = n-1 … 1, swap v[i] with v[uniform_below(i + 1)].
/// The same generator state gives the same order with every standard library.
template <class T>
void shuffle_in_place(std::vector<T>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) {
    const std::size_t j = static_cast<std::size_t>(detail::uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

/// How many records go to validation: `--val-size N` (a count, 0 = no validation) or a fraction in (0, 1).
struct val_size {
  std::size_t count = 0;  ///< used when fraction == 0
  double fraction = 0;    ///< in (0, 1) when the size was given as a fraction

  /// "N" (digits only) is a count; anything else must read as a number in (0, 1): a fraction.
  static val_size parse(std::string_view s) {
    const std::string str(s);
    const auto bad = [&] {
      fail("--val-size must be a count >= 0 (e.g. 100) or a fraction in (0, 1) (e.g. 0.1), got '", str, "'");
    };
    if (!str.empty() && str.find_first_not_of("0123456789") == std::string::npos) {
      try {
        return {static_cast<std::size_t>(std::stoull(str)), 0.0};
      } catch (const std::exception&) {
        bad();
      }
    }
    double f = 0;
    std::size_t used = 0;
    try {
      f = std::stod(str, &used);
    } catch (const std::exception&) {
      bad();
    }
    if (used != str.size() || !(f > 0 && f < 1)) bad();
    return {0, f};
  }

  void validate() const {
    LORALAB_CHECK(fraction == 0 || (fraction > 0 && fraction < 1), "--val-size fraction must be in (0, 1), got ",
                  fraction);
  }

  /// The number of validation records out of `n`: the count, or ceil(fraction · n) (HF train_test_split's rounding).
  /// An error unless at least one training record is left.
  std::size_t resolve(std::size_t n) const {
    validate();
    const std::size_t k =
        fraction > 0 ? static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(n))) : count;
    LORALAB_CHECK(k < n, "--val-size ", *this, " takes ", k, " of the ", n,
                  " records, leaving none for training; it must be smaller than the dataset");
    return k;
  }

  friend std::ostream& operator<<(std::ostream& os, const val_size& v) {
    return v.fraction > 0 ? os << v.fraction : os << v.count;
  }
};

template <class T>
struct train_val {
  std::vector<T> train, val;
};

/// Shuffles `items` with mt19937_64(seed) (shuffle_in_place), then the first val.resolve(n) become the validation
/// set and the rest the training set: disjoint, together all of `items`, the same for the same seed.
template <class T>
train_val<T> split_train_val(std::vector<T> items, const val_size& val, std::uint64_t seed) {
  const std::size_t k = val.resolve(items.size());
  std::mt19937_64 rng(seed);
  shuffle_in_place(items, rng);
  train_val<T> out;
  out.val.assign(std::make_move_iterator(items.begin()), std::make_move_iterator(items.begin() + std::ptrdiff_t(k)));
  out.train.assign(std::make_move_iterator(items.begin() + std::ptrdiff_t(k)), std::make_move_iterator(items.end()));
  return out;
}

// ---- tokenization -------------------------------------------------------------------------------------------------

/// One tokenized record. input_ids = [BOS] + prompt tokens + response tokens + [EOS]; labels (same length,
/// NOT shifted) = input_ids with BOS and, unless train_on_prompt, the prompt tokens set to ignore_index.
struct example {
  std::vector<int> input_ids;  ///< (n)
  std::vector<int> labels;     ///< (n), aligned with input_ids: the target of position t is labels[t + 1]

  friend bool operator==(const example&, const example&) = default;
};

/// The number of positions with a target, #{t >= 1 : labels[t] != -100} (labels[0] is never a target).
inline std::size_t count_targets(std::span<const int> labels) {
  return labels.empty() ? 0
                        : static_cast<std::size_t>(
                              std::count_if(labels.begin() + 1, labels.end(), [](int l) { return l != ignore_index; }));
}

/// Tokenizes one rendered record (see example).
///
/// Prompt and response are encoded separately and concatenated. Encoding prompt + response as one string and
/// masking the first len(encode(prompt)) tokens is wrong whenever a merge crosses the boundary (a prompt ending
/// in a space or a letter merges with the response's first piece), and the mask is then off by a token. Separate
/// encoding makes the boundary exact, so the masked labels are exactly the prompt's. The price is SentencePiece's
/// dummy prefix: the response starts with a space-prefixed piece ("▁Hello"), which the model learns to emit
/// after the prompt (decode then shows a leading space).
///
/// The text is framed: BOS before it and EOS after it (the prompt templates). A model's chat template writes its own
/// special tokens, so its records go through the rendered_conversation overload below instead, unframed.
inline example tokenize(const nn::tokenizer& tok, const rendered_record& r, bool train_on_prompt) {
  LORALAB_CHECK(tok.bos_id() >= 0 && tok.eos_id() >= 0, "the tokenizer must define BOS and EOS, got bos_id=",
                tok.bos_id(), " eos_id=", tok.eos_id());
  const std::vector<int> prompt = tok.encode(r.prompt, false);
  const std::vector<int> response = tok.encode(r.response, false);
  example ex;
  ex.input_ids.reserve(prompt.size() + response.size() + 2);
  ex.input_ids.push_back(tok.bos_id());
  ex.input_ids.insert(ex.input_ids.end(), prompt.begin(), prompt.end());
  ex.input_ids.insert(ex.input_ids.end(), response.begin(), response.end());
  ex.input_ids.push_back(tok.eos_id());
  ex.labels = ex.input_ids;
  ex.labels[0] = ignore_index;  // BOS: nothing predicts it
  const std::size_t masked = 1 + prompt.size();
  if (!train_on_prompt)
    std::fill(ex.labels.begin(), ex.labels.begin() + std::ptrdiff_t(std::min(masked, ex.labels.size())), ignore_index);
  return ex;
}

/// A conversation's pieces tokenized one after another, unframed (the chat template writes its special tokens, as
/// transformers' apply_chat_template(tokenize=True) does); labels = the ids, -100 on the pieces not trained (all
/// trained with train_on_prompt) and on the first token, the prompt's, which nothing predicts.
inline example tokenize(const nn::tokenizer& tok, const rendered_conversation& pieces, bool train_on_prompt) {
  example ex;
  for (const rendered_piece& p : pieces) {
    const std::vector<int> ids = tok.encode(p.text, false);
    ex.input_ids.insert(ex.input_ids.end(), ids.begin(), ids.end());
    ex.labels.insert(ex.labels.end(), ids.begin(), ids.end());
    if (!p.trained && !train_on_prompt) std::fill(ex.labels.end() - std::ptrdiff_t(ids.size()), ex.labels.end(), ignore_index);
  }
  LORALAB_CHECK(!ex.input_ids.empty(), "tokenize: the conversation renders to no tokens");
  ex.labels[0] = ignore_index;  // nothing predicts the first token
  return ex;
}

/// tokenize(tok, render(tmpl, r), train_on_prompt) for every record, in order; with `chat`, the model's chat
/// template instead (render_chat_instruction, unframed). Chat records (messages) take the model's chat template, or
/// ChatML without a system turn under --template chatml (render_chat_turns: every assistant turn trained).
inline std::vector<example> tokenize_records(std::span<const record> records, const nn::tokenizer& tok,
                                             prompt_template tmpl, bool train_on_prompt,
                                             const std::optional<chat_template>& chat = std::nullopt) {
  std::vector<example> out;
  out.reserve(records.size());
  for (const record& r : records) {
    if (!r.messages.empty()) {
      LORALAB_CHECK(chat || tmpl == prompt_template::chatml, "record at line ", r.line, ": a chat record (messages) needs a ",
                    "chat template: the model's (tokenizer.chat_template of a GGUF file) or --template chatml, not ", to_string(tmpl));
      out.push_back(tokenize(tok, render_chat_turns(chat ? *chat : chat_template{}, r), train_on_prompt));
    } else {
      out.push_back(chat ? tokenize(tok, render_chat_instruction(*chat, r), train_on_prompt)
                         : tokenize(tok, render(tmpl, r), train_on_prompt));
    }
  }
  return out;
}

// ---- rows: truncation or packing ----------------------------------------------------------------------------------

/// What make_rows did; printed before training.
struct row_stats {
  std::size_t examples = 0;   ///< examples in
  std::size_t truncated = 0;  ///< examples longer than seq_len, cut to their first seq_len tokens (not packing)
  std::size_t dropped = 0;    ///< examples (or packed rows) left without any target, not used
  std::size_t rows = 0;       ///< rows out
  std::size_t tokens = 0;     ///< tokens in the rows out (padding not included)
  std::size_t targets = 0;    ///< positions with a target in the rows out (see count_targets)

  friend std::ostream& operator<<(std::ostream& os, const row_stats& s) {
    return os << "row_stats{examples=" << s.examples << " truncated=" << s.truncated << " dropped=" << s.dropped
              << " rows=" << s.rows << " tokens=" << s.tokens << " targets=" << s.targets << "}";
  }
};

struct rows_result {
  std::vector<example> rows;  ///< each at most seq_len tokens, each with at least one target
  row_stats stats;
};

/// Rows of at most `seq_len` tokens. Without packing, each example is one row, cut to its first seq_len tokens;
/// with packing, the concatenated examples are cut into rows of exactly seq_len (the last one shorter). A row
/// with no target left is dropped and counted. `what` names the data in errors ("train split").
/// Errors: seq_len < 2; examples given but none with a target ("no trainable tokens: …").
inline rows_result make_rows(std::span<const example> examples, int seq_len, bool packing,
                             std::string_view what = "dataset") {
  LORALAB_CHECK(seq_len >= 2, "--seq-len must be >= 2 (a row needs a token and its target), got ", seq_len);
  const auto T = static_cast<std::size_t>(seq_len);
  rows_result out;
  out.stats.examples = examples.size();
  const auto keep = [&](example row) {
    const std::size_t n = count_targets(row.labels);
    if (n == 0) {
      ++out.stats.dropped;
      return;
    }
    out.stats.tokens += row.input_ids.size();
    out.stats.targets += n;
    out.rows.push_back(std::move(row));
  };
  if (!packing) {
    for (const example& ex : examples) {
      LORALAB_CHECK(ex.input_ids.size() == ex.labels.size(), what, ": an example has ", ex.input_ids.size(),
                    " input_ids but ", ex.labels.size(), " labels");
      example row = ex;
      if (row.input_ids.size() > T) {
        ++out.stats.truncated;
        row.input_ids.resize(T);
        row.labels.resize(T);
      }
      keep(std::move(row));
    }
  } else {
    example row;
    for (const example& ex : examples) {
      LORALAB_CHECK(ex.input_ids.size() == ex.labels.size(), what, ": an example has ", ex.input_ids.size(),
                    " input_ids but ", ex.labels.size(), " labels");
      for (std::size_t i = 0; i < ex.input_ids.size(); ++i) {
        row.input_ids.push_back(ex.input_ids[i]);
        row.labels.push_back(ex.labels[i]);
        if (row.input_ids.size() == T) keep(std::exchange(row, example{}));
      }
    }
    if (!row.input_ids.empty()) keep(std::move(row));
  }
  out.stats.rows = out.rows.size();
  LORALAB_CHECK(examples.empty() || !out.rows.empty(),
                "no trainable tokens: every label is -100 after truncation to seq_len=", seq_len, " (", what, ": ",
                examples.size(), " examples, all dropped; raise --seq-len or train on the prompt)");
  return out;
}

// ---- batches ------------------------------------------------------------------------------------------------------

/// B rows of T tokens, right-padded, with the targets already shifted. B, T as in nn/config.hpp.
struct batch {
  int B = 0, T = 0;
  std::vector<int> tokens;   ///< (B, T) row-major: the rows' input_ids, padded with the pad id (EOS)
  /// (B, T): targets[b, t] = labels[b][t + 1]; -100 at t = T-1, past a row's end and where masked
  std::vector<int> targets;
  int trainable_tokens = 0;  ///< #targets != -100 (>= 1: rows without a target were dropped by make_rows)
};

/// The batch of rows[order[0]], rows[order[1]], …, padded on the right to `pad_to` columns (0: to the longest row).
inline batch make_batch(std::span<const example> rows, std::span<const std::size_t> order, int pad_id, int pad_to = 0) {
  batch b;
  b.B = static_cast<int>(order.size());
  std::size_t T = static_cast<std::size_t>(std::max(pad_to, 0));
  for (const std::size_t i : order) T = std::max(T, rows[i].input_ids.size());
  LORALAB_CHECK(pad_to == 0 || T == static_cast<std::size_t>(pad_to), "make_batch: a row has ", T,
                " tokens, more than pad_to=", pad_to);
  b.T = static_cast<int>(T);
  b.tokens.assign(order.size() * T, pad_id);
  b.targets.assign(order.size() * T, ignore_index);
  for (std::size_t r = 0; r < order.size(); ++r) {
    const example& ex = rows[order[r]];
    const std::size_t n = ex.input_ids.size();
    std::copy(ex.input_ids.begin(), ex.input_ids.end(), b.tokens.begin() + std::ptrdiff_t(r * T));
    if (n > 1) std::copy(ex.labels.begin() + 1, ex.labels.end(), b.targets.begin() + std::ptrdiff_t(r * T));
  }
  b.trainable_tokens =
      static_cast<int>(std::count_if(b.targets.begin(), b.targets.end(), [](int t) { return t != ignore_index; }));
  return b;
}

/// Batches over epochs. Epoch e visits the rows in the order of shuffle_in_place with
/// mt19937_64(mix_seed(seed + e)) (or in file order when shuffle is off), batch_size rows at a time. The last
/// batch of an epoch keeps drop_last = false and is smaller (B = rows % batch_size) instead of being filled with
/// padding rows: the loss divides by trainable_tokens, so a smaller batch needs no special case. batch_at(e, i)
/// is a pure function of (seed, e, i), so a resumed run sees the same batches.
class batch_loader {
 public:
  batch_loader() = default;

  /// `pad_to` 0 pads each batch to its longest row; a positive value (seq_len) gives every batch T = pad_to.
  batch_loader(std::vector<example> rows, int batch_size, int pad_id, std::uint64_t seed, bool shuffle = true,
               int pad_to = 0)
      : rows_(std::move(rows)),
        batch_size_(batch_size),
        pad_id_(pad_id),
        pad_to_(pad_to),
        seed_(seed),
        shuffle_(shuffle) {
    LORALAB_CHECK(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
    LORALAB_CHECK(pad_to >= 0, "batch_loader: pad_to must be >= 0, got ", pad_to);
    order_ = order(0);
  }

  std::size_t size() const { return rows_.size(); }
  const std::vector<example>& rows() const { return rows_; }
  /// A loader over the first n rows (all when n is 0 or >= size()), batched, padded and shuffled the same way:
  /// a smaller training set that is a prefix of this one.
  batch_loader head(std::size_t n) const {
    const std::size_t k = n == 0 ? rows_.size() : std::min(n, rows_.size());
    return batch_loader(std::vector<example>(rows_.begin(), rows_.begin() + std::ptrdiff_t(k)), batch_size_, pad_id_, seed_,
                        shuffle_, pad_to_);
  }
  int batch_size() const { return batch_size_; }
  /// Batches per epoch: ceil(rows / batch_size).
  int num_batches() const {
    return static_cast<int>((rows_.size() + std::size_t(batch_size_) - 1) / std::size_t(batch_size_));
  }
  /// The epoch (0-based) and the index in it of the batch next() returns.
  int epoch() const { return epoch_; }
  int batch_in_epoch() const { return index_; }

  /// The row order of epoch `e`: a permutation of [0, size()).
  std::vector<std::size_t> order(int e) const {
    std::vector<std::size_t> perm(rows_.size());
    for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = i;
    if (shuffle_) {
      std::mt19937_64 rng(detail::mix_seed(seed_ + static_cast<std::uint64_t>(e)));
      shuffle_in_place(perm, rng);
    }
    return perm;
  }

  /// Batch `i` (0-based, < num_batches()) of epoch `e`.
  batch batch_at(int e, int i) const {
    check_index(i);
    return slice(e == epoch_ ? order_ : order(e), i);
  }

  /// The next batch; after the last batch of an epoch the next call starts epoch + 1 (reshuffled).
  batch next() {
    LORALAB_CHECK(!rows_.empty(), "batch_loader::next: the dataset has no rows");
    batch b = slice(order_, index_);
    if (++index_ == num_batches()) {
      index_ = 0;
      order_ = order(++epoch_);
    }
    return b;
  }

 private:
  void check_index(int i) const {
    LORALAB_CHECK(i >= 0 && i < num_batches(), "batch index ", i, " is out of range [0, ", num_batches(), ")");
  }
  batch slice(const std::vector<std::size_t>& perm, int i) const {
    const std::size_t first = std::size_t(i) * std::size_t(batch_size_);
    const std::size_t last = std::min(first + std::size_t(batch_size_), perm.size());
    return make_batch(rows_, std::span(perm).subspan(first, last - first), pad_id_, pad_to_);
  }

  std::vector<example> rows_;
  int batch_size_ = 1, pad_id_ = 0, pad_to_ = 0;
  std::uint64_t seed_ = 0;
  bool shuffle_ = true;
  int epoch_ = 0, index_ = 0;
  std::vector<std::size_t> order_;  // of epoch_
};

// ---- everything at once -------------------------------------------------------------------------------------------

/// The data side of a fine-tuning run, as flags (validate() checks them before any file is read).
struct dataset_config {
  std::filesystem::path file;
  data_format format = data_format::alpaca;
  text_split split = text_split::automatic;  ///< text format only
  std::optional<prompt_template> tmpl;       ///< default: default_template(format)
  std::optional<chat_template> chat;         ///< a model's chat template: renders instruction records instead of tmpl
  bool train_on_prompt = false;              ///< false: prompt labels are -100 (plain has an empty prompt)
  int seq_len = 256;                         ///< T: tokens per row
  bool packing = false;
  bool pad_to_seq_len = false;               ///< every batch T = seq_len (else: the longest row of the batch)
  int batch_size = 8;
  val_size val;                              ///< 0: no validation set
  std::uint64_t seed = 42;                   ///< epoch shuffles (the run's --seed)
  std::uint64_t split_seed = 42;             ///< train/val split; its own seed, so runs with other seeds share it

  prompt_template template_used() const { return tmpl.value_or(default_template(format)); }

  void validate() const {
    LORALAB_CHECK(seq_len >= 2, "--seq-len must be >= 2 (a row needs a token and its target), got ", seq_len);
    LORALAB_CHECK(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
    val.validate();
  }

  friend std::ostream& operator<<(std::ostream& os, const dataset_config& c) {
    os << "dataset_config{file=" << c.file.string() << " format=" << c.format;
    if (c.format == data_format::text) os << " text_split=" << c.split;
    os << " template=";
    if (c.chat) os << "chat(" << c.chat->format << ")";
    else os << c.template_used();
    return os << " train_on_prompt=" << c.train_on_prompt
              << " seq_len=" << c.seq_len << " packing=" << c.packing << " pad_to_seq_len=" << c.pad_to_seq_len
              << " batch_size=" << c.batch_size << " val_size=" << c.val << " seed=" << c.seed << " split_seed=" << c.split_seed << "}";
  }
};

struct prepared_dataset {
  std::size_t records = 0;  ///< records in the file
  row_stats train_stats, val_stats;
  batch_loader train;  ///< shuffled every epoch
  batch_loader val;    ///< file order after the split, not shuffled; empty when val_size is 0
};

/// load_records → split_train_val (split_seed) → tokenize_records → make_rows → batch_loader (pad with EOS).
inline prepared_dataset prepare_dataset(const dataset_config& c, const nn::tokenizer& tok) {
  c.validate();
  std::vector<record> records = load_records(c.file, c.format, c.split);
  prepared_dataset out;
  out.records = records.size();
  train_val<record> parts = split_train_val(std::move(records), c.val, c.split_seed);
  const prompt_template tmpl = c.template_used();
  const int pad_to = c.pad_to_seq_len ? c.seq_len : 0;
  rows_result train = make_rows(tokenize_records(parts.train, tok, tmpl, c.train_on_prompt, c.chat), c.seq_len, c.packing,
                                "train split of " + c.file.string());
  rows_result val = make_rows(tokenize_records(parts.val, tok, tmpl, c.train_on_prompt, c.chat), c.seq_len, c.packing,
                              "validation split of " + c.file.string());
  out.train_stats = train.stats;
  out.val_stats = val.stats;
  out.train = batch_loader(std::move(train.rows), c.batch_size, tok.eos_id(), c.seed, true, pad_to);
  out.val = batch_loader(std::move(val.rows), c.batch_size, tok.eos_id(), c.seed, false, pad_to);
  return out;
}

}  // namespace loralab::data

// SPDX-License-Identifier: MIT
/// \file train_tokenizer.cpp
/// \brief Trains a Llama-style SentencePiece tokenizer on one of the fine-tuning corpora.
///
///   build/experiments/train_tokenizer --input ../shared/data/tinystories_validation_100.txt --vocab-size 512
///                                     --model-prefix out/tok512_valid        (one command line)
///
/// The corpus is read with data/dataset.hpp (--format, --text-split), each record rendered with its format's
/// template (prompt + response) and fed to sentencepiece::SentencePieceTrainer one line per sentence, so newlines
/// are never inside a piece and encode as the byte token <0x0A>, as in Llama's tokenizer. Settings follow
/// llama2.c's train_vocab (and Llama's tokenizer.model): BPE by default, byte_fallback, split_digits, identity
/// normalization, whitespace kept, character_coverage 1.0, unk 0, bos 1, eos 2, no pad; every sentence is used.
///
/// SentencePiece returns the model proto; this program writes PATH.vocab (SentencePiece's own format, "piece<TAB>
/// score" per id, byte-identical to what its SaveVocab writes) and then PATH.model, each atomically
/// (core/atomic_file.hpp). Letting SentencePiece write both under a temporary prefix and renaming them would
/// record that prefix (with a pid) in the model's trainer_spec, so the same corpus would not give the same bytes;
/// returned protos record an empty model_prefix. Same corpus and flags, same files (checked for 1 and 4 threads).
/// The model is loaded back and checked: special ids, the round trip of every document, bytes per token.
/// Under a second for TinyStories-100 at vocab 512; output: a config line, a one-row Markdown table, the paths.
#include <fmt/core.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "experiment/cli.hpp"
#include "experiment/report.hpp"
#include "core/atomic_file.hpp"
#include "data/dataset.hpp"
#include "nn/tokenizer.hpp"

using namespace loralab;
namespace fs = std::filesystem;

namespace {

/// The sentences in a vector, for SentencePieceTrainer::Train.
class vector_sentences final : public sentencepiece::SentenceIterator {
 public:
  explicit vector_sentences(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  std::size_t i_ = 0;
};

/// SentencePiece's .vocab text (trainer_interface.cc SaveVocab): "piece\tscore" per id, scores as ostream prints them.
std::string vocab_text(const sentencepiece::SentencePieceProcessor& sp) {
  std::ostringstream os;
  for (int id = 0; id < sp.GetPieceSize(); ++id) os << sp.IdToPiece(id) << "\t" << sp.GetScore(id) << "\n";
  return os.str();
}

}  // namespace

int main(int argc, char** argv) try {
  std::string input, format_name = "text", split_name = "auto", prefix, model_type = "bpe";
  int vocab_size = 0;
  bool verbose = false;
  experiment::command_line cli("train_tokenizer: a Llama-style SentencePiece model from a corpus");
  auto& desc = cli.desc;
  desc.add_options()("input", experiment::po::value(&input)->required(), "corpus file")(
      "format", experiment::po::value(&format_name)->default_value(format_name), "text | alpaca | dolly | quotes")(
      "text-split", experiment::po::value(&split_name)->default_value(split_name),
      "text documents: auto | fortune | eot | line")("vocab-size", experiment::po::value(&vocab_size)->required(),
                                                     "pieces, specials and the 256 byte tokens included (so > 259)")(
      "model-prefix", experiment::po::value(&prefix)->required(), "writes PREFIX.model and PREFIX.vocab")(
      "model-type", experiment::po::value(&model_type)->default_value(model_type), "bpe | unigram")(
      "verbose", experiment::po::bool_switch(&verbose), "show SentencePiece's training log");
  if (auto code = cli.parse(argc, argv)) return *code;

  const data::data_format format = data::parse_data_format(format_name);
  const data::text_split split = data::parse_text_split(split_name);
  LORALAB_CHECK(model_type == "bpe" || model_type == "unigram", "--model-type must be bpe or unigram, got '",
                model_type, "'");
  // 3 specials + 256 byte pieces are always in the vocabulary; SentencePiece checks the rest (characters, corpus).
  LORALAB_CHECK(vocab_size > 259, "--vocab-size must be > 259 (3 specials + 256 byte tokens), got ", vocab_size);
  const int threads = cli.threads > 0 ? cli.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  fmt::print(
      "train_tokenizer{{input={} format={} text_split={} vocab_size={} model_type={} model_prefix={} seed={} "
      "threads={}}}\n",
      input, data::to_string(format), data::to_string(split), vocab_size, model_type, prefix, cli.seed, threads);

  // Documents as the model will see them, then one sentence per non-blank line.
  const std::vector<data::record> records = data::load_records(input, format, split);
  std::vector<std::string> documents, sentences;
  std::size_t bytes = 0;
  for (const data::record& r : records) {
    if (!r.messages.empty()) {  // a chat record: its conversation in ChatML
      documents.emplace_back();
      for (const auto& piece : data::render_chat_turns(data::chat_template{}, r)) documents.back() += piece.text;
    } else {
      const data::rendered_record t = data::render(data::default_template(format), r);
      documents.push_back(t.prompt + t.response);
    }
    bytes += documents.back().size();
    for (const auto& rec : data::split_text(documents.back(), data::text_split::line)) sentences.push_back(rec.output);
  }

  const fs::path out_prefix(prefix);
  if (out_prefix.has_parent_path()) fs::create_directories(out_prefix.parent_path());
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"unk_surface", " \xE2\x81\x87 "},
      {"input_sentence_size", "0"},  // all of them
      {"max_sentence_length", "16384"},
      {"self_test_sample_size", "0"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", verbose ? "0" : "1"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(cli.seed));
  vector_sentences it(sentences);
  std::string proto;
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(spec, &it, &proto);
  LORALAB_CHECK(status.ok(), input, ": SentencePiece training failed: ", status.ToString());
  sentencepiece::SentencePieceProcessor trained;
  const sentencepiece::util::Status loaded = trained.LoadFromSerializedProto(proto);
  LORALAB_CHECK(loaded.ok(), "cannot read the trained model back: ", loaded.ToString());
  for (const auto& [path, bytes] :
       {std::pair{prefix + ".vocab", vocab_text(trained)}, std::pair{prefix + ".model", proto}}) {
    atomic_file f(path);
    f.write(bytes);
    f.commit();
  }

  // Load it back and check it.
  const nn::sentencepiece_tokenizer tok(prefix + ".model");
  LORALAB_CHECK(tok.vocab_size() == vocab_size && tok.bos_id() == 1 && tok.eos_id() == 2 && tok.piece(0) == "<unk>",
                prefix, ".model: expected vocab_size ", vocab_size, ", unk 0, bos 1, eos 2; got vocab_size ",
                tok.vocab_size(), ", piece 0 '", tok.piece(0), "', bos ", tok.bos_id(), ", eos ", tok.eos_id());
  std::size_t tokens = 0, round_trip = 0, byte_tokens = 0;
  for (const std::string& d : documents) {
    const std::vector<int> ids = tok.encode(d, false);
    tokens += ids.size();
    for (const int id : ids) byte_tokens += tok.processor().IsByte(id);
    round_trip += tok.decode(ids) == d;
  }
  experiment::table t(
      {"documents", "sentences", "bytes", "tokens", "bytes/token", "byte-fallback tokens", "round trip"});
  t.rows.push_back({std::to_string(documents.size()), std::to_string(sentences.size()), std::to_string(bytes),
                    std::to_string(tokens),
                    fmt::format("{:.2f}", double(bytes) / double(std::max<std::size_t>(tokens, 1))),
                    std::to_string(byte_tokens), fmt::format("{}/{}", round_trip, documents.size())});
  t.print_markdown();
  fmt::print("wrote {}.model and {}.vocab ({} pieces)\n", prefix, prefix, tok.vocab_size());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "train_tokenizer: error: {}\n", e.what());
  return 1;
}

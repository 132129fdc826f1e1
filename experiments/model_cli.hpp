// SPDX-License-Identifier: MIT
#pragma once
// What the model programs share: loading a model file, choosing the base weights' scheme from --quant and
// --double-quant (the one run-time switch over compile-time schemes), and teacher-forced NLL.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "nn/generate.hpp"
#include "nn/llama.hpp"
#include "quant/scheme_dispatch.hpp"
#include "quant/schemes.hpp"

namespace loralab::experiments {

/// Calls fn(model) with the base built as --quant asks: none (float32), bf16 (bfloat16 storage), nf4 / fp4 at
/// block 64 (QLoRA's setting; with --double-quant the absmax is double-quantized), or int8 (LLM.int8 row-wise).
template <class F>
void with_model(const nn::model_file& file, const std::string& quant, bool double_quant, F&& fn) {
  LORALAB_CHECK(quant == "none" || quant == "bf16" || quant == "nf4" || quant == "fp4" || quant == "int8",
                "--quant must be none, bf16, nf4, fp4 or int8, got '", quant, "'");
  LORALAB_CHECK(!double_quant || quant == "nf4" || quant == "fp4", "--double-quant needs --quant nf4 or fp4");
  if (quant == "none") {
    auto m = nn::make_dense_model<float>(file);
    fn(m);
  } else if (quant == "bf16") {
    auto m = nn::make_bf16_model(file);
    fn(m);
  } else if (quant == "int8") {
    auto m = nn::make_quantized_model<quant::int8_rowwise>(file);
    fn(m);
  } else {
    quant::dispatch_4bit(quant, 64, double_quant, [&]<class S>(std::type_identity<S>) {
      auto m = nn::make_quantized_model<S>(file);
      fn(m);
    });
  }
}

struct nll_result {
  std::size_t tokens = 0;  ///< predicted tokens
  double mean_nll = 0;
  double perplexity() const { return std::exp(mean_nll); }
};

/// Teacher-forced mean NLL of ids[1:] given their prefixes, in windows of `context` positions that overlap
/// by one token, so every token but the first is predicted once, each window from a fresh KV cache.
template <class Linear>
nll_result teacher_forced_nll(nn::llama_model<Linear>& m, const std::vector<int>& ids, int context) {
  LORALAB_CHECK(ids.size() >= 2, "teacher forcing needs at least 2 tokens, got ", ids.size());
  LORALAB_CHECK(context >= 2 && context <= m.config.max_seq_len, "--context must be in [2, ", m.config.max_seq_len, "], got ", context);
  nn::kv_cache_decoder<Linear> dec(m);
  double total = 0;
  std::size_t count = 0;
  for (std::size_t start = 0; start + 1 < ids.size(); start += std::size_t(context - 1)) {
    const std::size_t end = std::min(ids.size(), start + std::size_t(context));
    dec.reset();
    dec.feed(std::span<const int>(ids.data() + start, end - start), /*all_logits=*/true);
    const auto& logits = dec.all_logits();
    for (std::size_t t = start; t + 1 < end; ++t) {
      const auto row = logits.row(Eigen::Index(t - start)).template cast<double>();
      const double mx = row.maxCoeff();
      total += mx + std::log((row.array() - mx).exp().sum()) - row(ids[t + 1]);
      ++count;
    }
  }
  return {count, total / double(count)};
}

}  // namespace loralab::experiments

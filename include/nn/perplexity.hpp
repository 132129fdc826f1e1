// SPDX-License-Identifier: MIT
#pragma once
// Teacher-forced NLL of a token sequence under a model, in overlapping windows (what experiments/perplexity prints).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include "core/check.hpp"
#include "nn/generate.hpp"
#include "nn/llama.hpp"

namespace loralab::nn {

struct nll_result {
  std::size_t tokens = 0;  ///< predicted tokens
  double mean_nll = 0;     ///< nats per predicted token
  double perplexity() const { return std::exp(mean_nll); }
};

/// Teacher-forced mean NLL of ids[1:] given their prefixes, in windows of `context` positions that overlap by one
/// token (window w covers ids[w·(context−1), w·(context−1) + context)), so every token but the first is predicted
/// once, each window from a fresh KV cache. The log-softmax is taken in double from the model's logits.
template <class Linear>
nll_result teacher_forced_nll(llama_model<Linear>& m, const std::vector<int>& ids, int context) {
  LORALAB_CHECK(ids.size() >= 2, "teacher forcing needs at least 2 tokens, got ", ids.size());
  LORALAB_CHECK(context >= 2 && context <= m.config.max_seq_len, "--context must be in [2, ", m.config.max_seq_len, "], got ", context);
  kv_cache_decoder<Linear> dec(m);
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

}  // namespace loralab::nn

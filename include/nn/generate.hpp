// SPDX-License-Identifier: MIT
#pragma once
// Inference: a KV cache over a llama_model, and the samplers (greedy, temperature, top-k, top-p, repetition
// penalty), seeded. The decoder reuses the model's layers; only attention reads keys and values from the cache.
// Like the model, it calls its operations unqualified, so the same decoder runs a device model (cuda/device_ops.hpp:
// the cache in GPU memory, one-token linears as 4-bit GEMVs); sampling reads the logits on the host.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "core/check.hpp"
#include "nn/llama.hpp"
#include "nn/storage.hpp"

namespace loralab::nn {

// ---- the decoder's own operations on host storage (the device's are in include/cuda/device_ops.hpp) ----------------

/// cache rows [row0, row0 + rows.rows()) = rows.
template <class S>
void write_rows(matrix<S>& cache, Eigen::Index row0, const matrix<S>& rows) {
  cache.middleRows(row0, rows.rows()) = rows;
}

/// att (M, H·D): the M query rows of q, at positions pos0 … pos0 + M − 1, attending causally to the cached keys and
/// values of positions 0 … pos0 + M − 1 (grouped-query heads: query head h reads kv head h / (H / Hkv)).
template <class S>
void cached_attention(const matrix<S>& q, const matrix<S>& kc, const matrix<S>& vc, int pos0, int n_heads, int n_kv_heads, matrix<S>& att) {
  const int M = int(q.rows()), H = n_heads, D = int(q.cols()) / n_heads, group = n_heads / n_kv_heads, end = pos0 + M;
  const S scale = S(1) / std::sqrt(S(D));
  att.resize(M, q.cols());
#pragma omp parallel for schedule(static) if (M * end > 4096)
  for (int hh = 0; hh < H; ++hh) {
    const int kvh = hh / group;
    const auto K = kc.block(0, Eigen::Index(kvh) * D, end, D);
    const auto V = vc.block(0, Eigen::Index(kvh) * D, end, D);
    matrix<S> s = (q.block(0, Eigen::Index(hh) * D, M, D) * K.transpose()) * scale;  // (M, end)
    for (int i = 0; i < M; ++i) {  // row i sits at position pos0 + i and sees 0 … pos0 + i
      const int seen = pos0 + i + 1;
      auto row = s.row(i);
      const S mx = row.head(seen).maxCoeff();
      row.head(seen) = (row.head(seen).array() - mx).exp();
      row.head(seen) /= row.head(seen).sum();
      row.tail(end - seen).setZero();
    }
    att.block(0, Eigen::Index(hh) * D, M, D).noalias() = s * V;
  }
}

/// out = the last n rows of x.
template <class S>
void last_rows(const matrix<S>& x, Eigen::Index n, matrix<S>& out) {
  out = x.bottomRows(n);
}

/// Keys and values of every layer for positions [0, length()): (max_seq_len, Hkv·D) per layer.
template <class Linear>
class kv_cache_decoder {
 public:
  using S = typename Linear::scalar;
  using matrix_type = typename llama_model<Linear>::matrix_type;
  static constexpr bool on_device = storage_of<Linear>::on_device;

  explicit kv_cache_decoder(llama_model<Linear>& m) : m_(m) {
    const auto& c = m.config;
    k_.resize(std::size_t(c.n_layers)), v_.resize(std::size_t(c.n_layers));
    for (auto* cache : {&k_, &v_})
      for (auto& layer : *cache) layer.resize(c.max_seq_len, c.kv_dim());
  }

  int length() const { return pos_; }
  void reset() { pos_ = 0; }
  std::size_t bytes() const { return 2 * k_.size() * bytes_of(k_.front()); }

  /// What inference holds: the model's parameters, the KV cache (as activations) and the dequantization tile.
  memory_report memory() const {
    const memory_report model = m_.measured_memory();
    memory_report r;
    r.weights = model.weights, r.quant_stats = model.quant_stats, r.adapters = model.adapters, r.grads = model.grads;
    r.activations = bytes();
    r.workspace = bytes_of(m_.shared_buffers().tile);
    return r;
  }

  /// Feeds `tokens` at positions length() … and returns the logits (V) after the last one.
  /// With all_logits, logits for every fed position are kept in all_logits() (teacher forcing).
  const row_vector<S>& feed(std::span<const int> tokens, bool all_logits = false) {
    const auto& c = m_.config;
    const int M = int(tokens.size());
    LORALAB_CHECK(M > 0, "feed: no tokens");
    LORALAB_CHECK(pos_ + M <= c.max_seq_len, "the context is full: ", pos_, " + ", M, " tokens exceed max_seq_len ",
                  c.max_seq_len);
    for (int t : tokens) LORALAB_CHECK(t >= 0 && t < c.vocab_size, "token id ", t, " outside the vocabulary of ", c.vocab_size);
    std::vector<int> pos(static_cast<std::size_t>(M));
    std::iota(pos.begin(), pos.end(), pos_);
    matrix_type x, n, q, k, v, att, t, gate, up, h;
    typename llama_model<Linear>::vector_type rstd;
    embedding_forward(m_.embed, std::vector<int>(tokens.begin(), tokens.end()), x);
    const S eps = S(c.rms_norm_eps);
    for (std::size_t l = 0; l < m_.layers.size(); ++l) {
      const auto& blk = m_.layers[l];
      rms_norm_forward(x, blk.input_layernorm.g, eps, n, rstd);
      blk.q_proj.forward(n, q), blk.k_proj.forward(n, k), blk.v_proj.forward(n, v);
      apply_rotary(q, c.n_heads, m_.rope(), pos);
      apply_rotary(k, c.n_kv_heads, m_.rope(), pos);
      write_rows(k_[l], pos_, k);
      write_rows(v_[l], pos_, v);
      cached_attention(q, k_[l], v_[l], pos_, c.n_heads, c.n_kv_heads, att);
      blk.o_proj.forward(att, t);
      add_into(x, t);
      rms_norm_forward(x, blk.post_attention_layernorm.g, eps, n, rstd);
      blk.gate_proj.forward(n, gate), blk.up_proj.forward(n, up);
      swiglu_forward(gate, up, h);
      blk.down_proj.forward(h, t);
      add_into(x, t);
    }
    pos_ += M;
    matrix_type last;
    last_rows(x, all_logits ? M : 1, last);
    rms_norm_forward(last, m_.final_norm.g, eps, n, rstd);
    if (c.tie_word_embeddings) tied_head_forward(n, m_.embed, logits_all_);
    else m_.lm_head.forward(n, logits_all_);
    if constexpr (on_device) host_logits_ = logits_all_.to_host();
    logits_ = this->all_logits().bottomRows(1);
    return logits_;
  }

  /// (positions fed by the last feed(…, true), V), in host memory.
  const matrix<S>& all_logits() const {
    if constexpr (on_device) return host_logits_;
    else return logits_all_;
  }

 private:
  llama_model<Linear>& m_;
  std::vector<matrix_type> k_, v_;
  int pos_ = 0;
  matrix_type logits_all_;
  matrix<S> host_logits_;  // on a device: logits_all_ copied for sampling and scoring
  row_vector<S> logits_;
};

// ---- sampling -----------------------------------------------------------------------------------------------------

struct sampling_options {
  float temperature = 0.0f;         ///< 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;                    ///< keep the k most likely tokens (0 = all)
  float top_p = 1.0f;               ///< keep the smallest set whose probability reaches p (1 = all)
  float repetition_penalty = 1.0f;  ///< CTRL / HF: a seen token's logit is divided (if > 0) or multiplied by it

  void validate() const {
    LORALAB_CHECK(temperature >= 0, "--temperature must be >= 0, got ", temperature);
    LORALAB_CHECK(top_k >= 0, "--top-k must be >= 0, got ", top_k);
    LORALAB_CHECK(top_p > 0 && top_p <= 1, "--top-p must be in (0, 1], got ", top_p);
    LORALAB_CHECK(repetition_penalty > 0, "--repetition-penalty must be > 0, got ", repetition_penalty);
  }
};

/// Picks the next token from logits (V), given the tokens so far (for the repetition penalty).
template <class S>
int sample_token(const row_vector<S>& logits_in, std::span<const int> history, const sampling_options& o, std::mt19937_64& rng) {
  std::vector<double> z(logits_in.data(), logits_in.data() + logits_in.size());
  if (o.repetition_penalty != 1.0f) {
    std::vector<char> seen(z.size(), 0);
    for (int t : history)
      if (t >= 0 && std::size_t(t) < z.size() && !seen[std::size_t(t)]) {
        seen[std::size_t(t)] = 1;
        double& l = z[std::size_t(t)];
        l = l > 0 ? l / o.repetition_penalty : l * o.repetition_penalty;
      }
  }
  if (o.temperature == 0.0f) return int(std::max_element(z.begin(), z.end()) - z.begin());
  std::vector<int> ids(z.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return z[std::size_t(a)] > z[std::size_t(b)]; });
  std::size_t keep = o.top_k > 0 ? std::min<std::size_t>(std::size_t(o.top_k), ids.size()) : ids.size();
  std::vector<double> p(keep);
  const double mx = z[std::size_t(ids[0])];
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((z[std::size_t(ids[i])] - mx) / o.temperature);
  for (auto& v : p) v /= sum;
  if (o.top_p < 1.0f) {  // nucleus: the smallest prefix reaching top_p (at least one token)
    double cum = 0;
    std::size_t n = 0;
    while (n < keep && cum < o.top_p) cum += p[n++];
    keep = std::max<std::size_t>(n, 1);
    p.resize(keep);
    sum = std::accumulate(p.begin(), p.end(), 0.0);
    for (auto& v : p) v /= sum;
  }
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  double cum = 0;
  for (std::size_t i = 0; i < keep; ++i)
    if ((cum += p[i]) > u) return ids[i];
  return ids[keep - 1];
}

struct generation_options {
  int max_new_tokens = 256;
  sampling_options sampling;
  std::uint64_t seed = 42;
  std::vector<int> stop_ids;  ///< generation ends when one of these is produced (it is not emitted)
  /// Asked after each new token with the tokens so far: true ends generation (e.g. a template's end marker
  /// appeared in the decoded text). Empty: never.
  std::function<bool(const std::vector<int>&)> stop_when;
};

/// Feeds the prompt, then samples up to max_new_tokens (fewer at a stop id or a full context), calling
/// on_token(id) for each new token as it is produced. Returns the new tokens.
template <class Linear>
std::vector<int> generate(llama_model<Linear>& m, std::span<const int> prompt, const generation_options& o,
                          const std::function<void(int)>& on_token = {}) {
  LORALAB_CHECK(!prompt.empty(), "generate: the prompt has no tokens (start from BOS)");
  LORALAB_CHECK(int(prompt.size()) <= m.config.max_seq_len, "generate: the prompt has ", prompt.size(),
                " tokens, longer than the context of ", m.config.max_seq_len);
  o.sampling.validate();
  kv_cache_decoder<Linear> dec(m);
  std::mt19937_64 rng(o.seed);
  std::vector<int> history(prompt.begin(), prompt.end()), out;
  const row_vector<typename Linear::scalar>* logits = &dec.feed(prompt);
  while (int(out.size()) < o.max_new_tokens) {
    const int next = sample_token(*logits, history, o.sampling, rng);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
    out.push_back(next), history.push_back(next);
    if (on_token) on_token(next);
    if (o.stop_when && o.stop_when(out)) break;
    if (dec.length() >= m.config.max_seq_len) break;
    const int one[1] = {next};
    logits = &dec.feed(one);
  }
  return out;
}

}  // namespace loralab::nn

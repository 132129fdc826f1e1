// SPDX-License-Identifier: MIT
#pragma once
// A LoRA adapter over any linear layer of include/nn/ (Hu et al. 2021; PEFT lora.Linear / lora.bnb.Linear4bit):
//
//   y = base(x) + s · (dropout(x) Aᵀ) Bᵀ        A (r, K), B (N, r), s = alpha/r (alpha/√r with rsLoRA)
//
// The base may be dense or quantized; it stays frozen. Backward gives dA, dB and dx through the (dequantized)
// base. The adapter is float32 (or double in gradient checks) whatever the base stores. Dropout masks come
// from a counter-based hash of (seed, element), so recomputing a block under gradient checkpointing draws
// the same mask.
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "core/check.hpp"
#include "lora/lora_config.hpp"
#include "nn/linear.hpp"
#include "nn/memory_report.hpp"

namespace loralab::lora {

/// splitmix64: a uniform double in [0, 1) from (seed, index), the same on every run and thread.
inline double hash_uniform(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53;
}

template <class S>
struct lora_adapter {
  nn::matrix<S> A, B;    // A (r, K), B (N, r)
  nn::matrix<S> dA, dB;  // gradients, same shapes
  S scaling = 1;
  double dropout = 0;
  std::uint64_t dropout_seed = 0;  // set per step by the trainer; training mode when dropout > 0 and training
  bool training = true;

  int rank() const { return int(A.rows()); }
  std::size_t param_bytes() const { return nn::bytes_of(A) + nn::bytes_of(B); }
  std::size_t grad_bytes() const { return nn::bytes_of(dA) + nn::bytes_of(dB); }
};

/// Initialises an adapter as PEFT does: A kaiming-uniform (bound 1/√K) or gaussian (std 1/r), B zero, so the
/// adapter is a no-op at step 0.
template <class S>
lora_adapter<S> make_adapter(const lora_config& c, Eigen::Index n, Eigen::Index k, std::mt19937_64& rng) {
  c.validate();
  lora_adapter<S> a;
  a.A.resize(c.r, k);
  if (c.init == lora_init::kaiming_uniform) {
    std::uniform_real_distribution<double> u(-1.0 / std::sqrt(double(k)), 1.0 / std::sqrt(double(k)));
    for (Eigen::Index i = 0; i < a.A.size(); ++i) a.A.data()[i] = S(u(rng));
  } else {
    std::normal_distribution<double> g(0.0, 1.0 / c.r);
    for (Eigen::Index i = 0; i < a.A.size(); ++i) a.A.data()[i] = S(g(rng));
  }
  a.B = nn::matrix<S>::Zero(n, c.r);
  a.dA = nn::matrix<S>::Zero(c.r, k);
  a.dB = nn::matrix<S>::Zero(n, c.r);
  a.scaling = S(c.scaling());
  a.dropout = c.dropout;
  return a;
}

/// A linear layer with an optional adapter. It is-a Base, so a model sees the same weight, tile and memory
/// accounting; forward and backward add the adapter's branch when one is attached and not merged.
template <class Base>
struct lora_linear : Base {
  using base_type = Base;
  using scalar = typename Base::scalar;
  using S = scalar;
  std::optional<lora_adapter<S>> adapter;
  bool merged = false;  ///< the adapter's update is inside the base weight: forward skips the branch

  void forward(const nn::matrix<S>& x, nn::matrix<S>& y) const {
    Base::forward(x, y);
    if (!active()) return;
    const auto& a = *adapter;
    if (dropping()) {
      const auto xd = dropped(x);
      h_.noalias() = xd * a.A.transpose();  // (M, r)
    } else {
      h_.noalias() = x * a.A.transpose();
    }
    y.noalias() += (h_ * a.B.transpose()) * a.scaling;
  }

  /// dx = dy W + dropout'(s · dy B A); dB += s dyᵀ h, dA += s (dy B)ᵀ dropout(x). Needs the forward of this x.
  void backward(const nn::matrix<S>& x, const nn::matrix<S>& dy, nn::matrix<S>& dx) {
    Base::backward(x, dy, dx);
    if (!active()) return;
    auto& a = *adapter;
    dh_.noalias() = (dy * a.B) * a.scaling;  // (M, r)
    if (dropping()) {
      const auto xd = dropped(x);  // recomputed (same mask): nothing of the forward is kept but h
      h_.noalias() = xd * a.A.transpose();
      a.dB.noalias() += (dy.transpose() * h_) * a.scaling;
      a.dA.noalias() += dh_.transpose() * xd;
      auto g = scratch_map(x.rows(), x.cols());  // the dropped input is spent: its buffer takes dh A
      g.noalias() = dh_ * a.A;
      masked_add(g.data(), dx.data(), g.size());
    } else {
      h_.noalias() = x * a.A.transpose();  // recomputed: cheap (M·K·r) and keeps forward free of saved state
      a.dB.noalias() += (dy.transpose() * h_) * a.scaling;
      a.dA.noalias() += dh_.transpose() * x;
      dx.noalias() += dh_ * a.A;
    }
  }

  bool active() const { return adapter.has_value() && !merged; }

  /// The (M, K) buffer of dropout: the dropped input, then in backward the gradient through the mask. It is spent
  /// within each call, so a model points every layer at one buffer (llama_model::init_runtime): one (M, max K)
  /// for the whole model instead of one per adapted linear (PEFT's autograd keeps dropout(x) per linear).
  std::vector<S>* shared_scratch = nullptr;

  /// What a step over M tokens will hold for the adapter (analytic: rank, shapes). The dropout buffer is apart
  /// (planned_scratch_elements): shared, the model counts it once.
  nn::memory_report planned_adapter_memory(std::size_t M) const {
    nn::memory_report m;
    if (!adapter) return m;
    const std::size_t r = std::size_t(adapter->rank()), K = std::size_t(this->in_features()), N = std::size_t(this->out_features());
    m.adapters = m.grads = sizeof(S) * r * (K + N);
    m.workspace = sizeof(S) * 2 * M * r + (shared_scratch ? 0 : sizeof(S) * planned_scratch_elements(M));
    return m;
  }
  /// Elements of the dropout buffer a step over M tokens needs (0 without dropout).
  std::size_t planned_scratch_elements(std::size_t M) const {
    return adapter && adapter->dropout > 0 && adapter->training ? M * std::size_t(this->in_features()) : 0;
  }

  /// Adapter memory: parameters, gradients, and the (M, r) scratch of the last step (+ its own dropout buffer
  /// when no model shares one).
  nn::memory_report adapter_memory() const {
    nn::memory_report m;
    if (adapter) m.adapters = adapter->param_bytes(), m.grads = adapter->grad_bytes();
    m.workspace = nn::bytes_of(h_) + nn::bytes_of(dh_) + own_scratch_.capacity() * sizeof(S);
    return m;
  }

 private:
  bool dropping() const { return adapter->dropout > 0 && adapter->training; }

  /// The dropout buffer as an (rows, cols) matrix, grown (to exactly the size asked) when too small.
  Eigen::Map<nn::matrix<S>> scratch_map(Eigen::Index rows, Eigen::Index cols) const {
    std::vector<S>& v = shared_scratch ? *shared_scratch : own_scratch_;
    const std::size_t n = std::size_t(rows * cols);
    if (v.size() < n) v = std::vector<S>(n);
    return Eigen::Map<nn::matrix<S>>(v.data(), rows, cols);
  }

  /// x with the adapter's dropout applied (inverted dropout: kept values scaled by 1/(1-p)), in the buffer.
  Eigen::Map<nn::matrix<S>> dropped(const nn::matrix<S>& x) const {
    auto xd = scratch_map(x.rows(), x.cols());
    const S keep = S(1) / S(1 - adapter->dropout);
    const S* in = x.data();
    S* out = xd.data();
    visit_mask(x.size(), [&](Eigen::Index i, bool drop) { out[i] = drop ? S(0) : in[i] * keep; });
    return xd;
  }
  /// dx += mask ⊙ g / (1-p): the gradient through the same mask.
  void masked_add(const S* g, S* dx, Eigen::Index n) const {
    const S keep = S(1) / S(1 - adapter->dropout);
    visit_mask(n, [&](Eigen::Index i, bool drop) { if (!drop) dx[i] += g[i] * keep; });
  }
  /// f(i, dropped?) for every element. The mask is a pure function of (seed, i), so the loop runs in parallel
  /// (single-threaded it was a third of a 30M LoRA step) with the same result on any thread count.
  template <class F>
  void visit_mask(Eigen::Index n, F&& f) const {
    const std::uint64_t seed = adapter->dropout_seed;
    const double p = adapter->dropout;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (Eigen::Index i = 0; i < n; ++i) f(i, hash_uniform(seed, std::uint64_t(i)) < p);
  }

  mutable nn::matrix<S> h_, dh_;
  mutable std::vector<S> own_scratch_;
};

}  // namespace loralab::lora

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
    const nn::matrix<S>& xd = dropped(x);
    h_.noalias() = xd * a.A.transpose();  // (M, r)
    y.noalias() += (h_ * a.B.transpose()) * a.scaling;
  }

  /// dx = dy W + dropout'(s · dy B A); dB += s dyᵀ h, dA += s (dy B)ᵀ dropout(x). Needs the forward of this x.
  void backward(const nn::matrix<S>& x, const nn::matrix<S>& dy, nn::matrix<S>& dx) {
    Base::backward(x, dy, dx);
    if (!active()) return;
    auto& a = *adapter;
    const nn::matrix<S>& xd = dropped(x);
    h_.noalias() = xd * a.A.transpose();  // recomputed: cheap (M·K·r) and keeps forward free of saved state
    a.dB.noalias() += (dy.transpose() * h_) * a.scaling;
    dh_.noalias() = (dy * a.B) * a.scaling;  // (M, r)
    a.dA.noalias() += dh_.transpose() * xd;
    if (a.dropout > 0 && a.training) {
      dxd_.noalias() = dh_ * a.A;
      apply_mask(dxd_);
      dx += dxd_;
    } else {
      dx.noalias() += dh_ * a.A;
    }
  }

  bool active() const { return adapter.has_value() && !merged; }

  /// What a step over M tokens will hold for the adapter (analytic: rank, shapes, dropout).
  nn::memory_report planned_adapter_memory(std::size_t M) const {
    nn::memory_report m;
    if (!adapter) return m;
    const std::size_t r = std::size_t(adapter->rank()), K = std::size_t(this->in_features()), N = std::size_t(this->out_features());
    m.adapters = m.grads = sizeof(S) * r * (K + N);
    m.workspace = sizeof(S) * 2 * M * r + (adapter->dropout > 0 && adapter->training ? sizeof(S) * 2 * M * K : 0);
    return m;
  }

  /// Adapter memory: parameters, gradients, and the (M, r)/(M, K) scratch of the last step.
  nn::memory_report adapter_memory() const {
    nn::memory_report m;
    if (adapter) m.adapters = adapter->param_bytes(), m.grads = adapter->grad_bytes();
    m.workspace = nn::bytes_of(h_) + nn::bytes_of(dh_) + nn::bytes_of(xd_) + nn::bytes_of(dxd_);
    return m;
  }

 private:
  /// x, or x with the adapter's dropout applied (inverted dropout: kept values scaled by 1/(1-p)).
  const nn::matrix<S>& dropped(const nn::matrix<S>& x) const {
    const auto& a = *adapter;
    if (!(a.dropout > 0 && a.training)) return x;
    xd_.resize(x.rows(), x.cols());
    masked(x.data(), xd_.data(), x.size());
    return xd_;
  }
  void apply_mask(nn::matrix<S>& m) const { masked(m.data(), m.data(), m.size()); }
  /// out[i] = 0 where element i is dropped, in[i]/(1-p) elsewhere. The mask is a pure function of (seed, i), so
  /// the loop runs in parallel (it was a third of a 30M LoRA step single-threaded) with the same result.
  void masked(const S* in, S* out, Eigen::Index n) const {
    const auto& a = *adapter;
    const S keep = S(1) / S(1 - a.dropout);
#pragma omp parallel for schedule(static) if (n > (1 << 15))
    for (Eigen::Index i = 0; i < n; ++i)
      out[i] = hash_uniform(a.dropout_seed, std::uint64_t(i)) < a.dropout ? S(0) : in[i] * keep;
  }

  mutable nn::matrix<S> h_, dh_, xd_, dxd_;
};

}  // namespace loralab::lora

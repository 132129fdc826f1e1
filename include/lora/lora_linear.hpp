// SPDX-License-Identifier: MIT
#pragma once
// A LoRA adapter over any linear layer of include/nn/ (Hu et al. 2021; PEFT lora.Linear / lora.bnb.Linear4bit):
//
//   y = base(x) + s · (dropout(x) Aᵀ) Bᵀ        A (r, K), B (N, r), s = alpha/r (alpha/√r with rsLoRA)
//
// The base may be dense or quantized; it stays frozen. Backward gives dA, dB and dx through the (dequantized)
// base. The adapter is float32 (or double in gradient checks) whatever the base stores. Dropout masks come
// from a counter-based hash of (seed, element), so recomputing a block under gradient checkpointing draws
// the same mask. The rank is a run-time value (dynamic_rank, the default) or a template parameter, as Eigen's sizes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "lora/dropout_mask.hpp"
#include "lora/lora_config.hpp"
#include "nn/linear.hpp"
#include "nn/memory_report.hpp"
#include "nn/storage.hpp"

namespace loralab::lora {

/// out[i] = mᵢ·in[i] (Accumulate: out[i] += mᵢ·in[i]) for i in [begin, end), where mᵢ = 0 when element i is dropped
/// (hash_bits53(seed, i + first) < threshold) and `keep` = 1/(1-p) otherwise. `first` is the index of element 0 in
/// the whole batch (rows a replica runs apart keep the masks they have in the batch). Plain pointers and one loop:
/// vectorized.
template <bool Accumulate, class S>
void apply_dropout_mask(const S* __restrict in, S* __restrict out, std::int64_t begin, std::int64_t end, std::uint64_t seed,
                        std::uint64_t threshold, S keep, std::uint64_t first = 0) {
#pragma omp simd
  for (std::int64_t i = begin; i < end; ++i) {
    const S m = dropout_factor(seed, std::uint64_t(i) + first, threshold, keep);
    if constexpr (Accumulate) out[i] += m * in[i];
    else out[i] = m * in[i];
  }
}

/// The rank of an adapter chosen at run time (lora_config::r), as Eigen's Dynamic: lora_linear<Base> is
/// lora_linear<Base, dynamic_rank>. A fixed rank (lora_linear<Base, 8>) puts r into the types of A, B and the
/// (M, r) scratch, like Eigen's fixed sizes next to Dynamic; a model of that type takes adapters of rank 8 only.
inline constexpr int dynamic_rank = Eigen::Dynamic;

/// "8", or "dynamic_rank".
inline std::string rank_label(int rank) { return rank == dynamic_rank ? std::string("dynamic_rank") : std::to_string(rank); }

namespace detail {
/// A matrix whose rows or columns are the rank: fixed when Rank is. Eigen wants a one-column matrix column-major
/// (and a one-row matrix row-major); both hold the same bytes in the same order as the row-major dynamic type.
template <class S, int Rows, int Cols>
using rank_matrix = Eigen::Matrix<S, Rows, Cols, (Cols == 1 && Rows != 1) ? Eigen::ColMajor : Eigen::RowMajor>;
}  // namespace detail

/// One adapter: A (r, K), B (N, r), their gradients and settings.
/// \tparam S     float (training) or double (gradient checks)
/// \tparam Rank  r fixed at compile time, or dynamic_rank (the default: r from lora_config at run time)
template <class S, int Rank = dynamic_rank>
struct lora_adapter {
  static_assert(Rank == dynamic_rank || Rank > 0,
                "lora_adapter<S, Rank> / lora_linear<Base, Rank>: Rank must be > 0 (PEFT rejects r <= 0), "
                "or dynamic_rank for a rank chosen at run time");
  static constexpr int fixed_rank = Rank;
  using a_matrix = detail::rank_matrix<S, Rank, Eigen::Dynamic>;  // (r, K)
  using b_matrix = detail::rank_matrix<S, Eigen::Dynamic, Rank>;  // (N, r)
  using h_matrix = detail::rank_matrix<S, Eigen::Dynamic, Rank>;  // (M, r): x Aᵀ and s·dy B

  a_matrix A, dA;  // A (r, K) and its gradient
  b_matrix B, dB;  // B (N, r) and its gradient
  S scaling = 1;
  double dropout = 0;
  std::uint64_t dropout_seed = 0;  // set per step by the trainer; training mode when dropout > 0 and training
  std::int64_t dropout_first_row = 0;  // the row (token) of the batch this model's row 0 is: masks follow the batch
  bool training = true;

  int rank() const { return int(A.rows()); }
  std::size_t param_bytes() const { return nn::bytes_of(A) + nn::bytes_of(B); }
  std::size_t grad_bytes() const { return nn::bytes_of(dA) + nn::bytes_of(dB); }

  /// What the adapter holds now: parameters (the adapters category) and their gradients.
  nn::memory_report memory() const {
    nn::memory_report m;
    m.adapters = param_bytes(), m.grads = grad_bytes();
    return m;
  }
  /// What a step over M tokens of an (N, K) layer holds for the adapter, from its rank: A and B, their
  /// gradients, and the two (M, r) scratch matrices of the layer. The dropout buffer is apart (dropout_elements).
  nn::memory_report planned_memory(std::size_t M, std::size_t K, std::size_t N) const {
    const std::size_t r = std::size_t(rank());
    nn::memory_report m;
    m.adapters = m.grads = sizeof(S) * r * (K + N);
    m.workspace = sizeof(S) * 2 * M * r;
    return m;
  }
  /// Elements of the (M, K) dropout buffer a step over M tokens needs: 0 without dropout or in eval mode.
  std::size_t dropout_elements(std::size_t M, std::size_t K) const { return dropout > 0 && training ? M * K : 0; }
};

/// Checks that an adapter of rank r fits an adapter type of rank Rank; `where` says whose r it is (a config, a
/// file's key). A fixed-rank type takes its own rank only.
template <int Rank>
void check_rank(int r, const std::string& type_name, const std::string& where = "") {
  if constexpr (Rank != dynamic_rank)
    if (r != Rank)
      fail(where, where.empty() ? "" : ": ", "LoRA rank ", r, " does not match the model's fixed rank ", Rank, " (", type_name,
           "); use dynamic_rank for run-time ranks");
}

/// Initialises an adapter as PEFT does: A kaiming-uniform (bound 1/√K) or gaussian (std 1/r), B zero, so the
/// adapter is a no-op at step 0. The values do not depend on Rank: a fixed-rank adapter equals the dynamic one.
template <class S, int Rank = dynamic_rank>
lora_adapter<S, Rank> make_adapter(const lora_config& c, Eigen::Index n, Eigen::Index k, std::mt19937_64& rng) {
  c.validate();
  check_rank<Rank>(c.r, "lora_adapter<S, " + rank_label(Rank) + ">");
  lora_adapter<S, Rank> a;
  a.A.resize(c.r, k);
  if (c.init == lora_init::kaiming_uniform) {
    std::uniform_real_distribution<double> u(-1.0 / std::sqrt(double(k)), 1.0 / std::sqrt(double(k)));
    for (Eigen::Index i = 0; i < a.A.size(); ++i) a.A.data()[i] = S(u(rng));
  } else {
    std::normal_distribution<double> g(0.0, 1.0 / c.r);
    for (Eigen::Index i = 0; i < a.A.size(); ++i) a.A.data()[i] = S(g(rng));
  }
  a.B = lora_adapter<S, Rank>::b_matrix::Zero(n, c.r);
  a.dA = lora_adapter<S, Rank>::a_matrix::Zero(c.r, k);
  a.dB = lora_adapter<S, Rank>::b_matrix::Zero(n, c.r);
  a.scaling = S(c.scaling());
  a.dropout = c.dropout;
  return a;
}

/// A linear layer with an optional adapter. It is-a Base, so a model sees the same weight, tile and memory
/// accounting; forward and backward add the adapter's branch when one is attached and not merged, and the memory
/// questions every linear answers (memory, planned_memory, planned_shared) add the adapter's part.
/// \tparam Base  an nn::linear<Weight> (dense, bf16 or quantized), frozen
/// \tparam Rank  the adapter's rank fixed at compile time, or dynamic_rank (default)
template <class Base, int Rank = dynamic_rank>
struct lora_linear : Base {
  using base_type = Base;
  using scalar = typename Base::scalar;
  using S = scalar;
  using adapter_type = lora_adapter<S, Rank>;
  static constexpr int fixed_rank = Rank;
  std::optional<adapter_type> adapter;
  bool merged = false;  ///< the adapter's update is inside the base weight: forward skips the branch

  /// "lora_linear<linear<quant_weight<nf4-b64>>, 8>": for messages.
  static std::string type_name() {
    return "lora_linear<linear<" + Base::weight_type::label() + ">, " + rank_label(Rank) + ">";
  }

  /// Where the activations live (nn/storage.hpp): host matrices, or a device's. On a device the base computes the
  /// adapter's branch too (Base::adapter_forward / adapter_backward, the same formulas in kernels); `adapter`
  /// stays here in host memory either way: what the optimizer, the checkpoints and PEFT's files see.
  using matrix_type = typename nn::storage_of<Base>::matrix_type;
  static constexpr bool on_device = nn::storage_of<Base>::on_device;

  void forward(const matrix_type& x, matrix_type& y) const {
    Base::forward(x, y);
    if (!active()) return;
    if constexpr (on_device) {
      Base::adapter_forward(*adapter, x, y);
    } else {
      host_forward(x, y);
    }
  }

  /// dx = dy W + dropout'(s · dy B A); dB += s dyᵀ h, dA += s (dy B)ᵀ dropout(x). Needs the forward of this x.
  void backward(const matrix_type& x, const matrix_type& dy, matrix_type& dx) {
    Base::backward(x, dy, dx);
    if (!active()) return;
    if constexpr (on_device) {
      Base::adapter_backward(*adapter, x, dy, dx);
    } else {
      host_backward(x, dy, dx);
    }
  }

  bool active() const { return adapter.has_value() && !merged; }

 private:
  void host_forward(const nn::matrix<S>& x, nn::matrix<S>& y) const {
    const auto& a = *adapter;
    const core::serial_blas_if_small small(double(x.rows()), double(a.A.rows()), double(std::max(x.cols(), y.cols())));
    if (dropping()) {
      const auto xd = dropped(x);
      h_.noalias() = xd * a.A.transpose();  // (M, r)
    } else {
      h_.noalias() = x * a.A.transpose();
    }
    y.noalias() += a.scaling * (h_ * a.B.transpose());  // s · (h Bᵀ): the scaling is the GEMM's alpha, no temporary
  }

  void host_backward(const nn::matrix<S>& x, const nn::matrix<S>& dy, nn::matrix<S>& dx) {
    auto& a = *adapter;
    const core::serial_blas_if_small small(double(x.rows()), double(a.A.rows()), double(std::max(x.cols(), dy.cols())));
    dh_.noalias() = a.scaling * (dy * a.B);  // (M, r)
    if (dropping()) {
      const auto xd = dropped(x);  // recomputed (same mask): nothing of the forward is kept but h
      h_.noalias() = xd * a.A.transpose();
      a.dB.noalias() += a.scaling * (dy.transpose() * h_);
      a.dA.noalias() += dh_.transpose() * xd;
      auto g = scratch_map(x.rows(), x.cols());  // the dropped input is spent: its buffer takes dh A
      g.noalias() = dh_ * a.A;
      masked_add(g.data(), dx.data(), g.rows(), g.cols());
    } else {
      h_.noalias() = x * a.A.transpose();  // recomputed: cheap (M·K·r) and keeps forward free of saved state
      a.dB.noalias() += a.scaling * (dy.transpose() * h_);
      a.dA.noalias() += dh_.transpose() * x;
      dx.noalias() += dh_ * a.A;
    }
  }

 public:

  // ---- memory: the base's answers plus the adapter's -------------------------------------------------------------
  // The (M, K) dropout buffer holds the dropped input, then in backward the gradient through the mask. It is spent
  // within each call, so a model shares one among its layers (nn::shared_workspace::scratch): one (M, max K) for
  // the whole model instead of one per adapted linear (PEFT's autograd keeps dropout(x) per linear).

  /// Held now: the base's bytes, the adapter's parameters and gradients, the (M, r) scratch of the last step, and
  /// the layer's own dropout buffer when no model shares one.
  nn::memory_report memory() const {
    nn::memory_report m = Base::memory();
    if (adapter) m = m + adapter->memory();
    m.workspace += nn::bytes_of(h_) + nn::bytes_of(dh_) + own_scratch_.capacity() * sizeof(S);
    return m;
  }
  /// Planned for a step over M tokens: the base's, and the adapter's from its rank (+ its own dropout buffer when
  /// not shared).
  nn::memory_report planned_memory(std::size_t M) const {
    nn::memory_report m = Base::planned_memory(M);
    if (!adapter) return m;
    const std::size_t K = std::size_t(this->in_features()), N = std::size_t(this->out_features());
    m = m + adapter->planned_memory(M, K, N);
    if (!this->shared) m.workspace += sizeof(S) * adapter->dropout_elements(M, K);
    return m;
  }
  /// The shared buffers a step over M tokens uses: the base's tile, and the adapter's dropout buffer.
  nn::shared_sizes planned_shared(std::size_t M) const {
    nn::shared_sizes n = Base::planned_shared(M);
    // (on a device the backward keeps the dropped input and the gradient through the mask side by side: twice)
    if (adapter)
      n.scratch = std::max(n.scratch, (on_device ? 2 : 1) * adapter->dropout_elements(M, std::size_t(this->in_features())));
    return n;
  }

 private:
  bool dropping() const { return adapter->dropout > 0 && adapter->training; }

  /// The dropout buffer as an (rows, cols) matrix, grown (to exactly the size asked) when too small.
  Eigen::Map<nn::matrix<S>> scratch_map(Eigen::Index rows, Eigen::Index cols) const {
    std::vector<S>& v = this->shared ? this->shared->scratch : own_scratch_;
    const std::size_t n = std::size_t(rows * cols);
    if (v.size() < n) v = std::vector<S>(n);
    return Eigen::Map<nn::matrix<S>>(v.data(), rows, cols);
  }

  /// x with the adapter's dropout applied (inverted dropout: kept values scaled by 1/(1-p)), in the buffer.
  Eigen::Map<nn::matrix<S>> dropped(const nn::matrix<S>& x) const {
    auto xd = scratch_map(x.rows(), x.cols());
    mask_in_chunks<false>(x.data(), xd.data(), x.rows(), x.cols());
    return xd;
  }
  /// dx += mask ⊙ g / (1-p): the gradient through the same mask.
  void masked_add(const S* g, S* dx, Eigen::Index rows, Eigen::Index cols) const { mask_in_chunks<true>(g, dx, rows, cols); }
  /// apply_dropout_mask over n elements. The mask is a pure function of (seed, i), so the chunks run in parallel
  /// with the same result on any thread count. Scalar (a double compare per element) it was a third of a 30M LoRA
  /// step single-threaded; in integers and vectorized, a few percent.
  template <bool Accumulate>
  void mask_in_chunks(const S* in, S* out, Eigen::Index rows, Eigen::Index cols) const {
    const Eigen::Index n = rows * cols;
    const std::uint64_t seed = adapter->dropout_seed, threshold = drop_threshold(adapter->dropout);
    const std::uint64_t first = std::uint64_t(adapter->dropout_first_row) * std::uint64_t(cols);
    const S keep = S(1) / S(1 - adapter->dropout);
    constexpr Eigen::Index chunk = 1 << 14;
#pragma omp parallel for schedule(static) if (n > 2 * chunk)
    for (Eigen::Index c = 0; c < n; c += chunk)
      apply_dropout_mask<Accumulate>(in, out, c, std::min(n, c + chunk), seed, threshold, keep, first);
  }

  mutable typename adapter_type::h_matrix h_, dh_;  // (M, r)
  mutable std::vector<S> own_scratch_;
};

}  // namespace loralab::lora

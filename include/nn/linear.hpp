// SPDX-License-Identifier: MIT
#pragma once
// Linear layers over a weight policy: y = x Wᵀ, W (N, K) row-major.
//
//   linear<dense_weight<float>>        a float (or double, for gradient checks) weight; trainable on request
//   linear<quant_weight<nf4<64>>>      a frozen quantized weight, dequantized tile by tile inside the product
//   linear<quant_weight<ggml_q4_1>>    the same over ggml's blocks (a GGUF tensor's bytes, kept as they are)
//   linear<bf16_weight>                a frozen bfloat16 weight (half the bytes), widened to float tile by tile
//   linear<W, compute<bf16>>           any of these with its products in bf16, float accumulation (nn/compute.hpp)
//
// All share forward(x) / backward(x, dy) and the memory questions (memory, planned_memory, planned_shared, share),
// and never allocate a gradient for a frozen weight.
#include <algorithm>
#include <span>
#include <vector>
#include <string>

#include "core/check.hpp"
#include "core/parallel.hpp"
#include "nn/bf16_gemm.hpp"
#include "nn/compute.hpp"
#include "nn/memory_report.hpp"
#include "nn/tensor.hpp"
#include "quant/quantized_tensor.hpp"

namespace loralab::nn {

/// A dense weight. The gradient buffer exists only after set_trainable(true).
template <class S>
struct dense_weight {
  using scalar = S;
  matrix<S> w;     // (N, K)
  matrix<S> grad;  // (N, K) when trainable, else empty

  bool trainable() const { return grad.size() != 0; }
  void set_trainable(bool on) {
    if (on && !trainable()) grad = matrix<S>::Zero(w.rows(), w.cols());
    if (!on) grad = matrix<S>();
  }
  std::size_t weight_bytes() const { return bytes_of(w); }
  std::size_t stats_bytes() const { return 0; }
  std::size_t grad_bytes() const { return bytes_of(grad); }
  /// (weight, statistics) bytes of an (n, k) weight of this type, from the formula.
  static constexpr std::size_t planned_weight_bytes(std::size_t n, std::size_t k) { return sizeof(S) * n * k; }
  static constexpr std::size_t planned_stats_bytes(std::size_t, std::size_t) { return 0; }
  /// The tensor a framework would list for this weight: dtype name and element count (PyTorch's p.dtype, p.numel()).
  static constexpr const char* storage_dtype = sizeof(S) == 8 ? "float64" : "float32";
  std::size_t stored_elements() const { return std::size_t(w.size()); }
  Eigen::Index rows() const { return w.rows(); }
  Eigen::Index cols() const { return w.cols(); }
  static std::string label() { return std::string("dense_weight<") + storage_dtype + ">"; }
};

/// A frozen quantized weight (compute in float32). Never trainable: QLoRA trains adapters, not the base. Every
/// scheme's storage answers the same questions (quant::quantized_storage: bitsandbytes' blockwise and int8 tensors,
/// ggml's block tensors), so nothing here asks which it is; the product dequantizes it tile by tile.
template <class Scheme>
struct quant_weight {
  using scalar = float;
  using scheme = Scheme;
  using storage = quant::quantized_tensor<Scheme>;
  storage q;
  Eigen::Index n = 0, k = 0;

  bool trainable() const { return false; }
  void set_trainable(bool on) {
    LORALAB_CHECK(!on, "a quantized weight (", quant::scheme_label<Scheme>(), ") is frozen: train an adapter instead");
  }
  /// Codes only; the per-block (per-row) statistics are counted apart (stats_bytes) as the memory report shows them.
  std::size_t weight_bytes() const { return q.storage_bytes() - stats_bytes(); }
  std::size_t stats_bytes() const { return q.stats_bytes(); }
  std::size_t grad_bytes() const { return 0; }
  static constexpr std::size_t planned_weight_bytes(std::size_t n, std::size_t k) { return storage::planned_code_bytes(n, k); }
  static constexpr std::size_t planned_stats_bytes(std::size_t n, std::size_t k) { return storage::planned_stats_bytes(n, k); }
  /// As bitsandbytes stores it: packed 4-bit and dynamic 8-bit codes are uint8 (Params4bit: two weights per
  /// element), LLM.int8() codes int8; the statistics live in the quant state, not in the parameter. ggml's blocks
  /// as GGUF lists them: type "q4_1" etc., one element per weight.
  static constexpr const char* storage_dtype = storage::storage_dtype;
  std::size_t stored_elements() const { return q.code_elements(); }
  Eigen::Index rows() const { return n; }
  Eigen::Index cols() const { return k; }
  void dequantize_rows(std::size_t r0, std::size_t r1, std::span<float> out) const { q.template dequantize_rows<float>(r0, r1, out); }
  static std::string label() { return "quant_weight<" + quant::scheme_label<Scheme>() + ">"; }
};

/// A frozen bfloat16 weight: storage in bf16, compute in float32 (each value widened exactly).
struct bf16_weight {
  using scalar = float;
  std::vector<Eigen::bfloat16> w;  // (N, K) row-major
  Eigen::Index n = 0, k = 0;

  bool trainable() const { return false; }
  void set_trainable(bool on) { LORALAB_CHECK(!on, "a bf16-stored base weight is frozen: train an adapter instead"); }
  std::size_t weight_bytes() const { return w.capacity() * sizeof(Eigen::bfloat16); }
  std::size_t stats_bytes() const { return 0; }
  std::size_t grad_bytes() const { return 0; }
  static constexpr std::size_t planned_weight_bytes(std::size_t n, std::size_t k) { return sizeof(Eigen::bfloat16) * n * k; }
  static constexpr std::size_t planned_stats_bytes(std::size_t, std::size_t) { return 0; }
  static constexpr const char* storage_dtype = "bfloat16";
  std::size_t stored_elements() const { return w.size(); }
  Eigen::Index rows() const { return n; }
  Eigen::Index cols() const { return k; }
  void dequantize_rows(std::size_t r0, std::size_t r1, std::span<float> out) const {
    LORALAB_CHECK(r0 <= r1 && r1 <= std::size_t(n) && out.size() == (r1 - r0) * std::size_t(k), "bf16 rows [", r0, ", ", r1,
                  ") of ", n, " into ", out.size(), " floats");
    std::transform(w.begin() + std::ptrdiff_t(r0 * std::size_t(k)), w.begin() + std::ptrdiff_t(r1 * std::size_t(k)), out.begin(),
                   [](Eigen::bfloat16 v) { return static_cast<float>(v); });
  }
  static std::string label() { return "bf16_weight"; }
};

/// Buffers a model lends to all its layers. Each is used within one forward or backward call and left to the
/// next layer, so a model holds one of each, sized for its largest user, instead of one per layer. A layer says
/// what it needs (planned_shared) and reserves it when the model shares the buffers with it (share).
template <class S>
struct shared_workspace {
  matrix<float> tile;      ///< (dequant_tile_rows, max K): dequantization tiles of stored (quantized, bf16) weights
  std::vector<S> scratch;  ///< per-call scratch of a layer (an adapter's dropout buffer), grown to the largest use
  std::vector<std::uint16_t> bf16;  ///< compute<bf16>: a call's input in bf16, then the weight in bf16
  std::size_t bytes() const { return bytes_of(tile) + scratch.capacity() * sizeof(S) + bf16.capacity() * sizeof(std::uint16_t); }
};

/// Elements a layer needs of each shared buffer for a step over M tokens; a model keeps the maximum of each.
struct shared_sizes {
  std::size_t tile = 0, scratch = 0, bf16 = 0;
  friend shared_sizes max(const shared_sizes& a, const shared_sizes& b) {
    return {std::max(a.tile, b.tile), std::max(a.scratch, b.scratch), std::max(a.bf16, b.bf16)};
  }
};

/// Rows of a quantized weight dequantized per tile: small enough to stay in cache, big enough for sgemm.
inline constexpr Eigen::Index dequant_tile_rows = 128;

/// Every linear layer answers the same questions, whatever it holds (a dense, bf16 or quantized weight, an adapter
/// on top): forward, backward, and its memory — held now (memory), planned for a step over M tokens
/// (planned_memory, planned_shared), and the buffers a model shares with it (share).
template <class Weight, class Compute = compute<float>>
struct linear {
  using weight_type = Weight;
  using compute_type = Compute;
  using scalar = typename Weight::scalar;
  static_assert(!is_bf16_compute<Compute> || std::same_as<scalar, float>, "compute<bf16> is for float32 layers");
  Weight weight;
  /// Buffers shared by the model's layers (nullptr: the layer keeps its own tile).
  shared_workspace<scalar>* shared = nullptr;

  Eigen::Index in_features() const { return weight.cols(); }
  Eigen::Index out_features() const { return weight.rows(); }

  /// y (M, N) = x (M, K) Wᵀ
  void forward(const matrix<scalar>& x, matrix<scalar>& y) const {
    LORALAB_CHECK(x.cols() == in_features(), "linear: input has ", x.cols(), " features, weight expects ", in_features());
    y.resize(x.rows(), out_features());
    const core::serial_blas_if_small small(double(x.rows()), double(out_features()), double(in_features()));
    if constexpr (is_bf16_compute<Compute>) {
      const Eigen::Index M = x.rows(), K = in_features(), N = out_features();
      std::uint16_t* xb = bf16_buffer(std::size_t(M * K) + bf16_weight_elements());
      to_bf16(x.data(), xb, M * K);
      gemm_bf16(M, N, K, xb, K, bf16_rows(xb + M * K), K, /*b_transposed=*/true, y.data(), N, /*accumulate=*/false);
    } else if constexpr (is_dense) {
      y.noalias() = x * weight.w.transpose();
    } else {
      for_each_tile([&](const auto& tile, Eigen::Index n0, Eigen::Index nt) {
        y.middleCols(n0, nt).noalias() = x * tile.transpose();
      });
    }
  }

  /// dx (M, K) = dy (M, N) W; if the weight is trainable, dW += dyᵀ x.
  void backward(const matrix<scalar>& x, const matrix<scalar>& dy, matrix<scalar>& dx) {
    dx.resize(dy.rows(), in_features());
    const core::serial_blas_if_small small(double(dy.rows()), double(out_features()), double(in_features()));
    if constexpr (is_bf16_compute<Compute>) {
      const Eigen::Index M = dy.rows(), K = in_features(), N = out_features();
      std::uint16_t* db = bf16_buffer(std::size_t(M * N) + bf16_weight_elements());
      to_bf16(dy.data(), db, M * N);
      gemm_bf16(M, K, N, db, N, bf16_rows(db + M * N), K, /*b_transposed=*/false, dx.data(), K, /*accumulate=*/false);
      if constexpr (is_dense)
        if (weight.trainable()) weight.grad.noalias() += dy.transpose() * x;  // the weight's gradient stays float
    } else if constexpr (is_dense) {
      dx.noalias() = dy * weight.w;
      if (weight.trainable()) weight.grad.noalias() += dy.transpose() * x;
    } else {
      dx.setZero();
      for_each_tile([&](const auto& tile, Eigen::Index n0, Eigen::Index nt) { dx.noalias() += dy.middleCols(n0, nt) * tile; });
    }
  }

  /// The weight as a dense float matrix (merging, export, tests).
  matrix<scalar> dense() const {
    if constexpr (is_dense) {
      return weight.w;
    } else {
      matrix<float> w(out_features(), in_features());
      weight.dequantize_rows(0, std::size_t(out_features()), std::span<float>(w.data(), std::size_t(w.size())));
      return w;
    }
  }

  // ---- memory: the questions a model asks every layer ----------------------------------------------------------

  /// Bytes held now: the weight (codes), its statistics, its gradient, and the layer's own tile when not shared.
  memory_report memory() const {
    memory_report m;
    m.weights = weight.weight_bytes(), m.quant_stats = weight.stats_bytes(), m.grads = weight.grad_bytes();
    m.workspace = shared ? 0 : bytes_of(own_tile) + own_bf16.capacity() * sizeof(std::uint16_t);
    return m;
  }
  /// The same from the shapes alone, for a step over M tokens (the shared buffers apart: planned_shared).
  memory_report planned_memory(std::size_t M) const {
    const std::size_t N = std::size_t(out_features()), K = std::size_t(in_features());
    memory_report m;
    m.weights = Weight::planned_weight_bytes(N, K), m.quant_stats = Weight::planned_stats_bytes(N, K);
    m.grads = weight.trainable() ? sizeof(scalar) * N * K : 0;
    m.workspace = shared ? 0 : sizeof(float) * tile_elements() + sizeof(std::uint16_t) * bf16_elements(M);
    return m;
  }
  /// What this layer uses of the shared buffers in a step over M tokens: a stored weight's dequantization tile, and
  /// with compute<bf16> its input (forward) or output gradient (backward) in bf16 plus the weight in bf16.
  shared_sizes planned_shared(std::size_t M) const { return {tile_elements(), 0, bf16_elements(M)}; }
  /// Uses the model's shared buffers from now on, and reserves the tile this layer needs there.
  void share(shared_workspace<scalar>& w) {
    shared = &w;
    if (tile_elements() && std::size_t(w.tile.size()) < tile_elements()) w.tile.resize(dequant_tile_rows, in_features());
  }

 private:
  mutable matrix<float> own_tile;
  mutable std::vector<std::uint16_t> own_bf16;

  static constexpr bool is_dense = std::same_as<Weight, dense_weight<scalar>>;
  static constexpr bool is_bf16_stored = std::same_as<Weight, bf16_weight>;

  /// compute<bf16>: bf16 elements of the weight converted for a product (all N·K: one product over the whole
  /// weight, not one per tile — the backward's dy·W then reduces over all N at once instead of accumulating a
  /// K-wide result N/128 times); none for a bf16-stored weight, whose rows are used as stored.
  std::size_t bf16_weight_elements() const {
    return is_bf16_compute<Compute> && !is_bf16_stored ? std::size_t(out_features() * in_features()) : 0;
  }
  /// compute<bf16>: the bf16 buffer a step over M tokens needs (the larger of input and output, then the weight).
  std::size_t bf16_elements(std::size_t M) const {
    if constexpr (!is_bf16_compute<Compute>) return 0;
    return M * std::size_t(std::max(in_features(), out_features())) + bf16_weight_elements();
  }
  /// The bf16 buffer (shared or the layer's own), grown to exactly n elements when smaller.
  std::uint16_t* bf16_buffer(std::size_t n) const {
    std::vector<std::uint16_t>& v = shared ? shared->bf16 : own_bf16;
    if (v.size() < n) v = std::vector<std::uint16_t>(n);
    return v.data();
  }
  /// The (N, K) rows of W in bf16: a bf16-stored weight as stored; a dense one converted into `out`; a quantized
  /// one dequantized tile by tile (float tile in cache) and each tile converted into its rows of `out`.
  const std::uint16_t* bf16_rows(std::uint16_t* out) const {
    const Eigen::Index K = in_features();
    if constexpr (is_bf16_stored) {
      static_assert(sizeof(Eigen::bfloat16) == sizeof(std::uint16_t));
      return reinterpret_cast<const std::uint16_t*>(weight.w.data());
    } else if constexpr (is_dense) {
      to_bf16(weight.w.data(), out, out_features() * K);
    } else {
      for_each_tile([&](const auto& t, Eigen::Index n0, Eigen::Index nt) { to_bf16(t.data(), out + n0 * K, nt * K); });
    }
    return out;
  }

  /// Floats of the (dequant_tile_rows, K) tile a stored weight is computed through (0 for a dense weight).
  std::size_t tile_elements() const { return is_dense ? 0 : std::size_t(dequant_tile_rows * in_features()); }

  template <class F>
  void for_each_tile(F&& f) const {
    const Eigen::Index N = out_features(), K = in_features();
    matrix<float>& buf = shared ? shared->tile : own_tile;
    if (buf.size() < std::min(dequant_tile_rows, N) * K) buf.resize(dequant_tile_rows, K);
    for (Eigen::Index n0 = 0; n0 < N; n0 += dequant_tile_rows) {
      const Eigen::Index nt = std::min(dequant_tile_rows, N - n0);
      weight.dequantize_rows(std::size_t(n0), std::size_t(n0 + nt), std::span<float>(buf.data(), std::size_t(nt * K)));
      f(Eigen::Map<const matrix<float>>(buf.data(), nt, K), n0, nt);
    }
  }
};

/// A dense linear layer from a (N, K) row-major float array.
template <class S>
linear<dense_weight<S>> make_dense_linear(const float* data, Eigen::Index n, Eigen::Index k) {
  linear<dense_weight<S>> l;
  l.weight.w = Eigen::Map<const matrix<float>>(data, n, k).template cast<S>();
  return l;
}

/// A bf16-stored linear layer from a (N, K) row-major float array (round to nearest even).
inline linear<bf16_weight> make_bf16_linear(const float* data, Eigen::Index n, Eigen::Index k) {
  linear<bf16_weight> l;
  l.weight.w.resize(std::size_t(n * k));
  std::transform(data, data + n * k, l.weight.w.begin(), [](float v) { return Eigen::bfloat16(v); });
  l.weight.n = n, l.weight.k = k;
  return l;
}

/// A quantized linear layer from a (N, K) row-major float array.
template <class Scheme>
linear<quant_weight<Scheme>> make_quant_linear(const float* data, Eigen::Index n, Eigen::Index k) {
  linear<quant_weight<Scheme>> l;
  l.weight.q = quant::quantize<Scheme>(std::span<const float>(data, std::size_t(n * k)), std::size_t(n), std::size_t(k));
  l.weight.n = n, l.weight.k = k;
  return l;
}

/// A quantized linear layer over a tensor already in its storage (a GGUF tensor's bytes wrapped as
/// quant::ggml_tensor<S>::from_bytes, a bitsandbytes checkpoint's parts), used as it is: (N, K) = (q.rows(), q.cols()).
template <class Q>
  requires quant::quantized_storage<Q>
linear<quant_weight<typename Q::scheme>> make_quant_linear(Q q) {
  linear<quant_weight<typename Q::scheme>> l;
  l.weight.n = Eigen::Index(q.rows()), l.weight.k = Eigen::Index(q.cols());
  l.weight.q = std::move(q);
  return l;
}

/// The linear layer of weight type W (dense_weight<S>, bf16_weight or quant_weight<Scheme>) and compute type C from a
/// (N, K) row-major float array: one maker for code that is generic over the weight type.
template <class W, class C = compute<float>>
linear<W, C> make_linear(const float* data, Eigen::Index n, Eigen::Index k) {
  if constexpr (!std::same_as<C, compute<float>>) {
    linear<W, C> l;
    l.weight = std::move(make_linear<W>(data, n, k).weight);
    return l;
  } else if constexpr (std::same_as<W, bf16_weight>) {
    return make_bf16_linear(data, n, k);
  } else if constexpr (requires { typename W::scheme; }) {
    return make_quant_linear<typename W::scheme>(data, n, k);
  } else {
    return make_dense_linear<typename W::scalar>(data, n, k);
  }
}

}  // namespace loralab::nn

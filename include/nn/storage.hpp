// SPDX-License-Identifier: MIT
#pragma once
// Where a model's tensors live and who computes on them: a storage policy, chosen by the linear layer type.
//
//   host_storage<S>      Eigen matrices in host memory; the layers of include/nn/ compute on them (the reference)
//   cuda::device_storage device matrices; include/cuda/ computes the same operations with the kernels of kernels/
//
// llama_model<Linear> takes its matrix, vector, rotary-table and head types from storage_of<Linear>, and calls every
// operation unqualified (rms_norm_forward, attention_backward, add_into, …): the host functions are found in nn::,
// a device storage's by argument-dependent lookup in its own namespace. One forward and backward, two executors.
// A linear layer names its storage with `using storage = …`; one that does not is on the host.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "nn/linear.hpp"
#include "nn/rotary.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

template <class S>
struct host_storage {
  using matrix_type = matrix<S>;
  using vector_type = vector<S>;
  using rotary_type = rotary_table<S>;
  using head_type = linear<dense_weight<S>>;     ///< an untied LM head
  using shared_type = shared_workspace<S>;       ///< the buffers the layers share
  static constexpr bool on_device = false;
};

namespace detail {
template <class L>
struct storage_of {
  using type = host_storage<typename L::scalar>;
};
template <class L>
  requires requires { typename L::storage; }
struct storage_of<L> {
  using type = typename L::storage;
};
}  // namespace detail

/// The storage of a linear layer type: host_storage<scalar> unless the layer names another.
template <class L>
using storage_of = typename detail::storage_of<L>::type;

// ---- the model's own operations on host storage (the device's are in include/cuda/device_ops.hpp) -------------------

/// x (B·T, C) = the embedding rows of the batch's tokens.
template <class S>
void embedding_forward(const matrix<S>& embed, const std::vector<int>& tokens, matrix<S>& x) {
  x.resize(Eigen::Index(tokens.size()), embed.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) x.row(r) = embed.row(tokens[std::size_t(r)]);
}

/// embed_grad += dx scattered to the rows of the batch's tokens (a trainable embedding).
template <class S>
void embedding_backward(const matrix<S>& dx, const std::vector<int>& tokens, matrix<S>& embed_grad) {
  for (Eigen::Index r = 0; r < dx.rows(); ++r) embed_grad.row(tokens[std::size_t(r)]) += dx.row(r);
}

/// y += x (the residual stream, gradient sums).
template <class S>
void add_into(matrix<S>& y, const matrix<S>& x) {
  y += x;
}

/// The tied LM head: logits (M, V) = x (M, C) Eᵀ.
template <class S>
void tied_head_forward(const matrix<S>& x, const matrix<S>& embed, matrix<S>& logits) {
  logits.noalias() = x * embed.transpose();
}

/// The tied LM head's backward: dx (M, C) = dlogits E; with a trainable embedding, embed_grad += dlogitsᵀ x.
template <class S>
void tied_head_backward(const matrix<S>& x, const matrix<S>& dlogits, const matrix<S>& embed, matrix<S>& dx, matrix<S>& embed_grad) {
  dx.noalias() = dlogits * embed;
  if (embed_grad.size()) embed_grad.noalias() += dlogits.transpose() * x;
}


// ---- the tied head of a compute<bf16> model (its products are the frozen base's: bf16 operands) ------------------

/// The tied head's bf16 elements in the shared buffer over M tokens: the embedding (V, C), then its input (M, C) or
/// output gradient (M, V).
inline std::size_t tied_head_bf16_elements(std::size_t V, std::size_t C, std::size_t M) { return V * C + M * std::max(C, V); }

namespace detail {
/// out = a Eᵀ (forward: a = rms_norm(x) (M, C), out = logits (M, V)) or out = a E (backward: a = dL/dlogits (M, V),
/// out = dL/d(head input) (M, C)), both operands rounded to bf16 with float accumulation. The embedding is converted
/// on every call: it may be trainable, so a copy kept from forward could be stale by the next step.
template <class S>
void tied_head_product_bf16(const matrix<S>& a, const matrix<S>& embed, matrix<S>& out, bool embed_transposed, shared_workspace<S>& shared) {
  const Eigen::Index M = a.rows(), C = embed.cols(), V = embed.rows();
  const Eigen::Index K = embed_transposed ? C : V, N = embed_transposed ? V : C;
  const std::size_t need = tied_head_bf16_elements(std::size_t(V), std::size_t(C), std::size_t(M));
  if (shared.bf16.size() < need) shared.bf16 = std::vector<std::uint16_t>(need);
  std::uint16_t* eb = shared.bf16.data();  // (V, C)
  std::uint16_t* ab = eb + embed.size();   // (M, K)
  to_bf16(embed.data(), eb, embed.size());
  to_bf16(a.data(), ab, M * K);
  out.resize(M, N);
  gemm_bf16(M, N, K, ab, K, eb, C, /*b_transposed=*/embed_transposed, out.data(), N, /*accumulate=*/false);
}
}  // namespace detail

/// logits (M, V) = bf16(x) bf16(E)ᵀ, float accumulation.
template <class S>
void tied_head_forward_bf16(const matrix<S>& x, const matrix<S>& embed, matrix<S>& logits, shared_workspace<S>& shared) {
  detail::tied_head_product_bf16(x, embed, logits, /*embed_transposed=*/true, shared);
}
/// dx (M, C) = bf16(dlogits) bf16(E); with a trainable embedding, embed_grad += dlogitsᵀ x in float.
template <class S>
void tied_head_backward_bf16(const matrix<S>& x, const matrix<S>& dlogits, const matrix<S>& embed, matrix<S>& dx, matrix<S>& embed_grad,
                             shared_workspace<S>& shared) {
  detail::tied_head_product_bf16(dlogits, embed, dx, /*embed_transposed=*/false, shared);
  if (embed_grad.size()) embed_grad.noalias() += dlogits.transpose() * x;
}

}  // namespace loralab::nn

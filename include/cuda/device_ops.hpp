// SPDX-License-Identifier: MIT
#pragma once
// The model's operations on device storage, with the signatures of their host twins in include/nn/ (rms_norm.hpp,
// rotary.hpp, attention.hpp, swiglu.hpp, cross_entropy.hpp, storage.hpp): nn::llama_model calls them unqualified and
// argument-dependent lookup finds these for device_matrix arguments. Each calls the kernel of kernels/ that the
// kernel tests check against the host function (tests/kernels).
//
// What the device does not do is refused with a clear error: trainable norms or embeddings (only adapters train on
// a device), sequences beyond the rotary table.
#include <cmath>
#include <string>
#include <vector>

#include "attention.cuh"
#include "core/check.hpp"
#include "cuda/device_tensor.hpp"
#include "layers.cuh"
#include "linear.cuh"
#include "nn/attention.hpp"
#include "nn/cross_entropy.hpp"
#include "nn/rotary.hpp"

namespace loralab::cuda {

namespace detail {
/// Scratch the operations reuse call after call (attention's dP, token ids, per-row losses): grown, never shrunk.
struct op_scratch {
  device_array<float> floats;
  device_array<int> ints;
};
inline op_scratch& scratch() {
  static op_scratch s;
  return s;
}
inline device_array<int>& upload_ids(const std::vector<int>& ids) {
  device_array<int>& d = scratch().ints;
  d.upload(std::span<const int>(ids));
  return d;
}
}  // namespace detail

// ---- RMSNorm --------------------------------------------------------------------------------------------------------

inline void rms_norm_forward(const device_matrix& x, const device_vector& g, float eps, device_matrix& y, device_vector& rstd) {
  y.resize(x.rows(), x.cols()), rstd.resize(x.rows());
  check_cuda(cuda::rms_norm_forward(x.data(), g.data(), eps, int(x.rows()), int(x.cols()), y.data(), rstd.data()), "RMSNorm forward");
}
inline void rms_norm_backward(const device_matrix& x, const device_vector& g, const device_vector& rstd, const device_matrix& dy,
                              device_matrix& dx, device_vector* dg) {
  LORALAB_CHECK(dg == nullptr, "--device cuda: norm gains are frozen there (train adapters; full fine-tuning runs on the CPU)");
  dx.resize(x.rows(), x.cols());
  check_cuda(cuda::rms_norm_backward(x.data(), g.data(), rstd.data(), dy.data(), int(x.rows()), int(x.cols()), dx.data()),
             "RMSNorm backward");
}

// ---- RoPE -----------------------------------------------------------------------------------------------------------

/// The rotary table in device memory: nn::rotary_table's cos and sin (max_pos, D/2), computed on the host (the same
/// floats), and the last positions uploaded (a step rotates q and k with the same positions in every layer).
struct device_rotary {
  int half = 0, max_pos = 0;
  device_array<float> cos, sin;
  mutable std::vector<int> pos_host;
  mutable device_array<int> pos;

  device_rotary() = default;
  device_rotary(int head_dim, int max_positions, double theta) : half(head_dim / 2), max_pos(max_positions) {
    const nn::rotary_table<float> t(head_dim, max_positions, theta);
    cos.upload(std::span<const float>(t.cos.data(), std::size_t(t.cos.size())));
    sin.upload(std::span<const float>(t.sin.data(), std::size_t(t.sin.size())));
  }
  const int* positions(const std::vector<int>& p) const {
    if (p != pos_host) pos_host = p, pos.upload(std::span<const int>(p));
    return pos.data();
  }
};

inline void apply_rotary(device_matrix& x, int n_heads, const device_rotary& rt, const std::vector<int>& pos, bool inverse = false) {
  for (int p : pos) LORALAB_CHECK(p >= 0 && p < rt.max_pos, "rotary: position ", p, " outside the table of ", rt.max_pos);
  check_cuda(cuda::rotary(x.data(), int(x.rows()), n_heads, 2 * rt.half, rt.cos.data(), rt.sin.data(), rt.positions(pos), inverse),
             "RoPE");
}

// ---- attention ------------------------------------------------------------------------------------------------------

inline attention_dims dims_of(const nn::attention_shape& a) { return {a.batch, a.seq, a.n_heads, a.n_kv_heads, a.head_dim}; }

inline void attention_forward(const nn::attention_shape& a, const device_matrix& q, const device_matrix& k, const device_matrix& v,
                              device_matrix& probs, device_matrix& out) {
  probs.resize(Eigen::Index(a.batch) * a.n_heads * a.seq, a.seq), out.resize(q.rows(), q.cols());
  check_cuda(cuda::attention_forward(context(), dims_of(a), q.data(), k.data(), v.data(), probs.data(), out.data()), "attention forward");
}
inline void attention_backward(const nn::attention_shape& a, const device_matrix& q, const device_matrix& k, const device_matrix& v,
                               const device_matrix& probs, const device_matrix& dout, device_matrix& dq, device_matrix& dk,
                               device_matrix& dv) {
  dq.resize(q.rows(), q.cols()), dk.resize(k.rows(), k.cols()), dv.resize(v.rows(), v.cols());
  device_array<float>& dP = detail::scratch().floats;
  dP.resize(std::size_t(probs.size()));
  check_cuda(cuda::attention_backward(context(), dims_of(a), q.data(), k.data(), v.data(), probs.data(), dout.data(), dP.data(),
                                      dq.data(), dk.data(), dv.data()),
             "attention backward");
}

// ---- SwiGLU ---------------------------------------------------------------------------------------------------------

inline void swiglu_forward(const device_matrix& gate, const device_matrix& up, device_matrix& h) {
  h.resize(gate.rows(), gate.cols());
  check_cuda(cuda::swiglu_forward(gate.data(), up.data(), std::size_t(gate.size()), h.data()), "SwiGLU forward");
}
inline void swiglu_backward(const device_matrix& gate, const device_matrix& up, const device_matrix& dh, device_matrix& dgate,
                            device_matrix& dup) {
  dgate.resize(gate.rows(), gate.cols()), dup.resize(up.rows(), up.cols());
  check_cuda(cuda::swiglu_backward(gate.data(), up.data(), dh.data(), std::size_t(gate.size()), dgate.data(), dup.data()),
             "SwiGLU backward");
}

// ---- cross-entropy --------------------------------------------------------------------------------------------------

/// nn::cross_entropy on the device: the same checks and denominator; the per-row losses are summed on the host in
/// row order (double), as the host sums them.
inline double cross_entropy(const device_matrix& logits, const std::vector<int>& targets, device_matrix* dlogits, int* counted = nullptr,
                            double denominator = 0) {
  const Eigen::Index M = logits.rows(), V = logits.cols();
  LORALAB_CHECK(Eigen::Index(targets.size()) == M, "cross_entropy: ", targets.size(), " targets for ", M, " rows");
  int n = 0;
  for (int t : targets) {
    LORALAB_CHECK(t == nn::ignore_index || (t >= 0 && t < V), "cross_entropy: target ", t, " outside the vocabulary of ", V);
    n += t != nn::ignore_index;
  }
  LORALAB_CHECK(n > 0, "cross_entropy: every target is the ignore index -100: nothing to learn from");
  if (counted) *counted = n;
  const float div = denominator > 0 ? float(denominator) : float(n);
  device_matrix own;
  device_matrix& d = dlogits ? *dlogits : own;
  d.resize(M, V);
  const int* t = detail::upload_ids(targets).data();
  device_array<float> row_loss{std::size_t(M)};
  check_cuda(cuda::cross_entropy(logits.data(), t, int(M), int(V), div, row_loss.data(), d.data()), "cross-entropy");
  double loss = 0;
  for (float l : row_loss.download()) loss += double(l);
  return loss / double(div);
}

// ---- the model's own operations (nn/storage.hpp) --------------------------------------------------------------------

inline void embedding_forward(const device_matrix& embed, const std::vector<int>& tokens, device_matrix& x) {
  x.resize(Eigen::Index(tokens.size()), embed.cols());
  const int* ids = detail::upload_ids(tokens).data();
  check_cuda(embedding_rows(embed.data(), ids, int(tokens.size()), int(embed.cols()), x.data()), "embedding rows");
}
[[noreturn]] inline void embedding_backward(const device_matrix&, const std::vector<int>&, device_matrix&) {
  (void)device_matrix::Zero(0, 0);  // refuses: a trainable embedding
}
inline void add_into(device_matrix& y, const device_matrix& x) {
  LORALAB_CHECK(y.rows() == x.rows() && y.cols() == x.cols(), "add: (", y.rows(), ", ", y.cols(), ") += (", x.rows(), ", ", x.cols(), ")");
  check_cuda(cuda::add_into(y.data(), x.data(), std::size_t(y.size())), "add");
}
/// logits (M, V) = x (M, C) Eᵀ.
inline void tied_head_forward(const device_matrix& x, const device_matrix& embed, device_matrix& logits) {
  const int M = int(x.rows()), C = int(x.cols()), V = int(embed.rows());
  logits.resize(M, V);
  check_cuda(gemm_rm(context(), false, true, M, V, C, 1.0f, x.data(), C, embed.data(), C, 0.0f, logits.data(), V), "LM head forward");
}
/// dx (M, C) = dlogits (M, V) E.
inline void tied_head_backward(const device_matrix&, const device_matrix& dlogits, const device_matrix& embed, device_matrix& dx,
                               device_matrix& embed_grad) {
  if (embed_grad.size()) (void)device_matrix::Zero(0, 0);
  const int M = int(dlogits.rows()), V = int(dlogits.cols()), C = int(embed.cols());
  dx.resize(M, C);
  check_cuda(gemm_rm(context(), false, false, M, C, V, 1.0f, dlogits.data(), V, embed.data(), C, 0.0f, dx.data(), C), "LM head backward");
}

// ---- inference over a KV cache (nn/generate.hpp) ---------------------------------------------------------------------

/// cache rows [row0, row0 + rows.rows()) = rows (row-major: one contiguous copy).
inline void write_rows(device_matrix& cache, Eigen::Index row0, const device_matrix& rows) {
  LORALAB_CHECK(rows.cols() == cache.cols() && row0 + rows.rows() <= cache.rows(), "KV cache: rows [", row0, ", ", row0 + rows.rows(),
                ") of ", cache.rows());
  check_cuda(cudaMemcpyAsync(cache.data() + row0 * cache.cols(), rows.data(), sizeof(float) * std::size_t(rows.size()),
                             cudaMemcpyDeviceToDevice),
             "KV cache write");
}
inline void cached_attention(const device_matrix& q, const device_matrix& kc, const device_matrix& vc, int pos0, int n_heads, int n_kv_heads,
                             device_matrix& att) {
  att.resize(q.rows(), q.cols());
  check_cuda(cuda::cached_attention(q.data(), kc.data(), vc.data(), int(q.rows()), pos0, n_heads, n_kv_heads, int(q.cols()) / n_heads,
                                    att.data()),
             "attention over the KV cache");
}
inline void last_rows(const device_matrix& x, Eigen::Index n, device_matrix& out) {
  out.resize(n, x.cols());
  check_cuda(cudaMemcpyAsync(out.data(), x.data() + (x.rows() - n) * x.cols(), sizeof(float) * std::size_t(out.size()),
                             cudaMemcpyDeviceToDevice),
             "last rows");
}

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// Causal scaled-dot-product attention with grouped-query heads, over B sequences of T tokens
// (rows b·T + t). Query head h reads key/value head h / (H / Hkv).
//
//   forward:  S = q kᵀ / √D (causal), P = softmax(S), out = P v          P is kept for backward: (B·H, T, T)
//   backward: dP = dout vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √D, dq = dS k, dk += dSᵀ q, dv += Pᵀ dout
//
// Causal blocks: the rows of each (b, h) are taken in blocks of causal_block; a block of rows [r0, r1) needs keys
// 0..r1-1 only, so every product skips the blocks above the diagonal — at T = 256 the attention GEMMs do 5/8 of
// the full T×T work (T(T+1)/2 pairs plus half a block per row block). Entries above the diagonal of P are zero.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/parallel.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

/// Rows per causal block (see the top): small enough to skip most of the upper triangle, large enough for GEMMs.
inline constexpr int causal_block = 64;

struct attention_shape {
  int batch = 0, seq = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int group() const { return n_heads / n_kv_heads; }
  /// Multiply-adds of one pass (query-key pairs of every head times the head size): the parallel regions' `if`.
  std::size_t pair_work() const { return std::size_t(batch) * std::size_t(n_heads) * std::size_t(seq) * std::size_t(seq + 1) / 2 * std::size_t(head_dim); }
};

/// out (B·T, H·D) from q (B·T, H·D), k and v (B·T, Hkv·D); probs receives P, one (T, T) block per (b, h),
/// stacked as rows: (B·H·T, T).
template <class S>
void attention_forward(const attention_shape& a, const matrix<S>& q, const matrix<S>& k, const matrix<S>& v,
                       matrix<S>& probs, matrix<S>& out) {
  const int T = a.seq, D = a.head_dim;
  const S scale = S(1) / std::sqrt(S(D));
  probs.resize(Eigen::Index(a.batch) * a.n_heads * T, T);
  out.resize(q.rows(), q.cols());
#pragma omp parallel for collapse(2) schedule(static) if (core::worth_parallel(a.pair_work()))
  for (int b = 0; b < a.batch; ++b)
    for (int h = 0; h < a.n_heads; ++h) {
      const int kvh = h / a.group();
      auto P = probs.middleRows((Eigen::Index(b) * a.n_heads + h) * T, T);
      const auto qb = q.block(Eigen::Index(b) * T, Eigen::Index(h) * D, T, D);
      const auto kb = k.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      const auto vb = v.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      for (int r0 = 0; r0 < T; r0 += causal_block) {
        const int rb = std::min(causal_block, T - r0), r1 = r0 + rb;  // rows [r0, r1) see keys [0, r1)
        auto Pb = P.block(r0, 0, rb, r1);
        Pb.noalias() = scale * (qb.middleRows(r0, rb) * kb.topRows(r1).transpose());
        for (int t = r0; t < r1; ++t) {  // causal softmax of row t over positions 0..t
          auto row = P.row(t);
          const S mx = row.head(t + 1).maxCoeff();
          row.head(t + 1) = (row.head(t + 1).array() - mx).exp();
          row.head(t + 1) /= row.head(t + 1).sum();
          row.tail(T - t - 1).setZero();
        }
        out.block(Eigen::Index(b) * T + r0, Eigen::Index(h) * D, rb, D).noalias() = Pb * vb.topRows(r1);
      }
    }
}

/// dq (overwritten), dk and dv (overwritten) from dout, given the forward's q, k, v and probs.
template <class S>
void attention_backward(const attention_shape& a, const matrix<S>& q, const matrix<S>& k, const matrix<S>& v,
                        const matrix<S>& probs, const matrix<S>& dout, matrix<S>& dq, matrix<S>& dk, matrix<S>& dv) {
  const int T = a.seq, D = a.head_dim;
  const S scale = S(1) / std::sqrt(S(D));
  dq.resize(q.rows(), q.cols());
  dk = matrix<S>::Zero(k.rows(), k.cols());
  dv = matrix<S>::Zero(v.rows(), v.cols());
  // Query heads sharing a kv head add into the same dk/dv block: parallelize over (b, kv head), loop the group.
#pragma omp parallel for collapse(2) schedule(static) if (core::worth_parallel(a.pair_work()))
  for (int b = 0; b < a.batch; ++b)
    for (int kvh = 0; kvh < a.n_kv_heads; ++kvh) {
      matrix<S> dP(T, T);
      const auto kb = k.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      const auto vb = v.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      auto dkb = dk.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      auto dvb = dv.block(Eigen::Index(b) * T, Eigen::Index(kvh) * D, T, D);
      for (int h = kvh * a.group(); h < (kvh + 1) * a.group(); ++h) {
        const auto P = probs.middleRows((Eigen::Index(b) * a.n_heads + h) * T, T);
        const auto qb = q.block(Eigen::Index(b) * T, Eigen::Index(h) * D, T, D);
        const auto dob = dout.block(Eigen::Index(b) * T, Eigen::Index(h) * D, T, D);
        for (int r0 = 0; r0 < T; r0 += causal_block) {
          const int rb = std::min(causal_block, T - r0), r1 = r0 + rb;  // rows [r0, r1) touch keys [0, r1)
          const auto Pb = P.block(r0, 0, rb, r1);
          const auto dob_r = dob.middleRows(r0, rb);
          dvb.topRows(r1).noalias() += Pb.transpose() * dob_r;
          auto dPb = dP.block(r0, 0, rb, r1);
          dPb.noalias() = dob_r * vb.topRows(r1).transpose();
          for (int t = r0; t < r1; ++t) {
            const S dot = P.row(t).head(t + 1).dot(dP.row(t).head(t + 1));
            dP.row(t).head(t + 1) = (P.row(t).head(t + 1).array() * (dP.row(t).head(t + 1).array() - dot)) * scale;
            dP.row(t).segment(t + 1, r1 - t - 1).setZero();
          }
          dq.block(Eigen::Index(b) * T + r0, Eigen::Index(h) * D, rb, D).noalias() = dPb * kb.topRows(r1);
          dkb.topRows(r1).noalias() += dPb.transpose() * qb.middleRows(r0, rb);
        }
      }
    }
}

}  // namespace loralab::nn

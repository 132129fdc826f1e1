// SPDX-License-Identifier: MIT
#include "attention.cuh"

#include <cmath>
#include <cstddef>
#include <vector>

#include "block_reduce.cuh"

namespace loralab::cuda {
namespace {

constexpr int threads = 128;
using block_reduce = cub::BlockReduce<float, threads>;

template <bool Max>
__device__ float block_all(float v, block_reduce::TempStorage& tmp, float& slot) {
  return block_reduce_all<threads, Max>(v, tmp, slot);
}

/// Row t (= row index mod T) of P from the scores in place: softmax over positions 0..t, zero beyond.
__global__ void causal_softmax_kernel(float* P, int T) {
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  float* row = P + std::size_t(blockIdx.x) * T;
  const int t = int(blockIdx.x % unsigned(T));
  float mx = -INFINITY;
  for (int j = threadIdx.x; j <= t; j += threads) mx = fmaxf(mx, row[j]);
  mx = block_all<true>(mx, tmp, shared);
  float sum = 0;
  for (int j = threadIdx.x; j <= t; j += threads) sum += expf(row[j] - mx);
  sum = block_all<false>(sum, tmp, shared);
  for (int j = threadIdx.x; j < T; j += threads) row[j] = j <= t ? expf(row[j] - mx) / sum : 0.0f;
}

/// dS = P ⊙ (dP − Σ_j P·dP) · scale over positions 0..t, in place in dP; zero beyond.
__global__ void softmax_backward_kernel(const float* P, float* dP, int T, float scale) {
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  const std::size_t off = std::size_t(blockIdx.x) * T;
  const int t = int(blockIdx.x % unsigned(T));
  float dot = 0;
  for (int j = threadIdx.x; j <= t; j += threads) dot += P[off + j] * dP[off + j];
  dot = block_all<false>(dot, tmp, shared);
  for (int j = threadIdx.x; j < T; j += threads) dP[off + j] = j <= t ? P[off + j] * (dP[off + j] - dot) * scale : 0.0f;
}

/// One block per (query row i, head h) of cached_attention: scores of positions 0 … pos0 + i in shared memory.
__global__ void cached_attention_kernel(const float* q, const float* kc, const float* vc, int pos0, int H, int Hkv, int D, float scale,
                                        float* att) {
  extern __shared__ float s[];
  __shared__ block_reduce::TempStorage tmp;
  __shared__ float shared;
  const int i = int(blockIdx.x) / H, h = int(blockIdx.x) % H, kvh = h / (H / Hkv), seen = pos0 + i + 1;
  const std::size_t kv = std::size_t(Hkv) * D;
  const float* qr = q + std::size_t(i) * H * D + std::size_t(h) * D;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < seen; j += threads) {
    const float* kr = kc + std::size_t(j) * kv + std::size_t(kvh) * D;
    float dot = 0;
    for (int d = 0; d < D; ++d) dot += qr[d] * kr[d];
    s[j] = dot * scale;
    mx = fmaxf(mx, s[j]);
  }
  mx = block_all<true>(mx, tmp, shared);
  float sum = 0;
  for (int j = threadIdx.x; j < seen; j += threads) sum += (s[j] = expf(s[j] - mx));
  const float inv = 1.0f / block_all<false>(sum, tmp, shared);
  for (int d = threadIdx.x; d < D; d += threads) {
    float acc = 0;
    for (int j = 0; j < seen; ++j) acc += s[j] * vc[std::size_t(j) * kv + std::size_t(kvh) * D + d];
    att[std::size_t(i) * H * D + std::size_t(h) * D + d] = acc * inv;
  }
}

cudaError_t status(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown; }

/// A batch of row-major products C_i = alpha · op(A_i) · op(B_i) + beta · C_i, pointers on the host, copied to `table`.
struct batched_gemm {
  cublasHandle_t h;
  cudaStream_t stream;
  const float** table;  // device, 3 · capacity pointers
  cudaError_t run(bool ta, bool tb, int m, int n, int k, float alpha, const std::vector<const float*>& A, int lda,
                  const std::vector<const float*>& B, int ldb, float beta, const std::vector<float*>& C, int ldc) const {
    const int count = int(A.size());
    std::vector<const float*> host(3 * std::size_t(count));
    for (int i = 0; i < count; ++i) host[std::size_t(i)] = B[std::size_t(i)], host[std::size_t(count + i)] = A[std::size_t(i)],
                                    host[std::size_t(2 * count + i)] = C[std::size_t(i)];
    cudaError_t e = cudaMemcpyAsync(table, host.data(), host.size() * sizeof(float*), cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess) return e;
    if ((e = cudaStreamSynchronize(stream)) != cudaSuccess) return e;  // `host` goes out of scope next
    // row-major C = op(A)·op(B) ⟺ column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: operands swapped, transpose flags kept
    return status(cublasSgemmBatched(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, table, ldb,
                                     table + count, lda, &beta, const_cast<float**>(table + 2 * count), ldc, count));
  }
};

/// Offsets of the (b, h) blocks: q-like (B·T, H·D) and kv-like (B·T, Hkv·D) matrices and (T, T) probabilities.
struct blocks {
  attention_dims a;
  std::size_t q(int b, int h) const { return std::size_t(b) * a.seq * a.heads * a.head_dim + std::size_t(h) * a.head_dim; }
  std::size_t kv(int b, int h) const {
    return std::size_t(b) * a.seq * a.kv_heads * a.head_dim + std::size_t(h / (a.heads / a.kv_heads)) * a.head_dim;
  }
  std::size_t p(int b, int h) const { return (std::size_t(b) * a.heads + h) * a.seq * a.seq; }
};

template <class F>
cudaError_t with_table(cublasHandle_t h, const attention_dims& a, cudaStream_t stream, F&& f) {
  const float** table = nullptr;
  cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&table), 3 * std::size_t(a.batch) * a.heads * sizeof(float*), stream);
  if (e != cudaSuccess) return e;
  cublasSetStream(h, stream);
  e = f(batched_gemm{h, stream, table});
  const cudaError_t f2 = cudaFreeAsync(table, stream);
  return e != cudaSuccess ? e : f2;
}

bool valid(const attention_dims& a) {
  return a.batch > 0 && a.seq > 0 && a.seq <= 65535 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0 && a.head_dim > 0;
}

}  // namespace

cudaError_t attention_forward(cublasHandle_t h, const attention_dims& a, const float* q, const float* k, const float* v, float* probs,
                              float* out, cudaStream_t stream) {
  if (!valid(a)) return cudaErrorInvalidValue;
  const int T = a.seq, D = a.head_dim, HD = a.heads * D, KD = a.kv_heads * D;
  const blocks at{a};
  std::vector<const float*> qs, ks, vs, ps;
  std::vector<float*> pw, ow;
  for (int b = 0; b < a.batch; ++b)
    for (int hh = 0; hh < a.heads; ++hh) {
      qs.push_back(q + at.q(b, hh)), ks.push_back(k + at.kv(b, hh)), vs.push_back(v + at.kv(b, hh));
      pw.push_back(probs + at.p(b, hh)), ps.push_back(probs + at.p(b, hh)), ow.push_back(out + at.q(b, hh));
    }
  return with_table(h, a, stream, [&](const batched_gemm& g) {
    cudaError_t e = g.run(false, true, T, T, D, 1.0f / std::sqrt(float(D)), qs, HD, ks, KD, 0.0f, pw, T);  // S = q kᵀ / √D
    if (e != cudaSuccess) return e;
    causal_softmax_kernel<<<unsigned(a.batch * a.heads * T), threads, 0, stream>>>(probs, T);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    return g.run(false, false, T, D, T, 1.0f, ps, T, vs, KD, 0.0f, ow, HD);  // out = P v
  });
}

cudaError_t attention_backward(cublasHandle_t h, const attention_dims& a, const float* q, const float* k, const float* v,
                               const float* probs, const float* dout, float* dP, float* dq, float* dk, float* dv, cudaStream_t stream) {
  if (!valid(a)) return cudaErrorInvalidValue;
  const int T = a.seq, D = a.head_dim, HD = a.heads * D, KD = a.kv_heads * D, group = a.heads / a.kv_heads;
  const blocks at{a};
  return with_table(h, a, stream, [&](const batched_gemm& g) {
    std::vector<const float*> dos, vs, dps, ks;
    std::vector<float*> dpw, dqw;
    for (int b = 0; b < a.batch; ++b)
      for (int hh = 0; hh < a.heads; ++hh) {
        dos.push_back(dout + at.q(b, hh)), vs.push_back(v + at.kv(b, hh)), ks.push_back(k + at.kv(b, hh));
        dpw.push_back(dP + at.p(b, hh)), dps.push_back(dP + at.p(b, hh)), dqw.push_back(dq + at.q(b, hh));
      }
    cudaError_t e = g.run(false, true, T, T, D, 1.0f, dos, HD, vs, KD, 0.0f, dpw, T);  // dP = dout vᵀ
    if (e != cudaSuccess) return e;
    softmax_backward_kernel<<<unsigned(a.batch * a.heads * T), threads, 0, stream>>>(probs, dP, T, 1.0f / std::sqrt(float(D)));
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    if ((e = g.run(false, false, T, D, T, 1.0f, dps, T, ks, KD, 0.0f, dqw, HD)) != cudaSuccess) return e;  // dq = dS k
    // dk, dv: the heads of a group add into one block, so one batched call per position in the group (no two
    // entries of a batch write the same block), the first overwriting
    for (int j = 0; j < group; ++j) {
      std::vector<const float*> ds, qs, ps, dob;
      std::vector<float*> dkw, dvw;
      for (int b = 0; b < a.batch; ++b)
        for (int kvh = 0; kvh < a.kv_heads; ++kvh) {
          const int hh = kvh * group + j;
          ds.push_back(dP + at.p(b, hh)), qs.push_back(q + at.q(b, hh)), ps.push_back(probs + at.p(b, hh)), dob.push_back(dout + at.q(b, hh));
          dkw.push_back(dk + at.kv(b, hh)), dvw.push_back(dv + at.kv(b, hh));
        }
      const float beta = j == 0 ? 0.0f : 1.0f;
      if ((e = g.run(true, false, T, D, T, 1.0f, ds, T, qs, HD, beta, dkw, KD)) != cudaSuccess) return e;    // dk += dSᵀ q
      if ((e = g.run(true, false, T, D, T, 1.0f, ps, T, dob, HD, beta, dvw, KD)) != cudaSuccess) return e;   // dv += Pᵀ dout
    }
    return cudaSuccess;
  });
}

cudaError_t cached_attention(const float* q, const float* kc, const float* vc, int M, int pos0, int heads, int kv_heads, int head_dim,
                             float* att, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0) return cudaErrorInvalidValue;
  const std::size_t scores = std::size_t(pos0 + M) * sizeof(float);
  if (scores > 46 * 1024) {  // past the default 48 KiB a kernel opts in (up to 227 KiB on sm_90: ~58k positions)
    const cudaError_t e = cudaFuncSetAttribute(cached_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(scores));
    if (e != cudaSuccess) return e;
  }
  cached_attention_kernel<<<unsigned(M) * unsigned(heads), threads, scores, stream>>>(q, kc, vc, pos0, heads, kv_heads, head_dim,
                                                                                      1.0f / std::sqrt(float(head_dim)), att);
  return cudaGetLastError();
}

}  // namespace loralab::cuda

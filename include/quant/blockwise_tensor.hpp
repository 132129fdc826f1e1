// SPDX-License-Identifier: MIT
#pragma once
// A blockwise-quantized tensor that owns its storage (bnb quantize_4bit / quantize_blockwise layout).
//
// Layout, for n elements in row-major order and nb = ceil(n / B) blocks:
//   codes   4-bit: uint8 [(n+1)/2], element 2k in the HIGH nibble of byte k (odd n: the last low nibble is the
//           code of the zero padding);  8-bit: uint8 [n]
//   absmax  float32 [nb]                                   (plain schemes)
//   nested  uint8 qabsmax [nb], float32 absmax2 [ceil(nb/256)], float32 offset, float32 map [256]   (double_quant)
// storage_bytes() is the sum of exactly these allocations and equals quant::storage_bytes<S>(n).
//
// Two paths produce the same bits: *_ref is the scalar transcription of bnb's kernel (tree decisions, one
// element at a time); the default path runs blocks in parallel with OpenMP and branch-free inner loops.
#include <algorithm>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include <Eigen/Core>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/check.hpp"
#include "quant/codec.hpp"
#include "quant/schemes.hpp"
#include "quant/torch_reduce.hpp"

namespace loralab::quant {

/// Element types a quantized tensor reads and writes: float32 compute, fp16/bf16 storage.
template <class T>
concept element_type = std::same_as<T, float> || std::same_as<T, Eigen::half> || std::same_as<T, Eigen::bfloat16>;

/// Round a float32 to T to nearest, ties to even (what bnb's dequantizer does for fp16/bf16 outputs).
template <element_type T>
inline T from_float(float x) { return static_cast<T>(x); }

namespace detail {

#if defined(__AVX2__)
/// 16 codes at a time from 8 packed bytes: the block's 16 products code·absmax sit in two registers, each
/// nibble picks one with permutevar (low 3 bits) and blendv (bit 3). The same float values as the scalar
/// loop, so the result is bit-identical. Returns how many pairs (bytes) it did.
inline std::size_t dequantize_pairs_avx2(const float* lut, const std::uint8_t* src, std::size_t pairs, float* out) {
  const __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  std::size_t k = 0;
  for (; k + 8 <= pairs; k += 8) {
    std::uint64_t bytes;
    std::memcpy(&bytes, src + k, 8);
    const __m128i b = _mm_cvtsi64_si128(static_cast<long long>(bytes));
    const __m128i first = _mm_and_si128(_mm_srli_epi16(b, 4), low4);  // high nibbles: elements 2k
    const __m128i second = _mm_and_si128(b, low4);                     // low nibbles: elements 2k+1
    const __m128i codes = _mm_unpacklo_epi8(first, second);            // 16 codes in element order
    for (int half = 0; half < 2; ++half) {
      const __m256i idx = _mm256_cvtepu8_epi32(half ? _mm_srli_si128(codes, 8) : codes);
      const __m256 pick = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                                           _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
      _mm256_storeu_ps(out + 2 * k + 8 * half, pick);
    }
  }
  return k;
}
#endif

/// Blockwise 8-bit quantization of y with map `code` (bnb quantize_blockwise): fills q[n] and absmax[nb].
template <bool Reference>
inline void quantize_8bit_blocks(const float* code, std::span<const float> y, int block, std::uint8_t* q,
                                 float* absmax) {
  const std::size_t n = y.size(), nb = ceil_div(n, block);
  const auto one_block = [&](std::size_t b) {
    const std::size_t start = b * block, len = std::min<std::size_t>(block, n - start);
    float am = absmax_init;
    for (std::size_t i = 0; i < len; ++i) am = absmax_step(am, y[start + i]);
    if (len < static_cast<std::size_t>(block)) am = absmax_step(am, 0.0f);  // zero padding joins the reduction
    absmax[b] = am;
    const float s = block_scale(am);
    for (std::size_t i = 0; i < len; ++i) q[start + i] = dynamic8_encode(code, normalise(y[start + i], s));
  };
  if constexpr (Reference) {
    for (std::size_t b = 0; b < nb; ++b) one_block(b);
  } else {
#pragma omp parallel for schedule(static) if (nb > 16)
    for (std::ptrdiff_t b = 0; b < static_cast<std::ptrdiff_t>(nb); ++b) one_block(static_cast<std::size_t>(b));
  }
}

/// The double-quantization offset: bnb's `absmax.mean()`, torch's float32 CPU mean, in torch's reduction order
/// (quant/torch_reduce.hpp) with torch's default vector width and intra-op thread count on this machine. The
/// thread count matters only from 32768 blocks on (2M weights at block 64). A checkpoint carries its own offset.
inline float mean_offset(std::span<const float> absmax) {
  return torch_cpu::mean(absmax, torch_cpu::default_config());
}

}  // namespace detail

/// \tparam S a blockwise scheme: nf4<B>, fp4<B>, dynamic8<B>, or double_quant<nf4<B> | fp4<B>>.
template <blockwise_scheme S>
class blockwise_tensor {
 public:
  using scheme = S;
  static constexpr int block_size = S::block_size;

  blockwise_tensor() = default;

  // ---- quantize ------------------------------------------------------------------------------------------

  /// Quantizes x (row-major, `shape` gives its extents) on the fast path.
  template <element_type T>
  static blockwise_tensor quantize(std::span<const T> x, std::vector<std::int64_t> shape) {
    return quantize_impl<false>(x, std::move(shape));
  }
  /// Same result, scalar reference path.
  template <element_type T>
  static blockwise_tensor quantize_ref(std::span<const T> x, std::vector<std::int64_t> shape) {
    return quantize_impl<true>(x, std::move(shape));
  }
  /// A (rows, cols) row-major matrix: the entry point every quantized tensor shares (quant::quantize<S>).
  template <element_type T>
  static blockwise_tensor quantize(std::span<const T> x, std::size_t rows, std::size_t cols) {
    return quantize_impl<false>(x, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)});
  }

  /// Rebuilds a tensor from stored parts (a bnb checkpoint); every size is checked against n.
  static blockwise_tensor from_parts(std::vector<std::int64_t> shape, std::vector<std::uint8_t> codes,
                                     std::vector<float> absmax) requires(!S::nested) {
    blockwise_tensor t(std::move(shape));
    LORALAB_CHECK(codes.size() == t.code_bytes(), "codes hold ", codes.size(), " bytes, shape needs ", t.code_bytes());
    LORALAB_CHECK(absmax.size() == t.num_blocks(), "absmax has ", absmax.size(), " entries, shape and block size ",
                  block_size, " need ", t.num_blocks());
    t.codes_ = std::move(codes);
    t.absmax_ = std::move(absmax);
    t.release_slack();
    return t;
  }
  static blockwise_tensor from_parts(std::vector<std::int64_t> shape, std::vector<std::uint8_t> codes,
                                     std::vector<std::uint8_t> qabsmax, std::vector<float> absmax2, float offset,
                                     std::vector<float> nested_code) requires(S::nested) {
    blockwise_tensor t(std::move(shape));
    LORALAB_CHECK(codes.size() == t.code_bytes(), "codes hold ", codes.size(), " bytes, shape needs ", t.code_bytes());
    LORALAB_CHECK(qabsmax.size() == t.num_blocks(), "absmax codes: ", qabsmax.size(), " entries, shape needs ",
                  t.num_blocks());
    LORALAB_CHECK(absmax2.size() == t.num_nested_blocks(), "nested_absmax: ", absmax2.size(), " entries, needs ",
                  t.num_nested_blocks());
    LORALAB_CHECK(nested_code.size() == 256, "nested_quant_map: ", nested_code.size(), " entries, needs 256");
    t.codes_ = std::move(codes);
    t.qabsmax_ = std::move(qabsmax);
    t.absmax2_ = std::move(absmax2);
    t.offset_ = offset;
    t.nested_code_ = std::move(nested_code);
    t.release_slack();
    return t;
  }

  // ---- dequantize ----------------------------------------------------------------------------------------

  /// out[i] = T(code[q_i] * absmax[block(i)]), the float32 product rounded once to T.
  template <element_type T>
  void dequantize(std::span<T> out) const {
    LORALAB_CHECK(out.size() == n_, "dequantize: output has ", out.size(), " elements, tensor has ", n_);
    const std::vector<float> am = block_absmax();
    const std::size_t nb = num_blocks();
#pragma omp parallel for schedule(static) if (nb > 64)
    for (std::ptrdiff_t b = 0; b < static_cast<std::ptrdiff_t>(nb); ++b) {
      const std::size_t start = static_cast<std::size_t>(b) * block_size;
      dequantize_block(am[b], start, std::min<std::size_t>(n_, start + block_size), out.data() + start);
    }
  }

  /// Scalar reference: one element at a time, as the kernel states it.
  template <element_type T>
  void dequantize_ref(std::span<T> out) const {
    LORALAB_CHECK(out.size() == n_, "dequantize_ref: output has ", out.size(), " elements, tensor has ", n_);
    for (std::size_t i = 0; i < n_; ++i) out[i] = from_float<T>(scale_code(S::decode(code_at(i)), absmax_of_block(i / block_size)));
  }

  /// Dequantizes elements [e0, e1) into out[0 .. e1-e0): the tile a layer needs, never the whole tensor.
  template <element_type T>
  void dequantize_range(std::size_t e0, std::size_t e1, T* out) const {
    LORALAB_CHECK(e0 <= e1 && e1 <= n_, "dequantize_range [", e0, ", ", e1, ") outside a tensor of ", n_);
    for (std::size_t b = e0 / block_size; b * block_size < e1; ++b) {
      const std::size_t lo = std::max(e0, b * block_size), hi = std::min(e1, (b + 1) * block_size);
      dequantize_block(absmax_of_block(b), lo, hi, out + (lo - e0));
    }
  }

  /// Dequantizes rows [r0, r1) of the tensor viewed as (rows, cols) into out (row-major, (r1-r0)*cols).
  template <element_type T>
  void dequantize_rows(std::size_t r0, std::size_t r1, std::span<T> out) const {
    LORALAB_CHECK(r0 <= r1 && r1 <= rows(), "dequantize_rows [", r0, ", ", r1, ") outside ", rows(), " rows");
    LORALAB_CHECK(out.size() == (r1 - r0) * cols(), "dequantize_rows: output has ", out.size(), " elements, needs ",
                  (r1 - r0) * cols());
    dequantize_range(r0 * cols(), r1 * cols(), out.data());
  }

  /// The float32 absmax of every block (with double quantization: code[q] * absmax2 + offset, two roundings).
  std::vector<float> block_absmax() const {
    std::vector<float> am(num_blocks());
    for (std::size_t b = 0; b < am.size(); ++b) am[b] = absmax_of_block(b);
    return am;
  }

  // ---- sizes and parts -----------------------------------------------------------------------------------

  std::size_t numel() const { return n_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  /// Rows and columns of the tensor viewed as a matrix: (shape[0], numel/shape[0]); a 1-D tensor is one row.
  std::size_t rows() const { return shape_.size() < 2 ? 1 : static_cast<std::size_t>(shape_[0]); }
  std::size_t cols() const { return rows() == 0 ? 0 : n_ / rows(); }
  std::size_t num_blocks() const { return detail::ceil_div(n_, block_size); }
  std::size_t num_nested_blocks() const requires(S::nested) { return detail::ceil_div(num_blocks(), S::nested_block_size); }
  /// Bytes of the codes (uint8 elements: two 4-bit codes or one 8-bit code each); the rest of storage_bytes() is
  /// statistics (stats_bytes).
  std::size_t code_bytes() const { return S::bits == 4 ? (n_ + 1) / 2 : n_; }
  std::size_t stats_bytes() const { return storage_bytes() - code_bytes(); }
  /// The dtype bitsandbytes stores the codes in (Params4bit / quantize_blockwise: uint8) and their element count.
  static constexpr const char* storage_dtype = "uint8";
  std::size_t code_elements() const { return code_bytes(); }
  /// What a (rows, cols) tensor will allocate, from the formula: codes, and statistics (quant::storage_bytes<S>).
  static constexpr std::size_t planned_code_bytes(std::size_t rows, std::size_t cols) {
    return S::bits == 4 ? (rows * cols + 1) / 2 : rows * cols;
  }
  static constexpr std::size_t planned_stats_bytes(std::size_t rows, std::size_t cols) {
    return quant::storage_bytes<S>(rows * cols) - planned_code_bytes(rows, cols);
  }

  /// Bytes this tensor allocated for codes and statistics (vector capacities, not sizes).
  std::size_t storage_bytes() const {
    std::size_t bytes = codes_.capacity() + absmax_.capacity() * sizeof(float);
    if constexpr (S::nested)
      bytes += qabsmax_.capacity() + absmax2_.capacity() * sizeof(float) + sizeof(offset_) +
               nested_code_.capacity() * sizeof(float);
    return bytes;
  }
  double measured_bits_per_param() const { return 8.0 * static_cast<double>(storage_bytes()) / static_cast<double>(n_); }

  std::span<const std::uint8_t> codes() const { return codes_; }
  std::span<const float> absmax() const requires(!S::nested) { return absmax_; }
  std::span<const std::uint8_t> absmax_codes() const requires(S::nested) { return qabsmax_; }
  std::span<const float> nested_absmax() const requires(S::nested) { return absmax2_; }
  std::span<const float> nested_code() const requires(S::nested) { return nested_code_; }
  float offset() const requires(S::nested) { return offset_; }

  /// Code of element i.
  std::uint8_t code_at(std::size_t i) const {
    if constexpr (S::bits == 4) return unpack_nibble(codes_.data(), i);
    else return codes_[i];
  }
  float absmax_of_block(std::size_t b) const {
    if constexpr (S::nested)
      return scale_code(nested_code_[qabsmax_[b]], absmax2_[b / S::nested_block_size]) + offset_;
    else
      return absmax_[b];
  }

 private:
  explicit blockwise_tensor(std::vector<std::int64_t> shape) : shape_(std::move(shape)) {
    std::size_t n = 1;
    for (auto d : shape_) {
      LORALAB_CHECK(d >= 0, "negative extent ", d, " in shape");
      n *= static_cast<std::size_t>(d);
    }
    n_ = n;
  }

  template <bool Reference, element_type T>
  static blockwise_tensor quantize_impl(std::span<const T> x, std::vector<std::int64_t> shape) {
    blockwise_tensor t(std::move(shape));
    LORALAB_CHECK(t.n_ == x.size(), "quantize: shape holds ", t.n_, " elements, data has ", x.size());
    LORALAB_CHECK(t.n_ > 0, "quantize: empty tensor (0 elements) cannot be quantized");
    const std::size_t nb = t.num_blocks();
    std::vector<float> absmax(nb);
    t.codes_.assign(t.code_bytes(), 0);
    if constexpr (Reference) {
      for (std::size_t b = 0; b < nb; ++b) absmax[b] = t.quantize_block_ref(x, b);
    } else {
#pragma omp parallel for schedule(static) if (nb > 16)
      for (std::ptrdiff_t b = 0; b < static_cast<std::ptrdiff_t>(nb); ++b)
        absmax[b] = t.quantize_block_fast(x, static_cast<std::size_t>(b));
    }
    if constexpr (S::nested) {
      // Double quantization: centre the absmax on its mean, store it with the signed dynamic map.
      t.offset_ = detail::mean_offset(absmax);
      std::vector<float> centred(nb);
      for (std::size_t b = 0; b < nb; ++b) centred[b] = absmax[b] - t.offset_;
      t.nested_code_.assign(codebooks::dynamic_signed.begin(), codebooks::dynamic_signed.end());
      t.qabsmax_.assign(nb, 0);
      t.absmax2_.assign(t.num_nested_blocks(), 0.0f);
      detail::quantize_8bit_blocks<Reference>(t.nested_code_.data(), centred, S::nested_block_size, t.qabsmax_.data(),
                                              t.absmax2_.data());
    } else {
      t.absmax_ = std::move(absmax);
    }
    return t;
  }

  /// bnb's kernel, one element at a time: absmax over the block (padding included), s = 1/absmax, codes.
  template <element_type T>
  float quantize_block_ref(std::span<const T> x, std::size_t b) {
    const std::size_t start = b * block_size, len = std::min<std::size_t>(block_size, n_ - start);
    float am = absmax_init;
    for (std::size_t i = 0; i < static_cast<std::size_t>(block_size); ++i)
      am = absmax_step(am, i < len ? static_cast<float>(x[start + i]) : 0.0f);
    const float s = block_scale(am);
    for (std::size_t i = 0; i < len; ++i) put_code(start + i, S::encode_ref(normalise(static_cast<float>(x[start + i]), s)));
    if constexpr (S::bits == 4)
      if ((start + len) % 2 == 1) put_code(start + len, S::encode_ref(normalise(0.0f, s)));  // odd n: padding code
    return am;
  }

  /// The same block, with branch-free loops the compiler vectorizes (codes first, then the nibble packing).
  template <element_type T>
  float quantize_block_fast(std::span<const T> x, std::size_t b) {
    const std::size_t start = b * block_size, len = std::min<std::size_t>(block_size, n_ - start);
    alignas(64) float v[block_size];
    alignas(64) std::uint8_t q[block_size + 1];
    float am = len < static_cast<std::size_t>(block_size) ? 0.0f : absmax_init;
    for (std::size_t i = 0; i < len; ++i) {
      v[i] = static_cast<float>(x[start + i]);
      am = absmax_step(am, v[i]);
    }
    const float s = block_scale(am);
    for (std::size_t i = 0; i < len; ++i) q[i] = S::encode(normalise(v[i], s));
    if constexpr (S::bits == 4) {
      q[len] = S::encode(normalise(0.0f, s));  // padding code, used only when n is odd
      std::uint8_t* dst = codes_.data() + start / 2;
      for (std::size_t k = 0; k < (len + 1) / 2; ++k) dst[k] = pack_pair(q[2 * k], q[2 * k + 1]);
    } else {
      std::copy_n(q, len, codes_.data() + start);
    }
    return am;
  }

  /// Parts handed in from outside may carry spare capacity; drop it so storage_bytes() is what the data needs.
  void release_slack() {
    codes_.shrink_to_fit(), absmax_.shrink_to_fit(), qabsmax_.shrink_to_fit(), absmax2_.shrink_to_fit();
    nested_code_.shrink_to_fit();
  }

  void put_code(std::size_t i, std::uint8_t c) {
    if constexpr (S::bits == 4) {
      std::uint8_t& byte = codes_[i / 2];
      byte = (i % 2 == 0) ? pack_pair(c, byte & 0x0F) : pack_pair(byte >> 4, c);
    } else {
      codes_[i] = c;
    }
  }

  /// Elements [lo, hi) of one block, whose absmax is am, into out[0 .. hi-lo).
  template <element_type T>
  void dequantize_block(float am, std::size_t lo, std::size_t hi, T* out) const {
    if constexpr (S::bits == 4) {
      T lut[16];  // the 16 products code*absmax of this block, each rounded once to T
      for (int c = 0; c < 16; ++c) lut[c] = from_float<T>(scale_code(S::decode(static_cast<std::uint8_t>(c)), am));
      std::size_t i = lo;
      if (i < hi && i % 2 == 1) *out++ = lut[codes_[i / 2] & 0x0F], ++i;
      const std::uint8_t* src = codes_.data() + i / 2;
      const std::size_t pairs = (hi - i) / 2;
      std::size_t k = 0;
#if defined(__AVX2__)
      if constexpr (std::same_as<T, float>) k = detail::dequantize_pairs_avx2(lut, src, pairs, out);
#endif
      for (; k < pairs; ++k) {
        const std::uint8_t byte = src[k];
        out[2 * k] = lut[byte >> 4];
        out[2 * k + 1] = lut[byte & 0x0F];
      }
      i += 2 * pairs;
      if (i < hi) out[2 * pairs] = lut[codes_[i / 2] >> 4];
    } else {
      for (std::size_t i = lo; i < hi; ++i) *out++ = from_float<T>(scale_code(S::decode(codes_[i]), am));
    }
  }

  std::vector<std::int64_t> shape_;
  std::size_t n_ = 0;
  std::vector<std::uint8_t> codes_;
  std::vector<float> absmax_;         // plain schemes
  std::vector<std::uint8_t> qabsmax_;  // double_quant: absmax codes
  std::vector<float> absmax2_;        // double_quant: nested absmax
  float offset_ = 0.0f;               // double_quant: mean of the absmax
  std::vector<float> nested_code_;    // double_quant: this tensor's signed dynamic map
};

}  // namespace loralab::quant

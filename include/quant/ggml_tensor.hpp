// SPDX-License-Identifier: MIT
#pragma once
// ggml_tensor<S>: a (rows, cols) matrix stored in a ggml block format (quant/ggml_blocks.hpp), as exactly the
// bytes a GGUF file holds for it: rows * cols/32 blocks of S::block_bytes, row after row. A GGUF tensor's data is
// taken as it is (from_bytes) and handed back as it is (bytes()); GGUF lists the same tensor as ne = [cols, rows].
//
//   auto q = ggml_tensor<ggml_q4_1>::from_bytes(gguf_bytes, rows, cols);   // checked: cols % 32, byte count
//   q.dequantize_rows<float>(r0, r1, tile);                                 // a tile at a time
//   auto w = ggml_tensor<ggml_q8_0>::quantize<float>(x, rows, cols);        // ggml's quantize_row_q8_0_ref
//
// storage_bytes() is the blocks' allocation, which equals storage_bytes<S>(rows * cols); code_bytes() is the
// nibbles / int8 of the blocks and stats_bytes() their fp16 d (and m), the split the memory report shows.
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant/ggml_blocks.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

/// \tparam S ggml_q4_0, ggml_q4_1 or ggml_q8_0.
template <ggml_block_scheme S>
class ggml_tensor {
 public:
  using scheme = S;
  using block = typename S::block;
  static constexpr int block_size = S::block_size;

  ggml_tensor() = default;

  // ---- from floats, from GGUF bytes ------------------------------------------------------------------------

  /// Quantizes a (rows, cols) row-major matrix, rows in parallel: the same bytes as quantize_ref.
  template <element_type T>
  static ggml_tensor quantize(std::span<const T> x, std::size_t rows, std::size_t cols) {
    return quantize_impl<false>(x, rows, cols);
  }
  /// ggml's quantize_row_<type>_ref over the rows, one after the other.
  template <element_type T>
  static ggml_tensor quantize_ref(std::span<const T> x, std::size_t rows, std::size_t cols) {
    return quantize_impl<true>(x, rows, cols);
  }

  /// A GGUF tensor's data for a (rows, cols) matrix (GGUF: ne = [cols, rows]), copied without conversion.
  static ggml_tensor from_bytes(std::span<const std::byte> bytes, std::size_t rows, std::size_t cols) {
    ggml_tensor t(rows, cols);
    LORALAB_CHECK(bytes.size() == t.num_blocks() * S::block_bytes, S::quant_type, ": ", bytes.size(), " bytes for a [",
                  rows, ", ", cols, "] tensor, which needs ", t.num_blocks() * S::block_bytes, " (", rows, " rows of ",
                  cols / block_size, " blocks of ", S::block_bytes, " bytes)");
    t.blocks_.resize(t.num_blocks());
    if (!bytes.empty()) std::memcpy(t.blocks_.data(), bytes.data(), bytes.size());
    return t;
  }
  static ggml_tensor from_bytes(std::span<const std::uint8_t> bytes, std::size_t rows, std::size_t cols) {
    return from_bytes(std::as_bytes(bytes), rows, cols);
  }

  // ---- dequantize ------------------------------------------------------------------------------------------

  /// Rows [r0, r1) into out (row-major, (r1-r0)*cols): the vectorized dequantizer, a tile at a time.
  template <element_type T>
  void dequantize_rows(std::size_t r0, std::size_t r1, std::span<T> out) const {
    dequantize_rows_impl<false>(r0, r1, out);
  }
  /// The same with ggml's scalar dequantize_row_<type>.
  template <element_type T>
  void dequantize_rows_ref(std::size_t r0, std::size_t r1, std::span<T> out) const {
    dequantize_rows_impl<true>(r0, r1, out);
  }
  /// The whole tensor, rows in parallel.
  template <element_type T>
  void dequantize(std::span<T> out) const {
    LORALAB_CHECK(out.size() == numel(), S::quant_type, " dequantize: output has ", out.size(), " elements, tensor has ",
                  numel());
#pragma omp parallel for schedule(static) if (numel() > (1u << 16))
    for (std::ptrdiff_t r = 0; r < static_cast<std::ptrdiff_t>(rows_); ++r)
      dequantize_row_into(static_cast<std::size_t>(r), out.data() + static_cast<std::size_t>(r) * cols_, false);
  }
  template <element_type T>
  void dequantize_ref(std::span<T> out) const { dequantize_rows_ref(0, rows_, out); }

  // ---- sizes and parts ---------------------------------------------------------------------------------------

  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t numel() const { return rows_ * cols_; }
  std::vector<std::int64_t> shape() const { return {std::int64_t(rows_), std::int64_t(cols_)}; }
  std::size_t num_blocks() const { return rows_ * (cols_ / block_size); }

  /// The blocks, and the same memory as GGUF bytes.
  std::span<const block> blocks() const { return blocks_; }
  std::span<const std::byte> bytes() const { return std::as_bytes(std::span<const block>(blocks_)); }

  /// Bytes allocated (the blocks' capacity): equals storage_bytes<S>(numel()).
  std::size_t storage_bytes() const { return blocks_.capacity() * sizeof(block); }
  /// The codes of the blocks (nibbles / int8); the rest of storage_bytes() is statistics (fp16 d, and m for q4_1).
  std::size_t code_bytes() const { return blocks_.capacity() * S::code_bytes_per_block; }
  std::size_t stats_bytes() const { return storage_bytes() - code_bytes(); }
  double measured_bits_per_param() const { return 8.0 * double(storage_bytes()) / double(numel()); }
  /// As GGUF lists the tensor: its type ("q4_1") and one element per weight.
  static constexpr const char* storage_dtype = S::quant_type.data();
  std::size_t code_elements() const { return numel(); }
  /// What a (rows, cols) tensor will allocate, from the formula (cols a multiple of 32).
  static constexpr std::size_t planned_code_bytes(std::size_t rows, std::size_t cols) {
    return rows * detail::ceil_div(cols, block_size) * S::code_bytes_per_block;
  }
  static constexpr std::size_t planned_stats_bytes(std::size_t rows, std::size_t cols) {
    return rows * detail::ceil_div(cols, block_size) * (S::block_bytes - S::code_bytes_per_block);
  }

 private:
  ggml_tensor(std::size_t rows, std::size_t cols) : rows_(rows), cols_(cols) {
    LORALAB_CHECK(cols % block_size == 0, S::quant_type, ": a [", rows, ", ", cols, "] tensor has rows of ", cols,
                  " weights, not a whole number of ", block_size, "-weight blocks (ggml needs cols % ", block_size,
                  " == 0)");
  }

  template <bool Reference, element_type T>
  static ggml_tensor quantize_impl(std::span<const T> x, std::size_t rows, std::size_t cols) {
    ggml_tensor t(rows, cols);
    LORALAB_CHECK(x.size() == rows * cols, S::quant_type, " quantize: [", rows, ", ", cols, "] holds ", rows * cols,
                  " elements, data has ", x.size());
    for (std::size_t i = 0; i < x.size(); ++i)  // refused here, before any thread starts
      LORALAB_CHECK(std::isfinite(static_cast<float>(x[i])), S::quant_type, " quantize: weight (", i / cols, ", ",
                    i % cols, ") is ", static_cast<float>(x[i]), "; ggml's block formats have no code for it");
    t.blocks_.resize(t.num_blocks());
    const std::size_t per_row = cols / block_size;
    const auto row = [&](std::size_t r, std::vector<float>& buf) {
      const float* src;
      if constexpr (std::same_as<T, float>) {
        src = x.data() + r * cols;
      } else {
        for (std::size_t c = 0; c < cols; ++c) buf[c] = static_cast<float>(x[r * cols + c]);
        src = buf.data();
      }
      S::quantize_row_ref(src, t.blocks_.data() + r * per_row, std::int64_t(cols));
    };
    if constexpr (Reference) {
      std::vector<float> buf(std::same_as<T, float> ? 0 : cols);
      for (std::size_t r = 0; r < rows; ++r) row(r, buf);
    } else {
#pragma omp parallel if (rows * cols > (1u << 16))
      {
        std::vector<float> buf(std::same_as<T, float> ? 0 : cols);
#pragma omp for schedule(static)
        for (std::ptrdiff_t r = 0; r < static_cast<std::ptrdiff_t>(rows); ++r) row(static_cast<std::size_t>(r), buf);
      }
    }
    return t;
  }

  template <bool Reference, element_type T>
  void dequantize_rows_impl(std::size_t r0, std::size_t r1, std::span<T> out) const {
    LORALAB_CHECK(r0 <= r1 && r1 <= rows_, S::quant_type, " dequantize_rows [", r0, ", ", r1, ") outside ", rows_, " rows");
    LORALAB_CHECK(out.size() == (r1 - r0) * cols_, S::quant_type, " dequantize_rows: output has ", out.size(),
                  " elements, needs ", (r1 - r0) * cols_);
    for (std::size_t r = r0; r < r1; ++r) dequantize_row_into(r, out.data() + (r - r0) * cols_, Reference);
  }

  /// Row r into out[0 .. cols): float directly, fp16 / bf16 through a block of floats rounded once.
  template <element_type T>
  void dequantize_row_into(std::size_t r, T* out, bool reference) const {
    const block* src = blocks_.data() + r * (cols_ / block_size);
    if constexpr (std::same_as<T, float>) {
      if (reference) S::dequantize_row_ref(src, out, std::int64_t(cols_));
      else S::dequantize_row(src, out, std::int64_t(cols_));
    } else {
      float tmp[block_size];
      for (std::size_t b = 0; b < cols_ / block_size; ++b) {
        if (reference) S::dequantize_row_ref(src + b, tmp, block_size);
        else S::dequantize_row(src + b, tmp, block_size);
        for (int j = 0; j < block_size; ++j) out[b * block_size + j] = from_float<T>(tmp[j]);
      }
    }
  }

  std::size_t rows_ = 0, cols_ = 0;
  std::vector<block> blocks_;  // rows_ * cols_/32 blocks, row-major: the GGUF bytes
};

}  // namespace loralab::quant

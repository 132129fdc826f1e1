// SPDX-License-Identifier: MIT
#pragma once
// LLM.int8() weight storage (bnb Int8Params / int8_vectorwise_quant), owning its data.
//
//   CB       int8 [rows, cols]   round_half_even(w16 * 127/SCB[r]); outlier columns hold 0
//   SCB      float32 [rows]      max |w16| over the row's non-outlier values (w16 = W rounded to fp16)
//   outliers int32 [m] column indices + fp16 [rows, m] their exact fp16 values (only with threshold > 0)
//
// Dequantized w = CB * SCB * (1/127 as bnb's float literal); outlier columns come back as their fp16 values.
// bnb divides 127/SCB with __fdividef (<= 2 ulp); loralab divides exactly, so a code may differ from a GPU
// run only where w*scale lies within a few ulps of a .5 boundary.
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include <Eigen/Core>

#include "core/check.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant/schemes.hpp"

namespace loralab::quant {

class rowwise_int8_tensor {
 public:
  using scheme = int8_rowwise;
  /// bnb's dequantization constant 7.874015718698502e-3 (1/127) as float32.
  static constexpr float inv127 = 7.874015718698502e-3f;

  rowwise_int8_tensor() = default;

  /// Quantizes a (rows, cols) row-major weight. threshold > 0 keeps columns with any |w| >= threshold in fp16.
  template <element_type T>
  static rowwise_int8_tensor quantize(std::span<const T> w, std::size_t rows, std::size_t cols, float threshold = 0.0f) {
    LORALAB_CHECK(rows * cols == w.size(), "int8 quantize: ", rows, "x", cols, " needs ", rows * cols,
                  " elements, data has ", w.size());
    LORALAB_CHECK(rows > 0 && cols > 0, "int8 quantize: empty tensor (", rows, "x", cols, ")");
    LORALAB_CHECK(threshold >= 0.0f, "int8 quantize: outlier threshold must be >= 0, got ", threshold);
    rowwise_int8_tensor t;
    t.rows_ = rows, t.cols_ = cols;
    const auto w16 = [&](std::size_t i) { return static_cast<float>(Eigen::half(static_cast<float>(w[i]))); };
    const auto is_outlier = [&](float a) { return threshold > 0.0f && std::fabs(a) >= threshold; };

    std::vector<char> outlier_col(cols, 0);
    if (threshold > 0.0f)
      for (std::size_t i = 0; i < w.size(); ++i)
        if (is_outlier(w16(i))) outlier_col[i % cols] = 1;
    for (std::size_t c = 0; c < cols; ++c)
      if (outlier_col[c]) t.outlier_cols_.push_back(static_cast<std::int32_t>(c));
    // bnb zeroes outlier columns only for matrices of more than one row.
    if (rows == 1) std::fill(outlier_col.begin(), outlier_col.end(), 0), t.outlier_cols_.clear();

    t.scb_.assign(rows, 0.0f);
    t.cb_.assign(rows * cols, 0);
#pragma omp parallel for schedule(static) if (rows > 8)
    for (std::ptrdiff_t r = 0; r < static_cast<std::ptrdiff_t>(rows); ++r) {
      const std::size_t row0 = static_cast<std::size_t>(r) * cols;
      float am = 0.0f;
      for (std::size_t c = 0; c < cols; ++c) {
        const float a = w16(row0 + c);
        if (!is_outlier(a)) am = std::fmax(am, std::fabs(a));  // fmax: NaN weights do not enter the absmax
      }
      t.scb_[r] = am;
      const float scale = 127.0f / am;
      for (std::size_t c = 0; c < cols; ++c) {
        const float a = w16(row0 + c);
        const float q = std::nearbyint(a * scale);  // half to even; NaN (0*inf, inf*0, NaN) -> 0 as cvt.rni does
        t.cb_[row0 + c] = (outlier_col[c] || is_outlier(a) || std::isnan(q))
                              ? 0
                              : static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
      }
    }
    t.outlier_values_.resize(rows * t.outlier_cols_.size());
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < t.outlier_cols_.size(); ++j)
        t.outlier_values_[r * t.outlier_cols_.size() + j] = Eigen::half(w16(r * cols + t.outlier_cols_[j]));
    t.outlier_cols_.shrink_to_fit();
    return t;
  }

  /// Dequantizes rows [r0, r1) into out ((r1-r0)*cols, row-major).
  template <element_type T>
  void dequantize_rows(std::size_t r0, std::size_t r1, std::span<T> out) const {
    LORALAB_CHECK(r0 <= r1 && r1 <= rows_, "dequantize_rows [", r0, ", ", r1, ") outside ", rows_, " rows");
    LORALAB_CHECK(out.size() == (r1 - r0) * cols_, "dequantize_rows: output has ", out.size(), " elements, needs ",
                  (r1 - r0) * cols_);
    const std::size_t m = outlier_cols_.size();
    for (std::size_t r = r0; r < r1; ++r) {
      T* dst = out.data() + (r - r0) * cols_;
      for (std::size_t c = 0; c < cols_; ++c)
        dst[c] = from_float<T>(static_cast<float>(cb_[r * cols_ + c]) * scb_[r] * inv127);
      for (std::size_t j = 0; j < m; ++j)
        dst[outlier_cols_[j]] = from_float<T>(static_cast<float>(outlier_values_[r * m + j]));
    }
  }
  template <element_type T>
  void dequantize(std::span<T> out) const { dequantize_rows(0, rows_, out); }

  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t numel() const { return rows_ * cols_; }
  std::vector<std::int64_t> shape() const { return {static_cast<std::int64_t>(rows_), static_cast<std::int64_t>(cols_)}; }
  std::span<const std::int8_t> codes() const { return cb_; }
  std::span<const float> row_absmax() const { return scb_; }
  std::span<const std::int32_t> outlier_columns() const { return outlier_cols_; }

  /// Bytes of the codes CB (int8, one per weight); the rest of storage_bytes() is statistics: SCB and the outlier
  /// columns (stats_bytes).
  std::size_t code_bytes() const { return numel(); }
  std::size_t stats_bytes() const { return storage_bytes() - code_bytes(); }
  /// The dtype bitsandbytes stores the codes in (Int8Params: int8) and their element count.
  static constexpr const char* storage_dtype = "int8";
  std::size_t code_elements() const { return numel(); }
  /// What a (rows, cols) tensor quantized without outliers will allocate: codes, and statistics (SCB).
  static constexpr std::size_t planned_code_bytes(std::size_t rows, std::size_t cols) { return rows * cols; }
  static constexpr std::size_t planned_stats_bytes(std::size_t rows, std::size_t cols) {
    return int8_rowwise::storage_bytes(rows, cols) - planned_code_bytes(rows, cols);
  }

  /// Bytes allocated for CB, SCB and the outlier columns; equals int8_rowwise::storage_bytes(rows, cols, m).
  std::size_t storage_bytes() const {
    return cb_.capacity() + scb_.capacity() * sizeof(float) + outlier_cols_.capacity() * sizeof(std::int32_t) +
           outlier_values_.capacity() * sizeof(Eigen::half);
  }
  double measured_bits_per_param() const { return 8.0 * static_cast<double>(storage_bytes()) / static_cast<double>(numel()); }

 private:
  std::size_t rows_ = 0, cols_ = 0;
  std::vector<std::int8_t> cb_;
  std::vector<float> scb_;
  std::vector<std::int32_t> outlier_cols_;
  std::vector<Eigen::half> outlier_values_;
};

}  // namespace loralab::quant

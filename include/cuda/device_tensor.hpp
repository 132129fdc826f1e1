// SPDX-License-Identifier: MIT
#pragma once
// Device memory for the model on a GPU (host code: built with g++ against the CUDA runtime and cuBLAS; the kernels it
// calls are kernels/*.cu in loralab::cuda):
//
//   device_array<T>   an owned cudaMalloc'd array; copies are device-to-device copies, a move hands it over
//   device_matrix     a row-major (rows, cols) float matrix: what nn::matrix<float> is on the host
//   device_vector     a float vector: what nn::vector<float> is on the host
//   context()         the process's cuBLAS handle (created on first use, on the current device)
//
// Every CUDA or cuBLAS failure becomes a loralab::error naming the operation and the runtime's message.
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/check.hpp"
#include "nn/tensor.hpp"

namespace loralab::cuda {

/// Throws loralab::error when `e` is a failure: "CUDA: <what>: <runtime message>".
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e), " (", cudaGetErrorName(e), ")");
}

/// The cuBLAS handle of this process (one device, the default stream).
inline cublasHandle_t context() {
  struct holder {
    cublasHandle_t h = nullptr;
    holder() {
      const cublasStatus_t s = cublasCreate(&h);
      if (s != CUBLAS_STATUS_SUCCESS) fail("CUDA: cuBLAS could not start (status ", int(s), "): is a device free and the driver loaded?");
    }
    ~holder() { cublasDestroy(h); }
  };
  static holder one;
  return one.h;
}

template <class T>
class device_array {
 public:
  device_array() = default;
  explicit device_array(std::size_t n) { resize(n); }
  device_array(const device_array& o) { *this = o; }
  device_array(device_array&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
  device_array& operator=(const device_array& o) {
    if (this != &o) {
      resize(o.n_);
      if (n_) check_cuda(cudaMemcpy(p_, o.p_, n_ * sizeof(T), cudaMemcpyDeviceToDevice), "copy on the device");
    }
    return *this;
  }
  device_array& operator=(device_array&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr), n_ = std::exchange(o.n_, 0), cap_ = std::exchange(o.cap_, 0);
    }
    return *this;
  }
  ~device_array() { release(); }

  /// n elements; the allocation grows (contents lost) only when n exceeds what it holds.
  void resize(std::size_t n) {
    if (n > cap_) {
      release();
      check_cuda(cudaMalloc(&p_, n * sizeof(T)), ("allocate " + std::to_string(n * sizeof(T)) + " bytes").c_str());
      cap_ = n;
    }
    n_ = n;
  }
  void zero() {
    if (n_) check_cuda(cudaMemset(p_, 0, n_ * sizeof(T)), "zero device memory");
  }
  void upload(std::span<const T> h) {
    resize(h.size());
    if (n_) check_cuda(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "copy to the device");
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    if (n_) check_cuda(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "copy from the device");
    return h;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t capacity_bytes() const { return cap_ * sizeof(T); }

 private:
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr, n_ = 0, cap_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0, cap_ = 0;
};

/// A row-major float matrix in device memory, with the parts of Eigen's interface the model uses.
class device_matrix {
 public:
  device_matrix() = default;
  device_matrix(Eigen::Index rows, Eigen::Index cols) { resize(rows, cols); }
  device_matrix(const device_matrix&) = default;
  device_matrix& operator=(const device_matrix&) = default;
  /// A moved-from matrix is empty (0 × 0), as a moved-from Eigen matrix is.
  device_matrix(device_matrix&& o) noexcept : a_(std::move(o.a_)), rows_(std::exchange(o.rows_, 0)), cols_(std::exchange(o.cols_, 0)) {}
  device_matrix& operator=(device_matrix&& o) noexcept {
    a_ = std::move(o.a_);
    rows_ = std::exchange(o.rows_, 0), cols_ = std::exchange(o.cols_, 0);
    return *this;
  }
  Eigen::Index rows() const { return rows_; }
  Eigen::Index cols() const { return cols_; }
  Eigen::Index size() const { return rows_ * cols_; }
  float* data() { return a_.data(); }
  const float* data() const { return a_.data(); }
  void resize(Eigen::Index rows, Eigen::Index cols) {
    a_.resize(std::size_t(rows * cols));
    rows_ = rows, cols_ = cols;
  }
  /// A zero matrix: on the device only adapters train, so a dense gradient is never asked for.
  [[noreturn]] static device_matrix Zero(Eigen::Index, Eigen::Index) {
    fail("--device cuda trains LoRA adapters only: embeddings, norms and base weights stay frozen there (full fine-tuning "
         "runs on the CPU)");
  }
  static device_matrix from_host(const nn::matrix<float>& m) {
    device_matrix d;
    d.rows_ = m.rows(), d.cols_ = m.cols();
    d.a_.upload(std::span<const float>(m.data(), std::size_t(m.size())));
    return d;
  }
  nn::matrix<float> to_host() const {
    nn::matrix<float> m(rows_, cols_);
    const std::vector<float> h = a_.download();
    if (!h.empty()) std::memcpy(m.data(), h.data(), h.size() * sizeof(float));
    return m;
  }

 private:
  device_array<float> a_;
  Eigen::Index rows_ = 0, cols_ = 0;
};

/// A float vector in device memory (norm gains, per-row statistics).
class device_vector {
 public:
  device_vector() = default;
  explicit device_vector(Eigen::Index n) { resize(n); }
  Eigen::Index size() const { return Eigen::Index(a_.size()); }
  float* data() { return a_.data(); }
  const float* data() const { return a_.data(); }
  void resize(Eigen::Index n) { a_.resize(std::size_t(n)); }
  [[noreturn]] static device_vector Zero(Eigen::Index) { (void)device_matrix::Zero(0, 0); }
  static device_vector from_host(const nn::vector<float>& v) {
    device_vector d;
    d.a_.upload(std::span<const float>(v.data(), std::size_t(v.size())));
    return d;
  }
  nn::vector<float> to_host() const {
    const std::vector<float> h = a_.download();
    return Eigen::Map<const nn::vector<float>>(h.data(), Eigen::Index(h.size()));
  }

 private:
  device_array<float> a_;
};

/// Bytes a device tensor holds (its elements, as nn::bytes_of counts a host one): found by argument-dependent lookup.
inline std::size_t bytes_of(const device_matrix& m) { return std::size_t(m.size()) * sizeof(float); }
inline std::size_t bytes_of(const device_vector& v) { return std::size_t(v.size()) * sizeof(float); }
template <class T>
std::size_t bytes_of(const device_array<T>& a) {
  return a.capacity_bytes();
}

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// Linear layers in GPU memory, with the interface of nn::linear (forward, backward, the memory questions) on device
// matrices, so that lora::lora_linear and nn::llama_model take them as their Base:
//
//   device_linear<dense_device_weight>          a frozen float32 weight (N, K): one SGEMM each way
//   device_linear<weight_4bit_device>           a frozen nf4/fp4 weight (± double quantization): the codes as the
//                                               host quantized them (bnb's bytes), dequantized in tiles of 128 rows
//                                               into a shared workspace and multiplied by cuBLAS (kernels/linear.cu);
//                                               one token (M = 1, generation) by the 4-bit GEMV on the packed codes
//   device_linear<W, nn::compute<nn::bf16>>     either with bf16 operands and float accumulation (cublasGemmEx), as
//                                               nn::linear<W, compute<bf16>>; the tied head of such a model too
//
// A LoRA adapter over one of them keeps its A and B in host memory (the optimizer's, the checkpoints' and PEFT's
// copy); forward uploads them, backward computes the step's dA and dB on the device and adds them to the host's
// (r·(K+N) floats each way per layer and micro-batch). With double quantization the block absmax is held on the
// device as the float32 values the host dequantizes through (4 bytes per block instead of ~1): the memory report
// shows what the device holds.
#include <algorithm>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "cuda/device_ops.hpp"
#include "cuda/device_tensor.hpp"
#include "gemv_4bit.cuh"
#include "linear.cuh"
#include "linear_bf16.cuh"
#include "lora/dropout_mask.hpp"
#include "nn/compute.hpp"
#include "nn/linear.hpp"
#include "nn/memory_report.hpp"
#include "nn/storage.hpp"
#include "quant/quantized_tensor.hpp"
#include "quant_4bit.cuh"

namespace loralab::cuda {

/// The buffers a device model lends its layers (nn::shared_workspace on the host): the dequantization tile and the
/// adapters' dropout buffers, each sized for its largest user.
struct device_workspace {
  device_array<float> tile, scratch;
  device_array<std::uint16_t> bf16;  ///< compute<bf16>: a call's operands in bf16 (input or output gradient, then W)
  std::size_t bytes() const { return tile.capacity_bytes() + scratch.capacity_bytes() + bf16.capacity_bytes(); }
};

struct device_storage;

/// A frozen float32 weight (N, K) in device memory.
struct dense_device_weight {
  using scalar = float;
  device_matrix w;
  device_matrix grad;  // always empty: the model's parameter list (nn::llama_model::for_each_parameter) asks for it
  bool trainable() const { return false; }
  void set_trainable(bool on) { LORALAB_CHECK(!on, "--device cuda: base weights are frozen there: train an adapter"); }
  std::size_t weight_bytes() const { return bytes_of(w); }
  std::size_t stats_bytes() const { return 0; }
  std::size_t grad_bytes() const { return 0; }
  static constexpr std::size_t planned_weight_bytes(std::size_t n, std::size_t k) { return sizeof(float) * n * k; }
  static constexpr std::size_t planned_stats_bytes(std::size_t, std::size_t) { return 0; }
  static constexpr const char* storage_dtype = "float32";
  std::size_t stored_elements() const { return std::size_t(w.size()); }
  Eigen::Index rows() const { return w.rows(); }
  Eigen::Index cols() const { return w.cols(); }
  static std::string label() { return "cuda dense_weight<float32>"; }
  static constexpr bool tiled = false;
};

/// A frozen 4-bit blockwise weight (bitsandbytes' nf4 / fp4, any block size, ± double quantization) in device memory.
/// One type for every 4-bit scheme (the code table and block size are values): a program that offers them all
/// compiles one device model, not one per scheme.
struct weight_4bit_device {
  using scalar = float;
  code4 type = code4::nf4;
  int block = 64;
  std::string scheme;                // the host scheme's label (nf4-b64-dq, …), for messages
  device_array<std::uint8_t> codes;  // (N·K + 1) / 2 packed codes, as bnb stores them
  device_array<float> absmax;        // one per block
  Eigen::Index n = 0, k = 0;

  bool trainable() const { return false; }
  void set_trainable(bool on) { LORALAB_CHECK(!on, "a quantized weight (", scheme, ") is frozen: train an adapter instead"); }
  std::size_t weight_bytes() const { return codes.size(); }
  std::size_t stats_bytes() const { return absmax.size() * sizeof(float); }
  std::size_t grad_bytes() const { return 0; }
  std::size_t planned_weight_bytes(std::size_t n_, std::size_t k_) const { return (n_ * k_ + 1) / 2; }
  std::size_t planned_stats_bytes(std::size_t n_, std::size_t k_) const { return sizeof(float) * ((n_ * k_ + block - 1) / block); }
  static constexpr const char* storage_dtype = "uint8";
  std::size_t stored_elements() const { return codes.size(); }
  Eigen::Index rows() const { return n; }
  Eigen::Index cols() const { return k; }
  static std::string label() { return "cuda quant_weight<4-bit>"; }
  static constexpr bool tiled = true;

  /// The host's quantized tensor, byte for byte (codes) and value for value (the absmax it dequantizes through).
  template <class Scheme>
  static weight_4bit_device from_host(const quant::quantized_tensor<Scheme>& q) requires(!std::is_void_v<Scheme>) {
    static_assert(Scheme::bits == 4 && (Scheme::quant_type == "nf4" || Scheme::quant_type == "fp4"),
                  "weight_4bit_device: the scheme is nf4<B> or fp4<B>, with or without double_quant");
    weight_4bit_device d;
    d.type = Scheme::quant_type == "nf4" ? code4::nf4 : code4::fp4;
    d.block = Scheme::block_size;
    d.scheme = quant::scheme_label<Scheme>();
    d.n = Eigen::Index(q.rows()), d.k = Eigen::Index(q.cols());
    d.codes.upload(q.codes());
    const std::vector<float> am = q.block_absmax();
    d.absmax.upload(std::span<const float>(am));
    return d;
  }
  weight_4bit view() const { return {type, block, codes.data(), absmax.data(), int(n), int(k)}; }
  /// Rows per dequantization tile: 128 when a tile of 128 rows starts on a block boundary, else the whole weight.
  int tile_rows() const {
    return (std::size_t(128) * std::size_t(k)) % std::size_t(block) == 0 ? int(std::min<Eigen::Index>(128, n)) : int(n);
  }
};

/// A frozen linear layer in device memory: nn::linear's interface over device matrices. Compute as nn::linear's:
/// compute<float> (SGEMM) or compute<bf16> (bf16 operands, float accumulation: kernels/linear_bf16.cuh).
template <class Weight, class Compute = nn::compute<float>>
struct device_linear {
  using weight_type = Weight;
  using compute_type = Compute;
  using scalar = float;
  using storage = device_storage;
  Weight weight;
  device_workspace* shared = nullptr;

  Eigen::Index in_features() const { return weight.cols(); }
  Eigen::Index out_features() const { return weight.rows(); }

  /// y (M, N) = x (M, K) Wᵀ
  void forward(const device_matrix& x, device_matrix& y) const {
    LORALAB_CHECK(x.cols() == in_features(), "linear: input has ", x.cols(), " features, weight expects ", in_features());
    const int M = int(x.rows()), N = int(out_features()), K = int(in_features());
    y.resize(M, N);
    if constexpr (bf16) {
      if constexpr (Weight::tiled) {
        std::uint16_t* xb = bf16_buffer(std::size_t(M) * K);
        check_cuda(frozen_linear_forward_bf16(context(), weight.view(), x.data(), M, y.data(), xb, xb + std::size_t(M) * K,
                                              weight.tile_rows()),
                   "frozen linear forward (bf16)");
      } else {
        std::uint16_t* xb = bf16_buffer(std::size_t(M) * K);
        check_cuda(to_bf16(x.data(), std::size_t(M) * K, xb), "bf16 conversion");
        check_cuda(gemm_rm_bf16(context(), false, true, M, N, K, 1.0f, xb, K, weight_bf16(xb + std::size_t(M) * K), K, 0.0f, y.data(), N),
                   "linear forward (bf16)");
      }
    } else if constexpr (Weight::tiled) {
      if (M == 1 && K % 8 == 0 && weight.block % 8 == 0)  // one token (generation): the codes read packed, no tile
        check_cuda(gemv_4bit(weight.view(), x.data(), y.data()), "4-bit GEMV");
      else
        check_cuda(frozen_linear_forward(context(), weight.view(), x.data(), M, y.data(), tile(), weight.tile_rows()),
                   "frozen linear forward");
    } else {
      check_cuda(gemm_rm(context(), false, true, M, N, K, 1.0f, x.data(), K, weight.w.data(), K, 0.0f, y.data(), N), "linear forward");
    }
  }
  /// dx (M, K) = dy (M, N) W (the weight is frozen: no gradient).
  void backward(const device_matrix&, const device_matrix& dy, device_matrix& dx) {
    const int M = int(dy.rows()), N = int(out_features()), K = int(in_features());
    dx.resize(M, K);
    if constexpr (bf16) {
      std::uint16_t* db = bf16_buffer(std::size_t(M) * N);
      if constexpr (Weight::tiled) {
        check_cuda(frozen_linear_backward_bf16(context(), weight.view(), dy.data(), M, dx.data(), db, db + std::size_t(M) * N,
                                               weight.tile_rows()),
                   "frozen linear backward (bf16)");
      } else {
        check_cuda(to_bf16(dy.data(), std::size_t(M) * N, db), "bf16 conversion");
        check_cuda(gemm_rm_bf16(context(), false, false, M, K, N, 1.0f, db, N, weight_bf16(db + std::size_t(M) * N), K, 0.0f, dx.data(), K),
                   "linear backward (bf16)");
      }
    } else if constexpr (Weight::tiled) {
      check_cuda(frozen_linear_backward(context(), weight.view(), dy.data(), M, dx.data(), tile(), weight.tile_rows()),
                 "frozen linear backward");
    } else {
      check_cuda(gemm_rm(context(), false, false, M, K, N, 1.0f, dy.data(), N, weight.w.data(), K, 0.0f, dx.data(), K), "linear backward");
    }
  }

  // ---- a LoRA adapter's branch (called by lora::lora_linear over this base) -------------------------------------

  /// y += s · (drop(x) Aᵀ) Bᵀ with the host adapter's A, B, scaling and dropout mask (seed, first row).
  template <class Adapter>
  void adapter_forward(const Adapter& a, const device_matrix& x, device_matrix& y) const {
    const int M = int(x.rows()), K = int(in_features()), N = int(out_features()), r = a.rank();
    mirror_.A.upload(std::span<const float>(a.A.data(), std::size_t(a.A.size())));
    mirror_.B.upload(std::span<const float>(a.B.data(), std::size_t(a.B.size())));
    mirror_.h.resize(std::size_t(M) * r);
    const dropout_mask drop = mask_of(a, K);
    float* xd = drop.p > 0 ? scratch(std::size_t(M) * K) : nullptr;
    check_cuda(lora_forward(context(), x.data(), M, K, N, r, mirror_.A.data(), mirror_.B.data(), float(a.scaling), drop, xd,
                            mirror_.h.data(), y.data()),
               "LoRA forward");
  }
  /// dx += the adapter's part; the host adapter's dA, dB += this micro-batch's (computed on the device from zero).
  template <class Adapter>
  void adapter_backward(Adapter& a, const device_matrix& x, const device_matrix& dy, device_matrix& dx) {
    const int M = int(x.rows()), K = int(in_features()), N = int(out_features()), r = a.rank();
    mirror_.dA.resize(std::size_t(r) * K), mirror_.dB.resize(std::size_t(N) * r), mirror_.dh.resize(std::size_t(M) * r);
    mirror_.dA.zero(), mirror_.dB.zero();
    const dropout_mask drop = mask_of(a, K);
    float* xd = drop.p > 0 ? scratch(2 * std::size_t(M) * K) : nullptr;
    check_cuda(lora_backward(context(), x.data(), dy.data(), M, K, N, r, mirror_.A.data(), mirror_.B.data(), float(a.scaling), drop, xd,
                             mirror_.h.data(), mirror_.dh.data(), xd ? xd + std::size_t(M) * K : nullptr, mirror_.dA.data(),
                             mirror_.dB.data(), dx.data()),
               "LoRA backward");
    const std::vector<float> dA = mirror_.dA.download(), dB = mirror_.dB.download();
    for (std::size_t i = 0; i < dA.size(); ++i) a.dA.data()[i] += dA[i];
    for (std::size_t i = 0; i < dB.size(); ++i) a.dB.data()[i] += dB[i];
  }

  // ---- memory: the questions a model asks every layer ------------------------------------------------------------

  nn::memory_report memory() const {
    nn::memory_report m;
    m.weights = weight.weight_bytes(), m.quant_stats = weight.stats_bytes();
    m.workspace = mirror_.bytes() + (shared ? 0 : own_.bytes());
    return m;
  }
  nn::memory_report planned_memory(std::size_t) const {
    const std::size_t N = std::size_t(out_features()), K = std::size_t(in_features());
    nn::memory_report m;
    m.weights = weight.planned_weight_bytes(N, K), m.quant_stats = weight.planned_stats_bytes(N, K);
    return m;
  }
  /// The tile of a 4-bit weight; an adapter's dropout buffers (lora_linear adds those) are the scratch.
  nn::shared_sizes planned_shared(std::size_t M) const {
    const std::size_t N = std::size_t(out_features()), K = std::size_t(in_features());
    if constexpr (bf16) return {0, 0, M * std::max(K, N) + (Weight::tiled ? std::size_t(weight.tile_rows()) * K : N * K)};
    else return {tile_elements(), 0, 0};
  }
  void share(device_workspace& w) { shared = &w; }

 private:
  struct adapter_mirror {
    device_array<float> A, B, dA, dB, h, dh;
    std::size_t bytes() const {
      return A.capacity_bytes() + B.capacity_bytes() + dA.capacity_bytes() + dB.capacity_bytes() + h.capacity_bytes() + dh.capacity_bytes();
    }
  };
  static constexpr bool bf16 = nn::is_bf16_compute<Compute>;

  std::size_t tile_elements() const {
    if constexpr (bf16) return 0;
    else if constexpr (Weight::tiled) return std::size_t(weight.tile_rows()) * std::size_t(in_features());
    else return 0;
  }
  device_workspace& buffers() const { return shared ? *shared : own_; }
  float* tile() const {
    device_array<float>& t = buffers().tile;
    if (t.size() < tile_elements()) t.resize(tile_elements());
    return t.data();
  }
  /// The bf16 buffer: `operands` elements of a call's input (or output gradient), then W's bf16 tile (4-bit) or
  /// whole bf16 copy (dense, converted per call as the host does).
  std::uint16_t* bf16_buffer(std::size_t operands) const {
    const std::size_t n = operands + (Weight::tiled ? std::size_t(weight.tile_rows()) : std::size_t(out_features())) *
                                         std::size_t(in_features());
    device_array<std::uint16_t>& b = buffers().bf16;
    if (b.size() < n) b.resize(n);
    return b.data();
  }
  /// A dense weight rounded to bf16 into `out` (N·K), for one product.
  const std::uint16_t* weight_bf16(std::uint16_t* out) const {
    if constexpr (!Weight::tiled) check_cuda(to_bf16(weight.w.data(), std::size_t(weight.w.size()), out), "bf16 conversion");
    return out;
  }
  float* scratch(std::size_t n) const {
    device_array<float>& s = buffers().scratch;
    if (s.size() < n) s.resize(n);
    return s.data();
  }
  template <class Adapter>
  static dropout_mask mask_of(const Adapter& a, int K) {
    if (!(a.dropout > 0 && a.training)) return {};
    return {a.dropout, a.dropout_seed, std::uint64_t(a.dropout_first_row) * std::uint64_t(K)};
  }

  mutable adapter_mirror mirror_;
  mutable device_workspace own_;
};

/// Where a device model's tensors live (nn/storage.hpp): device matrices, the device rotary table, a device head.
struct device_storage {
  using matrix_type = device_matrix;
  using vector_type = device_vector;
  using rotary_type = device_rotary;
  using head_type = device_linear<dense_device_weight>;
  using shared_type = device_workspace;
  static constexpr bool on_device = true;
};

// ---- the tied head of a compute<bf16> model (nn/storage.hpp's twins) -----------------------------------------------

namespace detail {
inline void tied_head_product_bf16(const device_matrix& a, const device_matrix& embed, device_matrix& out, bool embed_transposed,
                                   device_workspace& w) {
  const int M = int(a.rows()), C = int(embed.cols()), V = int(embed.rows());
  const int K = embed_transposed ? C : V, N = embed_transposed ? V : C;
  const std::size_t need = nn::tied_head_bf16_elements(std::size_t(V), std::size_t(C), std::size_t(M));
  if (w.bf16.size() < need) w.bf16.resize(need);
  std::uint16_t* eb = w.bf16.data();                  // (V, C)
  std::uint16_t* ab = eb + std::size_t(V) * C;        // (M, K)
  check_cuda(to_bf16(embed.data(), std::size_t(V) * C, eb), "bf16 conversion");
  check_cuda(to_bf16(a.data(), std::size_t(M) * K, ab), "bf16 conversion");
  out.resize(M, N);
  check_cuda(gemm_rm_bf16(context(), false, embed_transposed, M, N, K, 1.0f, ab, K, eb, C, 0.0f, out.data(), N), "LM head (bf16)");
}
}  // namespace detail

inline void tied_head_forward_bf16(const device_matrix& x, const device_matrix& embed, device_matrix& logits, device_workspace& w) {
  detail::tied_head_product_bf16(x, embed, logits, /*embed_transposed=*/true, w);
}
inline void tied_head_backward_bf16(const device_matrix&, const device_matrix& dlogits, const device_matrix& embed, device_matrix& dx,
                                    device_matrix& embed_grad, device_workspace& w) {
  if (embed_grad.size()) (void)device_matrix::Zero(0, 0);  // refuses: a trainable embedding
  detail::tied_head_product_bf16(dlogits, embed, dx, /*embed_transposed=*/false, w);
}

}  // namespace loralab::cuda

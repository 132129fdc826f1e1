// SPDX-License-Identifier: MIT
#pragma once
// The Llama decoder (Touvron et al. 2023) with forward and backward, over any linear layer type:
//   llama_model<linear<dense_weight<float>>>         a float model (double for gradient checks)
//   llama_model<linear<quant_weight<nf4<64>>>>       frozen 4-bit linears, float norms and embeddings (as bnb)
//   llama_model<lora_linear<cuda::device_linear<…>>> the same model in GPU memory (include/cuda/): the linear type's
//                                                    storage (nn/storage.hpp) gives the tensors' types, and the
//                                                    unqualified operations below resolve to the device's
//
// Per block (x is the residual stream, (B·T, C)):
//   x1 = x  + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),   n1 = rms_norm(x)
//   x' = x1 + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                          n2 = rms_norm(x1)
// then logits = rms_norm(x) Eᵀ (tied) or lm_head. Parameter gradients accumulate (+=); activation gradients are
// assigned (=), except on the residual stream, which adds (llm.c's rule).
//
// Gradient checkpointing keeps only each block's input and recomputes the block inside backward.
#include <algorithm>
#include <functional>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "nn/attention.hpp"
#include "nn/config.hpp"
#include "nn/cross_entropy.hpp"
#include "nn/linear.hpp"
#include "nn/memory_report.hpp"
#include "nn/rms_norm.hpp"
#include "nn/rotary.hpp"
#include "nn/storage.hpp"
#include "nn/swiglu.hpp"
#include "nn/tensor.hpp"

namespace loralab::nn {

/// A norm gain with an optional gradient (allocated only when trainable), in host or device memory.
template <class S, class Vec = vector<S>>
struct norm_weight {
  Vec g, grad;
  bool trainable() const { return grad.size() != 0; }
  void set_trainable(bool on) { grad = on ? Vec::Zero(g.size()) : Vec(); }
};

template <class Linear>
struct decoder_block {
  using S = typename Linear::scalar;
  norm_weight<S, typename storage_of<Linear>::vector_type> input_layernorm, post_attention_layernorm;
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;

  /// Visits the seven linear layers with their HF names relative to the block.
  template <class F>
  void for_each_linear(F&& f) { visit(*this, f); }
  template <class F>
  void for_each_linear(F&& f) const { visit(*this, f); }

 private:
  template <class Self, class F>
  static void visit(Self& b, F& f) {
    f("self_attn.q_proj", b.q_proj), f("self_attn.k_proj", b.k_proj), f("self_attn.v_proj", b.v_proj);
    f("self_attn.o_proj", b.o_proj), f("mlp.gate_proj", b.gate_proj), f("mlp.up_proj", b.up_proj);
    f("mlp.down_proj", b.down_proj);
  }
};

/// What one block's forward keeps for its backward (Mat, Vec: the storage's matrix and vector types).
template <class S, class Mat = matrix<S>, class Vec = vector<S>>
struct block_activations {
  Mat x;                         // block input (B·T, C): kept even with checkpointing
  Mat n1, q, k, v, probs;        // n1 (B·T, C), q (B·T, C), k, v (B·T, Hkv·D), probs (B·H·T, T)
  Mat att, x1, n2;               // (B·T, C)
  Mat gate, up, h;               // (B·T, F)
  Vec rstd1, rstd2;              // (B·T)

  std::size_t bytes() const {
    return bytes_of(x) + bytes_of(n1) + bytes_of(q) + bytes_of(k) + bytes_of(v) + bytes_of(probs) + bytes_of(att) +
           bytes_of(x1) + bytes_of(n2) + bytes_of(gate) + bytes_of(up) + bytes_of(h) + bytes_of(rstd1) + bytes_of(rstd2);
  }
};

template <class Linear>
class llama_model {
 public:
  using linear_type = Linear;
  using S = typename Linear::scalar;
  /// Where the tensors live and which functions compute on them (nn/storage.hpp): the host, or a device.
  using storage = storage_of<Linear>;
  using matrix_type = typename storage::matrix_type;
  using vector_type = typename storage::vector_type;

  llama_config config;
  matrix_type embed;             // (V, C) model.embed_tokens.weight
  matrix_type embed_grad;        // (V, C) when trainable
  std::vector<decoder_block<Linear>> layers;
  norm_weight<S, vector_type> final_norm;  // model.norm.weight
  typename storage::head_type lm_head;     // (V, C) only when untied
  bool gradient_checkpointing = false;

  /// Builds a model from a validated file; make_linear(name, data, N, K) creates each of the 7·L linears.
  template <class MakeLinear>
  static llama_model from_file(const model_file& f, MakeLinear&& make_linear) {
    validate_model_file(f, "model");
    llama_model m;
    m.config = f.config;
    const auto& c = f.config;
    const auto get = [&](const std::string& name) -> const tensor_f32& { return f.tensors.at(name); };
    const auto& e = get("model.embed_tokens.weight");
    m.embed = Eigen::Map<const matrix<float>>(e.data.data(), c.vocab_size, c.dim).cast<S>();
    m.layers.resize(std::size_t(c.n_layers));
    for (int l = 0; l < c.n_layers; ++l) {
      auto& b = m.layers[std::size_t(l)];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      b.input_layernorm.g = Eigen::Map<const vector<float>>(get(p + "input_layernorm.weight").data.data(), c.dim).cast<S>();
      b.post_attention_layernorm.g =
          Eigen::Map<const vector<float>>(get(p + "post_attention_layernorm.weight").data.data(), c.dim).cast<S>();
      b.for_each_linear([&](const std::string& rel, Linear& lin) {
        const auto& t = get(p + rel + ".weight");
        lin = make_linear(p + rel, t.data.data(), Eigen::Index(t.shape[0]), Eigen::Index(t.shape[1]));
      });
    }
    m.final_norm.g = Eigen::Map<const vector<float>>(get("model.norm.weight").data.data(), c.dim).cast<S>();
    if (!c.tie_word_embeddings) m.lm_head = make_dense_linear<S>(get("lm_head.weight").data.data(), c.vocab_size, c.dim);
    m.init_runtime();
    return m;
  }

  /// A second model with the same weights, adapters and settings and buffers of its own: a replica that trains beside
  /// this one on other rows of a batch (train/trainer.hpp). A plain copy would share the buffers, so it does not compile.
  llama_model clone() const {
    llama_model c;
    c.config = config, c.embed = embed, c.embed_grad = embed_grad, c.layers = layers, c.final_norm = final_norm;
    c.lm_head = lm_head, c.gradient_checkpointing = gradient_checkpointing;
    c.init_runtime();
    return c;
  }

  /// Rotary tables and the buffers every layer shares (call after changing config or layers).
  void init_runtime() {
    rope_ = typename storage::rotary_type(config.head_dim(), config.max_seq_len, config.rope_theta);
    for (auto& b : layers) b.for_each_linear([&](const std::string&, Linear& lin) { lin.share(*shared_); });
    lm_head.share(*shared_);
  }

  /// Visits every linear layer with its full HF module name (model.layers.3.self_attn.q_proj).
  template <class F>
  void for_each_linear(F&& f) {
    for (std::size_t l = 0; l < layers.size(); ++l)
      layers[l].for_each_linear([&](const std::string& rel, Linear& lin) { f("model.layers." + std::to_string(l) + "." + rel, lin); });
  }

  /// A named dense parameter: its values, its gradient (nullptr while frozen) and its element count.
  struct parameter_view {
    S* value;
    S* grad;
    Eigen::Index size;
  };

  /// Visits every dense parameter by its HF name (model.embed_tokens.weight, model.layers.0.input_layernorm.weight,
  /// model.layers.0.self_attn.q_proj.weight, …): the one list that gradient checks, optimizers and exports walk.
  /// Quantized and bf16 linears are frozen storage, not parameters, and are not visited.
  template <class F>
  void for_each_parameter(F&& f) {
    const auto view = [](auto& value, auto& grad) { return parameter_view{value.data(), grad.size() ? grad.data() : nullptr, value.size()}; };
    f(std::string("model.embed_tokens.weight"), view(embed, embed_grad));
    for (std::size_t l = 0; l < layers.size(); ++l) {
      auto& b = layers[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      f(p + "input_layernorm.weight", view(b.input_layernorm.g, b.input_layernorm.grad));
      f(p + "post_attention_layernorm.weight", view(b.post_attention_layernorm.g, b.post_attention_layernorm.grad));
      if constexpr (is_dense)
        b.for_each_linear([&](const std::string& rel, Linear& lin) { f(p + rel + ".weight", view(lin.weight.w, lin.weight.grad)); });
    }
    f(std::string("model.norm.weight"), view(final_norm.g, final_norm.grad));
    if (!config.tie_word_embeddings) f(std::string("lm_head.weight"), view(lm_head.weight.w, lm_head.weight.grad));
  }

  /// Makes every parameter trainable (gradient checks, full fine-tuning) or frozen. Quantized linears stay frozen.
  void set_all_trainable(bool on) {
    embed_grad = on ? matrix_type::Zero(embed.rows(), embed.cols()) : matrix_type();
    for (auto& b : layers) {
      b.input_layernorm.set_trainable(on), b.post_attention_layernorm.set_trainable(on);
      if constexpr (std::same_as<typename Linear::weight_type, dense_weight<S>>)  // quantized linears stay frozen
        b.for_each_linear([&](const std::string&, Linear& lin) { lin.weight.set_trainable(on); });
    }
    final_norm.set_trainable(on);
    if (!config.tie_word_embeddings) lin_set_trainable(lm_head, on);
  }

  // ---- forward / backward -------------------------------------------------------------------------------------

  /// Runs B sequences of T tokens (row-major (B, T) ids) and returns logits (B·T, V).
  const matrix_type& forward(const std::vector<int>& tokens, int B, int T) {
    check_batch(tokens, B, T);
    B_ = B, T_ = T;
    tokens_ = tokens;
    pos_.resize(std::size_t(B) * T);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t) pos_[std::size_t(b) * T + t] = t;
    acts_.resize(layers.size());
    matrix_type x;
    embedding_forward(embed, tokens, x);
    if (!gradient_checkpointing) scratch_ = activations();
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (gradient_checkpointing) {  // keep the input only; compute in the shared scratch
        drop_intermediates(acts_[l]);
        acts_[l].x = x;
        scratch_.x = std::move(x);
        block_forward(layers[l], scratch_, x);
      } else {
        acts_[l].x = std::move(x);
        block_forward(layers[l], acts_[l], x);
      }
    }
    rms_norm_forward(x, final_norm.g, S(config.rms_norm_eps), xf_, rstdf_);
    x_last_ = std::move(x);
    if (config.tie_word_embeddings) {
      const core::serial_blas_if_small small(double(xf_.rows()), double(embed.rows()), double(embed.cols()));
      if constexpr (bf16_head) {  // the frozen base's products in bf16: the tied head is one of them
        tied_head_forward_bf16(xf_, embed, logits_, *shared_);
      } else {
        tied_head_forward(xf_, embed, logits_);
      }
    } else {
      lm_head.forward(xf_, logits_);
    }
    return logits_;
  }

  /// Mean cross-entropy of the last forward's logits against targets (−100 = ignored). With denominator > 0
  /// the sum is divided by it instead (a gradient-accumulation window's token count).
  double loss(const std::vector<int>& targets, double denominator = 0) {
    return cross_entropy(logits_, targets, &ws_.dlogits, nullptr, denominator);
  }

  /// Back-propagates the last loss() into every trainable parameter's gradient (+=).
  void backward() {
    LORALAB_CHECK(ws_.dlogits.rows() == logits_.rows() && logits_.rows() > 0, "backward() needs forward() and loss() first");
    // head
    if (config.tie_word_embeddings) {
      const core::serial_blas_if_small small(double(xf_.rows()), double(embed.rows()), double(embed.cols()));
      if constexpr (bf16_head) {
        tied_head_backward_bf16(xf_, ws_.dlogits, embed, ws_.dxf, embed_grad, *shared_);
      } else {
        tied_head_backward(xf_, ws_.dlogits, embed, ws_.dxf, embed_grad);
      }
    } else {
      lm_head.backward(xf_, ws_.dlogits, ws_.dxf);
    }
    rms_norm_backward(x_last_, final_norm.g, rstdf_, ws_.dxf, ws_.dx, final_norm.trainable() ? &final_norm.grad : nullptr);
    for (std::size_t l = layers.size(); l-- > 0;) {
      auto& blk = layers[l];
      activations* a = &acts_[l];
      if (gradient_checkpointing) {  // recompute this block's intermediates from its kept input
        scratch_.x = acts_[l].x;
        block_forward(blk, scratch_, ws_.tmp, /*output=*/false);
        a = &scratch_;
      }
      // MLP: x' = x1 + down(h); ws_.dx holds dL/dx'
      blk.down_proj.backward(a->h, ws_.dx, ws_.dh);
      swiglu_backward(a->gate, a->up, ws_.dh, ws_.dgate, ws_.dup);
      blk.gate_proj.backward(a->n2, ws_.dgate, ws_.dn);
      blk.up_proj.backward(a->n2, ws_.dup, ws_.tmp);
      add_into(ws_.dn, ws_.tmp);
      rms_norm_backward(a->x1, blk.post_attention_layernorm.g, a->rstd2, ws_.dn, ws_.tmp,
                        blk.post_attention_layernorm.trainable() ? &blk.post_attention_layernorm.grad : nullptr);
      add_into(ws_.dx, ws_.tmp);  // residual: dL/dx1
      // attention: x1 = x + o_proj(att)
      blk.o_proj.backward(a->att, ws_.dx, ws_.datt);
      attention_backward(shape(), a->q, a->k, a->v, a->probs, ws_.datt, ws_.dq, ws_.dk, ws_.dv);
      apply_rotary(ws_.dq, config.n_heads, rope_, pos_, /*inverse=*/true);
      apply_rotary(ws_.dk, config.n_kv_heads, rope_, pos_, /*inverse=*/true);
      blk.q_proj.backward(a->n1, ws_.dq, ws_.dn);
      blk.k_proj.backward(a->n1, ws_.dk, ws_.tmp);
      add_into(ws_.dn, ws_.tmp);
      blk.v_proj.backward(a->n1, ws_.dv, ws_.tmp);
      add_into(ws_.dn, ws_.tmp);
      rms_norm_backward(a->x, blk.input_layernorm.g, a->rstd1, ws_.dn, ws_.tmp,
                        blk.input_layernorm.trainable() ? &blk.input_layernorm.grad : nullptr);
      add_into(ws_.dx, ws_.tmp);  // residual: dL/dx
    }
    if (embed_grad.size()) embedding_backward(ws_.dx, tokens_, embed_grad);
  }

  /// Zeroes every gradient buffer.
  void zero_grad() {
    for_each_parameter([](const std::string&, parameter_view p) {
      if (p.grad) std::fill(p.grad, p.grad + p.size, S(0));
    });
  }

  // ---- memory -------------------------------------------------------------------------------------------------

  /// Bytes held now, by category. Every linear layer (the head too) reports its own (linear::memory).
  memory_report measured_memory() const {
    memory_report m = lm_head.memory();
    m.weights += bytes_of(embed) + bytes_of(final_norm.g);
    m.grads += bytes_of(embed_grad) + bytes_of(final_norm.grad);
    for (const auto& b : layers) {
      m.weights += bytes_of(b.input_layernorm.g) + bytes_of(b.post_attention_layernorm.g);
      m.grads += bytes_of(b.input_layernorm.grad) + bytes_of(b.post_attention_layernorm.grad);
      b.for_each_linear([&](const std::string&, const Linear& lin) { m = m + lin.memory(); });
    }
    for (const auto& a : acts_) m.activations += a.bytes();
    m.activations += bytes_of(xf_) + bytes_of(rstdf_) + bytes_of(x_last_) + bytes_of(logits_);
    m.workspace += scratch_.bytes() + ws_.bytes() + shared_->bytes();
    return m;
  }

  /// The same numbers from the config and the layers' shapes alone, for B sequences of T tokens after forward +
  /// loss + backward: what a run will need, printed before it starts.
  memory_report planned_memory(int B, int T) const {
    memory_report m;
    const std::size_t M = std::size_t(B) * T, C = config.dim, F = config.hidden_dim, V = config.vocab_size,
                      KV = config.kv_dim(), H = config.n_heads, L = layers.size(), s = sizeof(S);
    // embeddings and norms are dense; every linear layer (an untied head too) plans its own (linear::planned_memory)
    m = lm_head.planned_memory(M);
    m.weights += s * (V * C + L * 2 * C + C);
    m.grads += embed_grad.size() ? s * V * C : 0;
    m.grads += final_norm.trainable() ? s * C : 0;
    shared_sizes shared = lm_head.planned_shared(M);  // the buffers the layers share: the largest need of each
    for (const auto& b : layers) {
      m.grads += s * C * (b.input_layernorm.trainable() + b.post_attention_layernorm.trainable());
      b.for_each_linear([&](const std::string&, const Linear& lin) {
        m = m + lin.planned_memory(M);
        shared = max(shared, lin.planned_shared(M));
      });
    }
    if (bf16_head && config.tie_word_embeddings) shared.bf16 = std::max(shared.bf16, head_bf16_elements(M));
    m.workspace += sizeof(float) * shared.tile + s * shared.scratch + sizeof(std::uint16_t) * shared.bf16;
    // activations kept for backward, and the scratch of one step
    const std::size_t block_all = s * (M * C * 6 + M * KV * 2 + std::size_t(B) * H * T * T + M * F * 3 + M * 2);
    const std::size_t block_input = s * M * C;
    m.activations += gradient_checkpointing ? L * block_input : L * block_all;
    m.activations += s * (M * C * 2 + M + M * V);  // xf, x_last, rstdf, logits
    if (gradient_checkpointing) m.workspace += block_all;  // one block recomputed at a time
    m.workspace += s * (M * C * 6 + M * KV * 2 + M * F * 3 + M * V);  // backward temporaries + dlogits
    return m;
  }

  const typename storage::rotary_type& rope() const { return rope_; }
  /// The last forward's LM-head input rms_norm(x) (B·T, C); the last backward's dL/dlogits (B·T, V) and dL/d(head input).
  const matrix_type& final_hidden() const { return xf_; }
  const matrix_type& logits_grad() const { return ws_.dlogits; }
  const matrix_type& head_input_grad() const { return ws_.dxf; }
  /// The buffers the layers share (dequantization tile, per-call scratch).
  const typename storage::shared_type& shared_buffers() const { return *shared_; }

 private:
  using activations = block_activations<S, matrix_type, vector_type>;
  struct workspace {
    matrix_type dlogits, dxf, dx, dn, tmp, datt, dq, dk, dv, dh, dgate, dup;
    std::size_t bytes() const {
      return bytes_of(dlogits) + bytes_of(dxf) + bytes_of(dx) + bytes_of(dn) + bytes_of(tmp) + bytes_of(datt) +
             bytes_of(dq) + bytes_of(dk) + bytes_of(dv) + bytes_of(dh) + bytes_of(dgate) + bytes_of(dup);
    }
  };

  static constexpr bool is_dense = std::same_as<typename Linear::weight_type, dense_weight<S>>;
  /// compute<bf16> layers: the tied LM head's products are bf16 too (as under torch autocast); an untied head stays float.
  static constexpr bool bf16_head = is_bf16_compute<typename Linear::compute_type>;

  std::size_t head_bf16_elements(std::size_t M) const {
    return tied_head_bf16_elements(std::size_t(config.vocab_size), std::size_t(config.dim), M);
  }

  attention_shape shape() const { return {B_, T_, config.n_heads, config.n_kv_heads, config.head_dim()}; }

  void check_batch(const std::vector<int>& tokens, int B, int T) const {
    LORALAB_CHECK(B > 0 && T > 0, "forward: batch ", B, " x ", T, " is empty");
    LORALAB_CHECK(T <= config.max_seq_len, "forward: sequence of ", T, " tokens exceeds the context of ", config.max_seq_len);
    LORALAB_CHECK(tokens.size() == std::size_t(B) * T, "forward: ", tokens.size(), " token ids for a ", B, " x ", T, " batch");
    for (int t : tokens) LORALAB_CHECK(t >= 0 && t < config.vocab_size, "forward: token id ", t, " outside the vocabulary of ", config.vocab_size);
  }

  /// The block's intermediates into `a` and its output into `out`; a recompute for backward (output = false) stops
  /// at down_proj's input: backward needs h, not the block's output (one linear of seven per block saved).
  void block_forward(const decoder_block<Linear>& blk, activations& a, matrix_type& out, bool output = true) {
    const S eps = S(config.rms_norm_eps);
    rms_norm_forward(a.x, blk.input_layernorm.g, eps, a.n1, a.rstd1);
    blk.q_proj.forward(a.n1, a.q), blk.k_proj.forward(a.n1, a.k), blk.v_proj.forward(a.n1, a.v);
    apply_rotary(a.q, config.n_heads, rope_, pos_);
    apply_rotary(a.k, config.n_kv_heads, rope_, pos_);
    attention_forward(shape(), a.q, a.k, a.v, a.probs, a.att);
    blk.o_proj.forward(a.att, a.x1);
    add_into(a.x1, a.x);
    rms_norm_forward(a.x1, blk.post_attention_layernorm.g, eps, a.n2, a.rstd2);
    blk.gate_proj.forward(a.n2, a.gate), blk.up_proj.forward(a.n2, a.up);
    swiglu_forward(a.gate, a.up, a.h);
    if (!output) return;
    blk.down_proj.forward(a.h, out);
    add_into(out, a.x1);
  }

  static void drop_intermediates(activations& a) {
    for (matrix_type* m : {&a.n1, &a.q, &a.k, &a.v, &a.probs, &a.att, &a.x1, &a.n2, &a.gate, &a.up, &a.h}) *m = matrix_type();
    a.rstd1 = vector_type(), a.rstd2 = vector_type();
  }

  static void lin_set_trainable(typename storage::head_type& l, bool on) { l.weight.set_trainable(on); }

  typename storage::rotary_type rope_;
  int B_ = 0, T_ = 0;
  std::vector<int> tokens_, pos_;
  std::vector<activations> acts_;
  activations scratch_;
  matrix_type xf_, x_last_, logits_;
  vector_type rstdf_;
  workspace ws_;
  // On the heap, so that the linears' pointers to it survive a move of the model (and a copy, which would
  // share it across models, does not compile).
  std::unique_ptr<typename storage::shared_type> shared_ = std::make_unique<typename storage::shared_type>();
};

// ---- construction helpers ----------------------------------------------------------------------------------------

/// A model whose linear layers are stored in bfloat16 (frozen, computed in float32).
inline llama_model<linear<bf16_weight>> make_bf16_model(const model_file& f) {
  return llama_model<linear<bf16_weight>>::from_file(
      f, [](const std::string&, const float* d, Eigen::Index n, Eigen::Index k) { return make_bf16_linear(d, n, k); });
}

/// A float (or double) model with dense weights.
template <class S = float>
llama_model<linear<dense_weight<S>>> make_dense_model(const model_file& f) {
  return llama_model<linear<dense_weight<S>>>::from_file(
      f, [](const std::string&, const float* d, Eigen::Index n, Eigen::Index k) { return make_dense_linear<S>(d, n, k); });
}

/// A model whose 7·L linear layers are quantized with Scheme; embeddings, norms and the head stay float.
template <class Scheme>
llama_model<linear<quant_weight<Scheme>>> make_quantized_model(const model_file& f) {
  return llama_model<linear<quant_weight<Scheme>>>::from_file(
      f, [](const std::string&, const float* d, Eigen::Index n, Eigen::Index k) { return make_quant_linear<Scheme>(d, n, k); });
}

}  // namespace loralab::nn

// SPDX-License-Identifier: MIT
#pragma once
// A LoRA / QLoRA model on the GPU: the same nn::llama_model and lora::lora_linear templates over device linears
// (cuda/device_linear.hpp), made from a host model by to_device:
//
//   auto host = lora::make_lora_quantized_model<quant::double_quant<quant::nf4<64>>>(file);   // quantized on the host
//   auto dev = cuda::to_device(host);                // codes copied byte for byte, norms, embedding, adapters
//   lora::attach_adapters(dev, cfg, targets, seed);  // or before to_device: the adapters are host memory either way
//   train::trainer<decltype(dev)> t(dev, data, o);   // forward and backward on the GPU, the optimizer on the host
//
// Bases that run there: float32 (dense, LoRA) and bitsandbytes' nf4 / fp4 with or without double quantization (QLoRA),
// with float32 or bf16 products (nn::compute<float> / compute<bf16>, as on the host). The others (int8, dynamic 8-bit,
// bf16 storage, ggml blocks) are refused with the list.
#include <string>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "cuda/device_linear.hpp"
#include "lora/lora_model.hpp"
#include "nn/llama.hpp"
#include "quant/scheme_registry.hpp"

namespace loralab::cuda {

namespace detail {
template <class HostBase>
struct device_base {
  static constexpr bool supported = false;
};
template <class Compute>
struct device_base<nn::linear<nn::dense_weight<float>, Compute>> {
  static constexpr bool supported = true;
  using type = device_linear<dense_device_weight, Compute>;
  static type upload(const nn::linear<nn::dense_weight<float>, Compute>& l) {
    type d;
    d.weight.w = device_matrix::from_host(l.weight.w);
    return d;
  }
};
template <class Scheme, class Compute>
  requires(Scheme::bits == 4 && (Scheme::quant_type == "nf4" || Scheme::quant_type == "fp4"))
struct device_base<nn::linear<nn::quant_weight<Scheme>, Compute>> {
  static constexpr bool supported = true;
  using type = device_linear<weight_4bit_device, Compute>;  // one device type for every 4-bit scheme
  static type upload(const nn::linear<nn::quant_weight<Scheme>, Compute>& l) {
    type d;
    d.weight = weight_4bit_device::from_host<Scheme>(l.weight.q);
    return d;
  }
};
}  // namespace detail

/// Whether a host base linear type has a device twin.
template <class HostBase>
inline constexpr bool runs_on_device = detail::device_base<HostBase>::supported;

/// The device twin of a host base linear type (runs_on_device<HostBase> must hold).
template <class HostBase>
using device_base_t = typename detail::device_base<HostBase>::type;

/// The device model of a host lora_model<HostBase, Rank>.
template <class HostBase, int Rank = lora::dynamic_rank>
using device_lora_model = nn::llama_model<lora::lora_linear<device_base_t<HostBase>, Rank>>;

/// What --device cuda trains, for the error that refuses the rest.
inline std::string device_bases() {
  return "float32 (LoRA) and nf4 / fp4 with or without double quantization (QLoRA), products in float32 or bf16";
}

/// The host model's twin in device memory: embedding, norms, frozen linears (4-bit codes byte for byte), an untied
/// head, the adapters (host memory: shared with nothing, copied), gradient checkpointing.
template <class HostBase, int Rank>
device_lora_model<HostBase, Rank> to_device(const lora::lora_model<HostBase, Rank>& m) {
  static_assert(runs_on_device<HostBase>, "to_device: this base has no CUDA twin (see cuda::device_bases())");
  LORALAB_CHECK(m.embed_grad.size() == 0, "--device cuda trains adapters only: the embedding is trainable in this model");
  device_lora_model<HostBase, Rank> d;
  d.config = m.config;
  d.embed = device_matrix::from_host(m.embed);
  d.layers.resize(m.layers.size());
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const auto& hb = m.layers[l];
    auto& db = d.layers[l];
    LORALAB_CHECK(!hb.input_layernorm.trainable() && !hb.post_attention_layernorm.trainable(),
                  "--device cuda trains adapters only: the norms of layer ", l, " are trainable in this model");
    db.input_layernorm.g = device_vector::from_host(hb.input_layernorm.g);
    db.post_attention_layernorm.g = device_vector::from_host(hb.post_attention_layernorm.g);
    std::vector<const lora::lora_linear<HostBase, Rank>*> host;
    hb.for_each_linear([&](const std::string&, const auto& lin) { host.push_back(&lin); });
    std::size_t i = 0;
    db.for_each_linear([&](const std::string&, auto& lin) {
      const auto& h = *host[i++];
      static_cast<device_base_t<HostBase>&>(lin) = detail::device_base<HostBase>::upload(h);
      lin.adapter = h.adapter, lin.merged = h.merged;
    });
  }
  d.final_norm.g = device_vector::from_host(m.final_norm.g);
  if (!m.config.tie_word_embeddings) d.lm_head.weight.w = device_matrix::from_host(m.lm_head.weight.w);
  d.gradient_checkpointing = m.gradient_checkpointing;
  d.init_runtime();
  return d;
}

}  // namespace loralab::cuda

// SPDX-License-Identifier: MIT
#pragma once
// A Llama model with LoRA adapters on chosen linear layers (PEFT's get_peft_model), over a dense or quantized
// base, and what PEFT does with it: trainable parameters by name, print_trainable_parameters, merge, unmerge,
// merge_and_unload, and k-bit training preparation.
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/core.h>

#include "core/check.hpp"
#include "lora/lora_config.hpp"
#include "lora/lora_linear.hpp"
#include "lora/targets.hpp"
#include "nn/llama.hpp"
#include "quant/error_metrics.hpp"

namespace loralab::lora {

/// A Llama model whose linears are lora_linear<Base, Rank>: Rank fixed (lora_model<Base, 8>) or run-time
/// (dynamic_rank, the default). Every function below takes any Rank; a fixed one refuses adapters of another rank.
template <class Base, int Rank = dynamic_rank>
using lora_model = nn::llama_model<lora_linear<Base, Rank>>;

/// A LoRA-ready model whose base linears are made by make_base(data, N, K), or make_base(name, data, N, K) when it
/// takes the module's name (model.layers.0.self_attn.q_proj); no adapter is attached yet.
template <class Base, int Rank = dynamic_rank, class MakeBase>
lora_model<Base, Rank> make_lora_model(const nn::model_file& f, MakeBase&& make_base) {
  return lora_model<Base, Rank>::from_file(f, [&](const std::string& name, const float* d, Eigen::Index n, Eigen::Index k) {
    lora_linear<Base, Rank> l;
    if constexpr (std::is_invocable_v<MakeBase&, const std::string&, const float*, Eigen::Index, Eigen::Index>)
      static_cast<Base&>(l) = make_base(name, d, n, k);  // the maker wants the module's name (nn::make_linear_from_file)
    else
      static_cast<Base&>(l) = make_base(d, n, k);
    return l;
  });
}

/// Dense float base (LoRA).
template <class S = float, int Rank = dynamic_rank>
lora_model<nn::linear<nn::dense_weight<S>>, Rank> make_lora_dense_model(const nn::model_file& f) {
  return make_lora_model<nn::linear<nn::dense_weight<S>>, Rank>(f, [](const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_dense_linear<S>(d, n, k);
  });
}

/// Quantized base (QLoRA).
template <class Scheme, int Rank = dynamic_rank>
lora_model<nn::linear<nn::quant_weight<Scheme>>, Rank> make_lora_quantized_model(const nn::model_file& f) {
  return make_lora_model<nn::linear<nn::quant_weight<Scheme>>, Rank>(f, [](const float* d, Eigen::Index n, Eigen::Index k) {
    return nn::make_quant_linear<Scheme>(d, n, k);
  });
}

/// The full names of a model's linear modules (model.layers.0.self_attn.q_proj, …).
template <class Base, int Rank>
std::vector<std::string> linear_module_names(lora_model<Base, Rank>& m) {
  std::vector<std::string> names;
  m.for_each_linear([&](const std::string& name, auto&) { names.push_back(name); });
  return names;
}

/// PEFT's get_peft_model: freeze everything, attach adapters where the targets match (seeded initialisation, in
/// module order). Returns how many modules got an adapter. Unknown target names are an error listing the model's
/// modules, and so is a cfg.r other than a fixed Rank. Gradient checkpointing is left as it is: see
/// prepare_for_kbit_training.
template <class Base, int Rank>
int attach_adapters(lora_model<Base, Rank>& m, const lora_config& cfg, const target_spec& targets, std::uint64_t seed) {
  cfg.validate();
  check_rank<Rank>(cfg.r, lora_linear<Base, Rank>::type_name());
  targets.check_against(linear_module_names(m));
  m.set_all_trainable(false);
  std::mt19937_64 rng(seed);
  int count = 0;
  m.for_each_linear([&](const std::string& name, lora_linear<Base, Rank>& lin) {
    lin.adapter.reset();
    lin.merged = false;
    if (!targets.matches(name)) return;
    lin.adapter = make_adapter<typename Base::scalar, Rank>(cfg, lin.out_features(), lin.in_features(), rng);
    ++count;
  });
  return count;
}

/// Whether the base linears store something other than trainable dense floats (a quantized or bf16 base).
template <class Base>
inline constexpr bool has_frozen_storage = !std::same_as<typename Base::weight_type, nn::dense_weight<typename Base::scalar>>;

/// PEFT's prepare_model_for_kbit_training(use_gradient_checkpointing=True): a base stored in k bits trains with
/// gradient checkpointing (each block recomputed in backward). A dense base is left as it is. Returns the setting.
template <class Base, int Rank>
bool prepare_for_kbit_training(lora_model<Base, Rank>& m) {
  if constexpr (has_frozen_storage<Base>) m.gradient_checkpointing = true;
  return m.gradient_checkpointing;
}

/// Visits every adapter with the key PEFT saves it under (base_model.model.<module>.lora_A.weight / lora_B).
template <class Base, int Rank, class F>
void for_each_adapter(lora_model<Base, Rank>& m, F&& f) {
  m.for_each_linear([&](const std::string& name, lora_linear<Base, Rank>& lin) {
    if (lin.adapter) f("base_model.model." + name, *lin.adapter, lin);
  });
}

/// Sets each adapter's dropout seed for this step (distinct per module) and training or eval mode.
template <class Base, int Rank>
void set_adapter_mode(lora_model<Base, Rank>& m, bool training, std::uint64_t step_seed, std::int64_t first_row = 0) {
  std::uint64_t module = 0;
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) {
    a.training = training;
    a.dropout_seed = step_seed * 0x9E3779B97F4A7C15ull + (++module) * 0xD1B54A32D192ED03ull;
    a.dropout_first_row = first_row;
  });
}

struct parameter_counts {
  std::size_t trainable = 0, all = 0;
  double percent() const { return all ? 100.0 * double(trainable) / double(all) : 0; }
};

/// Counts as PEFT does: trainable = adapter parameters (+ any trainable dense parameter); all = trainable +
/// every base parameter, a quantized weight counting its N·K elements.
template <class Base, int Rank>
parameter_counts count_parameters(lora_model<Base, Rank>& m) {
  parameter_counts c;
  m.for_each_parameter([&](const std::string&, auto p) {
    c.all += std::size_t(p.size);
    if (p.grad) c.trainable += std::size_t(p.size);
  });
  if constexpr (!std::same_as<typename Base::weight_type, nn::dense_weight<typename Base::scalar>>)
    m.for_each_linear([&](const std::string&, auto& lin) { c.all += std::size_t(lin.out_features() * lin.in_features()); });
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) {
    c.trainable += std::size_t(a.A.size() + a.B.size());
    c.all += std::size_t(a.A.size() + a.B.size());
  });
  return c;
}

/// 6738710528 -> "6,738,710,528" (Python's f"{n:,}").
inline std::string with_commas(std::size_t n) {
  const std::string digits = std::to_string(n);
  std::string s;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

/// PEFT's line: "trainable params: 294,912 || all params: 6,738,710,528 || trainable%: 0.0044".
template <class Base, int Rank>
std::string trainable_parameters_line(lora_model<Base, Rank>& m) {
  const auto c = count_parameters(m);
  return fmt::format("trainable params: {} || all params: {} || trainable%: {:.4f}", with_commas(c.trainable),
                     with_commas(c.all), c.percent());
}

/// The seeds' dtype census (`for p in model.parameters(): dtypes[p.dtype] += p.numel()`), as PyTorch + bnb
/// would list this model: embeddings, norms and adapters float32, packed 4-bit codes uint8 (two weights each),
/// LLM.int8() codes int8. Plus what the census hides: the frozen linears' real storage, codes and statistics,
/// in bits per weight (nf4+DQ at block 64 tends to 4 + 8/64 + 32/16384 = 4.127 as tensors grow; float32 is 32).
struct storage_breakdown {
  std::vector<std::pair<std::string, std::size_t>> elements;  ///< dtype → elements, in first-seen order
  std::size_t linear_weights = 0;  ///< N·K summed over the frozen base linears
  std::size_t linear_bytes = 0;    ///< their storage: codes + statistics (dense: the floats)

  std::size_t total_elements() const {
    std::size_t t = 0;
    for (const auto& e : elements) t += e.second;
    return t;
  }
  double linear_bits_per_weight() const { return linear_weights ? 8.0 * double(linear_bytes) / double(linear_weights) : 0; }
  void add(const std::string& dtype, std::size_t n) {
    for (auto& e : elements)
      if (e.first == dtype) return void(e.second += n);
    elements.emplace_back(dtype, n);
  }
  /// "float32 2,163,200 (0.4521) | uint8 2,621,440 (0.5479)" then the linears' bits per weight.
  friend std::ostream& operator<<(std::ostream& os, const storage_breakdown& b) {
    os << "storage:";
    for (std::size_t i = 0; i < b.elements.size(); ++i)
      os << (i ? " |" : "") << " " << b.elements[i].first << " " << with_commas(b.elements[i].second)
         << fmt::format(" ({:.4f})", double(b.elements[i].second) / double(b.total_elements()));
    return os << fmt::format("; frozen linears: {} weights in {:.3f} MiB = {:.3f} bits/weight", with_commas(b.linear_weights),
                             double(b.linear_bytes) / (1 << 20), b.linear_bits_per_weight());
  }
};

template <class Base, int Rank>
storage_breakdown count_storage(lora_model<Base, Rank>& m) {
  using S = typename Base::scalar;
  storage_breakdown b;
  const char* dense = sizeof(S) == 8 ? "float64" : "float32";
  m.for_each_parameter([&](const std::string&, auto p) { b.add(dense, std::size_t(p.size)); });
  m.for_each_linear([&](const std::string&, lora_linear<Base, Rank>& lin) {
    if constexpr (!std::same_as<typename Base::weight_type, nn::dense_weight<S>>)  // dense ones are parameters above
      b.add(Base::weight_type::storage_dtype, lin.weight.stored_elements());
    b.linear_weights += std::size_t(lin.out_features() * lin.in_features());
    b.linear_bytes += lin.weight.weight_bytes() + lin.weight.stats_bytes();
  });
  for_each_adapter(m, [&](const std::string&, auto& a, auto&) { b.add(dense, std::size_t(a.A.size() + a.B.size())); });
  return b;
}

// ---- merge ----------------------------------------------------------------------------------------------------

struct merge_report {
  int merged_modules = 0;
  double max_rounding_error = 0;  ///< quantized bases: max |(W + ΔW) − deq(Q(deq(W) + ΔW))|
};

namespace detail {
/// W + sign·s·B·A into a dense base, or dequantize → add → requantize into a quantized one.
template <class Base, int Rank>
double add_delta(lora_linear<Base, Rank>& lin, double sign) {
  using S = typename Base::scalar;
  const auto& a = *lin.adapter;
  const nn::matrix<S> delta = (a.B * a.A) * (a.scaling * S(sign));
  if constexpr (std::same_as<typename Base::weight_type, nn::dense_weight<S>>) {
    lin.weight.w += delta;
    return 0;
  } else {
    using Scheme = typename Base::weight_type::scheme;
    const nn::matrix<float> target = lin.dense() + delta;
    const Eigen::Index n = target.rows(), k = target.cols();
    auto requantized = nn::make_quant_linear<Scheme>(target.data(), n, k);
    lin.weight = std::move(requantized.weight);
    return double((lin.dense() - target).cwiseAbs().maxCoeff());
  }
}
}  // namespace detail

/// Adds every adapter's s·B·A into its base weight; forward then skips the adapters. For a quantized base this
/// dequantizes, adds and requantizes ("may get different generations due to rounding errors", as PEFT warns):
/// the report gives the largest rounding error.
template <class Base, int Rank>
merge_report merge_adapters(lora_model<Base, Rank>& m) {
  merge_report r;
  m.for_each_linear([&](const std::string&, lora_linear<Base, Rank>& lin) {
    if (!lin.adapter || lin.merged) return;
    r.max_rounding_error = std::max(r.max_rounding_error, detail::add_delta(lin, +1));
    lin.merged = true;
    ++r.merged_modules;
  });
  m.init_runtime();
  return r;
}

/// Subtracts the merged updates again (exact up to float rounding for a dense base; lossy for a quantized one).
template <class Base, int Rank>
merge_report unmerge_adapters(lora_model<Base, Rank>& m) {
  merge_report r;
  m.for_each_linear([&](const std::string&, lora_linear<Base, Rank>& lin) {
    if (!lin.adapter || !lin.merged) return;
    r.max_rounding_error = std::max(r.max_rounding_error, detail::add_delta(lin, -1));
    lin.merged = false;
    ++r.merged_modules;
  });
  m.init_runtime();
  return r;
}

/// PEFT's merge_and_unload: merges, then returns the plain model (no adapter wrappers). Models are move-only
/// (their linears share one dequantization tile): pass std::move(m).
template <class Base, int Rank>
nn::llama_model<Base> merge_and_unload(lora_model<Base, Rank> m, merge_report* report = nullptr) {
  const merge_report r = merge_adapters(m);
  if (report) *report = r;
  nn::llama_model<Base> out;
  out.config = m.config;
  out.embed = std::move(m.embed);
  out.final_norm = std::move(m.final_norm);
  out.lm_head = std::move(m.lm_head);
  out.layers.resize(m.layers.size());
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    auto& src = m.layers[l];
    auto& dst = out.layers[l];
    dst.input_layernorm = std::move(src.input_layernorm);
    dst.post_attention_layernorm = std::move(src.post_attention_layernorm);
    dst.q_proj = std::move(static_cast<Base&>(src.q_proj)), dst.k_proj = std::move(static_cast<Base&>(src.k_proj));
    dst.v_proj = std::move(static_cast<Base&>(src.v_proj)), dst.o_proj = std::move(static_cast<Base&>(src.o_proj));
    dst.gate_proj = std::move(static_cast<Base&>(src.gate_proj)), dst.up_proj = std::move(static_cast<Base&>(src.up_proj));
    dst.down_proj = std::move(static_cast<Base&>(src.down_proj));
  }
  out.set_all_trainable(false);
  out.init_runtime();
  return out;
}

}  // namespace loralab::lora

// SPDX-License-Identifier: MIT
#pragma once
// LoRA adapters as llama.cpp GGUF adapter files (what convert_lora_to_gguf.py writes and `llama-cli --lora` loads).
//
// Metadata: general.architecture = "llama", general.type = "adapter", adapter.type = "lora",
// adapter.lora.alpha (float32). Tensors, for every adapted module, F32 or F16:
//   blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight.lora_a   torch (r, K): ne = [K, r]
//   blk.N.<…>.weight.lora_b                                                          torch (N, r): ne = [r, N]
// llama.cpp adds scale · (alpha / r) · B (A x) to the base output, r = lora_a's ne[1] (per tensor), scale the
// --lora-scaled factor (1 for --lora). One alpha covers the file, so an adapter whose scaling differs from
// alpha / r (rsLoRA, PEFT alpha_pattern) has the ratio folded into its B; the product B·A·scaling is unchanged.
//
// RoPE layout: convert_lora_to_gguf.py runs the base model's tensor transforms on the LoRA pair; LlamaModel.permute
// of q_proj / k_proj is a row permutation, which LoraTorchTensor applies to lora_b's rows only (A is untouched),
// so llama.cpp's attn_q rows (adjacent-pair RoPE order) match. The writer does the same (unpermute_rotary_rows on
// B, n_heads for q, n_kv_heads for k), the reader undoes it.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "core/check.hpp"
#include "io/gguf.hpp"
#include "lora/lora_model.hpp"
#include "nn/config.hpp"
#include "nn/gguf_model.hpp"
#include "nn/llama2c_file.hpp"

namespace loralab::lora {

/// A LoRA adapter as a GGUF adapter file holds it, in loralab's (HF) row order: for each module,
/// delta W = (alpha / r) · B · A with A (r, K), B (N, r).
struct gguf_lora {
  struct pair {
    nn::matrix<float> A;  // (r, K)
    nn::matrix<float> B;  // (N, r), HF rotate-half row order for q_proj / k_proj
  };
  float alpha = 0;                      ///< adapter.lora.alpha
  std::map<std::string, pair> modules;  ///< by HF module name: model.layers.0.self_attn.q_proj
};

/// The GGUF adapter form of m's adapters (float32 values). alpha is the first adapter's scaling · r (c.alpha for
/// plain LoRA); a module whose scaling differs from alpha / r_module has B multiplied by the ratio.
template <class Base, int Rank>
gguf_lora gguf_lora_of(lora_model<Base, Rank>& m) {
  gguf_lora out;
  bool first = true;
  for_each_adapter(m, [&](const std::string& key, const auto& a, const auto&) {
    const std::string module = key.substr(std::string_view("base_model.model.").size());
    const double r = double(a.rank()), s = double(a.scaling);
    if (first) out.alpha = float(s * r), first = false;
    const double file_scaling = double(out.alpha) / r;  // what llama.cpp will apply
    gguf_lora::pair p{a.A.template cast<float>(), a.B.template cast<float>()};
    if (std::fabs(file_scaling - s) > 1e-7 * std::fabs(s)) p.B *= float(s / file_scaling);
    out.modules.emplace(module, std::move(p));
  });
  LORALAB_CHECK(!out.modules.empty(), "gguf_lora_of: the model has no adapter");
  return out;
}

namespace detail {

/// GGUF base tensor name (blk.0.attn_q.weight) by HF module name (model.layers.0.self_attn.q_proj), the model's linears.
inline std::map<std::string, std::string> gguf_linear_names(const nn::llama_config& c) {
  std::map<std::string, std::string> out;
  for (const auto& n : nn::detail::gguf_tensor_names(c))
    if (n.shape.size() == 2 && n.hf.starts_with("model.layers."))
      out.emplace(n.hf.substr(0, n.hf.size() - std::string_view(".weight").size()), n.gguf);
  return out;
}

}  // namespace detail

/// How write_gguf_lora stores tensors.
struct gguf_lora_options {
  io::ggml_type type = io::ggml_type::F32;  ///< F32 or F16 (llama.cpp's converter: --outtype f32 / f16)
  std::string name;                         ///< general.name when not empty
};

/// Writes `a` as a llama.cpp LoRA adapter for a base with config `c` (see the header comment for the layout).
inline void write_gguf_lora(const std::filesystem::path& path, const gguf_lora& a, const nn::llama_config& c,
                            const gguf_lora_options& o = {}) {
  const std::string p = path.string();
  LORALAB_CHECK(o.type == io::ggml_type::F32 || o.type == io::ggml_type::F16, p, ": a GGUF LoRA adapter is written as F32 or F16, not ",
                io::ggml_type_name(o.type));
  LORALAB_CHECK(std::isfinite(a.alpha) && a.alpha != 0, p, ": adapter.lora.alpha must be finite and non-zero (llama.cpp reads 0 as "
                "'no scaling'), got ", a.alpha);
  const auto names = detail::gguf_linear_names(c);
  io::gguf_writer w;
  w.set("general.architecture", io::gguf_value(std::string("llama")));
  w.set("general.type", io::gguf_value(std::string("adapter")));
  if (!o.name.empty()) w.set("general.name", io::gguf_value(o.name));
  w.set("adapter.type", io::gguf_value(std::string("lora")));
  w.set("adapter.lora.alpha", io::gguf_value(a.alpha));
  std::vector<std::vector<std::byte>> keep;  // the writer keeps views: the bytes live here until write()
  keep.reserve(2 * a.modules.size());
  const io::dtype dt = o.type == io::ggml_type::F32 ? io::dtype::F32 : io::dtype::F16;
  for (const auto& [module, pr] : a.modules) {
    const auto it = names.find(module);
    LORALAB_CHECK(it != names.end(), p, ": module '", module, "' is not one of the model's linear layers (llama.cpp adapts those only)");
    const nn::matrix<float>& A = pr.A;  // (r, K)
    nn::tensor_f32 B{{pr.B.rows(), pr.B.cols()}, std::vector<float>(pr.B.data(), pr.B.data() + pr.B.size())};  // (N, r)
    const std::int64_t r = A.rows(), K = A.cols(), N = B.shape[0];
    LORALAB_CHECK(r > 0 && B.shape[1] == r, p, ": module '", module, "': A is (", r, ", ", K, "), B is (", N, ", ", B.shape[1], ")");
    if (const int heads = nn::detail::rotary_heads_of(module + ".weight", c)) nn::unpermute_rotary_rows(B, heads);
    keep.push_back(nn::detail::float_bytes(std::span<const float>(A.data(), std::size_t(A.size())), dt));
    w.add_tensor(it->second + ".lora_a", o.type, {K, r}, keep.back());
    keep.push_back(nn::detail::float_bytes(B.data, dt));
    w.add_tensor(it->second + ".lora_b", o.type, {r, N}, keep.back());
  }
  w.write(path);
}

/// write_gguf_lora(path, gguf_lora_of(m), m.config, o): m's adapters as a llama.cpp LoRA adapter file.
template <class Base, int Rank>
void save_gguf_adapter(lora_model<Base, Rank>& m, const std::filesystem::path& path, const gguf_lora_options& o = {}) {
  write_gguf_lora(path, gguf_lora_of(m), m.config, o);
}

/// Reads a llama.cpp LoRA adapter for a base with config `c`: metadata checked, every tensor a lora_a / lora_b of one
/// of c's linears with shapes that fit it (F32, F16 or BF16), both halves present; B rows back in HF order.
inline gguf_lora read_gguf_lora(const std::filesystem::path& path, const nn::llama_config& c) {
  const io::gguf_file f = io::gguf_file::open(path);
  const std::string p = path.string();
  const auto expect = [&](const char* key, std::string_view want) {
    const auto v = f.find_string(key);
    LORALAB_CHECK(v && *v == want, p, ": key '", key, "' is ", v ? "'" + *v + "'" : std::string("absent"), ", expected '", want, "'");
  };
  expect("general.architecture", "llama");
  expect("general.type", "adapter");
  expect("adapter.type", "lora");
  LORALAB_CHECK(f.find("adapter.lora.alpha"), p, ": key 'adapter.lora.alpha' is absent");
  gguf_lora out;
  out.alpha = float(f.get_float("adapter.lora.alpha"));
  std::map<std::string, std::string> module_of;  // blk.0.attn_q.weight -> model.layers.0.self_attn.q_proj
  for (const auto& [hf, g] : detail::gguf_linear_names(c)) module_of.emplace(g, hf);
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> base_shape;  // blk.0.attn_q.weight -> (N, K)
  for (const auto& n : nn::detail::gguf_tensor_names(c)) base_shape[n.gguf] = {n.shape.front(), n.shape.back()};
  std::map<std::string, int> halves;
  for (const auto& t : f.tensors()) {
    const bool is_a = t.name.ends_with(".lora_a"), is_b = t.name.ends_with(".lora_b");
    LORALAB_CHECK(is_a || is_b, p, ": unexpected tensor '", t.name, "' (an adapter holds <base>.lora_a and <base>.lora_b only)");
    const std::string base = t.name.substr(0, t.name.size() - 7);
    const auto it = module_of.find(base);
    LORALAB_CHECK(it != module_of.end(), p, ": tensor '", t.name, "' adapts '", base, "', which is not a linear layer of this model (", c, ")");
    LORALAB_CHECK(t.type == io::ggml_type::F32 || t.type == io::ggml_type::F16 || t.type == io::ggml_type::BF16, p, ": tensor '", t.name,
                  "' is ", io::ggml_type_name(t.type), "; loralab reads F32, F16 and BF16 adapters");
    LORALAB_CHECK(t.dims.size() == 2, p, ": tensor '", t.name, "' has dims ", io::detail::dims_string(t.dims), ", expected 2 dims");
    const std::string& module = it->second;
    const auto [N, K] = base_shape.at(base);
    const bool fits = is_a ? t.dims[0] == K : t.dims[1] == N;  // the rank is checked against the other half below
    LORALAB_CHECK(fits, p, ": tensor '", t.name, "' has dims ", io::detail::dims_string(t.dims), "; for the (", N, ", ", K, ") weight '", base,
                  "' it needs ", is_a ? "[" + std::to_string(K) + ", r] (torch (r, K))" : "[r, " + std::to_string(N) + "] (torch (N, r))");
    const std::int64_t r = is_a ? t.dims[1] : t.dims[0];
    const std::vector<float> v = f.tensor_to_float(t.name);
    auto& pr = out.modules[module];
    if (is_a) {
      pr.A = Eigen::Map<const nn::matrix<float>>(v.data(), r, K);
    } else {
      nn::tensor_f32 B{{N, r}, v};
      if (const int heads = nn::detail::rotary_heads_of(module + ".weight", c)) nn::permute_rotary_rows(B, heads);
      pr.B = Eigen::Map<const nn::matrix<float>>(B.data.data(), N, r);
    }
    ++halves[module];
  }
  for (const auto& [module, pr] : out.modules) {
    LORALAB_CHECK(halves[module] == 2 && pr.A.size() > 0 && pr.B.size() > 0, p, ": module '", module,
                  "' has only its lora_", pr.A.size() ? "a" : "b", " tensor");
    LORALAB_CHECK(pr.A.rows() == pr.B.cols(), p, ": module '", module, "': lora_a has rank ", pr.A.rows(), ", lora_b ", pr.B.cols());
  }
  LORALAB_CHECK(!out.modules.empty(), p, ": the adapter has no tensors");
  return out;
}

}  // namespace loralab::lora

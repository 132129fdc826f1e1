// SPDX-License-Identifier: MIT
#pragma once
// Merging for export: PEFT's merge_and_unload as a model file other tools load. Every adapted linear becomes
// W' = W + s·B·A, where W is the base the adapter saw in training: the float weight for LoRA, the dequantized
// weight deq(Q(W)) for QLoRA (every linear of a quantized base, adapted or not), so the merged float model
// computes what the unmerged one did. requantization_error measures what writing W' in 4 bits again costs
// (PEFT only warns that it "may get different generations due to rounding errors").
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lora/lora_model.hpp"
#include "nn/config.hpp"

namespace loralab::lora {

struct merged_summary {
  int modules = 0;          ///< linears with an adapter merged in
  double max_update = 0;    ///< max |s·B·A| over them
};

/// The merged model as float tensors: the base's other tensors as they are, every linear as above.
template <class Base, int Rank>
nn::model_file merged_model_file(lora_model<Base, Rank>& m, const nn::model_file& base, merged_summary* summary = nullptr) {
  merged_summary sum;
  nn::model_file out;
  out.config = base.config;
  for (const auto& [name, t] : base.tensors)
    if (!name.ends_with("_proj.weight")) out.tensors.emplace(name, t);
  m.for_each_linear([&](const std::string& name, lora_linear<Base, Rank>& lin) {
    nn::matrix<float> w = lin.dense().template cast<float>();
    if (lin.adapter && !lin.merged) {
      const auto& a = *lin.adapter;
      const nn::matrix<float> delta = ((a.B * a.A) * a.scaling).template cast<float>();
      sum.max_update = std::max(sum.max_update, double(delta.cwiseAbs().maxCoeff()));
      w += delta;
      ++sum.modules;
    }
    out.tensors.emplace(name + ".weight", nn::tensor_f32{{w.rows(), w.cols()}, std::vector<float>(w.data(), w.data() + w.size())});
  });
  if (summary) *summary = sum;
  return out;
}

struct requantization_report {
  double max_abs = 0;  ///< max |deq(Q(W')) − W'| over the linears
  double rel_rms = 0;  ///< ‖deq(Q(W')) − W'‖ / ‖W'‖ over all linears together
};

/// What quantizing every linear of a (merged) float model with Scheme changes, against its exact weights.
template <class Scheme>
requantization_report requantization_error(const nn::model_file& f) {
  requantization_report r;
  double err = 0, norm = 0;
  for (const auto& [name, t] : f.tensors) {
    if (!name.ends_with("_proj.weight")) continue;
    const nn::matrix<float> q = nn::make_quant_linear<Scheme>(t.data.data(), t.shape[0], t.shape[1]).dense();
    const Eigen::Map<const nn::matrix<float>> w(t.data.data(), t.shape[0], t.shape[1]);
    r.max_abs = std::max(r.max_abs, double((q - w).cwiseAbs().maxCoeff()));
    err += double((q - w).squaredNorm()), norm += double(w.squaredNorm());
  }
  r.rel_rms = norm > 0 ? std::sqrt(err / norm) : 0;
  return r;
}

}  // namespace loralab::lora

// SPDX-License-Identifier: MIT
#pragma once
// experiment::on_device: a program's model on the device --device names. "cpu" runs fn on the model as it is; "cuda"
// moves a LoRA model (adapters attached or not) to the GPU (cuda/device_model.hpp) and runs fn on the twin: training
// (experiment/run.hpp), generation and perplexity (experiments/model_cli.hpp) call the same templates on either.
#include <string>

#include "core/check.hpp"
#include "experiment/device.hpp"
#ifdef LORALAB_HAVE_CUDA
#include "cuda/device_model.hpp"
#endif

namespace loralab::experiment {

/// fn(m) with device "cpu"; with "cuda", fn(the device twin of m) (cuda/device_model.hpp: the same templates over
/// device linears), the host model emptied first (its base is not needed twice). A base with no CUDA path, a build
/// without CUDA: errors that say so.
template <class Model, class F>
void on_device(Model& m, const std::string& device, F&& fn) {
  if (device == "cpu") return (void)fn(m);
#ifdef LORALAB_HAVE_CUDA
  using base = typename Model::linear_type::base_type;
  if constexpr (cuda::runs_on_device<base>) {
    auto twin = cuda::to_device(m);
    m = Model();
    fn(twin);
  } else {
    fail("--device cuda: a ", base::weight_type::label(), " base has no CUDA path; there: ", cuda::device_bases());
  }
#else
  fail("--device cuda: ", cuda_unavailable());
#endif
}

}  // namespace loralab::experiment

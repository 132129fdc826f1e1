// SPDX-License-Identifier: MIT
#pragma once
// Runs compiled once: train_scheme<S, dynamic_rank> for every scheme of quant::model_schemes, declared `extern
// template` here and instantiated in the loralab_runs library (prebuilt/train_schemes.cpp: one object for all seven, which costs
// what one scheme alone costs — ~100 s on 2 cores — since the trainer, optimizers and kernels are shared).
// A program that links loralab_runs (CMake defines LORALAB_PREBUILT_RUNS for it and experiment/run.hpp includes this
// file) calls those copies: it no longer compiles seven models, their backward passes, trainers and device twins of
// its own. Everything else, a fixed Rank or a scheme outside model_schemes (ggml's), is still instantiated where it
// is used. Without LORALAB_PREBUILT_RUNS nothing changes: the library stays header-only.
//
// The library and the programs must see the same definitions: loralab_runs links loralab::cuda where the build has
// it (LORALAB_HAVE_CUDA then reaches both), and uses the programs' flags (loralab_build_flags).
#include <cstddef>
#include <type_traits>

#include "experiment/run.hpp"
#include "quant/scheme_registry.hpp"

namespace loralab::experiment {

/// The I-th scheme of a scheme_list (prebuilt/train_schemes.cpp instantiates the run of each).
template <std::size_t I, class List>
struct prebuilt_scheme;
template <std::size_t I, class First, class... Rest>
struct prebuilt_scheme<I, quant::scheme_list<First, Rest...>> : prebuilt_scheme<I - 1, quant::scheme_list<Rest...>> {};
template <class First, class... Rest>
struct prebuilt_scheme<0, quant::scheme_list<First, Rest...>> {
  using type = First;
};
template <std::size_t I>
using prebuilt_scheme_t = typename prebuilt_scheme<I, quant::model_schemes>::type;

/// How many runs loralab_runs holds (prebuilt/train_schemes.cpp checks it too).
inline constexpr std::size_t prebuilt_run_count = 7;
static_assert(quant::model_schemes::size == prebuilt_run_count,
              "model_schemes changed: update prebuilt_run_count, the extern declarations below and "
              "the definitions in prebuilt/train_schemes.cpp");

#define LORALAB_PREBUILT_RUN_DECLARATION(I)                                                                  \
  extern template run_result train_scheme<prebuilt_scheme_t<I>, lora::dynamic_rank>(                         \
      const nn::model_file&, const data::prepared_dataset&, const run_spec&);
LORALAB_PREBUILT_RUN_DECLARATION(0)
LORALAB_PREBUILT_RUN_DECLARATION(1)
LORALAB_PREBUILT_RUN_DECLARATION(2)
LORALAB_PREBUILT_RUN_DECLARATION(3)
LORALAB_PREBUILT_RUN_DECLARATION(4)
LORALAB_PREBUILT_RUN_DECLARATION(5)
LORALAB_PREBUILT_RUN_DECLARATION(6)
#undef LORALAB_PREBUILT_RUN_DECLARATION

}  // namespace loralab::experiment

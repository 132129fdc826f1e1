// SPDX-License-Identifier: MIT
// loralab_runs: experiment::train_scheme<S, dynamic_rank> for every scheme of quant::model_schemes, compiled once
// (experiment/prebuilt_runs.hpp declares them extern for the programs that link this library).
//
// One object for all seven, on purpose: measured on 2 cores (AMD EPYC Zen 3, GCC 12), an object per scheme cost
// ~110 s each, most of it the trainer, optimizers, Eigen kernels and device code every scheme shares and a single
// object compiles once.
#include "experiment/prebuilt_runs.hpp"

namespace loralab::experiment {

#define LORALAB_PREBUILT_RUN_DEFINITION(I)                                                             \
  template run_result train_scheme<prebuilt_scheme_t<I>, lora::dynamic_rank>(const nn::model_file&,    \
                                                                             const data::prepared_dataset&, \
                                                                             const run_spec&);
LORALAB_PREBUILT_RUN_DEFINITION(0)
LORALAB_PREBUILT_RUN_DEFINITION(1)
LORALAB_PREBUILT_RUN_DEFINITION(2)
LORALAB_PREBUILT_RUN_DEFINITION(3)
LORALAB_PREBUILT_RUN_DEFINITION(4)
LORALAB_PREBUILT_RUN_DEFINITION(5)
LORALAB_PREBUILT_RUN_DEFINITION(6)
#undef LORALAB_PREBUILT_RUN_DEFINITION
static_assert(prebuilt_run_count == 7, "prebuilt_runs.hpp declares another count: define each of its runs above");

}  // namespace loralab::experiment

// SPDX-License-Identifier: MIT
#pragma once
// loralab::nn — the Llama transformer (forward and backward), its layers, model files, tokenizers, generation.
#include "nn/attention.hpp"
#include "nn/bpe_tokenizer.hpp"
#include "nn/config.hpp"
#include "nn/cross_entropy.hpp"
#include "nn/generate.hpp"
#include "nn/linear.hpp"
#include "nn/llama.hpp"
#include "nn/memory_report.hpp"
#include "nn/model_io.hpp"
#include "nn/random_model.hpp"
#include "nn/rms_norm.hpp"
#include "nn/rotary.hpp"
#include "nn/swiglu.hpp"
#include "nn/tensor.hpp"
#include "nn/tokenizer.hpp"
#include "nn/weight_of.hpp"

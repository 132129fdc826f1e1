// SPDX-License-Identifier: MIT
#pragma once
// loralab::quant — bitsandbytes-exact NF4, FP4, dynamic 8-bit and int8 quantization; ggml-exact Q4_0, Q4_1, Q8_0.
#include "quant/bnb_serialization.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"
#include "quant/error_metrics.hpp"
#include "quant/ggml_blocks.hpp"
#include "quant/ggml_tensor.hpp"
#include "quant/blockwise_tensor.hpp"
#include "quant/quantized_tensor.hpp"
#include "quant/rowwise_int8_tensor.hpp"
#include "quant/scheme_dispatch.hpp"
#include "quant/scheme_registry.hpp"
#include "quant/schemes.hpp"
#include "quant/torch_reduce.hpp"

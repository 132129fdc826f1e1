// SPDX-License-Identifier: MIT
#pragma once
// loralab::quant — bitsandbytes-exact NF4, FP4, dynamic 8-bit and int8 quantization.
#include "quant/bnb_serialization.hpp"
#include "quant/codebooks.hpp"
#include "quant/codec.hpp"
#include "quant/error_metrics.hpp"
#include "quant/quantized_tensor.hpp"
#include "quant/scheme_dispatch.hpp"
#include "quant/schemes.hpp"

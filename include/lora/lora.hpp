// SPDX-License-Identifier: MIT
#pragma once
// loralab::lora — adapters over dense or quantized linears, target modules, merges, PEFT files.
#include "lora/gguf_adapter.hpp"
#include "lora/lora_config.hpp"
#include "lora/lora_linear.hpp"
#include "lora/lora_model.hpp"
#include "lora/merged_model.hpp"
#include "lora/peft_io.hpp"
#include "lora/targets.hpp"

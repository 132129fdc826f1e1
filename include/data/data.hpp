// SPDX-License-Identifier: MIT
#pragma once
// loralab::data — fine-tuning data: records from files, prompt templates, tokenized examples, rows and batches.
#include "data/dataset.hpp"
#include "data/chat_template.hpp"
#include "data/prompt_template.hpp"
#include "data/records.hpp"

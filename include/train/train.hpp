// SPDX-License-Identifier: MIT
#pragma once
// loralab::train — optimizers (AdamW, AdamW8bit, SGD), learning-rate schedules and the trainer.
#include "train/adamw.hpp"
#include "train/adamw8bit.hpp"
#include "train/console_log.hpp"
#include "train/lr_schedule.hpp"
#include "train/optimizer.hpp"
#include "train/optimizer_interface.hpp"
#include "train/run_files.hpp"
#include "train/sgd.hpp"
#include "train/trainer.hpp"

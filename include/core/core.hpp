// SPDX-License-Identifier: MIT
#pragma once
// loralab core — errors (LORALAB_CHECK, loralab::error), atomic files and directories, whole-file reads,
// host/device annotations.
#include "core/atomic_dir.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/host_device.hpp"
#include "core/read_file.hpp"

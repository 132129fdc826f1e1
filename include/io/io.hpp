// SPDX-License-Identifier: MIT
#pragma once
// loralab::io — file formats: safetensors, GGUF, torch .pth (zip + restricted pickle), Python float repr, JSON
// parsed with limits.
#include "io/gguf.hpp"
#include "io/gguf_types.hpp"
#include "io/json.hpp"
#include "io/python_float.hpp"
#include "io/safetensors.hpp"
#include "io/torch_pickle.hpp"
#include "io/torch_pth.hpp"
#include "io/zip_archive.hpp"

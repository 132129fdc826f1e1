#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes tests/data/ggml_quant_golden.safetensors with gguf-py's numpy quantizers (gguf.quants, PyPI `gguf`),
which reproduce ggml-quants.c's quantize_row_q4_0_ref / q4_1_ref / q8_0_ref and dequantize_row_* bit for bit.

For each case C (a float32 (rows, cols) matrix, cols % 32 == 0) and each type T in q4_0, q4_1, q8_0 it stores
  input.C        the float32 weight
  T.C            ggml's bytes, uint8 (rows, cols / 32 * type_size): the blocks exactly as a GGUF file holds them
  dequant.T.C    ggml's dequantization of those bytes, float32 (rows, cols)
tests/quant/ggml_blocks_test.cpp reads this file: loralab's quantize_row_ref must give these bytes and its
dequantizers (scalar and vectorized) these floats, bit for bit.
Run: /work/venv/bin/python tests/reference/make_ggml_quant_golden.py   (needs numpy, gguf, safetensors)
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

rng = np.random.default_rng(20261124)


def normal(shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def special():
    """One row per edge case, two blocks per row (the second block of each row is a different case)."""
    x = np.zeros((8, 64), dtype=np.float32)
    x[0] = 0.0                                  # all zeros: d = 0 (q4_0 stores -0.0), id = 0
    x[1] = 0.3                                  # constant row: q4_1's max == min, d = 0
    x[2, :32] = -1.7
    x[2, 32:] = normal(32, 1.0)
    x[3] = normal(64, 1e7)                      # huge: d (and q4_1's m) overflow fp16 to inf, as ggml stores them
    x[4, :32] = normal(32, 1e-9)                # tiny: d rounds to 0 in fp16 but the codes use the float d
    x[4, 32:] = normal(32, 1e-5)                # d in fp16's subnormal range
    x[5, :32] = normal(32, 0.1)
    x[5, 3], x[5, 9] = -2.0, 2.0                # q4_0: |max| tie, the first one (negative) sets the sign of d
    x[5, 32:] = normal(32, 0.1)
    x[5, 40], x[5, 50] = 2.0, -2.0              # and the other way round
    x[6, :32] = np.arange(32, dtype=np.float32) - 15.5          # halves: q4_0 / q4_1 round half up, q8_0 away
    x[6, 32:] = np.array([127] + [k + 0.5 for k in range(-16, 15)], dtype=np.float32)  # q8_0: d = 1, x.5 codes
    x[7, :32] = np.linspace(-8, 7, 32, dtype=np.float32)
    x[7, 32:] = np.linspace(0, 15, 32, dtype=np.float32)       # q4_1: min 0, max 15, d = 1
    return x


cases = {
    "normal": normal((4, 64), 0.05),
    "wide": normal((2, 128), 1.0),
    "special": special(),
}
cases["normal"][0, 5] = 0.4  # an outlier in the first block

types = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0}
out = {}
with np.errstate(all="ignore"):  # the huge row makes inf * 0 on purpose
    for name, x in cases.items():
        out[f"input.{name}"] = np.ascontiguousarray(x)
        for tname, t in types.items():
            q = quants.quantize(x, t)
            assert q.dtype == np.uint8 and q.shape == (x.shape[0], x.shape[1] // 32 * gguf.GGML_QUANT_SIZES[t][1])
            out[f"{tname}.{name}"] = np.ascontiguousarray(q)
            out[f"dequant.{tname}.{name}"] = np.ascontiguousarray(quants.dequantize(q, t).astype(np.float32))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ggml_quant_golden.safetensors")
meta = {"gguf": getattr(gguf, "__version__", "0.19.0"), "numpy": np.__version__,
        "script": "tests/reference/make_ggml_quant_golden.py"}
save_file(out, path, metadata=meta)
print(f"wrote {os.path.normpath(path)}: {len(out)} tensors, {os.path.getsize(path)} bytes", file=sys.stderr)

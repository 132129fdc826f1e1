#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes tests/data/bnb_golden.safetensors with real bitsandbytes (PyPI; CPU default backend, bnb >= 0.50).

For each case C it stores
  input.C            the float32 weight
  C.weight[...]      bnb's own 4-bit serialization (QuantState.as_dict(packed=True)), exactly as Linear4bit saves it
  dequant.C          bnb's dequantize_4bit of it
plus int8 row-wise (int8.CB, int8.SCB from int8_vectorwise_quant) and 8-bit blockwise (dyn8.codes, dyn8.absmax).
tests/quant/bnb_reference_test.cpp reads this file: loralab must load what bnb wrote and reproduce its codes.
Run: python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch bitsandbytes safetensors && /tmp/ref/bin/python THIS
"""
import json, os, sys
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file

torch.manual_seed(20261123)
out = {}
meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__}

def weight(shape, scale=0.05, zero_block=False):
    x = torch.randn(*shape) * scale
    x.view(-1)[5] = 3 * scale  # an outlier in the first block
    if zero_block:
        x.view(-1)[64:128] = 0  # bnb's default backend and CUDA differ here; kept out of the code comparison
    return x.contiguous()

cases = {
    "nf4_b64": dict(shape=(37, 129), quant_type="nf4", blocksize=64, dq=False),
    "nf4_b64_dq": dict(shape=(32, 520), quant_type="nf4", blocksize=64, dq=True),
    "fp4_b128": dict(shape=(33, 96), quant_type="fp4", blocksize=128, dq=False),
    "fp4_b64_dq": dict(shape=(20, 900), quant_type="fp4", blocksize=64, dq=True),
    "nf4_b32": dict(shape=(17, 31), quant_type="nf4", blocksize=32, dq=False),
}
for name, c in cases.items():
    x = weight(c["shape"])
    q, st = F.quantize_4bit(x, blocksize=c["blocksize"], quant_type=c["quant_type"], compress_statistics=c["dq"])
    out[f"input.{name}"] = x
    out[f"{name}.weight"] = q
    for k, v in st.as_dict(packed=True).items():
        out[f"{name}.weight.{k}"] = v
    out[f"dequant.{name}"] = F.dequantize_4bit(q, st).contiguous()

x = weight((24, 80), scale=1.0)
cb, scb, _ = F.int8_vectorwise_quant(x.half())
out["input.int8"], out["int8.CB"], out["int8.SCB"] = x, cb.contiguous(), scb.float().contiguous()

x = weight((5000,), scale=0.1)
q, st = F.quantize_blockwise(x, blocksize=256)
out["input.dyn8"], out["dyn8.codes"], out["dyn8.absmax"] = x, q.contiguous(), st.absmax.contiguous()

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "bnb_golden.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
print("wrote", path, meta)

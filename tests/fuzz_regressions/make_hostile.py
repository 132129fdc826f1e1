#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the hostile inputs of tests/fuzz_regressions/ that were made by hand rather than found by libFuzzer (the
issue's hostile sizes: JSON nested 10^5 deep, numbers beyond a double, sizes beyond the file). Found inputs are
copied from build-fuzz/artifacts/ as they are. Run from the repository root: /work/venv/bin/python
tests/fuzz_regressions/make_hostile.py"""
import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

root = Path(__file__).resolve().parent.parent.parent
out = root / "tests" / "fuzz_regressions"
deep = "[" * 100000 + "]" * 100000


def put(target, name, content):
    (out / target).mkdir(parents=True, exist_ok=True)
    (out / target / name).write_bytes(content if isinstance(content, bytes) else content.encode())


put("peft_config", "peft_type_nested_1e5.json", '{"peft_type": ' + deep + "}")
put("peft_config", "r_1e400.json", '{"peft_type": "LORA", "r": 1e400, "lora_alpha": 8, "target_modules": "q_proj"}')
put("hf_config", "rope_scaling_nested_1e5.json", '{"rope_scaling": ' + deep + "}")
put("records", "instruction_1e400.json", '[{"instruction": 1e400, "output": "b"}]')
put("records", "nested_1e5.jsonl", deep + "\n")
put("bpe_tokenizer_json", "model_nested_1e5.json", '{"model": {"type": ' + deep + "}}")

# bnb: the nf4 block-64 seed with its quant state replaced.
seed = load_file(str(root / "fuzz" / "corpus" / "bnb_quant_state" / "nf4_b64.safetensors"))
key = next(k for k in seed if "quant_state" in k)
for name, state in [("quant_type_nested_1e5", '{"quant_type": ' + deep + "}"),
                    ("blocksize_1e400", '{"quant_type": "nf4", "blocksize": 1e400}'),
                    ("shape_1e18", json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "float32",
                                               "shape": [1000000000, 1000000000]}))]:
    t = dict(seed)
    t[key] = np.frombuffer(state.encode(), dtype=np.uint8).copy()
    (out / "bnb_quant_state").mkdir(parents=True, exist_ok=True)
    save_file(t, str(out / "bnb_quant_state" / f"{name}.safetensors"))

# safetensors: a header nested 10^5 deep; a tensor claiming 10^18 elements.
def image(header, data=b""):
    h = header.encode()
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "header_nested_1e5.safetensors", image('{"w": ' + deep + "}"))
put("safetensors", "elements_1e18.safetensors",
    image('{"w":{"dtype":"U8","shape":[1000000000,1000000000],"data_offsets":[0,4]}}', b"\0" * 4))

# llama2.c tokenizer: a vocabulary of 2^31-1 tokens over a 12-byte file.
put("llama2c_tokenizer", "vocab_2e9.bin", struct.pack("<iifi", 2**31 - 1, 4, 0.0, 1) + b"a")
# llama2.c v1 header whose sizes multiply past 2^64.
h = struct.pack("<Ii7iB", 0x616B3432, 1, 2**31 - 4, 2**31 - 1, 2**31 - 1, 2, 2, 2**31 - 1, 2**31 - 1, 1)
put("llama2c_checkpoint", "sizes_past_2e64.bin", h + b"\0" * (256 - len(h)))

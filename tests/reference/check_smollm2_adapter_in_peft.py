#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Does an adapter that loralab's finetune wrote for SmolLM2-135M-Instruct load in PEFT and give loralab's logits?

transformers loads the GGUF itself (from_pretrained(dir, gguf_file=...): every tensor dequantized to float32),
PeftModel.from_pretrained attaches the adapter directory, and the logits of every position of a prompt are compared
with loralab's: build/experiments/perplexity --model GGUF --adapter DIR --logits-out FILE.json (float base, adapter
unmerged), run by this script unless --logits names a file it already wrote. The same ids go to both sides.
Tolerance: max |PEFT - loralab| <= 1e-3 over all logits (float32 on both sides; the base alone agrees to ~3e-5,
docs/gguf.md). The adapter must also move the logits by more than 100x that difference, or the check says nothing.

    build/experiments/finetune --model smollm2 --data ../shared/data/alpaca_en_demo.json --output-dir /tmp/smol-ad \
        --quant q4_1 --max-steps 4 --batch-size 2 --seq-len 128 --lr 1e-2 --export-base none
    /work/venv/bin/python tests/reference/check_smollm2_adapter_in_peft.py --adapter /tmp/smol-ad --build build

Measured (AMD EPYC family 25 model 17 (Zen 4), 2 cores; transformers 5.24, peft 0.21; adapters of 4 steps at lr 1e-2,
batch 2, T 128, r 8, q_proj,v_proj, alpaca_en_demo with SmolLM2's chat template, trained over each base; a 21-token
prompt; the check uses the float base on both sides):
    trained over   max |PEFT - loralab|   adapter moves logits by   mean NLL PEFT / loralab
    q4_1 (GGUF)    6.96e-05               10.6                      4.744882 / 4.744891
    nf4-b64-dq     6.10e-05               10.2                      4.769534 / 4.769539
    float32        6.87e-05               10.6                      4.744884 / 4.744890
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

CACHE = os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\nApples, bananas and cherries."
TOL = 1e-3

ap = argparse.ArgumentParser()
ap.add_argument("--adapter", required=True, help="a directory finetune wrote (adapter_config.json + adapter_model.safetensors)")
ap.add_argument("--logits", help="loralab's perplexity --logits-out JSON (default: run build/experiments/perplexity)")
ap.add_argument("--build", default="build", help="loralab's build directory")
a = ap.parse_args()

if a.logits is None:
    tmp = tempfile.mkdtemp()
    text, a.logits = os.path.join(tmp, "prompt.txt"), os.path.join(tmp, "logits.json")
    open(text, "w").write(PROMPT)
    subprocess.run([os.path.join(a.build, "experiments/perplexity"), "--model", os.path.join(CACHE, GGUF), "--adapter", a.adapter,
                    "--text-file", text, "--logits-out", a.logits], check=True)
ours = json.load(open(a.logits))
ids = torch.tensor([ours["ids"]])
mine = torch.tensor(ours["logits"], dtype=torch.float32)

base = AutoModelForCausalLM.from_pretrained(CACHE, gguf_file=GGUF, dtype=torch.float32)
base.eval()
with torch.no_grad():
    base_logits = base(ids).logits[0]
model = PeftModel.from_pretrained(base, a.adapter)
model.eval()
with torch.no_grad():
    peft_logits = model(ids).logits[0]

diff = (peft_logits - mine).abs().max().item()
moved = (peft_logits - base_logits).abs().max().item()
nll = torch.nn.functional.cross_entropy(peft_logits[:-1], ids[0, 1:]).item()
print(f"tokens {ids.shape[1]}; max |PEFT - loralab| = {diff:.3g} (tolerance {TOL:g}); the adapter moves the logits by up to "
      f"{moved:.3g}; mean NLL PEFT {nll:.6f}, loralab {ours['mean_nll']:.6f}")
ok = diff <= TOL and moved > 100 * diff
print("OK" if ok else "FAIL")
sys.exit(0 if ok else 1)

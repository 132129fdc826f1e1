#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes tests/data/peft_adapter/ (a real PEFT LoRA adapter for stories260K) and tests/data/peft_logits.safetensors.

Input: an HF directory of stories260K made by loralab's own converter:
    build/experiments/convert --in ../shared/models/stories260K.bin --out /tmp/stories260K-hf
Then: python3 tests/reference/make_peft_golden.py /tmp/stories260K-hf
(needs torch, transformers, peft from PyPI; never used by the library). The adapter gets random A and B
(init_lora_weights=False) so that it changes the logits; tests/lora check that loralab loads it and reproduces
PEFT's logits, unmerged and merged.
"""
import os, sys
import torch
import peft, transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

hf_dir = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "..", "data")
torch.manual_seed(7)
model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                    init_lora_weights=False, task_type="CAUSAL_LM")
pm = get_peft_model(model, config)
with torch.no_grad():
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.mul_(0.0).add_(torch.randn_like(p) * 0.05)
pm.eval()
ids = torch.tensor([[1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315]])
with torch.no_grad():
    logits = pm(ids).logits[0].contiguous()
pm.save_pretrained(os.path.join(out_dir, "peft_adapter"))
merged = pm.merge_and_unload()
with torch.no_grad():
    merged_logits = merged(ids).logits[0].contiguous()
save_file({"input_ids": ids[0].to(torch.int32), "logits": logits, "merged_logits": merged_logits},
          os.path.join(out_dir, "peft_logits.safetensors"),
          metadata={"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__})
print("wrote", out_dir, "peft", peft.__version__)

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes tests/data/hf_dir_golden.safetensors: transformers' logits for three HF directories loralab writes.

Input: the directories of tests/nn/hf_golden_dirs.hpp, written from stories260K by a small fixture:
    cmake --build build --target hf_golden_dirs
    build/tests/nn/hf_golden_dirs ../shared/models/stories260K.bin /tmp/hf-golden
  f16           nn::write_hf_dir, F16, one model.safetensors
  bf16_sharded  nn::write_hf_dir, BF16, max_shard_bytes 100000: 6 shards + model.safetensors.index.json
  nf4_dq        nn::write_hf_dir_4bit<double_quant<nf4<64>>>, F32 embedding and norms; the same bytes as
                  build/experiments/convert --in ../shared/models/stories260K.bin --out /tmp/stories260K-hf
                  build/experiments/quantize --in /tmp/stories260K-hf --out /tmp/hf-golden/nf4_dq --scheme nf4 --double-quant
Then: python3 tests/reference/make_hf_dir_golden.py /tmp/hf-golden
(needs torch, transformers, bitsandbytes >= 0.50 (4-bit on the CPU), safetensors from PyPI; never used by the library).

Every directory must load with LlamaForCausalLM.from_pretrained and no missing, unexpected or mismatched key; the
sharded one must carry the index transformers' own save_pretrained(max_shard_size=100000) writes, byte for byte.
The float directories are loaded with dtype=float32 (the F16/BF16 values convert exactly) and the 4-bit one as
saved (config.json's quantization_config: Linear4bit, compute dtype float32). bitsandbytes 0.50 repacks 4-bit
weights for its AVX512-BF16 CPU kernel only when out_features % 32 == 0, and stories260K's MLP has 172 rows
(transformers' own 4-bit stories260K fails the same way), so that path is switched off and bnb dequantizes
(dequantize_4bit: the float32 product code * absmax) before a float32 matmul.

It stores input_ids, logits.<dir> (T, V) float32, and dequant.<weight> for two 4-bit weights as bnb dequantizes
them; the metadata holds the versions and each directory's FNV-1a 64 checksum (all files in name order), which
tests/nn/hf_dir_golden_test.cpp checks against the directories it writes itself before comparing logits.
"""
import json, os, sys, tempfile
import bitsandbytes as bnb
import huggingface_hub, safetensors, torch, transformers
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

root = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
out_path = os.path.join(here, "..", "data", "hf_dir_golden.safetensors")
ids = torch.tensor([[1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315]])


def fnv1a64_dir(d):
    h = 0xCBF29CE484222325
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            for b in f.read():
                h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def load(d, **kw):
    model, info = LlamaForCausalLM.from_pretrained(d, output_loading_info=True, **kw)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(k), f"{d}: {k} {info[k]}"
    return model.eval()


out, meta = {"input_ids": ids[0].to(torch.int32)}, {}
for name in ("f16", "bf16_sharded"):
    model = load(os.path.join(root, name), dtype=torch.float32)
    with torch.no_grad():
        out[f"logits.{name}"] = model(ids).logits[0].float().contiguous()

# The index is the one save_pretrained writes for the same model and limit.
with tempfile.TemporaryDirectory() as tmp:
    load(os.path.join(root, "bf16_sharded"), dtype=torch.bfloat16).save_pretrained(tmp, max_shard_size=100000)
    ours = open(os.path.join(root, "bf16_sharded", "model.safetensors.index.json")).read()
    theirs = open(os.path.join(tmp, "model.safetensors.index.json")).read()
    assert ours == theirs, "the sharded index differs from transformers' own"
    assert sorted(os.listdir(tmp)) == sorted(os.listdir(os.path.join(root, "bf16_sharded")) + ["generation_config.json"])

model = load(os.path.join(root, "nf4_dq"))
linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
assert len(linears) == 35 and model.is_loaded_in_4bit, "the 7 linears of 5 layers should load as bnb 4-bit"
assert isinstance(model.lm_head, torch.nn.Linear) and not isinstance(model.lm_head, bnb.nn.Linear4bit)
for m in linears:
    assert m.weight.quant_state.quant_type == "nf4" and m.weight.quant_state.nested
    m.support_avx512bf16_for_cpu = False
with torch.no_grad():
    out["logits.nf4_dq"] = model(ids).logits[0].float().contiguous()
    for w in ("model.layers.0.self_attn.k_proj", "model.layers.4.mlp.down_proj"):
        p = model.get_submodule(w).weight
        out[f"dequant.{w}.weight"] = bnb.functional.dequantize_4bit(p.data, p.quant_state).float().contiguous()

for name in ("f16", "bf16_sharded", "nf4_dq"):
    meta[f"fnv1a64.{name}"] = fnv1a64_dir(os.path.join(root, name))
meta.update({"transformers": transformers.__version__, "torch": torch.__version__, "bitsandbytes": bnb.__version__,
             "huggingface_hub": huggingface_hub.__version__, "safetensors": safetensors.__version__})
save_file(out, out_path, metadata=meta)
print("wrote", os.path.normpath(out_path), json.dumps(meta, indent=1))

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden files for merging: tests/data/loralab_adapter/ (an adapter loralab trained on stories260K) and
tests/data/merge_golden.safetensors (what PEFT and the alpaca-lora lab's export make of it).

Run by hand (needs torch, transformers, peft from PyPI; never used by the library), from the repository root:

    build/experiments/finetune --model models/stories260K.bin --tokenizer models/tok512.model \
        --data /usr/share/games/fortunes/fortunes --format text --seq-len 64 --batch-size 4 --max-steps 20 \
        --lr 3e-3 --targets all-linear --r 4 --alpha 8 --dropout 0 --seed 3 --threads 1 --output-dir /tmp/lab
    build/experiments/merge --model models/stories260K.bin --adapter /tmp/lab --out /tmp/lab-hf
    build/experiments/merge --model models/stories260K.bin --adapter /tmp/lab --out /tmp/lab-meta --format meta
    python3 tests/reference/make_merge_golden.py /tmp/lab /tmp/lab-hf /tmp/lab-meta

What it checks here (assertions) and records for the C++ tests (tests/lora/merge_reference_test.cpp):
 1. peft.AutoPeftModelForCausalLM.from_pretrained(/tmp/lab) finds the base through the adapter_config.json
    field base_model_name_or_path (finetune wrote the base as an HF directory, /tmp/lab/base_model);
    its logits on fixed ids are stored as `unmerged_logits` (with `input_ids`).
 2. merge_and_unload(): every merged linear is stored as `hf.<name>`; loralab's merged HF directory, loaded by
    transformers.LlamaForCausalLM.from_pretrained, gives PEFT's merged logits (asserted, 1e-5).
 3. The lab's export (export_state_dict_checkpoint.py: translate_state_dict_key + unpermute of wq/wk) of the PEFT
    merge: wq/wk stored as `meta.layers.N.attention.w{q,k}.weight`; torch.load(weights_only=True) of loralab's
    consolidated.00.pth has the lab's keys, shapes and values (asserted, 1e-6).
"""
import json, os, shutil, sys
import torch
import peft, transformers
from peft import AutoPeftModelForCausalLM
from safetensors.torch import save_file

adapter_dir, merged_hf, merged_meta = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")
torch.manual_seed(0)
ids = torch.tensor([[1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 290, 311]])

# 1. the adapter, found with its base through adapter_config.json alone
pm = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, torch_dtype=torch.float32)
pm.eval()
with torch.no_grad():
    unmerged = pm(ids).logits[0].contiguous()
cfg = pm.base_model.model.config

# 2. PEFT's merge and loralab's HF merge
merged = pm.merge_and_unload()
with torch.no_grad():
    merged_logits = merged(ids).logits[0]
sd = {k: v.detach().clone().contiguous() for k, v in merged.state_dict().items()}
golden = {"input_ids": ids[0].to(torch.int32), "unmerged_logits": unmerged}
for k, v in sd.items():
    if k.endswith("_proj.weight"):
        golden["hf." + k] = v
ours = transformers.LlamaForCausalLM.from_pretrained(merged_hf, torch_dtype=torch.float32)
with torch.no_grad():
    ours_logits = ours(ids).logits[0]
d = (ours_logits - merged_logits).abs().max().item()
assert d < 1e-5, f"loralab's merged HF dir differs from PEFT's merge: max |dlogit| {d}"

# 3. the lab's Meta export of PEFT's merge, and loralab's consolidated.00.pth as torch.load sees it
n_heads, n_kv, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
def unpermute(w, heads):  # the lab's unpermute, with the head count of the projection (KV heads for wk)
    return w.view(heads, 2, w.shape[0] // heads // 2, dim).transpose(1, 2).reshape(w.shape[0], dim)
def translate(k):
    k = k.replace("base_model.model.", "")
    fixed = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight", "lm_head.weight": "output.weight"}
    if k in fixed:
        return fixed[k]
    layer = k.split(".")[2]
    table = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
             "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
             "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
    for hf, meta in table.items():
        if f".{hf}." in k:
            return f"layers.{layer}.{meta}.weight"
    raise KeyError(k)
lab = {}
for k, v in sd.items():
    if "rotary_emb" in k:
        continue
    m = translate(k)
    if m.endswith("attention.wq.weight"):
        v = unpermute(v, n_heads)
    elif m.endswith("attention.wk.weight"):
        v = unpermute(v, n_kv)
    lab[m] = v
if "output.weight" not in lab:  # tied: Meta's layout stores the head anyway
    lab["output.weight"] = lab["tok_embeddings.weight"]
for k, v in lab.items():
    if k.endswith(("attention.wq.weight", "attention.wk.weight")):
        golden["meta." + k] = v.contiguous()
theirs = torch.load(os.path.join(merged_meta, "consolidated.00.pth"), weights_only=True)
assert set(theirs) == set(lab), f"keys differ: {sorted(set(theirs) ^ set(lab))}"
worst = max((theirs[k].float() - lab[k]).abs().max().item() for k in lab)
assert worst < 1e-6, f"loralab's consolidated.00.pth differs from the lab's export by {worst}"
params = json.load(open(os.path.join(merged_meta, "params.json")))
assert params["dim"] == dim and params["n_layers"] == cfg.num_hidden_layers and params["n_heads"] == n_heads, params

save_file(golden, os.path.join(data, "merge_golden.safetensors"),
          metadata={"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                    "meta_keys": json.dumps(sorted(lab)), "hf_dir_max_dlogit": repr(d), "meta_max_abs": repr(worst)})
out = os.path.join(data, "loralab_adapter")
os.makedirs(out, exist_ok=True)
for f in ("adapter_config.json", "adapter_model.safetensors"):
    shutil.copy(os.path.join(adapter_dir, f), out)
print(f"wrote merge_golden.safetensors and loralab_adapter/ (peft {peft.__version__}, transformers {transformers.__version__}, "
      f"torch {torch.__version__}); HF merge max |dlogit| {d:.2e}, Meta export max |diff| {worst:.2e}")

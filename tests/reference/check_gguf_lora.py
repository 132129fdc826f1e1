#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks a GGUF LoRA adapter written by lora/gguf_adapter.hpp the way llama.cpp would read it, against PEFT.

Default inputs (written by tests/lora/gguf/gguf_adapter_test.cpp with LORALAB_UPDATE_GOLDEN=1):
  tests/data/gguf_lora_golden.gguf        the adapter as llama.cpp's --lora takes it
  tests/data/gguf_lora_golden_peft/       the same adapter as loralab saves it for PEFT
  base: the tiny golden llama (make_gguf_model_golden.tiny_model(), = tests/data/gguf_model_golden.gguf)

1. gguf-py reads the file: general.architecture = llama, general.type = adapter, adapter.type = lora,
   adapter.lora.alpha a float32; exactly blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight
   .lora_a / .lora_b for every adapted module; lora_a (r, K) and lora_b (N, r) in torch order, i.e. ne [K, r] and
   [r, N] as convert_lora_to_gguf.py writes them; dtype F32 (or F16).
2. llama.cpp's arithmetic in its own layout: the base GGUF's W (attn_q/attn_k rows permuted) + alpha/r · B·A equals
   LlamaModel.permute of PEFT's merged weight (merge_and_unload), and in HF layout, with the permutation of B undone,
   W + alpha/r · B·A equals PEFT's merged weight.
3. Logits of the HF model carrying those weights equal PEFT's (unmerged) logits.
Prints one line per check and the max differences; exits 1 on a failure.
    /work/venv/bin/python tests/reference/check_gguf_lora.py [ADAPTER.gguf PEFT_DIR]
"""
import os, sys
import numpy as np
import torch
import gguf
import peft

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")
sys.path.insert(0, here)
from make_gguf_model_golden import tiny_model, permute  # noqa: E402

NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def unpermute(w, n_head):  # the inverse of permute(w, n_head, n_head)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    path = sys.argv[1] if len(sys.argv) > 2 else os.path.join(data, "gguf_lora_golden.gguf")
    peft_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(data, "gguf_lora_golden_peft")
    r = gguf.GGUFReader(path)

    def field(key):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    check(field("general.architecture") == "llama", "general.architecture = llama")
    check(field("general.type") == "adapter", "general.type = adapter")
    check(field("adapter.type") == "lora", "adapter.type = lora")
    fa = r.fields.get("adapter.lora.alpha")
    check(fa is not None and fa.types == [gguf.GGUFValueType.FLOAT32], "adapter.lora.alpha is a float32")
    alpha = float(fa.contents())

    model, cfg = tiny_model()
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # the base is the one in tests/data/gguf_model_golden.gguf (llama.cpp's layout)
    g = {t.name: np.array(t.data) for t in gguf.GGUFReader(os.path.join(data, "gguf_model_golden.gguf")).tensors}
    check(np.array_equal(g["blk.0.attn_q.weight"], permute(base["model.layers.0.self_attn.q_proj.weight"].numpy(), H, H)),
          "tiny_model() is tests/data/gguf_model_golden.gguf")

    tensors = {t.name: t for t in r.tensors}
    want = {f"blk.{l}.{gn}.weight.lora_{ab}" for l in range(cfg.num_hidden_layers) for gn in NAMES.values() for ab in "ab"}
    check(set(tensors) == want, f"tensor names: {len(tensors)} = every adapted module's lora_a and lora_b")
    check(all(t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) for t in tensors.values()),
          "dtypes: " + ", ".join(sorted({t.tensor_type.name for t in tensors.values()})))

    pm = peft.PeftModel.from_pretrained(model, peft_dir).eval()
    ids = torch.tensor([[1, 5, 17, 42, 95, 0, 63, 7, 7, 30, 88, 2]])
    with torch.no_grad():
        peft_logits = pm(ids).logits[0]
    merged = {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}
    worst_hf = worst_cpp = 0.0
    shapes_ok = True
    applied = {}
    for l in range(cfg.num_hidden_layers):
        for hf, gn in NAMES.items():
            key = f"model.layers.{l}.{hf}.weight"
            W = base[key].double().numpy()
            N, K = W.shape
            A = np.array(tensors[f"blk.{l}.{gn}.weight.lora_a"].data, dtype=np.float64)  # numpy (r, K)
            B = np.array(tensors[f"blk.{l}.{gn}.weight.lora_b"].data, dtype=np.float64)  # numpy (N, r)
            rank = A.shape[0]
            shapes_ok &= A.shape == (rank, K) and B.shape == (N, rank)
            shapes_ok &= list(tensors[f"blk.{l}.{gn}.weight.lora_a"].shape) == [K, rank]  # gguf-py's ne order
            heads = H if gn == "attn_q" else Hkv if gn == "attn_k" else 0
            want_merged = merged[key].double().numpy()
            # llama.cpp: its own (permuted) base plus alpha/r B A
            W_cpp = (permute(W, heads, heads) if heads else W) + alpha / rank * (B @ A)
            worst_cpp = max(worst_cpp, np.abs(W_cpp - (permute(want_merged, heads, heads) if heads else want_merged)).max())
            # HF layout: B's permutation undone
            B_hf = unpermute(B, heads) if heads else B
            W_hf = W + alpha / rank * (B_hf @ A)
            worst_hf = max(worst_hf, np.abs(W_hf - want_merged).max())
            applied[key] = torch.tensor(W_hf, dtype=torch.float32)
    check(shapes_ok, "shapes: lora_a (r, K) = ne [K, r], lora_b (N, r) = ne [r, N]")
    # PEFT merges in float32: W + (B @ A) * scaling, so differences are float32 rounding of O(1) weights
    check(worst_cpp < 1e-5, f"llama.cpp layout: permute(W) + alpha/r B A vs permute(PEFT merged): max |diff| {worst_cpp:.2e}")
    check(worst_hf < 1e-5, f"HF layout: W + alpha/r unpermute(B) A vs PEFT merged: max |diff| {worst_hf:.2e}")
    model2, _ = tiny_model()
    sd = model2.state_dict()
    sd.update(applied)
    model2.load_state_dict(sd)
    with torch.no_grad():
        logits = model2(ids).logits[0]
    d = float((logits - peft_logits).abs().max())
    check(d < 1e-4, f"logits with the GGUF adapter applied vs PEFT's: max |diff| {d:.2e}")
    print(f"alpha {alpha}, rank {rank}, {len(tensors)} tensors; " + ("all checks passed" if not failures else f"{len(failures)} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

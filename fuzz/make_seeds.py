#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora fuzz/corpus/TARGET/ from the real files in tests/data, models/ and ../shared, plus small
files made here where the real ones are too large for a quick fuzz run (llama2.c checkpoints, bnb weights). The
output is committed, so CI needs no Python. Run from the repository root: /work/venv/bin/python fuzz/make_seeds.py
"""
import json
import shutil
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

root = Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"
data = root / "tests" / "data"
shared = root.parent / "shared"


def put(target, name, content):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def copy(target, src, name=None):
    put(target, name or src.name, src.read_bytes())


# safetensors: the small real files (torch, loralab and ggml-golden writers).
for f in ["torch_saved_values.safetensors", "loralab_written_golden.safetensors", "ggml_quant_golden.safetensors"]:
    copy("safetensors", data / f)
put("safetensors", "empty.safetensors", struct.pack("<Q", 2) + b"{}")
put("safetensors", "metadata.safetensors",
    (lambda h: struct.pack("<Q", len(h)) + h)(b'{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]}}') + b"\x80\x3f\x00\x40")

# bnb 4-bit: one file per weight of the bitsandbytes golden file (nf4/fp4, block sizes, nested), and a layer of
# the double-quantized model golden.
bnb = load_file(str(data / "bnb_golden.safetensors"))
(corpus / "bnb_quant_state").mkdir(parents=True, exist_ok=True)
for w in ["nf4_b32", "nf4_b64", "fp4_b128", "nf4_b64_dq", "fp4_b64_dq"]:
    save_file({k: v for k, v in bnb.items() if k.startswith(w + ".weight")}, str(corpus / "bnb_quant_state" / f"{w}.safetensors"))
dq = load_file(str(data / "bnb_dq_golden.safetensors"))
save_file({k: v for k, v in dq.items() if k.startswith("model.layers.0.self_attn.k_proj.weight")},
          str(corpus / "bnb_quant_state" / "k_proj_dq.safetensors"))

# llama2.c checkpoints: a tiny config (dim 8, hidden 16, 2 layers, 2 heads, 1 kv head, vocab 16, seq 4) in v0
# (shared and own classifier), v1 and v2 (Q8_0, group 8), laid out as llama2.c's export.py writes them.
dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 2, 2, 1, 16, 4
kvd = dim // heads * kv
rng = np.random.default_rng(0)
def f32(n): return rng.standard_normal(n).astype("<f4")
emb, att, ffn, fin = f32(vocab * dim), f32(layers * dim), f32(layers * dim), f32(dim)
wq, wk, wv, wo = f32(layers * dim * dim), f32(layers * kvd * dim), f32(layers * kvd * dim), f32(layers * dim * dim)
w1, w2, w3, cls = f32(layers * hidden * dim), f32(layers * dim * hidden), f32(layers * hidden * dim), f32(vocab * dim)
freq = f32(seq * (dim // heads) // 2 * 2)
for shared_cls in (True, False):
    h = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab if shared_cls else -vocab, seq)
    body = b"".join(a.tobytes() for a in [emb, att, wq, wk, wv, wo, ffn, w1, w2, w3, fin, freq] + ([] if shared_cls else [cls]))
    put("llama2c_checkpoint", f"v0_{'shared' if shared_cls else 'own'}.bin", h + body)
def header(version, shared_cls, extra=b""):
    h = struct.pack("<Ii7iB", 0x616B3432, version, dim, hidden, layers, heads, kv, vocab, seq, shared_cls) + extra
    return h + b"\0" * (256 - len(h))
v1 = [att, ffn, fin, emb, wq, wk, wv, wo, w1, w2, w3]
put("llama2c_checkpoint", "v1.bin", header(1, 1) + b"".join(a.tobytes() for a in v1))
put("llama2c_checkpoint", "v1_own.bin", header(1, 0) + b"".join(a.tobytes() for a in v1 + [cls]))
def q8(a, g=8):
    per = a.reshape(-1, g)
    s = (np.abs(per).max(axis=1) / 127).astype("<f4")
    return np.round(per / s[:, None]).astype("i1").tobytes() + s.tobytes()
put("llama2c_checkpoint", "v2.bin", header(2, 1, struct.pack("<i", 8)) + b"".join(a.tobytes() for a in v1[:3]) +
    b"".join(q8(a) for a in v1[3:]))

# llama2.c tokenizer: 4 bytes of vocab size, then the file.
tok = (shared / "models" / "tok512.bin").read_bytes()
put("llama2c_tokenizer", "tok512.bin", struct.pack("<i", 512) + tok)
small = struct.pack("<i", 6) + b"".join(  # max_token_length 6, then (score, length, bytes) per token
struct.pack("<fi", -i, len(p)) + p for i, p in
                                        enumerate([b"<unk>", b"\n<s>\n", b"\n</s>\n", b"<0x41>", b"a", b"ab"]))
put("llama2c_tokenizer", "six.bin", struct.pack("<i", 6) + small)

# config.json: what transformers writes for stories260K (float, 4-bit nf4+dq) and SmolLM2.
base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "hidden_act": "silu", "torch_dtype": "float32", "dtype": "float32", "attention_bias": False, "mlp_bias": False,
        "rope_scaling": None, "head_dim": 8, "bos_token_id": 1, "eos_token_id": 2}
put("hf_config", "stories260K.json", json.dumps(base, indent=2, sort_keys=True))
q = dict(base, quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                    "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                    "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8"})
put("hf_config", "stories260K_nf4_dq.json", json.dumps(q, indent=2, sort_keys=True))
smol = dict(base, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000, head_dim=64,
            torch_dtype="bfloat16", dtype="bfloat16")
put("hf_config", "smollm2.json", json.dumps(smol, indent=2, sort_keys=True))

# PEFT: the real adapter_config.json files; the adapter tensors of PEFT's own stories260K adapter.
for d in ["peft_adapter", "loralab_adapter", "gguf_lora_golden_peft"]:
    copy("peft_config", data / d / "adapter_config.json", f"{d}.json")
copy("peft_adapter", data / "peft_adapter" / "adapter_model.safetensors", "peft_adapter.safetensors")

# Records: the start of each shared data set, and the shapes the text splitter knows.
alpaca = json.loads((shared / "data" / "alpaca_en_demo.json").read_text())
put("records", "alpaca.json", json.dumps(alpaca[:3], indent=2, ensure_ascii=False))
put("records", "dolly.jsonl", "".join(json.dumps({"instruction": "Who wrote it?", "context": c, "response": "Me.",
                                                  "category": "open_qa"}) + "\n" for c in ["", "A book."]))
put("records", "quotes.jsonl", "".join((shared / "data" / "english_quotes.jsonl").read_text().splitlines(True)[:3]))
put("records", "tinystories.txt", (shared / "data" / "tinystories_sample.txt").read_text()[:3000])
put("records", "fortunes.txt", "A fortune.\n%\nAnother one,\n  on two lines.\n%\n")
put("records", "eot.txt", "One story.<|endoftext|>Two stories.<|endoftext|>\n")

# Chat templates: every template of the golden file (ChatML with a default system prompt, Llama-2, Zephyr, ...).
golden = json.loads((data / "chat_template_golden.json").read_text())
for name, t in golden["templates"].items():
    put("chat_template", f"{name}.jinja", t if isinstance(t, str) else json.dumps(t))

# GGUF: the small golden files (metadata of every type, a LoRA adapter, a tiny llama with a BPE vocabulary).
for f in ["gguf_golden.gguf", "gguf_lora_golden.gguf", "gguf_model_golden.gguf"]:
    copy("gguf", data / f)

# .pth: what torch.save writes (classic zip and zip64) and what loralab's writer writes.
for f in ["torch_saved.pth", "loralab_written.pth", "loralab_written_zip64.pth"]:
    copy("pth", data / f)

# tokenizer.json: the small BPE tokenizer of the golden tests.
copy("bpe_tokenizer_json", data / "bpe_small" / "tokenizer.json")

for d in sorted(corpus.iterdir()):
    print(f"{d.name}: {len(list(d.iterdir()))} seeds, {sum(f.stat().st_size for f in d.iterdir())} bytes")

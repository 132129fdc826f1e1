#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden files for include/nn/gguf_model.hpp, checked by tests/nn/gguf/gguf_model_test.cpp.

1. tests/data/gguf_model_golden.gguf + .json: a tiny HF LlamaForCausalLM with random weights (2 layers, hidden 32,
   4 heads, 2 KV heads (GQA), intermediate 64, vocab 96, rope_theta 50000, tied embeddings) written by gguf-py in
   llama.cpp's layout: convert_hf_to_gguf.py's names, keys and LlamaModel.permute of q_proj / k_proj rows (K with
   n_kv_heads), F32 tensors. The JSON holds the config, input ids and transformers' float32 logits (T, V).
2. tests/data/gguf_model_smollm2.json, when ${LORALAB_CACHE:-~/.cache/loralab}/SmolLM2-135M-Instruct.Q4_1.gguf
   exists: transformers loads that GGUF (AutoModelForCausalLM.from_pretrained(dir, gguf_file=name): every tensor
   dequantized to float32, q/k rows permuted back); for each prompt: its token ids (transformers' tokenizer from the
   same GGUF), the top-k logits of the last position, and 10 greedy tokens.
3. tests/data/gguf_model_smollm2_agreement.json, same model (issue 11: perplexity and generate agree with
   transformers): (a) teacher-forced NLL of the first N_PPL tokens of ../shared/data/tinystories_validation_100.txt
   (BOS + transformers' ids of the whole file, add_special_tokens=False, cut to N_PPL) in windows of PPL_CONTEXT
   positions overlapping by one token, as experiments/perplexity --context scores them (nn/perplexity.hpp): ids,
   per-window token counts, mean NLL (float64 log-softmax of float32 logits); (b) a chat prompt rendered with the
   GGUF's chat template (add_generation_prompt), 32 greedy steps with a KV cache and no stop token: the ids and,
   at every step, the top-5 logits and the top-2 margin (nats).

Run from the repository root by hand (torch, transformers, gguf, numpy):
    /work/venv/bin/python tests/reference/make_gguf_model_golden.py [--agreement-only]
"""
import json, os
import numpy as np
import torch
import transformers
import gguf

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")


def permute(w, n_head, n_head_kv):  # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_model():
    """The tiny golden llama (seeded): what tests/data/gguf_model_golden.gguf holds, as an HF model."""
    torch.manual_seed(20241101)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
                                   tie_word_embeddings=True,
                                   attention_bias=False, mlp_bias=False)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model, cfg


def tiny():
    model, cfg = tiny_model()
    path = os.path.join(data, "gguf_model_golden.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("tiny-llama-golden")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm",
             "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        t = p.numpy().astype(np.float32)
        base = name[: -len(".weight")]
        if base.startswith("model.layers."):
            _, _, n, rel = base.split(".", 3)
            gname = f"blk.{n}.{names[rel]}.weight"
        else:
            gname = names[base] + ".weight"
        if name.endswith("q_proj.weight"):
            t = permute(t, cfg.num_attention_heads, cfg.num_attention_heads)
        if name.endswith("k_proj.weight"):
            t = permute(t, cfg.num_attention_heads, cfg.num_key_value_heads)
        w.add_tensor(gname, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ids = [1, 5, 17, 42, 95, 0, 63, 7, 7, 30, 88, 2]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    out = {"config": {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 96,
                      "max_seq_len": 64, "rope_theta": 50000.0, "rms_norm_eps": 1e-5, "tied": True},
           "input_ids": ids, "logits": [[float(x) for x in row] for row in logits],
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    json.dump(out, open(os.path.join(data, "gguf_model_golden.json"), "w"))
    print("wrote", path, os.path.getsize(path), "bytes")


def smollm2():
    cache = os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab"))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.exists(os.path.join(cache, name)):
        print("skipped SmolLM2:", os.path.join(cache, name), "is absent (scripts/get_model.sh smollm2)")
        return
    tok = transformers.AutoTokenizer.from_pretrained(cache, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(cache, gguf_file=name, torch_dtype=torch.float32).eval()
    prompts = ["The capital of France is", "Once upon a time, there was a little",
               "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]
    cases = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            top = torch.topk(logits, 10)
            gen = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, num_beams=1)[0, len(ids):]
        cases.append({"prompt": p, "input_ids": ids, "top_ids": top.indices.tolist(),
                      "top_logits": [float(x) for x in top.values], "greedy": gen.tolist(),
                      "greedy_text": tok.decode(gen)})
        print(repr(p), "->", repr(tok.decode(gen)))
    json.dump({"model": name, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
               "gguf": getattr(gguf, "__version__", "?")}, "cases": cases},
              open(os.path.join(data, "gguf_model_smollm2.json"), "w"), indent=1)


N_PPL, PPL_CONTEXT = 384, 128
CHAT = "What is the capital of France?"


def smollm2_agreement():
    cache = os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab"))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.exists(os.path.join(cache, name)):
        print("skipped SmolLM2 agreement:", os.path.join(cache, name), "is absent (scripts/get_model.sh smollm2)")
        return
    tok = transformers.AutoTokenizer.from_pretrained(cache, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(cache, gguf_file=name, dtype=torch.float32).eval()
    text = open(os.path.join(here, "..", "..", "..", "shared", "data", "tinystories_validation_100.txt"),
                encoding="utf-8").read()
    all_ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    ids = all_ids[:N_PPL]
    total, count, windows = 0.0, 0, []
    with torch.no_grad():
        start = 0
        while start + 1 < len(ids):  # nn::teacher_forced_nll's windows
            end = min(len(ids), start + PPL_CONTEXT)
            logits = model(torch.tensor([ids[start:end]])).logits[0].double()
            lp = torch.log_softmax(logits[:-1], dim=-1)
            nll = -lp[torch.arange(end - start - 1), torch.tensor(ids[start + 1:end])]
            total += float(nll.sum())
            count += end - start - 1
            windows.append(end - start)
            start += PPL_CONTEXT - 1
    ppl = {"text_file": "tinystories_validation_100.txt", "file_tokens": len(all_ids), "n_tokens": len(ids),
           "context": PPL_CONTEXT, "ids": ids, "window_lengths": windows, "predicted": count,
           "mean_nll": total / count}
    print("perplexity: file has", len(all_ids), "tokens with BOS; first", len(ids), "scored:", count, "predicted, mean NLL",
          total / count)

    chat = tok.apply_chat_template([{"role": "user", "content": CHAT}], tokenize=False, add_generation_prompt=True)
    pids = tok(chat, add_special_tokens=False)["input_ids"]
    steps = []
    with torch.no_grad():
        out = model(torch.tensor([pids]), use_cache=True)
        for _ in range(32):
            l = out.logits[0, -1].float()
            top = torch.topk(l, 5)
            nxt = int(top.indices[0])
            steps.append({"id": nxt, "top_ids": top.indices.tolist(), "top_logits": [float(x) for x in top.values],
                          "margin": float(top.values[0] - top.values[1])})
            out = model(torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True)
    greedy = [s["id"] for s in steps]
    margins = [s["margin"] for s in steps]
    print("chat:", repr(CHAT), "->", repr(tok.decode(greedy)))
    print("margins: first %.4f, min %.4f at step %d" % (margins[0], min(margins), margins.index(min(margins))))
    gen = {"message": CHAT, "rendered": chat, "prompt_ids": pids, "greedy": greedy, "steps": steps,
           "greedy_text": tok.decode(greedy)}
    json.dump({"model": name, "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
               "perplexity": ppl, "chat": gen},
              open(os.path.join(data, "gguf_model_smollm2_agreement.json"), "w"), indent=None)


if __name__ == "__main__":
    import sys
    if "--agreement-only" not in sys.argv:
        tiny()
        smollm2()
    smollm2_agreement()

#!/usr/bin/env python3
"""The PyTorch + PEFT peer of build/bench/train_bench: the same training step on the same model shapes, as a
transformers + PEFT user would write it. bench/peer_compare.sh runs it once per config, as its own process.

    PY bench/peft_peer.py --size 30M --config lora --steps 4 --threads 2      # prints one JSON line
    PY bench/peft_peer.py --size 30M --prepare                                # write the model once, print the setup
    PY bench/peft_peer.py --size 135M --config qlora --steps 2                # SmolLM2-135M-Instruct from the GGUF

Model: LlamaForCausalLM with train_bench's config_of() shapes (260K: B 4 x T 64; 30M: B 4 x T 256), tied
embeddings, rope theta 1e4, RMSNorm eps 1e-5, N(0, 0.02) weights, saved once under --cache and loaded with
from_pretrained as a user loads a checkpoint (bitsandbytes quantizes while loading).
135M: SmolLM2-135M-Instruct from --gguf (default: the cache scripts/get_model.sh smollm2 fills, the file
train_bench --model smollm2 reads), B 4 x T 256. lora loads it as a transformers user does,
AutoModelForCausalLM.from_pretrained(dir, gguf_file=...), every tensor dequantized to float32. transformers refuses
a quantization_config together with gguf_file, so --prepare saves that float32 model once as safetensors under
--cache and qlora / qlora-nockpt load the copy with the BitsAndBytesConfig (bitsandbytes quantizes while loading).
Adapters: PEFT LoRA r 8, alpha 16, dropout 0.05 on q,k,v,o,gate,up,down; AdamW (lr 1e-4), clip 1.0.
Configs: lora (float32 base, no checkpointing), qlora (nf4 + double quant, compute float32,
prepare_model_for_kbit_training with gradient checkpointing: PEFT's default), qlora-nockpt (the same, off).
Step = forward + loss (labels = inputs) + backward + clip + AdamW step + zero_grad, timed with perf_counter;
rows are the bytes of --data as token ids, like train_bench's. Peak RSS is getrusage's ru_maxrss of this process.
"""
import argparse
import json
import os
import re
import resource
import statistics
import sys
import time

SIZES = {  # train_bench's config_of(): dim, hidden, layers, heads, kv heads, vocab; and its B x T
    "260K": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=5, num_attention_heads=8,
                 num_key_value_heads=4, vocab_size=512, batch=4, seq=64),
    "30M": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=8, vocab_size=8192, batch=4, seq=256),
    "135M": dict(gguf=True, batch=4, seq=256),  # SmolLM2-135M-Instruct, the shapes are the file's
}
GGUF_135M = os.path.join(os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab")),
                         "SmolLM2-135M-Instruct.Q4_1.gguf")
CONFIGS = {"lora": (False, False), "qlora": (True, True), "qlora-nockpt": (True, False)}  # (4-bit base, checkpointing)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_info(torch):
    """One line on what torch computes with: BLAS, oneDNN, ISA, threads."""
    show = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", show)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", show)
    dnn = re.search(r"(?:MKL-DNN|oneDNN) (v[\w.]+)", show)
    return (f"torch BLAS {blas[1] if blas else '?'}{f' (oneMKL {mkl[1]})' if mkl else ''}, "
            f"oneDNN {dnn[1] if dnn and torch.backends.mkldnn.is_available() else 'off'}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads ({torch.get_num_interop_threads()} inter-op)")


def gguf_model(args, transformers, torch):
    """The --gguf model as transformers loads it: every tensor dequantized to float32."""
    if not os.path.isfile(args.gguf):
        sys.exit(f"peft_peer.py: {args.gguf} is not there; fetch it with scripts/get_model.sh smollm2 (or pass --gguf FILE)")
    return transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(args.gguf)),
                                                             gguf_file=os.path.basename(args.gguf), dtype=torch.float32)


def model_dir(args, transformers, torch):
    """The random-weight checkpoint for --size, written on first use (one seed: the same weights every run); for a
    GGUF size, the GGUF dequantized to float32 and saved as safetensors (what bitsandbytes can quantize while loading)."""
    s = dict(SIZES[args.size])
    if s.get("gguf"):
        path = os.path.join(args.cache, os.path.splitext(os.path.basename(args.gguf))[0] + "-f32")
        if not os.path.exists(os.path.join(path, "config.json")):
            import safetensors.torch  # save_pretrained refuses a model loaded from a GGUF ("quantized with gguf")
            model = gguf_model(args, transformers, torch)
            os.makedirs(path + ".tmp", exist_ok=True)
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            transformers.AutoConfig.for_model(**config).save_pretrained(path + ".tmp")
            safetensors.torch.save_model(model, os.path.join(path + ".tmp", "model.safetensors"))
            os.replace(path + ".tmp", path)
        return path
    path = os.path.join(args.cache, f"llama_{args.size}_T{s['seq']}")
    if not os.path.exists(os.path.join(path, "config.json")):
        B, T = s.pop("batch"), s.pop("seq")
        cfg = transformers.LlamaConfig(**s, max_position_embeddings=T, tie_word_embeddings=True, rms_norm_eps=1e-5,
                                       rope_theta=10000.0, initializer_range=0.02, hidden_act="silu",
                                       attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2)
        torch.manual_seed(1234)
        transformers.LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


def linear_bits(model, bitsandbytes):
    """Bits per weight of the frozen linears PEFT wraps (each adapter's base_layer): a float weight's element size, or
    a Linear4bit's packed codes + absmax (+ with double quant the absmax's absmax and code) + its 16-entry code."""
    bits = weights = 0
    for name, m in model.named_modules():
        if not name.endswith(".base_layer"):
            continue
        w = m.weight
        if isinstance(m, bitsandbytes.nn.Linear4bit):
            qs = w.quant_state
            n = 1
            for d in qs.shape:
                n *= d
            b = w.numel() * w.element_size() + qs.absmax.numel() * qs.absmax.element_size() + qs.code.numel() * qs.code.element_size()
            if qs.nested:
                b += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + qs.state2.code.numel() * qs.state2.code.element_size() + 4
            bits, weights = bits + 8 * b, weights + n
        else:
            bits, weights = bits + 8 * w.numel() * w.element_size(), weights + w.numel()
    return bits / weights if weights else float("nan")


def rows(args, vocab, B, T):
    """B x T token ids from the bytes of --data, the next rows each call (random ids if the file is missing)."""
    import torch
    try:
        data = open(args.data, "rb").read()
    except OSError:
        data = b""
    if len(data) < T:
        g = torch.Generator().manual_seed(args.seed)
        while True:
            yield torch.randint(0, vocab, (B, T), generator=g)
    at = 0
    while True:
        batch = []
        for _ in range(B):
            batch.append(list(data[at:at + T]))
            at = (at + T) % (len(data) - T + 1)
        yield torch.tensor(batch, dtype=torch.long)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), required=True)
    ap.add_argument("--config", choices=list(CONFIGS), default="lora")
    ap.add_argument("--prepare", action="store_true", help="only write the model to --cache and print the setup")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=4, help="timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data", default="/usr/share/games/fortunes/fortunes")
    ap.add_argument("--cache", default=os.path.join("build", "peer-cache"))
    ap.add_argument("--gguf", default=GGUF_135M, help="the GGUF of --size 135M (default: %(default)s)")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        ap.error(f"--threads {args.threads} --steps {args.steps} --warmup {args.warmup}: need threads, steps >= 1, warmup >= 0")

    import torch
    import transformers
    import peft
    import bitsandbytes
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rss_import = rss_mib()
    path = model_dir(args, transformers, torch)
    versions = {m.__name__: m.__version__ for m in (torch, transformers, peft, bitsandbytes)}
    if args.prepare:
        print(json.dumps(dict(size=args.size, model=path, gguf=args.gguf if SIZES[args.size].get("gguf") else None,
                              torch_info=torch_info(torch), versions=versions)))
        return

    four_bit, ckpt = CONFIGS[args.config]
    B, T = SIZES[args.size]["batch"], SIZES[args.size]["seq"]
    if four_bit:
        bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map="cpu",
                                                                  dtype=torch.float32)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=ckpt)
    elif SIZES[args.size].get("gguf"):
        model = gguf_model(args, transformers, torch)
    else:
        model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS,
                                                       task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    n4 = sum(isinstance(m, bitsandbytes.nn.Linear4bit) for m in model.modules())
    bits = linear_bits(model, bitsandbytes)
    rss_model = rss_mib()

    torch.manual_seed(args.seed)
    batches = rows(args, model.config.vocab_size, B, T)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        ids = next(batches)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= args.warmup:
            times.append(dt)
    step_s = statistics.median(times)
    print(json.dumps(dict(
        side="peft", size=args.size, config=args.config, checkpointing=ckpt, batch=B, seq_len=T, threads=args.threads,
        warmup=args.warmup, steps=len(times), step_s=step_s, tokens_per_s=B * T / step_s, step_s_all=times,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_after_import_mib=rss_import,
        rss_after_model_mib=rss_model, loaded_from=args.gguf if SIZES[args.size].get("gguf") and not four_bit else path,
        trainable_params=sum(p.numel() for p in trainable), linear4bit=n4,
        linear_bits_per_weight=bits,
        gradient_checkpointing=any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()), first_loss=losses[0],
        last_loss=losses[-1], versions=versions, torch_info=torch_info(torch))))


if __name__ == "__main__":
    sys.exit(main())

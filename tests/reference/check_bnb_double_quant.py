#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""End to end: loralab's double_quant<nf4<64>> against bitsandbytes' quantize_4bit(compress_statistics=True,
quant_type="nf4", blocksize=64) on the CPU, for every linear weight of models/stories260K.bin (35 weights, as
loralab loads them) and for a 4096x4096 Gaussian weight (262144 blocks: torch's mean there is multi-threaded).

It compiles tests/reference/dq_model_cli.cpp ($CXX or c++, with Eigen and OpenMP), lets it quantize, quantizes the
same float32 weights with bnb, and compares every part bnb's Linear4bit saves: the 4-bit codes (W), absmax codes
(W.absmax), quant_map, nested_absmax, nested_quant_map and the JSON quant_state (nested_offset as Python's repr),
and the offset's float32 bits.

One difference is expected and checked to be exactly that: bnb's CPU backend quantizes the centred absmax with a
65536-entry lookup table (csrc/cpu_ops.cpp quantize_cpu_impl, spec shared/specs/bitsandbytes.md section 6.4), which
for a value within one table bin (2/65535) of a midpoint may give a code that is not the nearest (near 0, where
the signed dynamic map is denser than the table, even two codes away); loralab follows CUDA's binary search (the
nearest code). The script rebuilds bnb's table and confirms that applied to the centred absmax it reproduces
every bnb absmax code, and that at every loralab/bnb difference loralab's code is the nearer one.

With --write it stores two of the stories260K weights (one with a lookup-table difference, one without, both with
an offset that a double-precision mean gets 1 ulp wrong) and bnb's serialization of them in
tests/data/bnb_dq_golden.safetensors for tests/quant/torch_mean_test.cpp.

Run: /work/venv/bin/python tests/reference/check_bnb_double_quant.py [--write] [--skip-4096]
"""
import argparse, json, os, subprocess, sys, tempfile
import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "stories260K.bin")
GOLDEN = os.path.join(ROOT, "tests", "data", "bnb_dq_golden.safetensors")
GOLDEN_WEIGHTS = ["model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.k_proj.weight"]


def build(tmp):
    exe = os.path.join(tmp, "dq_model_cli")
    cxx = os.environ.get("CXX", "c++")
    eigen = subprocess.run(["pkg-config", "--cflags", "eigen3"], capture_output=True, text=True).stdout.split()
    subprocess.run([cxx, "-std=c++20", "-O2", "-ffp-contract=off", "-fopenmp", "-I", os.path.join(ROOT, "include"),
                    *(eigen or ["-I/usr/include/eigen3"]), os.path.join(ROOT, "tests", "reference", "dq_model_cli.cpp"),
                    "-o", exe], check=True)
    return exe


def loralab_quantize(exe, src, tmp):
    out = os.path.join(tmp, "loralab_" + os.path.basename(src) + ".safetensors")
    subprocess.run([exe, src, out], check=True)
    return load_file(out)


def lut_rule_codes(centred, absmax2, code):
    """bnb 0.50 CPU quantize_blockwise (quantize_cpu_impl) on the centred absmax, blocksize 256."""
    code = code.astype(np.float32)
    mids = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    i = np.arange(65536, dtype=np.float32)
    bins = (np.float32(-1.0) + (np.float32(2.0) * i) / np.float32(65535)).astype(np.float32)
    lut = np.searchsorted(mids, bins, side="left").astype(np.uint8)  # number of midpoints below the bin value
    out = np.empty(centred.size, np.uint8)
    for b in range(absmax2.size):
        x = centred[b * 256:(b + 1) * 256]
        if absmax2[b] == 0:
            out[b * 256:(b + 1) * 256] = 0
            continue
        v = np.clip((x * (np.float32(1.0) / absmax2[b])).astype(np.float32), np.float32(-1), np.float32(1))
        # ((v + 1) * 0.5) * 65535 + 0.5, truncated (an FMA there gives the same index: the product is exact in double)
        idx = (((v + np.float32(1)) * np.float32(0.5)).astype(np.float64) * 65535 + 0.5).astype(np.float32)
        out[b * 256:(b + 1) * 256] = lut[idx.astype(np.int64)]
    return out


def compare(name, x, ours):
    """Returns (problems, lut_differences, bnb_parts, old_offset_differs)."""
    q, st = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    bnb_parts = {name: q, **{f"{name}.{k}": v for k, v in st.as_dict(packed=True).items()}}
    problems = []
    for key, ref in bnb_parts.items():
        mine = ours[key]
        if key.endswith(".absmax"):
            continue
        a = mine.contiguous().view(-1).view(torch.uint8)
        b = ref.contiguous().view(-1).view(torch.uint8)
        if a.shape != b.shape or not torch.equal(a, b):
            problems.append(f"{key} differs" + ("" if "quant_state" not in key else
                            f": ours {bytes(a.numpy()).decode()} bnb {bytes(b.numpy()).decode()}"))
    state = json.loads(bytes(ours[f"{name}.quant_state.bitsandbytes__nf4"].numpy()).decode())
    if np.float32(state["nested_offset"]).view(np.uint32) != np.float32(st.offset.item()).view(np.uint32):
        problems.append(f"offset {state['nested_offset']!r} vs bnb {st.offset.item()!r}")
    # absmax codes: equal, or bnb's CPU lookup table picked the other neighbour
    plain_absmax = F.quantize_4bit(x, blocksize=64, quant_type="nf4")[1].absmax.numpy()
    centred = (plain_absmax - np.float32(st.offset.item())).astype(np.float32)
    lut_codes = lut_rule_codes(centred, st.state2.absmax.numpy(), st.state2.code.numpy())
    mine, theirs = ours[f"{name}.absmax"].numpy(), st.absmax.numpy()
    if not np.array_equal(lut_codes, theirs):
        problems.append(f"bnb's absmax codes are not its lookup-table rule's ({int((lut_codes != theirs).sum())})")
    diff = np.nonzero(mine != theirs)[0]
    code, absmax2 = st.state2.code.numpy(), st.state2.absmax.numpy()
    for i in diff:  # ours must be a nearest code (CUDA's rule); bnb's is its table's (checked above)
        v = centred[i] * (np.float32(1.0) / absmax2[i // 256])
        if abs(float(v) - float(code[mine[i]])) > abs(float(v) - float(code[theirs[i]])):
            problems.append(f"absmax code {i}: ours {mine[i]} is farther from {v!r} than bnb's {theirs[i]}")
    old = np.float32(plain_absmax.astype(np.float64).mean()) != np.float32(st.offset.item())
    return problems, len(diff), bnb_parts, bool(old)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="write " + GOLDEN)
    ap.add_argument("--skip-4096", action="store_true", help="only the stories260K weights")
    args = ap.parse_args()
    print(f"bitsandbytes {bnb.__version__}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads)")
    bad, lut_total, old_total, codes_total = 0, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        sources = [MODEL]
        if not args.skip_4096:
            torch.manual_seed(4096)
            big = os.path.join(tmp, "gaussian4096.safetensors")
            save_file({"gaussian_4096x4096.weight": (torch.randn(4096, 4096) * 0.02).contiguous()}, big)
            sources.append(big)
        golden = {}
        for src in sources:
            ours = loralab_quantize(exe, src, tmp)
            names = [k[len("input."):] for k in ours if k.startswith("input.")]
            for name in names:
                x = ours["input." + name]
                problems, lut_diff, parts, old = compare(name, x, ours)
                bad += len(problems)
                lut_total += lut_diff
                old_total += old
                codes_total += parts[f"{name}.absmax"].numel()
                status = "identical" if not problems and not lut_diff else (
                    f"identical but {lut_diff} absmax code(s) where bnb's CPU lookup table picks a code that is not the nearest"
                    if not problems else "; ".join(problems))
                print(f"  {name} {tuple(x.shape)}: {status}{' (double mean: offset 1 ulp off)' if old else ''}")
                if name in GOLDEN_WEIGHTS:
                    golden["input." + name] = x.contiguous()
                    golden.update({k: v.contiguous() for k, v in parts.items()})
    print(f"{bad} problems; {lut_total} of {codes_total} absmax codes differ only by bnb's CPU lookup table; "
          f"a double-precision mean would have given another offset for {old_total} weights")
    if args.write:
        meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__,
                "what": "stories260K weights as loralab loads them (input.W) and bnb's CPU quantize_4bit(nf4, 64, "
                        "compress_statistics=True) serialization of them"}
        save_file(golden, GOLDEN, metadata=meta)
        print("wrote", GOLDEN, sorted(golden))
    print("OK" if bad == 0 else "FAILED")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks loralab's torch-order float32 sum/mean (include/quant/torch_reduce.hpp) against the installed torch,
bit for bit, and (with --write) writes tests/data/torch_mean_golden.safetensors for tests/quant/torch_mean_test.cpp.

bitsandbytes' double quantization takes `offset = absmax.mean()`, a float32 torch CPU reduction whose last bit
depends on torch's summation order (SumKernel.cpp cascade_sum, its vector width, and from 32768 elements on the
intra-op thread count). The script compiles tests/reference/torch_mean_cli.cpp (C++ compiler: $CXX or c++) and
compares torch.sum/torch.mean with it for
  - every length 1..512 and 1500 random lengths in 1..100000, four value distributions (absmax-like |N(0,1)|*s,
    U(0,1), signed N(0,1), and mixed magnitudes N(0,1)*2^k, k in -20..20);
  - the absmax lengths of stories260K's linears (32, 64, 172 blocks) and of a 4096x4096 weight (262144 blocks);
  - lengths around the parallel grain (32767, 32768, 32769, 65536, 65537, 98305, 262144, 1048579) with torch
    intra-op threads 1, 2, 3, 4, 8 and 16 (torch.set_num_threads);
  - two builds of the helper (-O0, and -O3 -march=native -ffp-contract=off like the project's Release build);
  - torch_cpu::default_threads() against torch.get_num_threads() under OMP_NUM_THREADS / MKL_NUM_THREADS /
    MKL_DYNAMIC settings.
With --all-capabilities it reruns itself under ATEN_CPU_CAPABILITY=avx2 and =default as well.
For information it also counts how often other orders (W = 16 lanes, a double-precision mean) would differ.

Run: /work/venv/bin/python tests/reference/check_torch_mean.py [--all-capabilities] [--write]
"""
import argparse, os, platform, subprocess, sys, tempfile
import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "data", "torch_mean_golden.safetensors")
THREADS = [1, 2, 3, 4, 8, 16]


def build(tmp):
    cxx = os.environ.get("CXX", "c++")
    src = os.path.join(ROOT, "tests", "reference", "torch_mean_cli.cpp")
    exes = {}
    for tag, flags in {"O0": ["-O0"], "O3-native": ["-O3", "-march=native", "-ffp-contract=off"]}.items():
        exe = os.path.join(tmp, "torch_mean_cli_" + tag)
        subprocess.run([cxx, "-std=c++20", *flags, "-I", os.path.join(ROOT, "include"), src, "-o", exe], check=True)
        exes[tag] = exe
    return exes


def run_cli(exe, xs, lanes, threads):
    blob = b"".join(np.uint64(len(x)).tobytes() + np.ascontiguousarray(x, np.float32).tobytes() for x in xs)
    out = subprocess.run([exe, str(lanes), str(threads)], input=blob, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32).reshape(-1, 2)


def torch_sum_mean(xs, threads):
    torch.set_num_threads(threads)
    r = np.empty((len(xs), 2), np.float32)
    for i, x in enumerate(xs):
        t = torch.from_numpy(x)
        r[i] = (t.sum().item(), t.mean().item())
    return r


def values(rng, n, kind):
    if kind == 0:
        return (np.abs(rng.standard_normal(n)) * rng.uniform(0.005, 2.0)).astype(np.float32)
    if kind == 1:
        return rng.random(n, dtype=np.float32)
    if kind == 2:
        return rng.standard_normal(n).astype(np.float32)
    return (rng.standard_normal(n) * np.exp2(rng.integers(-20, 21, n))).astype(np.float32)


def bits_equal(a, b):
    return np.asarray(a, np.float32).view(np.uint32) == np.asarray(b, np.float32).view(np.uint32)


def check(exes, rng):
    """Returns the number of mismatches (0 = every result bit-identical)."""
    cap = torch.backends.cpu.get_cpu_capability()
    lanes = 4 if platform.machine().lower() in ("aarch64", "arm64") else 8  # torch_cpu::default_lanes()
    small_lengths = list(range(1, 513)) + [int(n) for n in rng.integers(1, 100001, 1500)] + [32, 64, 172]
    small = [values(rng, n, i % 4) for i, n in enumerate(small_lengths)]
    big_lengths = [32767, 32768, 32769, 65536, 65537, 98305, 262144, 1048579, 262144, 262144]
    big = [values(rng, n, i % 4) for i, n in enumerate(big_lengths)]
    bad = 0
    default_threads = torch.get_num_threads()
    expect_small = torch_sum_mean(small, 1)
    for tag, exe in exes.items():
        got = run_cli(exe, small, lanes, 1)
        mism = int((~bits_equal(got, expect_small)).sum())
        bad += mism
        print(f"  [{cap}] {tag}: {len(small)} arrays of 1..100000 elements: {mism} sum/mean results differ")
    for threads in THREADS:
        expect = torch_sum_mean(big, threads)
        for tag, exe in exes.items():
            got = run_cli(exe, big, lanes, threads)
            mism = int((~bits_equal(got, expect)).sum())
            bad += mism
            print(f"  [{cap}] {tag}: {len(big)} arrays of 32767..1048579 elements, {threads} torch threads: "
                  f"{mism} results differ")
    torch.set_num_threads(default_threads)
    # For information: what other orders would give.
    exe = exes["O3-native"]
    w16 = run_cli(exe, small, 16, 1)
    dbl = np.array([np.float32(x.astype(np.float64).mean()) for x in small], np.float32)
    t_means = [torch_sum_mean(big, t)[:, 1] for t in THREADS]
    spread = sum(len({float(m[i]) for m in t_means}) > 1 for i in range(len(big)))
    print(f"  [{cap}] (info) W=16 order: {int((~bits_equal(w16[:, 1], expect_small[:, 1])).sum())} of "
          f"{len(small)} means differ; double-precision mean: "
          f"{int((~bits_equal(dbl, expect_small[:, 1])).sum())} differ; torch's own mean depends on its thread "
          f"count for {spread} of {len(big)} arrays of >= 32768 elements")
    return bad


def check_default_threads(exe):
    """torch_cpu::default_threads() against torch.get_num_threads() in fresh processes under thread variables."""
    bad = 0
    for env in ({}, {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "6"}, {"MKL_NUM_THREADS": "1"},
                {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}, {"OMP_NUM_THREADS": "6", "MKL_DYNAMIC": "FALSE"}):
        e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC")}
        e.update(env)
        t = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=e,
                           capture_output=True, text=True, check=True).stdout.split()[-1]
        ours = subprocess.run([exe, "--default-config"], env=e, capture_output=True, text=True,
                              check=True).stdout.split()[1]
        bad += t != ours
        print(f"  default threads with {env or 'no thread variables'}: torch {t}, loralab {ours}")
    return bad


def write_golden(exes, rng):
    """Small arrays (every length 1..64, 12 random 65..3000, chosen where a double-precision mean would be 1 ulp
    off) with torch's sum and mean, and one 33000-element array with torch's mean at 1..16 threads."""
    from safetensors.torch import save_file
    xs = [values(rng, n, n % 4) for n in range(1, 65)]
    picked = 0
    while picked < 12:
        n = int(rng.integers(65, 3001))
        x = values(rng, n, 0)  # absmax-like
        if np.float32(x.astype(np.float64).mean()) != torch.from_numpy(x).mean().item():
            xs.append(x)
            picked += 1
    torch.set_num_threads(1)
    r = torch_sum_mean(xs, 1)
    big = values(rng, 33000, 0)
    big_sums, big_means = [], []
    for t in THREADS:
        torch.set_num_threads(t)
        tb = torch.from_numpy(big)
        big_sums.append(tb.sum().item())
        big_means.append(tb.mean().item())
    assert len(set(big_means)) > 1, "pick another big array: its mean does not depend on the thread count"
    for t, (s, m) in enumerate(zip(big_sums, big_means)):
        got = run_cli(exes["O3-native"], [big], 8, THREADS[t])[0]
        assert bits_equal(got, [s, m]).all(), "loralab differs from torch on the golden's big array"
    out = {
        "x": torch.from_numpy(np.concatenate(xs)),
        "lengths": torch.tensor([len(x) for x in xs], dtype=torch.int64),
        "sum": torch.from_numpy(r[:, 0].copy()),
        "mean": torch.from_numpy(r[:, 1].copy()),
        "big.x": torch.from_numpy(big),
        "big.threads": torch.tensor(THREADS, dtype=torch.int64),
        "big.sum": torch.tensor(big_sums, dtype=torch.float32),
        "big.mean": torch.tensor(big_means, dtype=torch.float32),
    }
    meta = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "what": "torch.sum / torch.mean of 1-d contiguous float32 CPU tensors (x split by lengths); "
                    "big.*: one array reduced with torch.set_num_threads(big.threads[i])"}
    save_file(out, GOLDEN, metadata=meta)
    print("wrote", GOLDEN, meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all-capabilities", action="store_true", help="also run under ATEN_CPU_CAPABILITY=avx2, default")
    ap.add_argument("--write", action="store_true", help="write " + GOLDEN)
    ap.add_argument("--seed", type=int, default=20261201)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"default intra-op threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        exes = build(tmp)
        bad = check(exes, np.random.default_rng(args.seed))
        bad += check_default_threads(exes["O3-native"])
        if args.write:
            write_golden(exes, np.random.default_rng(args.seed + 1))
    if args.all_capabilities:
        for cap in ("avx2", "default"):
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
            rc = subprocess.run([sys.executable, os.path.abspath(__file__), "--seed", str(args.seed)], env=env).returncode
            bad += rc != 0
    print("OK: loralab's torch-order sum and mean equal torch's bit for bit" if bad == 0 else f"FAILED: {bad}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

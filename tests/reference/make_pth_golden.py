#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden files for include/io/torch_pth.hpp (PyTorch .pth checkpoints), checked by tests/io/test_torch_pth.cpp.

(a) Writes tests/data/torch_saved.pth with torch.save of a dict of F32, F16, BF16 (and other dtype) tensors, a
    0-d and a 1-d tensor, a transposed (non-contiguous) view, views with a storage offset, two tensors sharing a
    storage, an nn.Parameter, a nested dict and an int; and tests/data/torch_saved_values.safetensors with the
    expected contiguous values under the flattened names ("block.w" for {"block": {"w": ...}}).
(b) Loads tests/data/loralab_written.pth (written by loralab's pth_writer) with torch.load(weights_only=True),
    checks that its zip64 twin tests/data/loralab_written_zip64.pth loads the same, and writes
    tests/data/loralab_written_golden.safetensors: the tensors as torch sees them, with the key order, the torch
    version, and whether torch.save of the loaded dict reproduces loralab_written.pth byte for byte.

Run from the repository root, after the C++ tests have written the loralab files:
    cmake --build build --target test_pth
    LORALAB_UPDATE_GOLDEN=1 build/tests/io/test_pth --run_test=pth/writer_matches_committed_files
    python3 tests/reference/make_pth_golden.py
(needs torch and safetensors from PyPI; never used by the library or by the tests themselves).
"""
import json, os, tempfile
import torch
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")

# ---- (a) torch.save -> loralab reads --------------------------------------------------------------------------
torch.manual_seed(7)
base = torch.arange(20, dtype=torch.float32).reshape(4, 5) * 0.25  # one storage, three views of it
shared = torch.randn(10)                                            # one storage, two tensors
saved = {
    "tok_embeddings.weight": torch.randn(6, 4),
    "layers.0.attention.wq.weight": torch.randn(4, 4).to(torch.float16),
    "layers.0.feed_forward.w1.weight": torch.randn(3, 4).to(torch.bfloat16),
    "norm.weight": torch.nn.Parameter(torch.rand(4) + 0.5),
    "scalar": torch.tensor(3.25),
    "one": torch.tensor([-1.5], dtype=torch.float64),
    "transposed": base.t(),          # (5, 4), stride (1, 5)
    "rows": base[1:3],               # storage offset 5, contiguous
    "column": base[:, 2],            # storage offset 2, stride 5
    "shared_a": shared[:6].view(2, 3),
    "shared_b": shared[6:],          # storage offset 6 into the same storage
    "ids": torch.tensor([1, -2, 3_000_000_000], dtype=torch.int64),
    "mask": torch.tensor([True, False, True]),
    "u16": torch.tensor([1, 65535], dtype=torch.uint16),  # no storage class: _rebuild_tensor_v3
    "empty": torch.zeros(0, 3),
    "block": {"w": torch.randn(2, 2).to(torch.bfloat16), "step": 7},
    "epoch": 3,
}
torch.save(saved, os.path.join(data, "torch_saved.pth"))

flat = {}
def flatten(prefix, obj):
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            flatten(name, v)
        elif isinstance(v, torch.Tensor):
            flat[name] = v.detach().contiguous().clone()
flatten("", saved)
save_file(flat, os.path.join(data, "torch_saved_values.safetensors"),
          metadata={"torch": torch.__version__, "keys": json.dumps(list(flat))})

# ---- (b) loralab writes -> torch reads ------------------------------------------------------------------------
path = os.path.join(data, "loralab_written.pth")
loaded = torch.load(path, weights_only=True)
twin = torch.load(os.path.join(data, "loralab_written_zip64.pth"), weights_only=True)
assert list(twin) == list(loaded), "zip64 twin has other keys"
for k in loaded:
    assert twin[k].dtype == loaded[k].dtype and twin[k].shape == loaded[k].shape, k
    assert torch.equal(twin[k].reshape(-1).view(torch.uint8), loaded[k].reshape(-1).view(torch.uint8)), k
with tempfile.TemporaryDirectory() as tmp:
    again = os.path.join(tmp, "loralab_written.pth")  # same file name: same archive folder
    torch.save(loaded, again)
    identical = open(again, "rb").read() == open(path, "rb").read()
golden = {k: v.contiguous() for k, v in loaded.items()}
save_file(golden, os.path.join(data, "loralab_written_golden.safetensors"),
          metadata={"torch": torch.__version__, "keys": json.dumps(list(loaded)),
                    "torch_save_identical": "true" if identical else "false"})
for f in ("torch_saved_values.safetensors", "loralab_written_golden.safetensors"):
    os.chmod(os.path.join(data, f), 0o644)  # save_file creates them 0600
print("torch", torch.__version__, "| loralab_written.pth: keys", len(loaded),
      "| torch.save reproduces it byte for byte:", identical)

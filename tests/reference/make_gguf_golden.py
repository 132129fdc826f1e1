#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden files for include/io/gguf.hpp (llama.cpp's GGUF), checked by tests/io/test_gguf.cpp.

Writes with gguf-py (llama.cpp's own Python package):
  tests/data/gguf_golden.gguf  GGUF v3, alignment 64, one metadata key of every value type (every scalar type,
                               an empty string, a UTF-8 string, arrays of strings / ints / floats / bools / bytes,
                               a nested array of arrays), and tensors of F32, F16, BF16, Q8_0, Q4_0 and Q4_1 with
                               known contents (2-D tensors have ne[0] = the numpy row length).
  tests/data/gguf_golden.json  what the file holds: every key with its value type and value, every tensor with its
                               type, ne (innermost first), byte size, data offset, sha256 of its bytes and its
                               values (dequantized by gguf-py for the block-quantized types).

Run from the repository root (never needed by the library or the tests themselves):
    /work/venv/bin/python tests/reference/make_gguf_golden.py      # any python with `pip install gguf numpy`
"""
import hashlib, json, os
import numpy as np
import gguf
from gguf import GGUFValueType as V, GGMLQuantizationType as Q

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")
path = os.path.join(data, "gguf_golden.gguf")

w = gguf.GGUFWriter(path, arch="llama")  # adds general.architecture = "llama" first
w.add_custom_alignment(64)                # general.alignment (uint32)
scalars = [
    ("test.uint8", 200, V.UINT8), ("test.int8", -100, V.INT8),
    ("test.uint16", 60000, V.UINT16), ("test.int16", -30000, V.INT16),
    ("test.uint32", 4000000000, V.UINT32), ("test.int32", -2000000000, V.INT32),
    ("test.float32", 0.1, V.FLOAT32), ("test.bool_true", True, V.BOOL), ("test.bool_false", False, V.BOOL),
    ("test.string", "héllo ✓ GGUF", V.STRING), ("test.empty_string", "", V.STRING),
    ("test.uint64", 2**63 + 5, V.UINT64), ("test.int64", -(2**62) - 3, V.INT64),
    ("test.float64", 3.141592653589793, V.FLOAT64),
]
for key, value, vtype in scalars:
    w.add_key_value(key, value, vtype)
arrays = [
    ("test.array_string", ["a", "", "Ġthe", "<|im_start|>"], V.STRING),
    ("test.array_int32", [1, -2, 2147483647, -2147483648], V.INT32),
    ("test.array_uint8", [0, 1, 255], V.UINT8),
    ("test.array_int64", [-(2**63), 2**63 - 1], V.INT64),
    ("test.array_float32", [0.5, -1.25, 1e30], V.FLOAT32),
    ("test.array_float64", [0.1, -2.5], V.FLOAT64),
    ("test.array_bool", [True, False, True], V.BOOL),
]
for key, value, sub in arrays:
    w.add_key_value(key, value, V.ARRAY, sub_type=sub)
w.add_array("test.array_nested", [[1, 2, 3], [4], [5, 6]])  # an array of arrays of int32 (gguf-py's int type)
w.add_uint32("llama.block_count", 2)

rng = np.random.default_rng(11)
tensors = {
    "f32": (rng.standard_normal((3, 5)).astype(np.float32), None),
    "f16": (rng.standard_normal((2, 7)).astype(np.float16), None),
    "bf16": (rng.standard_normal((2, 4)).astype(np.float32), Q.BF16),
    "q8_0": (rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0),
    "q4_0": (rng.standard_normal((1, 32)).astype(np.float32), Q.Q4_0),
    "q4_1": (rng.standard_normal((3, 32)).astype(np.float32), Q.Q4_1),
    "vec": (np.arange(1, 4, dtype=np.float32), None),
}
expected_tensors = {}
for name, (x, qtype) in tensors.items():
    if qtype is None:
        w.add_tensor(name, x)
        raw, ggml_type, values = x, (Q.F32 if x.dtype == np.float32 else Q.F16), x.astype(np.float64)
    else:
        raw = gguf.quants.quantize(x, qtype)  # uint8 bytes, shape (rows, bytes per row)
        w.add_tensor(name, raw, raw_dtype=qtype)
        ggml_type, values = qtype, gguf.quants.dequantize(raw, qtype).astype(np.float64)
    expected_tensors[name] = {"type": ggml_type.name, "ne": list(reversed(x.shape)), "n_bytes": raw.nbytes,
                              "sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
                              "values": [float(v) for v in values.ravel()]}

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# Read it back with gguf-py's reader for the offsets and to prove it is what llama.cpp's tools read.
r = gguf.GGUFReader(path)
for t in r.tensors:
    expected_tensors[t.name]["offset"] = int(t.data_offset - r.data_offset)
expected = {"version": 3, "alignment": 64, "data_offset": int(r.data_offset), "file_size": os.path.getsize(path),
            "metadata": {}, "tensors": expected_tensors, "tensor_order": list(tensors)}
def plain(v):
    return [plain(x) for x in v] if isinstance(v, list) else v
expected["metadata"]["general.architecture"] = {"type": "STRING", "value": "llama"}
expected["metadata"]["general.alignment"] = {"type": "UINT32", "value": 64}
for key, value, vtype in scalars:
    expected["metadata"][key] = {"type": vtype.name, "value": value}
for key, value, sub in arrays:
    expected["metadata"][key] = {"type": "ARRAY", "element_type": sub.name, "value": value}
expected["metadata"]["test.array_nested"] = {"type": "ARRAY", "element_type": "ARRAY",
                                             "value": [[1, 2, 3], [4], [5, 6]]}
expected["metadata"]["llama.block_count"] = {"type": "UINT32", "value": 2}
expected["metadata_order"] = list(expected["metadata"])
assert [f.name for f in r.fields.values()][3:] == expected["metadata_order"], "key order"
with open(os.path.join(data, "gguf_golden.json"), "w") as f:
    json.dump(expected, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(path, os.path.getsize(path), "bytes")

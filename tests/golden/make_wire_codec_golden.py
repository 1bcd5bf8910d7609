"""Write the golden wire codec payloads of tests/golden/wire_codecs/ (docs/wire-format.md,
"Wire codec payloads"): what a collective puts on the wire for one segment, per builtin codec.

Like the frames beside them, goldens are never rewritten: running this writes only the missing
ones. For each: the input (``<name>.input``, raw little-endian elements), the payload
(``<name>.payload``) and the decoded output (``<name>.decoded``); manifest.json records the
parameters and sha256 of each file. tests/python/test_wire_codecs.py checks that today's encoder
writes the same payload bytes and today's decoder reads every payload back to the same output.

    .venv/bin/python tests/golden/make_wire_codec_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from ringpress import _core

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wire_codecs")


def gradient(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_t(3.0, n) * 1e-3).astype(np.float32)


# name -> (codec, dtype, op, count, params)
GOLDENS = {
    "lossless_f32_zstd": ("lossless", "float32", "sum", 3000, {"codec": "zstd", "level": 1}),
    "lossless_i64_lz4": ("lossless", "int64", "max", 777, {"codec": "lz4", "level": 1}),
    "bf16": ("bf16", "float32", "sum", 1001, {}),
    "fp16": ("fp16", "float32", "sum", 1001, {}),
    "int8_b64": ("int8", "float32", "sum", 1000, {"block": 64}),
    "int4_b32": ("int4", "float32", "sum", 999, {"block": 32}),
    "topk_exact_5pct": ("topk", "float32", "sum", 4000, {"ratio": 0.05, "sampled": False}),
    "topk_fp16_2pct": (
        "topk",
        "float32",
        "sum",
        5000,
        {"ratio": 0.02, "sampled": True, "tolerance": 0.1, "values": "fp16"},
    ),
    "int4_stoch_b64": ("int4", "float32", "sum", 1000, {"block": 64, "stochastic": True}),
    "int2_b16": ("int2", "float32", "sum", 1003, {"block": 16}),
    "sign_b32": ("sign", "float32", "sum", 1001, {"block": 32}),
    "ternary_b50": ("ternary", "float32", "sum", 997, {"block": 50}),
    "randomk_10pct": ("randomk", "float32", "sum", 2000, {"ratio": 0.1}),
    "threshold_2e-3": ("threshold", "float32", "sum", 3000, {"threshold": 2e-3}),
}


def make_input(name: str, dtype: str, count: int) -> np.ndarray:
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    if dtype == "int64":
        return (np.arange(count, dtype=np.int64) * 1_000_003 - 5_000) ^ (seed & 0xFFFF)
    return gradient(count, seed)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def main() -> None:
    os.makedirs(HERE, exist_ok=True)
    path = os.path.join(HERE, "manifest.json")
    manifest = json.load(open(path)) if os.path.exists(path) else {}
    for name, (codec, dtype, op, count, params) in GOLDENS.items():
        if name in manifest:
            continue
        x = make_input(name, dtype, count)
        payload = _core.wire_encode(codec, x, dtype, op, seed=0, **params)
        decoded = _core.wire_decode(codec, payload, count, dtype, op, **params)
        files = {"input": x.tobytes(), "payload": payload, "decoded": decoded}
        for kind, data in files.items():
            with open(os.path.join(HERE, f"{name}.{kind}"), "wb") as f:
                f.write(data)
        manifest[name] = {
            "codec": codec,
            "dtype": dtype,
            "op": op,
            "count": count,
            "params": params,
            **{f"{k}_sha256": sha(v) for k, v in files.items()},
        }
        print(f"wrote {name}: {len(payload)} payload bytes for {count} {dtype}")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

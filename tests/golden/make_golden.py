"""Write the golden frames of tests/golden/ (docs/wire-format.md, format version 1).

Goldens are the compatibility promise: every future decoder must read them, so existing frames
are never rewritten. Running this script writes only frames that are missing (a new golden added
to GOLDENS below) and keeps the manifest entries of the others; --force rewrites all of them,
which is only right before any release has shipped format version 1.

    .venv/bin/python tests/golden/make_golden.py [--force]

manifest.json records, per frame: file, codec/shuffle/level/block_size used, the decoded dtype,
shape and sha256 of the decoded bytes, and the sha256 of the frame file itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
import ringpress

HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT_VERSION = 1


def gradient_f32(n: int, seed: int) -> np.ndarray:
    """Heavy-tailed, gradient-like float32 values."""
    return (np.random.default_rng(seed).standard_t(3.0, n) * 1e-3).astype(np.float32)


def bf16(n: int, seed: int) -> np.ndarray:
    """bfloat16 bit patterns (as uint16) of gradient-like values."""
    return (gradient_f32(n, seed).view(np.uint32) >> 16).astype(np.uint16)


def sparse_f32(n: int, seed: int) -> np.ndarray:
    """99% zeros (top-k output)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n, np.float32)
    idx = rng.choice(n, size=n // 100, replace=False)
    x[idx] = rng.standard_normal(idx.size).astype(np.float32)
    return x


def small_int8(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(0, 8, n)), -128, 127).astype(np.int8)


def text_bytes(n: int) -> bytes:
    line = b"ringpress golden frame %05d: the quick brown fox jumps over the lazy dog\n"
    out = b"".join(line % i for i in range(n // len(line) + 1))
    return out[:n]


# name -> (input, compress() keyword arguments)
GOLDENS = {
    "f32_grad_zstd_auto": lambda: (
        gradient_f32(8192, 1).reshape(64, 128),
        dict(codec="zstd", shuffle="auto", block_size=8192),
    ),
    "f32_grad_lz4_bit": lambda: (
        gradient_f32(3001, 2),
        dict(codec="lz4", shuffle="bit", block_size=4096),
    ),
    "f32_grad_zstd_byte_l3": lambda: (
        gradient_f32(2500, 3),
        dict(codec="zstd", level=3, shuffle="byte", block_size=4000),
    ),
    "bf16_zstd_auto": lambda: (
        (bf16(6000, 4), "bfloat16"),
        dict(codec="zstd", shuffle="auto", block_size=4096),
    ),
    "bf16_lz4_byte": lambda: (
        (bf16(3000, 5).reshape(3, 1000), "bfloat16"),
        dict(codec="lz4", shuffle="byte", block_size=2048),
    ),
    "int8_lz4_auto": lambda: (
        small_int8(10000, 6),
        dict(codec="lz4", shuffle="auto", block_size=4096),
    ),
    "f32_sparse_zstd_auto": lambda: (
        sparse_f32(20000, 7),
        dict(codec="zstd", shuffle="auto", block_size=16384),
    ),
    "f32_sparse_lz4_auto": lambda: (
        sparse_f32(5000, 8),
        dict(codec="lz4", shuffle="auto", block_size=4096),
    ),
    "f16_none_byte": lambda: (
        np.random.default_rng(9).standard_normal(1500).astype(np.float16),
        dict(codec="none", shuffle="byte", block_size=1024),
    ),
    "int64_none": lambda: (
        np.arange(-60, 60, dtype=np.int64).reshape(2, 3, 4, 5),
        dict(codec="none", shuffle="none", block_size=256),
    ),
    "f32_empty_zstd": lambda: (np.zeros((0,), np.float32), dict(codec="zstd")),
    "f32_empty_2d_lz4": lambda: (np.zeros((3, 0), np.float32), dict(codec="lz4")),
    "f64_one_none": lambda: (np.array([-1.0 / 3.0]), dict(codec="none")),
    "f64_scalar_zstd": lambda: (np.array(2.718281828459045), dict(codec="zstd")),
    "bool_zstd_bit": lambda: (
        np.arange(5000).reshape(50, 100) % 7 == 0,
        dict(codec="zstd", shuffle="bit", block_size=1000),
    ),
    "bytes_zstd_auto": lambda: (text_bytes(12000), dict(codec="zstd", block_size=4096)),
    "bytes_lz4_none": lambda: (
        text_bytes(3000),
        dict(codec="lz4", shuffle="none", block_size=1024),
    ),
}


def describe(frame: bytes, kwargs: dict) -> dict:
    info = ringpress.frame_info(frame)
    out = ringpress.decompress(frame)
    return {
        "codec": info["codec"],
        "shuffle": kwargs.get("shuffle", "auto"),
        "level": info["level"],
        "block_size": info["block_size"],
        "nblocks": info["nblocks"],
        "dtype": info["dtype"],
        "shape": list(info["shape"]),
        "sha256": hashlib.sha256(out.tobytes()).hexdigest(),
        "frame_sha256": hashlib.sha256(frame).hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rewrite existing goldens too")
    ap.add_argument("--dir", default=HERE)
    args = ap.parse_args()
    path = os.path.join(args.dir, "manifest.json")
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)["frames"]
    frames = {}
    for name, make in GOLDENS.items():
        file = os.path.join(args.dir, name + ".rpz")
        if os.path.exists(file) and name in old and not args.force:
            frames[name] = old[name]
            continue
        x, kwargs = make()
        dtype = None
        if isinstance(x, tuple):
            x, dtype = x
        frame = bytes(ringpress.compress(x, dtype=dtype, **kwargs))
        if isinstance(x, bytes):
            assert bytes(ringpress.decompress(frame)) == x
        else:
            assert ringpress.decompress(frame).tobytes() == x.tobytes()
        with open(file, "wb") as f:
            f.write(frame)
        frames[name] = {"file": name + ".rpz", **describe(frame, kwargs)}
        print(f"wrote {name}.rpz ({len(frame)} bytes)")
    with open(path, "w") as f:
        json.dump(
            {
                "format_version": FORMAT_VERSION,
                "ringpress_version": ringpress.__version__,
                "frames": frames,
            },
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")


if __name__ == "__main__":
    main()

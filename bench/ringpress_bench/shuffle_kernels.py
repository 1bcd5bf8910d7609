"""``ringpress kernels`` (= ``ringpress bench kernels``): the shuffle kernels of the lossless stage
at every SIMD level this machine supports, side by side with numpy doing the same transpose, on a
float32 buffer; GB/s are medians of repeats. It calls the per-level kernels of ``ringpress._core``
directly (``byte_shuffle``, ``byte_unshuffle``, ``bit_shuffle``, ``simd_levels_supported``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ringpress
from ringpress import _core

from .runner import ArgParser


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (page faults, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    ap = ArgParser(prog=prog, description="Shuffle kernel speed per SIMD level, against numpy.")
    ap.add_argument("--size-mib", type=int, default=64, help="buffer size (default 64 MiB)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats, median reported")
    args = ap.parse_args(argv)
    if args.size_mib < 1 or args.repeats < 1:
        ap.error("--size-mib and --repeats must be positive")
    return args


def main(argv: list[str] | None = None, prog: str = "ringpress kernels") -> int:
    args = parse_args(argv, prog)
    info = ringpress.build_info()
    print(
        f"ringpress {info['version']}  simd={info['simd']}  cuda={'built' if info['cuda'] else 'no'}"
        f"  lz4 {info['lz4']}  zstd {info['zstd']}"
    )
    n = args.size_mib * (1 << 20) // 4
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    src = x.view(np.uint8)
    dst = np.empty_like(src)
    nbytes = src.nbytes

    t_np = _median_seconds(lambda: np.ascontiguousarray(src.reshape(n, 4).T), args.repeats)
    t_cp = _median_seconds(lambda: np.copyto(dst, src), args.repeats)
    print(
        f"\nbyte/bit shuffle of {args.size_mib} MiB float32, median of {args.repeats}"
        f" (memcpy {nbytes / t_cp / 1e9:.1f} GB/s, numpy transpose {nbytes / t_np / 1e9:.2f} GB/s)"
    )
    print(
        f"{'kernel':<10}{'shuffle GB/s':>14}{'unshuffle GB/s':>16}{'bitshuffle GB/s':>17}{'vs numpy':>10}"
    )
    for level in _core.simd_levels_supported():
        ts = _median_seconds(lambda lv=level: _core.byte_shuffle(src, dst, 4, lv), args.repeats)
        tu = _median_seconds(lambda lv=level: _core.byte_unshuffle(src, dst, 4, lv), args.repeats)
        tb = _median_seconds(lambda lv=level: _core.bit_shuffle(src, dst, 4, lv), args.repeats)
        print(
            f"{level:<10}{nbytes / ts / 1e9:>14.2f}{nbytes / tu / 1e9:>16.2f}{nbytes / tb / 1e9:>17.2f}"
            f"{t_np / ts:>9.1f}x"
        )
    return 0

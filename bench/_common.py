"""Helpers shared by the benchmarks (``bench.codecs``, ``bench.compressors``).

Timing (:func:`time_calls`: one ``time.perf_counter`` sample per call, garbage collection off),
the memcpy reference, speed formatting, machine description for the JSON records, and the glibc
heap tuning (:func:`warm_heap`) that keeps fresh-buffer APIs from paying page faults per call;
size lists and byte / time formatting for the size sweeps (``bench.allreduce``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
M_MMAP_MAX = -4
LOSSLESS_MODULES = ("blosc2", "zstandard", "lz4")  # bench.codecs' peer libraries


def nbytes(buf: Any) -> int:
    """Size in bytes of any buffer-protocol object (bytes, memoryview, ndarray)."""
    return memoryview(buf).nbytes


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    """``repeats`` wall-clock samples (seconds) of ``fn()``, garbage collection off."""
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = fn()
            samples.append(time.perf_counter() - t0)
            del res
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def memcpy_reference(x: np.ndarray, repeats: int) -> dict[str, Any]:
    """memcpy (``np.copyto``) throughput on ``x``: samples, median and GB/s."""
    dst = np.empty_like(x)
    np.copyto(dst, x)
    samples = time_calls(lambda: np.copyto(dst, x), repeats)
    med = statistics.median(samples)
    return {"samples_s": samples, "median_s": med, "GBps": x.nbytes / med / 1e9}


def fmt_speed(v: float) -> str:
    return f"{v:9.0f}" if v >= 100 else f"{v:9.1f}"


def machine_info(modules: tuple[str, ...] = LOSSLESS_MODULES) -> dict[str, Any]:
    """Platform, CPU, Python / numpy, versions of ``modules``, ringpress version + build info."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in modules:
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    if "blosc2" in modules:
        try:
            import blosc2

            info["c_blosc2"] = blosc2.blosclib_version
        except (ImportError, AttributeError):
            pass
    try:
        import ringpress

        info["ringpress"] = getattr(ringpress, "__version__", None)
        if hasattr(ringpress, "build_info"):
            info["ringpress_build_info"] = ringpress.build_info()
    except ImportError:
        info["ringpress"] = None
    return info


@contextlib.contextmanager
def warm_heap(enabled: bool) -> Iterator[bool]:
    """Keep large freed blocks in the glibc heap while benchmarking (Linux only).

    APIs without an ``out=`` (blosc2 compress2, zstandard, lz4.block) return a fresh buffer per
    call. Buffers this large are normally mmap'ed and unmapped each time, so every call would
    also pay for faulting in fresh zeroed pages (it halves lz4 decompression speed at 64 MiB);
    with mmap disabled and trimming deferred the memory is reused warm, and timings measure the
    codecs. Defaults are restored afterwards. Yields whether the tuning is active.
    """
    libc = None
    if enabled and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
            if not ok:
                libc = None
        except (OSError, AttributeError):
            libc = None
    try:
        yield libc is not None
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_MAX, 65536)
            libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
            libc.malloc_trim(0)


QUICK_SIZE_MIB = 4.0
QUICK_REPEATS = 3


def add_run_args(ap: argparse.ArgumentParser, default_json: Path, size_help: str) -> None:
    """The options every benchmark shares: sizes, repeats, output files, heap tuning, --quick."""
    ap.add_argument(
        "--size-mib",
        type=float,
        default=None,
        help=f"{size_help}; default 64, {QUICK_SIZE_MIB:g} with --quick",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per measurement (median reported); default 7, "
        f"{QUICK_REPEATS} with --quick",
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"JSON record path (default {default_json}, *_quick.json with --quick)",
    )
    ap.add_argument("--png", type=Path, default=None, help="plot path (default next to --json)")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument(
        "--no-heap-tuning",
        action="store_true",
        help="leave glibc malloc alone (fresh-buffer APIs then pay page faults per call)",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (for tests)")


def finish_run_args(
    ap: argparse.ArgumentParser, args: argparse.Namespace, default_json: Path
) -> argparse.Namespace:
    """Fill the --quick dependent defaults and reject non-positive sizes."""
    if args.size_mib is None:
        args.size_mib = QUICK_SIZE_MIB if args.quick else 64.0
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else 7
    if args.json is None:
        quick = default_json.with_name(default_json.stem + "_quick.json")
        args.json = quick if args.quick else default_json
    if args.png is None:
        args.png = args.json.with_suffix(".png")
    if args.repeats < 1 or args.size_mib <= 0 or getattr(args, "threads", 1) < 1:
        ap.error("--repeats, --threads and --size-mib must be positive")
    return args


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``"4K"``, ``"4KiB"``, ``"1.5M"``, ``"256MiB"``, ``"4096"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if m is None:
        raise ValueError(f"bad size {text!r}: use e.g. 4096, 4K, 64KiB, 1M, 256MiB")
    value = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if value <= 0 or value != int(value):
        raise ValueError(f"bad size {text!r}: must be a positive whole number of bytes")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """Comma-separated sizes; ``A..B`` is a geometric range (x4 steps, ``A..B*2`` for x2)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ".." in part:
            lo_s, hi_s = part.split("..", 1)
            factor = 4
            if "*" in hi_s:
                hi_s, f_s = hi_s.split("*", 1)
                factor = int(f_s)
            lo, hi = parse_size(lo_s), parse_size(hi_s)
            if factor < 2 or lo > hi:
                raise ValueError(f"bad size range {part!r}")
            v = lo
            while v <= hi:
                out.append(v)
                v *= factor
        else:
            out.append(parse_size(part))
    if not out:
        raise ValueError("no sizes given")
    return out


def fmt_bytes(n: float) -> str:
    """Binary-unit size: 4096 -> '4 KiB', 1.5 MiB -> '1.5 MiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.4g} {unit}"
    return f"{n:.0f} B"


def fmt_time(s: float) -> str:
    """Seconds as a 9-character string in µs / ms / s."""
    if s < 1e-3:
        return f"{s * 1e6:6.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:6.2f} ms"
    return f"{s:6.3f} s "

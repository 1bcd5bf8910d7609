"""Helpers shared by the benchmarks, below everything else in ``ringpress_bench`` (stdlib + numpy).

Timing (:func:`time_calls`: one ``time.perf_counter`` sample per call, garbage collection off),
the memcpy reference, speed formatting, machine description and library versions for the JSON
records, and the glibc heap tuning (:func:`warm_heap`) that keeps fresh-buffer APIs from paying
page faults per call; size lists and byte / time formatting for the size sweeps; where results
and caches go (:func:`results_dir`, :func:`cache_dir`); the rank-0 progress bar
(:class:`Progress`); plots that are skipped with a message when matplotlib is missing. The command
line, starting ranks and exit codes are the runner's (``runner``).

Nothing here imports an optional peer (torch, mpi4py, blosc2, matplotlib) at module level.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
M_MMAP_MAX = -4
LOSSLESS_MODULES = ("blosc2", "zstandard", "lz4")  # the codecs benchmark's peer libraries


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


# --------------------------------------------------------------------------- where files go


def repo_root() -> Path | None:
    """The ringpress source checkout this is run from (the working directory or a parent of it),
    or None when run elsewhere (an installed package used from any directory)."""
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / "bench" / "pyproject.toml").is_file() and (d / "python" / "ringpress").is_dir():
            return d
    return None


def results_dir() -> Path:
    """Default folder for JSON records and plots: ``bench/results/`` in a checkout, else
    ``./ringpress-results/`` (``RINGPRESS_BENCH_RESULTS`` overrides both)."""
    env = os.environ.get("RINGPRESS_BENCH_RESULTS")
    if env:
        return Path(env)
    root = repo_root()
    return root / "bench" / "results" if root else Path("ringpress-results")


def cache_dir() -> Path:
    """Where the generated gradients are cached: ``bench/.cache/`` in a checkout, else
    ``$XDG_CACHE_HOME/ringpress`` or ``~/.cache/ringpress`` (``RINGPRESS_CACHE_DIR`` overrides)."""
    env = os.environ.get("RINGPRESS_CACHE_DIR")
    if env:
        return Path(env)
    root = repo_root()
    if root:
        return root / "bench" / ".cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ringpress"


VERSIONED = ("ringpress", "torch", "mpi4py", "blosc2", "zstandard", "lz4", "matplotlib")


def versions(
    extra: dict[str, Any] | None = None, modules: tuple[str, ...] = VERSIONED
) -> dict[str, Any]:
    """Python, numpy and ``modules`` versions (None: not installed), plus ``extra``."""
    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in modules:
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # ImportError, or a broken install of an optional peer
                m = None
        out[mod] = getattr(m, "__version__", None) if m is not None else None
    out.update(extra or {})
    return out


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr: ``[#####.....] 12/21  16 MiB gloo  0:07 left``.

    Off unless ``enabled`` (callers pass: rank 0, stderr is a terminal or ``--progress``, and not
    ``--no-progress``). :meth:`write` prints a line on stdout without tearing the bar.
    """

    WIDTH = 24

    def __init__(self, total: int, enabled: bool, label: str = "") -> None:
        self.total = max(1, total)
        self.enabled = enabled
        self.label = label
        self.done = 0
        self.what = ""
        self.t0 = time.monotonic()
        self._shown = 0

    @staticmethod
    def wanted(flag: bool | None, rank0: bool = True) -> bool:
        """``flag``: True (--progress), False (--no-progress) or None (only on a terminal)."""
        if not rank0 or flag is False:
            return False
        return bool(flag) or sys.stderr.isatty()

    def _line(self) -> str:
        frac = min(1.0, self.done / self.total)
        fill = round(frac * self.WIDTH)
        line = f"{self.label}[{'#' * fill}{'.' * (self.WIDTH - fill)}] {self.done}/{self.total}"
        if self.what:
            line += f"  {self.what}"
        elapsed = time.monotonic() - self.t0
        if 0 < self.done < self.total:
            left = elapsed / self.done * (self.total - self.done)
            line += f"  {int(left) // 60}:{int(left) % 60:02d} left"
        cols = shutil.get_terminal_size((100, 20)).columns
        return line[: max(20, cols - 1)]

    def _draw(self) -> None:
        if not self.enabled:
            return
        line = self._line()
        pad = " " * max(0, self._shown - len(line))
        sys.stderr.write("\r" + line + pad)
        sys.stderr.flush()
        self._shown = len(line)

    def clear(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\r" + " " * self._shown + "\r")
            sys.stderr.flush()
            self._shown = 0

    def start(self, what: str) -> None:
        """Say what runs now (the bar does not move)."""
        self.what = what
        self._draw()

    def step(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def write(self, line: str) -> None:
        """Print ``line`` on stdout with the bar cleared first and redrawn after."""
        self.clear()
        print(line, flush=True)
        if self.done < self.total and self.what:
            self._draw()

    def close(self) -> None:
        self.clear()


def save_plot(plot: Callable[[dict[str, Any], Path], None], results: dict, path: Path) -> bool:
    """Draw ``plot(results, path)``; without matplotlib say so instead. True if written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", flush=True)
        return False
    plot(results, path)
    print(f"wrote {path}", flush=True)
    return True


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, path)
    print(f"wrote {path}", flush=True)


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

"""Lossless codec benchmark: ringpress vs blosc2 vs plain zstandard / lz4 on real gradients.

What is measured
    For each dataset and each codec configuration: the compression ratio (uncompressed bytes /
    compressed bytes) and the compress and decompress throughput in MB/s, where MB = 1e6 bytes
    of *uncompressed* input for both directions. Each throughput is the median of ``--repeats``
    timed calls (``time.perf_counter`` around one library call on the whole buffer, garbage
    collection off); every sample is kept in the JSON record. memcpy (``np.copyto``) throughput
    on the same buffer is printed as a reference.

Datasets (see ``ringpress_bench/gradients.py``)
    fp32: the flattened fp32 gradients of a char-level LSTM trained on the stdlib sources,
    truncated to ``--size-mib`` MiB. bf16: the same elements rounded to bfloat16 (raw uint16,
    half the bytes). topk: the fp32 dataset with all but the 1% largest-magnitude entries zeroed.

Configurations
    ringpress (``ringpress.compress`` / ``ringpress.decompress``, output buffers pre-allocated
    where the API takes ``out=``): zstd level 1 with shuffle auto / byte, lz4 (acceleration 1)
    with shuffle auto / bit. blosc2 (``compress2`` / ``decompress2`` into a pre-allocated
    ``dst``) with the same settings: ZSTD clevel 1 (blosc2 maps clevel 1 to zstd level 1) + byte
    shuffle, its best-ratio setting; LZ4 clevel 9 (blosc2 maps clevel c to LZ4 acceleration
    10 - c, so 9 is the acceleration 1 ringpress uses) + bitshuffle, its fast setting; typesize
    = element size and block size = ringpress's default block size (both overridable). The
    "vs blosc2" columns divide ringpress speeds by those of the blosc2 row with the same codec;
    ringpress "auto" is compared with blosc2's recommended shuffle for that codec (zstd: byte,
    lz4: bit). Plain zstandard level 1 and lz4.block (acceleration 1) without shuffle are the
    no-shuffle baselines. ``--threads`` sets ringpress ``threads`` and blosc2 ``nthreads``
    (plain zstandard / lz4 stay single-threaded).

Every configuration's round trip is checked bit-exact (raw bytes, plus dtype and shape for
ringpress) before its timings count; a mismatch raises. A peer library that is not installed
(blosc2, zstandard, lz4) is skipped with a one-line note. Results go to ``--json`` (default
``codecs.json`` under ``bench/results/`` in a checkout, ``./ringpress-results/`` elsewhere) and a
scatter plot (compress / decompress MB/s against ratio) next to it.

Usage: ``ringpress bench codecs [--quick] [--datasets fp32,bf16,topk] [--size-mib 64 | --sizes
64M] [--repeats 7] [--threads 1] [--json PATH] [--plot PATH] [--no-progress]`` (or ``python -m
ringpress_bench codecs``); ``run(argv) -> dict`` is the importable entry point.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import gradients
from ._common import Progress, save_plot, versions
from ._common import fmt_speed as _fmt_speed
from ._common import machine_info as _machine_info
from ._common import memcpy_reference as _memcpy
from ._common import nbytes as _nbytes
from ._common import time_calls as _time_calls
from ._common import warm_heap as _warm_heap
from ._common import write_json as _write_json
from .runner import ArgParser, add_run_args, finish_run_args

DATASETS = ("fp32", "bf16", "topk")
DEFAULT_BLOCK = 256 << 10  # ringpress default block size (256 KiB, rounded to the element size)

CompressFn = Callable[[np.ndarray], Any]
DecompressFn = Callable[[Any, np.ndarray], Any]


@dataclass
class Config:
    """One codec configuration: how to compress / decompress, and what it is compared with."""

    name: str
    lib: str
    codec: str
    shuffle: str
    params: dict[str, Any]
    make: Callable[[np.ndarray, int], tuple[CompressFn, DecompressFn]]
    compare_to: str | None = None  # name of the blosc2 config used for the "vs blosc2" columns
    notes: list[str] = field(default_factory=list)


def _as_bytes(obj: Any) -> np.ndarray:
    """Raw uint8 view of a decompression result (ndarray, bytes, bytearray, memoryview)."""
    if isinstance(obj, np.ndarray):
        return np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
    return np.frombuffer(obj, dtype=np.uint8)


# --------------------------------------------------------------------------- ringpress


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _ringpress_module() -> Any | None:
    try:
        import ringpress
    except ImportError:
        return None
    if not (hasattr(ringpress, "compress") and hasattr(ringpress, "decompress")):
        return None
    return ringpress


def _ringpress_config(
    rp: Any, codec: str, shuffle: str, level: int, threads: int, compare_to: str
) -> Config:
    params = {"codec": codec, "level": level, "shuffle": shuffle, "threads": threads}
    notes: list[str] = []

    def make(x: np.ndarray, _threads: int) -> tuple[CompressFn, DecompressFn]:
        kw = dict(params)
        if x.dtype == np.uint16 and _accepts(rp.compress, "dtype"):
            kw["dtype"] = "bfloat16"  # the bf16 dataset: uint16 bit patterns of bfloat16
            if "uint16 input passed with dtype='bfloat16'" not in notes:
                notes.append("uint16 input passed with dtype='bfloat16'")
        # compress(out=buf) writes the frame into a buffer of compress_bound(x) bytes and
        # returns its size; older API variants return the frame itself, or lack out=.
        first = rp.compress(x, **kw)
        cap = _nbytes(first) + (1 << 20)
        if hasattr(rp, "compress_bound"):
            cap = int(rp.compress_bound(x))
        cbuf = np.empty(cap, dtype=np.uint8)
        try:
            probe = rp.compress(x, out=cbuf, **kw)
            psize = probe if isinstance(probe, int) else _nbytes(probe)
            use_out = psize == _nbytes(first)
        except Exception:  # API variant without out= for compress
            use_out = False
        # decompress(buf) without out= must restore dtype and shape.
        res = rp.decompress(first, max_bytes=x.nbytes)
        if res.dtype != x.dtype or res.shape != x.shape:
            raise AssertionError(
                f"ringpress.decompress returned {res.dtype}{res.shape}, expected {x.dtype}{x.shape}"
            )
        del first, res
        msg = "compress(out=) into a pre-allocated buffer" if use_out else "compress allocates"
        if msg not in notes:
            notes.append(msg)
        dkw = {"threads": threads} if _accepts(rp.decompress, "threads") else {}

        def comp(a: np.ndarray) -> Any:
            if not use_out:
                return rp.compress(a, **kw)
            n = rp.compress(a, out=cbuf, **kw)
            return memoryview(cbuf)[:n] if isinstance(n, int) else n

        def decomp(c: Any, out: np.ndarray) -> Any:
            return rp.decompress(c, out=out, **dkw)

        return comp, decomp

    shuffle_label = shuffle
    return Config(
        name=f"ringpress {codec}-{level} {shuffle_label}",
        lib="ringpress",
        codec=codec,
        shuffle=shuffle,
        params=params,
        make=make,
        compare_to=compare_to,
        notes=notes,
    )


# --------------------------------------------------------------------------- blosc2


def _blosc2_config(codec: str, shuffle: str, clevel: int, threads: int, blocksize: int) -> Config:
    import blosc2

    b_codec = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4}[codec]
    b_filter = {"byte": blosc2.Filter.SHUFFLE, "bit": blosc2.Filter.BITSHUFFLE}[shuffle]
    params = {
        "codec": b_codec.name,
        "clevel": clevel,
        "filters": [b_filter.name],
        "nthreads": threads,
        "blocksize": blocksize,
        "splitmode": blosc2.CParams().splitmode.name,
    }

    def make(x: np.ndarray, nthreads: int) -> tuple[CompressFn, DecompressFn]:
        bs = blocksize
        if bs > 0:
            bs -= bs % x.itemsize
        cparams = blosc2.CParams(
            codec=b_codec,
            clevel=clevel,
            typesize=x.itemsize,
            nthreads=nthreads,
            blocksize=bs,
            filters=[b_filter],
            filters_meta=[0],
        )
        dparams = blosc2.DParams(nthreads=nthreads)

        def comp(a: np.ndarray) -> Any:
            return blosc2.compress2(a, cparams=cparams)

        def decomp(c: Any, out: np.ndarray) -> Any:
            blosc2.decompress2(c, dst=out, dparams=dparams)
            return out

        return comp, decomp

    return Config(
        name=f"blosc2 {codec}-{clevel} {shuffle}",
        lib="blosc2",
        codec=codec,
        shuffle=shuffle,
        params=params,
        make=make,
    )


# --------------------------------------------------------------------------- plain codecs


def _zstandard_config(level: int) -> Config:
    import zstandard

    def make(x: np.ndarray, _threads: int) -> tuple[CompressFn, DecompressFn]:
        cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
        dctx = zstandard.ZstdDecompressor()
        return cctx.compress, lambda c, _out: dctx.decompress(c)

    return Config(
        name=f"zstandard-{level}",
        lib="zstandard",
        codec="zstd",
        shuffle="none",
        params={"level": level, "threads": 1, "version": zstandard.__version__},
        make=make,
    )


def _lz4_config() -> Config:
    import lz4
    import lz4.block

    def make(x: np.ndarray, _threads: int) -> tuple[CompressFn, DecompressFn]:
        n = x.nbytes

        def comp(a: np.ndarray) -> Any:
            return lz4.block.compress(a, mode="default", store_size=False)

        def decomp(c: Any, _out: np.ndarray) -> Any:
            return lz4.block.decompress(c, uncompressed_size=n)

        return comp, decomp

    return Config(
        name="lz4.block",
        lib="lz4",
        codec="lz4",
        shuffle="none",
        params={"mode": "default", "acceleration": 1, "version": lz4.__version__},
        make=make,
    )


def build_configs(
    threads: int, lz4_clevel: int, blosc2_blocksize: int
) -> tuple[list[Config], list[str]]:
    """The benchmark's configurations, and notes on anything left out."""
    notes: list[str] = []
    b_zstd_name, b_lz4_name = "blosc2 zstd-1 byte", f"blosc2 lz4-{lz4_clevel} bit"
    configs: list[Config] = []
    rp = _ringpress_module()
    if rp is None:
        notes.append("ringpress.compress/decompress not available: ringpress rows skipped")
    else:
        configs += [
            _ringpress_config(rp, "zstd", "auto", 1, threads, b_zstd_name),
            _ringpress_config(rp, "zstd", "byte", 1, threads, b_zstd_name),
            _ringpress_config(rp, "lz4", "auto", 1, threads, b_lz4_name),
            _ringpress_config(rp, "lz4", "bit", 1, threads, b_lz4_name),
        ]
    peers: list[tuple[str, Callable[[], Config]]] = [
        ("blosc2", lambda: _blosc2_config("zstd", "byte", 1, threads, blosc2_blocksize)),
        ("blosc2", lambda: _blosc2_config("lz4", "bit", lz4_clevel, threads, blosc2_blocksize)),
        ("zstandard", lambda: _zstandard_config(1)),
        ("lz4", _lz4_config),
    ]
    missing: set[str] = set()
    for lib, make in peers:
        if lib in missing:
            continue
        try:
            configs.append(make())
        except ImportError as e:
            missing.add(lib)
            notes.append(f"{lib}: skipped, not installed ({e}); pip install {lib} adds it")
    return configs, notes


# --------------------------------------------------------------------------- measurement


def _same_bytes(res: Any, x: np.ndarray) -> bool:
    return np.array_equal(_as_bytes(res), x.reshape(-1).view(np.uint8))


@dataclass
class _Prepared:
    cfg: Config
    comp: CompressFn
    decomp: DecompressFn
    csize: int
    c: Any = None


def measure(
    configs: list[Config],
    x: np.ndarray,
    repeats: int,
    threads: int,
    tick: Callable[[], None] | None = None,
) -> list[dict]:
    """Verify every config's round trip on ``x`` bit-exactly, then time them interleaved.

    Each timing round calls every configuration once (starting at a rotating position), so a
    burst of load on a shared machine hits all configurations alike rather than one of them.
    ``tick`` is called after every round (2 x ``repeats`` times: compress, then decompress).
    """
    out = np.empty_like(x)
    prepared: list[_Prepared] = []
    for cfg in configs:
        comp, decomp = cfg.make(x, threads)
        c = comp(x)
        out.fill(0)
        if not _same_bytes(decomp(c, out), x):
            raise AssertionError(f"{cfg.name}: round trip is not bit-exact")
        prepared.append(_Prepared(cfg, comp, decomp, _nbytes(c)))
        del c
    n = len(prepared)
    ctimes: list[list[float]] = [[] for _ in prepared]
    dtimes: list[list[float]] = [[] for _ in prepared]
    for r in range(repeats):
        for i in [(r + k) % n for k in range(n)]:
            p = prepared[i]
            ctimes[i] += _time_calls(lambda p=p: p.comp(x), 1)
        if tick:
            tick()
    for p in prepared:  # compress into a pre-allocated buffer reuses it: recompress once
        p.c = p.comp(x)
        if _nbytes(p.c) != p.csize:
            raise AssertionError(f"{p.cfg.name}: compressed size changed between calls")
    for r in range(repeats):
        for i in [(r + k) % n for k in range(n)]:
            p = prepared[i]
            dtimes[i] += _time_calls(lambda p=p: p.decomp(p.c, out), 1)
        if tick:
            tick()
    rows = []
    for p, ct, dt in zip(prepared, ctimes, dtimes, strict=False):
        out.fill(0)
        if not _same_bytes(p.decomp(p.c, out), x):
            raise AssertionError(f"{p.cfg.name}: round trip is not bit-exact after timing")
        p.c = None
        cfg = p.cfg
        rows.append(
            {
                "config": cfg.name,
                "lib": cfg.lib,
                "codec": cfg.codec,
                "shuffle": cfg.shuffle,
                "params": cfg.params,
                "notes": list(cfg.notes),
                "compare_to": cfg.compare_to,
                "nbytes": int(x.nbytes),
                "compressed_bytes": int(p.csize),
                "ratio": x.nbytes / p.csize,
                "compress_samples_s": ct,
                "decompress_samples_s": dt,
                "compress_MBps": x.nbytes / statistics.median(ct) / 1e6,
                "decompress_MBps": x.nbytes / statistics.median(dt) / 1e6,
                "verified": True,
            }
        )
    return rows


def load_datasets(names: list[str], size_mib: float) -> dict[str, np.ndarray]:
    """fp32 / bf16 / topk datasets built from the first ``size_mib`` MiB of fp32 gradients."""
    n = int(size_mib * (1 << 20)) // 4
    g = gradients.fp32_gradients(min_elems=n)
    if g.size < n:
        raise ValueError(f"only {g.size} gradient elements available, {n} requested")
    g = np.ascontiguousarray(g[:n])
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "fp32":
            out[name] = g
        elif name == "bf16":
            out[name] = gradients.to_bf16_bits(g)
        elif name == "topk":
            out[name] = gradients.topk_sparse(g, 0.01)
        else:
            raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    return out


# --------------------------------------------------------------------------- reporting


def format_table(
    dataset: str, x: np.ndarray, rows: list[dict[str, Any]], memcpy: dict[str, Any]
) -> str:
    by_name = {r["config"]: r for r in rows}
    head = (
        f"{'config':<24} {'ratio':>7} {'comp MB/s':>9} {'dec MB/s':>9}   "
        f"{'vs blosc2: comp':>15} {'dec':>6} {'d-ratio':>15}"
    )
    lines = [
        f"== {dataset}: {x.size} x {x.dtype} = {x.nbytes / 1e6:.1f} MB "
        f"(memcpy {memcpy['GBps']:.1f} GB/s) ==",
        head,
        "-" * len(head),
    ]
    for r in rows:
        line = (
            f"{r['config']:<24} {r['ratio']:7.3f} {_fmt_speed(r['compress_MBps'])} "
            f"{_fmt_speed(r['decompress_MBps'])}"
        )
        ref = by_name.get(r["compare_to"] or "")
        if ref is not None:
            dr = r["ratio"] - ref["ratio"]
            line += (
                f"   {r['compress_MBps'] / ref['compress_MBps']:14.2f}x "
                f"{r['decompress_MBps'] / ref['decompress_MBps']:5.2f}x "
                f"{dr:+7.3f} ({dr / ref['ratio']:+5.1%})"
            )
            r["vs_blosc2"] = {
                "blosc2_config": ref["config"],
                "compress_speedup": r["compress_MBps"] / ref["compress_MBps"],
                "decompress_speedup": r["decompress_MBps"] / ref["decompress_MBps"],
                "ratio_diff": dr,
            }
        lines.append(line)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Scatter of compress / decompress MB/s against ratio, one point per config per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds_names = list(results["datasets"])
    fig, axes = plt.subplots(2, len(ds_names), figsize=(5.2 * len(ds_names), 8.5), squeeze=False)
    markers = {"ringpress": "o", "blosc2": "s", "zstandard": "^", "lz4": "v"}
    colors = {"zstd": "tab:blue", "lz4": "tab:orange"}
    for col, ds in enumerate(ds_names):
        entry = results["datasets"][ds]
        for row, key in enumerate(("compress_MBps", "decompress_MBps")):
            ax = axes[row][col]
            for r in entry["results"]:
                ax.scatter(
                    r["ratio"],
                    r[key],
                    marker=markers.get(r["lib"], "x"),
                    color=colors.get(r["codec"], "gray"),
                    s=55,
                    edgecolors="black" if r["lib"] == "ringpress" else "none",
                )
                ax.annotate(
                    r["config"],
                    (r["ratio"], r[key]),
                    fontsize=6.5,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
            ax.axhline(entry["memcpy"]["GBps"] * 1e3, color="gray", ls=":", lw=1)
            ax.set_yscale("log")
            ax.set_xlabel("compression ratio")
            ax.set_ylabel(key.replace("_MBps", " MB/s (uncompressed)"))
            ax.set_title(f"{ds} ({entry['nbytes'] / 1e6:.0f} MB)")
            ax.grid(True, which="both", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker=m, color="gray", markeredgecolor="black", label=lib)
        for lib, m in markers.items()
    ] + [Line2D([], [], ls="", marker="o", color=c, label=k) for k, c in colors.items()]
    axes[0][0].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(
        f"lossless codecs on real gradients, threads={results['config']['threads']} "
        f"(dotted: memcpy)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points


def parse_args(argv: list[str] | None, prog: str = "ringpress bench codecs") -> argparse.Namespace:
    ap = ArgParser(prog=prog, description="Lossless codec benchmark on real gradients.")
    ap.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated subset of fp32,bf16,topk"
    )
    ap.add_argument("--threads", type=int, default=1, help="ringpress threads= and blosc2 nthreads")
    ap.add_argument(
        "--blosc2-lz4-clevel",
        type=int,
        default=9,
        help="blosc2 clevel for LZ4 (acceleration = 10 - clevel); default 9 = "
        "acceleration 1, as ringpress lz4 level 1",
    )
    ap.add_argument(
        "--blosc2-blocksize",
        type=int,
        default=DEFAULT_BLOCK,
        help="blosc2 blocksize in bytes (0 = blosc2 automatic); default 262144, "
        "ringpress's default block",
    )
    add_run_args(ap, "codecs", "fp32 dataset size in MiB (bf16 / topk use the same elements)")
    args = finish_run_args(ap, ap.parse_args(argv))
    args.dataset_list = [s.strip() for s in args.datasets.split(",") if s.strip()]
    unknown = [d for d in args.dataset_list if d not in DATASETS]
    if unknown or not args.dataset_list:
        ap.error(f"unknown datasets {unknown}: choose from {', '.join(DATASETS)}")
    if not 1 <= args.blosc2_lz4_clevel <= 9 or args.blosc2_blocksize < 0:
        ap.error("--blosc2-lz4-clevel must be 1..9 and --blosc2-blocksize >= 0")
    return args


def run(argv: list[str] | None = None, prog: str = "ringpress bench codecs") -> dict[str, Any]:
    """Run the benchmark with command-line style ``argv``; print tables, return the record."""
    args = parse_args(argv, prog)
    names = args.dataset_list
    datasets = load_datasets(names, args.size_mib)
    configs, notes = build_configs(args.threads, args.blosc2_lz4_clevel, args.blosc2_blocksize)
    results: dict[str, Any] = {
        "benchmark": "bench.codecs",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": sys.argv,
        "machine": _machine_info(),
        "versions": versions(),
        "config": {
            "datasets": names,
            "size_mib": args.size_mib,
            "repeats": args.repeats,
            "threads": args.threads,
            "quick": args.quick,
            "blosc2_lz4_clevel": args.blosc2_lz4_clevel,
            "blosc2_blocksize": args.blosc2_blocksize,
            "MB": 1e6,
            "statistic": "median",
            "gradients": gradients.cache_metadata(),
        },
        "notes": notes,
        "datasets": {},
    }
    for note in notes:
        print(f"note: {note}")
    have_blosc2 = any(c.lib == "blosc2" for c in configs)
    print(
        (
            "blosc2: zstd clevel 1 + SHUFFLE"
            if have_blosc2
            else "blosc2 missing (the vs columns stay empty); it would run zstd clevel 1 + SHUFFLE"
        )
        + f", lz4 clevel {args.blosc2_lz4_clevel} "
        f"(acceleration {10 - args.blosc2_lz4_clevel}) + BITSHUFFLE, blocksize "
        f"{args.blosc2_blocksize or 'auto'}, nthreads {args.threads}; median of "
        f"{args.repeats}; MB = 1e6 uncompressed bytes"
    )
    bar = Progress(len(datasets) * 2 * args.repeats, Progress.wanted(args.progress), "codecs ")
    try:
        with _warm_heap(not args.no_heap_tuning) as tuned:
            results["config"]["heap_tuning"] = tuned
            if tuned:
                print(
                    "glibc heap tuned (no mmap for large buffers): allocating APIs reuse warm "
                    "memory"
                )
            for ds, x in datasets.items():
                bar.start(f"{ds} {x.nbytes / 1e6:.0f} MB")
                mc = _memcpy(x, args.repeats)
                rows = measure(configs, x, args.repeats, args.threads, tick=bar.step)
                table = format_table(ds, x, rows, mc)
                bar.write(table)
                results["datasets"][ds] = {
                    "dtype": str(x.dtype),
                    "elements": int(x.size),
                    "nbytes": int(x.nbytes),
                    "nonzero_fraction": float(np.count_nonzero(x) / x.size),
                    "memcpy": mc,
                    "results": rows,
                    "table": table,
                }
    finally:
        bar.close()
    notes_rp = sorted({n for c in configs for n in c.notes})
    if notes_rp:
        results["notes"].extend(notes_rp)
        print("ringpress:", "; ".join(notes_rp))
    _write_json(results, args.json)
    if not args.no_plot:
        save_plot(plot, results, args.png)
    return results


def main(argv: list[str] | None = None, prog: str = "ringpress bench codecs") -> int:
    run(argv, prog)  # no gradients (no torch to build them): the runner's exit 2
    return 0

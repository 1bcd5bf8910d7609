"""Lossy gradient compressor benchmark: ringpress compressors vs torch / numpy peers.

What is measured
    For each method, on the flattened fp32 gradients of ``gradients.py`` (``--size-mib``
    MiB, truncated to a multiple of 4096 elements): the achieved compression ratio (input bytes /
    payload bytes), the relative L2 error ``||x - decode(encode(x))|| / ||x||`` (float64
    accumulation), and encode / decode throughput in MB/s, where MB = 1e6 bytes of *fp32 input*
    for both directions. Each throughput is the median of ``--repeats`` timed calls
    (``time.perf_counter`` around one call on the whole tensor, garbage collection off); every
    sample is kept in the JSON record. Encode rounds, then decode rounds, are interleaved: each
    round calls every method once, starting at a rotating position. For top-k methods the
    achieved count of kept entries is compared with k = max(1, round(ratio * n)).

Threads
    ringpress is called with ``threads=1``; torch runs with ``torch.set_num_threads(1)``
    (restored afterwards); numpy is single-threaded for these operations.

Methods (ringpress rows first in each family, then their peers)
    top-k (ratio 1%): ringpress ``TopK`` exact vs ``torch.topk(x.abs(), k)`` + gather and vs
    ``np.argpartition``; ``TopK`` sampled (tolerance 5%) vs a numpy DGC-style sampled threshold
    (1% random sample, ``np.quantile`` threshold, ``np.nonzero(|x| >= t)``) and vs torch.topk.
    ``TopK`` sampled with fp16 values, ``RandomK`` and ``Threshold`` (t = the 99th percentile of
    |x|, so about 1% is kept) are ringpress-only rows. Peer payloads are what the peer produces:
    fp32 values + int64 indices. Peer decode = zero the output, then scatter.
    quantize (block 512): ringpress ``Quantize(8)`` vs per-block int8 in torch (scale =
    amax|x|/127, ``torch.round``, int8; dequantize = q * scale) and vs
    ``torch.quantize_per_tensor`` qint8 (one scale for the whole tensor: far worse error on
    heavy-tailed gradients); ``Quantize(4, stochastic=True)`` vs a QSGD-style torch version
    (per block scale = amax|x|/7, ``floor(x / scale + torch.rand)``, two codes packed per byte).
    ``Quantize(4)`` nearest, ``Quantize(2, stochastic=True)`` and ``Ternary`` are ringpress-only.
    float: ``FP16`` vs ``x.astype(np.float16)`` and torch ``.to(torch.float16)``; ``BF16`` vs
    torch ``.to(torch.bfloat16)`` (casts back into the output buffer).
    sign: ``Sign(block=512)`` vs torch: per-block mean|x| scale + ``torch.signbit`` packed to 1
    bit per element (shift + sum); decode = ``torch.where(bit, -scale, scale)``.
    pipeline: ``Pipeline(Quantize(8), zstd-1)`` and ``Pipeline(TopK(0.01, values="fp16"),
    zstd-1)``, compared with the same compressor without the lossless stage (the "gain" column
    is the ratio gained by the lossless stage; speed columns are then < 1).

Every method's decode is checked before its timings count (and again after timing): the result
is a float32 array of x's shape written into the pre-allocated output (which is first filled
with NaN, so every element must be written), all finite, max|y| within bounds (max|x| + 1%,
or x n/k for random-k), and the relative error below a loose per-method sanity bound; a
failure raises. Without torch the torch / numpy peer rows are skipped with a note. Results go to
``--json`` (default ``compressors.json`` under ``bench/results/`` in a checkout,
``./ringpress-results/`` elsewhere) and a plot of error against ratio, annotated with speeds,
next to it (``.png``).

Usage: ``ringpress bench compressors [--quick] [--size-mib 64 | --sizes 64M] [--repeats 7]
[--json PATH] [--plot PATH] [--no-progress]`` (or ``python -m ringpress_bench compressors``);
``run(argv) -> dict`` is the importable entry point.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import gradients
from ._common import (
    Progress,
    fmt_speed,
    machine_info,
    memcpy_reference,
    save_plot,
    time_calls,
    versions,
    warm_heap,
    write_json,
)
from .lossless_codecs import load_datasets
from .runner import ArgParser, add_run_args, finish_run_args

BLOCK = 512
RATIO = 0.01
TOLERANCE = 0.05
ALIGN = 4096  # elements: a multiple of every block size used here
SEED = 0
FAMILIES = ("top-k", "quantize", "float", "sign", "pipeline")

Encode = Callable[[np.ndarray], Any]
Decode = Callable[[Any, np.ndarray], Any]
Count = Callable[[Any, np.ndarray], int]


@dataclass
class Method:
    """One compressor: how to encode / decode, what it is compared with, what bounds it."""

    name: str
    lib: str  # ringpress, torch, numpy
    family: str
    params: dict[str, Any]
    make: Callable[[np.ndarray], tuple[Encode, Decode]]
    peers: list[str] = field(default_factory=list)  # first = the table's "peer" column
    k: int | None = None  # target count (top-k family)
    count: Count | None = None  # achieved count from (payload, decoded)
    max_err: float = 1.0  # sanity bound on the relative L2 error
    max_gain: float = 1.01  # sanity bound on max|y| / max|x|
    notes: list[str] = field(default_factory=list)


def _k_of(n: int, ratio: float) -> int:
    return min(n, math.ceil(ratio * n))  # the topk/randomk wire codecs: min(n, ceil(ratio * n))


def payload_bytes(p: Any) -> int:
    """Bytes on the wire: len() of a ringpress payload, nbytes of peer arrays / tensors."""
    if isinstance(p, (tuple, list)):
        return sum(payload_bytes(q) for q in p)
    if isinstance(p, np.ndarray):
        return int(p.nbytes)
    if hasattr(p, "element_size") and hasattr(p, "numel"):  # torch.Tensor
        return int(p.numel() * p.element_size())
    return len(p)


# --------------------------------------------------------------------------- ringpress


def _ringpress_module() -> Any | None:
    try:
        import ringpress
    except ImportError:
        return None
    return ringpress if hasattr(ringpress, "TopK") else None


def _rp(
    name: str, family: str, factory: Callable[[], Any], params: dict[str, Any], **kw: Any
) -> Method:
    notes: list[str] = []

    def make(x: np.ndarray) -> tuple[Encode, Decode]:
        c = factory()
        probe = c.encode(x, threads=1)
        out = np.empty_like(x)
        try:
            c.decode(probe, out=out, threads=1)
            dkw: dict[str, Any] = {"threads": 1}
        except TypeError:  # decode without threads=
            dkw = {}
        del probe

        def enc(a: np.ndarray) -> Any:
            return c.encode(a, threads=1)

        def dec(p: Any, o: np.ndarray) -> Any:
            r = c.decode(p, out=o, **dkw)
            return o if r is None else r

        return enc, dec

    return Method(name, "ringpress", family, params, make, notes=notes, **kw)


def _sparse_count(p: Any, _y: np.ndarray) -> int:
    """Kept entries of a sparse container: the index count of its codec payload (u64 index
    stream size, then the stream, whose first u32 is the count: docs/wire-format.md)."""
    from ringpress.compressors import container_payload

    return int.from_bytes(container_payload(p)[8:12], "little")


def ringpress_methods(rp: Any, n: int, threshold: float) -> list[Method]:
    k = _k_of(n, RATIO)
    sparse = {"k": k, "count": _sparse_count}
    return [
        _rp(
            "ringpress TopK exact",
            "top-k",
            lambda: rp.TopK(ratio=RATIO, method="exact"),
            {"ratio": RATIO, "method": "exact", "values": "fp32"},
            peers=["torch.topk", "numpy argpartition"],
            **sparse,
        ),
        _rp(
            "ringpress TopK sampled",
            "top-k",
            lambda: rp.TopK(ratio=RATIO, method="sampled", tolerance=TOLERANCE),
            {"ratio": RATIO, "method": "sampled", "tolerance": TOLERANCE, "values": "fp32"},
            peers=["numpy DGC sampled", "torch.topk"],
            **sparse,
        ),
        _rp(
            "ringpress TopK sampled fp16",
            "top-k",
            lambda: rp.TopK(ratio=RATIO, method="sampled", tolerance=TOLERANCE, values="fp16"),
            {"ratio": RATIO, "method": "sampled", "tolerance": TOLERANCE, "values": "fp16"},
            **sparse,
        ),
        _rp(
            "ringpress RandomK",
            "top-k",
            lambda: rp.RandomK(ratio=RATIO, seed=SEED),
            {"ratio": RATIO, "seed": SEED},
            max_err=3 * math.sqrt(n / k),  # unbiased scaling by n/k (if applied) inflates it
            max_gain=1.01 * n / k,
            **sparse,
        ),
        _rp(
            "ringpress Threshold",
            "top-k",
            lambda: rp.Threshold(threshold=threshold),
            {"threshold": threshold, "threshold_is": "99th percentile of |x|"},
            count=_sparse_count,
        ),
        _rp(
            "ringpress Quantize int8",
            "quantize",
            lambda: rp.Quantize(bits=8, block=BLOCK),
            {"bits": 8, "block": BLOCK, "stochastic": False},
            peers=["torch int8 block", "torch quantize_per_tensor"],
            max_err=0.05,
        ),
        _rp(
            "ringpress Quantize int4",
            "quantize",
            lambda: rp.Quantize(bits=4, block=BLOCK),
            {"bits": 4, "block": BLOCK, "stochastic": False},
            max_err=0.5,
        ),
        _rp(
            "ringpress Quantize int4 stoch",
            "quantize",
            lambda: rp.Quantize(bits=4, block=BLOCK, stochastic=True, seed=SEED),
            {"bits": 4, "block": BLOCK, "stochastic": True, "seed": SEED},
            peers=["torch QSGD int4"],
            max_err=0.5,
        ),
        _rp(
            "ringpress Quantize int2 stoch",
            "quantize",
            lambda: rp.Quantize(bits=2, block=BLOCK, stochastic=True, seed=SEED),
            {"bits": 2, "block": BLOCK, "stochastic": True, "seed": SEED},
            max_err=2.0,
        ),
        _rp(
            "ringpress Ternary",
            "quantize",
            lambda: rp.Ternary(block=BLOCK, seed=SEED),
            {"block": BLOCK, "seed": SEED},
            max_err=3.0,
        ),
        _rp(
            "ringpress FP16",
            "float",
            rp.FP16,
            {},
            peers=["numpy float16", "torch float16"],
            max_err=1e-2,
        ),
        _rp("ringpress BF16", "float", rp.BF16, {}, peers=["torch bfloat16"], max_err=2e-2),
        _rp(
            "ringpress Sign",
            "sign",
            lambda: rp.Sign(block=BLOCK),
            {"block": BLOCK},
            peers=["torch sign 1-bit"],
        ),
        _rp(
            "ringpress Pipeline(int8, zstd-1)",
            "pipeline",
            lambda: rp.Pipeline(rp.Quantize(bits=8, block=BLOCK), codec="zstd", level=1),
            {"compressor": "Quantize(bits=8, block=512)", "codec": "zstd", "level": 1},
            peers=["ringpress Quantize int8"],
            max_err=0.05,
        ),
        _rp(
            "ringpress Pipeline(TopK fp16, zstd-1)",
            "pipeline",
            lambda: rp.Pipeline(rp.TopK(ratio=RATIO, values="fp16"), codec="zstd", level=1),
            {"compressor": "TopK(ratio=0.01, values='fp16')", "codec": "zstd", "level": 1},
            peers=["ringpress TopK sampled fp16"],
            **sparse,
        ),
    ]


# --------------------------------------------------------------------------- peers


def _scatter_numpy(p: Any, out: np.ndarray) -> np.ndarray:
    vals, idx = p
    out.fill(0)
    out[idx] = vals
    return out


def _len_indices(p: Any, _y: np.ndarray) -> int:
    return len(p[1])


def peer_methods(n: int) -> list[Method]:
    import torch

    k = _k_of(n, RATIO)
    tiny = torch.finfo(torch.float32).tiny

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)

    # ---- top-k
    def torch_topk(x: np.ndarray) -> tuple[Encode, Decode]:
        def enc(a: np.ndarray) -> Any:
            at = t(a)
            _, idx = torch.topk(at.abs(), k, sorted=False)
            return at.gather(0, idx), idx

        def dec(p: Any, out: np.ndarray) -> np.ndarray:
            vals, idx = p
            ot = t(out)
            ot.zero_()
            ot.index_copy_(0, idx, vals)
            return out

        return enc, dec

    def np_argpartition(x: np.ndarray) -> tuple[Encode, Decode]:
        def enc(a: np.ndarray) -> Any:
            idx = np.argpartition(np.abs(a), n - k)[n - k :]
            return a[idx], idx

        return enc, _scatter_numpy

    def np_dgc(x: np.ndarray) -> tuple[Encode, Decode]:
        m = max(1, n // 100)

        def enc(a: np.ndarray) -> Any:
            rng = np.random.default_rng(SEED)
            sample = np.abs(a[rng.integers(0, n, m)])
            thr = np.quantile(sample, 1.0 - RATIO)
            idx = np.nonzero(np.abs(a) >= thr)[0]
            return a[idx], idx

        return enc, _scatter_numpy

    # ---- blockwise integer quantization
    def torch_int8_block(x: np.ndarray) -> tuple[Encode, Decode]:
        def enc(a: np.ndarray) -> Any:
            xb = t(a).view(-1, BLOCK)
            scale = (xb.abs().amax(1, keepdim=True) / 127).clamp_min_(tiny)
            return torch.round(xb / scale).to(torch.int8), scale

        def dec(p: Any, out: np.ndarray) -> np.ndarray:
            q, scale = p
            torch.mul(q, scale, out=t(out).view(-1, BLOCK))
            return out

        return enc, dec

    def torch_per_tensor(x: np.ndarray) -> tuple[Encode, Decode]:
        def enc(a: np.ndarray) -> Any:
            at = t(a)
            scale = max(float(at.abs().max()) / 127, tiny)
            with warnings.catch_warnings():  # deprecated in recent torch (still works)
                warnings.simplefilter("ignore", UserWarning)
                return torch.quantize_per_tensor(at, scale, 0, torch.qint8)

        def dec(q: Any, out: np.ndarray) -> np.ndarray:
            t(out).copy_(q.dequantize())
            return out

        return enc, dec

    def torch_qsgd4(x: np.ndarray) -> tuple[Encode, Decode]:
        gen = torch.Generator().manual_seed(SEED)
        levels = 7

        def enc(a: np.ndarray) -> Any:
            gen.manual_seed(SEED)
            xb = t(a).view(-1, BLOCK)
            scale = (xb.abs().amax(1, keepdim=True) / levels).clamp_min_(tiny)
            noise = torch.rand(xb.shape, generator=gen)
            q = torch.floor(xb / scale + noise).clamp_(-levels, levels).to(torch.int8)
            return (q[:, 0::2] & 15) | (q[:, 1::2] << 4), scale

        def dec(p: Any, out: np.ndarray) -> np.ndarray:
            packed, scale = p
            lo = (packed << 4) >> 4  # int8: arithmetic shifts sign-extend the nibbles
            hi = packed >> 4
            q = torch.stack((lo, hi), dim=2).view(-1, BLOCK)
            torch.mul(q, scale, out=t(out).view(-1, BLOCK))
            return out

        return enc, dec

    # ---- float casts
    def np_fp16(x: np.ndarray) -> tuple[Encode, Decode]:
        def dec(h: Any, out: np.ndarray) -> np.ndarray:
            np.copyto(out, h)
            return out

        return (lambda a: a.astype(np.float16)), dec

    def torch_cast(dtype: Any) -> Callable[[np.ndarray], tuple[Encode, Decode]]:
        def make(x: np.ndarray) -> tuple[Encode, Decode]:
            def dec(h: Any, out: np.ndarray) -> np.ndarray:
                t(out).copy_(h)
                return out

            return (lambda a: t(a).to(dtype)), dec

        return make

    # ---- sign
    def torch_sign(x: np.ndarray) -> tuple[Encode, Decode]:
        shifts = torch.arange(8, dtype=torch.uint8)

        def enc(a: np.ndarray) -> Any:
            xb = t(a).view(-1, BLOCK)
            scale = xb.abs().mean(1, keepdim=True)
            bits = torch.signbit(xb).view(-1, 8).to(torch.uint8)
            return (bits << shifts).sum(1, dtype=torch.uint8), scale

        def dec(p: Any, out: np.ndarray) -> np.ndarray:
            packed, scale = p
            neg = ((packed.unsqueeze(1) >> shifts) & 1).view(-1, BLOCK).bool()
            torch.where(neg, -scale, scale, out=t(out).view(-1, BLOCK))
            return out

        return enc, dec

    sparse = {"k": k, "count": _len_indices}
    return [
        Method("torch.topk", "torch", "top-k", {"k": k, "sorted": False}, torch_topk, **sparse),
        Method("numpy argpartition", "numpy", "top-k", {"k": k}, np_argpartition, **sparse),
        Method(
            "numpy DGC sampled",
            "numpy",
            "top-k",
            {"ratio": RATIO, "sample": 0.01, "seed": SEED},
            np_dgc,
            **sparse,
        ),
        Method("torch int8 block", "torch", "quantize", {"block": BLOCK}, torch_int8_block),
        Method(
            "torch quantize_per_tensor",
            "torch",
            "quantize",
            {"dtype": "qint8", "scale": "amax|x|/127", "zero_point": 0},
            torch_per_tensor,
        ),
        Method(
            "torch QSGD int4",
            "torch",
            "quantize",
            {"block": BLOCK, "levels": 7, "packed": "2 per byte", "seed": SEED},
            torch_qsgd4,
        ),
        Method("numpy float16", "numpy", "float", {}, np_fp16, max_err=1e-2),
        Method("torch float16", "torch", "float", {}, torch_cast(torch.float16), max_err=1e-2),
        Method("torch bfloat16", "torch", "float", {}, torch_cast(torch.bfloat16), max_err=2e-2),
        Method(
            "torch sign 1-bit",
            "torch",
            "sign",
            {"block": BLOCK, "scale": "mean|x|", "packed": "8 per byte"},
            torch_sign,
        ),
    ]


def build_methods(n: int, threshold: float) -> tuple[list[Method], list[str]]:
    """The benchmark's methods grouped by family (ringpress first), and notes on omissions."""
    notes: list[str] = []
    methods: list[Method] = []
    rp = _ringpress_module()
    if rp is None:
        notes.append("ringpress compressors (ringpress.TopK, ...) not available: rows skipped")
    else:
        methods += ringpress_methods(rp, n, threshold)
    try:
        methods += peer_methods(n)
    except ImportError as e:
        notes.append(
            f"torch not available ({e}): peer rows skipped; pip install 'ringpress[torch]' adds them"
        )
    order = {f: i for i, f in enumerate(FAMILIES)}
    methods.sort(key=lambda m: (order[m.family], m.lib != "ringpress"))
    return methods, notes


# --------------------------------------------------------------------------- measurement


def rel_l2(x: np.ndarray, y: np.ndarray) -> float:
    d = (x - y).astype(np.float64)
    return float(np.linalg.norm(d) / np.linalg.norm(x.astype(np.float64)))


def check_decoded(m: Method, x: np.ndarray, y: Any, out: np.ndarray, amax: float) -> float:
    """Sanity of one decode (see the module docstring); returns the relative L2 error."""
    if not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.shape != x.shape:
        got = f"{getattr(y, 'dtype', type(y).__name__)}{getattr(y, 'shape', '')}"
        raise AssertionError(f"{m.name}: decode returned {got}, expected float32{x.shape}")
    if not np.shares_memory(y, out):
        note = "decode(out=) did not write into out"
        if note not in m.notes:
            m.notes.append(note)
    if not np.isfinite(y).all():
        raise AssertionError(f"{m.name}: decode left non-finite values (or unwritten elements)")
    ymax = float(np.abs(y).max())
    if ymax > amax * m.max_gain:
        raise AssertionError(f"{m.name}: max|y| = {ymax:g} exceeds {m.max_gain:g} * max|x|")
    err = rel_l2(x, y)
    if not err < m.max_err:
        raise AssertionError(f"{m.name}: relative L2 error {err:g} >= sanity bound {m.max_err}")
    return err


@dataclass
class _Prepared:
    m: Method
    enc: Encode
    dec: Decode
    payload: Any
    nbytes: int


def _decode_checked(p: _Prepared, x: np.ndarray, out: np.ndarray, amax: float) -> tuple:
    out.fill(np.nan)  # every element must be written
    y = p.dec(p.payload, out)
    return check_decoded(p.m, x, y, out, amax), y


def measure(
    methods: list[Method],
    x: np.ndarray,
    repeats: int,
    tick: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Check every method's decode on ``x``, then time encodes and decodes interleaved.
    ``tick`` is called after every round (2 x ``repeats`` times)."""
    out = np.empty_like(x)
    amax = float(np.abs(x).max())
    prepared: list[_Prepared] = []
    for m in methods:
        enc, dec = m.make(x)
        payload = enc(x)
        p = _Prepared(m, enc, dec, payload, payload_bytes(payload))
        _decode_checked(p, x, out, amax)
        prepared.append(p)
    n = len(prepared)
    etimes: list[list[float]] = [[] for _ in prepared]
    dtimes: list[list[float]] = [[] for _ in prepared]
    for r in range(repeats):
        for i in [(r + j) % n for j in range(n)]:
            p = prepared[i]
            etimes[i] += time_calls(lambda p=p: p.enc(x), 1)
        if tick:
            tick()
    for r in range(repeats):
        for i in [(r + j) % n for j in range(n)]:
            p = prepared[i]
            dtimes[i] += time_calls(lambda p=p: p.dec(p.payload, out), 1)
        if tick:
            tick()
    rows = []
    for p, et, dt in zip(prepared, etimes, dtimes, strict=False):
        m = p.m
        err, y = _decode_checked(p, x, out, amax)
        row: dict[str, Any] = {
            "method": m.name,
            "lib": m.lib,
            "family": m.family,
            "params": m.params,
            "peers": list(m.peers),
            "notes": list(m.notes),
            "nbytes": int(x.nbytes),
            "payload_bytes": p.nbytes,
            "ratio": x.nbytes / p.nbytes,
            "rel_l2_error": err,
            "encode_samples_s": et,
            "decode_samples_s": dt,
            "encode_MBps": x.nbytes / statistics.median(et) / 1e6,
            "decode_MBps": x.nbytes / statistics.median(dt) / 1e6,
            "verified": True,
        }
        if m.count is not None:
            cnt = m.count(p.payload, y)
            row["count"] = cnt
            if m.k is not None:
                row["k"] = m.k
                row["count_vs_k"] = cnt / m.k - 1.0
        p.payload = None
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- reporting


def add_comparisons(rows: list[dict[str, Any]]) -> None:
    """Fill ``vs_peers`` (speed ratios; ratio gain for pipelines) into ringpress rows."""
    by_name = {r["method"]: r for r in rows}
    for r in rows:
        r["vs_peers"] = []
        for peer in r["peers"]:
            ref = by_name.get(peer)
            if ref is None:
                continue
            r["vs_peers"].append(
                {
                    "peer": peer,
                    "encode_speedup": r["encode_MBps"] / ref["encode_MBps"],
                    "decode_speedup": r["decode_MBps"] / ref["decode_MBps"],
                    "ratio_gain": r["ratio"] / ref["ratio"],
                    "error_ratio": r["rel_l2_error"] / ref["rel_l2_error"]
                    if ref["rel_l2_error"] > 0
                    else None,
                }
            )


def format_table(x: np.ndarray, rows: list[dict[str, Any]], memcpy: dict[str, Any]) -> str:
    head = (
        f"{'method':<38} {'ratio':>7} {'rel L2 err':>10} {'k / gain':>9} {'enc MB/s':>9} "
        f"{'dec MB/s':>9}  {'peer':<26} {'enc vs':>7} {'dec vs':>7}"
    )
    lines = [
        f"== fp32 gradients: {x.size} x float32 = {x.nbytes / 1e6:.1f} MB, 1 thread "
        f"(memcpy {memcpy['GBps']:.1f} GB/s); k = round({RATIO} n) = {_k_of(x.size, RATIO)} ==",
        head,
    ]
    family = None
    for r in rows:
        if r["family"] != family:
            family = r["family"]
            lines.append(f"-- {family} " + "-" * (len(head) - len(family) - 4))
        if "count_vs_k" in r:
            extra = f"{r['count_vs_k']:+8.2%}"
        elif "count" in r:
            extra = f"{r['count']:>9d}"
        else:
            extra = ""
        cmp = r.get("vs_peers", [])
        if r["family"] == "pipeline" and cmp:
            extra = f"x{cmp[0]['ratio_gain']:.3f}"
        line = (
            f"{r['method']:<38} {r['ratio']:7.2f} {r['rel_l2_error']:10.3e} {extra:>9} "
            f"{fmt_speed(r['encode_MBps'])} {fmt_speed(r['decode_MBps'])}"
        )
        for j, c in enumerate(cmp):
            if j:
                line = " " * len(line)
            lines.append(
                f"{line}  {c['peer']:<26} {c['encode_speedup']:6.2f}x {c['decode_speedup']:6.2f}x"
            )
        if not cmp:
            lines.append(line)
    lines.append(
        "k / gain: top-k count vs k (Threshold: count); pipelines: ratio gained by the lossless "
        "stage. enc/dec vs: speed ratio to the peer (> 1 = ringpress faster)."
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Relative L2 error against ratio, one point per method, annotated with its speeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = results["results"]
    markers = {"ringpress": "o", "torch": "s", "numpy": "^"}
    colors = dict(
        zip(
            FAMILIES, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False
        )
    )
    fig, ax = plt.subplots(figsize=(13, 8.5))
    clusters: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for r in rows:  # methods landing on the same spot share one label block
        err = max(r["rel_l2_error"], 1e-9)
        key = (round(math.log10(r["ratio"]), 2), round(math.log10(err), 2))
        clusters.setdefault(key, []).append(r)
        ax.scatter(
            r["ratio"],
            err,
            marker=markers.get(r["lib"], "x"),
            color=colors.get(r["family"], "gray"),
            s=60,
            edgecolors="black" if r["lib"] == "ringpress" else "none",
            zorder=3,
        )
    # Label boxes in log10 units (~ 6 pt text on this figure): above or below the point,
    # whichever overlaps the labels already placed less.
    placed: list[tuple[float, float, float, float]] = []

    def overlap(b: tuple[float, float, float, float]) -> float:
        return sum(
            max(0.0, min(b[1], p[1]) - max(b[0], p[0]))
            * max(0.0, min(b[3], p[3]) - max(b[2], p[2]))
            for p in placed
        )

    for (lx, ly), group in sorted(clusters.items()):
        text = "\n".join(
            f"{r['method']}: {r['encode_MBps']:.0f} / {r['decode_MBps']:.0f}" for r in group
        )
        w = 0.0095 * max(len(t) for t in text.splitlines())
        h = 0.06 * len(group)
        above = (lx, lx + w, ly, ly + h)
        below = (lx, lx + w, ly - h, ly)
        up = overlap(above) <= overlap(below)
        placed.append(above if up else below)
        ax.annotate(
            text,
            (group[0]["ratio"], max(group[0]["rel_l2_error"], 1e-9)),
            fontsize=6,
            xytext=(6, 4 if up else -4),
            textcoords="offset points",
            va="bottom" if up else "top",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1.5, max(r["ratio"] for r in rows) * 4)
    ax.set_xlabel("compression ratio (fp32 bytes / payload bytes)")
    ax.set_ylabel("relative L2 error ||x - x'|| / ||x||")
    ax.grid(True, which="both", alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker=mk, color="gray", markeredgecolor="black", label=lib)
        for lib, mk in markers.items()
    ] + [Line2D([], [], ls="", marker="o", color=c, label=f) for f, c in colors.items()]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    cfg = results["config"]
    ax.set_title(
        f"gradient compressors on {results['data']['nbytes'] / 1e6:.0f} MB of real fp32 "
        f"gradients, 1 thread, median of {cfg['repeats']} (labels: encode / decode MB/s)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points


def parse_args(
    argv: list[str] | None, prog: str = "ringpress bench compressors"
) -> argparse.Namespace:
    ap = ArgParser(prog=prog, description="Lossy gradient compressor benchmark on real gradients.")
    add_run_args(ap, "compressors", "fp32 gradient size in MiB (16M values at 64)")
    return finish_run_args(ap, ap.parse_args(argv))


def load_gradients(size_mib: float) -> np.ndarray:
    """The first ``size_mib`` MiB of fp32 gradients, truncated to a multiple of ALIGN values."""
    g = load_datasets(["fp32"], size_mib)["fp32"]
    n = max(ALIGN, g.size - g.size % ALIGN)
    if g.size < n:
        raise ValueError(f"--size-mib too small: at least {ALIGN} values needed")
    return np.array(g[:n])  # a writable copy: torch.from_numpy warns on read-only arrays


def run(argv: list[str] | None = None, prog: str = "ringpress bench compressors") -> dict[str, Any]:
    """Run the benchmark with command-line style ``argv``; print the table, return the record."""
    args = parse_args(argv, prog)
    x = load_gradients(args.size_mib)
    threshold = float(np.quantile(np.abs(x), 1.0 - RATIO))
    methods, notes = build_methods(x.size, threshold)
    results: dict[str, Any] = {
        "benchmark": "bench.compressors",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": sys.argv,
        "machine": machine_info(("torch", "matplotlib")),
        "versions": versions(),
        "config": {
            "size_mib": args.size_mib,
            "elements": int(x.size),
            "repeats": args.repeats,
            "threads": 1,
            "quick": args.quick,
            "ratio": RATIO,
            "k": _k_of(x.size, RATIO),
            "tolerance": TOLERANCE,
            "block": BLOCK,
            "seed": SEED,
            "MB": 1e6,
            "MB_of": "fp32 input, both directions",
            "statistic": "median",
            "gradients": gradients.cache_metadata(),
        },
        "data": {
            "dtype": str(x.dtype),
            "elements": int(x.size),
            "nbytes": int(x.nbytes),
            "max_abs": float(np.abs(x).max()),
            "rms": float(np.sqrt(np.mean(x.astype(np.float64) ** 2))),
            "zero_fraction": float(1.0 - np.count_nonzero(x) / x.size),
        },
        "notes": notes,
    }
    for note in notes:
        print(f"note: {note}")
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        results["config"]["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    bar = Progress(2 * args.repeats, Progress.wanted(args.progress), "compressors ")
    try:
        with warm_heap(not args.no_heap_tuning) as tuned:
            results["config"]["heap_tuning"] = tuned
            mc = memcpy_reference(x, args.repeats)
            bar.start(f"{len(methods)} methods, {x.nbytes / 1e6:.0f} MB")
            rows = measure(methods, x, args.repeats, tick=bar.step)
    finally:
        bar.close()
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
    add_comparisons(rows)
    table = format_table(x, rows, mc)
    print(table, flush=True)
    results.update(memcpy=mc, results=rows, table=table)
    notes_m = sorted({f"{m.name}: {n}" for m in methods for n in m.notes})
    if notes_m:
        results["notes"].extend(notes_m)
        print("notes:", "; ".join(notes_m))
    write_json(results, args.json)
    if not args.no_plot:
        save_plot(plot, results, args.png)
    return results


def main(argv: list[str] | None = None, prog: str = "ringpress bench compressors") -> int:
    run(argv, prog)  # no gradients (no torch to build them): the runner's exit 2
    return 0

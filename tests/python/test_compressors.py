"""Gradient compressors: properties from the headers and the RPZC container spec.

Sources (normative): docs/wire-format.md ("Compressed-tensor container"), csrc/include/ringpress/
quantize.h and topk.h (error bounds, packing, index stream, ties).

* ``ref_container``: an independent pure-Python decoder of containers written from the spec (the
  sections are frames, decoded with ``test_wire_format.ref_decode``). Every payload the
  compressors write must decode with it to exactly what ``decode`` returns.
* Per-method properties: fp16/bf16 bit-exact conversions, blockwise int codes reproduced exactly
  (nearest) and within the documented bounds (stochastic), sign scales, ternary = stochastic int2,
  top-k / threshold / random-k selections, unbiasedness over fresh streams, reproducibility.
* Error feedback: conservation of mass and state_dict round trips.
* Pipeline: a lossless stage changes nothing but the size.
* ``Container``: rebuilds containers from parts (recomputing header_check) so a container can be
  well-checksummed and break exactly one rule; every such container, every truncation and every
  single-byte corruption must raise ``ringpress.WireFormatError``.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import struct

import numpy as np
import pytest
import ringpress
import torch
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_wire_format import Block, RefError, build_frame, ref_decode, ref_parse

# --------------------------------------------------------------------------------------------
# The container spec, as tables.

CMAGIC = b"RPZC"
# magic, version, flags, method, method_version, dtype, ndim, bits, reserved, block, n,
# nsections, header_check
CHEAD = struct.Struct("<4sBBBBBBBBIQII")
assert CHEAD.size == 32
FP16, BF16, INT, SIGN, TERNARY, SPARSE = 1, 2, 3, 4, 5, 6
METHOD_BITS = {FP16: {16}, BF16: {16}, INT: {8, 4, 2}, SIGN: {1}, TERNARY: {2}, SPARSE: {32, 16}}
BLOCKED = {INT, SIGN, TERNARY}
NSECT = {FP16: 1, BF16: 1, INT: 2, SIGN: 2, TERNARY: 2, SPARSE: 2}
QMAX = {8: 127, 4: 7, 2: 1}
M32 = 0xFFFFFFFF
F32 = np.float32
TINY = 2.0**-149  # the smallest fp32 subnormal
FLT_MAX = float(np.finfo(np.float32).max)


def xxh3_32(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) & M32


@dataclasses.dataclass
class Container:
    sections: list  # frames (bytes)
    shape: tuple
    method: int
    bits: int
    block: int
    magic: bytes = CMAGIC
    version: int = 1
    flags: int = 0
    method_version: int = 1
    dtype: int = 11
    ndim: int | None = None  # None: len(shape)
    reserved: int = 0
    n: int | None = None  # None: prod(shape)
    nsections: int | None = None  # None: len(sections)
    sizes: list | None = None  # None: the sections' lengths
    header_check: int | None = None  # None: computed
    trailer: bytes = b""

    def to_bytes(self) -> bytes:
        ndim = len(self.shape) if self.ndim is None else self.ndim
        n = math.prod(self.shape) if self.n is None else self.n
        nsect = len(self.sections) if self.nsections is None else self.nsections
        sizes = [len(s) for s in self.sections] if self.sizes is None else self.sizes
        head = CHEAD.pack(
            self.magic,
            self.version,
            self.flags,
            self.method,
            self.method_version,
            self.dtype,
            ndim,
            self.bits,
            self.reserved,
            self.block,
            n,
            nsect,
            0,
        )[:28]
        table = b"".join(struct.pack("<Q", d) for d in self.shape)
        table += b"".join(struct.pack("<Q", s & (2**64 - 1)) for s in sizes)
        check = xxh3_32(head + table) if self.header_check is None else self.header_check
        return (
            head
            + struct.pack("<I", check)
            + table
            + b"".join(map(bytes, self.sections))
            + self.trailer
        )

    def but(self, **changes) -> bytes:
        return dataclasses.replace(self, **changes).to_bytes()


def parse_container(buf) -> Container:
    """Structure only (header, shape, sizes, section bytes); ``ref_container`` validates."""
    buf = bytes(buf)
    (magic, version, flags, method, mver, dtype, ndim, bits, reserved, block, _n, nsect, _check) = (
        CHEAD.unpack_from(buf)
    )
    shape = struct.unpack_from(f"<{ndim}Q", buf, 32)
    sizes = struct.unpack_from(f"<{nsect}Q", buf, 32 + 8 * ndim)
    pos, sections = 32 + 8 * ndim + 8 * nsect, []
    for s in sizes:
        sections.append(buf[pos : pos + s])
        pos += s
    assert pos == len(buf)
    c = Container(
        sections,
        tuple(shape),
        method,
        bits,
        block,
        magic,
        version,
        flags,
        mver,
        dtype,
        reserved=reserved,
    )
    assert c.to_bytes() == buf, "the builder must reproduce real containers byte for byte"
    return c


# --------------------------------------------------------------------------------------------
# Index stream (topk.h) and packed codes (quantize.h), both directions.


def index_stream(deltas, count=None, widths=None, trailer=b"") -> bytes:
    """u32 count | per block of up to 128 deltas: u8 width, ceil(m*w/8) bytes LSB-first."""
    deltas = [int(d) for d in deltas]
    out = bytearray(struct.pack("<I", len(deltas) if count is None else count))
    for b, start in enumerate(range(0, len(deltas), 128)):
        chunk = deltas[start : start + 128]
        w = max(d.bit_length() for d in chunk) if widths is None else widths[b % len(widths)]
        acc = 0
        for j, d in enumerate(chunk):
            acc |= (d & ((1 << w) - 1)) << (j * w)
        out.append(w)
        out += acc.to_bytes((len(chunk) * w + 7) // 8, "little")
    return bytes(out) + trailer


def deltas_of(indices) -> list[int]:
    prev, out = -1, []
    for i in indices:
        out.append(int(i) - prev - 1)
        prev = int(i)
    return out


def ref_indices(raw: bytes, universe: int) -> np.ndarray:
    if len(raw) < 4:
        raise RefError("index stream shorter than its count")
    (count,) = struct.unpack_from("<I", raw)
    if count > universe:
        raise RefError("index count > n")
    out, pos, prev = [], 4, -1
    while len(out) < count:
        m = min(128, count - len(out))
        if pos >= len(raw):
            raise RefError("index stream truncated")
        w = raw[pos]
        pos += 1
        if w > 32:
            raise RefError("index width > 32")
        nb = (m * w + 7) // 8
        if pos + nb > len(raw):
            raise RefError("index stream truncated")
        acc = int.from_bytes(raw[pos : pos + nb], "little")
        pos += nb
        for j in range(m):
            prev = prev + 1 + ((acc >> (j * w)) & ((1 << w) - 1))
            if prev >= universe or prev >= 2**32:
                raise RefError("index >= n")
            out.append(prev)
    if pos != len(raw):
        raise RefError("trailing bytes in the index stream")
    return np.array(out, dtype=np.int64)


def unpack_codes(raw: bytes, n: int, bits: int) -> np.ndarray:
    """Signed codes for 8/4/2 bits, 0/1 for 1 bit (quantize.h layout)."""
    u = np.frombuffer(raw, dtype=np.uint8)
    if bits == 8:
        return u.view(np.int8)[:n].astype(np.int64)
    shifts = np.arange(8 // bits, dtype=np.uint8) * bits
    v = ((u[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n].astype(np.int64)
    if bits > 1:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return v


def pack_codes(q, bits: int) -> bytes:
    q = np.asarray(q, dtype=np.int64) & ((1 << bits) - 1)
    per = 8 // bits
    q = np.concatenate([q, np.zeros(-len(q) % per, np.int64)]).reshape(-1, per)
    return (q << (np.arange(per) * bits)).sum(axis=1).astype(np.uint8).tobytes()


def per_elem(scales: np.ndarray, block: int, n: int) -> np.ndarray:
    return np.repeat(scales, block)[:n]


# --------------------------------------------------------------------------------------------
# The reference container decoder.


def _section(dec, dtype: str, shape=None, nbytes=None, what=""):
    got_dtype, got_shape, raw = dec
    if got_dtype != dtype:
        raise RefError(f"{what}: dtype {got_dtype}, expected {dtype}")
    if shape is not None and tuple(got_shape) != tuple(shape):
        raise RefError(f"{what}: shape {got_shape}, expected {shape}")
    if nbytes is not None and len(raw) != nbytes:
        raise RefError(f"{what}: {len(raw)} bytes, expected {nbytes}")
    return raw


def ref_container(buf) -> dict:
    """Validate and decode a container: {'out', 'method', 'bits', 'block', + per method parts}."""
    buf = bytes(buf)
    if len(buf) < 32:
        raise RefError("truncated header")
    (magic, version, flags, method, mver, dtype, ndim, bits, reserved, block, n, nsect, check) = (
        CHEAD.unpack_from(buf)
    )
    if magic != CMAGIC or version != 1 or flags or reserved or mver != 1 or dtype != 11:
        raise RefError("bad magic/version/flags/reserved/method_version/dtype")
    if method not in METHOD_BITS or bits not in METHOD_BITS[method]:
        raise RefError("method / bits")
    if (block == 0) == (method in BLOCKED):
        raise RefError("block")
    if nsect != NSECT[method] or ndim > 8:
        raise RefError("nsections / ndim")
    end = 32 + 8 * ndim + 8 * nsect
    if len(buf) < end:
        raise RefError("truncated table")
    shape = struct.unpack_from(f"<{ndim}Q", buf, 32)
    if math.prod(shape) != n or (method == SPARSE and n >= 2**32):
        raise RefError("shape / n")
    if xxh3_32(buf[:28] + buf[32:end]) != check:
        raise RefError("header_check")
    sizes = struct.unpack_from(f"<{nsect}Q", buf, 32 + 8 * ndim)
    pos, secs = end, []
    for s in sizes:
        if s > len(buf) - pos:
            raise RefError("section runs past the container")
        secs.append(ref_decode(buf[pos : pos + s]))
        pos += s
    if pos != len(buf):
        raise RefError("trailing bytes")
    res = {"method": method, "bits": bits, "block": block, "n": n, "shape": shape}
    if method == FP16:
        raw = _section(secs[0], "float16", (n,), what="fp16 codes")
        out = np.frombuffer(raw, np.float16).astype(F32)
    elif method == BF16:
        raw = _section(secs[0], "bfloat16", (n,), what="bf16 codes")
        out = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(F32)
    elif method in BLOCKED:
        nb = -(-n // block)
        scales = np.frombuffer(_section(secs[0], "float32", (nb,), what="scales"), F32)
        code_bits = 1 if method == SIGN else bits
        raw = _section(secs[1], "bytes", nbytes=(n * code_bits + 7) // 8, what="codes")
        q = unpack_codes(raw, n, code_bits)
        s = per_elem(scales, block, n)
        if method == SIGN:
            out = np.where(q == 1, -s, s).astype(F32)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # q*scale as specified
                out = (q.astype(F32) * s).astype(F32)
        res.update(scales=scales, q=q)
    else:
        idx = ref_indices(_section(secs[0], "bytes", what="indices"), n)
        vdt = "float32" if bits == 32 else "float16"
        raw = _section(secs[1], vdt, (len(idx),), what="values")
        vals = np.frombuffer(raw, F32 if bits == 32 else np.float16).astype(F32)
        out = np.zeros(n, F32)
        out[idx] = vals
        res.update(idx=idx, values=vals)
    res["out"] = out.reshape(shape)
    return res


# --------------------------------------------------------------------------------------------
# Reference encoders (quantize.h), bit for bit.


def _splitmix64(z: int) -> int:
    m = 2**64 - 1
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _mix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x21F0AAAD)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x735A2D97)
    return x ^ (x >> np.uint32(15))


def prng_u32(seed: int, index: np.ndarray) -> np.ndarray:
    key = _splitmix64(seed)
    k0, k1 = np.uint32(key & M32), np.uint32(key >> 32)
    index = np.asarray(index, dtype=np.uint64)
    lo = (index & np.uint64(M32)).astype(np.uint32)
    hi = (index >> np.uint64(32)).astype(np.uint32)
    hc = k1 + hi * np.uint32(0x9E3779B9)
    return _mix32(_mix32(lo + k0) ^ hc)


def ref_blockwise(x, bits: int, block: int, seed: int | None = None):
    """(scales, codes) of blockwise int quantization; seed None = nearest, else stochastic with
    the stream (seed, offset 0)."""
    x = np.ascontiguousarray(x, F32).ravel()
    n, qmax = x.size, QMAX[bits]
    nb = -(-n // block)
    xb = np.zeros(nb * block, F32)
    xb[:n] = x
    xb = xb.reshape(nb, block)
    m = np.abs(xb).max(axis=1) if n else np.zeros(0, F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scales = (m / F32(qmax)).astype(F32)
        pre = np.where(m < F32(2.0**-96), F32(2.0**64), F32(1)).astype(F32)
        inv = (F32(qmax) / (m * pre)).astype(F32)
        v = ((xb * pre[:, None]).astype(F32) * inv[:, None]).astype(F32)
        if seed is None:
            q = np.rint(v)
        else:
            u = (prng_u32(seed, np.arange(nb * block)) >> np.uint32(8)).reshape(nb, block)
            fl = np.floor(v)
            frac = (v - fl).astype(F32) * F32(2.0**24)
            q = fl + (u.astype(np.float64) < frac.astype(np.float64))
    q = np.clip(np.where(m[:, None] == 0, 0, q), -qmax, qmax)
    return scales, q.reshape(-1)[:n].astype(np.int64)


def fp16_ref(x) -> np.ndarray:
    """quantize.h fp16 round trip as fp32 bit patterns (NaN: quiet, top payload bits kept)."""
    x = np.asarray(x, F32).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(np.float16).astype(F32).view(np.uint32).copy()
    bits = x.view(np.uint32)
    nan = np.isnan(x)
    out[nan] = (
        (bits[nan] & np.uint32(0x80000000))
        | np.uint32(0x7FC00000)
        | (bits[nan] & np.uint32(0x007FE000))
    )
    return out


def bf16_ref(x) -> np.ndarray:
    x = np.asarray(x, F32).ravel()
    out = torch.from_numpy(x.copy()).to(torch.bfloat16).to(torch.float32).numpy().view(np.uint32)
    out = out.copy()
    bits = x.view(np.uint32)
    nan = np.isnan(x)
    out[nan] = (bits[nan] & np.uint32(0xFFFF0000)) | np.uint32(0x00400000)
    return out


def topk_ref(x, k: int) -> np.ndarray:
    """The k largest |x|, ties by lowest index; ascending indices."""
    a = np.abs(np.asarray(x, F32).ravel()).astype(np.float64)
    order = np.lexsort((np.arange(a.size), -a))
    return np.sort(order[:k])


def k_of(ratio: float, n: int) -> set[int]:
    """k = max(1, round(ratio * n)); an exact .5 may round either way (see the report)."""
    if n == 0:
        return {0}
    r = ratio * n
    cands = {round(r)}
    if r - math.floor(r) == 0.5:
        cands = {math.floor(r), math.ceil(r)}
    return {max(1, c) for c in cands}


# --------------------------------------------------------------------------------------------
# Inputs.

FINITE = st.floats(width=32, allow_nan=False, allow_infinity=False)
_B = float(np.float32(1e37))
BOUNDED = st.floats(width=32, min_value=-_B, max_value=_B)  # q*scale cannot overflow


def small_arrays(elements=FINITE, max_side=12):
    return hnp.arrays(
        F32,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side),
        elements=elements,
    )


def gradient(n: int, seed: int = 0, kind: str = "normal") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return (rng.standard_normal(n) * 1e-3).astype(F32)
    if kind == "heavy":
        return (rng.standard_t(2.5, n) * 1e-3).astype(F32)
    if kind == "sparse":
        x = np.zeros(n, F32)
        i = rng.choice(n, n // 20, replace=False) if n else []
        x[i] = rng.standard_normal(len(i))
        return x
    if kind == "ties":
        return (rng.integers(-3, 4, n) * 0.25).astype(F32)
    if kind == "tiny":
        return (rng.standard_normal(n) * 1e-40).astype(F32)  # subnormals
    raise AssertionError(kind)


@st.composite
def grad_arrays(draw, max_n=3000):
    n = draw(st.integers(0, max_n))
    x = gradient(
        n,
        draw(st.integers(0, 2**31)),
        draw(st.sampled_from(["normal", "heavy", "sparse", "ties", "tiny"])),
    )
    shapes = [(n,), (1, n)] + ([(n // 5, 5)] if n % 5 == 0 else [])
    return x.reshape(draw(st.sampled_from(shapes)))


def any_arrays(elements=BOUNDED):
    return st.one_of(small_arrays(elements), grad_arrays())


def enc(c, x, **kw) -> bytes:
    return bytes(c.encode(x, **kw))


def check_payload(c, x, payload: bytes) -> dict:
    """decode == the reference decoder, bit for bit; shape and dtype as x."""
    got = c.decode(payload)
    assert isinstance(got, np.ndarray) and got.dtype == F32
    assert got.shape == np.shape(x)
    ref = ref_container(payload)
    assert tuple(ref["shape"]) == np.shape(x)
    np.testing.assert_array_equal(got.view(np.uint32), ref["out"].view(np.uint32))
    return ref


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------
# 1. Every compressor: shapes, container structure, reference decoder agreement.

FACTORIES = {
    "fp16": lambda: ringpress.FP16(),
    "bf16": lambda: ringpress.BF16(),
    "int8": lambda: ringpress.Quantize(bits=8, block=64),
    "int4": lambda: ringpress.Quantize(bits=4, block=100),
    "int2": lambda: ringpress.Quantize(bits=2, block=7),
    "int4_stoch": lambda: ringpress.Quantize(bits=4, block=64, stochastic=True, seed=3),
    "sign": lambda: ringpress.Sign(block=33),
    "ternary": lambda: ringpress.Ternary(block=50, seed=5),
    "topk_exact": lambda: ringpress.TopK(ratio=0.05, method="exact"),
    "topk_sampled": lambda: ringpress.TopK(ratio=0.05),
    "topk_fp16": lambda: ringpress.TopK(ratio=0.1, method="exact", values="fp16"),
    "randomk": lambda: ringpress.RandomK(ratio=0.1, seed=9),
    "threshold": lambda: ringpress.Threshold(threshold=1e-3),
}
EXPECT_METHOD = {
    "fp16": (FP16, 16, 0),
    "bf16": (BF16, 16, 0),
    "int8": (INT, 8, 64),
    "int4": (INT, 4, 100),
    "int2": (INT, 2, 7),
    "int4_stoch": (INT, 4, 64),
    "sign": (SIGN, 1, 33),
    "ternary": (TERNARY, 2, 50),
    "topk_exact": (SPARSE, 32, 0),
    "topk_sampled": (SPARSE, 32, 0),
    "topk_fp16": (SPARSE, 16, 0),
    "randomk": (SPARSE, 32, 0),
    "threshold": (SPARSE, 32, 0),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize(
    "shape", [(), (0,), (3, 0, 2), (1,), (7,), (1000,), (8, 125), (2, 3, 4, 5)], ids=str
)
def test_container_structure_and_reference_decode(name, shape):
    x = gradient(math.prod(shape), seed=len(shape), kind="heavy").reshape(shape)
    c = FACTORIES[name]()
    payload = enc(c, x)
    ref = check_payload(c, x, payload)
    method, bits, block = EXPECT_METHOD[name]
    assert (ref["method"], ref["bits"], ref["block"]) == (method, bits, block)
    cont = parse_container(payload)
    assert cont.shape == tuple(shape) and cont.magic == CMAGIC
    for sec in cont.sections:  # no lossless stage without a Pipeline
        assert ref_parse(sec).codec == 0
    if name.startswith(("topk", "randomk")):
        n = math.prod(shape)
        ratio = 0.1 if name in ("topk_fp16", "randomk") else 0.05
        ks = k_of(ratio, n)
        if name == "topk_sampled":
            assert min(ks) <= len(ref["idx"]) <= math.ceil(max(ks) * 1.05)
        else:
            assert len(ref["idx"]) in ks


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_inputs_torch_noncontiguous_threads_out(name):
    x = gradient(20000, seed=2, kind="heavy").reshape(200, 100)
    base = enc(FACTORIES[name](), x)
    assert enc(FACTORIES[name](), torch.from_numpy(x.copy())) == base
    assert enc(FACTORIES[name](), x, threads=2) == base  # bit-identical for any thread count
    c = FACTORIES[name]()
    dec = c.decode(base)
    # decode accepts bytes-like objects
    for buf in (bytearray(base), memoryview(base)):
        np.testing.assert_array_equal(c.decode(buf), dec)
    # out=: overwritten entirely (not accumulated into), numpy or torch
    out = np.full((200, 100), 7.0, F32)
    c.decode(base, out=out)
    np.testing.assert_array_equal(out.view(np.uint32), dec.view(np.uint32))
    t = torch.full((200, 100), -3.0)
    c.decode(base, out=t)
    np.testing.assert_array_equal(t.numpy().view(np.uint32), dec.view(np.uint32))
    with pytest.raises(ringpress.UsageError):
        c.decode(base, out=np.zeros((200, 99), F32))
    with pytest.raises(ringpress.UsageError):
        c.decode(base, out=np.zeros((200, 100), np.float64))
    # a non-contiguous view: rejected as a usage error, or encoded as its contiguous copy
    view = x[:, ::2]
    try:
        got = enc(FACTORIES[name](), view)
    except ringpress.UsageError:
        pass
    else:
        assert got == enc(FACTORIES[name](), np.ascontiguousarray(view))


# --------------------------------------------------------------------------------------------
# 2. Error bounds and exactness per method.


@SETTINGS
@given(x=st.one_of(small_arrays(st.floats(width=32)), grad_arrays()))
def test_fp16_bf16_bit_exact(x):
    for c, ref in ((ringpress.FP16(), fp16_ref), (ringpress.BF16(), bf16_ref)):
        payload = enc(c, x)
        got = check_payload(c, x, payload)["out"]
        np.testing.assert_array_equal(got.ravel().view(np.uint32), ref(x))


def test_fp16_bf16_special_values():
    x = np.array(
        [
            65504,
            65519.99,
            65520,
            -65520,
            1e-8,
            2.0**-24,
            2.0**-25,
            3 * 2.0**-26,
            np.inf,
            -np.inf,
            np.nan,
            -np.nan,
            FLT_MAX,
            -0.0,
            TINY,
            np.float32(1.0) + np.float32(2.0**-8),
        ],
        F32,
    )
    x = np.concatenate(
        [x, np.array([0x7F800001, 0xFFA12345, 0x7FBFFFFF], np.uint32).view(F32)]
    )  # signalling NaNs with payloads
    for c, ref in ((ringpress.FP16(), fp16_ref), (ringpress.BF16(), bf16_ref)):
        got = c.decode(enc(c, x))
        np.testing.assert_array_equal(got.view(np.uint32), ref(x))


def near_tie_blocks(qmax: int, tiny: bool) -> np.ndarray:
    """Blocks [m, x] where float32 rounds x * (qmax / m) onto a half-integer that the exact product
    misses: a kernel that fuses the multiply into its rounding add (FMA contraction) gets a
    different code than the unfused float32 arithmetic the format specifies."""
    pre = F32(2.0**64) if tiny else F32(1)
    out = []
    for m in np.float32(np.linspace(1.1, 9.7, 4000)) * (F32(2.0**-120) if tiny else F32(1)):
        inv = F32(qmax) / (m * pre)
        for k in range(qmax):
            x0 = F32((k + 0.5) / (float(inv) * float(pre)))
            for x in (x0, np.nextafter(x0, F32(0)), np.nextafter(x0, F32(np.inf))):
                v32 = (x * pre) * inv
                exact = float(x * pre) * float(inv)
                if abs(float(x)) < float(m) and v32 == k + 0.5 and exact != k + 0.5:
                    out.append((m, x))
        if len(out) >= 64:
            break
    return np.array(out, F32)


@pytest.mark.parametrize("tiny", [False, True], ids=["normal", "subnormal"])
@pytest.mark.parametrize("bits", [8, 4])
def test_int_codes_are_unfused_float32(bits, tiny):
    # Regression (CI, hypothesis): a 4-bit block of subnormals got code -1 instead of -2 because
    # the AVX-512 copy contracted (x * inv) + magic into one FMA. The codes are part of the wire
    # contract: every rank must produce them whatever ISA its dispatcher picked.
    pairs = near_tie_blocks(QMAX[bits], tiny)
    assert len(pairs) >= 8, "the search must find near-tie inputs to be a test at all"
    x = pairs.ravel()
    c = ringpress.Quantize(bits=bits, block=2)
    got = check_payload(c, x, enc(c, x))["q"]
    np.testing.assert_array_equal(got, ref_blockwise(x, bits, 2)[1])


@SETTINGS
@given(x=any_arrays(), bits=st.sampled_from([8, 4, 2]), block=st.sampled_from([1, 3, 8, 64, 512]))
def test_int_nearest_exact_codes_and_bound(x, bits, block):
    c = ringpress.Quantize(bits=bits, block=block)
    ref = check_payload(c, x, enc(c, x))
    scales, q = ref_blockwise(x, bits, block)
    np.testing.assert_array_equal(ref["scales"].view(np.uint32), scales.view(np.uint32))
    np.testing.assert_array_equal(ref["q"], q)
    flat = x.ravel().astype(np.float64)
    s = per_elem(scales, block, flat.size).astype(np.float64)
    err = np.abs(flat - ref["out"].ravel())
    assert np.all(err <= s / 2 + 1e-6 * np.abs(flat) + (QMAX[bits] + 1) * TINY)


@SETTINGS
@given(
    x=any_arrays(),
    bits=st.sampled_from([8, 4, 2]),
    block=st.sampled_from([1, 5, 64, 512]),
    seed=st.integers(0, 2**64 - 1),
)
def test_int_stochastic_bound(x, bits, block, seed):
    c = ringpress.Quantize(bits=bits, block=block, stochastic=True, seed=seed)
    for _ in range(2):
        ref = check_payload(c, x, enc(c, x))
        scales, _ = ref_blockwise(x, bits, block)
        np.testing.assert_array_equal(ref["scales"].view(np.uint32), scales.view(np.uint32))
        flat = x.ravel().astype(np.float64)
        s = per_elem(scales, block, flat.size).astype(np.float64)
        err = np.abs(flat - ref["out"].ravel())
        assert np.all(err <= s * (1 + 1e-6) + 1e-6 * np.abs(flat) + (QMAX[bits] + 1) * TINY)
        assert np.all(np.abs(ref["q"]) <= QMAX[bits])


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_int_stochastic_first_call_uses_documented_stream(bits):
    """quantize.h: u = prng_u32(seed, offset + i) >> 8; a fresh object's first call is the
    stream of `seed` itself (offset 0)."""
    x = gradient(3001, seed=4, kind="heavy")
    for seed in (0, 12345, 2**64 - 1):
        ref = ref_container(
            enc(ringpress.Quantize(bits=bits, block=256, stochastic=True, seed=seed), x)
        )
        _, q = ref_blockwise(x, bits, 256, seed=seed)
        np.testing.assert_array_equal(ref["q"], q)


def test_int_large_magnitudes_overflow_on_dequant():
    """m = FLT_MAX: scale = FLT_MAX/127 and 127*scale rounds past FLT_MAX, so the documented
    dequant x' = q*scale gives inf for int8 (a spec edge: the bound |x - x'| <= scale/2 fails)."""
    x = np.array([FLT_MAX, -FLT_MAX, 1.0, 0.0], F32)
    for bits in (8, 4, 2):
        c = ringpress.Quantize(bits=bits, block=4)
        out = check_payload(c, x, enc(c, x))["out"]
        assert np.all(np.isfinite(out)), f"int{bits}: {out}"


@SETTINGS
@given(x=any_arrays(FINITE), block=st.sampled_from([1, 2, 8, 33, 512]))
def test_sign_scale_is_block_mean(x, block):
    c = ringpress.Sign(block=block)
    ref = check_payload(c, x, enc(c, x))
    flat = x.ravel()
    n = flat.size
    np.testing.assert_array_equal(ref["q"], np.signbit(flat).astype(np.int64))  # -0 negative
    a = np.abs(flat).astype(np.float64)
    means = np.array([a[i : i + block].mean() for i in range(0, n, block)]).astype(F32)
    with np.errstate(over="ignore"):  # spacing(FLT_MAX) is inf
        ulp = np.spacing(np.maximum(means, TINY).astype(F32)).astype(np.float64)
    assert np.all(np.abs(ref["scales"].astype(np.float64) - means) <= 2 * ulp)
    s = per_elem(ref["scales"], block, n)
    np.testing.assert_array_equal(ref["out"].ravel(), np.where(np.signbit(flat), -s, s))


@SETTINGS
@given(x=any_arrays(FINITE), block=st.sampled_from([1, 4, 50, 512]), seed=st.integers(0, 2**64 - 1))
def test_ternary_is_stochastic_int2(x, block, seed):
    t = ringpress.Ternary(block=block, seed=seed)
    q2 = ringpress.Quantize(bits=2, block=block, stochastic=True, seed=seed)
    for _ in range(2):  # the first and a later call
        a, b = enc(t, x), enc(q2, x)
        ra, rb = check_payload(t, x, a), ref_container(b)
        assert parse_container(a).sections == parse_container(b).sections
        np.testing.assert_array_equal(ra["out"], rb["out"])
        flat = x.ravel()
        m = np.array([np.abs(flat[i : i + block]).max() for i in range(0, flat.size, block)], F32)
        np.testing.assert_array_equal(ra["scales"], m.reshape(-1))
        q = ra["q"]
        assert np.all(np.isin(q, (-1, 0, 1)))
        assert np.all((q == 0) | (np.sign(q) == np.sign(flat)))
        s = per_elem(m, block, flat.size)
        full = (np.abs(flat) == s) & (s > 0)
        np.testing.assert_array_equal(q[full], np.sign(flat[full]))  # p = 1 is certain


# --------------------------------------------------------------------------------------------
# 3. Sparsification.


def check_sparse(x, ref, values_fp16=False):
    flat = np.asarray(x, F32).ravel()
    idx = ref["idx"]
    assert np.all(np.diff(idx) > 0) and (idx.size == 0 or (idx[0] >= 0 and idx[-1] < flat.size))
    want = flat[idx]
    if values_fp16:
        want = fp16_ref(want).view(F32)
    np.testing.assert_array_equal(ref["values"].view(np.uint32), want.view(np.uint32))
    dense = np.zeros(flat.size, F32)
    dense[idx] = want
    np.testing.assert_array_equal(ref["out"].ravel().view(np.uint32), dense.view(np.uint32))
    return idx


@SETTINGS
@given(x=any_arrays(FINITE), ratio=st.floats(1e-4, 1.0), fp16=st.booleans())
def test_topk_exact(x, ratio, fp16):
    c = ringpress.TopK(ratio=ratio, method="exact", values="fp16" if fp16 else "fp32")
    ref = check_payload(c, x, enc(c, x))
    assert ref["bits"] == (16 if fp16 else 32)
    idx = check_sparse(x, ref, fp16)
    assert len(idx) in k_of(ratio, x.size)
    np.testing.assert_array_equal(idx, topk_ref(x, len(idx)))


@pytest.mark.parametrize("kind", ["normal", "heavy", "sparse", "ties", "int_ties"])
@pytest.mark.parametrize("tolerance", [0.05, 0.0, 0.5])
def test_topk_sampled_large(kind, tolerance):
    """n > 4 * sample_size takes the sampled path: an exact top-m, k <= m <= ceil(k(1+tol))."""
    n = 400_003
    if kind == "int_ties":  # ~5% of elements at each magnitude: the threshold sits in a tie
        x = np.random.default_rng(1).integers(-20, 21, n).astype(F32)
    else:
        x = gradient(n, seed=11, kind=kind)
    c = ringpress.TopK(ratio=0.01, tolerance=tolerance)
    ref = check_payload(c, x, enc(c, x))
    idx = check_sparse(x, ref)
    (k,) = k_of(0.01, n)
    m = len(idx)
    assert k <= m <= math.ceil(k * (1 + tolerance))
    a = np.abs(x)
    sel = np.zeros(n, bool)
    sel[idx] = True
    t = a[sel].min()
    assert sel.all() or t >= a[~sel].max()  # every returned |x| >= every other
    if m > k:  # a threshold set: all ties at t included
        assert not np.any(a[~sel] == t)
    else:  # exactly k: ties at the threshold broken by lowest index
        np.testing.assert_array_equal(idx, topk_ref(x, k))


@SETTINGS
@given(
    x=any_arrays(FINITE),
    t=st.one_of(st.sampled_from([0.0, -0.0, TINY, 0.25, 1e-3]), st.floats(0, 1e3, width=32)),
)
def test_threshold_exact(x, t):
    c = ringpress.Threshold(threshold=t)
    ref = check_payload(c, x, enc(c, x))
    idx = check_sparse(x, ref)
    np.testing.assert_array_equal(idx, np.flatnonzero(np.abs(x.ravel()) >= F32(t)))


@SETTINGS
@given(
    x=any_arrays(st.floats(width=32)), ratio=st.floats(1e-4, 1.0), seed=st.integers(0, 2**64 - 1)
)
def test_randomk_distinct_reproducible_nan_passthrough(x, ratio, seed):
    c = ringpress.RandomK(ratio=ratio, seed=seed)
    p1, p2 = enc(c, x), enc(c, x)
    for p in (p1, p2):
        idx = check_sparse(x, check_payload(c, x, p))  # values bit-exact, NaN included
        assert len(idx) in k_of(ratio, x.size)
    c2 = ringpress.RandomK(ratio=ratio, seed=seed)
    assert enc(c2, x) == p1 and enc(c2, x) == p2


def test_randomk_streams_and_uniformity():
    x = np.arange(1, 101, dtype=F32)
    c = ringpress.RandomK(ratio=0.1, seed=1)
    counts = np.zeros(100)
    payloads = set()
    for _ in range(2000):
        p = enc(c, x)
        payloads.add(p)
        counts[ref_container(p)["idx"]] += 1
    assert len(payloads) > 1900  # fresh stream per call
    assert np.all(np.abs(counts - 200) < 80), counts  # ~6 sigma
    assert enc(ringpress.RandomK(ratio=0.1, seed=2), x) != enc(
        ringpress.RandomK(ratio=0.1, seed=1), x
    )


# --------------------------------------------------------------------------------------------
# 4. Stochastic compressors: unbiased over fresh streams; reproducible per seed.


def _mean_of_calls(c, x, calls: int) -> np.ndarray:
    acc = np.zeros(x.size, np.float64)
    for _ in range(calls):
        acc += c.decode(enc(c, x)).ravel()
    return acc / calls


@pytest.mark.parametrize("which", ["int4", "int8", "int2", "ternary"])
def test_stochastic_unbiased(which):
    R, block = 3000, 64
    x = gradient(512, seed=21, kind="heavy")
    if which == "ternary":
        c, bits = ringpress.Ternary(block=block, seed=77), 2
    else:
        bits = int(which[3:])
        c = ringpress.Quantize(bits=bits, block=block, stochastic=True, seed=77)
    scales, _ = ref_blockwise(x, bits, block)
    s = per_elem(scales, block, x.size).astype(np.float64)
    v = x / s
    p = v - np.floor(v)
    mean = _mean_of_calls(c, x, R)
    dev = np.abs(mean - x) / s
    bound = 6 * np.sqrt(p * (1 - p) / R) + 4 / R + 1e-6
    assert np.all(dev <= bound), np.max(dev / bound)
    z = np.sum(mean - x) / np.sqrt(np.sum(p * (1 - p) * s * s) / R)
    assert abs(z) < 5


@pytest.mark.parametrize("name", ["int4_stoch", "ternary", "randomk", "topk_sampled"])
def test_same_seed_reproduces_payload_sequence(name):
    x = gradient(300_000 if name == "topk_sampled" else 5000, seed=8, kind="heavy")
    a, b = FACTORIES[name](), FACTORIES[name]()
    seq_a = [enc(a, x) for _ in range(3)]
    seq_b = [enc(b, x) for _ in range(3)]
    assert seq_a == seq_b
    if name != "topk_sampled":  # the sample may only move the cost, not the selection
        assert len(set(seq_a)) == 3


# --------------------------------------------------------------------------------------------
# 5. Error feedback.

EF_FACTORIES = {
    "pipe_topk": lambda: ringpress.Pipeline(ringpress.TopK(ratio=0.05, method="exact")),
    "topk": lambda: ringpress.TopK(ratio=0.05, method="exact"),
    "topk_sampled_fp16": lambda: ringpress.TopK(ratio=0.05, values="fp16"),
    "int4": lambda: ringpress.Quantize(bits=4, block=64),
    "int2_stoch": lambda: ringpress.Quantize(bits=2, block=64, stochastic=True, seed=4),
    "sign": lambda: ringpress.Sign(block=64),
    "ternary": lambda: ringpress.Ternary(block=64, seed=1),
    "randomk": lambda: ringpress.RandomK(ratio=0.05, seed=2),
    "fp16": lambda: ringpress.FP16(),
}


@pytest.mark.parametrize("name", sorted(EF_FACTORIES))
def test_error_feedback_conserves_mass(name):
    ef = ringpress.ErrorFeedback(EF_FACTORIES[name]())
    rng = np.random.default_rng(5)
    shapes = {"w": (40, 25), "b": (7,)}
    sums = {k: np.zeros(s) for k, s in shapes.items()}
    absum = {k: np.zeros(s) for k, s in shapes.items()}
    dec = {k: np.zeros(s) for k, s in shapes.items()}
    for _t in range(30):
        for key, shape in shapes.items():  # two keys interleaved: independent residuals
            x = (rng.standard_t(3, shape) * 10.0 ** rng.integers(-4, 1)).astype(F32)
            p = ef.encode(x, key=key)
            d = ef.decode(p)
            assert d.shape == shape
            sums[key] += x
            absum[key] += np.abs(x)
            dec[key] += d
    for key in shapes:
        r = ef.residual(key)
        assert r.shape == shapes[key] and r.dtype == F32
        err = np.abs(dec[key] + r - sums[key])
        assert np.all(err <= 1e-5 * absum[key] + 1e-30), (key, np.max(err / absum[key]))
        r[...] = 123.0  # a copy: the state is not touched
        assert not np.any(ef.residual(key) == 123.0)


def test_error_feedback_first_step_is_plain_encode_and_residual_definition():
    x = gradient(1000, seed=3, kind="heavy")
    ef = ringpress.ErrorFeedback(ringpress.TopK(ratio=0.1, method="exact"))
    p = ef.encode(x)  # default key
    assert bytes(p) == enc(ringpress.TopK(ratio=0.1, method="exact"), x)
    np.testing.assert_array_equal(ef.residual("default"), x - ef.decode(p))
    x2 = gradient(1000, seed=4, kind="heavy")
    p2 = ef.encode(x2)
    want = enc(ringpress.TopK(ratio=0.1, method="exact"), (x2 + (x - ef.decode(p))).astype(F32))
    assert bytes(p2) == want


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, float, bool, bytes, np.ndarray, np.generic))


@pytest.mark.parametrize("name", ["topk", "int4", "sign", "int2_stoch", "ternary", "randomk"])
def test_error_feedback_state_dict_roundtrip(name):
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((30, 20)).astype(F32) for _ in range(6)]
    ef = ringpress.ErrorFeedback(EF_FACTORIES[name]())
    for x in xs[:4]:
        ef.encode(x, key="a")
        ef.encode(x[:5], key="b")
    sd = ef.state_dict()
    assert _plain(sd), sd
    blob = pickle.dumps(sd)
    ef2 = ringpress.ErrorFeedback(EF_FACTORIES[name]())
    ef2.load_state_dict(pickle.loads(blob))
    for key, x in (("a", xs[4]), ("b", xs[4][:5]), ("a", xs[5])):
        np.testing.assert_array_equal(ef2.residual(key), ef.residual(key))
        assert bytes(ef2.encode(x, key=key)) == bytes(ef.encode(x, key=key)), key
    # the snapshot is a copy: the original's later steps did not change it
    assert pickle.dumps(sd) == blob


# --------------------------------------------------------------------------------------------
# 6. Pipeline (lossy + lossless).


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_pipeline_changes_nothing_but_size(name, codec):
    x = gradient(50_000, seed=12, kind="heavy").reshape(100, 500)
    plain = enc(FACTORIES[name](), x)
    pipe = ringpress.Pipeline(FACTORIES[name](), codec=codec, level=3)
    piped = enc(pipe, x)
    a = FACTORIES[name]().decode(plain)
    b = pipe.decode(piped)
    np.testing.assert_array_equal(b.view(np.uint32), a.view(np.uint32))
    ref = check_payload(pipe, x, piped)
    np.testing.assert_array_equal(ref["out"].view(np.uint32), a.view(np.uint32))
    # any compressor's decode reads any container (sections carry their own codec)
    np.testing.assert_array_equal(FACTORIES[name]().decode(piped), a)
    want_codec = {"zstd": 2, "lz4": 1, "none": 0}[codec]
    assert {ref_parse(s).codec for s in parse_container(piped).sections} == {want_codec}
    assert len(piped) <= len(plain) + 64 * len(parse_container(piped).sections)


@pytest.mark.parametrize(
    "name,make",
    [
        ("int8", lambda: ringpress.Quantize(bits=8, block=512)),
        ("topk_fp16", lambda: ringpress.TopK(ratio=0.01, method="exact", values="fp16")),
        ("sign", lambda: ringpress.Sign(block=512)),
        ("fp16", lambda: ringpress.FP16()),
    ],
)
def test_pipeline_smaller_on_compressible_payloads(name, make):
    x = gradient(400_000, seed=13, kind="heavy")
    plain = enc(make(), x)
    for shuffle in ("auto", "byte"):
        piped = enc(ringpress.Pipeline(make(), codec="zstd", level=3, shuffle=shuffle), x)
        assert len(piped) < len(plain), (name, shuffle, len(piped), len(plain))
    if name == "sign":  # gradient signs are ~1 bit of entropy: nothing to gain, nothing lost
        return
    assert len(enc(ringpress.Pipeline(make()), x)) < 0.97 * len(plain)


def test_pipeline_stochastic_and_threads_match():
    x = gradient(200_000, seed=14, kind="heavy")
    mk = lambda: ringpress.Quantize(bits=4, block=128, stochastic=True, seed=99)  # noqa: E731
    p1 = ringpress.Pipeline(mk())
    p2 = ringpress.Pipeline(mk())
    c = mk()
    for _ in range(2):
        a, b, plain = enc(p1, x), enc(p2, x, threads=2), enc(c, x)
        assert a == b
        np.testing.assert_array_equal(p1.decode(a), c.decode(plain))


# --------------------------------------------------------------------------------------------
# 7. Argument and input validation.

BAD_ARGS = {
    "topk_ratio_0": lambda: ringpress.TopK(ratio=0),
    "topk_ratio_neg": lambda: ringpress.TopK(ratio=-0.1),
    "topk_ratio_over_1": lambda: ringpress.TopK(ratio=1.5),
    "topk_ratio_nan": lambda: ringpress.TopK(ratio=float("nan")),
    "topk_method": lambda: ringpress.TopK(method="approx"),
    "topk_values": lambda: ringpress.TopK(values="bf16"),
    "topk_values_int8": lambda: ringpress.TopK(values="int8"),
    "topk_tolerance_neg": lambda: ringpress.TopK(tolerance=-0.1),
    "randomk_ratio_0": lambda: ringpress.RandomK(ratio=0),
    "randomk_ratio_over_1": lambda: ringpress.RandomK(ratio=1.01),
    "threshold_neg": lambda: ringpress.Threshold(threshold=-1.0),
    "threshold_nan": lambda: ringpress.Threshold(threshold=float("nan")),
    "quantize_bits_3": lambda: ringpress.Quantize(bits=3),
    "quantize_bits_16": lambda: ringpress.Quantize(bits=16),
    "quantize_bits_1": lambda: ringpress.Quantize(bits=1),
    "quantize_block_0": lambda: ringpress.Quantize(block=0),
    "quantize_block_neg": lambda: ringpress.Quantize(block=-4),
    "sign_block_0": lambda: ringpress.Sign(block=0),
    "ternary_block_0": lambda: ringpress.Ternary(block=0),
    "pipeline_codec": lambda: ringpress.Pipeline(ringpress.FP16(), codec="gzip"),
    "pipeline_shuffle": lambda: ringpress.Pipeline(ringpress.FP16(), shuffle="twist"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments(name):
    with pytest.raises(ringpress.UsageError):
        c = BAD_ARGS[name]()  # at construction or, at the latest, on the first encode
        c.encode(np.ones(100, F32))


BAD_INPUTS = {
    "float64": lambda: np.ones(10, np.float64),
    "float16": lambda: np.ones(10, np.float16),
    "int32": lambda: np.ones(10, np.int32),
    "bool": lambda: np.ones(10, bool),
    "torch_float64": lambda: torch.ones(10, dtype=torch.float64),
    "torch_bfloat16": lambda: torch.ones(10, dtype=torch.bfloat16),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_bad_inputs(name):
    c = FACTORIES[name]()
    for what, make in BAD_INPUTS.items():
        with pytest.raises(ringpress.UsageError):
            c.encode(make())
            pytest.fail(what)
    passes_nonfinite = name in ("fp16", "bf16", "randomk")
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(1000, F32)
        x[777] = bad
        if passes_nonfinite:
            check_payload(c, x, enc(c, x))
        elif name.startswith(("topk", "threshold")) and np.isinf(bad):
            # topk.h: only NaN is rejected; +inf is the largest magnitude (see the report:
            # the API brief says Inf -> UsageError). Either way, never a wrong selection.
            try:
                ref = check_payload(c, x, enc(c, x))
            except ringpress.UsageError:
                continue
            assert 777 in ref["idx"]
        else:
            with pytest.raises(ringpress.UsageError):
                c.encode(x)


def test_not_a_container():
    c = ringpress.Quantize()
    frame = bytes(ringpress.compress(np.ones(10, F32)))
    for buf in (b"", b"RPZC", frame, b"\0" * 64):
        with pytest.raises(ringpress.WireFormatError):
            c.decode(buf)


# --------------------------------------------------------------------------------------------
# 8. Malformed containers: well-checksummed, breaking exactly one rule.


def small_x(n=37, shape=None):
    x = gradient(n, seed=17, kind="heavy")
    return x if shape is None else x.reshape(shape)


BASES = {  # small real containers: (factory, input shape)
    "fp16": (lambda: ringpress.FP16(), (37,)),
    "bf16_2d": (lambda: ringpress.BF16(), (5, 8)),
    "int8": (lambda: ringpress.Quantize(bits=8, block=8), (37,)),
    "int4": (lambda: ringpress.Quantize(bits=4, block=8), (37,)),
    "int2": (lambda: ringpress.Quantize(bits=2, block=8), (37,)),
    "sign": (lambda: ringpress.Sign(block=8), (37,)),
    "ternary": (lambda: ringpress.Ternary(block=8, seed=1), (37,)),
    "topk": (lambda: ringpress.TopK(ratio=0.2, method="exact"), (37,)),
    "topk_fp16_2d": (lambda: ringpress.TopK(ratio=0.2, method="exact", values="fp16"), (5, 8)),
    "pipe_int8": (lambda: ringpress.Pipeline(ringpress.Quantize(bits=8, block=8)), (37,)),
}


def base_payload(name: str) -> bytes:
    make, shape = BASES[name]
    return enc(make(), small_x(math.prod(shape), shape))


def frame_of(x) -> bytes:
    return bytes(ringpress.compress(x, codec="none"))


def bytes_frame(data: bytes) -> bytes:
    """A bytes section as the encoders write it: dtype bytes, shape (len,), codec none.
    (ringpress.compress(bytes) writes ndim 0, which the container decoder rejects.)"""
    blocks = [Block(data[i : i + 4096]) for i in range(0, len(data), 4096)]
    return build_frame(blocks, (len(data),), dtype=0, codec=0, level=0, block_size=4096)


def _decoded_sections(c: Container):
    return [ref_decode(s) for s in c.sections]


def header_cases(c: Container) -> dict[str, bytes]:
    n = math.prod(c.shape)
    wrong_bits = sorted({0, 1, 2, 3, 4, 8, 16, 32, 255} - METHOD_BITS[c.method])
    cases = {
        "magic": c.but(magic=b"RPZF"),
        "magic_zero": c.but(magic=bytes(4)),
        "version_0": c.but(version=0),
        "version_2": c.but(version=2),
        "flags_1": c.but(flags=1),
        "flags_0x80": c.but(flags=0x80),
        "reserved_1": c.but(reserved=1),
        "method_0": c.but(method=0),
        "method_7": c.but(method=7),
        "method_255": c.but(method=255),
        "method_version_0": c.but(method_version=0),
        "method_version_2": c.but(method_version=2),
        "dtype_9": c.but(dtype=9),
        "dtype_12": c.but(dtype=12),
        "dtype_0": c.but(dtype=0),
        "ndim_9": c.but(shape=(1,) * 8 + (n,)),
        "ndim_255": c.but(ndim=255),
        "nsections_0": c.but(nsections=0, sizes=[]),
        "nsections_minus_1": c.but(sections=c.sections[:-1]),
        "nsections_plus_1": c.but(sections=[*c.sections, c.sections[-1]]),
        "n_plus_1": c.but(n=n + 1),
        "n_zero": c.but(n=0),
        "shape_plus_1": c.but(shape=(*c.shape[:-1], c.shape[-1] + 1), n=n),
        "shape_and_n_plus_1": c.but(shape=(*c.shape[:-1], c.shape[-1] + 1)),
        "shape_and_n_minus_1": c.but(shape=(*c.shape[:-1], c.shape[-1] - 1)),
        "shape_transposed_n_ok_ndim_lies": c.but(ndim=len(c.shape) + 1),
        "header_check": c.but(header_check=xxh3_32(b"x")),
        "size_too_big": c.but(sizes=[len(s) for s in c.sections[:-1]] + [len(c.sections[-1]) + 1]),
        "size_too_small": c.but(
            sizes=[len(s) for s in c.sections[:-1]] + [len(c.sections[-1]) - 1]
        ),
        "size_u64_max": c.but(sizes=[2**64 - 1] + [len(s) for s in c.sections[1:]]),
        "size_2^63": c.but(sizes=[2**63] + [len(s) for s in c.sections[1:]]),
        "trailing_byte": c.but(trailer=b"\0"),
        "trailing_container": c.but(trailer=c.to_bytes()),
        "truncated_1": c.to_bytes()[:-1],
        "section_0_garbage": c.but(sections=[bytes(len(c.sections[0])), *c.sections[1:]]),
    }
    for b in wrong_bits:
        cases[f"bits_{b}"] = c.but(bits=b)
    if c.method in BLOCKED:
        cases["block_0"] = c.but(block=0)
        cases["block_doubled"] = c.but(block=c.block * 2)  # scales count no longer matches
    else:
        cases["block_1"] = c.but(block=1)
        cases["block_512"] = c.but(block=512)
    if len(c.sections) == 2:
        s0, s1 = map(len, c.sections)
        cases["sizes_shifted_plus"] = c.but(sizes=[s0 + 1, s1 - 1])
        cases["sizes_shifted_minus"] = c.but(sizes=[s0 - 1, s1 + 1])
        cases["sizes_wrap_u64"] = c.but(sizes=[s0 + 2**63, s1 + 2**63])
        cases["sections_swapped"] = c.but(sections=c.sections[::-1])
        cases["section_1_garbage"] = c.but(sections=[c.sections[0], bytes(len(c.sections[1]))])
        cases["section_1_empty_frame"] = c.but(sections=[c.sections[0], frame_of(np.zeros(0, F32))])
    # relabel as every other method (with its own bits/block): the sections no longer fit
    for m, allowed in METHOD_BITS.items():
        for bits in sorted(allowed):
            if (m, bits) == (c.method, c.bits):
                continue
            if {(m, bits), (c.method, c.bits)} == {(INT, 2), (TERNARY, 2)}:
                continue  # identical layouts: a valid container (test below)
            block = (c.block or 8) if m in BLOCKED else 0
            cases[f"as_method_{m}_bits_{bits}"] = c.but(
                method=m, bits=bits, block=block, nsections=None
            )
    return cases


def section_cases(c: Container) -> dict[str, bytes]:
    """Sections rebuilt with ringpress.compress(..., codec="none") of the wrong dtype/shape."""
    n = math.prod(c.shape)
    secs = _decoded_sections(c)
    cases = {}

    def put(name, i, frame):
        s = list(c.sections)
        s[i] = frame
        cases[name] = c.but(sections=s)

    if c.method in (FP16, BF16):
        codes = np.frombuffer(secs[0][2], np.uint16)
        other = "bfloat16" if c.method == FP16 else "float16"
        put(
            "codes_other_half_dtype", 0, bytes(ringpress.compress(codes, codec="none", dtype=other))
        )
        put("codes_as_uint16", 0, frame_of(codes))
        put("codes_as_float32", 0, frame_of(codes.astype(F32)))
        put("codes_as_bytes", 0, frame_of(codes.tobytes()))
        same = "float16" if c.method == FP16 else "bfloat16"
        mk = lambda a: bytes(ringpress.compress(a, codec="none", dtype=same))  # noqa: E731
        put("codes_n_plus_1", 0, mk(np.append(codes, codes[:1])))
        put("codes_n_minus_1", 0, mk(codes[:-1]))
        put("codes_2d", 0, mk(codes.reshape(1, -1)))
        put("codes_scalar_shape", 0, mk(codes[:1].reshape(())))
        if len(c.shape) > 1:
            put("codes_tensor_shape", 0, mk(codes.reshape(c.shape)))
    elif c.method in BLOCKED:
        scales = np.frombuffer(secs[0][2], F32)
        codes = secs[1][2]
        put("scales_float16", 0, frame_of(scales.astype(np.float16)))
        put("scales_float64", 0, frame_of(scales.astype(np.float64)))
        put("scales_int32", 0, frame_of(scales.view(np.int32)))
        put("scales_plus_1", 0, frame_of(np.append(scales, F32(1))))
        put("scales_minus_1", 0, frame_of(scales[:-1]))
        put("scales_2d", 0, frame_of(scales.reshape(1, -1)))
        put("scales_as_bytes", 0, frame_of(scales.tobytes()))
        put("codes_as_uint8", 1, frame_of(np.frombuffer(codes, np.uint8)))
        put("codes_as_int8", 1, frame_of(np.frombuffer(codes, np.int8)))
        put("codes_plus_1_byte", 1, bytes_frame(codes + b"\0"))
        put("codes_minus_1_byte", 1, bytes_frame(codes[:-1]))
        put("codes_empty", 1, bytes_frame(b""))
        put("codes_as_float32", 1, frame_of(np.zeros(len(codes), F32)))
    else:
        stream = secs[0][2]
        idx = ref_indices(stream, n)
        vals_raw = secs[1][2]
        vdt = F32 if c.bits == 32 else np.float16
        vals = np.frombuffer(vals_raw, vdt)
        other = np.float16 if c.bits == 32 else F32
        assert len(idx) >= 3
        put("values_other_dtype", 1, frame_of(vals.astype(other)))
        put("values_float64", 1, frame_of(vals.astype(np.float64)))
        put("values_plus_1", 1, frame_of(np.append(vals, vals[:1])))
        put("values_minus_1", 1, frame_of(vals[:-1]))
        put("values_2d", 1, frame_of(vals.reshape(1, -1)))
        put("values_as_bytes", 1, frame_of(vals.tobytes()))
        put("indices_as_uint8", 0, frame_of(np.frombuffer(stream, np.uint8)))
        put("indices_as_uint32", 0, frame_of(idx.astype(np.uint32)))
        d = deltas_of(idx)
        last = idx[-1]
        put("index_eq_n", 0, bytes_frame(index_stream([*d[:-1], n - idx[-2] - 1])))
        put("index_gt_n", 0, bytes_frame(index_stream([*d[:-1], n + 100])))
        put("index_2^32_minus_1", 0, bytes_frame(index_stream([*d[:-1], M32 - int(idx[-2]) - 1])))
        put(
            "count_plus_1",
            0,
            bytes_frame(index_stream([*d, 0]) if last + 1 < n else index_stream([0, *d])),
        )
        put("count_minus_1", 0, bytes_frame(index_stream(d[:-1])))
        put("count_field_plus_1", 0, bytes_frame(index_stream(d, count=len(d) + 1)))
        put("count_field_minus_1", 0, bytes_frame(index_stream(d, count=len(d) - 1)))
        put("count_gt_n", 0, bytes_frame(index_stream([0] * (n + 1))))
        put("count_u32_max", 0, bytes_frame(index_stream(d, count=M32)))
        # strictly increasing by construction unless the 32-bit sum wraps
        put(
            "non_increasing_wrap",
            0,
            bytes_frame(index_stream([int(idx[0]) + 2, M32 - 2, *d[2:]], widths=[32])),
        )
        put("duplicate_wrap", 0, bytes_frame(index_stream([int(idx[0]), M32, *d[2:]], widths=[32])))
        put("width_33", 0, bytes_frame(index_stream(d, widths=[33])))
        put("width_255", 0, bytes_frame(index_stream(d, widths=[255])))
        put("stream_truncated", 0, bytes_frame(stream[:-1]))
        put("stream_trailing", 0, bytes_frame(stream + b"\0"))
        put("stream_only_count", 0, bytes_frame(stream[:4]))
        put("stream_short_count", 0, bytes_frame(stream[:3]))
        put("stream_empty", 0, bytes_frame(b""))
    return cases


def rebuilt_sections(c: Container) -> list[bytes]:
    """The sections re-encoded unchanged with the builders the malformations use."""
    out = []
    for dtype, shape, raw in _decoded_sections(c):
        if dtype == "bytes":
            out.append(bytes_frame(raw))
        else:
            np_dt = {"bfloat16": np.uint16}.get(dtype, dtype)
            a = np.frombuffer(raw, np_dt).reshape(shape)
            out.append(
                bytes(
                    ringpress.compress(
                        a, codec="none", dtype="bfloat16" if dtype == "bfloat16" else None
                    )
                )
            )
    return out


@pytest.mark.parametrize("base", sorted(BASES))
def test_rebuilt_sections_control(base):
    """Positive control for the malformation builders: unchanged contents still decode."""
    payload = base_payload(base)
    c = parse_container(payload)
    buf = c.but(sections=rebuilt_sections(c))
    want = BASES[base][0]().decode(payload)
    np.testing.assert_array_equal(BASES[base][0]().decode(buf), want)
    np.testing.assert_array_equal(ref_container(buf)["out"], want)


def _ref_accepts(buf) -> bool:
    try:
        ref_container(buf)
    except RefError:
        return False
    return True


def malformed_cases() -> dict[str, bytes]:
    out = {}
    for base in BASES:
        c = parse_container(base_payload(base))
        for name, buf in {**header_cases(c), **section_cases(c)}.items():
            out[f"{base}:{name}"] = buf
    # a consistent shape/n change can leave a valid container (sign: ceil(n/8) unchanged; sparse:
    # a larger universe); those are not malformations
    out = {
        k: v
        for k, v in out.items()
        if not (k.split(":")[1].startswith("shape_and_n") and _ref_accepts(v))
    }
    # sparse with n >= 2^32 (consistent shape and n; sections left as they are)
    c = parse_container(base_payload("topk"))
    out["topk:n_2^32"] = c.but(shape=(2**32,))
    out["topk:n_2^32_2d"] = c.but(shape=(2**16, 2**16))
    return out


MALFORMED = malformed_cases() if hasattr(ringpress, "TopK") else {"api_missing": b""}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_container_rejected(name):
    buf = MALFORMED[name]
    with pytest.raises(RefError):  # the spec-side decoder agrees that the rule is broken
        ref_container(buf)
    base = name.split(":")[0]
    c = BASES[base][0]()
    with pytest.raises(ringpress.WireFormatError):
        c.decode(buf)
    n = math.prod(BASES[base][1])
    with pytest.raises((ringpress.WireFormatError, ringpress.UsageError)):
        c.decode(buf, out=np.zeros(n, F32))


# Valid containers the encoders never write: a decoder must accept them ("anything this document
# does not allow" is rejected, nothing else).


def test_unusual_valid_containers_accepted():
    n = 37
    x = small_x(n)
    # int2 <-> ternary relabel: identical layouts
    for src, dst in ((INT, TERNARY), (TERNARY, INT)):
        name = "int2" if src == INT else "ternary"
        c = parse_container(base_payload(name))
        other = c.but(method=dst)
        np.testing.assert_array_equal(
            ringpress.Quantize().decode(other), ref_container(c.to_bytes())["out"]
        )
    # extreme codes: int2 -2, int4 -8, int8 -128; a zero scale; nonzero unused high bits
    scales = np.array([0.5, 0.0, 1.0, 0.25, 3.0], F32)
    for bits in (2, 4, 8):
        qmin = -(1 << (bits - 1))
        q = np.full(n, qmin, np.int64)
        q[::3] = 1
        codes = pack_codes(q, bits)
        if bits < 8 and (n * bits) % 8:
            codes = codes[:-1] + bytes([codes[-1] | (0xFF << ((n * bits) % 8) & 0xFF)])
        for method in (INT, TERNARY) if bits == 2 else (INT,):
            cont = Container([frame_of(scales), bytes_frame(codes)], (n,), method, bits, 8)
            buf = cont.to_bytes()
            want = (q.astype(F32) * per_elem(scales, 8, n)).astype(F32)
            np.testing.assert_array_equal(ref_container(buf)["out"], want)
            np.testing.assert_array_equal(ringpress.Quantize().decode(buf), want)
    # sign with garbage in the unused bits of the last byte
    bitsb = bytearray(pack_codes(np.signbit(x).astype(np.int64), 1))
    bitsb[-1] |= 0xE0
    buf = Container([frame_of(scales), bytes_frame(bytes(bitsb))], (n,), SIGN, 1, 8).to_bytes()
    np.testing.assert_array_equal(ringpress.Sign().decode(buf), ref_container(buf)["out"])
    # sparse: widths wider than needed, width 0 runs, count 0, blocks of exactly 128
    idx = np.array([0, 1, 2, 3, 10, 36])
    vals = x[idx]
    for stream in (
        index_stream(deltas_of(idx), widths=[32]),
        index_stream(deltas_of(idx), widths=[7]),
    ):
        buf = Container([bytes_frame(stream), frame_of(vals)], (n,), SPARSE, 32, 0).to_bytes()
        want = np.zeros(n, F32)
        want[idx] = vals
        np.testing.assert_array_equal(ringpress.TopK().decode(buf), want)
        np.testing.assert_array_equal(ref_container(buf)["out"], want)
    buf = Container(
        [
            bytes_frame(index_stream(deltas_of(range(4)), widths=[0])),
            frame_of(np.arange(4, dtype=np.float16)),
        ],
        (2, 2),
        SPARSE,
        16,
        0,
    ).to_bytes()
    np.testing.assert_array_equal(
        ringpress.TopK().decode(buf), np.arange(4, dtype=F32).reshape(2, 2)
    )
    buf = Container(
        [bytes_frame(index_stream([])), frame_of(np.zeros(0, F32))], (n,), SPARSE, 32, 0
    ).to_bytes()
    np.testing.assert_array_equal(ringpress.TopK().decode(buf), np.zeros(n, F32))
    big = np.arange(0, 1000, 3)
    assert len(big) > 256
    buf = Container(
        [bytes_frame(index_stream(deltas_of(big))), frame_of(big.astype(F32))],
        (1000,),
        SPARSE,
        32,
        0,
    ).to_bytes()
    want = np.zeros(1000, F32)
    want[big] = big
    np.testing.assert_array_equal(ringpress.TopK().decode(buf), want)
    # sections with a lossless stage built by the spec side (lz4 and zstd, any filter/coding)
    from test_wire_format import LZ4, ZSTD, encode_frame

    n = 4000
    sc = np.repeat(np.array([0.5, 0.25], F32), 250)
    q = np.repeat(np.array([1, -2, 0, 3], np.int64), 1000)
    want = (q.astype(F32) * per_elem(sc, 8, n)).astype(F32)
    for codec in (LZ4, ZSTD):
        sf = encode_frame(
            sc.tobytes(),
            "float32",
            (500,),
            512,
            codec,
            [(1, 2, 0b1000), (0, 1, 0), (2, 1, 0), (0, 0, 0)],
        )
        cf = encode_frame(pack_codes(q, 4), "bytes", (2000,), 256, codec, [(0, 1, 0), (0, 0, 0)])
        buf = Container([sf, cf], (n,), INT, 4, 8).to_bytes()
        np.testing.assert_array_equal(ref_container(buf)["out"], want)
        np.testing.assert_array_equal(ringpress.Quantize().decode(buf), want)


@pytest.mark.parametrize("bad", [-2.0, np.inf, np.nan])
def test_bad_scale_is_rejected(bad):
    """wire-format.md: decoders reject a negative, NaN or infinite scale (never decode it)."""
    n = 16
    scales = np.array([bad, 0.5], F32)
    q = np.tile(np.array([1, -1, 0, 2], np.int64), 4)
    buf = Container([frame_of(scales), bytes_frame(pack_codes(q, 4))], (n,), INT, 4, 8).to_bytes()
    with pytest.raises(ringpress.WireFormatError, match="scale"):
        ringpress.Quantize().decode(buf)


# --------------------------------------------------------------------------------------------
# 9. Every truncation and every single-byte corruption of small real containers.


@pytest.mark.parametrize("base", sorted(BASES))
def test_every_truncation_rejected(base):
    buf = base_payload(base)
    c = BASES[base][0]()
    for n in range(len(buf)):
        try:
            c.decode(buf[:n])
        except ringpress.WireFormatError:
            pass
        else:
            pytest.fail(f"truncation to {n} of {len(buf)} bytes was accepted")


@pytest.mark.parametrize("base", sorted(BASES))
def test_every_single_byte_corruption_rejected(base):
    buf = bytearray(base_payload(base))
    c = BASES[base][0]()
    for i in range(len(buf)):
        for flip in (0xFF, 0x01, 0x80):
            buf[i] ^= flip
            bad = bytes(buf)
            buf[i] ^= flip
            try:
                c.decode(bad)
            except ringpress.WireFormatError:
                pass
            else:
                pytest.fail(f"byte {i} ^ {flip:#x} of {len(buf)} was accepted")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_multi_byte_corruption_rejected(data):
    base = data.draw(st.sampled_from(sorted(BASES)))
    orig = base_payload(base)
    buf = bytearray(orig)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    if bytes(buf) == orig:
        return
    with pytest.raises((ringpress.WireFormatError, ringpress.CodecError)):
        BASES[base][0]().decode(bytes(buf))

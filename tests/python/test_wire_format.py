"""Wire-format conformance (docs/wire-format.md, format version 1).

* ``ref_decode``: an independent pure-Python decoder written from the spec (struct + numpy + the
  ``lz4``/``zstandard``/``xxhash`` packages). Frames made by ``ringpress.compress`` must decode to
  the input's bytes, dtype and shape, and ``ringpress.frame_info`` must agree with its parse.
* ``build_frame``: writes a frame from parts, recomputing header_check and block checksums, so a
  frame can be well-checksummed and break exactly one rule. Every "must"/"rejects" rule of the
  spec has a case here that ``ringpress.decompress`` (and ``frame_info`` for frame-level rules)
  must reject with ``ringpress.WireFormatError``; ``ref_decode`` must reject it too.
* Valid frames the encoder never writes (every filter/coding/plane_mask mix, zstd frames without
  a content size, ...) must be accepted.
* Every single-byte corruption and every truncation of real frames is rejected.
* tests/golden/: frames every future decoder must still read (made by tests/golden/make_golden.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import struct

import lz4.block
import numpy as np
import pytest
import ringpress
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------
# The spec, as tables.

MAGIC = b"RPZF"
HEADER = struct.Struct("<4sBBBBBBbBIQII")  # 32 bytes, offsets as in the spec's header table
ENTRY = struct.Struct("<IBBHQ")  # 16 bytes: stored_size, filter, coding, plane_mask, checksum
assert HEADER.size == 32 and ENTRY.size == 16

DTYPES = {  # code -> (name, size)
    0: ("bytes", 1),
    1: ("uint8", 1),
    2: ("int8", 1),
    3: ("int16", 2),
    4: ("uint16", 2),
    5: ("int32", 4),
    6: ("uint32", 4),
    7: ("int64", 8),
    8: ("uint64", 8),
    9: ("float16", 2),
    10: ("bfloat16", 2),
    11: ("float32", 4),
    12: ("float64", 8),
    13: ("bool", 1),
}
DTYPE_CODE = {name: code for code, (name, _) in DTYPES.items()}
CODEC_NAMES = {0: "none", 1: "lz4", 2: "zstd"}
FILTER_NAMES = {0: "none", 1: "byte", 2: "bit"}
CODING_NAMES = {0: "raw", 1: "whole", 2: "planes"}  # as ringpress.frame_info spells them
NONE, LZ4, ZSTD = 0, 1, 2
F_NONE, F_BYTE, F_BIT = 0, 1, 2
RAW, WHOLE, PLANES = 0, 1, 2
MAX_BLOCK = 1 << 30
# codec_version per codec (spec: 0 for codec none, 1 for lz4 and zstd).
CODEC_VERSION = {NONE: 0, LZ4: 1, ZSTD: 1}
MAX_DIM = 1 << 62
GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


class RefError(ValueError):
    """ref_decode's rejection of a frame the spec does not allow."""


def xxh3(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


# --------------------------------------------------------------------------------------------
# Filters (layouts from csrc/include/ringpress/shuffle.h), both directions.


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def byte_shuffle(data: bytes, s: int) -> bytes:
    n = len(data) // s
    body = _u8(data)[: n * s].reshape(n, s).T
    return body.tobytes() + data[n * s :]


def byte_unshuffle(data: bytes, s: int) -> bytes:
    n = len(data) // s
    body = _u8(data)[: n * s].reshape(s, n).T
    return body.tobytes() + data[n * s :]


def bit_shuffle(data: bytes, s: int) -> bytes:
    n8 = len(data) // s // 8 * 8
    elems = _u8(data)[: n8 * s].reshape(n8, s, 1)
    bits = np.unpackbits(elems, axis=2, bitorder="little")  # [i, b, k]
    planes = bits.transpose(1, 2, 0).reshape(8 * s, n8)  # plane 8*b + k, bit of element i
    return np.packbits(planes, axis=1, bitorder="little").tobytes() + data[n8 * s :]


def bit_unshuffle(data: bytes, s: int) -> bytes:
    n8 = len(data) // s // 8 * 8
    planes = _u8(data)[: n8 * s].reshape(8 * s, n8 // 8)
    bits = np.unpackbits(planes, axis=1, bitorder="little")  # [8*b + k, i]
    bits = bits.reshape(s, 8, n8).transpose(2, 0, 1)  # [i, b, k]
    return np.packbits(bits, axis=2, bitorder="little").tobytes() + data[n8 * s :]


UNFILTER = {F_NONE: lambda d, s: d, F_BYTE: byte_unshuffle, F_BIT: bit_unshuffle}
FILTER = {F_NONE: lambda d, s: d, F_BYTE: byte_shuffle, F_BIT: bit_shuffle}


# --------------------------------------------------------------------------------------------
# Frame model: parse (validating every header/table rule) and serialise (recomputing checks).


@dataclasses.dataclass
class Block:
    data: bytes  # the stored bytes
    filter: int = F_NONE
    coding: int = RAW
    plane_mask: int = 0
    stored_size: int | None = None  # None: len(data)
    checksum: int | None = None  # None: xxh3 of data


@dataclasses.dataclass
class Frame:
    blocks: list[Block]
    shape: tuple[int, ...]
    dtype: int = 11
    magic: bytes = MAGIC
    version: int = 1
    flags: int = 0
    ndim: int | None = None  # None: len(shape)
    codec: int = ZSTD
    codec_version: int | None = None  # None: CODEC_VERSION[codec]
    level: int = 1
    elemsize: int | None = None  # None: the dtype's size
    block_size: int = 4096
    nbytes: int | None = None  # None: prod(shape) * elemsize
    nblocks: int | None = None  # None: len(blocks)
    header_check: int | None = None  # None: computed
    trailer: bytes = b""  # appended after the last block

    def to_bytes(self) -> bytes:
        elemsize = self.elemsize
        if elemsize is None:
            elemsize = DTYPES.get(self.dtype, ("?", 1))[1]
        nbytes = self.nbytes
        if nbytes is None:
            nbytes = math.prod(self.shape) * elemsize
        ndim = len(self.shape) if self.ndim is None else self.ndim
        nblocks = len(self.blocks) if self.nblocks is None else self.nblocks
        cv = self.codec_version
        if cv is None:
            cv = CODEC_VERSION.get(self.codec, 1)
        head = HEADER.pack(
            self.magic,
            self.version,
            self.flags,
            self.dtype,
            ndim,
            self.codec,
            cv,
            self.level,
            elemsize,
            self.block_size,
            nbytes,
            nblocks,
            0,
        )[:28]
        shape = b"".join(struct.pack("<Q", d) for d in self.shape)
        table = b"".join(
            ENTRY.pack(
                len(b.data) if b.stored_size is None else b.stored_size,
                b.filter,
                b.coding,
                b.plane_mask,
                xxh3(b.data) if b.checksum is None else b.checksum,
            )
            for b in self.blocks
        )
        check = self.header_check
        if check is None:
            check = xxh3(head + shape + table) & 0xFFFFFFFF
        data = b"".join(b.data for b in self.blocks)
        return head + struct.pack("<I", check) + shape + table + data + self.trailer


def build_frame(blocks: list[Block], shape: tuple[int, ...], **fields) -> bytes:
    """A frame from parts; header_check and checksums are recomputed unless given."""
    return Frame(list(blocks), tuple(shape), **fields).to_bytes()


def block_lengths(nbytes: int, block_size: int) -> list[int]:
    return [min(block_size, nbytes - off) for off in range(0, nbytes, block_size)]


def ref_parse(buf) -> Frame:
    """Parse and validate header, shape and block table (not the block payloads)."""
    buf = bytes(buf)
    if len(buf) < HEADER.size:
        raise RefError("truncated: no complete header")
    (
        magic,
        version,
        flags,
        dtype,
        ndim,
        codec,
        codec_version,
        level,
        elemsize,
        block_size,
        nbytes,
        nblocks,
        check,
    ) = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise RefError("bad magic")
    if version != 1:
        raise RefError(f"unsupported version {version}")
    if flags:
        raise RefError("nonzero flags")
    if dtype not in DTYPES:
        raise RefError(f"unknown dtype {dtype}")
    if ndim > 8:
        raise RefError(f"ndim {ndim} > 8")
    if codec not in CODEC_NAMES:
        raise RefError(f"unknown codec {codec}")
    if codec_version != CODEC_VERSION[codec]:
        raise RefError(f"codec_version {codec_version}")
    if elemsize != DTYPES[dtype][1]:
        raise RefError("elemsize does not match dtype")
    if block_size == 0 or block_size % elemsize or block_size > MAX_BLOCK:
        raise RefError(f"bad block_size {block_size}")
    if nblocks != -(-nbytes // block_size):
        raise RefError("nblocks != ceil(nbytes / block_size)")
    data_start = HEADER.size + 8 * ndim + ENTRY.size * nblocks
    if len(buf) < data_start:
        raise RefError("truncated: shape or block table")
    shape = struct.unpack_from(f"<{ndim}Q", buf, HEADER.size)
    if any(d > MAX_DIM for d in shape):
        raise RefError("dimension > 2^62")
    if not (dtype == 0 and ndim == 0) and math.prod(shape) * elemsize != nbytes:
        raise RefError("shape does not match nbytes")
    if xxh3(buf[:28] + buf[HEADER.size : data_start]) & 0xFFFFFFFF != check:
        raise RefError("header checksum mismatch")
    blocks, pos = [], data_start
    for i, length in enumerate(block_lengths(nbytes, block_size)):
        size, filt, coding, mask, checksum = ENTRY.unpack_from(buf, HEADER.size + 8 * ndim + 16 * i)
        if filt not in FILTER_NAMES or coding not in CODING_NAMES:
            raise RefError(f"block {i}: unknown filter {filt} / coding {coding}")
        if size > length + 4 * elemsize:
            raise RefError(f"block {i}: stored_size {size} too large")
        if coding != PLANES and mask:
            raise RefError(f"block {i}: plane_mask must be 0")
        if coding == RAW and size != length:
            raise RefError(f"block {i}: raw stored_size {size} != length {length}")
        if coding != RAW and codec == NONE:
            raise RefError(f"block {i}: coded block in a codec-none frame")
        if coding == PLANES and (
            filt != F_BYTE or length % elemsize or elemsize > 16 or mask >> elemsize
        ):
            raise RefError(f"block {i}: bad per-plane block")
        blocks.append(Block(buf[pos : pos + size], filt, coding, mask, None, checksum))
        pos += size
    if len(buf) != pos:
        raise RefError("truncated frame" if len(buf) < pos else "trailing bytes")
    return Frame(
        blocks,
        shape,
        dtype,
        magic,
        version,
        flags,
        ndim,
        codec,
        codec_version,
        level,
        elemsize,
        block_size,
        nbytes,
        nblocks,
        check,
    )


def codec_decode(codec: int, payload: bytes, n: int) -> bytes:
    """One lz4 block / one zstd frame that must decode to exactly n bytes."""
    try:
        if codec == LZ4:
            out = lz4.block.decompress(payload, uncompressed_size=n)
        else:
            declared = zstandard.frame_content_size(payload)
            if declared not in (-1, n):
                raise RefError(f"zstd content size {declared} != {n}")
            out = zstandard.ZstdDecompressor().decompress(
                payload, max_output_size=n, allow_extra_data=False
            )
    except (lz4.block.LZ4BlockError, zstandard.ZstdError) as e:
        raise RefError(f"corrupt payload: {e}") from None
    if len(out) != n:
        raise RefError(f"payload decoded to {len(out)} bytes, expected {n}")
    return out


def decode_block(fr: Frame, blk: Block, length: int) -> bytes:
    data, s = blk.data, fr.elemsize
    if xxh3(data) != blk.checksum:
        raise RefError("block checksum mismatch")
    if blk.coding == RAW:
        filtered = data
    elif blk.coding == WHOLE:
        filtered = codec_decode(fr.codec, data, length)
    else:
        if len(data) < 4 * s:
            raise RefError("per-plane block shorter than its plane sizes")
        sizes = struct.unpack_from(f"<{s}I", data)
        if sum(sizes) != len(data) - 4 * s:
            raise RefError("plane sizes do not add up")
        planes, pos, n = [], 4 * s, length // s
        for b, size in enumerate(sizes):
            plane = data[pos : pos + size]
            pos += size
            if blk.plane_mask >> b & 1:
                plane = codec_decode(fr.codec, plane, n)
            elif size != n:
                raise RefError(f"raw plane {b} has {size} bytes, expected {n}")
            planes.append(plane)
        filtered = b"".join(planes)
    return UNFILTER[blk.filter](filtered, s)


def ref_decode(frame) -> tuple[str, tuple[int, ...], bytes]:
    """Independent decoder: (dtype name, shape, decoded bytes), or RefError."""
    fr = ref_parse(frame)
    lengths = block_lengths(fr.nbytes, fr.block_size)
    raw = b"".join(decode_block(fr, b, n) for b, n in zip(fr.blocks, lengths, strict=False))
    assert len(raw) == fr.nbytes
    return DTYPES[fr.dtype][0], fr.shape, raw


# --------------------------------------------------------------------------------------------
# A spec-side encoder for valid frames the ringpress encoder may never write.


def codec_encode(codec: int, data: bytes, **zstd_kw) -> bytes:
    if codec == LZ4:
        return lz4.block.compress(data, store_size=False)
    return zstandard.ZstdCompressor(**zstd_kw).compress(data)


def planes_payload(planes: list[bytes]) -> bytes:
    return struct.pack(f"<{len(planes)}I", *map(len, planes)) + b"".join(planes)


def encode_block(
    raw: bytes, s: int, codec: int, filt: int, coding: int, mask: int = 0, **zstd_kw
) -> Block:
    f = FILTER[filt](raw, s)
    if coding == RAW:
        return Block(f, filt, RAW)
    if coding == WHOLE:
        return Block(codec_encode(codec, f, **zstd_kw), filt, WHOLE)
    n = len(f) // s
    planes = [f[b * n : (b + 1) * n] for b in range(s)]
    planes = [
        codec_encode(codec, p, **zstd_kw) if mask >> b & 1 else p for b, p in enumerate(planes)
    ]
    return Block(planes_payload(planes), filt, PLANES, mask)


def encode_frame(
    raw: bytes, dtype: str, shape, block_size: int, codec: int, plans, **fields
) -> bytes:
    """plans: (filter, coding, mask) per block, cycled."""
    s = DTYPES[DTYPE_CODE[dtype]][1]
    blocks = []
    for i, off in enumerate(range(0, len(raw), block_size)):
        filt, coding, mask = plans[i % len(plans)]
        chunk = raw[off : off + block_size]
        blk = encode_block(chunk, s, codec, filt, coding, mask)
        if len(blk.data) > len(chunk) + 4 * s:  # tiny last block: coding would break the bound
            assert len(chunk) < 64
            blk = encode_block(chunk, s, codec, filt, RAW)
        blocks.append(blk)
    return build_frame(
        blocks,
        tuple(shape),
        dtype=DTYPE_CODE[dtype],
        codec=codec,
        block_size=block_size,
        nbytes=len(raw),
        **fields,
    )


# --------------------------------------------------------------------------------------------
# Inputs.


def sample(kind: str, n: int = 5003, seed: int = 0):
    """(array or bytes, wire dtype override) for one kind of input."""
    rng = np.random.default_rng(seed)
    if kind == "f32_normal":
        return (rng.standard_normal(n) * 1e-3).astype(np.float32), None
    if kind == "f32_heavy":
        return (rng.standard_t(2.5, n) * 1e-3).astype(np.float32).reshape(-1, 1), None
    if kind == "f32_sparse":
        x = np.zeros(n, np.float32)
        idx = rng.choice(n, size=n // 100, replace=False)
        x[idx] = rng.standard_normal(idx.size).astype(np.float32)
        return x, None
    if kind == "f16":
        return rng.standard_normal(n).astype(np.float16), None
    if kind == "bf16":
        f = (rng.standard_normal(n) * 1e-2).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16), "bfloat16"
    if kind == "int8":
        return np.clip(rng.normal(0, 6, n), -128, 127).astype(np.int8), None
    if kind == "int64":
        return rng.integers(-1000, 1000, n).astype(np.int64).reshape(1, -1), None
    if kind == "bool_2d":
        return (rng.random((n // 7, 7)) < 0.1), None
    if kind == "bytes":
        words = [b"ring", b"press", b"frame", b"block", b" ", b"\n", bytes(rng.bytes(3))]
        return b"".join(words[i] for i in rng.integers(0, len(words), n)), None
    raise AssertionError(kind)


KINDS = [
    "f32_normal",
    "f32_heavy",
    "f32_sparse",
    "f16",
    "bf16",
    "int8",
    "int64",
    "bool_2d",
    "bytes",
]
CODECS = ["zstd", "lz4", "none"]
SHUFFLES = ["auto", "byte", "bit", "none"]


def expected(x, wire):
    """(dtype name, shape, bytes) ref_decode must return for compress(x, dtype=wire)."""
    if isinstance(x, bytes):
        return "bytes", (), x
    return wire or x.dtype.name, x.shape, x.tobytes()


def elemsize_of(x) -> int:
    return 1 if isinstance(x, bytes) else x.dtype.itemsize


def check_frame_info(frame, fr: Frame):
    info = ringpress.frame_info(frame)
    assert info["version"] == fr.version
    assert info["dtype"] == DTYPES[fr.dtype][0]
    assert tuple(info["shape"]) == fr.shape and info["ndim"] == fr.ndim
    assert info["codec"] == CODEC_NAMES[fr.codec] and info["level"] == fr.level
    assert info["elemsize"] == fr.elemsize and info["block_size"] == fr.block_size
    assert info["nbytes"] == fr.nbytes and info["nblocks"] == fr.nblocks == len(fr.blocks)
    assert info["frame_size"] == len(frame)
    lengths = block_lengths(fr.nbytes, fr.block_size)
    got = [
        (b["stored_size"], b["length"], b["filter"], b["coding"], b["plane_mask"])
        for b in info["blocks"]
    ]
    want = [
        (len(b.data), n, FILTER_NAMES[b.filter], CODING_NAMES[b.coding], b.plane_mask)
        for b, n in zip(fr.blocks, lengths, strict=False)
    ]
    assert got == want


# --------------------------------------------------------------------------------------------
# 1. Frames from ringpress.compress decode with the independent decoder.


def test_filters_invert_and_match_documented_layout():
    rng = np.random.default_rng(1)
    for s in (1, 2, 3, 4, 8):
        for nbytes in (0, 1, s * 7, s * 8, s * 8 + 1, s * 67 + (s - 1)):
            data = rng.bytes(nbytes)
            assert byte_unshuffle(byte_shuffle(data, s), s) == data
            assert bit_unshuffle(bit_shuffle(data, s), s) == data
    # byte shuffle: out[b*n + i] = in[i*s + b]; remainder verbatim.
    assert byte_shuffle(bytes([0, 1, 2, 3, 4, 5, 9]), 2) == bytes([0, 2, 4, 1, 3, 5, 9])
    # bit shuffle, s = 1, 8 elements: plane k byte 0 bit i = bit k of element i.
    elems = bytes([1, 0, 0, 0, 0, 0, 0, 0x81])
    out = bit_shuffle(elems + b"\x7f", 1)
    assert out[0] == 0b10000001 and out[7] == 0b10000000 and out[1:7] == bytes(6)
    assert out[8:] == b"\x7f"


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", KINDS)
def test_ref_decode_reads_ringpress_frames(kind, codec, shuffle):
    x, wire = sample(kind)
    s = elemsize_of(x)
    for block_size in (4096, 1000 * s):
        frame = bytes(
            ringpress.compress(x, codec=codec, shuffle=shuffle, block_size=block_size, dtype=wire)
        )
        assert ref_decode(frame) == expected(x, wire)
        fr = ref_parse(frame)
        assert fr.nblocks >= 2 and block_lengths(fr.nbytes, block_size)[-1] < block_size
        check_frame_info(frame, fr)
        assert fr.to_bytes() == frame  # the builder reproduces real frames byte for byte


def test_ringpress_frames_cover_every_filter_and_coding():
    """The matrix above exercises all block kinds; auto picks differently for sparse data."""
    seen, auto_seen = set(), {}
    for kind in KINDS:
        x, wire = sample(kind)
        for codec in ("zstd", "lz4"):
            for shuffle in SHUFFLES:
                frame = ringpress.compress(
                    x, codec=codec, shuffle=shuffle, block_size=4096, dtype=wire
                )
                kinds = {(b.filter, b.coding) for b in ref_parse(frame).blocks}
                seen |= kinds
                if shuffle == "auto":
                    auto_seen.setdefault(kind, set()).update(kinds)
    assert {(F_NONE, RAW), (F_NONE, WHOLE), (F_BYTE, PLANES), (F_BIT, WHOLE)} <= seen
    assert auto_seen["f32_sparse"] != auto_seen["f32_normal"]
    assert len({f for f, _ in set().union(*auto_seen.values())}) >= 2


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "x",
    [
        np.zeros(0, np.float32),
        np.zeros((3, 0, 2), np.int16),
        np.float64(2.5),
        np.arange(8, dtype=np.uint8).reshape(2, 2, 2, 1, 1, 1, 1, 1),
        b"",
        b"x",
    ],
    ids=["empty", "zero_dim", "scalar", "ndim8", "empty_bytes", "one_byte"],
)
def test_ref_decode_edge_shapes(x, codec):
    arr = np.asarray(x) if not isinstance(x, bytes) else x
    frame = bytes(ringpress.compress(arr, codec=codec))
    assert ref_decode(frame) == expected(arr, None)
    fr = ref_parse(frame)
    check_frame_info(frame, fr)
    if fr.nbytes == 0:
        assert fr.nblocks == 0 and len(frame) == 32 + 8 * fr.ndim


# --------------------------------------------------------------------------------------------
# 2a. Valid frames built from the spec (not by the ringpress encoder) must be accepted.


def compressible(kind: str, n: int, seed: int = 3) -> tuple[bytes, str]:
    """Runs of 8 equal elements: every byte and bit plane compresses with lz4 and zstd, so
    spec-built coded blocks stay within stored_size <= block length + 4*elemsize."""
    rng = np.random.default_rng(seed)
    runs = np.repeat(rng.integers(0, 16, n // 8 + 1), 8)[:n]
    if kind == "int8":
        return (runs - 8).astype(np.int8).tobytes(), "int8"
    table = rng.standard_normal(16) * 1e-3
    if kind == "bf16":
        f = table.astype(np.float32)[runs]
        return (f.view(np.uint32) >> 16).astype(np.uint16).tobytes(), "bfloat16"
    dt = {"float32": np.float32, "float64": np.float64}[kind]
    return table.astype(dt)[runs].tobytes(), kind


def decoded_array(raw: bytes, dtype: str, shape):
    np_dtype = {"bfloat16": np.uint16, "bytes": np.uint8}.get(dtype, dtype)
    return np.frombuffer(raw, dtype=np_dtype).reshape(shape)


def assert_decodes(frame: bytes, raw: bytes, dtype: str, shape):
    """shape: of decompress()'s array (bytes frames come back 1-D; their wire shape is ())."""
    wire_shape = () if dtype == "bytes" else tuple(shape)
    assert ref_decode(frame) == (dtype, wire_shape, raw)
    out = ringpress.decompress(frame)
    want = decoded_array(raw, dtype, shape)
    assert out.dtype == want.dtype and out.shape == want.shape and out.tobytes() == raw


PLANS = {
    "raw": [(F_NONE, RAW, 0)],
    "raw_byte": [(F_BYTE, RAW, 0)],
    "raw_bit": [(F_BIT, RAW, 0)],
    "whole": [(F_NONE, WHOLE, 0)],
    "whole_byte": [(F_BYTE, WHOLE, 0)],
    "whole_bit": [(F_BIT, WHOLE, 0)],
    "planes_none_coded": [(F_BYTE, PLANES, 0)],
    "planes_all_coded": [(F_BYTE, PLANES, 0xFF)],
    "planes_top_coded": [(F_BYTE, PLANES, -1)],  # -1: the most significant plane only
    "planes_mixed": [
        (F_BYTE, PLANES, 0x55),
        (F_BYTE, PLANES, 0xAA),
        (F_NONE, RAW, 0),
        (F_BIT, WHOLE, 0),
    ],
}


@pytest.mark.parametrize("plan", sorted(PLANS))
@pytest.mark.parametrize("codec", [LZ4, ZSTD])
@pytest.mark.parametrize("kind", ["float32", "float64", "bf16", "int8"])
def test_spec_built_frames_decode(kind, codec, plan):
    raw, dtype = compressible(kind, 3003)  # 3003 elements: short last block, n % 8 != 0
    s = DTYPES[DTYPE_CODE[dtype]][1]
    mask = (1 << s) - 1
    plans = [(f, c, 1 << (s - 1) if m < 0 else m & mask) for f, c, m in PLANS[plan]]
    for block_size in (1000 * s, 1003 * s):  # 1003 % 8 == 3: bit-shuffle remainders
        frame = encode_frame(raw, dtype, (3003,), block_size, codec, plans)
        assert_decodes(frame, raw, dtype, (3003,))
        check_frame_info(frame, ref_parse(frame))


@pytest.mark.parametrize("dtype", sorted(DTYPE_CODE))
def test_spec_built_raw_frames_every_dtype(dtype):
    s = DTYPES[DTYPE_CODE[dtype]][1]
    raw = bytes(i % 2 for i in range(24 * s)) if dtype == "bool" else bytes(range(24 * s))
    shape = () if dtype == "bytes" else (2, 3, 4)
    frame = encode_frame(
        raw, dtype, shape, 10 * s, NONE, [(F_NONE, RAW, 0), (F_BYTE, RAW, 0)], level=0
    )
    assert ringpress.frame_info(frame)["dtype"] == dtype
    assert_decodes(frame, raw, dtype, (24 * s,) if dtype == "bytes" else shape)


ZSTD_VARIANTS = {
    "with_checksum": dict(write_checksum=True),
    "negative_level": dict(level=-5),
    "level_19": dict(level=19),
    "no_content_size": dict(write_content_size=False),
}


def test_zstd_frame_without_content_size_is_rejected():
    # spec: a zstd payload must declare its Frame_Content_Size, equal to the block length.
    raw, _ = compressible("float32", 1024)
    f = byte_shuffle(raw, 4)
    frame = build_frame([Block(zstd(f, write_content_size=False), F_BYTE, WHOLE)], (1024,))
    with pytest.raises(ringpress.WireFormatError, match="content size"):
        ringpress.decompress(frame)


@pytest.mark.parametrize("variant", sorted(set(ZSTD_VARIANTS) - {"no_content_size"}))
def test_spec_built_zstd_variants_decode(variant):
    raw, _ = compressible("float32", 1024)
    f = byte_shuffle(raw, 4)
    kw = ZSTD_VARIANTS[variant]
    n = len(f) // 4
    planes = [f[:n], f[n : 2 * n], f[2 * n : 3 * n], zstd(f[3 * n :], **kw)]
    frames = [
        build_frame([Block(zstd(f, **kw), F_BYTE, WHOLE)], (1024,)),
        build_frame([Block(planes_payload(planes), F_BYTE, PLANES, 0b1000)], (1024,)),
    ]
    for frame in frames:
        assert ref_decode(frame)[2] == raw
        assert ringpress.decompress(frame).tobytes() == raw


def test_codec_none_codec_version_is_zero():
    raw, _ = compressible("float32", 100)
    assert (
        ringpress.decompress(build_frame([Block(raw)], (100,), codec=NONE, level=0)).tobytes()
        == raw
    )
    written = bytes(ringpress.compress(np.zeros(4, np.float32), codec="none"))
    assert written[9] == CODEC_VERSION[NONE] == 0
    bad = build_frame([Block(raw)], (100,), codec=NONE, level=0, codec_version=1)
    with pytest.raises(ringpress.WireFormatError, match="version"):
        ringpress.decompress(bad)


def test_spec_built_boundaries_accepted():
    raw, _ = compressible("float32", 1000)
    # stored_size == block length + 4*elemsize exactly (per-plane block, every plane raw)
    blk = encode_block(raw, 4, ZSTD, F_BYTE, PLANES, 0)
    assert len(blk.data) == len(raw) + 16
    assert_decodes(build_frame([blk], (1000,)), raw, "float32", (1000,))
    # block_size == 2^30 (one short block)
    assert_decodes(
        build_frame([Block(raw)], (1000,), block_size=MAX_BLOCK), raw, "float32", (1000,)
    )
    # ndim 8; a dimension of exactly 2^62 when another is 0
    assert_decodes(
        build_frame([Block(raw)], (1, 1, 1, 1, 10, 1, 100, 1)),
        raw,
        "float32",
        (1, 1, 1, 1, 10, 1, 100, 1),
    )
    assert_decodes(build_frame([], (MAX_DIM, 0), dtype=1), b"", "uint8", (MAX_DIM, 0))
    assert ref_decode(build_frame([], (0, MAX_DIM))) == ("float32", (0, MAX_DIM), b"")
    assert ringpress.frame_info(build_frame([], (0, MAX_DIM)))["shape"] == (0, MAX_DIM)
    # bytes with ndim 0 and any nbytes; a typed scalar
    assert_decodes(build_frame([Block(raw[:7])], (), dtype=0, nbytes=7), raw[:7], "bytes", (7,))
    assert_decodes(build_frame([Block(raw[:4])], ()), raw[:4], "float32", ())
    # dtype bytes with ndim >= 1 (the encoder writes ndim 0 for bytes)
    frame = build_frame([Block(raw[:6])], (2, 3), dtype=0)
    assert ref_decode(frame) == ("bytes", (2, 3), raw[:6])
    assert ringpress.frame_info(frame)["shape"] == (2, 3)
    assert ringpress.decompress(frame).tobytes() == raw[:6]
    # level is informational: any int8 value decodes, for codec none too
    for codec in (ZSTD, NONE):
        for level in (-128, -7, 0, 5, 22, 65, 127):
            assert_decodes(
                build_frame([Block(raw)], (1000,), level=level, codec=codec),
                raw,
                "float32",
                (1000,),
            )


# --------------------------------------------------------------------------------------------
# 2b. Every rule: well-checksummed frames that break exactly one must be rejected.

RAW_F32, _ = compressible("float32", 3000)  # 12000 bytes: blocks of 4096, 4096, 3808
LEN0, LEN2 = 4096, 3808


def base_blocks(codec: int = ZSTD) -> list[Block]:
    """planes (exponent plane coded), whole, raw."""
    raw = RAW_F32
    return [
        encode_block(raw[:4096], 4, codec, F_BYTE, PLANES, 0b1000),
        encode_block(raw[4096:8192], 4, codec, F_BIT, WHOLE),
        encode_block(raw[8192:], 4, codec, F_NONE, RAW),
    ]


def base(**fields) -> Frame:
    blocks = fields.pop("blocks", None) or base_blocks(fields.get("codec", ZSTD))
    return Frame(blocks, fields.pop("shape", (3000,)), **fields)


def with_block(i: int, blk: Block, **fields) -> bytes:
    fr = base(**fields)
    fr.blocks[i] = blk
    return fr.to_bytes()


def replace_block(i: int, codec: int = ZSTD, **changes) -> bytes:
    fr = base(codec=codec)
    fr.blocks[i] = dataclasses.replace(fr.blocks[i], **changes)
    return fr.to_bytes()


def planes_of(i: int = 0) -> tuple[list[bytes], bytes]:
    """Block i's planes split from base_blocks()[i] (coding 2), and the shuffled raw block."""
    blk = base_blocks()[i]
    sizes = struct.unpack_from("<4I", blk.data)
    planes, pos = [], 16
    for size in sizes:
        planes.append(blk.data[pos : pos + size])
        pos += size
    return planes, byte_shuffle(RAW_F32[:4096], 4)


def plane_block(planes: list[bytes], sizes=None, mask: int = 0b1000) -> Block:
    sizes = [len(p) for p in planes] if sizes is None else sizes
    return Block(struct.pack("<4I", *sizes) + b"".join(planes), F_BYTE, PLANES, mask)


def zstd(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def lz4b(data: bytes) -> bytes:
    return lz4.block.compress(data, store_size=False)


GARBAGE = bytes(np.random.default_rng(9).integers(0, 256, 600, dtype=np.uint8))
BLK1 = bit_shuffle(RAW_F32[4096:8192], 4)  # block 1's filtered bytes (coding 1, filter 2)
SKIPPABLE = struct.pack("<II", 0x184D2A50, 4) + b"skip"


def _planes_wrong_raw_size(delta: int) -> bytes:
    planes, _ = planes_of()
    planes[0] = planes[0] + b"\0" if delta > 0 else planes[0][:-1]
    if delta > 0:
        planes[1] = planes[1][:-1]  # keep stored_size unchanged
    return with_block(0, plane_block(planes))


def _planes_sizes_off(plane: int, delta: int) -> bytes:
    planes, _ = planes_of()
    sizes = [len(p) for p in planes]
    sizes[plane] += delta
    return with_block(0, plane_block(planes, sizes))


def _planes_slack() -> bytes:
    planes, _ = planes_of()
    blk = plane_block(planes)
    blk.data += b"\0\0\0"  # every plane decodes; 3 stored bytes belong to none
    return with_block(0, blk)


def _planes_sizes_wrap_u32() -> bytes:
    planes, _ = planes_of()
    sizes = [len(p) for p in planes]
    sizes[0] += 1 << 31
    sizes[1] += 1 << 31  # the sum is right only modulo 2^32
    return with_block(0, plane_block(planes, sizes))


def _coded_plane(payload: bytes) -> bytes:
    planes, _ = planes_of()
    planes[3] = payload
    return with_block(0, plane_block(planes))


def _exp_plane(delta: int) -> bytes:
    _, f = planes_of()
    plane = f[3 * 1024 :]
    return plane + b"\0" * delta if delta >= 0 else plane[:delta]


def _oversized_whole_block() -> bytes:
    rnd = GARBAGE[:100]
    payload = zstd(rnd, write_checksum=True)
    assert len(payload) > 100 + 4
    return build_frame(
        [Block(payload, F_NONE, WHOLE)], (100,), dtype=DTYPE_CODE["int8"], block_size=100
    )


# name -> (frame bytes, loose message words (any one must appear), rule is frame-level)
CASES = {
    # header
    "magic": (base(magic=b"RPZG").to_bytes(), ("magic",), True),
    "magic_zero": (base(magic=bytes(4)).to_bytes(), ("magic",), True),
    "version_2_future": (base(version=2).to_bytes(), ("version",), True),
    "version_2_other_layout": (
        base(version=2, header_check=1).to_bytes()[:40] + bytes(99),
        ("version",),
        True,
    ),  # a newer frame is "unsupported", not "corrupt"
    "version_0": (base(version=0).to_bytes(), ("version",), True),
    "version_255": (base(version=255).to_bytes(), ("version",), True),
    "flags_1": (base(flags=1).to_bytes(), ("flag",), True),
    "flags_0x80": (base(flags=0x80).to_bytes(), ("flag",), True),
    "dtype_14": (base(dtype=14, elemsize=4).to_bytes(), ("dtype",), True),
    "dtype_255": (base(dtype=255, elemsize=4).to_bytes(), ("dtype",), True),
    "ndim_9": (base(shape=(1,) * 8 + (3000,)).to_bytes(), ("ndim",), True),
    "ndim_255": (base(ndim=255).to_bytes(), ("ndim",), True),
    "codec_3": (base(codec=3).to_bytes(), ("codec",), True),
    "codec_255": (base(codec=255).to_bytes(), ("codec",), True),
    "codec_version_0": (base(codec_version=0).to_bytes(), ("version",), True),
    "codec_version_2": (base(codec_version=2).to_bytes(), ("version",), True),
    "codec_version_lz4_0": (base(codec=LZ4, codec_version=0).to_bytes(), ("version",), True),
    "codec_version_none_2": (
        build_frame([Block(RAW_F32)], (3000,), block_size=16384, codec=NONE, codec_version=2),
        ("version",),
        True,
    ),
    "elemsize_2_for_f32": (
        base(elemsize=2, nbytes=12000, shape=(6000,)).to_bytes(),
        ("elemsize",),
        True,
    ),
    "elemsize_8_for_f32": (
        base(elemsize=8, nbytes=12000, shape=(1500,)).to_bytes(),
        ("elemsize",),
        True,
    ),
    "elemsize_0_bytes": (
        build_frame([Block(b"ab")], (), dtype=0, elemsize=0, nbytes=2),
        ("elemsize",),
        True,
    ),
    "block_size_0": (base(block_size=0).to_bytes(), ("block_size",), True),
    "block_size_not_multiple": (
        build_frame(
            [Block(RAW_F32[:4098]), Block(RAW_F32[4098:8196]), Block(RAW_F32[8196:])],
            (3000,),
            block_size=4098,
            codec=NONE,
        ),
        ("block_size",),
        True,
    ),
    "block_size_0_empty": (build_frame([], (0,), block_size=0), ("block_size",), True),
    "block_size_not_multiple_empty": (
        build_frame([], (0,), block_size=4094),
        ("block_size",),
        True,
    ),
    "block_size_2^30+4": (
        build_frame([Block(RAW_F32)], (3000,), block_size=MAX_BLOCK + 4),
        ("block_size",),
        True,
    ),
    "block_size_u32_max": (
        build_frame([Block(RAW_F32)], (3000,), block_size=0xFFFFFFFC),
        ("block_size",),
        True,
    ),
    "nblocks_too_few": (
        build_frame([Block(RAW_F32[:4096]), Block(RAW_F32[4096:])], (3000,), codec=NONE),
        ("nblocks", "block"),
        True,
    ),
    "nblocks_too_many": (
        build_frame(
            [Block(RAW_F32[:4096]), Block(RAW_F32[4096:8192]), Block(RAW_F32[8192:]), Block(b"")],
            (3000,),
            codec=NONE,
        ),
        ("nblocks", "block"),
        True,
    ),
    "nblocks_for_empty": (build_frame([Block(b"")], (0,)), ("nblocks", "block"), True),
    "nblocks_0_nonempty": (
        build_frame([], (3000,)) + b"".join(b.data for b in base_blocks()),
        ("nblocks", "block"),
        True,
    ),
    "nblocks_overflows_u32": (
        build_frame([], (), dtype=0, nbytes=(1 << 64) - 1, block_size=MAX_BLOCK, nblocks=0),
        ("nblocks", "block", "large"),
        True,
    ),
    # shape
    "shape_product_bigger": (base(shape=(3001,), nbytes=12000).to_bytes(), ("shape",), True),
    "shape_product_smaller": (base(shape=(2, 1499), nbytes=12000).to_bytes(), ("shape",), True),
    "shape_ndim0_typed": (build_frame([Block(RAW_F32[:8])], (), nbytes=8), ("shape",), True),
    "shape_dim_over_2^62": (build_frame([], (MAX_DIM + 1, 0)), ("shape", "dim"), True),
    "shape_product_wraps_u64": (
        build_frame([], (1 << 32, 1 << 32), nbytes=0),
        ("shape", "overflow"),
        True,
    ),
    "shape_product_wraps_to_8": (
        build_frame([Block(RAW_F32[:8])], ((1 << 61) + 1, 8), dtype=DTYPE_CODE["uint8"], nbytes=8),
        ("shape", "overflow"),
        True,
    ),
    "shape_bytes_wraps_u64": (build_frame([], (MAX_DIM,), nbytes=0), ("shape", "overflow"), True),
    # block table
    "raw_stored_short": (replace_block(2, data=RAW_F32[8192:-4]), ("size", "raw"), True),
    "raw_stored_long": (replace_block(2, data=RAW_F32[8192:] + b"\0\0\0\0"), ("size", "raw"), True),
    "raw_plane_mask": (replace_block(2, plane_mask=1), ("plane_mask", "mask"), True),
    "whole_plane_mask": (replace_block(1, plane_mask=1), ("plane_mask", "mask"), True),
    "whole_in_codec_none": (
        base(
            codec=NONE,
            level=0,
            blocks=[
                encode_block(RAW_F32[:4096], 4, LZ4, F_NONE, WHOLE),
                Block(RAW_F32[4096:8192]),
                Block(RAW_F32[8192:]),
            ],
        ).to_bytes(),
        ("codec",),
        True,
    ),
    "planes_in_codec_none": (
        base(
            codec=NONE,
            level=0,
            blocks=[
                encode_block(RAW_F32[:4096], 4, LZ4, F_BYTE, PLANES, 0),
                Block(RAW_F32[4096:8192]),
                Block(RAW_F32[8192:]),
            ],
        ).to_bytes(),
        ("codec",),
        True,
    ),
    "planes_filter_none": (replace_block(0, filter=F_NONE), ("filter",), True),
    "planes_filter_bit": (replace_block(0, filter=F_BIT), ("filter",), True),
    "plane_mask_bit4_f32": (replace_block(0, plane_mask=0b11000), ("plane_mask", "mask"), True),
    "plane_mask_bit15_f32": (replace_block(0, plane_mask=0x8008), ("plane_mask", "mask"), True),
    "plane_mask_bit1_int8": (
        build_frame(
            [Block(planes_payload([zstd(RAW_F32[:100])]), F_BYTE, PLANES, 0b11)],
            (100,),
            dtype=DTYPE_CODE["int8"],
        ),
        ("plane_mask", "mask"),
        True,
    ),
    "filter_3": (replace_block(2, filter=3), ("filter",), True),
    "filter_255": (replace_block(1, filter=255), ("filter",), True),
    "coding_3": (replace_block(2, coding=3), ("coding",), True),
    "coding_255": (replace_block(1, coding=255), ("coding",), True),
    "stored_over_bound": (_oversized_whole_block(), ("size",), True),
    # frame size
    "truncated_last_byte": (base().to_bytes()[:-1], ("trunc", "size", "short"), True),
    "truncated_header": (base().to_bytes()[:31], ("trunc", "size", "short"), True),
    "truncated_table": (base().to_bytes()[: 40 + 16], ("trunc", "size", "short"), True),
    "empty_buffer": (b"", ("trunc", "size", "short"), True),
    "trailing_byte": (base(trailer=b"\0").to_bytes(), ("trailing", "size"), True),
    "trailing_frame": (base(trailer=base().to_bytes()).to_bytes(), ("trailing", "size"), True),
    # checksums
    "header_check": (base(header_check=0x12345678).to_bytes(), ("checksum",), True),
    "block_checksum": (
        replace_block(1, checksum=xxh3(base_blocks()[1].data) ^ 1),
        ("checksum",),
        False,
    ),
    "raw_block_checksum": (replace_block(2, checksum=0), ("checksum",), False),
    # per-plane payloads
    "raw_plane_too_long": (_planes_wrong_raw_size(+1), ("plane",), False),
    "raw_plane_too_short": (_planes_wrong_raw_size(-1), ("plane",), False),
    "plane_sizes_over_raw_plane": (_planes_sizes_off(2, +1), ("plane",), False),
    "plane_sizes_under_raw_plane": (_planes_sizes_off(2, -1), ("plane",), False),
    "plane_sizes_over_coded_plane": (_planes_sizes_off(3, +1), ("plane",), False),
    "plane_sizes_under_coded_plane": (_planes_sizes_off(3, -1), ("plane", "zstd"), False),
    "plane_sizes_slack_after_planes": (_planes_slack(), ("plane",), False),
    "plane_sizes_wrap_u32": (_planes_sizes_wrap_u32(), ("plane", "size", "overflow"), False),
    "planes_shorter_than_sizes": (
        with_block(0, Block(b"\0" * 8, F_BYTE, PLANES, 0b1000)),
        ("plane", "size"),
        False,
    ),
    "planes_empty": (with_block(0, Block(b"", F_BYTE, PLANES, 0b1000)), ("plane", "size"), False),
    "coded_plane_garbage": (_coded_plane(GARBAGE[:50]), ("zstd", "corrupt", "decod"), False),
    "coded_plane_long": (_coded_plane(zstd(_exp_plane(+1))), ("size", "zstd", "decod"), False),
    "coded_plane_short": (_coded_plane(zstd(_exp_plane(-1))), ("size", "zstd", "decod"), False),
    "coded_plane_two_frames": (
        _coded_plane(zstd(_exp_plane(0)[:500]) + zstd(_exp_plane(0)[500:])),
        ("zstd", "frame", "decod"),
        False,
    ),
    # whole-block payloads (zstd)
    "zstd_garbage": (replace_block(1, data=GARBAGE), ("zstd", "corrupt", "decod"), False),
    "zstd_empty": (
        replace_block(1, data=b""),
        ("zstd", "corrupt", "decod", "size", "empty"),
        False,
    ),
    "zstd_short_content": (
        replace_block(1, data=zstd(BLK1[:-1])),
        ("size", "zstd", "decod"),
        False,
    ),
    "zstd_long_content": (
        replace_block(1, data=zstd(BLK1 + b"\0")),
        ("size", "zstd", "decod"),
        False,
    ),
    "zstd_short_no_content_size": (
        replace_block(1, data=zstd(BLK1[:-1], write_content_size=False)),
        ("size", "zstd", "decod"),
        False,
    ),
    "zstd_long_no_content_size": (
        replace_block(1, data=zstd(BLK1 + b"\0", write_content_size=False)),
        ("size", "zstd", "decod"),
        False,
    ),
    "zstd_two_frames": (
        replace_block(1, data=zstd(BLK1[:2000]) + zstd(BLK1[2000:])),
        ("zstd", "frame", "decod"),
        False,
    ),
    "zstd_two_frames_no_content_size": (
        replace_block(
            1,
            data=zstd(BLK1[:2000], write_content_size=False)
            + zstd(BLK1[2000:], write_content_size=False),
        ),
        ("zstd", "frame", "decod"),
        False,
    ),
    "zstd_trailing_byte": (
        replace_block(1, data=zstd(BLK1) + b"\0"),
        ("zstd", "frame", "decod"),
        False,
    ),
    "zstd_skippable_then_frame": (
        replace_block(1, data=SKIPPABLE + zstd(BLK1)),
        ("zstd", "frame", "decod"),
        False,
    ),
    "zstd_frame_then_skippable": (
        replace_block(1, data=zstd(BLK1) + SKIPPABLE),
        ("zstd", "frame", "decod"),
        False,
    ),
    "zstd_truncated": (replace_block(1, data=zstd(BLK1)[:-1]), ("zstd", "corrupt", "decod"), False),
    # whole-block payloads (lz4)
    "lz4_garbage": (replace_block(1, LZ4, data=GARBAGE), ("lz4", "corrupt", "decod"), False),
    "lz4_empty": (
        replace_block(1, LZ4, data=b""),
        ("lz4", "corrupt", "decod", "size", "empty"),
        False,
    ),
    "lz4_short_content": (
        replace_block(1, LZ4, data=lz4b(BLK1[:-1])),
        ("size", "lz4", "decod"),
        False,
    ),
    "lz4_long_content": (
        replace_block(1, LZ4, data=lz4b(BLK1 + b"\0")),
        ("size", "lz4", "decod"),
        False,
    ),
    "lz4_trailing_byte": (
        replace_block(1, LZ4, data=lz4b(BLK1) + b"\0"),
        ("lz4", "corrupt", "decod"),
        False,
    ),
    "lz4_truncated": (
        replace_block(1, LZ4, data=lz4b(BLK1)[:-1]),
        ("lz4", "corrupt", "decod"),
        False,
    ),
    "lz4_zstd_payload": (
        replace_block(1, LZ4, data=zstd(BLK1)),
        ("lz4", "corrupt", "decod"),
        False,
    ),
    "lz4_two_blocks": (
        replace_block(1, LZ4, data=lz4b(BLK1[:2000]) + lz4b(BLK1[2000:])),
        ("lz4", "corrupt", "decod", "size"),
        False,
    ),
}


def test_base_frames_are_valid():
    for codec in (LZ4, ZSTD):
        frame = base(codec=codec).to_bytes()
        assert_decodes(frame, RAW_F32, "float32", (3000,))
        check_frame_info(frame, ref_parse(frame))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_violation_rejected(name):
    frame, words, frame_level = CASES[name]
    with pytest.raises(RefError):
        ref_decode(frame)
    with pytest.raises(ringpress.WireFormatError) as info:
        ringpress.decompress(frame)
    msg = str(info.value).lower()
    assert any(w in msg for w in words), f"{name}: {msg!r} has none of {words}"
    with pytest.raises(ringpress.WireFormatError):
        ringpress.decompress(frame, threads=2)
    with pytest.raises(ringpress.WireFormatError):
        ringpress.decompress(frame, out=np.empty(3000, np.float32))
    if frame_level:
        with pytest.raises(ringpress.WireFormatError):
            ringpress.frame_info(frame)


# --------------------------------------------------------------------------------------------
# 2c. Corruption and truncation of real frames.


@functools.cache
def corruption_targets() -> dict[str, bytes]:
    x, _ = sample("f32_heavy", 1500, seed=5)
    return {
        "ringpress_zstd_auto": bytes(ringpress.compress(x, block_size=2048)),
        "ringpress_lz4_bit": bytes(
            ringpress.compress(x[:700], codec="lz4", shuffle="bit", block_size=1024)
        ),
        "spec_built_lz4_mixed": base(codec=LZ4).to_bytes(),
    }


@pytest.mark.parametrize(
    "target", ["ringpress_zstd_auto", "ringpress_lz4_bit", "spec_built_lz4_mixed"]
)
def test_every_single_byte_corruption_rejected(target):
    frame = corruption_targets()[target]
    fr = ref_parse(frame)
    assert fr.nblocks >= 2
    buf = bytearray(frame)
    for i in range(len(frame)):
        for flip in (0x01, 0xFF):
            buf[i] ^= flip
            bad = bytes(buf)
            buf[i] ^= flip
            try:
                ringpress.decompress(bad)
            except ringpress.WireFormatError:
                pass
            else:
                pytest.fail(f"byte {i} ^ {flip:#x} of {len(frame)} was accepted")
            with pytest.raises(RefError):
                ref_decode(bad)


@pytest.mark.parametrize("target", ["ringpress_zstd_auto", "spec_built_lz4_mixed"])
def test_every_truncation_rejected(target):
    frame = corruption_targets()[target]
    for n in range(len(frame)):
        try:
            ringpress.decompress(frame[:n])
        except ringpress.WireFormatError:
            pass
        else:
            pytest.fail(f"truncation to {n} of {len(frame)} bytes was accepted")
        try:
            ringpress.frame_info(frame[:n])
        except ringpress.WireFormatError:
            pass
        else:
            pytest.fail(f"frame_info accepted a truncation to {n} of {len(frame)} bytes")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_multi_byte_corruption_rejected(data):
    frame = corruption_targets()["ringpress_lz4_bit"]
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    bad = bytes(buf)
    if bad == frame:
        return
    with pytest.raises(ringpress.WireFormatError):
        ringpress.decompress(bad)


# --------------------------------------------------------------------------------------------
# 3. Golden frames: the compatibility promise.


def golden_manifest() -> dict:
    with open(os.path.join(GOLDEN_DIR, "manifest.json")) as f:
        return json.load(f)


def test_golden_manifest_is_complete():
    manifest = golden_manifest()
    assert manifest["format_version"] == 1 and len(manifest["frames"]) >= 8
    files = {f for f in os.listdir(GOLDEN_DIR) if f.endswith(".rpz")}
    assert files == {e["file"] for e in manifest["frames"].values()}
    total = sum(os.path.getsize(os.path.join(GOLDEN_DIR, f)) for f in files)
    assert total < 200_000
    codecs = {e["codec"] for e in manifest["frames"].values()}
    assert codecs == {"zstd", "lz4", "none"}


@pytest.mark.parametrize("name", sorted(golden_manifest()["frames"]))
def test_golden_frame_decodes(name):
    entry = golden_manifest()["frames"][name]
    with open(os.path.join(GOLDEN_DIR, entry["file"]), "rb") as f:
        frame = f.read()
    assert hashlib.sha256(frame).hexdigest() == entry["frame_sha256"], "golden file changed"
    dtype, shape, raw = ref_decode(frame)
    assert dtype == entry["dtype"] and list(shape) == entry["shape"]
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    out = ringpress.decompress(frame)
    assert out.tobytes() == raw
    if dtype != "bytes":
        assert list(out.shape) == entry["shape"]
    info = ringpress.frame_info(frame)
    assert info["dtype"] == dtype and info["codec"] == entry["codec"]
    check_frame_info(frame, ref_parse(frame))

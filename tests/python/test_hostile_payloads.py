"""Decoders bounded by what they were given (issue 16): hostile size claims in frames and
compressed-tensor containers.

Every hostile input is built from a valid one by patching its header (offsets from
docs/wire-format.md) and re-signing the header checksums, so only the size claim is wrong:

* a container of every registered lossy codec (``ringpress.wire_codecs()``), raw and with a
  lossless stage, claiming n = 2^29, 2^32 - 1, 2^62 and 2^64 - 1 (with and without a matching
  ``raw_size``);
* the cases measured on an older main: a 2 KB fp16 container claiming n = 2^29 (raw, and with a
  lossless stage whose frame claims the 1 GiB payload), a ~180-byte top-k container claiming
  n = 2^28, a sparse container claiming 2^32 - 1;
* frames claiming those decoded sizes, and a zstd block claiming 2^30 bytes from a few dozen.

Each must raise a ringpress error (a ``WireFormatError``, or a ``UsageError`` for a caller's
``out=`` of another size) from every decode entry point, and must not grow the process: the
hostile calls run in a child process that reads its resident size (``/proc/self/statm``) after
each call and its peak (``VmHWM`` in ``/proc/self/status``) at the end; growth must stay under
64 MiB for claims of 1 GiB to 64 EiB. Controls show the limits are what refuses: the same
patched containers decode once the claim is within the default cap or an explicit
``max_elements``.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import ringpress
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ringpress import _core
from ringpress.compressors import container_payload

CLAIMS = (2**29, 2**32 - 1, 2**62, 2**64 - 1)
MiB = 1 << 20
GROWTH_LIMIT = 64 * MiB

# Container header offsets (docs/wire-format.md, "Compressed-tensor container").
C_N, C_RAW, C_PCHECK, C_HCHECK, C_HEADER = 16, 48, 56, 60, 64
# Frame header offsets ("Header (32 bytes)").
F_BLOCK, F_NBYTES, F_NBLOCKS, F_HCHECK, F_HEADER = 12, 16, 24, 28, 32


def lossy_codecs() -> list[str]:
    rows = ringpress.wire_codecs()
    names = [r["name"] for r in rows if not r["exact"] and r["dtypes"] == "float32-sum"]
    assert len(names) >= 10, rows  # bf16 fp16 int8 int4 int2 sign ternary topk randomk threshold
    return names


def sparse_codecs() -> set[str]:
    """The codecs whose payload does not fix n (the allgather schedule: topk, randomk, ...)."""
    return {r["name"] for r in ringpress.wire_codecs() if r["schedule"] == "allgather"}


def low32(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


def put64(buf: bytearray, off: int, v: int) -> None:
    buf[off : off + 8] = struct.pack("<Q", v)


def put32(buf: bytearray, off: int, v: int) -> None:
    buf[off : off + 4] = struct.pack("<I", v)


def resign_container(buf: bytearray) -> bytes:
    ndim = buf[9]
    tend = C_HEADER + 8 * ndim
    put32(buf, C_PCHECK, low32(bytes(buf[tend:])))
    put32(buf, C_HCHECK, low32(bytes(buf[:60]) + bytes(buf[C_HEADER:tend])))
    return bytes(buf)


def resign_frame(buf: bytearray) -> bytes:
    ndim = buf[7]
    nblocks = struct.unpack_from("<I", buf, F_NBLOCKS)[0]
    table = bytes(buf[F_HEADER : F_HEADER + 8 * ndim + 16 * nblocks])
    put32(buf, F_HCHECK, low32(bytes(buf[:28]) + table))
    return bytes(buf)


def claim_container(payload, n: int, raw_size: int | None = None) -> bytes:
    """A 1-D container re-signed to claim n elements (shape [n] when it fits a u64)."""
    buf = bytearray(bytes(payload))
    assert buf[:4] == b"RPZC" and buf[9] == 1
    put64(buf, C_N, n)
    put64(buf, C_HEADER, n)
    if raw_size is not None:
        put64(buf, C_RAW, raw_size % 2**64)
    return resign_container(buf)


def encode(name: str, x: np.ndarray, lossless: str = "none") -> bytes:
    return bytes(_core.compressor_encode(x, list(x.shape), name, lossless=lossless, seed=3))


def gradient(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


# ------------------------------------------------------------------ the child that measures RSS
_CHILD = textwrap.dedent(
    r"""
    import json, os, pickle, sys
    import numpy as np
    import ringpress
    from ringpress import codecs, compressors

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def peak():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def call(kind, data, arg):
        if kind == "decode":
            return compressors.decode(data, **arg)
        if kind == "decode_out":
            return compressors.decode(data, out=np.empty(arg, np.float32))
        if kind == "container_info":
            return compressors.container_info(data)
        if kind == "container_payload":
            return compressors.container_payload(data)
        if kind == "decompress":
            return codecs.decompress(data)
        if kind == "frame_info":
            return codecs.frame_info(data)
        raise AssertionError(kind)

    with open(sys.argv[1], "rb") as f:
        warmup, cases = pickle.load(f)
    for kind, data, arg in warmup:  # fault in the code paths and their (small) scratch
        call(kind, data, arg)
    base_rss, base_peak = rss(), peak()
    results = []
    for label, kind, data, arg in cases:
        try:
            call(kind, data, arg)
            err, typed = None, False
        except BaseException as e:  # noqa: BLE001 - what escapes is the point
            err, typed = type(e).__name__, isinstance(e, ringpress.RingpressError)
        results.append({"label": label, "error": err, "typed": typed,
                        "growth": rss() - base_rss})
    print(json.dumps({"results": results, "peak_growth": peak() - base_peak}))
    """
)


def run_hostile(tmp_path, warmup: list, cases: list) -> dict:
    """Runs (label, kind, data, arg) cases in a fresh interpreter; returns its measurements."""
    blob = tmp_path / "cases.pkl"
    blob.write_bytes(pickle.dumps((warmup, cases)))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(blob)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["results"]) == len(cases)
    return out


def assert_refused_and_bounded(out: dict, allowed=("WireFormatError",)) -> None:
    for r in out["results"]:
        assert r["error"] in allowed and r["typed"], r
        assert r["growth"] < GROWTH_LIMIT, r
    assert out["peak_growth"] < GROWTH_LIMIT, out["peak_growth"]


# ------------------------------------------------------------------ every codec, every claim
def test_every_codec_refuses_huge_claims_with_bounded_memory(tmp_path):
    n = 1024
    x = gradient(n)
    warmup, cases = [], []
    for name in lossy_codecs():
        for stage in ("none", "zstd"):
            valid = encode(name, x, stage)
            warmup.append(("decode", valid, {}))
            for claim in CLAIMS:
                # raw_size unchanged, or set to what a 16-bit codec would need (2n, wrapped
                # for 2^64 - 1: a size computation that wraps must not make it plausible).
                for raw in (None, 2 * claim):
                    p = claim_container(valid, claim, raw)
                    tag = f"{name}/{stage}/n={claim}/raw={raw}"
                    cases += [
                        (tag + "/decode", "decode", p, {}),
                        (tag + "/container_info", "container_info", p, None),
                        (tag + "/container_payload", "container_payload", p, None),
                    ]
                    cases.append((tag + "/decode_out", "decode_out", p, n))
    out = run_hostile(tmp_path, warmup, cases)
    sparse = sparse_codecs()
    assert sparse
    for r in out["results"]:
        name, _, claim, raw, kind = r["label"].split("/")
        claim = int(claim[2:])
        # decode(out=) of the wrong size is the caller's UsageError (when the header itself is
        # well-formed); everything else is a WireFormatError. Nothing else may escape.
        allowed = ["WireFormatError"]
        if kind == "decode_out":
            allowed.append("UsageError")
        # A sparse payload may stand for up to 2^32 - 1 elements: its header parses and its
        # payload bytes come back (nothing of n elements is allocated); decode() refuses.
        if name in sparse and raw == "raw=None" and claim < 2**32 and kind.startswith("container"):
            allowed.append(None)
        assert r["error"] in allowed, r
        assert r["typed"] or r["error"] is None, r
        assert r["growth"] < GROWTH_LIMIT, r
    assert out["peak_growth"] < GROWTH_LIMIT, out["peak_growth"]
    # Claims above 2^62 break the format's own limit: a WireFormatError even for decode(out=).
    for r in out["results"]:
        if "n=" + str(2**64 - 1) in r["label"]:
            assert r["error"] == "WireFormatError", r


# ------------------------------------------------------------------ the measured cases
def fp16_2kb_claims() -> list[tuple[str, bytes]]:
    """The 2 KB fp16 container claiming 2^29 elements (1 GiB of payload, 2 GiB of output)."""
    x = gradient(1024)
    raw = encode("fp16", x)
    assert 2000 <= len(raw) <= 2200, len(raw)
    out = [
        ("fp16 raw, n only", claim_container(raw, 2**29)),
        ("fp16 raw, n and raw_size", claim_container(raw, 2**29, 2**30)),
    ]
    # With a lossless stage: the inner frame re-signed to claim the whole 2^30-byte payload in
    # one block (block_size 2^30), the container consistent with it. Every checksum matches; only
    # the zstd data cannot decode to that size. (An older main allocated and kept 1 GiB here.)
    staged = bytearray(encode("fp16", np.zeros(1024, np.float32), "zstd"))
    frame = bytearray(staged[C_HEADER + 8 :])
    assert frame[:4] == b"RPZF" and frame[7] == 1 and frame[11] == 2
    assert struct.unpack_from("<I", frame, F_NBLOCKS)[0] == 1
    put32(frame, F_BLOCK, 2**30)
    put64(frame, F_NBYTES, 2**30)
    put64(frame, F_HEADER, 2**29)
    staged[C_HEADER + 8 :] = resign_frame(frame)
    out.append(("fp16 staged, frame claims 1 GiB", claim_container(staged, 2**29, 2**30)))
    assert all(len(p) < 2200 for _, p in out)
    return out


def topk_small() -> bytes:
    """A top-k container of ~180 bytes (20 of 2000 entries)."""
    p = bytes(ringpress.TopK(ratio=0.01).encode(gradient(2000, 1)))
    assert 150 <= len(p) <= 260, len(p)
    return p


def test_measured_cases_raise_wire_format_errors_without_holding_memory(tmp_path):
    small = topk_small()
    cases = []
    for label, p in fp16_2kb_claims():
        for kind in ("decode", "container_info", "container_payload"):
            cases.append((f"{label}/{kind}", kind, p, {} if kind == "decode" else None))
    for claim in (2**28, 2**32 - 1):
        p = claim_container(small, claim)
        cases.append((f"topk n={claim}/decode", "decode", p, {}))
        # An explicit cap below the claim refuses it too.
        cases.append((f"topk n={claim}/decode cap", "decode", p, {"max_elements": claim - 1}))
    for name in ("randomk", "threshold"):
        p = claim_container(encode(name, gradient(2000, 2)), 2**32 - 1)
        cases.append((f"{name} n=2^32-1/decode", "decode", p, {}))
    warmup = [("decode", small, {}), ("decode", encode("fp16", gradient(1024)), {})]
    out = run_hostile(tmp_path, warmup, cases)
    assert_refused_and_bounded(out)


def test_sparse_claim_is_bounded_by_the_cap_not_refused_outright():
    """Controls: the patched top-k container is well-formed; the cap is what refuses it."""
    small = topk_small()
    ref = ringpress.compressors.decode(small)
    nz = np.flatnonzero(ref)
    assert nz.size > 0
    # Within the default cap (2^24 for a small payload) it decodes: the same entries, zeros after.
    n = 2**20
    got = ringpress.compressors.decode(claim_container(small, n))
    assert got.shape == (n,)
    np.testing.assert_array_equal(got[nz], ref[nz])
    assert np.count_nonzero(got) == nz.size
    # An explicit cap below the claim refuses; one at the claim accepts.
    with pytest.raises(ringpress.WireFormatError, match="max_elements"):
        ringpress.compressors.decode(claim_container(small, n), max_elements=n - 1)
    # Above the default cap: refused by default, accepted when the caller allows it.
    big = 2**24 + 8
    p = claim_container(small, big)
    with pytest.raises(ringpress.WireFormatError, match="max_elements"):
        ringpress.TopK().decode(p)
    got = ringpress.TopK().decode(p, max_elements=big)
    assert got.shape == (big,) and np.count_nonzero(got) == nz.size
    # out= is the caller's bound: its size must be the claim.
    with pytest.raises(ringpress.UsageError):
        ringpress.compressors.decode(p, out=np.empty(2000, np.float32))


@pytest.mark.parametrize("bad", [0, -1, True, 2**63, 1.5, "10"])
def test_max_elements_is_checked(bad):
    with pytest.raises(ringpress.UsageError):
        ringpress.compressors.decode(topk_small(), max_elements=bad)


def test_dense_claims_need_no_cap():
    """A dense payload justifies its n itself: a large legitimate one decodes by default."""
    x = gradient(3 * 2**22 + 5, 4)  # 12.6 M elements: int2 packs 4 per byte, ~3.2 MB payload
    p = encode("int2", x)
    assert ringpress.compressors.decode(p).shape == x.shape
    # The sign codec at block 2^20 packs 8 elements per byte: 2^25 elements from ~4 MiB.
    y = np.ones(2**25, np.float32)
    s = bytes(ringpress.Sign(block=2**20).encode(y))
    assert len(s) * 64 >= y.size and y.size > 2**24
    np.testing.assert_array_equal(ringpress.compressors.decode(s)[:5], 1.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    claim=st.one_of(
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**24 + 16),
        st.sampled_from([0, 1, 1999, 2000, 2**24, 2**24 + 1, 2**32 - 1, 2**32, 2**62, 2**62 + 1]),
    )
)
def test_any_claimed_count_decodes_exactly_or_raises_a_typed_error(claim):
    small = topk_small()
    ref = ringpress.compressors.decode(small)
    nz = np.flatnonzero(ref)
    try:
        got = ringpress.compressors.decode(claim_container(small, claim))
    except ringpress.WireFormatError:
        # Refused: only a claim below the original n (the payload may not fit its bound), over
        # the default cap or over 2^62.
        assert claim < 2000 or claim > 2**24
        return
    assert nz.max() < claim <= 2**24
    assert got.shape == (claim,)
    np.testing.assert_array_equal(got[nz], ref[nz])


# ------------------------------------------------------------------ frames
def zero_frame(nbytes: int) -> bytearray:
    f = bytearray(
        bytes(
            ringpress.compress(np.zeros(nbytes // 4, np.float32), codec="zstd", block_size=nbytes)
        )
    )
    assert struct.unpack_from("<I", f, F_NBLOCKS)[0] == 1
    return f


def frame_claims() -> list[tuple[str, bytes]]:
    out = []
    small = zero_frame(4096)
    for claim in CLAIMS:
        f = bytearray(small)
        put64(f, F_NBYTES, claim)
        put64(f, F_HEADER, claim // 4)
        out.append((f"frame nbytes={claim}", resign_frame(f)))
    # A zstd block claiming 2^30 bytes from a few dozen (a decompression bomb the format rules out:
    # zstd expands at most 32768x).
    bomb = zero_frame(1 << 16)
    stored = struct.unpack_from("<I", bomb, F_HEADER + 8)[0]
    assert stored * 32768 < 2**30
    put32(bomb, F_BLOCK, 2**30)
    put64(bomb, F_NBYTES, 2**30)
    put64(bomb, F_HEADER, 2**28)
    out.append(("zstd bomb 2^30", resign_frame(bomb)))
    return out


def test_frames_claiming_huge_sizes_raise_wire_format_errors_without_memory(tmp_path):
    cases = []
    for label, f in frame_claims():
        for kind in ("decompress", "frame_info"):
            cases.append((f"{label}/{kind}", kind, f, None))
    warmup = [("decompress", bytes(zero_frame(4096)), None)]
    out = run_hostile(tmp_path, warmup, cases)
    assert_refused_and_bounded(out)


def test_frame_bomb_message_names_the_expansion_bound():
    _, bomb = frame_claims()[-1]
    with pytest.raises(ringpress.WireFormatError, match="cannot decode to"):
        ringpress.frame_info(bomb)


def test_frames_at_the_largest_real_expansion_still_decode():
    """The expansion bound rejects nothing zstd or lz4 can produce: highly compressible frames
    with one large block (the most expanding) round-trip."""
    x = np.zeros(1 << 24, np.uint8)
    for codec in ("zstd", "lz4"):
        f = ringpress.compress(x, codec=codec, shuffle="none", block_size=1 << 24)
        np.testing.assert_array_equal(ringpress.decompress(f), x)


def test_container_payload_of_hostile_container_is_typed():
    for _, p in fp16_2kb_claims():
        with pytest.raises(ringpress.WireFormatError):
            container_payload(p)


def rle_zstd(nbytes: int) -> bytes:
    """A valid zstd frame (RFC 8878) of `nbytes` zero bytes made of 128 KiB RLE blocks: 4 bytes
    per block, so 1 GiB takes 32 KiB, just inside the format's 32768x expansion rule."""
    block = 1 << 17
    assert nbytes % block == 0
    # magic, descriptor (8-byte content size, single segment), content size, then the blocks:
    # 3-byte header (last flag, type 1 = RLE, size) and the repeated byte.
    out = bytearray(struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", nbytes))
    n = nbytes // block
    for i in range(n):
        header = (block << 3) | (1 << 1) | (1 if i == n - 1 else 0)
        out += header.to_bytes(3, "little") + b"\x00"
    return bytes(out)


def rle_bomb(blocks: int) -> bytes:
    """A frame of `blocks` blocks of 1 GiB (the largest block size), each a valid zstd frame of
    zeros (rle_zstd): 64 KiB for blocks=2 that really decodes to 2 GiB. Every checksum is
    re-signed. Before decompress() had a cap it allocated and filled all of it."""
    f = zero_frame(1 << 16)
    ndim = f[7]
    entry = F_HEADER + 8 * ndim
    data = rle_zstd(1 << 30)
    e = bytearray(f[entry : entry + 16])
    put32(e, 0, len(data))
    head = bytearray(f[:entry])
    put32(head, F_BLOCK, 1 << 30)
    put64(head, F_NBYTES, blocks << 30)
    put64(head, F_HEADER, (blocks << 30) // 4)
    put32(head, F_NBLOCKS, blocks)
    out = head + bytes(e) * blocks + data * blocks
    resign_frame_blocks(out)
    return bytes(out)


def test_decompress_caps_what_a_small_frame_may_claim(tmp_path):
    """A 64 KiB frame that really decodes to 2 GiB (within the format's expansion rule);
    decompress() refuses it with a WireFormatError naming max_bytes before allocating (the
    child's RSS does not grow), both with the default cap and with a caller's max_bytes below
    the claim."""
    bomb = rle_bomb(2)
    assert len(bomb) < 70_000
    assert ringpress.frame_info(bomb)["nbytes"] == 1 << 31  # within the format's own rules
    with pytest.raises(ringpress.WireFormatError, match="max_bytes"):
        ringpress.decompress(bomb)
    with pytest.raises(ringpress.WireFormatError, match="more than max_bytes = 1048576"):
        ringpress.decompress(bomb, max_bytes=1 << 20)
    with pytest.raises(ringpress.UsageError):
        ringpress.decompress(bomb, max_bytes=-1)
    warmup = [("decompress", bytes(zero_frame(4096)), None)]
    out = run_hostile(tmp_path, warmup, [("padded bomb 2^31", "decompress", bomb, None)])
    assert_refused_and_bounded(out)
    assert out["results"][0]["growth"] < 16 * MiB, out


def test_decompress_of_large_frames_within_the_callers_cap():
    """A legitimate frame above the default cap (80 MiB of zeros in a few KiB) decodes when the
    caller allows it (max_bytes or out=), and is refused by the default cap otherwise."""
    x = np.zeros(80 * MiB, np.uint8)
    f = ringpress.compress(x, codec="zstd")
    assert len(bytes(f)) * 256 < 64 * MiB  # so the default cap is 64 MiB
    with pytest.raises(ringpress.WireFormatError, match="default cap"):
        ringpress.decompress(f)
    np.testing.assert_array_equal(ringpress.decompress(f, max_bytes=x.nbytes), x)
    out = np.ones_like(x)
    assert ringpress.decompress(f, out=out) is out and not out.any()
    small = np.arange(1 << 20, dtype=np.float32)  # under the default cap: unchanged
    np.testing.assert_array_equal(ringpress.decompress(ringpress.compress(small)), small)


# ------------------------------------------------------------------ memory released on failure
def resign_frame_blocks(frame: bytearray) -> None:
    """Recomputes every block checksum of a frame, then its header check."""
    ndim = frame[7]
    nblocks = struct.unpack_from("<I", frame, F_NBLOCKS)[0]
    table = F_HEADER + 8 * ndim
    off = table + 16 * nblocks
    for i in range(nblocks):
        e = table + 16 * i
        stored = struct.unpack_from("<I", frame, e)[0]
        put64(frame, e + 8, xxhash.xxh3_64_intdigest(bytes(frame[off : off + stored])))
        off += stored
    resign_frame(frame)


def test_a_justified_allocation_that_fails_to_decode_is_released(tmp_path):
    """A staged fp16 container of 2^25 zeros (a 64 MiB payload from a few KB: within the zstd
    bound, so the stage's scratch is legitimately allocated) whose last zstd block is corrupt
    (checksums re-signed): the decode fails after the scratch was filled, and the scratch must be
    returned (an older main kept it for the life of the thread)."""
    n = 2**25
    buf = bytearray(
        bytes(ringpress.Pipeline(ringpress.FP16(), codec="zstd").encode(np.zeros(n, np.float32)))
    )
    frame = bytearray(buf[C_HEADER + 8 :])
    ndim = frame[7]
    nblocks = struct.unpack_from("<I", frame, F_NBLOCKS)[0]
    table = F_HEADER + 8 * ndim
    sizes = [struct.unpack_from("<I", frame, table + 16 * i)[0] for i in range(nblocks)]
    last = table + 16 * nblocks + sum(sizes[:-1])
    at = bytes(frame[last : last + sizes[-1]]).find(b"\x28\xb5\x2f\xfd")
    assert at >= 0, "the last block holds no zstd frame"
    frame[last + at] ^= 0xFF
    resign_frame_blocks(frame)
    buf[C_HEADER + 8 :] = frame
    p = resign_container(buf)
    assert len(p) < 64 * 1024
    with pytest.raises(ringpress.WireFormatError):
        ringpress.compressors.decode(p, max_elements=n)
    cases = [
        ("decode", "decode", p, {"max_elements": n}),
        ("container_payload", "container_payload", p, None),
    ]
    out = run_hostile(tmp_path, [("decode", encode("fp16", gradient(1024)), {})], cases)
    for r in out["results"]:
        assert r["error"] == "WireFormatError" and r["typed"], r
        # The 64 MiB scratch was filled (so peak grows); none of it may stay resident.
        assert r["growth"] < 16 * MiB, r
    assert out["peak_growth"] >= 48 * MiB, "the scratch was never allocated: the test tests nothing"

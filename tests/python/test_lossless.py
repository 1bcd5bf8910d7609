"""ringpress.compress / decompress: bit-exact round trips and API behaviour.

The wire format itself (independent decoder, malformed frames, golden frames) is tested in
test_wire_format.py.
"""

import numpy as np
import pytest
import ringpress
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

CODECS = ["zstd", "lz4", "none"]
SHUFFLES = ["auto", "byte", "bit", "none"]
DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def special_floats(dtype, n, rng):
    """Normal values mixed with NaN (several payloads), ±Inf, -0.0 and denormals."""
    finfo = np.finfo(dtype)
    specials = np.array(
        [
            np.nan,
            -np.nan,
            np.inf,
            -np.inf,
            -0.0,
            0.0,
            finfo.tiny / 2,
            -finfo.tiny / 4,
            finfo.max,
            finfo.min,
            finfo.eps,
        ],
        dtype=dtype,
    )
    x = (rng.standard_normal(n) * 1e-3).astype(dtype)
    idx = rng.integers(0, n, size=max(1, n // 5)) if n else np.array([], dtype=int)
    x[idx] = rng.choice(specials, size=idx.size)
    if n and dtype == np.float32:  # a NaN with a non-default payload must survive too
        x.view(np.uint32)[0] = 0x7FC12345
    return x


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40),
        elements=None,
    ),
    codec=st.sampled_from(CODECS),
    shuffle=st.sampled_from(SHUFFLES),
    threads=st.sampled_from([1, 2]),
    block_elems=st.sampled_from([None, 1, 7, 64, 1000]),
)
def test_round_trip_any_dtype_shape_content(arr, codec, shuffle, threads, block_elems):
    block_size = None if block_elems is None else block_elems * arr.dtype.itemsize
    frame = ringpress.compress(
        arr, codec=codec, shuffle=shuffle, threads=threads, block_size=block_size
    )
    out = ringpress.decompress(frame, threads=threads)
    assert same_bits(out, arr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_special_float_values(dtype, codec, shuffle):
    rng = np.random.default_rng(1)
    for n in (0, 1, 3, 8, 1000, 70001):
        x = special_floats(dtype, n, rng)
        out = ringpress.decompress(
            ringpress.compress(x, codec=codec, shuffle=shuffle, block_size=4096)
        )
        assert same_bits(out, x)


def test_empty_and_one_element():
    for x in (
        np.zeros(0, np.float32),
        np.zeros((3, 0, 2), np.int16),
        np.float64(2.5) * np.ones(()),
        np.array([7], np.int8),
    ):
        out = ringpress.decompress(ringpress.compress(x))
        assert same_bits(out, x)
    info = ringpress.frame_info(ringpress.compress(np.zeros(0, np.float32)))
    assert info["nblocks"] == 0 and info["nbytes"] == 0 and info["shape"] == (0,)


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_unaligned_input(offset):
    rng = np.random.default_rng(offset)
    raw = bytearray(rng.integers(0, 256, 4 * 50000 + 16, dtype=np.uint8).tobytes())
    x = np.frombuffer(memoryview(raw)[offset : offset + 4 * 50000], dtype=np.float32)
    assert x.ctypes.data % 4 != 0
    out = ringpress.decompress(ringpress.compress(x, block_size=4096))
    assert same_bits(out, x)


def test_bytes_like_inputs():
    data = bytes(range(256)) * 100
    for obj in (data, bytearray(data), memoryview(data)):
        frame = ringpress.compress(obj)
        assert ringpress.frame_info(frame)["dtype"] == "bytes"
        out = ringpress.decompress(frame)
        assert out.dtype == np.uint8 and out.tobytes() == data


def test_non_contiguous_input_is_copied():
    x = np.arange(10000, dtype=np.float32).reshape(100, 100)[:, ::3]
    out = ringpress.decompress(ringpress.compress(x))
    assert same_bits(out, np.ascontiguousarray(x))


def test_threads_give_identical_frames():
    x = (np.random.default_rng(0).standard_t(3, 1 << 20) * 1e-3).astype(np.float32)
    one = bytes(ringpress.compress(x, threads=1, block_size=65536))
    two = bytes(ringpress.compress(x, threads=2, block_size=65536))
    assert one == two
    assert same_bits(ringpress.decompress(two, threads=2), x)


def test_gradient_aware_mode_codes_only_paying_planes():
    x = (np.random.default_rng(0).standard_normal(1 << 20) * 1e-3).astype(np.float32)
    info = ringpress.frame_info(ringpress.compress(x, codec="zstd", shuffle="auto"))
    blocks = info["blocks"]
    assert all(b["coding"] == "planes" for b in blocks)
    # The exponent byte (plane 3) is coded; the low mantissa bytes (planes 0, 1) are stored raw.
    assert all(b["plane_mask"] & 0b1000 and not b["plane_mask"] & 0b0011 for b in blocks)


def test_incompressible_data_is_stored_raw_and_bound_holds():
    x = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8)
    for codec in ("zstd", "lz4"):
        frame = ringpress.compress(x, codec=codec)
        assert all(b["coding"] == "raw" for b in ringpress.frame_info(frame)["blocks"])
        assert len(frame) <= ringpress.compress_bound(x)
        assert len(frame) - x.nbytes < 200  # header + table only


def test_sparse_data_compresses_well():
    rng = np.random.default_rng(0)
    x = np.zeros(1 << 20, np.float32)
    idx = rng.choice(x.size, x.size // 100, replace=False)
    x[idx] = rng.standard_normal(idx.size)
    frame = ringpress.compress(x)
    assert x.nbytes / len(frame) > 20
    assert same_bits(ringpress.decompress(frame), x)


def test_out_buffers():
    x = np.linspace(-1, 1, 100000, dtype=np.float32)
    out = np.empty(ringpress.compress_bound(x), np.uint8)
    n = ringpress.compress(x, out=out)
    assert isinstance(n, int) and 0 < n <= out.size
    frame = out[:n]
    dst = np.empty_like(x)
    assert ringpress.decompress(frame, out=dst) is dst
    assert same_bits(dst, x)
    with pytest.raises(ringpress.UsageError, match="too small"):
        ringpress.compress(x, out=np.empty(100, np.uint8))
    with pytest.raises(ringpress.UsageError, match="dtype"):
        ringpress.decompress(frame, out=np.empty(100000, np.int32))
    with pytest.raises(ringpress.UsageError, match="bytes"):
        ringpress.decompress(frame, out=np.empty(99999, np.float32))
    with pytest.raises(ringpress.UsageError, match="contiguous"):
        ringpress.decompress(frame, out=np.empty(200000, np.float32)[::2])


def test_pool_reuses_buffers():
    x = np.ones(1 << 20, np.float32)
    ringpress.compress(x)  # warm
    before = ringpress._core.buffer_pool_stats()
    for _ in range(5):
        ringpress.decompress(ringpress.compress(x))
    after = ringpress._core.buffer_pool_stats()
    assert after["hits"] - before["hits"] >= 8
    assert after["misses"] == before["misses"]


def test_bad_arguments():
    x = np.ones(10, np.float32)
    with pytest.raises(ringpress.UsageError, match="codec"):
        ringpress.compress(x, codec="gzip")
    with pytest.raises(ringpress.UsageError, match="shuffle"):
        ringpress.compress(x, shuffle="sideways")
    with pytest.raises(ringpress.UsageError, match="zstd level"):
        ringpress.compress(x, level=99)
    with pytest.raises(ringpress.UsageError, match="lz4 level"):
        ringpress.compress(x, codec="lz4", level=0)
    with pytest.raises(ringpress.UsageError, match="block_size"):
        ringpress.compress(x, block_size=6)
    with pytest.raises(ringpress.UsageError, match="threads"):
        ringpress.compress(x, threads=0)
    with pytest.raises(ringpress.UsageError, match="unsupported dtype"):
        ringpress.compress(np.ones(3, np.complex64))
    with pytest.raises(ringpress.UsageError, match="expected a numpy array"):
        ringpress.compress(object())
    with pytest.raises(ringpress.UsageError, match="reinterpret"):
        ringpress.compress(x, dtype="bfloat16")
    with pytest.raises(ringpress.UsageError, match="big-endian"):
        ringpress.compress(np.ones(3, ">f4"))
    with pytest.raises(ringpress.WireFormatError):
        ringpress.decompress(b"not a frame at all, definitely not")


def test_bfloat16_as_uint16_view():
    bits = np.random.default_rng(0).standard_normal(5000).astype(np.float32).view(np.uint32) >> 16
    bits = bits.astype(np.uint16)
    frame = ringpress.compress(bits, dtype="bfloat16")
    assert ringpress.frame_info(frame)["dtype"] == "bfloat16"
    assert same_bits(ringpress.decompress(frame), bits)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
    ],
)
def test_torch_tensors(dtype):
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(37, 129, generator=g) * 100).to(dtype)
    frame = ringpress.compress(t)
    info = ringpress.frame_info(frame)
    assert info["shape"] == (37, 129)
    out = torch.empty_like(t)
    ringpress.decompress(frame, out=out)
    assert torch.equal(out.view(torch.uint8), t.view(torch.uint8))
    if dtype != torch.bfloat16:
        assert np.array_equal(ringpress.decompress(frame), t.numpy())


def test_torch_non_contiguous_and_grad():
    t = torch.randn(64, 64, requires_grad=True)
    frame = ringpress.compress(t.t())  # transposed view, requires_grad: compressed detached
    out = ringpress.decompress(frame)
    assert np.array_equal(out, t.detach().t().contiguous().numpy())


def test_threads_work_after_fork():
    # The worker pool does not survive fork(); the child must build a fresh one, not hang.
    import os
    import signal

    x = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32)
    ringpress.compress(x, threads=2, block_size=16384)  # parent pool has live workers
    pid = os.fork()
    if pid == 0:  # child
        signal.alarm(20)
        try:
            ok = same_bits(
                ringpress.decompress(ringpress.compress(x, threads=2, block_size=16384), threads=2),
                x,
            )
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_overlapping_buffers_are_rejected():
    buf = np.zeros(1 << 16, np.uint8)
    x = buf[: 4 * 1000].view(np.float32)
    with pytest.raises(ringpress.UsageError, match="overlap"):
        ringpress.compress(x, out=buf)
    frame = bytearray(ringpress.compress(np.ones(1000, np.float32), codec="none"))
    assert len(frame) >= 4000 + 16
    view = np.frombuffer(frame, np.uint8)
    with pytest.raises(ringpress.UsageError, match="overlap"):  # decoding into its own input
        ringpress.decompress(frame, out=view[16:4016].view(np.float32))

"""CUDA twins of the sub-byte quantizers against the CPU compressors, byte for byte.

The host-staged bindings (``_core.cuda_*_host_staged``) run csrc/cuda/quantize.cu on host
buffers. Their payload and scales must equal the wire codec payload in the container that
``ringpress.Quantize`` / ``Sign`` / ``Ternary`` write (a fresh compressor's first call: its seed,
counter offset 0), and decoding those sections on the GPU must equal ``Compressor.decode``, bit for
bit. The comparisons need a CUDA device and are skipped without one (this repository's CI has
none: the kernels are compiled there, not run); argument checks and the no-device errors run
everywhere.
"""

import numpy as np
import pytest
import ringpress
from ringpress import _core
from ringpress.compressors import container_payload

HAVE_GPU = bool(ringpress.build_info()["cuda_devices"])
needs_gpu = pytest.mark.skipif(
    not HAVE_GPU, reason="needs a CUDA device (none here: the CUDA kernels are only compiled)"
)

BLOCKS = [1, 3, 64, 512]
SEED = 0x5EED1234


def sizes_for(block):
    return sorted({0, 1, 7, block - 1, block + 1, 100003})


def make_data(n, block, seed):
    """Normal data; block b % 6: 1 subnormal, 2 tiny (< 2^-96), 3 huge (+-FLT_MAX), 4 +-0."""
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    kind = (np.arange(n) // block) % 6
    first = np.arange(n) % block == 0
    fmax = np.finfo(np.float32).max
    x = np.where(kind == 1, np.ldexp(x, -135).astype(np.float32), x)
    x = np.where(kind == 2, np.ldexp(x, -110).astype(np.float32), x)
    x = np.where(kind == 3, np.where(first, np.copysign(fmax, x), x * np.float32(1e37)), x)
    x = np.where(kind == 4, np.where(np.arange(n) % 2 == 1, np.float32(-0.0), np.float32(0.0)), x)
    return np.ascontiguousarray(x, dtype=np.float32)


def cpu_sections(compressor, x):
    """(scales, codes) of the wire codec payload in the container the CPU compressor writes for
    x (docs/wire-format.md: ceil(n / block) float32 scales, then the packed codes), and its
    decode."""
    payload = compressor.encode(x)
    raw = container_payload(payload)
    nb = -(-x.size // compressor.block)
    scales = np.frombuffer(raw[: 4 * nb], dtype=np.float32)
    codes = np.frombuffer(raw[4 * nb :], dtype=np.uint8)
    return scales, codes, compressor.decode(payload).reshape(-1)


def check(x, compressor, encode, decode):
    scales, codes, decoded = cpu_sections(compressor, x)
    g_codes = np.full(codes.size, 0x5A, dtype=np.uint8)
    g_scales = np.full(scales.size, -9.0, dtype=np.float32)
    encode(x, g_codes, g_scales)
    np.testing.assert_array_equal(g_scales.view(np.uint32), scales.view(np.uint32))
    np.testing.assert_array_equal(g_codes, codes)
    out = np.full(x.size, -5.0, dtype=np.float32)
    decode(codes, scales, out)
    np.testing.assert_array_equal(out.view(np.uint32), decoded.view(np.uint32))


@needs_gpu
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_blockwise_matches_cpu(bits, block, stochastic):
    for n in sizes_for(block):
        x = make_data(n, block, n * 31 + block)
        check(
            x,
            ringpress.Quantize(bits=bits, block=block, stochastic=stochastic, seed=SEED),
            lambda x, p, s: _core.cuda_blockwise_encode_host_staged(
                x, p, s, bits, block, stochastic, SEED, 0
            ),
            lambda p, s, o: _core.cuda_blockwise_decode_host_staged(p, s, o, bits, block),
        )


@needs_gpu
@pytest.mark.parametrize("block", [*BLOCKS, 100003])
def test_sign_matches_cpu(block):
    for n in sizes_for(block):
        check(
            make_data(n, block, n + block),
            ringpress.Sign(block=block),
            lambda x, p, s: _core.cuda_sign_encode_host_staged(x, p, s, block),
            lambda p, s, o: _core.cuda_sign_decode_host_staged(p, s, o, block),
        )


@needs_gpu
@pytest.mark.parametrize("seed", [0, SEED])
@pytest.mark.parametrize("block", BLOCKS)
def test_ternary_matches_cpu(block, seed):
    for n in sizes_for(block):
        check(
            make_data(n, block, n * 7 + block),
            ringpress.Ternary(block=block, seed=seed),
            lambda x, p, s: _core.cuda_ternary_encode_host_staged(x, p, s, block, seed, 0),
            lambda p, s, o: _core.cuda_ternary_decode_host_staged(p, s, o, block),
        )


@needs_gpu
def test_non_finite_block_gets_the_cpus_nan_scale():
    x = make_data(1000, 64, 3)
    x[200] = np.inf
    p, s = np.empty(500, np.uint8), np.empty(16, np.float32)
    _core.cuda_blockwise_encode_host_staged(x, p, s, 4, 64)
    assert s.view(np.uint32)[3] == 0x7FC00000 and not np.isnan(np.delete(s, 3)).any()
    # The CPU treats the block the same way (NaN when decoded; its bytes: the C++ test).
    cpu = ringpress.Quantize(bits=4, block=64)
    out = cpu.decode(cpu.encode(x))
    assert np.isnan(out[192:256]).all() and not np.isnan(np.delete(out, range(192, 256))).any()
    ps, ss = np.empty(500, np.uint8), np.empty(16, np.float32)
    ref = make_data(1000, 64, 3)
    ref[192:256] = 0
    _core.cuda_blockwise_encode_host_staged(ref, ps, ss, 4, 64)
    assert np.array_equal(p, ps)  # the bad block's codes are zero, the others unchanged


def test_buffer_sizes_are_checked_before_the_device():
    x = np.ones(100, np.float32)
    with pytest.raises(ringpress.UsageError, match="payload size"):
        _core.cuda_blockwise_encode_host_staged(
            x, np.empty(49, np.uint8), np.empty(2, np.float32), 4, 64
        )
    with pytest.raises(ringpress.UsageError, match="scales size"):
        _core.cuda_sign_encode_host_staged(x, np.empty(13, np.uint8), np.empty(1, np.float32), 64)
    with pytest.raises(ringpress.UsageError, match="bits must be"):
        _core.cuda_blockwise_decode_host_staged(
            np.empty(38, np.uint8), np.empty(2, np.float32), x, 3, 64
        )
    with pytest.raises(ringpress.UsageError, match="block"):
        _core.cuda_ternary_encode_host_staged(x, np.empty(25, np.uint8), np.empty(0, np.float32), 0)


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present")
def test_entry_points_raise_without_a_device():
    want = "no CUDA device" if ringpress.build_info()["cuda"] else "no CUDA support"
    x, out = np.ones(100, np.float32), np.empty(100, np.float32)
    p2, p1, s = np.empty(25, np.uint8), np.empty(13, np.uint8), np.empty(2, np.float32)
    calls = [
        lambda: _core.cuda_blockwise_encode_host_staged(x, p2, s, 2, 64, True, 1, 2),
        lambda: _core.cuda_blockwise_decode_host_staged(p2, s, out, 2, 64),
        lambda: _core.cuda_sign_encode_host_staged(x, p1, s, 64),
        lambda: _core.cuda_sign_decode_host_staged(p1, s, out, 64),
        lambda: _core.cuda_ternary_encode_host_staged(x, p2, s, 64, 1),
        lambda: _core.cuda_ternary_decode_host_staged(p2, s, out, 64),
    ]
    for call in calls:
        with pytest.raises(ringpress.UsageError, match=want):
            call()

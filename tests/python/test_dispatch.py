"""SIMD dispatch: every supported kernel agrees with the generic one and with a numpy oracle."""

import numpy as np
import pytest
import ringpress
from ringpress import _core

LEVELS = _core.simd_levels_supported()
SIZES = [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 127, 255, 256, 1000, 4096 + 13, 65536 + 5, 1 << 20]
ELEMSIZES = [1, 2, 3, 4, 8, 16]


def byte_shuffle_ref(buf: np.ndarray, s: int) -> np.ndarray:
    n = buf.size // s
    head = buf[: n * s].reshape(n, s).T.reshape(-1)
    return np.concatenate([head, buf[n * s :]])


def bit_shuffle_ref(buf: np.ndarray, s: int) -> np.ndarray:
    n8 = (buf.size // s) // 8 * 8
    m = buf[: n8 * s].reshape(n8, s)
    bits = np.unpackbits(m, axis=1, bitorder="little").reshape(n8, s * 8)  # [i, 8*b + k]
    planes = np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)  # plane p, byte i/8
    return np.concatenate([planes, buf[n8 * s :]])


def run(fn, src, s, level):
    dst = np.empty_like(src)
    getattr(_core, fn)(src, dst, s, level)
    return dst


def test_levels_supported_contains_the_chosen_one():
    assert "generic" in LEVELS
    assert ringpress.build_info()["simd"] in LEVELS


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("s", ELEMSIZES)
def test_kernels_match_numpy_oracle_and_generic(level, s):
    rng = np.random.default_rng(s)
    for nbytes in SIZES:
        src = rng.integers(0, 256, nbytes, dtype=np.uint8)
        bs = run("byte_shuffle", src, s, level)
        np.testing.assert_array_equal(bs, byte_shuffle_ref(src, s))
        np.testing.assert_array_equal(bs, run("byte_shuffle", src, s, "generic"))
        np.testing.assert_array_equal(run("byte_unshuffle", bs, s, level), src)
        bt = run("bit_shuffle", src, s, level)
        np.testing.assert_array_equal(bt, bit_shuffle_ref(src, s))
        np.testing.assert_array_equal(run("bit_unshuffle", bt, s, level), src)


@pytest.mark.parametrize("level", LEVELS)
def test_unaligned_views(level):
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, 70000, dtype=np.uint8)
    for off in range(1, 4):
        src = base[off : off + 65536 + 3]
        out = np.zeros(len(src) + 8, dtype=np.uint8)
        dst = out[off : off + len(src)]
        _core.byte_shuffle(src, dst, 4, level)
        np.testing.assert_array_equal(dst, byte_shuffle_ref(src, 4))
        assert not out[off + len(src) :].any() and not out[:off].any()  # no overrun


def test_float_data_and_default_level():
    x = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    src = x.view(np.uint8)
    dst = np.empty_like(src)
    _core.byte_shuffle(src, dst, 4)
    np.testing.assert_array_equal(dst, byte_shuffle_ref(src, 4))


def test_unsupported_level_is_a_usage_error():
    with pytest.raises(ringpress.UsageError, match="avx9000"):
        _core.byte_shuffle(bytearray(8), bytearray(8), 4, "avx9000")


@pytest.mark.skipif(not ringpress.build_info()["cuda_devices"], reason="no CUDA device")
def test_cuda_shuffle_matches_cpu():
    src = np.random.default_rng(3).integers(0, 256, (1 << 20) + 3, dtype=np.uint8)
    dst = np.empty_like(src)
    _core.cuda_byte_shuffle_host_staged(src, dst, 4, False)
    np.testing.assert_array_equal(dst, byte_shuffle_ref(src, 4))
    back = np.empty_like(src)
    _core.cuda_byte_shuffle_host_staged(dst, back, 4, True)
    np.testing.assert_array_equal(back, src)


@pytest.mark.skipif(ringpress.build_info()["cuda"], reason="CUDA built in")
def test_cuda_entry_points_raise_without_cuda():
    with pytest.raises(ringpress.UsageError, match="no CUDA support"):
        _core.cuda_byte_shuffle_host_staged(bytearray(8), bytearray(8), 4, False)

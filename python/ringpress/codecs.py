"""Lossless compression of tensors: byte/bit shuffle + lz4/zstd in the ringpress frame format.

``compress`` accepts numpy arrays, torch CPU tensors and any buffer-protocol object and returns a
bytes-like :class:`ringpress._core.Buffer` (pooled memory; ``bytes(buf)`` copies it out).
``decompress`` restores dtype and shape. The frame is documented in docs/wire-format.md; every
byte of it is validated on decode (``ringpress.WireFormatError`` on anything malformed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from .errors import UsageError, WireFormatError

__all__ = ["compress", "compress_bound", "decompress", "frame_info"]

# numpy dtype -> wire dtype name (docs/wire-format.md, "dtype codes").
_NP_TO_WIRE: dict[np.dtype, str] = {
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int8): "int8",
    np.dtype(np.int16): "int16",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint64): "uint64",
    np.dtype(np.float16): "float16",
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.bool_): "bool",
}
# wire dtype name -> numpy dtype used to return it (bfloat16 comes back as its uint16 bit patterns).
_WIRE_TO_NP: dict[str, np.dtype] = {v: k for k, v in _NP_TO_WIRE.items()}
_WIRE_TO_NP["bfloat16"] = np.dtype(np.uint16)
_WIRE_TO_NP["bytes"] = np.dtype(np.uint8)
_ITEMSIZE = {name: dt.itemsize for name, dt in _WIRE_TO_NP.items()}

_CODECS = ("zstd", "lz4", "none")
_SHUFFLES = ("auto", "byte", "bit", "none")


def _torch_tensor_view(x: Any) -> tuple[np.ndarray, str] | None:
    """A numpy view of a torch CPU tensor and its wire dtype, or None if x is not a tensor."""
    mod = type(x).__module__
    if not mod.startswith("torch"):
        return None
    import torch

    if not isinstance(x, torch.Tensor):
        return None
    if x.device.type != "cpu":
        raise UsageError(
            f"ringpress.compress takes CPU tensors; got a tensor on {x.device} "
            "(copy it with .cpu() first)",
            op="compress",
        )
    t = x.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    try:
        arr = t.numpy()
    except TypeError as e:
        raise UsageError(f"unsupported tensor dtype {t.dtype}", op="compress") from e
    return arr, ""


def _as_array(x: Any, dtype: str | None) -> tuple[np.ndarray, str, tuple[int, ...]]:
    tv = _torch_tensor_view(x)
    if tv is not None:
        arr, wire = tv
    elif isinstance(x, np.ndarray):
        arr, wire = x, ""
    else:
        try:
            mv = memoryview(x)
        except TypeError:
            raise UsageError(
                f"cannot compress a {type(x).__name__}: expected a numpy array, a torch CPU "
                "tensor or a buffer-protocol object",
                op="compress",
            ) from None
        if mv.format in ("B", "b", "c") and mv.ndim <= 1 and dtype is None:
            arr = (
                np.frombuffer(mv, dtype=np.uint8) if mv.contiguous else np.array(mv, dtype=np.uint8)
            )
            return arr, "bytes", ()
        arr, wire = np.asarray(mv), ""
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    if not wire:
        if arr.dtype.byteorder == ">":
            raise UsageError(f"big-endian dtype {arr.dtype} is not supported", op="compress")
        wire = _NP_TO_WIRE.get(arr.dtype, "")
        if not wire:
            raise UsageError(
                f"unsupported dtype {arr.dtype} (supported: float32, float64, float16, bfloat16, "
                "int8..int64, uint8..uint64, bool)",
                op="compress",
            )
    if dtype is not None:  # reinterpret, e.g. a uint16 view of bfloat16 data
        if dtype not in _ITEMSIZE or dtype == "bytes":
            raise UsageError(f"unknown dtype '{dtype}'", op="compress")
        if _ITEMSIZE[dtype] != arr.dtype.itemsize:
            raise UsageError(
                f"dtype='{dtype}' ({_ITEMSIZE[dtype]} bytes) cannot reinterpret {arr.dtype} "
                f"({arr.dtype.itemsize} bytes)",
                op="compress",
            )
        wire = dtype
    return arr, wire, tuple(int(d) for d in arr.shape)


def compress(
    x: Any,
    codec: str = "zstd",
    level: int = 1,
    shuffle: str = "auto",
    threads: int = 1,
    *,
    block_size: int | None = None,
    dtype: str | None = None,
    out: Any = None,
):
    """Compress ``x`` losslessly into a ringpress frame.

    Args:
        x: numpy array, torch CPU tensor (bfloat16 included) or any buffer-protocol object
            (bytes-like objects are stored as untyped bytes). Non-contiguous inputs are copied.
        codec: ``"zstd"``, ``"lz4"`` or ``"none"`` (store + checksum only).
        level: zstd level (−7..22) or lz4 acceleration (1..65).
        shuffle: ``"auto"`` (per block and per byte plane, chosen by measurement: planes that
            would not compress are stored raw), ``"byte"``, ``"bit"`` or ``"none"``.
        threads: worker threads for the blocks (1 = the calling thread only).
        block_size: bytes per independently coded block (default 256 KiB).
        dtype: reinterpret ``x`` as this wire dtype, e.g. ``"bfloat16"`` for a uint16 view.
        out: a writable buffer of at least ``compress_bound(x)`` bytes to write the frame into;
            then the frame's size is returned instead of a new buffer.

    Returns:
        A bytes-like ``Buffer`` holding the frame (or its size when ``out`` is given).
    """
    if codec not in _CODECS:
        raise UsageError(
            f"unknown codec '{codec}' (expected one of {', '.join(_CODECS)})", op="compress"
        )
    if shuffle not in _SHUFFLES:
        raise UsageError(
            f"unknown shuffle '{shuffle}' (expected one of {', '.join(_SHUFFLES)})", op="compress"
        )
    arr, wire, shape = _as_array(x, dtype)
    return _core.lossless_compress(
        arr, wire, list(shape), codec, int(level), shuffle, int(threads), int(block_size or 0), out
    )


def compress_bound(x: Any, block_size: int | None = None) -> int:
    """Largest frame ``compress(x)`` can produce: the size an ``out=`` buffer needs."""
    arr, _, shape = _as_array(x, None)
    bs = block_size or (256 * 1024 // arr.dtype.itemsize * arr.dtype.itemsize)
    return _core.compress_bound(arr.nbytes, len(shape), bs)


def frame_info(buf: Any) -> dict:
    """Parse and validate a frame's header and block table (blocks are not decoded)."""
    return _core.frame_info(buf)


# decompress() without out= or max_bytes=: at most this much, or _DEFAULT_RATIO output bytes per
# frame byte, whichever is larger (docs/wire-format.md, "What a decoder allocates").
_DEFAULT_MAX_BYTES = 64 << 20
_DEFAULT_RATIO = 256


def decompress(buf: Any, out: Any = None, threads: int = 1, *, max_bytes: int | None = None):
    """Decode a frame made by :func:`compress`.

    Returns a numpy array with the original dtype and shape (bfloat16 data comes back as its
    uint16 bit patterns; pass a ``torch.bfloat16`` tensor as ``out`` to get it typed). With
    ``out`` (a C-contiguous writable numpy array or torch CPU tensor of the same number of
    bytes and a compatible dtype) the data is written in place and ``out`` is returned.

    The frame is hostile input. Without ``out``, the array it claims is allocated only if its
    size is at most ``max_bytes`` (default: ``max(64 MiB, 256 * len(buf))``, i.e. 64 MiB or 256
    output bytes per frame byte); a larger claim raises ``WireFormatError`` before anything is
    allocated. A caller expecting larger data passes ``max_bytes`` (or ``out``, which bounds the
    output by its own size). The format's own rule (at most 32768 output bytes per stored byte
    of a zstd block) still applies whatever ``max_bytes`` says.
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool)
        or not isinstance(max_bytes, (int, np.integer))
        or not 0 <= int(max_bytes) <= 2**62
    ):
        raise UsageError(
            f"max_bytes must be an int in [0, 2**62], got {max_bytes!r}", op="decompress"
        )
    info = _core.frame_header(buf)
    wire = info["dtype"]
    if out is None:
        if max_bytes is None:
            cap = max(_DEFAULT_MAX_BYTES, _DEFAULT_RATIO * memoryview(buf).nbytes)
            how = "the default cap max(64 MiB, 256 x the frame's bytes)"
        else:
            cap = int(max_bytes)
            how = "max_bytes"
        if info["nbytes"] > cap:
            raise WireFormatError(
                f"frame claims {info['nbytes']} bytes of output, more than {how} = {cap} "
                "(pass max_bytes= or out= to accept a larger frame)",
                op="decompress",
            )
        raw = _core.lossless_decompress(buf, None, int(threads))
        arr = np.frombuffer(raw, dtype=_WIRE_TO_NP[wire])
        return arr if wire == "bytes" else arr.reshape(info["shape"])
    tv = _torch_tensor_view(out)
    if tv is not None:
        target, out_wire = tv
        if not out.is_contiguous():
            raise UsageError("out must be a contiguous tensor", op="decompress")
        out_wire = out_wire or _NP_TO_WIRE.get(target.dtype, "")
    elif isinstance(out, np.ndarray):
        target, out_wire = out, _NP_TO_WIRE.get(out.dtype, "")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise UsageError("out must be a C-contiguous, writable array", op="decompress")
    else:
        raise UsageError(
            f"out must be a numpy array or torch CPU tensor, got {type(out).__name__}",
            op="decompress",
        )
    compatible = (
        out_wire == wire
        or (wire == "bytes" and out_wire == "uint8")
        or (wire == "bfloat16" and out_wire == "uint16")
        or (wire == "uint16" and out_wire == "bfloat16")
    )
    if not compatible:
        raise UsageError(
            f"out has dtype {out_wire or target.dtype} but the frame holds {wire}", op="decompress"
        )
    if target.nbytes != info["nbytes"]:
        raise UsageError(
            f"out has {target.nbytes} bytes but the frame decodes to {info['nbytes']}",
            op="decompress",
        )
    _core.lossless_decompress(buf, target, int(threads))
    return out

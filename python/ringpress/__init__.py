"""ringpress: compressed collectives for distributed training.

Public names live here; the native extension ``ringpress._core`` is private.
"""

from __future__ import annotations

from . import _core, errors
from ._core import __version__
from ._core import build_info as _native_build_info
from .codecs import compress, compress_bound, decompress, frame_info
from .comm import Communicator, HashStore, TCPStore, TCPStoreServer, Work
from .compressors import (
    BF16,
    FP16,
    Compressor,
    ErrorFeedback,
    Pipeline,
    Quantize,
    RandomK,
    Sign,
    Ternary,
    Threshold,
    TopK,
    container_info,
)
from .errors import (
    CodecError,
    InternalError,
    RingpressError,
    TimeoutError,
    TransportError,
    UsageError,
    WireFormatError,
)

__all__ = [
    "BF16",
    "FP16",
    "CodecError",
    "Communicator",
    "Compressor",
    "ErrorFeedback",
    "HashStore",
    "InternalError",
    "Pipeline",
    "Quantize",
    "RandomK",
    "RingpressError",
    "Sign",
    "TCPStore",
    "TCPStoreServer",
    "Ternary",
    "Threshold",
    "TimeoutError",
    "TopK",
    "TransportError",
    "UsageError",
    "WireFormatError",
    "Work",
    "__version__",
    "build_info",
    "compress",
    "compress_bound",
    "container_info",
    "decompress",
    "errors",
    "frame_info",
    "wire_codecs",
]


def wire_codecs() -> list[dict]:
    """The wire codecs of collectives (the core's registry, ``ringpress/codec.h``): one dict per
    codec with ``id`` (its byte in every message header), ``name`` (what ``compression=`` takes;
    ``"auto"`` picks among them), ``version`` (payload layout), ``exact`` (bit-identical),
    ``dtypes`` (``"reducible"``: any dtype and op; ``"float32-sum"``: float32 with sum/avg),
    ``schedule`` (``"ring"``: per-hop segments; ``"allgather"``: whole payloads), ``doc`` and
    ``params`` (the keyword arguments of ``Communicator.allreduce`` the codec reads). The gradient
    compressors (``ringpress.TopK``, ...) are the lossy ones. Payload layouts:
    docs/wire-format.md."""
    return list(_core.codecs())


def build_info() -> dict:
    """What this build contains and what it chose on this machine.

    Keys: ``version``, ``compiler``, ``build_type``, ``simd`` (level in use, after the
    ``RINGPRESS_SIMD`` cap), ``simd_best``, ``simd_built``, ``shuffle_kernel``, ``cpu_vendor``,
    ``cpu_features``, ``cuda`` (kernels compiled in), ``cuda_architectures``,
    ``cuda_runtime_version``, ``cuda_devices`` (usable now), ``lz4``/``zstd`` (runtime library
    versions) and ``lz4_compiled``/``zstd_compiled`` (headers built against), ``sanitize``.
    """
    return _native_build_info()

"""``hvd.Compression``: Horovod's compressor interface, plus ringpress's wire codecs.

Horovod's contract: a compressor has ``compress(tensor) -> (tensor, ctx)`` and
``decompress(tensor, ctx) -> tensor``, applied before and after the allreduce; ``Compression.none``
and ``Compression.fp16`` (floating-point tensors are sent as 16-bit floats). A user's own
compressor with these two methods works the same way here.

ringpress adds its wire codecs (``ringpress.wire_codecs()``: lossless, bf16, int8, int4, int2,
sign, ternary, topk, randomk, threshold, ...) and ``auto``: ``Compression.int8`` etc. These are
not applied around the allreduce but inside it (the codec runs in the ring's segment pipeline,
docs/algorithms.md), and the lossy ones keep an error-feedback residual in
``DistributedOptimizer`` (what compression dropped from a gradient is added to the next one).
``Compression.ringpress(kind, error_feedback=..., **params)`` makes one with other parameters
(``block``, ``ratio``, ``stochastic``, ...: the keyword arguments of
:meth:`ringpress.Communicator.allreduce` that the codec reads).

``Compression.fp16`` on a float32 tensor with Average/Sum uses ringpress's ``fp16`` wire codec
(the same 2 bytes per element on the wire, one rounding per ring hop, as Horovod's cast-then-sum
rounds each partial sum), without error feedback, as Horovod has none; other floating dtypes
are cast as Horovod does.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _core
from ..errors import UsageError

# From the core's codec registry (like ringpress.torch.hooks.KINDS), plus the "auto" mode.
KINDS = (*(c["name"] for c in _core.codecs()), "auto")
LOSSY = frozenset((*(c["name"] for c in _core.codecs() if not c["exact"]), "auto"))
# Keyword arguments of Communicator.allreduce that a codec may read.
PARAMS = frozenset(
    (
        "codec",
        "level",
        "block",
        "ratio",
        "sampled",
        "allow",
        "tolerance",
        "stochastic",
        "threshold",
        "values",
    )
)


class Compressor:
    """Horovod's compressor interface (the default does nothing)."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor


class NoneCompressor(Compressor):
    """No compression."""


class FP16Compressor(Compressor):
    """Floating-point tensors travel as float16 (Horovod's ``Compression.fp16``)."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if tensor.is_floating_point() and tensor.dtype != torch.float16:
            return tensor.to(torch.float16), tensor.dtype
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor if ctx is None else tensor.to(ctx)


class RingpressCompressor(Compressor):
    """A ringpress wire codec (or ``auto``) run inside the allreduce; see the module docstring.

    ``compress``/``decompress`` are the identity: code that calls them by hand (Horovod's own
    optimizer does) sees the tensor unchanged, and the codec still runs on the wire."""

    def __init__(self, kind: str, *, error_feedback: bool = True, **params: Any):
        if kind not in KINDS:
            raise UsageError(
                f"Compression.ringpress: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        bad = sorted(set(params) - PARAMS)
        if bad:
            raise UsageError(
                f"Compression.ringpress: unknown parameter(s) {', '.join(bad)}; "
                f"the codecs read {', '.join(sorted(PARAMS))}"
            )
        if kind == "auto":
            # Like the DDP hook's default: auto may pick a lossy kind (error feedback covers it).
            params.setdefault("allow", "lossless,bf16,int8")
        self.kind = kind
        self.params = dict(params)
        self.error_feedback = bool(error_feedback) and kind in LOSSY

    def compress(self, tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:  # type: ignore[override]
        return tensor, None

    def decompress(self, tensor: torch.Tensor, ctx: Any) -> torch.Tensor:  # type: ignore[override]
        return tensor

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Compression.ringpress({self.kind!r}, error_feedback={self.error_feedback}{extra})"


class Compression:
    """Compressors for ``allreduce(..., compression=)`` and ``DistributedOptimizer``:
    ``none``, ``fp16`` (Horovod's), and one attribute per ringpress wire codec plus ``auto``
    (``Compression.int8``, ``.int4``, ``.topk``, ``.lossless``, ...); ``ringpress(kind, ...)``
    for other parameters."""

    none: Any = NoneCompressor
    fp16: Any = FP16Compressor

    @staticmethod
    def ringpress(kind: str, *, error_feedback: bool = True, **params: Any) -> RingpressCompressor:
        return RingpressCompressor(kind, error_feedback=error_feedback, **params)


for _kind in KINDS:
    if _kind not in ("none", "fp16") and _kind.isidentifier():
        setattr(Compression, _kind, RingpressCompressor(_kind))


class Plan:
    """How one allreduce of a given dtype and op runs under a compressor.

    ``kind``: the ``compression=`` of Communicator.allreduce ("none": plain); ``params``: its
    codec parameters; ``residual``: keep an error-feedback residual; ``wrap``: a Horovod-style
    compressor applied around the allreduce (None: not needed)."""

    __slots__ = ("kind", "params", "residual", "wrap")

    def __init__(self, kind: str, params: dict, residual: bool, wrap: Any):
        self.kind = kind
        self.params = params
        self.residual = residual
        self.wrap = wrap


def _is(c: Any, cls: type) -> bool:
    return c is cls or isinstance(c, cls) or (isinstance(c, type) and issubclass(c, cls))


def plan(compression: Any, dtype: torch.dtype, op: str) -> Plan:
    """The plan for ``compression`` on a buffer of ``dtype`` reduced with ringpress op ``op``."""
    if compression is None or _is(compression, NoneCompressor) or compression is Compressor:
        return Plan("none", {}, False, None)
    if isinstance(compression, RingpressCompressor):
        kind = compression.kind
        if kind in LOSSY and (dtype != torch.float32 or op not in ("sum", "avg")):
            # Lossy codecs reduce float32 sums only; elsewhere the exact codec (as the DDP hook).
            return Plan("lossless", {}, False, None)
        return Plan(kind, compression.params, compression.error_feedback, None)
    if _is(compression, FP16Compressor) and dtype == torch.float32 and op in ("sum", "avg"):
        return Plan("fp16", {}, False, None)
    if not (
        callable(getattr(compression, "compress", None))
        and callable(getattr(compression, "decompress", None))
    ):
        raise UsageError(
            f"compression must be one of hvd.Compression's or have compress() and decompress(), "
            f"got {compression!r}"
        )
    return Plan("none", {}, False, compression)

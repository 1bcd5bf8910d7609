"""Gradient compressors: top-k / random-k / threshold sparsification, quantization, error feedback.

Every compressor is one wire codec of the collectives' registry (``ringpress.wire_codecs()``;
``wire_codec`` and ``wire_params`` name it) whose payload goes into a compressed-tensor container
(docs/wire-format.md, "Compressed-tensor container": the codec's id and parameters, the shape,
checksums) and back::

    c = ringpress.Quantize(bits=8, block=512)
    payload = c.encode(grad)          # bytes-like; len(payload) bytes go on the wire
    approx = c.decode(payload)        # float32 numpy array with grad's shape

``comm.allreduce(compression=c.wire_codec, **c.wire_params)`` uses the same codec: a sparse one
(topk, randomk, threshold) sends each rank's tensor as exactly this payload (for the same seed:
the request's sequence number), a ring one encodes segments of partial sums the same way.
``Pipeline(c, codec="zstd")`` stacks a lossless stage on the payload and ``ErrorFeedback(c)``
keeps what ``c`` dropped and adds it back on the next step, through the same error-feedback helper
as the collectives; its residuals are saved and restored with ``state_dict()`` /
``load_state_dict()``. Inputs: float32 numpy arrays and torch CPU tensors of any shape. Error
bounds and costs: docs/algorithms.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from .errors import UsageError

__all__ = [
    "BF16",
    "FP16",
    "Compressor",
    "ErrorFeedback",
    "Pipeline",
    "Quantize",
    "RandomK",
    "Sign",
    "Ternary",
    "Threshold",
    "TopK",
    "container_info",
    "container_payload",
]


def _as_float32(x: Any, op: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A C-contiguous, aligned float32 numpy view (or copy) of x, and its shape."""
    if type(x).__module__.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu":
                raise UsageError(f"{op} takes CPU tensors; got one on {x.device}", op=op)
            if x.dtype != torch.float32:
                raise UsageError(f"{op} takes float32 tensors, got {x.dtype}", op=op)
            x = x.detach().contiguous().numpy()
    if not isinstance(x, np.ndarray):
        raise UsageError(
            f"{op} takes a float32 numpy array or torch CPU tensor, got {type(x).__name__}", op=op
        )
    if x.dtype != np.float32:
        raise UsageError(f"{op} takes float32 input, got {x.dtype}", op=op)
    if not (x.flags.c_contiguous and x.flags.aligned):
        x = np.array(x, dtype=np.float32, order="C")  # a fresh array is contiguous and aligned
    return x, tuple(int(d) for d in x.shape)


def container_info(payload: Any) -> dict:
    """Parse and validate a container's header: ``codec`` (the wire codec's name), ``codec_id``,
    ``codec_version``, ``params`` (the parameters that codec reads), ``n``, ``shape``,
    ``lossless`` (the lossless stage's codec, ``"none"`` without one) and ``staged`` (whether
    there is one), ``raw_size`` (bytes of the codec payload), ``payload_offset``,
    ``stored_size``, ``size`` and ``version``."""
    return _core.container_info(payload)


def container_payload(payload: Any, threads: int = 1) -> bytes:
    """The wire codec payload a container holds (the lossless stage undone): what
    ``_core.wire_decode(info["codec"], ..., info["n"], **info["params"])`` decodes."""
    return _core.container_payload(payload, int(threads))


class Compressor:
    """Base class: a subclass names its wire codec (``_codec``) and sets its parameters."""

    _codec = ""
    _seed = 0

    def __init__(self) -> None:
        self._calls = 0  # stochastic compressors use seed + call number as this call's stream

    @property
    def wire_codec(self) -> str:
        """The registry codec this compressor is (a name of ``ringpress.wire_codecs()``)."""
        return self._codec

    @property
    def wire_params(self) -> dict:
        """That codec's parameters (keyword arguments of ``Communicator.allreduce``)."""
        return {}

    def _encode(
        self,
        x: Any,
        residual: np.ndarray | None,
        threads: int,
        codec: str = "none",
        level: int = 1,
        shuffle: str = "auto",
    ):
        arr, shape = _as_float32(x, "compress")
        seed = (self._seed + self._calls) & 0xFFFFFFFFFFFFFFFF
        self._calls += 1
        return _core.compressor_encode(
            arr,
            list(shape),
            self._codec,
            **self.wire_params,
            lossless=codec,
            level=int(level),
            shuffle=shuffle,
            seed=seed,
            residual=residual,
            threads=int(threads),
        )

    def encode(self, x: Any, threads: int = 1):
        """Compress float32 ``x`` into a container (bytes-like). ``threads`` parallelises a
        lossless stage (``Pipeline``); the bytes never depend on it."""
        return self._encode(x, None, threads)

    def decode(
        self, payload: Any, out: Any = None, threads: int = 1, *, max_elements: int | None = None
    ) -> Any:
        """Reconstruct the float32 tensor; with ``out`` (float32 array/tensor) write into it.
        ``max_elements`` caps what a container may claim when ``out`` is not given (see
        :func:`decode`)."""
        return decode(payload, out=out, threads=threads, max_elements=max_elements)

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def decode(
    payload: Any, out: Any = None, threads: int = 1, *, max_elements: int | None = None
) -> Any:
    """Reconstruct the float32 tensor held by any compressor's container.

    The payload is hostile input: nothing is allocated for the element count it claims beyond
    what it can justify (docs/wire-format.md, "What a decoder allocates"). With ``out`` the
    container must hold exactly ``out``'s element count. Without it, a new array of the claimed
    count is returned only if that count is at most ``max_elements`` (default:
    ``max(2**24, 64 * len(payload))``, i.e. at most 64 MiB or 256 output bytes per payload byte);
    a larger claim raises ``WireFormatError`` before anything is allocated. A receiver that knows
    the expected size passes ``out`` or ``max_elements``.
    """
    if max_elements is not None:
        if (
            isinstance(max_elements, bool)
            or not isinstance(max_elements, (int, np.integer))
            or not 1 <= int(max_elements) <= 2**62
        ):
            raise UsageError(
                f"max_elements must be an int in [1, 2**62], got {max_elements!r}", op="decompress"
            )
    if out is None:
        raw = _core.compressor_decode(payload, None, int(threads), int(max_elements or 0))
        info = _core.container_info(payload)
        return np.frombuffer(raw, dtype=np.float32).reshape(info["shape"])
    target = out
    if type(out).__module__.startswith("torch"):
        import torch

        if (
            not isinstance(out, torch.Tensor)
            or out.dtype != torch.float32
            or out.device.type != "cpu"
        ):
            raise UsageError("out must be a float32 CPU tensor", op="decompress")
        if not out.is_contiguous():
            raise UsageError("out must be contiguous", op="decompress")
        target = out.detach().numpy()
    if not isinstance(target, np.ndarray) or target.dtype != np.float32:
        raise UsageError("out must be a float32 numpy array or torch tensor", op="decompress")
    if not target.flags.c_contiguous or not target.flags.writeable:
        raise UsageError("out must be C-contiguous and writable", op="decompress")
    _core.compressor_decode(payload, target, int(threads))
    return out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UsageError(msg, op="compressor")


def _check_block(block: Any) -> None:
    _check(
        isinstance(block, int) and 1 <= block <= 1 << 20,
        f"block must be an int in [1, 2^20], got {block}",
    )


class TopK(Compressor):
    """Wire codec ``"topk"``: keep the k = ceil(ratio * n) largest-magnitude elements.

    ``method="exact"``: exactly k (ties at the threshold go to the lowest index).
    ``method="sampled"``: threshold estimated from a sample (Deep Gradient Compression style),
    then corrected: returns the exact top-m for some k <= m <= ceil(k * (1 + tolerance)).
    ``values="fp16"`` sends the kept values as fp16 (4 -> 2 bytes each).
    """

    _codec = "topk"

    def __init__(
        self,
        ratio: float = 0.01,
        method: str = "sampled",
        tolerance: float = 0.05,
        values: str = "fp32",
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check(0.0 < ratio <= 1.0, f"ratio must be in (0, 1], got {ratio}")
        _check(
            method in ("exact", "sampled"), f"method must be 'exact' or 'sampled', got {method!r}"
        )
        _check(values in ("fp32", "fp16"), f"values must be 'fp32' or 'fp16', got {values!r}")
        _check(0.0 <= tolerance <= 1.0, f"tolerance must be in [0, 1], got {tolerance}")
        self.ratio, self.method, self.tolerance, self.values, self.seed = (
            ratio,
            method,
            tolerance,
            values,
            seed,
        )
        self._seed = seed

    @property
    def wire_params(self) -> dict:
        return {
            "ratio": float(self.ratio),
            "sampled": self.method == "sampled",
            "tolerance": float(self.tolerance),
            "values": self.values,
        }


class RandomK(Compressor):
    """Wire codec ``"randomk"``: keep k = ceil(ratio * n) elements at seeded random positions
    (unbiased after scaling by n/k, which the caller applies if it wants an unbiased estimate)."""

    _codec = "randomk"

    def __init__(self, ratio: float = 0.01, seed: int = 0, values: str = "fp32") -> None:
        super().__init__()
        _check(0.0 < ratio <= 1.0, f"ratio must be in (0, 1], got {ratio}")
        _check(values in ("fp32", "fp16"), f"values must be 'fp32' or 'fp16', got {values!r}")
        self.ratio, self.seed, self.values = ratio, seed, values
        self._seed = seed

    @property
    def wire_params(self) -> dict:
        return {"ratio": float(self.ratio), "values": self.values}


class Threshold(Compressor):
    """Wire codec ``"threshold"``: keep every element with |x| >= threshold (compared in
    float32)."""

    _codec = "threshold"

    def __init__(self, threshold: float, values: str = "fp32") -> None:
        super().__init__()
        _check(
            np.isfinite(threshold) and threshold >= 0,
            f"threshold must be finite and >= 0, got {threshold}",
        )
        _check(values in ("fp32", "fp16"), f"values must be 'fp32' or 'fp16', got {values!r}")
        self.threshold, self.values = threshold, values

    @property
    def wire_params(self) -> dict:
        return {"threshold": float(self.threshold), "values": self.values}


class Quantize(Compressor):
    """Wire codecs ``"int8"`` / ``"int4"`` / ``"int2"``: symmetric integers with one fp32 scale
    per ``block`` elements (1 <= block <= 2^20).

    Nearest rounding: |x - x'| <= scale / 2 with scale = max|x| of the block / (2^(bits-1) - 1).
    Stochastic rounding (seeded, counter-based; a fresh stream per call): unbiased, |x - x'| <= scale.
    """

    def __init__(
        self, bits: int = 8, block: int = 512, stochastic: bool = False, seed: int = 0
    ) -> None:
        super().__init__()
        _check(bits in (8, 4, 2), f"bits must be 8, 4 or 2, got {bits}")
        _check_block(block)
        self.bits, self.block, self.stochastic, self.seed = bits, block, stochastic, seed
        self._codec, self._seed = f"int{bits}", seed

    @property
    def wire_params(self) -> dict:
        return {"block": self.block, "stochastic": bool(self.stochastic)}


class FP16(Compressor):
    """Wire codec ``"fp16"``: IEEE half precision, round to nearest even (2 bytes per element)."""

    _codec = "fp16"


class BF16(Compressor):
    """Wire codec ``"bf16"``: bfloat16, round to nearest even (2 bytes per element)."""

    _codec = "bf16"


class Sign(Compressor):
    """Wire codec ``"sign"``: 1-bit sign with one scale (mean |x|) per block: EF-SignSGD; use with
    ErrorFeedback."""

    _codec = "sign"

    def __init__(self, block: int = 512) -> None:
        super().__init__()
        _check_block(block)
        self.block = block

    @property
    def wire_params(self) -> dict:
        return {"block": self.block}


class Ternary(Compressor):
    """Wire codec ``"ternary"``: TernGrad, {-1, 0, +1} * max|x| per block, stochastic and
    unbiased (2 bits per element)."""

    _codec = "ternary"

    def __init__(self, block: int = 512, seed: int = 0) -> None:
        super().__init__()
        _check_block(block)
        self.block, self.seed = block, seed
        self._seed = seed

    @property
    def wire_params(self) -> dict:
        return {"block": self.block}


class Pipeline(Compressor):
    """A lossy compressor followed by a lossless stage on its payload (same container: the
    payload becomes one frame, shuffled by the codec's value width, coded with ``codec``)."""

    def __init__(
        self, compressor: Compressor, codec: str = "zstd", level: int = 1, shuffle: str = "auto"
    ) -> None:
        _check(
            isinstance(compressor, Compressor)
            and not isinstance(compressor, (Pipeline, ErrorFeedback)),
            "Pipeline wraps a lossy compressor (TopK, Quantize, ...)",
        )
        _check(codec in ("zstd", "lz4", "none"), f"unknown codec {codec!r}")
        _check(shuffle in ("auto", "byte", "bit", "none"), f"unknown shuffle {shuffle!r}")
        self.compressor, self.codec, self.level, self.shuffle = compressor, codec, level, shuffle

    @property
    def wire_codec(self) -> str:
        return self.compressor.wire_codec

    @property
    def wire_params(self) -> dict:
        return self.compressor.wire_params

    def _encode(self, x, residual, threads, codec="none", level=1, shuffle="auto"):
        return self.compressor._encode(x, residual, threads, self.codec, self.level, self.shuffle)

    def encode(self, x: Any, threads: int = 1):
        return self._encode(x, None, threads)


class ErrorFeedback(Compressor):
    """Error feedback around a compressor: each step compresses x + residual[key] and keeps, as
    the new residual, what the receiver will not see (the codec's ``encode_feedback``, the one
    error-feedback helper the collectives use too). Over any number of steps,
    sum(decoded payloads) + residual == sum(inputs) (up to fp32 rounding).

    ``state_dict()`` holds the residuals and the wrapped compressor's stochastic stream position,
    so a checkpointed job resumes exactly where it stopped.
    """

    def __init__(self, compressor: Compressor) -> None:
        _check(
            isinstance(compressor, Compressor) and not isinstance(compressor, ErrorFeedback),
            "ErrorFeedback wraps a compressor",
        )
        self.compressor = compressor
        self._residuals: dict[str, np.ndarray] = {}

    @property
    def wire_codec(self) -> str:
        return self.compressor.wire_codec

    @property
    def wire_params(self) -> dict:
        return self.compressor.wire_params

    # `key` comes second (the documented call is encode(grad, name)); threads stays keyword-safe.
    def encode(self, x: Any, key: str = "default", threads: int = 1):  # type: ignore[override]
        arr, shape = _as_float32(x, "compress")
        r = self._residuals.get(key)
        if r is None or r.shape != shape:
            if r is not None:
                raise UsageError(
                    f"ErrorFeedback key {key!r} had shape {r.shape}, now {shape}", op="compress"
                )
            r = self._residuals[key] = np.zeros(shape, np.float32)
        return self.compressor._encode(arr, r, threads)

    def residual(self, key: str = "default") -> np.ndarray:
        """A copy of the residual kept for ``key``."""
        if key not in self._residuals:
            raise UsageError(f"no residual for key {key!r}", op="ErrorFeedback")
        return self._residuals[key].copy()

    def state_dict(self) -> dict:
        inner = (
            self.compressor.compressor if isinstance(self.compressor, Pipeline) else self.compressor
        )
        return {
            "residuals": {k: v.copy() for k, v in self._residuals.items()},
            "calls": inner._calls,
            "compressor": repr(self.compressor),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            residuals = {
                str(k): np.array(v, dtype=np.float32, copy=True)
                for k, v in state["residuals"].items()
            }
            calls = int(state["calls"])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"not an ErrorFeedback state_dict: {e}", op="load_state_dict") from e
        inner = (
            self.compressor.compressor if isinstance(self.compressor, Pipeline) else self.compressor
        )
        self._residuals = residuals
        inner._calls = calls

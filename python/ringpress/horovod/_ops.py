"""Horovod's tensor collectives on a ringpress Communicator: semantics, handles, agreement checks.

Semantics (Horovod's documentation): ``allreduce``/``allgather``/``broadcast``/``alltoall`` return
new tensors and leave the input alone; the ``_`` forms work in place; the ``_async`` forms return
an integer handle for ``poll()``/``synchronize()``, which returns the output. ``op`` defaults to
Average; ``average=`` is the deprecated spelling. Integer Average truncates toward zero.

Agreement. Horovod matches collectives across ranks by name and checks their dtypes and shapes
before any data moves. ringpress runs collectives in issue order (the same sequence on every
rank), so every public call here opens with one small allgather of a descriptor (call, op or
root, dtype, shape, a digest of the name): a rank that issues a different call, dtype, shape,
root or name at the same position raises :class:`ringpress.UsageError` on every rank, naming the
ranks and what they passed, before any data moves, and the communicator stays usable. The
DistributedOptimizer skips this (its buckets are the same on every rank by construction; the
core still checks counts and dtypes on the wire).

Tensors may live on any device: they are staged through contiguous host copies (ringpress's
communicator reduces host memory; docs/integrations.md).
"""

from __future__ import annotations

import enum
import io
import itertools
import pickle
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..comm import Communicator, Work
from ..errors import UsageError
from . import _compression
from ._state import NotSupportedError, comm, size


class ReduceOp(enum.IntEnum):
    """Horovod's reduction ops (``hvd.Average``, ``hvd.Sum``, ...)."""

    AVERAGE = 0
    SUM = 1
    ADASUM = 2
    MIN = 3
    MAX = 4
    PRODUCT = 5


Average = ReduceOp.AVERAGE
Sum = ReduceOp.SUM
Adasum = ReduceOp.ADASUM
Min = ReduceOp.MIN
Max = ReduceOp.MAX
Product = ReduceOp.PRODUCT

_RP_OP = {
    ReduceOp.AVERAGE: "avg",
    ReduceOp.SUM: "sum",
    ReduceOp.MIN: "min",
    ReduceOp.MAX: "max",
    ReduceOp.PRODUCT: "prod",
}


def resolve_op(op: Any, average: Any, what: str) -> ReduceOp:
    """Horovod's op/average rules: one of them, default Average; Adasum refused."""
    if op is not None and average is not None:
        raise UsageError(f"{what}: pass op= or the deprecated average=, not both")
    if average is not None:
        warnings.warn(
            f"{what}: average= is deprecated in Horovod's API; use op=hvd.Average or op=hvd.Sum",
            DeprecationWarning,
            stacklevel=3,
        )
        op = ReduceOp.AVERAGE if average else ReduceOp.SUM
    if op is None:
        return ReduceOp.AVERAGE
    try:
        r = ReduceOp(op)
    except ValueError:
        raise UsageError(
            f"{what}: unknown op {op!r}; expected hvd.Average, Sum, Min, Max or Product"
        ) from None
    if r == ReduceOp.ADASUM:
        raise NotSupportedError(
            f"{what}: op=hvd.Adasum is not supported by ringpress.horovod; use hvd.Average "
            "(or hvd.Sum), and scale the learning rate by hvd.size() as with Average"
        )
    return r


def _check_process_set(process_set: Any, what: str) -> None:
    if process_set is not None and process_set is not global_process_set:
        raise NotSupportedError(f"{what}: process sets are not supported by ringpress.horovod")


class _GlobalProcessSet:
    """Horovod's ``global_process_set``: the only process set ringpress.horovod has."""

    process_set_id = 0

    def size(self) -> int:
        return size()

    def rank(self) -> int:
        return comm().rank

    def included(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "ProcessSet(global)"


global_process_set = _GlobalProcessSet()


# ---------------------------------------------------------------------------- agreement

_DTYPES = [
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
    torch.complex64,
    torch.complex128,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]
_DTYPE_CODE = {d: i + 1 for i, d in enumerate(_DTYPES)}
_KINDS = [
    "?",
    "allreduce",
    "allgather",
    "broadcast",
    "alltoall",
    "grouped_allreduce",
    "broadcast_parameters",
]
_MAXD = 8
_W = 6 + _MAXD  # kind, op/root, dtype, name digest, ndim, extra, dims...


def _digest(s: str) -> int:
    return zlib.crc32(s.encode()) & 0x7FFFFFFF


def _dtype_code(dt: torch.dtype) -> int:
    return _DTYPE_CODE.get(dt) or 1000 + _digest(str(dt)) % 1000


def _dtype_name(code: int) -> str:
    return (
        str(_DTYPES[code - 1]).replace("torch.", "")
        if 0 < code <= len(_DTYPES)
        else f"dtype#{code}"
    )


def _descriptor(
    kind: str, arg: int, t: torch.Tensor | None, name: str | None, extra: int = 0
) -> np.ndarray:
    d = np.zeros(_W, np.int64)
    d[0] = _KINDS.index(kind)
    d[1] = arg
    d[3] = _digest(name) if name else 0
    d[5] = extra
    if t is not None:
        d[2] = _dtype_code(t.dtype)
        shape = list(t.shape)
        d[4] = len(shape)
        if len(shape) > _MAXD:  # fold the trailing dimensions into the last slot
            shape = [*shape[: _MAXD - 1], int(np.prod(shape[_MAXD - 1 :]))]
        d[6 : 6 + len(shape)] = shape
    return d


def _describe(row: np.ndarray, arg_name: str) -> str:
    kind = _KINDS[int(row[0])] if 0 <= row[0] < len(_KINDS) else "?"
    ndim = int(row[4])
    dims = [int(v) for v in row[6 : 6 + min(ndim, _MAXD)]]
    s = f"{kind} {_dtype_name(int(row[2]))} {dims}"
    if arg_name:
        s += f" {arg_name}={_arg_text(arg_name, int(row[1]))}"
    if row[3]:
        s += f" name#{int(row[3]):08x}"
    return s


def _arg_text(arg_name: str, v: int) -> str:
    if arg_name == "op":
        try:
            return "hvd." + ReduceOp(v).name.title()
        except ValueError:
            return str(v)
    return str(v)


def agree(
    c: Communicator,
    kind: str,
    arg: int,
    t: torch.Tensor | None,
    name: str | None,
    *,
    arg_name: str = "",
    free_first_dim: bool = False,
    extra: int = 0,
) -> np.ndarray:
    """Gather every rank's descriptor of this call; raise the same UsageError on every rank when
    they differ (first dimension excepted with ``free_first_dim``). Returns the rows."""
    mine = _descriptor(kind, arg, t, name, extra)
    rows = c.allgather(mine)
    cols = [i for i in range(_W) if not (free_first_dim and i == 6)]
    ref = rows[0, cols]
    bad = [r for r in range(c.size) if not np.array_equal(rows[r, cols], ref)]
    if bad:
        what = "; ".join(f"rank {r}: {_describe(rows[r], arg_name)}" for r in [0, *bad][:4])
        hint = ""
        if rows[bad[0], 0] != rows[0, 0] or rows[bad[0], 3] != rows[0, 3]:
            hint = (
                " (ringpress runs collectives in the order each rank issues them, not matched by"
                " name: issue them in the same order on every rank)"
            )
        raise UsageError(f"hvd.{kind}: ranks disagree: {what}{hint}", rank=c.rank, op=f"hvd.{kind}")
    return rows


# ---------------------------------------------------------------------------- handles


class _Pending:
    """An issued collective: its Works and the step that produces the output once they finish."""

    __slots__ = ("finish", "name", "works")

    def __init__(self, works: list[Work], finish: Callable[[], Any], name: str | None):
        self.works = works
        self.finish = finish
        self.name = name

    def done(self) -> bool:
        return all(w.is_completed() for w in self.works)

    def result(self) -> Any:
        for w in self.works:
            w.wait()
        return self.finish()


_handles: dict[int, _Pending] = {}
_names: dict[str, int] = {}
_next_handle = itertools.count(1)


def reset() -> None:
    """Forget every handle (shutdown)."""
    _handles.clear()
    _names.clear()


def _claim_name(name: str | None, what: str) -> None:
    if name is not None and name in _names:
        raise UsageError(
            f"hvd.{what}: a collective named {name!r} is still in flight (handle "
            f"{_names[name]}); synchronize it first, or use another name"
        )


def _register(p: _Pending) -> int:
    h = next(_next_handle)
    _handles[h] = p
    if p.name is not None:
        _names[p.name] = h
    return h


def _pop(handle: int, what: str) -> _Pending:
    p = _handles.get(handle)
    if p is None:
        raise UsageError(
            f"hvd.{what}: unknown handle {handle!r} (already synchronized, or not from this process)"
        )
    return p


def poll(handle: int) -> bool:
    """True when the collective behind ``handle`` has finished (``synchronize`` will not block)."""
    return _pop(handle, "poll").done()


def synchronize(handle: int) -> Any:
    """Wait for the collective behind ``handle`` and return its output; raises its error (a
    ringpress error: TransportError, TimeoutError, ...). The handle is released."""
    p = _pop(handle, "synchronize")
    try:
        return p.result()
    finally:
        del _handles[handle]
        if p.name is not None and _names.get(p.name) == handle:
            del _names[p.name]


# ---------------------------------------------------------------------------- staging


def _host(t: torch.Tensor, copy: bool) -> torch.Tensor:
    """A contiguous host tensor with t's values: t itself when possible and ``copy`` is False."""
    x = t.detach()
    if x.device.type != "cpu":
        return x.to("cpu").contiguous()
    if copy:
        return x.clone(memory_format=torch.contiguous_format)
    return x.contiguous()


def _bytes(x: torch.Tensor) -> torch.Tensor:
    """The bytes of a contiguous tensor as a flat uint8 view (for ops that only move bytes)."""
    return x.reshape(-1).view(torch.uint8)


def _back(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Put ``src`` (host) into ``dst`` unless it already is dst's memory; returns dst."""
    if src.device != dst.device or src.data_ptr() != dst.data_ptr() or not dst.is_contiguous():
        with torch.no_grad():
            dst.copy_(src.view(dst.shape))
    return dst


def _to_device(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x if like.device.type == "cpu" else x.to(like.device)


def _scale(x: torch.Tensor, factor: float) -> None:
    if factor == 1.0:
        return
    if x.is_floating_point() or x.is_complex():
        x.mul_(factor)
    else:  # integers: scale in float64, truncate toward zero (a C cast)
        x.copy_((x.double() * factor).to(x.dtype))


# ---------------------------------------------------------------------------- allreduce


def _allreduce_start(
    tensors: Sequence[torch.Tensor],
    op: ReduceOp,
    compression: Any,
    prescale: float,
    postscale: float,
    inplace: bool,
    kind: str,
    name: str | None,
) -> _Pending:
    c = comm()
    if kind == "allreduce":
        agree(c, kind, int(op), tensors[0], name, arg_name="op")
    else:
        sig = ",".join(f"{t.dtype}{tuple(t.shape)}" for t in tensors)
        agree(c, kind, int(op), None, name, arg_name="op", extra=_digest(sig) + len(tensors))
    rp_op = _RP_OP[op]
    # Horovod-style compressors wrap the allreduce; ringpress kinds run inside it.
    wrapped = []
    for t in tensors:
        p = _compression.plan(compression, t.dtype, rp_op)
        if p.wrap is not None:
            x, ctx = p.wrap.compress(t)
            wrapped.append((x, ctx, p.wrap, x is not t))
        else:
            wrapped.append((t, None, None, False))
    # One fused buffer per dtype, in order of first appearance (the same on every rank).
    groups: dict[torch.dtype, list[int]] = {}
    for i, (x, _, _, _) in enumerate(wrapped):
        groups.setdefault(x.dtype, []).append(i)
    works: list[Work] = []
    jobs = []
    for dt, idx in groups.items():
        xs = [wrapped[i][0] for i in idx]
        if len(xs) == 1:
            fresh = wrapped[idx[0]][3]
            buf = _host(xs[0], copy=not (inplace or fresh))
        else:
            buf = torch.cat([x.detach().to("cpu").reshape(-1) for x in xs])
        integer = not (dt.is_floating_point or dt.is_complex)
        g_op = rp_op
        post = postscale
        if op == ReduceOp.AVERAGE and integer and (prescale != 1.0 or postscale != 1.0):
            g_op, post = "sum", postscale / c.size  # one truncation, as Horovod scales once
        _scale(buf, prescale)
        p = _compression.plan(compression, dt, g_op)
        kw: dict = {"compression": p.kind}
        if p.kind != "none":
            kw.update(p.params)
        works.append(c.allreduce(buf, op=g_op, async_op=True, **kw))
        jobs.append((idx, buf, post))

    def finish() -> Any:
        outs: list[Any] = [None] * len(tensors)
        for idx, buf, post in jobs:
            _scale(buf, post)
            off = 0
            for i in idx:
                x, ctx, wrap, _ = wrapped[i]
                n = x.numel()
                piece = buf if len(idx) == 1 else buf[off : off + n]
                off += n
                piece = piece.view(x.shape)
                if wrap is not None:
                    piece = wrap.decompress(piece, ctx)
                t = tensors[i]
                outs[i] = _back(t, piece) if inplace else _to_device(piece, t)
        return outs

    return _Pending(works, finish, name)


def _first(p: _Pending) -> _Pending:
    inner = p.finish
    p.finish = lambda: inner()[0]
    return p


class _AllreduceFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, tensor: torch.Tensor, op: ReduceOp, name: Any, pre: float, post: float
    ) -> Any:
        ctx.op, ctx.pre, ctx.post = op, pre, post
        return _first(
            _allreduce_start([tensor], op, None, pre, post, False, "allreduce", name)
        ).result()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        if ctx.op not in (ReduceOp.AVERAGE, ReduceOp.SUM):
            raise NotSupportedError(
                f"hvd.allreduce: no gradient for op={ReduceOp(ctx.op).name.title()} (Average and Sum have one)"
            )
        g = _first(
            _allreduce_start([grad], ctx.op, None, ctx.pre, ctx.post, False, "allreduce", None)
        ).result()
        return g, None, None, None, None


def _check_tensor(t: Any, what: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise UsageError(f"hvd.{what}: expected a torch.Tensor, got {type(t).__name__}")
    if t.is_sparse:
        raise NotSupportedError(f"hvd.{what}: sparse tensors are not supported (use .to_dense())")


def allreduce_async(
    tensor: torch.Tensor,
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
    compression: Any = None,
) -> int:
    """Start an allreduce of ``tensor`` (not modified); ``synchronize(handle)`` returns the result."""
    _check_tensor(tensor, "allreduce_async")
    op_ = resolve_op(op, average, "hvd.allreduce_async")
    _check_process_set(process_set, "hvd.allreduce_async")
    _claim_name(name, "allreduce_async")
    p = _allreduce_start(
        [tensor], op_, compression, prescale_factor, postscale_factor, False, "allreduce", name
    )
    return _register(_first(p))


def allreduce_async_(
    tensor: torch.Tensor,
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> int:
    """Start an in-place allreduce of ``tensor``; ``synchronize(handle)`` returns it."""
    _check_tensor(tensor, "allreduce_async_")
    op_ = resolve_op(op, average, "hvd.allreduce_async_")
    _check_process_set(process_set, "hvd.allreduce_async_")
    _claim_name(name, "allreduce_async_")
    p = _allreduce_start(
        [tensor], op_, None, prescale_factor, postscale_factor, True, "allreduce", name
    )
    return _register(_first(p))


def allreduce(
    tensor: torch.Tensor,
    average: Any = None,
    name: str | None = None,
    compression: Any = _compression.NoneCompressor,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> torch.Tensor:
    """Average (default) or ``op``-reduce ``tensor`` over all ranks; returns a new tensor of the
    same shape and dtype (``tensor`` is not modified). ``prescale_factor`` multiplies before the
    reduction, ``postscale_factor`` after. Differentiable for Average and Sum."""
    _check_tensor(tensor, "allreduce")
    op_ = resolve_op(op, average, "hvd.allreduce")
    _check_process_set(process_set, "hvd.allreduce")
    if tensor.requires_grad and torch.is_grad_enabled():
        if compression not in (None, _compression.NoneCompressor):
            raise NotSupportedError("hvd.allreduce: compression of a tensor that requires grad")
        return _AllreduceFn.apply(tensor, op_, name, prescale_factor, postscale_factor)
    p = _allreduce_start(
        [tensor], op_, compression, prescale_factor, postscale_factor, False, "allreduce", name
    )
    return _first(p).result()


def allreduce_(
    tensor: torch.Tensor,
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> torch.Tensor:
    """In-place allreduce; returns ``tensor``."""
    return synchronize(
        allreduce_async_(tensor, average, name, op, prescale_factor, postscale_factor, process_set)
    )


def _check_list(tensors: Any, what: str) -> list[torch.Tensor]:
    ts = list(tensors)
    if not ts:
        raise UsageError(f"hvd.{what}: needs at least one tensor")
    for t in ts:
        _check_tensor(t, what)
    return ts


def grouped_allreduce_async(
    tensors: Iterable[torch.Tensor],
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
    compression: Any = None,
) -> int:
    """Start one fused allreduce of several tensors (one buffer per dtype); ``synchronize``
    returns the list of results."""
    ts = _check_list(tensors, "grouped_allreduce_async")
    op_ = resolve_op(op, average, "hvd.grouped_allreduce_async")
    _check_process_set(process_set, "hvd.grouped_allreduce_async")
    _claim_name(name, "grouped_allreduce_async")
    return _register(
        _allreduce_start(
            ts,
            op_,
            compression,
            prescale_factor,
            postscale_factor,
            False,
            "grouped_allreduce",
            name,
        )
    )


def grouped_allreduce(
    tensors: Iterable[torch.Tensor],
    average: Any = None,
    name: str | None = None,
    compression: Any = _compression.NoneCompressor,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> list[torch.Tensor]:
    """Allreduce several tensors as one fused collective; returns new tensors."""
    return synchronize(
        grouped_allreduce_async(
            tensors, average, name, op, prescale_factor, postscale_factor, process_set, compression
        )
    )


def grouped_allreduce_async_(
    tensors: Iterable[torch.Tensor],
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> int:
    ts = _check_list(tensors, "grouped_allreduce_async_")
    op_ = resolve_op(op, average, "hvd.grouped_allreduce_async_")
    _check_process_set(process_set, "hvd.grouped_allreduce_async_")
    _claim_name(name, "grouped_allreduce_async_")
    return _register(
        _allreduce_start(
            ts, op_, None, prescale_factor, postscale_factor, True, "grouped_allreduce", name
        )
    )


def grouped_allreduce_(
    tensors: Iterable[torch.Tensor],
    average: Any = None,
    name: str | None = None,
    op: Any = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    process_set: Any = None,
) -> list[torch.Tensor]:
    return synchronize(
        grouped_allreduce_async_(
            tensors, average, name, op, prescale_factor, postscale_factor, process_set
        )
    )


# ---------------------------------------------------------------------------- allgather


def _allgather_start(tensor: torch.Tensor, name: str | None) -> tuple[_Pending, list[int]]:
    c = comm()
    if tensor.dim() == 0:
        raise UsageError(
            "hvd.allgather: a 0-d tensor has no first dimension to concatenate; use t.reshape(1)"
        )
    rows = agree(c, "allgather", 0, tensor, name, free_first_dim=True)
    firsts = [int(v) for v in rows[:, 6]]
    x = _host(tensor, copy=False)
    row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.element_size()
    out = torch.empty((sum(firsts), *x.shape[1:]), dtype=x.dtype)
    w = c.allgatherv(_bytes(x), [f * row_bytes for f in firsts], out=_bytes(out), async_op=True)
    return _Pending([w], lambda: _to_device(out, tensor), name), firsts


class _AllgatherFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, name: Any) -> Any:
        p, firsts = _allgather_start(tensor, name)
        ctx.firsts = firsts
        return p.result()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        # Every rank's output depends on this rank's slice: sum the gradients, keep ours.
        g = _first(
            _allreduce_start([grad], ReduceOp.SUM, None, 1.0, 1.0, False, "allreduce", None)
        ).result()
        r = comm().rank
        off = sum(ctx.firsts[:r])
        return g.narrow(0, off, ctx.firsts[r]), None


def allgather_async(tensor: torch.Tensor, name: str | None = None, process_set: Any = None) -> int:
    """Start an allgather; ``synchronize`` returns the concatenation along dimension 0."""
    _check_tensor(tensor, "allgather_async")
    _check_process_set(process_set, "hvd.allgather_async")
    _claim_name(name, "allgather_async")
    return _register(_allgather_start(tensor, name)[0])


def allgather(
    tensor: torch.Tensor, name: str | None = None, process_set: Any = None
) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dimension 0, in rank order. The other
    dimensions and the dtype must agree; the first may differ between ranks."""
    _check_tensor(tensor, "allgather")
    _check_process_set(process_set, "hvd.allgather")
    if tensor.requires_grad and torch.is_grad_enabled():
        return _AllgatherFn.apply(tensor, name)
    return _allgather_start(tensor, name)[0].result()


# ---------------------------------------------------------------------------- broadcast


def _check_root(root_rank: Any, what: str) -> int:
    c = comm()
    if (
        not isinstance(root_rank, (int, np.integer))
        or isinstance(root_rank, bool)
        or not 0 <= root_rank < c.size
    ):
        raise UsageError(
            f"hvd.{what}: root_rank must be a rank of the job (0..{c.size - 1}), got {root_rank!r}",
            rank=c.rank,
            op=f"hvd.{what}",
        )
    return int(root_rank)


def _broadcast_start(
    tensor: torch.Tensor, root: int, name: str | None, inplace: bool, what: str
) -> _Pending:
    c = comm()
    agree(c, "broadcast", root, tensor, name, arg_name="root_rank")
    x = _host(tensor, copy=not inplace)
    w = c.broadcast(_bytes(x), root=root, async_op=True)

    def finish() -> torch.Tensor:
        return _back(tensor, x) if inplace else _to_device(x, tensor)

    return _Pending([w], finish, name)


class _BroadcastFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, root: int, name: Any) -> Any:
        ctx.root = root
        return _broadcast_start(tensor, root, name, False, "broadcast").result()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        g = _first(
            _allreduce_start([grad], ReduceOp.SUM, None, 1.0, 1.0, False, "allreduce", None)
        ).result()
        if comm().rank != ctx.root:
            g = torch.zeros_like(g)
        return g, None, None


def broadcast_async(
    tensor: torch.Tensor, root_rank: int, name: str | None = None, process_set: Any = None
) -> int:
    _check_tensor(tensor, "broadcast_async")
    _check_process_set(process_set, "hvd.broadcast_async")
    root = _check_root(root_rank, "broadcast_async")
    _claim_name(name, "broadcast_async")
    return _register(_broadcast_start(tensor, root, name, False, "broadcast_async"))


def broadcast_async_(
    tensor: torch.Tensor, root_rank: int, name: str | None = None, process_set: Any = None
) -> int:
    _check_tensor(tensor, "broadcast_async_")
    _check_process_set(process_set, "hvd.broadcast_async_")
    root = _check_root(root_rank, "broadcast_async_")
    _claim_name(name, "broadcast_async_")
    return _register(_broadcast_start(tensor, root, name, True, "broadcast_async_"))


def broadcast(
    tensor: torch.Tensor, root_rank: int, name: str | None = None, process_set: Any = None
) -> torch.Tensor:
    """``root_rank``'s ``tensor``, on every rank, as a new tensor (the input is not modified)."""
    _check_tensor(tensor, "broadcast")
    _check_process_set(process_set, "hvd.broadcast")
    root = _check_root(root_rank, "broadcast")
    if tensor.requires_grad and torch.is_grad_enabled():
        return _BroadcastFn.apply(tensor, root, name)
    return _broadcast_start(tensor, root, name, False, "broadcast").result()


def broadcast_(
    tensor: torch.Tensor, root_rank: int, name: str | None = None, process_set: Any = None
) -> torch.Tensor:
    """Overwrite ``tensor`` with ``root_rank``'s, in place; returns it."""
    return synchronize(broadcast_async_(tensor, root_rank, name, process_set))


# ---------------------------------------------------------------------------- alltoall


def _alltoall_start(tensor: torch.Tensor, splits: Any, name: str | None) -> _Pending:
    c = comm()
    P = c.size
    if tensor.dim() == 0:
        raise UsageError("hvd.alltoall: a 0-d tensor cannot be split along dimension 0")
    n0 = int(tensor.shape[0])
    if splits is None:
        if n0 % P:
            raise UsageError(
                f"hvd.alltoall: without splits, dimension 0 ({n0}) must divide by the number of ranks ({P})"
            )
        sp = [n0 // P] * P
    else:
        sp = [int(v) for v in (splits.tolist() if isinstance(splits, torch.Tensor) else splits)]
        if len(sp) != P or any(v < 0 for v in sp) or sum(sp) != n0:
            raise UsageError(
                f"hvd.alltoall: splits must be {P} non-negative counts summing to dimension 0 "
                f"({n0}), got {sp}"
            )
    agree(c, "alltoall", 0, tensor, name, free_first_dim=True)
    # Every rank's splits (row = sender), so each rank knows what it receives; then one
    # alltoall of the rows as bytes (each pair exchanges only its block).
    S = c.allgather(np.asarray(sp, np.int64)).reshape(P, P)
    x = _host(tensor, copy=False)
    row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.element_size()
    me = c.rank
    recv = [int(S[r, me]) for r in range(P)]
    out = torch.empty((sum(recv), *x.shape[1:]), dtype=x.dtype)
    w = c.alltoall(
        _bytes(x),
        [v * row_bytes for v in sp],
        [v * row_bytes for v in recv],
        out=_bytes(out),
        async_op=True,
    )

    def finish() -> tuple[torch.Tensor, torch.Tensor]:
        return _to_device(out, tensor), torch.tensor(recv, dtype=torch.int32)

    return _Pending([w], finish, name)


class _AlltoallFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, splits: Any, name: Any) -> Any:
        out, recv = _alltoall_start(tensor, splits, name).result()
        ctx.recv = recv
        ctx.mark_non_differentiable(recv)
        return out, recv

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _unused: Any) -> Any:
        g, _ = _alltoall_start(grad.contiguous(), ctx.recv, None).result()
        return g, None, None


def alltoall_async(
    tensor: torch.Tensor, splits: Any = None, name: str | None = None, process_set: Any = None
) -> int:
    """Start an alltoall; ``synchronize`` returns ``(output, received_splits)``."""
    _check_tensor(tensor, "alltoall_async")
    _check_process_set(process_set, "hvd.alltoall_async")
    _claim_name(name, "alltoall_async")
    return _register(_alltoall_start(tensor, splits, name))


def alltoall(
    tensor: torch.Tensor, splits: Any = None, name: str | None = None, process_set: Any = None
) -> Any:
    """Send ``splits[r]`` rows (dimension 0) of ``tensor`` to rank r, in rank order (equal parts
    without ``splits``); returns what this rank received, concatenated in rank order, and, when
    ``splits`` was given, also the received counts per rank (an int32 tensor), as Horovod does."""
    _check_tensor(tensor, "alltoall")
    _check_process_set(process_set, "hvd.alltoall")
    if tensor.requires_grad and torch.is_grad_enabled():
        out, recv = _AlltoallFn.apply(tensor, splits, name)
    else:
        out, recv = _alltoall_start(tensor, splits, name).result()
    return out if splits is None else (out, recv)


# ---------------------------------------------------------------------------- objects


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data only (no classes besides ours): for bytes this module asked for."""

    ALLOWED: ClassVar[frozenset] = frozenset({("ringpress.horovod._ops", "_TensorRef")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return globals()[name]
        raise UsageError(f"hvd: refused to unpickle {module}.{name} from a peer")


def _loads(data: bytes, safe: bool) -> Any:
    if safe:
        return _SafeUnpickler(io.BytesIO(data)).load()
    return pickle.loads(data)


def broadcast_object_on(c: Communicator, obj: Any, root: int, safe: bool = False) -> Any:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if c.rank == root else b""
    n = np.array([len(data)], np.int64)
    c.broadcast(n, root=root)
    if int(n[0]) < 0:
        raise UsageError(
            "hvd.broadcast_object: negative length from the root", rank=c.rank, peer=root
        )
    buf = np.frombuffer(data, np.uint8).copy() if c.rank == root else np.empty(int(n[0]), np.uint8)
    c.broadcast(buf, root=root)
    return obj if c.rank == root else _loads(buf.tobytes(), safe)


def allgather_object_on(c: Communicator, obj: Any, safe: bool = True) -> list:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    lens = c.allgather(np.array([len(data)], np.int64)).reshape(-1)
    counts = [int(v) for v in lens]
    out = c.allgatherv(np.frombuffer(data, np.uint8), counts)
    res, off = [], 0
    for n in counts:
        res.append(_loads(out[off : off + n].tobytes(), safe))
        off += n
    return res


def broadcast_object(
    obj: Any, root_rank: int = 0, name: str | None = None, process_set: Any = None
) -> Any:
    """``root_rank``'s ``obj`` on every rank (pickled; only the job's authenticated ranks can
    send it, as with Horovod and torch.distributed's object collectives)."""
    _check_process_set(process_set, "hvd.broadcast_object")
    root = _check_root(root_rank, "broadcast_object")
    return broadcast_object_on(comm(), obj, root)


def allgather_object(obj: Any, name: str | None = None, process_set: Any = None) -> list:
    """Every rank's ``obj``, in rank order (pickled, see broadcast_object)."""
    _check_process_set(process_set, "hvd.allgather_object")
    return allgather_object_on(comm(), obj, safe=False)


def barrier(process_set: Any = None) -> None:
    """Return once every rank has entered the barrier."""
    _check_process_set(process_set, "hvd.barrier")
    comm().barrier()


def join(device: int = -1) -> int:
    raise NotSupportedError(
        "hvd.join() is not supported by ringpress.horovod: ringpress runs the same collectives "
        "on every rank, so give every rank the same number of batches (e.g. drop_last=True in "
        "the DistributedSampler's loader), or stop all ranks together"
    )


# ---------------------------------------------------------------------------- model state


def _param_list(params: Any, what: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(params, dict):
        items = sorted(params.items(), key=lambda kv: str(kv[0]))
    else:
        items = []
        for i, p in enumerate(params):
            if isinstance(p, tuple) and len(p) == 2:
                items.append((str(p[0]), p[1]))
            else:
                items.append((f"#{i}", p))
    out = []
    for k, v in items:
        if not isinstance(v, torch.Tensor):
            raise UsageError(f"hvd.{what}: {k!r} is a {type(v).__name__}, not a tensor")
        out.append((str(k), v))
    return out


def broadcast_parameters(params: Any, root_rank: int, process_set: Any = None) -> None:
    """Overwrite every rank's parameters with ``root_rank``'s, in place: ``params`` is a
    ``state_dict()`` (sorted by name, as Horovod does), ``named_parameters()`` or a list of
    tensors. The names, dtypes and shapes must agree on every rank (checked first)."""
    _check_process_set(process_set, "hvd.broadcast_parameters")
    root = _check_root(root_rank, "broadcast_parameters")
    c = comm()
    items = _param_list(params, "broadcast_parameters")
    sig = "|".join(f"{k}:{v.dtype}{tuple(v.shape)}" for k, v in items)
    try:
        agree(c, "broadcast_parameters", root, None, None, arg_name="root_rank", extra=_digest(sig))
    except UsageError:
        # Name the first difference: every rank saw the mismatch, so all gather the lists.
        lists = allgather_object_on(c, [(k, str(v.dtype), tuple(v.shape)) for k, v in items])
        diff = next(
            (
                f"rank {r} has {len(lists[r])} tensors, rank 0 {len(lists[0])}"
                if len(lists[r]) != len(lists[0])
                else next(
                    f"entry {i}: rank 0 {a}, rank {r} {b}"
                    for i, (a, b) in enumerate(zip(lists[0], lists[r], strict=True))
                    if a != b
                )
            )
            for r in range(c.size)
            if lists[r] != lists[0]
        )
        raise UsageError(
            f"hvd.broadcast_parameters: the parameters differ across ranks: {diff}",
            rank=c.rank,
            op="hvd.broadcast_parameters",
        ) from None
    jobs = []
    for _, t in items:
        x = _host(t, copy=False)
        jobs.append((t, x, c.broadcast(_bytes(x), root=root, async_op=True)))
    for t, x, w in jobs:
        w.wait()
        _back(t, x)


class _TensorRef:
    """A tensor's place in a broadcast optimizer state (its bytes travel separately)."""

    __slots__ = ("dtype", "index", "shape")

    def __init__(self, index: int, dtype: str, shape: tuple):
        self.index, self.dtype, self.shape = index, dtype, shape

    def __reduce__(self) -> Any:
        return (_TensorRef, (self.index, self.dtype, self.shape))


def _split_state(obj: Any, tensors: list) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _TensorRef(len(tensors) - 1, str(obj.dtype).replace("torch.", ""), tuple(obj.shape))
    if isinstance(obj, dict):
        return {k: _split_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_split_state(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_split_state(v, tensors) for v in obj)
    return obj


def _join_state(obj: Any, tensors: list) -> Any:
    if isinstance(obj, _TensorRef):
        return tensors[obj.index]
    if isinstance(obj, dict):
        return {k: _join_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_state(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_join_state(v, tensors) for v in obj)
    return obj


def _refs(obj: Any, out: list) -> list:
    if isinstance(obj, _TensorRef):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _refs(v, out)
    return out


def broadcast_optimizer_state(optimizer: Any, root_rank: int, process_set: Any = None) -> None:
    """Make every rank's optimizer state (per-parameter buffers, step counts and the
    hyperparameters of its param groups: lr, momentum, ...) ``root_rank``'s. The structure
    travels as plain data (unpickled with no classes allowed), the tensors by broadcast."""
    _check_process_set(process_set, "hvd.broadcast_optimizer_state")
    root = _check_root(root_rank, "broadcast_optimizer_state")
    if isinstance(optimizer, torch.optim.LBFGS):
        raise NotSupportedError(
            "hvd.broadcast_optimizer_state: LBFGS is not supported (as in Horovod)"
        )
    c = comm()
    tensors: list[torch.Tensor] = []
    sd = optimizer.state_dict()
    skeleton = _split_state(sd, tensors) if c.rank == root else None
    # Every rank checks what it received (and that root's groups fit its optimizer) and all
    # agree on the outcome before any tensor moves, so a refusal is the same error everywhere.
    err = None
    try:
        skeleton = broadcast_object_on(c, skeleton, root, safe=True)
        mine = [len(g["params"]) for g in sd["param_groups"]]
        theirs = [len(g["params"]) for g in skeleton["param_groups"]]
        if mine != theirs:
            err = f"rank {c.rank} has param groups of sizes {mine}, root {theirs}"
    except (UsageError, KeyError, TypeError, pickle.UnpicklingError) as e:
        err = f"rank {c.rank} cannot use root's state: {e}"
    errs = [e for e in allgather_object_on(c, err) if e]
    if errs:
        raise UsageError(
            f"hvd.broadcast_optimizer_state: optimizers differ: {errs[0]}",
            rank=c.rank,
            op="hvd.broadcast_optimizer_state",
        )
    refs = sorted(_refs(skeleton, []), key=lambda r: r.index)
    if c.rank != root:
        tensors = [torch.empty(r.shape, dtype=getattr(torch, r.dtype)) for r in refs]
    host = [_host(t, copy=False) for t in tensors]
    works = [c.broadcast(_bytes(x), root=root, async_op=True) for x in host]
    for w in works:
        w.wait()
    if c.rank != root:
        optimizer.load_state_dict(_join_state(skeleton, host))

"""``hvd.DistributedOptimizer``: gradients averaged (or summed) across ranks before each step.

Contract (Horovod's documentation):
- the returned object is an instance of the wrapped optimizer's class (a subclass made on the
  fly), sharing its state and param groups, so LR schedulers and ``state_dict()`` work as before;
- as ``loss.backward()`` produces each gradient, a hook counts it; after
  ``backward_passes_per_step`` passes a parameter is ready (its gradient has been accumulated
  locally over those passes, summed, as torch accumulates);
- ``step()`` waits for every allreduce (``synchronize()``), writes the results into ``.grad``,
  then runs the wrapped optimizer's step; ``synchronize()`` may be called earlier (e.g. to clip
  gradients) and then ``step()`` under ``with optimizer.skip_synchronize():``;
- a parameter whose gradient was never computed in a step takes part with a zero gradient, so
  every rank reduces the same buffers;
- ``op=Average`` divides by the number of ranks, ``Sum`` does not; ``gradient_predivide_factor``
  f splits the average: gradients are multiplied by 1/f before the sum and f/size after.

Fusion. Parameters are grouped into buckets (same dtype, in reverse registration order, as
gradients tend to arrive, up to ``bucket_cap_mb``; or Horovod's ``groups``/``num_groups``).
A bucket is launched as one asynchronous ringpress allreduce when its last gradient is ready and
every earlier bucket has been launched, so every rank issues the same collectives in the same
order, whatever order its hooks fire in (ringpress matches collectives by order, not by name).
Without compression a bucket is ``allreduce_coalesced`` over the gradients themselves (no copy);
with a ringpress compression kind the gradients are copied into one flat float32 buffer, reduced
with that wire codec, and copied back.

Error feedback: a lossy ringpress kind (int8, int4, topk, ...; ``error_feedback=True``, the
default of ``Compression.<kind>``) keeps one float32 residual per bucket, i.e. a slice per
parameter (``residuals()``), which ringpress's allreduce adds to the next contribution and
refills with what compression dropped (docs/algorithms.md). Buckets never change, so each
parameter's slice stays its own.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from ..comm import Work
from ..errors import UsageError
from . import _compression
from ._ops import _RP_OP, ReduceOp, _check_process_set, resolve_op
from ._state import NotSupportedError, comm


class _Bucket:
    __slots__ = (
        "ctx",
        "direct",
        "dtype",
        "flat",
        "grads",
        "numels",
        "params",
        "plan",
        "ready",
        "residual",
        "sendbuf",
        "work",
    )

    def __init__(self, params: list[torch.Tensor], plan: _compression.Plan):
        self.params = params
        self.dtype = params[0].dtype
        self.numels = [p.numel() for p in params]
        self.plan = plan
        self.ready = 0
        self.work: Work | None = None
        self.direct = False
        self.flat: torch.Tensor | None = None
        self.sendbuf: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.grads: list[torch.Tensor] = []
        self.ctx: Any = None


class _Distributed:
    """Methods mixed in before the wrapped optimizer's class (see DistributedOptimizer)."""

    # ------------------------------------------------------------------ set-up
    def _rp_setup(
        self,
        named_parameters: Any,
        compression: Any,
        backward_passes_per_step: int,
        op: ReduceOp,
        gradient_predivide_factor: float,
        num_groups: int,
        groups: Any,
        sparse_as_dense: bool,
        bucket_cap_mb: float,
    ) -> None:
        self._rp_comm = comm()
        params: list[torch.Tensor] = []
        seen: set[int] = set()
        for g in self.param_groups:  # type: ignore[attr-defined]
            for p in g["params"]:
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        names: dict[int, str] = {}
        if named_parameters is not None:
            named = list(named_parameters)
            if any(not (isinstance(x, tuple) and len(x) == 2) for x in named):
                raise UsageError(
                    "DistributedOptimizer: named_parameters must be (name, parameter) pairs, "
                    "e.g. model.named_parameters()"
                )
            dup = sorted({n for n, _ in named if [m for m, _ in named].count(n) > 1})
            if dup:
                raise UsageError(f"DistributedOptimizer: parameter names must be unique: {dup}")
            names = {id(p): str(n) for n, p in named}
            unnamed = [i for i, p in enumerate(params) if id(p) not in names]
            if unnamed:
                raise UsageError(
                    "DistributedOptimizer: named_parameters was given but does not name "
                    f"{len(unnamed)} of the optimizer's parameters (positions {unnamed[:8]}); "
                    "pass the named_parameters() of the model the optimizer trains"
                )
        self._rp_names = {id(p): names.get(id(p), f"param.{i}") for i, p in enumerate(params)}
        if (
            backward_passes_per_step < 1
            or int(backward_passes_per_step) != backward_passes_per_step
        ):
            raise UsageError(
                f"DistributedOptimizer: backward_passes_per_step must be a positive integer, got {backward_passes_per_step!r}"
            )
        if op not in (ReduceOp.AVERAGE, ReduceOp.SUM):
            raise UsageError(
                f"DistributedOptimizer: op must be hvd.Average or hvd.Sum, got {op.name.title()}"
            )
        if gradient_predivide_factor != 1.0 and op != ReduceOp.AVERAGE:
            raise UsageError("DistributedOptimizer: gradient_predivide_factor needs op=hvd.Average")
        if not gradient_predivide_factor > 0:
            raise UsageError(
                f"DistributedOptimizer: gradient_predivide_factor must be positive, got {gradient_predivide_factor}"
            )
        self._rp_bpps = int(backward_passes_per_step)
        self._rp_op = op
        self._rp_pre = 1.0 / gradient_predivide_factor
        self._rp_post = float(gradient_predivide_factor)
        self._rp_compression = compression
        self._rp_sparse_as_dense = bool(sparse_as_dense)
        self._rp_buckets = self._rp_make_buckets(params, num_groups, groups, bucket_cap_mb)
        self._rp_bucket_of = {id(p): b for b in self._rp_buckets for p in b.params}
        self._rp_delay = {id(p): self._rp_bpps for p in params}
        self._rp_next = 0
        self._rp_should_sync = True
        self._rp_synchronized = False
        self._rp_hooks = [p.register_post_accumulate_grad_hook(self._rp_hook) for p in params]

    def _rp_make_buckets(
        self, params: list[torch.Tensor], num_groups: int, groups: Any, cap_mb: float
    ) -> list[_Bucket]:
        rp_op = _RP_OP[self._rp_op]
        chunks: list[list[torch.Tensor]] = []
        rest = list(reversed(params))  # gradients tend to arrive last layer first
        if groups is not None:
            ids = {id(p) for p in params}
            taken: set[int] = set()
            for grp in groups:
                grp = list(grp)
                if any(id(p) not in ids or id(p) in taken for p in grp):
                    raise UsageError(
                        "DistributedOptimizer: groups must hold distinct parameters of the optimizer"
                    )
                taken.update(id(p) for p in grp)
                chunks.append(grp)
            rest = [p for p in rest if id(p) not in taken]
        elif num_groups and num_groups > 0:
            k = -(-len(rest) // num_groups)
            chunks = [rest[i : i + k] for i in range(0, len(rest), k)]
            rest = []
        cap = max(1, int(cap_mb * 2**20))
        cur: list[torch.Tensor] = []
        nbytes = 0
        for p in rest:
            sz = p.numel() * p.element_size()
            if cur and (p.dtype != cur[0].dtype or nbytes + sz > cap):
                chunks.append(cur)
                cur, nbytes = [], 0
            cur.append(p)
            nbytes += sz
        if cur:
            chunks.append(cur)
        buckets = []
        for ch in chunks:
            if not ch:
                continue
            by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
            for p in ch:
                by_dtype.setdefault(p.dtype, []).append(p)
            for dt, ps in by_dtype.items():
                buckets.append(_Bucket(ps, _compression.plan(self._rp_compression, dt, rp_op)))
        return buckets

    # ------------------------------------------------------------------ hooks and launches
    def _rp_hook(self, p: torch.Tensor) -> None:
        k = id(p)
        left = self._rp_delay[k]
        if left <= 0:
            raise UsageError(
                f"DistributedOptimizer: the gradient of {self._rp_names[k]} was computed more "
                f"than backward_passes_per_step={self._rp_bpps} times before step(); raise "
                "backward_passes_per_step to accumulate more passes locally"
            )
        self._rp_delay[k] = left - 1
        if left == 1:
            b = self._rp_bucket_of[k]
            b.ready += 1
            if b.ready == len(b.params):
                self._rp_launch_ready()

    def _rp_launch_ready(self) -> None:
        bs = self._rp_buckets
        while self._rp_next < len(bs) and bs[self._rp_next].ready == len(bs[self._rp_next].params):
            self._rp_launch(bs[self._rp_next])
            self._rp_next += 1

    def _rp_grad(self, p: torch.Tensor) -> torch.Tensor:
        g = p.grad
        if g is None:  # not computed this step: take part with zeros
            g = p.grad = torch.zeros_like(p)
        if g.is_sparse:
            if not self._rp_sparse_as_dense:
                raise NotSupportedError(
                    f"DistributedOptimizer: {self._rp_names[id(p)]} has a sparse gradient; pass "
                    "sparse_as_dense=True (or use a dense embedding)"
                )
            g = p.grad = g.to_dense()
        return g

    def _rp_launch(self, b: _Bucket) -> None:
        c = self._rp_comm
        rp_op = _RP_OP[self._rp_op]
        grads = [self._rp_grad(p) for p in b.params]
        b.grads = grads
        plan = b.plan
        if (
            plan.kind == "none"
            and plan.wrap is None
            and all(
                g.device.type == "cpu" and g.is_contiguous() and g.dtype == b.dtype for g in grads
            )
        ):
            if self._rp_pre != 1.0:
                for g in grads:
                    g.mul_(self._rp_pre)
            b.direct = True
            b.work = c.allreduce_coalesced(grads, op=rp_op, async_op=True)
            return
        b.direct = False
        if b.flat is None:
            b.flat = torch.empty(sum(b.numels), dtype=b.dtype)
        flat = b.flat
        off = 0
        for g, n in zip(grads, b.numels, strict=True):
            flat[off : off + n].copy_(g.reshape(-1))
            off += n
        if self._rp_pre != 1.0:
            flat.mul_(self._rp_pre)
        send = flat
        b.ctx = None
        if plan.wrap is not None:
            send, b.ctx = plan.wrap.compress(flat)
            send = send.contiguous()
        b.sendbuf = send
        kw: dict = {"compression": plan.kind}
        if plan.kind != "none":
            kw.update(plan.params)
        if plan.residual and send.dtype == torch.float32:
            if b.residual is None:
                b.residual = torch.zeros(send.numel(), dtype=torch.float32)
            kw["residual"] = b.residual
        b.work = c.allreduce(send, op=rp_op, async_op=True, **kw)

    def _rp_finish(self, b: _Bucket) -> None:
        assert b.work is not None
        b.work.wait()
        post = self._rp_post
        if b.direct:
            if post != 1.0:
                for g in b.grads:
                    g.mul_(post)
        else:
            assert b.sendbuf is not None
            out = b.sendbuf
            if b.plan.wrap is not None:
                out = b.plan.wrap.decompress(out, b.ctx)
            if post != 1.0:
                out.mul_(post)
            off = 0
            for g, n in zip(b.grads, b.numels, strict=True):
                g.copy_(out[off : off + n].view_as(g))
                off += n
        b.work = None
        b.grads = []
        b.sendbuf = None
        b.ctx = None

    # ------------------------------------------------------------------ Horovod's API
    def synchronize(self) -> None:
        """Finish every gradient allreduce of this step (launching those whose gradients did not
        all arrive) and write the results into ``.grad``."""
        try:
            bs = self._rp_buckets
            while self._rp_next < len(bs):
                self._rp_launch(bs[self._rp_next])
                self._rp_next += 1
            for b in bs:
                if b.work is not None:
                    self._rp_finish(b)
        finally:
            for k in self._rp_delay:
                self._rp_delay[k] = self._rp_bpps
            for b in self._rp_buckets:
                b.ready = 0
                b.work = None
            self._rp_next = 0
        self._rp_synchronized = True

    @contextlib.contextmanager
    def skip_synchronize(self) -> Iterator[None]:
        """``step()`` inside this block does not synchronize (call ``synchronize()`` first)."""
        self._rp_should_sync = False
        try:
            yield
        finally:
            self._rp_should_sync = True

    def step(self, closure: Any = None) -> Any:
        if self._rp_should_sync:
            if self._rp_synchronized:
                warnings.warn(
                    "DistributedOptimizer: step() after synchronize() without "
                    "skip_synchronize(): the gradients are reduced again (for hvd.Sum they are "
                    "multiplied by the number of ranks); use 'with optimizer.skip_synchronize():'",
                    stacklevel=2,
                )
            self.synchronize()
        self._rp_synchronized = False
        return super().step(closure) if closure is not None else super().step()  # type: ignore[misc]

    def zero_grad(self, set_to_none: bool = True) -> None:
        if any(v != self._rp_bpps for v in self._rp_delay.values()):
            raise UsageError(
                "DistributedOptimizer: zero_grad() after backward() but before step() or "
                "synchronize(): gradients being reduced would be lost; call it after step()"
            )
        super().zero_grad(set_to_none=set_to_none)  # type: ignore[misc]

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "_rp_buckets"):
            raise NotSupportedError(
                "DistributedOptimizer: add_param_group() after wrapping; add the group to the "
                "optimizer first, then wrap it"
            )
        super().add_param_group(param_group)  # type: ignore[misc]

    def residuals(self) -> dict[str, torch.Tensor]:
        """Error-feedback residual per parameter name (views; empty without a lossy kind)."""
        out = {}
        for b in self._rp_buckets:
            if b.residual is None:
                continue
            off = 0
            for p, n in zip(b.params, b.numels, strict=True):
                out[self._rp_names[id(p)]] = b.residual[off : off + n].view_as(p)
                off += n
        return out

    def remove_hooks(self) -> None:
        """Detach the gradient hooks (before wrapping the same parameters again)."""
        for h in self._rp_hooks:
            h.remove()
        self._rp_hooks = []


def DistributedOptimizer(
    optimizer: torch.optim.Optimizer,
    named_parameters: Any = None,
    compression: Any = _compression.NoneCompressor,
    backward_passes_per_step: int = 1,
    op: Any = ReduceOp.AVERAGE,
    gradient_predivide_factor: float = 1.0,
    num_groups: int = 0,
    groups: Any = None,
    sparse_as_dense: bool = False,
    process_set: Any = None,
    *,
    bucket_cap_mb: float = 4.0,
) -> Any:
    """Wrap ``optimizer`` so that gradients are averaged (``op=hvd.Average``) or summed across
    ranks before each step; see the module docstring. ``compression``: ``hvd.Compression.none``,
    ``.fp16`` or a ringpress kind (``.int8``, ``.topk``, ...; lossy ones with error feedback).
    ``bucket_cap_mb`` (ringpress's): the fusion bucket size."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(
            f"DistributedOptimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(optimizer, _Distributed):
        raise UsageError("DistributedOptimizer: this optimizer is already distributed")
    _check_process_set(process_set, "DistributedOptimizer")
    op_ = resolve_op(op, None, "DistributedOptimizer")
    comm()
    base = optimizer.__class__
    cls: Any = type(base.__name__, (_Distributed, base), {"__module__": base.__module__})
    dist = cls.__new__(cls)
    dist.__dict__.update(optimizer.__dict__)
    dist._rp_setup(
        named_parameters,
        compression,
        backward_passes_per_step,
        op_,
        gradient_predivide_factor,
        num_groups,
        groups,
        sparse_as_dense,
        bucket_cap_mb,
    )
    return dist

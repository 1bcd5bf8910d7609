"""DDP communication hook: compressed, error-compensated gradient allreduce on the ringpress engine.

Usage::

    state = ringpress.torch.HookState(compression="int8")
    ddp.register_comm_hook(state, ringpress.torch.comm_hook)

Contract
--------
- Each bucket is averaged (divided by the world size, then summed, as DDP's default hook does)
  by one asynchronous ringpress allreduce; the hook returns at once and the future completes on
  the engine thread, so encode/send/receive/decode overlap the rest of backward.
- ``compression``: ``"none"`` (bit-identical to DDP's own allreduce), ``"lossless"`` (bit-identical,
  fewer bytes when the gradients compress), ``"bf16"``/``"fp16"``/``"int8"``/``"int4"``/``"int2"``/
  ``"sign"``/``"ternary"`` (quantized ring, one rounding per hop), ``"topk"`` (``ratio`` of the
  entries per rank), ``"randomk"``, ``"threshold"`` (sparse exchange), or ``"auto"`` (per bucket, the fastest of ``allow`` predicted for this link and CPU,
  plain when compressing would not pay). Lossy kinds need float32 gradients; other dtypes fall
  back to lossless.
- Error feedback (``error_feedback=True``, lossy kinds): what compression drops from this rank's
  gradient is kept and added to the next step's (topk: the entries not sent; ring kinds: every
  rounding this rank makes, of its own data and of the partial sums it forwards). The residuals are stored per parameter, so DDP's
  bucket rebuild after the first iteration (or any change of bucket layout) carries them over,
  and ``state_dict()``/``load_state_dict()`` checkpoint them: a restored job resumes with its
  residuals and step count (parameters are identified by the order the hook first sees them,
  so restore into the same model and DDP configuration).
- ``momentum``: momentum correction as in Deep Gradient Compression: the velocity is kept here
  (per parameter, checkpointed with the residuals) and compressed instead of the gradient; the
  entries a sparse kind (topk, randomk, threshold; float32 values) sends restart at zero. Use it with an optimizer without momentum.
- ``warmup_steps``: the first N iterations run uncompressed (e.g. while the model is far from a
  minimum), counted by ``bucket.is_last()``.

Cost per bucket of n float32: the chosen kind's allreduce (docs/algorithms.md) plus one pass to
divide by the world size; with a bucket layout change, one copy of the residual.
"""

# No `from __future__ import annotations`: DDP checks comm_hook's annotations as objects.
import math
from typing import Any

import torch
import torch.distributed as dist

from .. import _core
from ..errors import UsageError
from . import backend as _pybackend
from .backend import _Outcome, _Staged

# From the core's codec registry (ringpress.wire_codecs()), plus the "auto" selection mode.
KINDS = (*(c["name"] for c in _core.codecs()), "auto")
_LOSSY = (*(c["name"] for c in _core.codecs() if not c["exact"]), "auto")
_SPARSE = tuple(c["name"] for c in _core.codecs() if c["schedule"] == "allgather")
_STATE_VERSION = 1


class _PerParam:
    """A float32 buffer per bucket whose contents belong to parameters: when DDP changes its bucket
    layout (the rebuild after the first iteration, a restart) each parameter's slice moves along."""

    def __init__(self) -> None:
        self.buckets: dict[tuple, torch.Tensor] = {}  # parameter keys of a bucket -> its buffer
        self.where: dict[Any, tuple] = {}  # parameter key -> (bucket key, offset, numel)
        self.pending: dict[str, torch.Tensor] = {}  # per-parameter slices from load()
        self.moves = 0

    def get(self, key: tuple, bucket: Any, n: int) -> torch.Tensor:
        r = self.buckets.get(key)
        if r is not None and r.numel() == n:
            return r
        r = torch.zeros(n, dtype=torch.float32)
        moved = False
        base = bucket.buffer()
        esize = base.element_size()
        for o, g in zip(key, bucket.gradients(), strict=True):
            off, cnt = (g.data_ptr() - base.data_ptr()) // esize, g.numel()
            src = self.pending.pop(o, None) if isinstance(o, str) else None
            if src is None and o in self.where:
                okey, ooff, on = self.where[o]
                src = self.buckets[okey][ooff : ooff + on]
                moved = True
            if src is not None and src.numel() == cnt:
                r[off : off + cnt].copy_(src)
            self.where[o] = (key, off, cnt)
        self.moves += moved
        self.buckets[key] = r
        live = {k for k, _, _ in self.where.values()}
        for k in [k for k in self.buckets if k not in live]:
            del self.buckets[k]
        return r

    def save(self) -> dict:
        res = {o: t.clone() for o, t in self.pending.items()}
        for o, (key, off, n) in self.where.items():
            if isinstance(o, str):
                res[o] = self.buckets[key][off : off + n].clone()
        return res

    def load(self, d: dict) -> None:
        self.pending = {
            str(o): t.detach().to("cpu", torch.float32).reshape(-1).clone() for o, t in d.items()
        }
        self.buckets.clear()
        self.where.clear()

    def norm(self) -> float:
        sq = sum(float(t.double().square().sum()) for t in self.buckets.values())
        sq += sum(float(t.double().square().sum()) for t in self.pending.values())
        return sq**0.5


class HookState:
    """Configuration and error-feedback memory of :func:`comm_hook` (one per DDP model)."""

    def __init__(
        self,
        compression: str = "auto",
        *,
        ratio: float = 0.01,
        block: int = 512,
        allow: str = "lossless,bf16,int8",
        error_feedback: bool = True,
        warmup_steps: int = 0,
        sampled: bool = True,
        codec: str = "zstd",
        level: int = 1,
        tolerance: float = 0.05,
        stochastic: bool = False,
        threshold: float = 0.0,
        values: str = "fp32",
        momentum: float = 0.0,
        process_group: Any = None,
        model: Any = None,
    ):
        if compression not in KINDS:
            raise UsageError(
                f"HookState: compression must be one of {', '.join(KINDS)}, got {compression!r}"
            )
        if not 0 < ratio <= 1:
            raise UsageError(f"HookState: ratio must be in (0, 1], got {ratio}")
        if not 0 <= momentum < 1:
            raise UsageError(f"HookState: momentum must be in [0, 1), got {momentum}")
        if warmup_steps < 0:
            raise UsageError(f"HookState: warmup_steps must be >= 0, got {warmup_steps}")
        self.compression = compression
        self.ratio = float(ratio)
        self.block = int(block)
        self.allow = allow
        self.error_feedback = bool(error_feedback)
        self.warmup_steps = int(warmup_steps)
        self.sampled = bool(sampled)
        self.codec = codec
        self.level = int(level)
        # the other codec parameters (each codec reads its own: ringpress.wire_codecs())
        self.tolerance = float(tolerance)
        self.stochastic = bool(stochastic)
        self.threshold = float(threshold)
        self.values = values
        self.process_group = process_group
        self.iteration = 0
        self.kinds_used: dict[str, int] = {}
        self._names: dict[int, str] = {}  # id(param) -> parameter name (after bind)
        self.momentum = float(momentum)
        self._residuals = _PerParam()
        self._velocities = _PerParam()
        if model is not None:
            self.bind(model)

    def bind(self, model: Any) -> "HookState":
        """Name the parameters (``model``: the DDP model or its module) so that residuals are
        saved and restored by parameter name; :func:`register` does this for you."""
        module = getattr(model, "module", model)
        self._names = {id(p): name for name, p in module.named_parameters()}
        return self

    def _key(self, p: torch.Tensor) -> Any:
        # In-process identity until bound; a name once bound (portable across restarts).
        return self._names.get(id(p), ("id", id(p)))

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Step count and per-parameter residuals (and velocities, with ``momentum``): CPU float32."""
        if (self._residuals.where or self._velocities.where) and not self._names:
            raise UsageError(
                "HookState.state_dict: parameters are not named; create the state with HookState(..., model=ddp) "
                "or use ringpress.torch.register(ddp, state) so residuals can be restored by name"
            )
        return {
            "version": _STATE_VERSION,
            "compression": self.compression,
            "iteration": self.iteration,
            "residuals": self._residuals.save(),
            "velocities": self._velocities.save(),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore what :meth:`state_dict` saved; residuals move into place at the next step."""
        if sd.get("version") != _STATE_VERSION:
            raise UsageError(
                f"HookState.load_state_dict: unknown state version {sd.get('version')!r}"
            )
        self.iteration = int(sd["iteration"])
        self._residuals.load(sd["residuals"])
        self._velocities.load(sd.get("velocities", {}))

    @property
    def layout_changes(self) -> int:
        """How many times a bucket layout change moved residuals to their parameters' new places."""
        return self._residuals.moves + self._velocities.moves

    # ------------------------------------------------------------------ internals
    def _group(self, device: torch.device) -> Any:
        """The group's ringpress backend for ``device``: native or the Python one."""
        from .. import torch as rt

        try:
            return rt.backend(self.process_group, device.type)
        except UsageError:
            raise UsageError(
                "ringpress comm_hook needs a ringpress process group: dist.init_process_group('ringpress'), "
                "or HookState(process_group=dist.new_group(backend='ringpress'))"
            ) from None

    def _kind(self, dtype: torch.dtype) -> str:
        if self.iteration < self.warmup_steps:
            return "none"
        if dtype != torch.float32 and self.compression in _LOSSY:
            return "lossless"
        return self.compression

    def _bucket_key(self, bucket: Any) -> tuple:
        return tuple(self._key(p) for p in bucket.parameters())

    def residual_norm(self) -> float:
        """L2 norm of all residuals (what error feedback still owes the model)."""
        return self._residuals.norm()


def comm_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook (see the module docstring): ``ddp.register_comm_hook(state, comm_hook)``."""
    buf = bucket.buffer()
    pg = state._group(buf.device)
    native = not isinstance(pg, _pybackend.ProcessGroupRingpress)
    kind = state._kind(buf.dtype)
    # The native backend takes the bucket as it is (a device bucket goes through pinned memory
    # in C++, its future carrying the device); momentum needs the bucket on the host.
    direct = native and (
        (buf.device.type == "cpu" and buf.is_contiguous())
        or (buf.device.type == "cuda" and not state.momentum)
    )
    staged = None if direct else _Staged(buf)
    host = buf if staged is None else staged.host
    host.div_(pg.size() if native else pg.comm.size)
    kw: dict = {}
    if kind != "none":
        kw = dict(
            compression=kind,
            ratio=state.ratio,
            block=state.block,
            allow=state.allow,
            sampled=state.sampled,
            codec=state.codec,
            level=state.level,
            tolerance=state.tolerance,
            stochastic=state.stochastic,
            threshold=state.threshold,
            values=state.values,
        )
    key = state._bucket_key(bucket) if (state.momentum or state.error_feedback) else ()
    velocity = None
    if state.momentum and host.dtype == torch.float32:
        # Momentum correction (Deep Gradient Compression): the velocity is accumulated here, before
        # compression, so what error feedback holds back keeps its momentum; the optimizer runs
        # without momentum.
        velocity = state._velocities.get(key, bucket, host.numel())
        velocity.mul_(state.momentum).add_(host)
        host.copy_(velocity)
        if not math.isfinite(float(velocity.sum())):
            # An overflow step (NaN/Inf gradients, e.g. fp16 loss scaling): the bucket carries it,
            # so every rank's loss scaler sees it and skips the step; the velocity forgets it
            # rather than poisoning every later step (the residual does the same: codec.h).
            velocity.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    residual = None
    if kind != "none" and state.error_feedback and kind in _LOSSY and host.dtype == torch.float32:
        residual = kw["residual"] = state._residuals.get(key, bucket, host.numel())
    state.kinds_used[kind] = state.kinds_used.get(kind, 0) + 1
    if bucket.is_last():
        state.iteration += 1
    if native and isinstance(kw.get("allow"), str):
        kw["allow"] = [a.strip() for a in kw["allow"].split(",") if a.strip()]
    if direct:
        # The native backend completes the bucket's future itself (no Python on completion),
        # zeroing the velocity of the entries top-k sent.
        return pg.allreduce_bucket(
            buf, op="sum", velocity=velocity if kind == "topk" else None, **kw
        )
    if native:
        fut = pg.allreduce_bucket(host, op="sum", **kw)

        def back(f: Any) -> torch.Tensor:
            f.value()
            if velocity is not None and residual is not None and kind == "topk":
                velocity.masked_fill_(residual == 0, 0.0)
            assert staged is not None
            staged.back()
            return buf

        return fut.then(back)
    work = pg.comm.allreduce(host, op="sum", async_op=True, **kw)
    out = _Outcome()

    def done(w: Any) -> None:
        err = w.exception()
        if err is None:
            try:
                if velocity is not None and residual is not None and kind in _SPARSE:
                    velocity.masked_fill_(residual == 0, 0.0)  # sent entries restart their momentum
                if staged is not None:
                    staged.back()
            except BaseException as e:
                err = e
        if err is None:
            out.ok(buf)
        else:
            out.fail(err)

    work.add_done_callback(done)
    return out.future


def register(ddp: Any, state: HookState | None = None, **kwargs: Any) -> HookState:
    """``ddp.register_comm_hook`` with a :class:`HookState` bound to the model's parameter names
    (``state`` or ``HookState(**kwargs)``); returns the state."""
    if state is None:
        state = HookState(**kwargs)
    elif kwargs:
        raise UsageError("register: pass either a HookState or its keyword arguments, not both")
    state.bind(ddp)
    ddp.register_comm_hook(state, comm_hook)
    return state

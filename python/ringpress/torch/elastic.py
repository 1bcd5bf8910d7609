"""Fault-tolerant data parallelism: a rank that dies costs no step and no checkpoint reload.

:class:`ElasticDataParallel` averages gradients across the ranks of a ringpress
:class:`~ringpress.Communicator` (one fused allreduce per step, optionally compressed with error
feedback) and runs the optimizer. When a rank dies or stops answering during the allreduce, the
survivors :meth:`~ringpress.Communicator.shrink` (agreeing on who is left, with no store and no
restart) and finish that same step with the gradients they have, averaged over the ranks that
contributed; the optimizer step count is not disturbed. At step boundaries :meth:`admit` lets
replacements in: a process started with :meth:`ElasticDataParallel.join` waits until the members
call it, then receives the model, the optimizer state and the step counter from a member (one
broadcast at link speed) and trains on from there.

Typical loop (``step`` is the number of optimizer steps taken; every rank agrees on it)::

    ft = ElasticDataParallel(model, optimizer, comm)          # or ElasticDataParallel.join(...)
    while ft.step < total_steps:
        x, y = batch_for(ft.step, ft.rank, ft.size)           # this rank's share of the step
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        ft.sync_and_step()                                    # average gradients, optimizer.step()
        ft.admit()                                            # let replacements in

What is guaranteed (docs/errors.md, "Recovery"):
  * After every :meth:`sync_and_step` all ranks hold the same parameters, optimizer state and
    ``step``. A failure during the allreduce: the survivors retry it among themselves; a rank
    that had already finished the step (the allreduce completed there just before the failure)
    hands its state to the ones that had not, and this step's gradient is then its own.
  * Two or more ranks failing at once, or during the recovery: handled the same way (the
    survivors shrink until a communicator of live ranks forms).
  * A rank that was only slow (silent longer than the communicator's timeout) is left out; it
    gets a TransportError and may join again.
  * A member lost while replacements are being admitted: the survivors and the replacements
    still end in one communicator (the shrink admits them too), and the replacements get the
    state as after an admission.
Not covered: a failure inside ``optimizer.step()`` itself on every rank at once (a bug, not a
fault), lost data-loader state (the batch is chosen from ``step``, ``rank`` and ``size``),
buffers that are not parameters (batch-norm statistics travel only with the state a joining or
lagging rank receives), the store's own host (rank 0 of a ``from_env`` job hosts it: a job that must
admit replacements needs a store that outlives every rank, e.g. torchrun's agent store or
``ringpress.TCPStoreServer`` in a supervisor).
Cost per step: copying the gradients into one buffer and back, one allreduce; :meth:`admit`
adds one store round trip on rank 0 and one 8-byte broadcast.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch

from ..comm import Communicator
from ..errors import TimeoutError as RpTimeoutError
from ..errors import TransportError

__all__ = ["ElasticDataParallel"]

_FAILURES = (TransportError, RpTimeoutError)


class ElasticDataParallel:
    """Data parallelism over ``comm`` that survives rank failures and admits replacements.

    ``compression``: None (exact fp32 allreduce) or any kind
    :meth:`ringpress.Communicator.allreduce` takes (``"bf16"``, ``"int8"``, ``"topk"`` ...),
    with error feedback (a residual per rank, zero for a rank that joins and after a recovery).
    ``compression_options``: further keyword arguments for that allreduce (e.g. ``ratio=``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        comm: Communicator,
        *,
        compression: str | None = None,
        compression_options: dict | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.comm = comm
        self.compression = compression
        self.compression_options = dict(compression_options or {})
        self.step = 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        n = sum(p.numel() for p in self.params)
        self._flat = torch.zeros(n, dtype=torch.float32)
        self._residual = torch.zeros(n, dtype=torch.float32) if compression else None
        self.events: list[dict] = []  # recoveries and admissions, for logs and benchmarks
        self._count_contributors = False  # set by a recovery until the next gradient allreduce
        self._hold_admit = False  # the same: admit() does nothing until that allreduce

    # ------------------------------------------------------------------ membership
    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @classmethod
    def join(
        cls,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        store: Any,
        *,
        prefix: str,
        timeout: float | None = None,
        job_key: str | None = None,
        **kwargs: Any,
    ) -> ElasticDataParallel:
        """Join a running job as a replacement: waits until its members call :meth:`admit`,
        then takes the model, optimizer state and step counter from a member."""
        comm = Communicator.join(store, prefix=prefix, timeout=timeout, job_key=job_key)
        self = cls(model, optimizer, comm, **kwargs)
        self.step = -1  # no state yet: behind every member
        try:
            self._reformed()
        except _FAILURES:
            # A member failed while this process was being admitted: it is a member too now,
            # so it recovers with them and takes the state of one that has it.
            self._recover_and_align()
        return self

    def admit(self, wait_for: int | None = None, timeout: float = 300.0) -> bool:
        """Call at a step boundary on every member: admits waiting replacements (they get the
        state from a member). True when the membership grew. ``wait_for``: wait until some
        replacement is admitted while the job has fewer ranks than that (or ``timeout`` seconds
        pass: TimeoutError); it returns after each admission, since the replacements go on from
        the next step: call it again at the next step boundary if the job is still short.

        After a recovery (here or during a step) the next collective of every rank must be the
        next step's gradient allreduce, wherever in the loop the failure found it: until that
        step is done this returns False at once."""
        if self._hold_admit:
            return False
        grew = False
        deadline = time.monotonic() + timeout
        while True:
            try:
                grown = self.comm.grow()
                if grown is not self.comm:
                    t0 = time.perf_counter()
                    self.comm = grown
                    self._reformed()
                    self.events.append(
                        {
                            "event": "admitted",
                            "step": self.step,
                            "size": self.size,
                            "seconds": time.perf_counter() - t0,
                        }
                    )
                    return True
            except _FAILURES:
                self._recover_and_align()
                return bool(self.comm.joined)
            # comm.size is the same on every member: they all loop, or all stop.
            if wait_for is None or self.size >= wait_for:
                return grew
            if time.monotonic() > deadline:
                raise RpTimeoutError(
                    f"admit: the job has {self.size} ranks, {wait_for} wanted, after {timeout} s"
                )
            time.sleep(0.01)

    # ------------------------------------------------------------------ the step
    def sync_and_step(self) -> None:
        """Average this step's gradients over the live ranks and run ``optimizer.step()``."""
        offsets = 0
        flat = self._flat
        for p in self.params:
            n = p.numel()
            if p.grad is None:
                flat[offsets : offsets + n].zero_()
            else:
                flat[offsets : offsets + n].copy_(p.grad.reshape(-1))
            offsets += n
        contributing = 1.0
        recovered = False
        while True:
            try:
                buf = flat.clone()
                if self._count_contributors:
                    # After a recovery (here or anywhere else since the last step) every rank
                    # runs this count first, so the sequence of collectives is the same on all.
                    total = float(self.comm.allreduce(np.array([contributing], np.float64))[0])
                else:
                    total = float(self.comm.size)
                if self.compression:
                    self.comm.allreduce(
                        buf.numpy(),
                        compression=self.compression,
                        residual=self._residual.numpy() if self._residual is not None else None,
                        **self.compression_options,
                    )
                else:
                    self.comm.allreduce(buf.numpy())
                break
            except _FAILURES:
                recovered = True
                if self._recover_and_align():
                    # This rank had not finished the previous step: it took the state of one
                    # that had, and its gradients belong to that step: it contributes none.
                    flat.zero_()
                    contributing = 0.0
        self._count_contributors = False
        self._hold_admit = False
        buf /= max(total, 1.0)
        offsets = 0
        for p in self.params:
            n = p.numel()
            g = buf[offsets : offsets + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            offsets += n
        self.optimizer.step()
        self.step += 1
        if recovered:
            self.events[-1]["resumed_step"] = self.step
            self.events[-1]["t_step_done"] = time.time()

    # ------------------------------------------------------------------ recovery internals
    def _recover_and_align(self) -> bool:
        """Shrink, then align the survivors' state; True when this rank took another's state.
        The next gradient allreduce then counts the ranks that contribute."""
        while True:
            try:
                self._recover()
                return self._reformed()
            except _FAILURES as e:
                if "left this rank out" in str(e):
                    raise

    def _reformed(self) -> bool:
        """After any re-formation (a shrink, a grow, a shrink that admitted joiners, or this
        rank's join), on every rank of the new communicator alike: align the state, and let the
        next gradient allreduce count the contributors before admit() runs again (so the
        sequence of collectives is the same on all). True when this rank took another's state."""
        self._count_contributors = True
        self._hold_admit = True
        return self._align()

    def _recover(self) -> None:
        """Shrink until a communicator of live ranks forms (a failure during the shrink, or a
        communicator born broken, shrinks again)."""
        t0 = time.perf_counter()
        size_before = self.comm.size
        left: list[int] = []
        while True:
            try:
                self.comm = self.comm.shrink()
                left += self.comm.left_out
                break
            except _FAILURES as e:
                if "left this rank out" in str(e):
                    raise
        if self._residual is not None:
            self._residual.zero_()  # a failed allreduce may have left it half-updated
        self.events.append(
            {
                "event": "recovered",
                "step": self.step,
                "size_before": size_before,
                "size": self.comm.size,
                "left_out": left,
                "seconds": time.perf_counter() - t0,
                "t": time.time(),
            }
        )

    def _align(self) -> bool:
        """Ranks that had not finished the last step (after a failure), or that have just joined
        (step -1), take the state of one that had (the lowest rank at the highest step). True
        when this rank took it."""
        steps = self.comm.allgather(np.array([self.step], np.int64)).reshape(-1)
        ahead = int(steps.max())
        if int(steps.min()) == ahead:
            return False
        root = int(np.flatnonzero(steps == ahead)[0])
        behind = self.step < ahead
        self._share_state(root=root)
        return behind

    def _share_state(self, root: int) -> None:
        """Rank ``root``'s model, optimizer state and step counter to every rank (error-feedback
        residuals restart at zero on ranks that receive)."""
        if self.comm.rank == root:
            bio = io.BytesIO()
            torch.save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "step": self.step,
                },
                bio,
            )
            blob = np.frombuffer(bio.getbuffer(), np.uint8).copy()
            n = np.array([blob.size], np.int64)
        else:
            n = np.zeros(1, np.int64)
        self.comm.broadcast(n, root=root)
        if self.comm.rank != root:
            if not 0 < int(n[0]) <= 1 << 36:
                raise TransportError(f"state of {int(n[0])} bytes from rank {root}")
            blob = np.empty(int(n[0]), np.uint8)
        self.comm.broadcast(blob, root=root)
        if self.comm.rank == root:
            return
        # weights_only: the state is tensors and plain containers; nothing from a peer runs.
        state = torch.load(io.BytesIO(blob.tobytes()), weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if self._residual is not None:
            self._residual.zero_()

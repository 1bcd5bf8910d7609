"""torch.distributed integration: ``import ringpress.torch`` registers the ``"ringpress"`` backend.

- ``dist.init_process_group("ringpress")`` (or ``"cpu:ringpress,cuda:nccl"``, or
  ``dist.new_group(backend="ringpress")``): a process group whose collectives run on the ringpress
  engine. The backend is native (``ringpress._c10d``, a C++ ``c10d::Backend``, csrc/torch/) when
  ringpress was built against this torch; otherwise the pure-Python one
  (:mod:`ringpress.torch.backend`) runs, and says once that it is the slow path.
- ``ddp.register_comm_hook(HookState(...), comm_hook)``: compressed, error-compensated gradient
  averaging that overlaps backward (:mod:`ringpress.torch.hooks`).
- :func:`backend` finds a group's ringpress backend; :func:`stats` reads its counters.

docs/torch.md is the guide.
"""

from __future__ import annotations

import atexit
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from . import backend as _pybackend
from .native import load as _load

BACKEND_NAME = "ringpress"
_native, WHY_NOT_NATIVE = _load()
NATIVE = _native is not None
_warned = False


def _create_python(store: Any, rank: int, size: int, timeout: timedelta) -> Any:
    global _warned
    if not _warned:
        _warned = True
        why = WHY_NOT_NATIVE or "the pure-Python backend was registered explicitly"
        warnings.warn(
            f"ringpress.torch: {why}. Using the pure-Python backend: the SLOW PATH "
            "(every call goes through Python, 30-60x the native backend's per-call cost, and "
            "gather/scatter/all_to_all/send/recv are missing)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _pybackend.create(store, rank, size, timeout)


if _native is not None:
    ProcessGroupRingpress: Any = _native.ProcessGroupRingpress
    # Before the interpreter finalizes, close every native group: queued requests fail fast and
    # their callbacks (torch futures, DDP and PowerSGD hooks) finish while Python still runs them.
    # A callback thread that drops a tensor once finalization has begun is ended by CPython inside
    # a destructor, which aborts the process (seen with PowerSGD after a collective mismatch).
    atexit.register(_native._close_all)

    def create(store: Any, rank: int, size: int, timeout: timedelta) -> Any:
        """Backend creator registered with ``dist.Backend.register_backend``."""
        return ProcessGroupRingpress(store, rank, size, timeout)

else:
    ProcessGroupRingpress = _pybackend.ProcessGroupRingpress
    create = _create_python

from .hooks import KINDS, HookState, comm_hook, register  # noqa: E402

Work = _pybackend.Work


def backend(group: Any = None, device: str = "cpu") -> Any:
    """The ringpress backend object of ``group`` (default: the default group) for ``device``:
    the native ``ProcessGroupRingpress`` or the Python one. Raises ``ringpress.UsageError`` when
    that device's backend is not ringpress."""
    from ..errors import UsageError

    pg = group if group is not None else dist.distributed_c10d._get_default_group()
    if isinstance(pg, (_pybackend.ProcessGroupRingpress, ProcessGroupRingpress)):
        return pg
    try:
        b = pg._get_backend(torch.device(device))
    except Exception as e:
        raise UsageError(
            f"ringpress.torch.backend: the group has no backend for {device}: {e}"
        ) from e
    if not isinstance(b, (_pybackend.ProcessGroupRingpress, ProcessGroupRingpress)):
        raise UsageError(
            f"ringpress.torch.backend: the group's {device} backend is {type(b).__name__}, not ringpress"
        )
    return b


def stats(group: Any = None) -> dict:
    """Counters of the group's ringpress communicator: ops, bytes_sent, bytes_received, ..."""
    b = backend(group)
    return b.stats() if hasattr(b, "stats") else b.comm.stats()


def device_backends(pg: Any) -> dict:
    """Python backend only: {device type: backend object} of the devices a mixed backend string
    gave to another backend (the native backend leaves that to torch: ``pg._get_backend``)."""
    return _pybackend.device_backends(pg)


__all__ = [
    "BACKEND_NAME",
    "KINDS",
    "NATIVE",
    "HookState",
    "ProcessGroupRingpress",
    "Work",
    "backend",
    "comm_hook",
    "create",
    "device_backends",
    "register",
    "stats",
]

if BACKEND_NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND_NAME, create, devices=["cpu", "cuda"])

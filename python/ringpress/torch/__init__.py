"""torch.distributed integration: ``import ringpress.torch`` registers the ``"ringpress"`` backend.

- ``dist.init_process_group("ringpress")`` (or ``"cpu:ringpress,cuda:nccl"``): a process group
  whose collectives run on the ringpress engine (:mod:`ringpress.torch.backend`).
- ``ddp.register_comm_hook(HookState(...), comm_hook)``: compressed, error-compensated gradient
  averaging that overlaps backward (:mod:`ringpress.torch.hooks`).

docs/torch.md is the guide.
"""

from __future__ import annotations

import torch.distributed as dist

from .backend import BACKEND_NAME, ProcessGroupRingpress, Work, create, device_backends
from .hooks import KINDS, HookState, comm_hook, register

__all__ = [
    "BACKEND_NAME",
    "KINDS",
    "HookState",
    "ProcessGroupRingpress",
    "Work",
    "comm_hook",
    "device_backends",
    "register",
]

if BACKEND_NAME.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND_NAME, create, devices=["cpu", "cuda"])

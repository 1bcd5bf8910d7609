"""Horovod-compatible front ends on ringpress's own communicator.

``import ringpress.horovod.torch as hvd`` in place of ``import horovod.torch as hvd``: the PyTorch
API of Horovod (``init``, ``rank``/``size``, ``allreduce``/``allgather``/``broadcast``/``alltoall``
with their async handles, ``broadcast_parameters``, ``broadcast_optimizer_state``,
``DistributedOptimizer``, ``Compression``) running on :class:`ringpress.Communicator`, without
torch.distributed or a process group. What is supported and what differs from Horovod:
docs/integrations.md.

Importing this package imports nothing heavy; ``ringpress.horovod.torch`` imports torch.
"""

from __future__ import annotations

__all__: list[str] = []

"""Horovod's PyTorch API on ringpress: ``import ringpress.horovod.torch as hvd``.

A Horovod PyTorch script runs with only its import line changed; start it with ``mpirun -n N``
(needs mpi4py), ``torchrun --nproc-per-node N`` or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT.
Everything runs on one :class:`ringpress.Communicator` per process (no torch.distributed process
group). Semantics, what is supported and what differs from Horovod: docs/integrations.md.

- membership: ``init``, ``shutdown``, ``is_initialized``, ``rank``, ``size``, ``local_rank``,
  ``local_size``, ``cross_rank``, ``cross_size``, ``is_homogeneous``, the ``*_built`` queries;
- collectives: ``allreduce`` (``_``, ``_async``, ``_async_``), ``grouped_allreduce`` (same
  forms), ``allgather`` (``_async``), ``broadcast`` (``_``, ``_async``, ``_async_``),
  ``alltoall`` (``_async``), ``barrier``, ``poll``, ``synchronize``; ops ``Average``, ``Sum``,
  ``Min``, ``Max``, ``Product`` (``Adasum`` is refused); ``join`` raises NotSupportedError;
- objects and model state: ``broadcast_object``, ``allgather_object``, ``broadcast_parameters``,
  ``broadcast_optimizer_state``;
- training: ``DistributedOptimizer``, ``Compression`` (``none``, ``fp16`` and ringpress's kinds);
- ``start_timeline``/``stop_timeline`` (and ``HOROVOD_TIMELINE`` at init): ringpress's Chrome
  trace.
"""

from __future__ import annotations

from ._compression import (
    Compression,
    Compressor,
    FP16Compressor,
    NoneCompressor,
    RingpressCompressor,
)
from ._ops import (
    Adasum,
    Average,
    Max,
    Min,
    Product,
    ReduceOp,
    Sum,
    allgather,
    allgather_async,
    allgather_object,
    allreduce,
    allreduce_,
    allreduce_async,
    allreduce_async_,
    alltoall,
    alltoall_async,
    barrier,
    broadcast,
    broadcast_,
    broadcast_async,
    broadcast_async_,
    broadcast_object,
    broadcast_optimizer_state,
    broadcast_parameters,
    global_process_set,
    grouped_allreduce,
    grouped_allreduce_,
    grouped_allreduce_async,
    grouped_allreduce_async_,
    join,
    poll,
    synchronize,
)
from ._optimizer import DistributedOptimizer
from ._state import (
    NotInitializedError,
    NotSupportedError,
    ccl_built,
    cross_rank,
    cross_size,
    cuda_built,
    ddl_built,
    gloo_built,
    gloo_enabled,
    init,
    is_homogeneous,
    is_initialized,
    local_rank,
    local_size,
    mpi_built,
    mpi_enabled,
    mpi_threads_supported,
    nccl_built,
    rank,
    rocm_built,
    shutdown,
    size,
    start_timeline,
    stop_timeline,
)

__all__ = [
    "Adasum",
    "Average",
    "Compression",
    "Compressor",
    "DistributedOptimizer",
    "FP16Compressor",
    "Max",
    "Min",
    "NoneCompressor",
    "NotInitializedError",
    "NotSupportedError",
    "Product",
    "ReduceOp",
    "RingpressCompressor",
    "Sum",
    "add_process_set",
    "allgather",
    "allgather_async",
    "allgather_object",
    "allreduce",
    "allreduce_",
    "allreduce_async",
    "allreduce_async_",
    "alltoall",
    "alltoall_async",
    "barrier",
    "broadcast",
    "broadcast_",
    "broadcast_async",
    "broadcast_async_",
    "broadcast_object",
    "broadcast_optimizer_state",
    "broadcast_parameters",
    "ccl_built",
    "cross_rank",
    "cross_size",
    "cuda_built",
    "ddl_built",
    "global_process_set",
    "gloo_built",
    "gloo_enabled",
    "grouped_allreduce",
    "grouped_allreduce_",
    "grouped_allreduce_async",
    "grouped_allreduce_async_",
    "init",
    "is_homogeneous",
    "is_initialized",
    "join",
    "local_rank",
    "local_size",
    "mpi_built",
    "mpi_enabled",
    "mpi_threads_supported",
    "nccl_built",
    "poll",
    "rank",
    "remove_process_set",
    "rocm_built",
    "shutdown",
    "size",
    "start_timeline",
    "stop_timeline",
    "synchronize",
]


def add_process_set(*args: object, **kwargs: object) -> None:
    raise NotSupportedError(
        "hvd.add_process_set: process sets are not supported by ringpress.horovod"
    )


def remove_process_set(*args: object, **kwargs: object) -> None:
    raise NotSupportedError(
        "hvd.remove_process_set: process sets are not supported by ringpress.horovod"
    )

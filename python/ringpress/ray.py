"""Ray Train: ringpress as the process group of a ``TorchTrainer``.

    from ray.train.torch import TorchTrainer
    from ringpress.ray import RingpressConfig

    trainer = TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=4),
                           torch_config=RingpressConfig())

Ray Train starts the workers, picks rank 0's address and calls ``dist.init_process_group`` on every
worker; :class:`RingpressConfig` makes that group a ringpress one. Before Ray's own set-up it runs
two steps on every worker: ``import ringpress.torch`` (which registers the ``"ringpress"`` backend
with torch.distributed) and, unless the workers already have one, it gives them all the same job
key (``RINGPRESS_JOB_KEY``), drawn once per start with :mod:`secrets` and carried by Ray's own
task calls, not by the rendezvous store (docs/security.md). Inside ``train_func``,
``ray.train.torch.prepare_model`` wraps the model in DDP over that group, and
``ringpress.torch.register(ddp, compression="int8")`` puts the compressed gradient hook on it.

The backend string can be mixed as in torch (``"cpu:ringpress,cuda:nccl"``). Ray is not a
dependency of ringpress: this module imports it when it is imported. docs/integrations.md is the
guide; tests/python/test_ray_train.py runs a 2-worker job on a local Ray cluster.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend

_KEY_VAR = "RINGPRESS_JOB_KEY"
_KEY_FILE_VAR = "RINGPRESS_JOB_KEY_FILE"


def _prepare_worker(key: str | None) -> None:
    """On each worker, before ``init_process_group``: register the backend; set the job key
    unless the worker has one configured already (its own environment wins)."""
    import ringpress.torch  # noqa: F401  (registers "ringpress" with torch.distributed)

    if key is not None and not os.environ.get(_KEY_VAR) and not os.environ.get(_KEY_FILE_VAR):
        os.environ[_KEY_VAR] = key


class _RingpressBackend(_TorchBackend):
    """Ray's torch backend with ringpress loaded (and keyed) on every worker first."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        key = secrets.token_hex(32) if backend_config.job_key else None
        worker_group.execute(_prepare_worker, key=key)
        super().on_start(worker_group, backend_config)


@dataclass
class RingpressConfig(TorchConfig):
    """A ``TorchConfig`` whose process group is ringpress's.

    Args:
        backend: the torch.distributed backend string (default ``"ringpress"``; e.g.
            ``"cpu:ringpress,cuda:nccl"`` to keep NCCL for GPU tensors).
        init_method: ``"env"`` (default) or ``"tcp"``, as in ``TorchConfig``.
        timeout_s: the process group's timeout in seconds, as in ``TorchConfig``: a dead or
            silent peer raises ringpress's ``TransportError``/``TimeoutError`` within it.
        job_key: draw a fresh job key for each start and hand it to the workers (default). Set
            ``False`` only when the workers' environment already carries ``RINGPRESS_JOB_KEY``
            or ``RINGPRESS_JOB_KEY_FILE`` (a configured key always wins); without a key the
            rendezvous store holds the job's secret (docs/security.md).
    """

    backend: str = "ringpress"
    job_key: bool = True

    @property
    def backend_cls(self) -> type:
        return _RingpressBackend


__all__ = ["RingpressConfig"]

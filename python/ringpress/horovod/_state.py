"""The process's Horovod-style membership: ``init``/``shutdown`` and the topology queries.

One :class:`ringpress.Communicator` per process, made by :func:`init` from the launcher found in
the environment (docs/integrations.md):

* ``RANK``/``WORLD_SIZE`` + ``MASTER_PORT`` (torchrun, or set by hand; also the ``RINGPRESS_``
  names): :meth:`Communicator.from_env`;
* ``mpirun`` (Open MPI's ``OMPI_COMM_WORLD_*``, PMI's ``PMI_RANK``/``PMIX_RANK``) without
  ``MASTER_PORT``: :meth:`Communicator.from_mpi` (needs mpi4py);
* none of these: a one-rank job (Horovod also runs a script started plainly as size 1).

``local_rank``/``local_size`` come from the launcher's variables where it sets them (torchrun's
``LOCAL_RANK``/``LOCAL_WORLD_SIZE``, Open MPI's ``OMPI_COMM_WORLD_LOCAL_RANK``/``_SIZE``,
MPICH's ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS``), else from the ranks that share this host
(ringpress's host identity: host name, boot id, network namespace), gathered once at init;
``cross_rank``/``cross_size`` (Horovod's: the ranks with this rank's local rank, one per host)
from the same gather.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _core
from ..comm import Communicator, _launcher_var
from ..errors import UsageError


class NotInitializedError(UsageError):
    """A Horovod call before ``hvd.init()`` (or after ``hvd.shutdown()``)."""


class NotSupportedError(UsageError, NotImplementedError):
    """A Horovod feature ringpress does not provide (docs/integrations.md lists them)."""


class _State:
    def __init__(self) -> None:
        self.comm: Communicator | None = None
        self.owned = True  # shutdown() closes the communicator (not one the caller passed)
        self.local_rank = 0
        self.local_size = 1
        self.cross_rank = 0
        self.cross_size = 1
        self.timeline: str | None = None


S = _State()

_LOCAL_VARS = (
    ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),  # torchrun
    ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),  # Open MPI
    ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH / Intel MPI (Hydra)
)


def comm() -> Communicator:
    """The communicator of this process; NotInitializedError before init()."""
    c = S.comm
    if c is None:
        raise NotInitializedError(
            "ringpress.horovod: not initialized; call hvd.init() first (docs/integrations.md)"
        )
    return c


def _under_mpi() -> bool:
    return any(
        _launcher_var(v) is not None
        for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
    )


def _make_comm(kwargs: dict) -> Communicator:
    has_rank = any(
        _launcher_var(v) is not None
        for v in ("RINGPRESS_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    )
    has_port = any(_launcher_var(v) is not None for v in ("RINGPRESS_MASTER_PORT", "MASTER_PORT"))
    if has_rank and has_port:
        return Communicator.from_env(**kwargs)
    if _under_mpi():
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise UsageError(
                "hvd.init(): started by mpirun, but mpi4py is not installed; install it "
                "(pip install mpi4py), or set MASTER_ADDR and MASTER_PORT so that ringpress "
                "rendezvouses without MPI"
            ) from None
        return Communicator.from_mpi(**kwargs)
    if _launcher_var("HOROVOD_RANK") is not None:
        raise UsageError(
            "hvd.init(): HOROVOD_RANK is set (horovodrun's Gloo mode), whose rendezvous ringpress "
            "cannot join; start the script with mpirun, torchrun, or RANK/WORLD_SIZE/"
            "MASTER_ADDR/MASTER_PORT (docs/integrations.md)"
        )
    if has_rank and _launcher_var("WORLD_SIZE") not in (None, "1"):
        raise UsageError(
            "hvd.init(): RANK and WORLD_SIZE are set but MASTER_PORT is not; set MASTER_ADDR "
            "and MASTER_PORT (torchrun does)"
        )
    return Communicator(_core.HashStore(), 0, 1, **kwargs)


def _topology(c: Communicator) -> None:
    from ._ops import allgather_object_on

    env_local: tuple[int, int] | None = None
    for rv, sv in _LOCAL_VARS:
        r, s = _launcher_var(rv), _launcher_var(sv)
        if r is not None and s is not None:
            try:
                env_local = (int(r), int(s))
            except ValueError:
                raise UsageError(
                    f"environment variable {rv}={r!r} or {sv}={s!r} is not an integer"
                ) from None
            break
    rows = allgather_object_on(c, (_core.host_identity(), env_local))
    for q, row in enumerate(rows):  # what a peer sent: check its shape before use
        ok = isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str)
        ev = row[1] if ok else None
        if not ok or not (
            ev is None
            or (isinstance(ev, tuple) and len(ev) == 2 and all(type(v) is int for v in ev))
        ):
            raise UsageError(
                f"hvd.init(): malformed host record from rank {q}", rank=c.rank, peer=q
            )
    hosts = [h for h, _ in rows]
    local: list[tuple[int, int]] = []
    for q, (h, ev) in enumerate(rows):
        same = [k for k in range(len(rows)) if hosts[k] == h]
        local.append(ev if ev is not None else (same.index(q), len(same)))
    me = c.rank
    S.local_rank, S.local_size = local[me]
    peers = [q for q in range(len(rows)) if local[q][0] == local[me][0]]
    S.cross_rank, S.cross_size = peers.index(me), len(peers)


def init(comm: Any = None, process_sets: Any = None, **kwargs: Any) -> None:
    """Join the job (see the module docstring for how the launcher is found). Idempotent.

    ``comm``: an mpi4py communicator (ranks rendezvous over it), or a ready
    :class:`ringpress.Communicator` (used as is; ``shutdown()`` then leaves it open); Horovod's
    list-of-ranks form is not supported. ``process_sets``: only None (the global set).
    ``**kwargs`` (ringpress's): passed to the Communicator's constructor (``timeout``,
    ``transport``, ``job_key``, ``timeline``, ...)."""
    if S.comm is not None:
        return
    if process_sets not in (None, "dynamic") and process_sets != []:
        raise NotSupportedError(
            "hvd.init(process_sets=...): process sets are not supported by ringpress.horovod; "
            "run one job per set"
        )
    owned = True
    if comm is None:
        c = _make_comm(kwargs)
    elif isinstance(comm, Communicator):
        c, owned = comm, False
    elif callable(getattr(comm, "Get_rank", None)):
        c = Communicator.from_mpi(comm, **kwargs)
    else:
        raise NotSupportedError(
            "hvd.init(comm=...): expected an mpi4py communicator or a ringpress.Communicator "
            f"(a list of ranks is not supported), got {type(comm).__name__}"
        )
    try:
        _topology(c)
    except BaseException:
        if owned:
            c.close()
        raise
    S.comm, S.owned = c, owned
    path = os.environ.get("HOROVOD_TIMELINE")
    if path:
        start_timeline(path)


def shutdown() -> None:
    """Leave the job: finish queued work and close the communicator (Horovod's shutdown). A later
    ``init()`` joins again (every rank must shut down and re-init together)."""
    c = S.comm
    if c is None:
        return
    from . import _ops

    try:
        if S.timeline:
            stop_timeline()
        _ops.reset()
    finally:
        S.comm = None
        S.local_rank, S.local_size, S.cross_rank, S.cross_size = 0, 1, 0, 1
        if S.owned:
            c.close()


def is_initialized() -> bool:
    return S.comm is not None


def rank() -> int:
    return comm().rank


def size() -> int:
    return comm().size


def local_rank() -> int:
    comm()
    return S.local_rank


def local_size() -> int:
    comm()
    return S.local_size


def cross_rank() -> int:
    comm()
    return S.cross_rank


def cross_size() -> int:
    comm()
    return S.cross_size


def is_homogeneous() -> bool:
    """True when every host runs the same number of ranks."""
    c = comm()
    return c.size == S.local_size * S.cross_size


def _timeline_file(path: str, r: int) -> str:
    if r == 0:
        return path
    stem, dot, ext = path.rpartition(".")
    return f"{stem}.{r}.{ext}" if dot and "/" not in ext else f"{path}.{r}"


def start_timeline(file_path: str, mark_cycles: bool = False) -> None:
    """Record a Chrome trace of this rank's collectives (ringpress's timeline: queued, op, wait,
    reduce, per request); ``stop_timeline()`` or ``shutdown()`` writes it: rank 0 to
    ``file_path``, rank r to ``<stem>.<r>.<ext>``. ``mark_cycles`` is accepted and ignored."""
    c = comm()
    c._c.enable_timeline(True)
    S.timeline = _timeline_file(str(file_path), c.rank)


def stop_timeline() -> None:
    """Stop recording and write the trace started by ``start_timeline`` (or HOROVOD_TIMELINE)."""
    c = comm()
    path, S.timeline = S.timeline, None
    if path:
        c.write_timeline(path)
    c._c.enable_timeline(False)


# Horovod's build queries: which of its own controllers/libraries are in use. ringpress uses
# none of them (its own transports: TCP and shared memory).
def mpi_threads_supported() -> bool:
    return False


def mpi_enabled() -> bool:
    return False


def mpi_built() -> bool:
    return False


def gloo_enabled() -> bool:
    return False


def gloo_built() -> bool:
    return False


def nccl_built() -> int:
    return 0


def ddl_built() -> bool:
    return False


def ccl_built() -> bool:
    return False


def cuda_built() -> bool:
    return False


def rocm_built() -> bool:
    return False

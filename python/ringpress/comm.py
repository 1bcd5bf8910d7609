"""Communicator: ringpress's collectives for numpy arrays and torch CPU tensors.

A :class:`Communicator` is one rank's membership in a job. It is created from a rendezvous:

* :meth:`Communicator.from_env` -- ``torchrun`` or plain scripts (``RANK``/``WORLD_SIZE``/
  ``MASTER_ADDR``/``MASTER_PORT``, or the same names prefixed ``RINGPRESS_``), mpirun's
  variables, or SLURM's (``srun``: ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, the
  first host of ``SLURM_JOB_NODELIST``); :func:`launch_env` says what it reads, in which order;
* :meth:`Communicator.from_mpi` -- an mpi4py communicator (``mpirun -n P python ...``);
* :meth:`Communicator.from_store` -- an existing key-value store (torch's c10d stores, a
  :class:`TCPStore`, or any object with ``set``/``get``/``add``).

Collectives work in place on contiguous buffers and run on ringpress's engine: in submission order,
on every rank the same sequence. ``async_op=True`` returns a :class:`Work` to wait on later; the
buffer must stay untouched until then (the Work keeps it alive).

Configuration: a keyword argument, else the ``RINGPRESS_*`` environment variable, else the
default (``RINGPRESS_TRANSPORT`` tcp|shm|auto, ``RINGPRESS_TIMEOUT`` seconds,
``RINGPRESS_TIMELINE`` path prefix for a Chrome trace per rank, ``RINGPRESS_SEGMENT_BYTES``,
``RINGPRESS_SMALL_BYTES``, ``RINGPRESS_SHM_RING_BYTES``, ``RINGPRESS_BIND_ADDR`` /
``RINGPRESS_SOCKET_IFNAME``: the address ranks publish and listen on,
``RINGPRESS_COMPRESSION``, ``RINGPRESS_JOB_KEY`` / ``RINGPRESS_JOB_KEY_FILE`` / ``job_key=``: the
job key every connection proves without sending it, ``RINGPRESS_ENCRYPT`` / ``encrypt=``: TCP links
encrypted (default) or authenticated only; docs/security.md). The variables are one table in the C++ core (``_core.env_table()``,
docs/configuration.md), which reads them; this module never reads them itself.

Recovery (docs/errors.md, "Recovery"): after a peer dies or goes silent, the survivors call
:meth:`Communicator.shrink` and go on with the ranks that are left; :meth:`Communicator.grow` and
:meth:`Communicator.join` let replacements in. ``recovery="shrink"`` does the shrink in place,
inside the call that failed (its error then carries ``recovered=True``; retry the call).
"""

from __future__ import annotations

import atexit
import collections
import functools
import itertools
import os
import secrets
import socket
import weakref
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from . import _core
from .errors import TimeoutError as _RpTimeoutError
from .errors import TransportError, UsageError

__all__ = [
    "Communicator",
    "HashStore",
    "LaunchEnv",
    "TCPStore",
    "TCPStoreServer",
    "Work",
    "expand_hostlist",
    "launch_env",
]

TCPStore = _core.TCPStore
TCPStoreServer = _core.TCPStoreServer
HashStore = _core.HashStore

_OPS = ("sum", "avg", "min", "max", "prod")
_REDUCIBLE = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
)
_instance_counter = itertools.count()
_live: weakref.WeakSet = weakref.WeakSet()  # open communicators, closed at interpreter exit


@atexit.register
def _close_at_exit() -> None:
    # Before the interpreter finalizes: close() lets completion callbacks (torch futures, user
    # callbacks) finish while Python still runs them. A callback thread that wants the GIL once
    # finalization has begun is ended by CPython, and torch's future code aborts the process then.
    for comm in list(_live):
        try:
            comm.close()
        except Exception:  # nothing to report to at exit
            pass


_env_generation = itertools.count()  # from_env calls in this process
_env_servers: dict = {}  # port -> the TCPStoreServer rank 0 hosts for from_env


def _launcher_var(name: str) -> str | None:
    """A launcher's variable (RANK, MASTER_PORT, OMPI_COMM_WORLD_RANK, ...); ringpress's own
    ``RINGPRESS_*`` variables are read through the core's configuration table."""
    if name.startswith("RINGPRESS_"):
        return _core.env_raw(name)
    v = os.environ.get(name)
    return None if v in (None, "") else v


def _int_env(names: Sequence[str]) -> int | None:
    for n in names:
        v = _launcher_var(n)
        if v is not None:
            try:
                return int(v)
            except ValueError:
                raise UsageError(f"environment variable {n}={v!r} is not an integer") from None
    return None


# ------------------------------------------------------------------ launchers (from_env)

SLURM_PORT_BASE = (
    20000  # under SLURM without MASTER_PORT: SLURM_PORT_BASE + job id % SLURM_PORT_SPAN
)
SLURM_PORT_SPAN = 10000
_HOSTLIST_MAX = 1 << 20  # hosts an expanded Slurm host list may have (a typo like [1-99999999])
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def _parse_hostlist(text: str) -> list[list[Any]]:
    """Slurm's compressed host list -> one entry per host pattern: a list of literal strings and
    bracket groups, each group a list of (low, high, width) ranges. Raises UsageError."""

    def bad(why: str) -> UsageError:
        return UsageError(f"bad Slurm host list {text!r}: {why}")

    if not isinstance(text, str) or not text.strip():
        raise bad("empty")
    entries: list[list[Any]] = []
    parts: list[Any] = []
    literal = ""
    i, n = 0, len(text)
    while i <= n:
        c = text[i] if i < n else ","
        if c == ",":
            if literal:
                parts.append(literal)
            if not parts:
                raise bad("an empty host name")
            entries.append(parts)
            parts, literal = [], ""
        elif c == "[":
            close = text.find("]", i)
            if close < 0:
                raise bad("'[' without ']'")
            body = text[i + 1 : close]
            if "[" in body:
                raise bad("nested '['")
            if literal:
                parts.append(literal)
                literal = ""
            elif not parts:
                raise bad("a host name must not start with '['")
            ranges = []
            for item in body.split(","):
                lo_s, dash, hi_s = item.partition("-")
                hi_s = hi_s if dash else lo_s
                if not (lo_s.isdigit() and hi_s.isdigit() and lo_s.isascii() and hi_s.isascii()):
                    raise bad(f"'{item}' in [{body}] is not a number or a range a-b")
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise bad(f"range {item} runs backwards")
                ranges.append((lo, hi, len(lo_s)))
            parts.append(ranges)
            i = close
        elif c == "]":
            raise bad("']' without '['")
        elif c in _HOST_CHARS:
            literal += c
        else:
            raise bad(f"character {c!r} at {i}")
        i += 1
    return entries


def expand_hostlist(text: str) -> list[str]:
    """Expand Slurm's compressed host list (``SLURM_JOB_NODELIST``): ``node[01-03,07],gpu5`` ->
    node01, node02, node03, node07, gpu5. Commas separate hosts outside brackets and ranges inside;
    a range keeps the zero padding of its low bound; several bracket groups in one name expand as
    a product (``r[1-2]n[1-2]`` -> r1n1, r1n2, r2n1, r2n2). Malformed text (unbalanced or nested
    brackets, empty names or ranges, backwards ranges, characters a host name cannot have) or more
    than a million hosts raises UsageError."""
    hosts: list[str] = []
    for entry in _parse_hostlist(text):
        count = 1
        for part in entry:
            if not isinstance(part, str):
                count *= sum(hi - lo + 1 for lo, hi, _ in part)
        if len(hosts) + count > _HOSTLIST_MAX:
            raise UsageError(f"Slurm host list {text!r} names more than {_HOSTLIST_MAX} hosts")
        names = [""]
        for part in entry:
            if isinstance(part, str):
                names = [x + part for x in names]
            else:
                names = [
                    x + str(v).zfill(width)
                    for x in names
                    for lo, hi, width in part
                    for v in range(lo, hi + 1)
                ]
        hosts += names
    return hosts


def first_host(text: str) -> str:
    """The first host of a Slurm host list (the whole list is checked, not expanded)."""
    entry = _parse_hostlist(text)[0]
    return "".join(p if isinstance(p, str) else str(p[0][0]).zfill(p[0][2]) for p in entry)


class LaunchEnv(
    collections.namedtuple("LaunchEnv", "launcher rank size local_rank master_addr master_port")
):
    """What :meth:`Communicator.from_env` reads from the environment (:func:`launch_env`).
    ``launcher``: "env" (RINGPRESS_*/torchrun's RANK/WORLD_SIZE, Open MPI's or PMI's variables)
    or "slurm"; ``local_rank``: the rank's index on its host, or None where the launcher does not
    say (LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID)."""


def launch_env() -> LaunchEnv:
    """Rank, size, local rank and the rendezvous address from the launcher's variables.

    Order, first found wins (docs/configuration.md, "Launchers"):

    1. rank from RINGPRESS_RANK, RANK (torchrun), OMPI_COMM_WORLD_RANK (mpirun), PMI_RANK; size
       from RINGPRESS_WORLD_SIZE, WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE;
    2. only when none of those rank variables is set: SLURM (srun): SLURM_PROCID, SLURM_NTASKS
       (else SLURM_NPROCS), SLURM_LOCALID.

    The store's host: RINGPRESS_MASTER_ADDR, MASTER_ADDR, under SLURM the first host of
    SLURM_JOB_NODELIST (else SLURM_NODELIST; Slurm starts task 0 there under block and cyclic
    distribution: set MASTER_ADDR otherwise), else 127.0.0.1. Its port: RINGPRESS_MASTER_PORT,
    MASTER_PORT, under SLURM ``SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN`` (20000-29999,
    below Linux's ephemeral ports; two jobs sharing a node and a job id modulo 10000 collide: set
    MASTER_PORT then). Raises UsageError naming what is missing or malformed.
    """
    rank = _int_env(["RINGPRESS_RANK", "RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"])
    launcher = "env"
    if rank is not None:
        size = _int_env(["RINGPRESS_WORLD_SIZE", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
        local = _int_env(["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"])
    elif _launcher_var("SLURM_PROCID") is not None:
        launcher = "slurm"
        rank = _int_env(["SLURM_PROCID"])
        size = _int_env(["SLURM_NTASKS", "SLURM_NPROCS"])
        local = _int_env(["SLURM_LOCALID"])
        if size is None:
            raise UsageError("from_env under SLURM needs SLURM_NTASKS (srun sets it)")
    else:
        size = None
    if rank is None or size is None:
        raise UsageError(
            "from_env needs RANK and WORLD_SIZE (or RINGPRESS_RANK/RINGPRESS_WORLD_SIZE, "
            "mpirun's or srun's variables) in the environment"
        )
    if size < 1 or not 0 <= rank < size:
        raise UsageError(f"from_env: need 0 <= rank < world size, got rank {rank} of {size}")
    addr = _launcher_var("RINGPRESS_MASTER_ADDR") or _launcher_var("MASTER_ADDR")
    port = _int_env(["RINGPRESS_MASTER_PORT", "MASTER_PORT"])
    if launcher == "slurm":
        if addr is None:
            nodes = _launcher_var("SLURM_JOB_NODELIST") or _launcher_var("SLURM_NODELIST")
            if nodes is None:
                raise UsageError(
                    "from_env under SLURM needs SLURM_JOB_NODELIST (or MASTER_ADDR) for the "
                    "store's host"
                )
            addr = first_host(nodes)
        if port is None:
            job = _int_env(["SLURM_JOB_ID", "SLURM_JOBID"])
            if job is None or job < 0:
                raise UsageError("from_env under SLURM needs SLURM_JOB_ID or MASTER_PORT")
            port = SLURM_PORT_BASE + job % SLURM_PORT_SPAN
    if port is None:
        raise UsageError("from_env needs MASTER_PORT (or RINGPRESS_MASTER_PORT) in the environment")
    if not 0 < port < 65536:
        raise UsageError(f"from_env: master port {port} is not a TCP port")
    return LaunchEnv(launcher, rank, size, local, addr or "127.0.0.1", port)


_TORCH_DTYPES: dict = {}


class _Buf:
    """(address, element count, dtype name, owner) of a contiguous CPU buffer."""

    __slots__ = ("addr", "count", "dtype", "owner", "shape")

    def __init__(self, x: Any, what: str, writable: bool):
        self.owner = x
        if type(x).__module__.startswith("torch"):
            if x.device.type != "cpu":
                raise UsageError(
                    f"{what}: only CPU tensors are supported so far, got device {x.device}"
                )
            if not x.is_contiguous():
                raise UsageError(f"{what}: tensor must be contiguous (call .contiguous())")
            self.addr = x.data_ptr()
            self.count = x.numel()
            dt = _TORCH_DTYPES.get(x.dtype)
            if dt is None:
                dt = _TORCH_DTYPES.setdefault(x.dtype, str(x.dtype).replace("torch.", ""))
            self.dtype = dt
            self.shape = tuple(x.shape)
            return
        info = _core.buffer_info(x, writable)
        if not info:
            self._explain(x, what, writable)
        self.addr, self.count, self.dtype, self.shape = info
        if self.dtype.startswith("byteorder:"):
            raise UsageError(
                f"{what}: non-native byte order (buffer format {self.dtype[10:]!r}); ringpress "
                "reduces and sends numbers in this host's byte order: convert first, e.g. "
                "x.astype(x.dtype.newbyteorder('='))"
            )
        if self.dtype.startswith("format:"):
            raise UsageError(f"{what}: unsupported element type ({self.dtype})")

    @staticmethod
    def _explain(x: Any, what: str, writable: bool) -> None:
        try:
            a = np.asarray(memoryview(x))
        except TypeError:
            raise UsageError(
                f"{what}: expected a numpy array, a torch CPU tensor or a buffer, got {type(x).__name__}"
            ) from None
        if not a.flags.c_contiguous:
            raise UsageError(f"{what}: array must be C-contiguous (use np.ascontiguousarray)")
        if writable and not a.flags.writeable:
            raise UsageError(f"{what}: array is read-only")
        raise UsageError(f"{what}: unsupported buffer (format {memoryview(x).format!r})")


def _check_op(op: str) -> str:
    if op not in _OPS:
        raise UsageError(f"unknown reduction op {op!r}; expected one of {', '.join(_OPS)}")
    return op


def _check_reducible(b: _Buf, what: str) -> None:
    if b.dtype not in _REDUCIBLE:
        raise UsageError(
            f"{what}: dtype {b.dtype} cannot be reduced; supported: {', '.join(_REDUCIBLE)}"
        )


_FAILURES = (TransportError, _RpTimeoutError)


def _failed(comm: Any, e: BaseException, core: Any) -> None:
    """What a collective that failed on ``core`` because a peer died or went silent does before
    the error propagates: recovery="shrink" shrinks ``comm`` in place (the call can then be
    retried); otherwise the error says how the survivors can go on."""
    comm._recover_in_place(e, core)
    if not getattr(e, "recovered", False) and hasattr(e, "add_note"):
        e.add_note(
            "ringpress: the survivors can go on without the lost rank: comm.shrink() on "
            "each of them, then retry the call (docs/errors.md, Recovery)"
        )


def _recovering(fn):
    """Wraps a collective with _failed (Communicator.allreduce does the same inline: the
    wrapper's call costs about a tenth of a small allreduce)."""

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        core = self._c
        try:
            return fn(self, *args, **kwargs)
        except _FAILURES as e:
            _failed(self, e, core)
            raise

    return call


class Work:
    """Handle of an asynchronous collective. Keeps its buffers alive until complete."""

    __slots__ = ("_comm", "_core", "_keep", "_result", "_w")

    def __init__(self, w: Any, keep: Any, result: Any, comm: Any = None):
        self._w = w
        self._keep = keep
        self._result = result
        self._comm = comm  # recovery="shrink": the communicator to shrink when this fails
        self._core = comm._c if comm is not None else None

    def is_completed(self) -> bool:
        """True once the request finished (successfully or not). Never blocks."""
        return self._w.is_completed()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until complete; raise its error. With ``timeout`` (seconds), return False if it
        is still running then (the request keeps its own deadline)."""
        try:
            ok = self._w.wait(-1.0 if timeout is None else float(timeout))
        except _FAILURES as e:
            if self._comm is not None:
                self._comm._recover_in_place(e, self._core)
            raise
        if ok:
            self._keep = None
        return ok

    def result(self) -> Any:
        """Wait, then return the output (the in-place buffer, or the gathered array)."""
        self.wait()
        return self._result

    def exception(self) -> BaseException | None:
        """The error of a completed request, or None (also None while still running)."""
        if not self._w.is_completed():
            return None
        try:
            self._w.wait(0.0)
        except BaseException as e:
            return e
        return None

    def add_done_callback(self, fn) -> None:
        """Call ``fn(work)`` once complete: at once if already done, else on one of the
        communicator's callback threads (never the engine's, so ``fn`` may block or run another
        collective)."""
        self._w.on_complete(lambda: fn(self))

    @property
    def seq(self) -> int:
        return self._w.seq


class _TorchStoreAdapter:
    """torch.distributed Store -> the (set, get-with-timeout, add) interface ringpress needs."""

    def __init__(self, store: Any):
        self._s = store

    def set(self, key: str, value: bytes) -> None:
        self._s.set(key, value)

    def get(self, key: str, timeout_ms: int) -> bytes:
        try:
            self._s.wait([key], timedelta(milliseconds=timeout_ms))
        except Exception as e:  # torch raises DistStoreError/RuntimeError on timeout
            raise _RpTimeoutError(f"store key {key!r} not set within {timeout_ms} ms ({e})") from e
        return bytes(self._s.get(key))

    def add(self, key: str, delta: int) -> int:
        return int(self._s.add(key, delta))

    def delete_key(self, key: str) -> bool:
        return bool(self._s.delete_key(key))


def _store_key(kwargs: dict) -> str | None:
    """The job key ringpress's own store uses: the communicator's (job_key=, else the legacy
    secret=), else None = the configured one (RINGPRESS_JOB_KEY / RINGPRESS_JOB_KEY_FILE)."""
    return kwargs.get("job_key") or kwargs.get("secret") or None


def _forget_rendezvous(store: Any, prefix: str, rank: int) -> None:
    """Remove this rank's rendezvous records from ringpress's own store once the communicator is
    up. Safe without a barrier: a rank's rendezvous completes only after every other rank has read
    its ``addr/<rank>`` (each reads all records before it connects or acks), and rank 0's only
    after every rank has read ``secret`` (their hellos carry it); see rendezvous.cc. The names
    come from the core (``_core.rendezvous_records``), the one list of what a rendezvous writes."""
    for name in _core.rendezvous_records(rank):
        store.delete_key(f"{prefix}/{name}")


def _as_store(store: Any) -> Any:
    if isinstance(store, _core.Store):
        return store
    mod = type(store).__module__
    if mod.startswith("torch"):
        return _TorchStoreAdapter(store)
    for m in ("set", "get", "add"):
        if not callable(getattr(store, m, None)):
            raise UsageError(f"store {type(store).__name__} lacks a {m}() method")
    return store


class Communicator:
    """One rank of a ringpress job. See the module docstring for constructors and configuration.

    Every collective takes ``async_op``: False (default) blocks and returns the output; True
    returns a :class:`Work`.
    """

    launch: LaunchEnv | None = None  # from_env: what the launcher's variables said

    def __init__(
        self,
        store: Any,
        rank: int,
        size: int,
        *,
        transport: str | None = None,
        timeout: float | None = None,
        bind_addr: str | None = None,
        route_hint: str | None = None,
        job_key: str | None = None,
        encrypt: bool | None = None,
        secret: str | None = None,
        timeline: str | None = None,
        segment_bytes: int | None = None,
        small_bytes: int | None = None,
        halving_bytes: int | None = None,
        shm_ring_bytes: int | None = None,
        prefix: str | None = None,
        recovery: str | None = None,
        _keep: Any = None,
    ):
        if (
            not (isinstance(rank, int) and isinstance(size, int))
            or size < 1
            or not 0 <= rank < size
        ):
            raise UsageError(f"need 0 <= rank < size, got rank={rank!r} size={size!r}")
        # Unset arguments stay unset here: the core fills them from the environment, else the
        # default (argument > environment > default, docs/configuration.md).
        if transport is not None and transport not in ("auto", "tcp", "shm"):
            raise UsageError(f"transport must be auto, tcp or shm, got {transport!r}")
        if timeout is not None and not timeout > 0:
            raise UsageError(f"timeout must be positive seconds, got {timeout}")
        if prefix is None:
            prefix = f"ringpress/{next(_instance_counter)}"
        self._keep = _keep  # e.g. the TCPStoreServer hosted by rank 0
        self._inflight: collections.deque = collections.deque()  # async requests' buffers
        base = _as_store(store)
        self._c = _core.Communicator(
            _core.prefix_store(prefix, base),
            rank,
            size,
            transport=transport or "",
            timeout=float(timeout or 0.0),
            bind_addr=bind_addr or "",
            route_hint=route_hint or "",
            secret=job_key or secret or "",
            encrypt="" if encrypt is None else ("on" if encrypt else "off"),
            timeline=timeline or "",
            segment_bytes=int(segment_bytes or 0),
            small_bytes=int(small_bytes or 0),
            halving_bytes=int(halving_bytes or 0),
            shm_ring_bytes=int(shm_ring_bytes or 0),
        )
        self._store = base
        self._prefix = prefix
        if recovery not in (None, "off", "shrink"):
            raise UsageError(f"recovery must be off or shrink, got {recovery!r}")
        self._recovery = recovery or "off"
        self.left_out: list[int] = []
        # Read once (an environment lookup per call would cost a fifth of a small allreduce).
        self._compression = _core.env_string("RINGPRESS_COMPRESSION")
        _live.add(self)

    @classmethod
    def _from_core(cls, core: Any, store: Any, prefix: str, keep: Any) -> Communicator:
        self = cls.__new__(cls)
        self._keep = keep
        self._inflight = collections.deque()
        self._c = core
        self._store = store
        self._prefix = prefix
        self._recovery = "off"
        self.left_out = []
        self._compression = _core.env_string("RINGPRESS_COMPRESSION")
        _live.add(self)
        return self

    # ------------------------------------------------------------------ recovery
    def _recover_in_place(self, err: BaseException, core: Any) -> None:
        """recovery="shrink": after ``err`` on ``core``, shrink this object in place (once per
        failure: requests that fail later on the same core find it replaced already) and say so
        on the error: ``err.recovered`` (True), ``err.left_out``, ``err.epoch``."""
        if self._recovery != "shrink":
            return
        if self._c is core:
            while True:
                try:
                    nxt, left = self._c.shrink()
                    break
                except _FAILURES as e2:
                    if "left this rank out" in str(e2):
                        raise
                    # another failure during the shrink: the same core shrinks again
            self._c = nxt
            self.left_out = list(left)
            self._inflight.clear()
        err.recovered = True  # type: ignore[attr-defined]
        err.left_out = list(self.left_out)  # type: ignore[attr-defined]
        err.epoch = self.epoch  # type: ignore[attr-defined]
        err.joined = self.joined  # type: ignore[attr-defined]
        if hasattr(err, "add_note"):
            err.add_note(
                f"ringpress: recovered: this communicator now has {self.size} ranks "
                f"(epoch {self.epoch}, left out {self.left_out}); retry the call"
            )

    def shrink(self) -> Communicator:
        """After a failure (a :class:`TransportError` or :class:`TimeoutError` from a call), the
        survivors call this together: they agree on who is gone and get a new communicator over
        the rest, ranks renumbered in the old order, with no store and no new rendezvous. Its
        ``left_out`` lists the old ranks that are not in it. This communicator is then closed.
        The call that failed can be retried on the new one. If another member fails while the
        new one is being formed, the new one's first call raises: shrink again. If the failure
        came during a :meth:`grow`, the shrink admits that grow's joiners too (see
        :attr:`joined`).
        docs/errors.md ("Recovery") says what is guaranteed and what it costs."""
        core, left = self._c.shrink()  # queued requests run (or fail) first
        return self._succeeded_by(core, left)

    def grow(self) -> Communicator:
        """Collective of the members at a point they choose (a step boundary): admits the
        processes waiting in :meth:`join` on this job's store. Returns the grown communicator
        (the joiners take the next ranks; this one is closed), or ``self`` when nobody waits.
        The store must outlive any rank (a store hosted by a launcher or a separate process)."""
        core, left = self._c.grow()
        return self if core is None else self._succeeded_by(core, left)

    def _succeeded_by(self, core: Any, left: Sequence[int]) -> Communicator:
        """The Python object for the communicator a shrink or grow made of this one."""
        self._inflight.clear()
        nxt = Communicator._from_core(core, self._store, self._prefix, self._keep)
        nxt.left_out = list(left)
        nxt._recovery = self._recovery
        if getattr(self, "launch", None) is not None:
            nxt.launch = self.launch
        _live.discard(self)
        return nxt

    @classmethod
    def join(
        cls,
        store: Any,
        *,
        prefix: str,
        timeout: float | None = None,
        transport: str | None = None,
        job_key: str | None = None,
        encrypt: bool | None = None,
        bind_addr: str | None = None,
        route_hint: str | None = None,
    ) -> Communicator:
        """Join a running job (a restarted or new process): waits until the members call
        :meth:`grow`, then returns this process's communicator (its rank is the next free one).
        ``store`` and ``prefix`` are the job's (see :attr:`prefix`); the job key must be the
        job's too (``job_key=`` or ``RINGPRESS_JOB_KEY`` / ``_FILE``)."""
        base = _as_store(store)
        core = _core.Communicator.join(
            _core.prefix_store(prefix, base),
            transport=transport or "",
            timeout=float(timeout or 0.0),
            bind_addr=bind_addr or "",
            route_hint=route_hint or "",
            secret=job_key or "",
            encrypt="" if encrypt is None else ("on" if encrypt else "off"),
        )
        return cls._from_core(core, base, prefix, None)

    @property
    def epoch(self) -> int:
        """Which membership this is: 0 after the rendezvous, +1 per shrink or grow."""
        return self._c.epoch

    @property
    def joined(self) -> list[int]:
        """The ranks that joined when this communicator was formed: by :meth:`grow`, or by a
        :meth:`shrink` after a grow that failed on its way (a member lost while rank 0 handed
        the list of joiners round: the survivors that missed it shrink, the others grow, and all
        end in the same communicator, joiners included). Empty otherwise. Ranks that see it
        non-empty owe the joiners whatever a grow owes them (the state they need)."""
        return list(self._c.joined)

    @property
    def prefix(self) -> str:
        """The store namespace of this job (what :meth:`join` needs)."""
        return self._prefix

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_env(cls, **kwargs: Any) -> Communicator:
        """Rendezvous through environment variables: torchrun's, ``RINGPRESS_``-prefixed ones,
        mpirun's, or SLURM's (srun) when none of the others is set; :func:`launch_env` gives the
        order and the defaults (docs/configuration.md, "Launchers").

        ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` (default 127.0.0.1; under SLURM the first host
        of ``SLURM_JOB_NODELIST``) and ``MASTER_PORT`` (under SLURM derived from
        ``SLURM_JOB_ID`` when unset). Rank 0 hosts a ringpress TCP store on MASTER_PORT, unless
        torchrun's agent already hosts torch's store there (``TORCHELASTIC_USE_AGENT_STORE=True``),
        which is then used. The communicator's ``launch`` attribute keeps what was read
        (a :class:`LaunchEnv`, with the local rank).
        """
        launch = launch_env()
        rank, size, addr, port = launch.rank, launch.size, launch.master_addr, launch.master_port
        timeout = kwargs.get("timeout") or _core.env_seconds("RINGPRESS_TIMEOUT")
        agent_store = (_launcher_var("TORCHELASTIC_USE_AGENT_STORE") or "").lower() == "true"
        store: Any
        if agent_store and _launcher_var("RINGPRESS_MASTER_PORT") is None:
            import torch.distributed as dist

            store = dist.TCPStore(addr, port, size, False, timedelta(seconds=timeout))
        else:
            if rank == 0 and port not in _env_servers:
                # One server per process and port, for the process's lifetime: a later from_env
                # (a new communicator after a failure) finds it, and ranks that get there first
                # are not left talking to a server that is about to go away. It listens only on
                # the address the ranks were told, unless every interface is asked for
                # (bind_addr="0.0.0.0" or RINGPRESS_BIND_ADDR=0.0.0.0). Connections are capped at
                # 4 per rank plus slack (each from_env holds one per rank).
                wild = "0.0.0.0" in (
                    kwargs.get("bind_addr"),
                    _core.env_string("RINGPRESS_BIND_ADDR"),
                )
                _env_servers[port] = _core.TCPStoreServer(
                    "0.0.0.0" if wild else addr,
                    port,
                    key=_store_key(kwargs),
                    max_connections=4 * size + 64,
                )
            store = _core.TCPStore(addr, port, int(timeout * 1000), key=_store_key(kwargs))
        kwargs.setdefault("route_hint", addr)
        # Each from_env of a job rendezvouses under its own keys (every rank calls it the same
        # number of times, in the same order); the agent's store also outlives restarts.
        restart = _launcher_var("TORCHELASTIC_RESTART_COUNT") or "0"
        prefix = kwargs.pop("prefix", f"ringpress/env/{restart}/{next(_env_generation)}")
        comm = cls(store, rank, size, prefix=prefix, **kwargs)
        comm.launch = launch
        if isinstance(store, _core.TCPStore):
            _forget_rendezvous(store, prefix, rank)
        return comm

    @classmethod
    def from_store(cls, store: Any, rank: int, size: int, **kwargs: Any) -> Communicator:
        """Rendezvous through an existing store (torch.distributed stores included)."""
        return cls(store, rank, size, **kwargs)

    @classmethod
    def from_mpi(cls, comm: Any = None, **kwargs: Any) -> Communicator:
        """Rendezvous through an mpi4py communicator (default ``MPI.COMM_WORLD``): rank 0 hosts a
        TCP store and broadcasts its address over MPI, with a fresh job key when none is
        configured (``job_key=``, ``RINGPRESS_JOB_KEY`` / ``_FILE``): MPI, not the store, carries
        it, so the job's connections are authenticated without any set-up."""
        if comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        hosts = comm.allgather(socket.gethostname())
        keep = None
        msg = None
        if rank == 0:
            if len(set(hosts)) == 1:
                host = "127.0.0.1"
            else:
                host = socket.gethostbyname(socket.gethostname())
            configured = kwargs.get("job_key") or any(
                _core.env_raw(v) for v in ("RINGPRESS_JOB_KEY", "RINGPRESS_JOB_KEY_FILE")
            )
            fresh = None if configured else secrets.token_hex(32)
            # Listen only where the other ranks are told to connect; with the job's key.
            keep = _core.TCPStoreServer(host, 0, key=kwargs.get("job_key") or fresh)
            msg = (host, keep.port, fresh)
        host, port, key = comm.bcast(msg, root=0)
        if key:
            kwargs["job_key"] = key
        timeout = kwargs.get("timeout") or _core.env_seconds("RINGPRESS_TIMEOUT")
        store = _core.TCPStore(host, port, int(timeout * 1000), key=_store_key(kwargs))
        kwargs.setdefault("route_hint", host)
        prefix = kwargs.pop("prefix", "ringpress/mpi")
        comm = cls(store, rank, size, _keep=keep, prefix=prefix, **kwargs)
        _forget_rendezvous(store, prefix, rank)
        return comm

    # ------------------------------------------------------------------ properties
    @property
    def rank(self) -> int:
        return self._c.rank

    @property
    def size(self) -> int:
        return self._c.size

    @property
    def timeout(self) -> float:
        """Deadline of each collective, in seconds (``timeout=``, else ``RINGPRESS_TIMEOUT``,
        else 300)."""
        return self._c.timeout

    def set_timeout(self, timeout: float) -> None:
        """Change the deadline of collectives issued from now on (running ones keep theirs)."""
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise UsageError(f"timeout must be positive seconds, got {timeout!r}")
        self._c.set_timeout(float(timeout))

    def transport(self, peer: int) -> str:
        """How this rank reaches ``peer``: "shm", "tcp", or "self"."""
        return self._c.transport(peer)

    @property
    def hosts(self) -> list[int]:
        """Per rank, the index of its host: ranks that share a host (the same host identity, or
        ``RINGPRESS_HOST_ID``) have equal indices, numbered in the order of their lowest rank.
        Hierarchical collectives group ranks by it (docs/algorithms.md)."""
        return list(self._c.hosts())

    def stats(self) -> dict:
        """Counters: ops, bytes_sent/bytes_received on the wire (headers included; tcp_bytes_sent:
        the part sent over TCP, i.e. the network when ranks are on several hosts;
        single_copy_bytes: the part received by reading a shared-memory peer's buffer directly,
        ``RINGPRESS_SHM_SINGLE_COPY``; ``single_copy``: with its default, auto, the way kept per
        collective and size class, with the best time per GB of each way), payload_bytes
        (user bytes, before compression; effective busbw counts these), ``stages`` (seconds and
        bytes spent waiting for data and in reduce / encode / decode / select / scatter_add,
        summed over requests; the plain ring reduces while it receives, so its ``reduce`` holds
        that wait too), and ``auto`` (choices of the auto mode, the last request's
        predicted time per allowed kind and its actual time, calibrations, and ``levels``:
        (hosts, ranks per host) the model describes, (H, L) where the hierarchical allreduce
        runs and (1, P) otherwise)."""
        return self._c.stats()

    @property
    def closed(self) -> bool:
        return self._c.closed

    @property
    def broken(self) -> bool:
        """True after an error aborted the job: every later call raises it; make a new one."""
        return self._c.broken

    # ------------------------------------------------------------------ collectives
    def _finish(self, w: Any, keep: Any, result: Any, async_op: bool) -> Any:
        if async_op:
            # The engine writes into these buffers until the request completes, whether or not
            # the caller keeps the Work: hold them here too (requests complete in order, so
            # the finished ones are at the front).
            inflight = self._inflight
            try:
                while inflight and inflight[0][0].is_completed():
                    inflight.popleft()
            except IndexError:  # another thread emptied it meanwhile
                pass
            inflight.append((w, keep, result))
            return Work(w, keep, result, self if self._recovery == "shrink" else None)
        return result

    def allreduce(
        self,
        x: Any,
        op: str = "sum",
        async_op: bool = False,
        compression: str | None = None,
        # (Not keyword-only, though meant to be passed by keyword: CPython fills missing
        # keyword-only arguments with a dict lookup each, 100 ns of a 4 KiB call.)
        codec: str = "zstd",
        level: int = 1,
        block: int = 512,
        ratio: float = 0.01,
        sampled: bool = True,
        residual: Any = None,
        allow: str | Sequence[str] = "lossless",
        tolerance: float = 0.05,
        stochastic: bool = False,
        threshold: float = 0.0,
        values: str = "fp32",
    ) -> Any:
        """Reduce ``x`` element-wise across ranks, in place; returns ``x`` (or a Work).

        ``compression`` is the name of a wire codec (``ringpress.wire_codecs()``; the builtin ones
        follow; each reads only its own parameters, listed in its ``params``) or ``"auto"``.
        ``"lossless"`` (shuffle + ``codec`` zstd|lz4 at ``level``; bit-identical to none, any
        dtype), ``"bf16"``/``"fp16"``, ``"int8"``/``"int4"``/``"int2"`` (one scale per ``block``
        elements; ``stochastic`` rounding), ``"sign"`` (1 bit + a mean-|x| scale per ``block``),
        ``"ternary"`` (TernGrad, 2 bits): float32 with sum/avg, lossy, one rounding per ring hop;
        every rank still ends with the same bits. ``"topk"``: each rank sends its ``ratio``
        largest-magnitude entries (``sampled`` threshold selection, k within +``tolerance``, or
        exact), ``"randomk"`` ``ratio`` of the entries at positions drawn from the request number
        (the same on every rank), ``"threshold"`` every entry with |x| >= ``threshold``; their
        values as float32 or (``values="fp16"``) float16, gathered and summed densely. A
        ``ringpress.compressors`` compressor ``c`` is ``compression=c.wire_codec,
        **c.wire_params``. ``"auto"``: per request, the kind among
        ``allow`` (comma-separated or a list; default ``"lossless"``, exact) with the lowest time
        predicted by a model of this link and CPU (measured at the first auto request and every
        64th, agreed by all ranks), or none when compression would not pay; ``stats()["auto"]``
        shows the choices and the predicted and actual times. Default: none (or the
        ``RINGPRESS_COMPRESSION`` environment variable, read when the communicator is made).

        ``residual`` (error feedback): a float32 buffer of x's element count, zeros at first, kept
        by the caller across steps. topk/randomk/threshold: the entries this rank drops (and the
        rounding of fp16 values) are added back next time. The lossy ring codecs: this rank adds
        ``residual`` to its contribution and keeps in it the rounding of every segment it encodes
        on the ring (its own data at the first hop, the partial sums it forwards, and the final
        sum of the block it owns), so over any number of steps the outputs summed plus every
        rank's residual equal the inputs summed (fp32 rounding aside); cost: one decode pass and
        two elementwise passes. none/lossless lose nothing and
        leave it unchanged; auto, when it picks one of them, delivers it (x += residual, residual
        = 0) so nothing waits for a lossy request that may never come. Wrong dtype or size:
        ``UsageError``.
        """
        core = self._c
        try:
            if (
                type(x) is np.ndarray
                and type(op) is str
                and compression is None
                and residual is None
                and not async_op
                and self._compression == "none"
                and core.allreduce_buffer(x, op)
            ):
                return x  # the small-message fast path (the binding takes the buffer itself)
            b = _Buf(x, "allreduce", True)
            _check_reducible(b, "allreduce")
            raddr = 0
            keep: Any = b
            if residual is not None:
                rb = _Buf(residual, "allreduce residual", True)
                if rb.dtype != "float32" or rb.count != b.count:
                    raise UsageError(
                        f"allreduce residual must be float32 with {b.count} elements, got {rb.count} {rb.dtype}"
                    )
                raddr, keep = rb.addr, (b, rb)
            if compression is None:
                compression = self._compression
            if compression == "none":
                w = self._c.allreduce_plain(b.addr, b.count, b.dtype, _check_op(op), async_op)
            else:
                if isinstance(allow, str):
                    allow = [a.strip() for a in allow.split(",") if a.strip()]
                w = self._c.allreduce(
                    b.addr,
                    b.count,
                    b.dtype,
                    _check_op(op),
                    async_op,
                    compression,
                    codec,
                    int(level),
                    int(block),
                    float(ratio),
                    bool(sampled),
                    raddr,
                    list(allow),
                    tolerance=float(tolerance),
                    stochastic=bool(stochastic),
                    threshold=float(threshold),
                    values=values,
                )
            return self._finish(w, keep, x, async_op)
        except _FAILURES as e:  # inline, not @_recovering: see _recovering
            _failed(self, e, core)
            raise

    @_recovering
    def allreduce_coalesced(
        self, xs: Sequence[Any], op: str = "sum", async_op: bool = False
    ) -> Any:
        """Allreduce several buffers of one dtype as one fused collective (tensor fusion)."""
        bufs = [_Buf(x, "allreduce_coalesced", True) for x in xs]
        if not bufs:
            raise UsageError("allreduce_coalesced needs at least one buffer")
        dtypes = {b.dtype for b in bufs}
        if len(dtypes) != 1:
            raise UsageError(f"allreduce_coalesced needs one dtype, got {sorted(dtypes)}")
        _check_reducible(bufs[0], "allreduce_coalesced")
        w = self._c.allreduce_coalesced(
            [(b.addr, b.count) for b in bufs], bufs[0].dtype, _check_op(op), async_op
        )
        return self._finish(w, bufs, list(xs), async_op)

    @_recovering
    def broadcast(self, x: Any, root: int = 0, async_op: bool = False) -> Any:
        """Copy ``x`` of rank ``root`` into ``x`` on every rank; returns ``x``."""
        b = _Buf(x, "broadcast", True)
        w = self._c.broadcast(b.addr, b.count, b.dtype, int(root), async_op)
        return self._finish(w, b, x, async_op)

    @_recovering
    def allgather(self, x: Any, out: Any = None, async_op: bool = False) -> Any:
        """Gather equal-sized ``x`` from every rank; returns ``out`` with shape (size, *x.shape)."""
        if not async_op and type(x) is np.ndarray:
            if out is None:
                out = np.empty((self.size, *x.shape), x.dtype)
            if type(out) is np.ndarray and self._c.allgather_buffer(x, out):
                return out  # the fast path (the binding takes both buffers itself)
        b = _Buf(x, "allgather", False)
        if out is None:
            out = _empty_like(x, (self.size, *b.shape))
        o = _Buf(out, "allgather out", True)
        if o.count != b.count * self.size or o.dtype != b.dtype:
            raise UsageError(
                f"allgather: out must hold {self.size} x {b.count} {b.dtype}, got {o.count} {o.dtype}"
            )
        w = self._c.allgather(b.addr, o.addr, [b.count] * self.size, b.dtype, async_op)
        return self._finish(w, (b, o), out, async_op)

    @_recovering
    def allgatherv(
        self, x: Any, counts: Sequence[int], out: Any = None, async_op: bool = False
    ) -> Any:
        """Gather ``x`` of different sizes: ``counts[r]`` elements from rank r, concatenated (1-D)."""
        b = _Buf(x, "allgatherv", False)
        counts = [int(c) for c in counts]
        if len(counts) != self.size or counts[self.rank] != b.count:
            raise UsageError(
                f"allgatherv: counts must have {self.size} entries with counts[{self.rank}] == {b.count}, got {counts}"
            )
        if out is None:
            out = _empty_like(x, (sum(counts),))
        o = _Buf(out, "allgatherv out", True)
        if o.count != sum(counts) or o.dtype != b.dtype:
            raise UsageError(
                f"allgatherv: out must hold {sum(counts)} {b.dtype}, got {o.count} {o.dtype}"
            )
        w = self._c.allgather(b.addr, o.addr, counts, b.dtype, async_op)
        return self._finish(w, (b, o), out, async_op)

    @_recovering
    def alltoall(
        self,
        x: Any,
        send_counts: Sequence[int] | None = None,
        recv_counts: Sequence[int] | None = None,
        out: Any = None,
        async_op: bool = False,
    ) -> Any:
        """All-to-all: ``send_counts[p]`` elements of ``x`` (blocks in rank order, 1-D view) go to
        rank p; ``recv_counts[p]`` elements from rank p land in ``out`` (1-D, blocks in rank
        order). Without counts, ``x`` is split into ``size`` equal blocks and so is ``out``. A
        sender's count and its receiver's must agree (else ``UsageError`` on every rank, naming
        both). Every exchange is posted at once (docs/algorithms.md)."""
        b = _Buf(x, "alltoall", False)
        if send_counts is None:
            if b.count % self.size:
                raise UsageError(
                    f"alltoall: {b.count} elements do not split into {self.size} equal blocks"
                )
            send_counts = [b.count // self.size] * self.size
        sc = [int(c) for c in send_counts]
        rc = [int(c) for c in (recv_counts if recv_counts is not None else sc)]
        if len(sc) != self.size or len(rc) != self.size or min(sc + rc) < 0:
            raise UsageError(
                f"alltoall: send_counts and recv_counts need {self.size} non-negative entries"
            )
        if sum(sc) != b.count:
            raise UsageError(f"alltoall: send_counts sum to {sum(sc)}, x holds {b.count}")
        if out is None:
            out = _empty_like(x, (sum(rc),))
        o = _Buf(out, "alltoall out", True)
        if o.count != sum(rc) or o.dtype != b.dtype:
            raise UsageError(
                f"alltoall: out must hold {sum(rc)} {b.dtype}, got {o.count} {o.dtype}"
            )
        w = self._c.alltoall(b.addr, o.addr, sc, rc, b.dtype, async_op)
        return self._finish(w, (b, o), out, async_op)

    @_recovering
    def reduce_scatter(
        self, x: Any, out: Any = None, op: str = "sum", async_op: bool = False
    ) -> Any:
        """Reduce ``x`` (size * n elements) across ranks; rank r gets block r (n elements) in ``out``."""
        if not async_op and type(x) is np.ndarray and type(op) is str:
            if out is None and x.size % self.size == 0:
                out = np.empty((x.size // self.size,), x.dtype)
            if type(out) is np.ndarray and self._c.reduce_scatter_buffer(x, out, op):
                return out  # the fast path (the binding takes both buffers itself)
        b = _Buf(x, "reduce_scatter", False)
        _check_reducible(b, "reduce_scatter")
        if b.count % self.size:
            raise UsageError(
                f"reduce_scatter: {b.count} elements do not split into {self.size} equal blocks"
            )
        n = b.count // self.size
        if out is None:
            out = _empty_like(x, (n,))
        o = _Buf(out, "reduce_scatter out", True)
        if o.count != n or o.dtype != b.dtype:
            raise UsageError(
                f"reduce_scatter: out must hold {n} {b.dtype}, got {o.count} {o.dtype}"
            )
        w = self._c.reduce_scatter(
            b.addr, o.addr, [n] * self.size, b.dtype, _check_op(op), async_op
        )
        return self._finish(w, (b, o), out, async_op)

    @_recovering
    def barrier(self, async_op: bool = False) -> Any:
        """Return once every rank has entered the barrier."""
        w = self._c.barrier(async_op)
        return self._finish(w, None, None, async_op)

    # ------------------------------------------------------------------ lifetime
    def write_timeline(self, path: str) -> int:
        """Write the recorded Chrome trace (enable with ``timeline=`` or RINGPRESS_TIMELINE)."""
        return self._c.write_timeline(path)

    def close(self) -> None:
        """Finish queued work, synchronise with the other ranks, close connections. Idempotent."""
        self._c.close()
        self._inflight.clear()
        self._keep = None

    def __del__(self) -> None:
        # Close with the GIL released (the binding does), not from the C++ destructor, which
        # would wait for the engine while holding it.
        c = getattr(self, "_c", None)
        if c is not None and not c.closed:
            try:
                c.close()
            except Exception:  # nothing to report to at garbage collection
                pass

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ringpress.Communicator rank {self.rank} of {self.size}{' closed' if self.closed else ''}>"


def _empty_like(x: Any, shape: tuple) -> Any:
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.empty(shape, dtype=x.dtype)
    return np.empty(shape, dtype=np.asarray(x).dtype)

"""Allreduce benchmark: ringpress vs gloo (torch.distributed) vs Open MPI (mpi4py), one job.

Launch (``ringpress bench allreduce`` = ``python -m ringpress_bench allreduce``)
    ringpress bench allreduce [--nranks 2]        alone: spawns its own ranks on this host
    ringpress bench allreduce --link 1gbit        alone, each rank in a network namespace, joined
                                                  by a veth shaped to 1 Gbit/s (root; see netns)
    ringpress bench allreduce --hosts 4 --ranks-per-host 4 --link 1gbit [--placement cyclic]
                                                  alone, 16 ranks on 4 namespace hosts: shared
                                                  memory within a host, 1 Gbit/s links between
    mpirun -n P [--allow-run-as-root --oversubscribe] ringpress bench allreduce [options]
    torchrun --nproc-per-node P -m ringpress_bench allreduce [options]
The launcher is detected from the environment (Open MPI / PMIx variables, else RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT); with neither, the command is "alone" and starts ``--nranks`` rank
processes of itself (``runner.spawn_alone``, ``launch.LocalRanks``: rendezvous on 127.0.0.1 at a free port, rank 0's
output on our terminal, every rank stopped and its shared memory removed on exit, failure,
timeout or Ctrl-C). ``--launcher single`` runs one process in place (a smoke test: busbw is 0).
The MPI column needs mpirun (alone mode skips it with a note); gloo needs torch; a peer that is
missing is skipped with a one-line note.

What is measured
    For every size (bytes of float32, SUM; default 4 KiB .. 256 MiB in x4 steps) and every peer:
    the time of one in-place allreduce of a numpy float32 buffer. ringpress:
    ``ringpress.Communicator.from_mpi()`` under MPI, ``.from_env()`` otherwise, then
    ``comm.allreduce(buf)``. gloo: ``torch.distributed`` with the gloo backend, ``all_reduce`` on
    ``torch.from_numpy(buf)`` (same memory); rendezvous at ``tcp://MASTER_ADDR:MASTER_PORT+1``
    (ringpress has MASTER_PORT), the torchrun agent's store under torchrun, or a port rank 0
    picks and broadcasts under MPI. MPI: ``Allreduce(MPI.IN_PLACE, buf, op=SUM)`` on a dup of
    COMM_WORLD, only under mpirun. Under mpirun on one host Open MPI (and ringpress, transport
    auto) move data through shared memory while gloo uses TCP over loopback; ``mpirun --mca btl
    tcp,self`` and RINGPRESS_TRANSPORT=tcp make them use TCP too.

Timing (nccl-tests style, every rank agrees)
    A sample is: the peer's own barrier, then ``inner`` back-to-back allreduces timed with
    ``time.perf_counter`` (garbage collection off), divided by ``inner``. ``inner`` batches small
    messages so that one sample lasts about 20 ms (1 for large ones). The reported time is the
    median over samples of the slowest rank's time for that sample. At every size each peer's
    result is checked exactly on its first call (every rank contributes small integers, so the
    fp32 sum is exact) and again after its last timed batch (to 1e-4 relative: each call scales
    the data by P); a wrong element aborts the run on every rank. Warm-up: ``--warmup`` calls,
    fewer if they would take more than half the time budget. Samples per peer per size: enough
    to fill ``--budget`` seconds, at least 5 and at most 50, or exactly ``--repeats``. Peers run
    one after the other (``--order blocks``), each verified, warmed up and timed in one block,
    the first peer rotating from size to size; switching libraries between single samples
    (``--order interleaved``) spreads load bursts evenly but lets one library's wake-up and
    polling behaviour leak into the next one's timings (on a loaded 2-core VM, Open MPI calls
    took 12-16 ms instead of 2 us right after a batch of another library's calls). The
    buffer is refilled before every sample (untimed) and ``inner`` is capped so that repeated
    sums stay finite. ``--isolated``: ``inner`` is 1, so a sample is the barrier and one call (up
    to 400 samples in the budget): the latency a lone call in a training loop sees, including
    the ranks' skew as they leave the barrier.
    algbw = size / time; busbw = algbw * 2(P-1)/P (the nccl-tests definition: the bandwidth each
    rank's link carries in a ring allreduce). GB = 1e9 bytes. Speedups: peer time / ringpress time.

Control plane (barriers between phases, gathering samples): MPI's COMM_WORLD under mpirun, else a
small TCP star at MASTER_ADDR:MASTER_PORT+2 (rank 0 serves), independent of the measured peers.

Results go to ``--json`` (default ``allreduce_<mode>_np<P>[_<link rate>][_quick].json`` under
``bench/results/`` in a checkout, ``./ringpress-results/`` elsewhere; mode = alone, mpi, torchrun,
env, single, or netns with a shaped link) with machine info, versions, the command, the
configuration and every sample of every rank, plus a busbw plot next to it (``.png``). Only rank 0
prints and writes; it also shows a progress bar on stderr when that is a terminal.

Usage: ``ringpress bench allreduce [--quick] [--sizes 4K..256M] [--peers ringpress,gloo,mpi]
[--nranks 2] [--link 1gbit|10gbit|none] [--hosts N --ranks-per-host L [--placement cyclic]] [--repeats N] [--warmup 3] [--budget 0.5]
[--order blocks|interleaved] [--isolated] [--json PATH] [--plot PATH] [--no-plot] [--no-progress]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import os
import pickle
import platform
import shlex
import socket
import statistics
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    Progress,
    fmt_bytes,
    fmt_time,
    machine_info,
    parse_sizes,
    results_dir,
    save_plot,
    versions,
    write_json,
)
from .launch import connect_with_retry
from .runner import (
    COMMAND_ENV,
    MODE_ENV,
    ArgParser,
    BenchError,
    UsageExit,
    add_alone_args,
    add_common_args,
    spawn_or_run,
)

PROG = "ringpress bench allreduce"
PEERS = ("ringpress", "ringpress-plain", "gloo", "mpi")
DEFAULT_SIZES = "4K..256M"
QUICK_SIZES = "4K,64K,1M"
QUICK_REPEATS = 3
DEFAULT_WARMUP = 3
DEFAULT_BUDGET_S = 0.5
MIN_SAMPLES, MAX_SAMPLES = 5, 50
ISOLATED_MAX_SAMPLES = 400  # --isolated: one call per sample, so more samples in the budget
TARGET_SAMPLE_S = 0.02
PATTERN_LEN = 1024  # the fill pattern repeats every 1024 elements
PATTERN_MOD = 13  # rank r contributes (i % 1024) % 13 + 1 + r: small integers, exact sums
CONTROL_TIMEOUT_S = 300
MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")


# --------------------------------------------------------------------------- control plane


class LocalControl:
    """World of one process."""

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class MpiControl:
    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def allgather(self, obj: Any) -> list[Any]:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    def close(self) -> None:
        pass


class StarControl:
    """Rank 0 serves a TCP socket; every other rank connects once. Pickled, length-prefixed."""

    def __init__(self, rank: int, size: int, addr: str, port: int) -> None:
        self.rank, self.size = rank, size
        self.conns: list[socket.socket | None] = [None] * size
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        if rank == 0:
            with socket.create_server(("", port)) as srv:
                srv.settimeout(CONTROL_TIMEOUT_S)
                for _ in range(size - 1):
                    conn, _ = srv.accept()
                    conn.settimeout(None)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.conns[self._recv(conn)] = conn
        else:
            conn = connect_with_retry(addr, port, deadline)
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._send(conn, rank)
            self.conns[0] = conn

    @staticmethod
    def _send(conn: socket.socket, obj: Any) -> None:
        data = pickle.dumps(obj)
        conn.sendall(struct.pack("!Q", len(data)) + data)

    @staticmethod
    def _recv(conn: socket.socket) -> Any:
        def exact(n: int) -> bytes:
            buf = bytearray()
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("control connection closed by a peer rank")
                buf += chunk
            return bytes(buf)

        (n,) = struct.unpack("!Q", exact(8))
        return pickle.loads(exact(n))

    def allgather(self, obj: Any) -> list[Any]:
        if self.rank == 0:
            vals = [obj] + [self._recv(c) for c in self.conns[1:] if c is not None]
            for c in self.conns[1:]:
                assert c is not None
                self._send(c, vals)
            return vals
        conn = self.conns[0]
        assert conn is not None
        self._send(conn, obj)
        return self._recv(conn)

    def barrier(self) -> None:
        self.allgather(None)

    def close(self) -> None:
        for c in self.conns:
            if c is not None:
                with contextlib.suppress(OSError):
                    c.close()


@dataclass
class World:
    rank: int
    size: int
    launcher: str  # "mpi", "env" or "single"
    control: Any
    mpi: Any = None  # the mpi4py.MPI module under mpirun
    notes: list[str] = field(default_factory=list)

    def bcast(self, obj: Any) -> Any:
        return self.control.allgather(obj if self.rank == 0 else None)[0]

    def agree(self, value: Any, what: str) -> Any:
        """All ranks must hold the same ``value``; raise BenchError otherwise."""
        vals = self.control.allgather(value)
        if any(v != vals[0] for v in vals):
            raise BenchError(f"ranks disagree on {what}: {vals}")
        return vals[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def detect_launcher(choice: str) -> str:
    if choice != "auto":
        return choice
    if any(k in os.environ for k in MPI_ENV):
        return "mpi"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return "env"
    return "single"


def init_world(launcher: str) -> World:
    if launcher == "mpi":
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise UsageExit(
                f"launched under mpirun but mpi4py is not importable ({e}): pip install "
                f"'ringpress[mpi]', or run without mpirun ({PROG} --nranks N starts its own "
                f"ranks; no MPI column then)"
            ) from None

        comm = MPI.COMM_WORLD
        return World(comm.Get_rank(), comm.Get_size(), "mpi", MpiControl(comm), mpi=MPI)
    if launcher == "env":
        missing = [
            k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
        ]
        if missing:
            raise UsageExit(f"--launcher env needs {', '.join(missing)} in the environment")
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        ctl = StarControl(rank, size, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]) + 2)
        return World(rank, size, "env", ctl)
    # one process: give env:// style peers something to rendezvous on
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return World(0, 1, "single", LocalControl())


# --------------------------------------------------------------------------- peers


@dataclass
class Peer:
    name: str
    allreduce: Callable[[np.ndarray], Any]
    barrier: Callable[[], Any]
    close: Callable[[], Any]
    info: dict[str, Any] = field(default_factory=dict)
    stats: Callable[[], dict[str, Any]] | None = None  # ringpress: Communicator.stats


def make_ringpress(world: World, encrypt: bool | None = None) -> Peer | str:
    try:
        import ringpress

        cls = ringpress.Communicator
        kw = {} if encrypt is None else {"encrypt": encrypt}
        comm = cls.from_mpi(**kw) if world.launcher == "mpi" else cls.from_env(**kw)
    except (ImportError, AttributeError) as e:
        return f"ringpress: skipped, no communicator ({type(e).__name__}: {e})"

    def allreduce(buf: np.ndarray) -> None:
        comm.allreduce(buf)  # synchronous: returns buf once every rank has it

    info: dict[str, Any] = {"version": getattr(ringpress, "__version__", None)}
    with contextlib.suppress(Exception):  # how this rank reaches the others: "tcp" / "shm"
        info["transport"] = sorted({comm.transport(p) for p in range(comm.size) if p != comm.rank})
    with contextlib.suppress(Exception):
        info["build_info"] = ringpress.build_info()
    if (comm.rank, comm.size) != (world.rank, world.size):
        raise BenchError(
            f"ringpress communicator is rank {comm.rank} of {comm.size}, "
            f"launcher says {world.rank} of {world.size}"
        )
    name = "ringpress" if encrypt is None else "ringpress-plain"
    return Peer(name, allreduce, comm.barrier, comm.close, info, comm.stats)


def make_ringpress_plain(world: World) -> Peer | str:
    """ringpress with its TCP links authenticated but not encrypted (RINGPRESS_ENCRYPT=off):
    beside the default peer it shows what encryption costs."""
    return make_ringpress(world, encrypt=False)


def make_gloo(world: World) -> Peer | str:
    try:
        import torch
        import torch.distributed as dist
    except Exception as e:  # ImportError, or a broken torch install
        return (
            f"gloo: skipped, torch.distributed not importable ({type(e).__name__}: {e}); "
            f"pip install 'ringpress[torch]' adds it"
        )
    if not dist.is_available() or not dist.is_gloo_available():
        return "gloo: skipped, this torch build has no gloo"
    if world.launcher == "mpi":
        url = None
        if world.rank == 0:
            host = os.environ.get("MASTER_ADDR") or socket.gethostname()
            url = f"tcp://{host}:{_free_port()}"
        url = world.bcast(url)
    elif os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        url = "env://"  # torchrun: MASTER_PORT is the agent's store; join it
    else:
        url = f"tcp://{os.environ['MASTER_ADDR']}:{int(os.environ['MASTER_PORT']) + 1}"
    dist.init_process_group(
        "gloo",
        init_method=url,
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=CONTROL_TIMEOUT_S),
    )
    cache: dict[str, Any] = {}

    def allreduce(buf: np.ndarray) -> None:
        t = cache.get("t")
        if t is None or cache.get("buf") is not buf:
            t = torch.from_numpy(buf)  # shares buf's memory
            cache.update(buf=buf, t=t)
        dist.all_reduce(t)

    def close() -> None:
        cache.clear()
        dist.destroy_process_group()

    info = {
        "torch": torch.__version__,
        "init_method": url,
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME"),
    }
    return Peer("gloo", allreduce, dist.barrier, close, info)


def make_mpi(world: World) -> Peer | str:
    if world.mpi is None:
        return (
            f"mpi: skipped, not launched under mpirun (mpirun -n {world.size} ringpress bench "
            "allreduce adds the Open MPI column)"
        )
    MPI = world.mpi
    comm = MPI.COMM_WORLD.Dup()  # keep benchmark traffic apart from the control plane's

    def allreduce(buf: np.ndarray) -> None:
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    import mpi4py

    info = {
        "mpi4py": mpi4py.__version__,
        "library": MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0],
        "mca_env": {k: v for k, v in os.environ.items() if k.startswith("OMPI_MCA_")},
    }
    return Peer("mpi", allreduce, comm.Barrier, comm.Free, info)


MAKERS = {
    "ringpress": make_ringpress,
    "ringpress-plain": make_ringpress_plain,
    "gloo": make_gloo,
    "mpi": make_mpi,
}


# --------------------------------------------------------------------------- data


def _block(rank: int) -> np.ndarray:
    return (np.arange(PATTERN_LEN) % PATTERN_MOD + 1 + rank).astype(np.float32)


def _expected_block(size: int) -> np.ndarray:
    return ((np.arange(PATTERN_LEN) % PATTERN_MOD + 1) * size + size * (size - 1) // 2).astype(
        np.float32
    )


def fill(buf: np.ndarray, block: np.ndarray) -> None:
    """buf[i] = block[i % len(block)], without a temporary of buf's size."""
    L = block.size
    m = buf.size - buf.size % L
    if m:
        buf[:m].reshape(-1, L)[:] = block
    buf[m:] = block[: buf.size - m]


def first_mismatch(buf: np.ndarray, block: np.ndarray, rtol: float = 0.0) -> int | None:
    """Index of the first element differing from the periodic ``block`` pattern, or None.

    ``rtol`` 0 compares exactly; otherwise |buf - block| <= rtol * |block| passes. Works in
    slabs of at most 4 MiB of ``buf`` so that 256 MiB buffers need no large temporaries.
    """
    L = block.size
    ref = block.astype(np.float64) if rtol else block
    slab = max(L, ((1 << 20) // L) * L)
    for start in range(0, buf.size, slab):
        part = buf[start : start + slab]
        full = part.size - part.size % L
        chunks = [(part[:full].reshape(-1, L), ref), (part[full:], ref[: part.size - full])]
        offset = start
        for got, want in chunks:
            if got.size:
                bad = (got != want) if not rtol else (np.abs(got - want) > rtol * np.abs(want))
                if bad.any():
                    return int(offset + np.flatnonzero(bad.reshape(-1))[0])
            offset += got.size
    return None


def max_inner(size: int) -> int:
    """Most back-to-back SUMs of the pattern that stay finite: values grow by x size per call."""
    if size <= 1:
        return 100
    return max(1, min(100, int(100 / math.log2(size))))


# --------------------------------------------------------------------------- measurement


def _time_batch(peer: Peer, buf: np.ndarray, inner: int) -> float:
    peer.barrier()
    t0 = time.perf_counter()
    for _ in range(inner):
        peer.allreduce(buf)
    return (time.perf_counter() - t0) / inner


def check_result(
    world: World, peer: Peer, buf: np.ndarray, expected: np.ndarray, rtol: float, when: str
) -> None:
    """Every rank compares ``buf`` with the periodic ``expected``; all agree on the verdict."""
    bad = first_mismatch(buf, expected, rtol)
    msg = None
    if bad is not None:
        msg = (
            f"rank {world.rank}: element {bad} is {buf[bad]!r}, expected "
            f"{expected[bad % expected.size]!r}"
        )
    msgs = [m for m in world.control.allgather(msg) if m]
    if msgs:
        raise BenchError(
            f"{peer.name} allreduce of {fmt_bytes(buf.nbytes)} gave a wrong result {when}: "
            + "; ".join(msgs)
        )


def verify(
    world: World, peer: Peer, buf: np.ndarray, block: np.ndarray, expected: np.ndarray
) -> None:
    """One allreduce of the pattern, checked exactly (the sums are small integers)."""
    fill(buf, block)
    peer.allreduce(buf)
    check_result(world, peer, buf, expected, 0.0, "(first call)")


def after_batch(expected: np.ndarray, size: int, inner: int) -> np.ndarray:
    """What the buffer holds after ``inner`` back-to-back allreduces of the pattern:
    the first gives ``expected``, each later one multiplies by ``size``."""
    return (expected.astype(np.float64) * float(size) ** (inner - 1)).astype(np.float32)


def _plan(
    world: World, peer: Peer, buf: np.ndarray, block: np.ndarray, args: argparse.Namespace
) -> tuple[int, int]:
    """Warm ``peer`` up; return (inner, samples), the same on every rank."""
    fill(buf, block)
    first = max(world.control.allgather(_time_batch(peer, buf, 1)))
    extra = max(0, min(args.warmup - 1, int(args.budget / 2 / max(first, 1e-9))))
    est = [first]
    for _ in range(extra):
        fill(buf, block)
        est.append(_time_batch(peer, buf, 1))
    t = max(world.control.allgather(min(est[-3:])))
    inner = max(1, min(max_inner(world.size), math.ceil(TARGET_SAMPLE_S / max(t, 1e-9))))
    most = MAX_SAMPLES
    if args.isolated:  # one call right after the barrier: what a lone loss/flag allreduce sees
        inner, most = 1, ISOLATED_MAX_SAMPLES
    if args.repeats is not None:
        return inner, args.repeats
    return inner, max(MIN_SAMPLES, min(most, math.ceil(args.budget / (t * inner))))


def measure_size(
    world: World,
    peers: list[Peer],
    nbytes: int,
    args: argparse.Namespace,
    index: int = 0,
    bar: Progress | None = None,
) -> dict[str, Any]:
    """Verify, warm up, then time every peer at one size; returns the record for this size.

    ``--order blocks`` (default): one peer after the other, each verified, warmed up and timed
    in one block, starting with peer ``index % len(peers)`` so that no peer always goes first.
    ``--order interleaved``: all verified and warmed up, then rounds of one sample per peer.
    ``bar`` (rank 0's progress bar) advances by one per peer.
    """
    n = nbytes // 4
    buf = np.empty(n, dtype=np.float32)
    block, expected = _block(world.rank), _expected_block(world.size)
    start = index % len(peers)
    order = [(start + k) % len(peers) for k in range(len(peers))]
    plans: dict[int, tuple[int, int]] = {}  # peer index -> (inner, samples), same on every rank
    local: list[list[float]] = [[] for _ in peers]

    def sample(i: int) -> None:
        fill(buf, block)
        local[i].append(_time_batch(peers[i], buf, plans[i][0]))
        if len(local[i]) == plans[i][1]:  # the last timed batch must have computed too
            want = after_batch(expected, world.size, plans[i][0])
            check_result(world, peers[i], buf, want, 1e-4, "(last timed batch)")

    gc_was = gc.isenabled()
    try:
        if args.order == "blocks":
            for i in order:
                if bar:
                    bar.start(f"{fmt_bytes(nbytes)} {peers[i].name}")
                verify(world, peers[i], buf, block, expected)
                plans[i] = _plan(world, peers[i], buf, block, args)
                gc.disable()
                for _ in range(plans[i][1]):
                    sample(i)
                if gc_was:
                    gc.enable()
                if bar:
                    bar.step()
        else:
            if bar:
                bar.start(f"{fmt_bytes(nbytes)} all peers")
            for i in order:
                verify(world, peers[i], buf, block, expected)
                plans[i] = _plan(world, peers[i], buf, block, args)
            gc.disable()
            for r in range(max(s for _, s in plans.values())):
                for k in range(len(peers)):
                    i = order[(r + k) % len(peers)]
                    if r < plans[i][1]:
                        sample(i)
            if bar:
                bar.step(len(peers))
    finally:
        if gc_was:
            gc.enable()
    everyone = world.control.allgather(local)  # [rank][peer][sample]
    factor = 2 * (world.size - 1) / world.size
    rec: dict[str, Any] = {"nbytes": nbytes, "elements": n, "peers": {}}
    for i, peer in enumerate(peers):
        per_rank = [everyone[r][i] for r in range(world.size)]
        worst = [max(col) for col in zip(*per_rank, strict=False)]
        med = statistics.median(worst)
        rec["peers"][peer.name] = {
            "inner": plans[i][0],
            "n_samples": plans[i][1],
            "samples_s": worst,
            "rank_samples_s": per_rank,
            "median_s": med,
            "min_s": min(worst),
            "algbw_GBps": nbytes / med / 1e9,
            "busbw_GBps": nbytes / med / 1e9 * factor,
            "verified": True,
        }
    rp = rec["peers"].get("ringpress")
    if rp is not None:
        rec["speedup_vs"] = {
            name: r["median_s"] / rp["median_s"]
            for name, r in rec["peers"].items()
            if name != "ringpress"
        }
    return rec


# --------------------------------------------------------------------------- reporting

COL = 30  # width of one peer's column group


def table_header(names: list[str]) -> str:
    top = f"{'':>9} " + "".join(f"| {n:^{COL - 2}} " for n in names)
    sub = f"{'size':>9} " + "".join(f"| {'time':>9} {'algbw':>7} {'busbw':>7}  " for _ in names)
    ratios = [n for n in names if n != "ringpress"] if "ringpress" in names else []
    if ratios:
        top += "| speedup"
        sub += "| " + " ".join(f"{'vs ' + n:>8}" for n in ratios)
    rule = "-" * max(len(top), len(sub))
    return "\n".join([top, sub, rule])


def table_row(rec: dict[str, Any], names: list[str]) -> str:
    line = f"{fmt_bytes(rec['nbytes']):>9} "
    for n in names:
        r = rec["peers"][n]
        line += f"| {fmt_time(r['median_s'])} {r['algbw_GBps']:7.3f} {r['busbw_GBps']:7.3f}  "
    if rec.get("speedup_vs"):
        line += "| " + " ".join(f"{rec['speedup_vs'][n]:7.2f}x" for n in names if n != "ringpress")
    return line


def plot(results: dict[str, Any], path: Path) -> None:
    """busbw against size, one line per peer (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    net = cfg["network"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name in cfg["peers_run"]:
        xs = [s["nbytes"] for s in results["sizes"]]
        ys = [s["peers"][name]["busbw_GBps"] for s in results["sizes"]]
        ax.plot(xs, ys, marker="o", label=name, lw=2.2 if name == "ringpress" else 1.4)
    if net:
        from .netns import parse_rate

        bps = parse_rate(net["rate"])
        if bps:
            ax.axhline(bps / 8e9, color="gray", ls=":", lw=1, label=f"link {net['rate']}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes, float32 SUM)")
    ax.set_ylabel("busbw (GB/s)")
    where = f"netns {net['rate']}" if net else cfg.get("mode", cfg["launcher"])
    ax.set_title(f"allreduce, {cfg['world_size']} ranks, {where}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points


def build_parser(prog: str = PROG) -> ArgParser:
    ap = ArgParser(
        prog=prog,
        description="Allreduce benchmark: ringpress vs gloo vs Open MPI in one job. Alone (no "
        "launcher) it starts --nranks ranks itself; under mpirun / torchrun it is one rank.",
        epilog="examples: ringpress bench allreduce --quick | ringpress bench allreduce --link "
        "1gbit --sizes 4K,1M,16M | mpirun -n 2 ringpress bench allreduce",
    )
    ap.add_argument(
        "--sizes",
        default=None,
        help=f"message sizes in bytes, e.g. 4K,1M or a x4 range 4K..256M (x2: 4K..1M*2); "
        f"default {DEFAULT_SIZES}, {QUICK_SIZES} with --quick",
    )
    ap.add_argument(
        "--peers",
        default="ringpress,gloo,mpi",
        help="comma-separated subset of ringpress,ringpress-plain,gloo,mpi (ringpress-plain: "
        "TCP links authenticated, not encrypted; next to ringpress it shows encryption's cost)",
    )
    add_alone_args(ap)
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"samples per peer per size (default: enough for --budget, "
        f"{MIN_SAMPLES}..{MAX_SAMPLES}; {QUICK_REPEATS} with --quick)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warm-up calls per peer per size (default {DEFAULT_WARMUP}, 1 with --quick)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds of timed samples per peer per size when --repeats is not given (default 0.5)",
    )
    ap.add_argument(
        "--isolated",
        action="store_true",
        help="time single calls: each sample is the peer's barrier, then one allreduce (what a "
        "training loop's lone loss or flag allreduce costs); default: back-to-back batches of "
        f"about {TARGET_SAMPLE_S * 1e3:.0f} ms per sample",
    )
    ap.add_argument(
        "--order",
        choices=("blocks", "interleaved"),
        default="blocks",
        help="blocks (default): time each peer's samples in one block; interleaved: rounds of "
        "one sample per peer (cross-library interference then shows in the timings)",
    )
    ap.add_argument(
        "--launcher",
        choices=("auto", "mpi", "env", "single"),
        default="auto",
        help="auto (default): mpi under mpirun, env under torchrun or with RANK / WORLD_SIZE / "
        "MASTER_ADDR / MASTER_PORT set, else alone (spawn --nranks ranks); single: one "
        "process in place",
    )
    add_common_args(ap)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES}, {QUICK_REPEATS} samples, 1 warm-up (for tests)",
    )
    return ap


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    ap = build_parser(prog)
    args = ap.parse_args(argv)
    args.prog, args.argv = prog, list(sys.argv[1:] if argv is None else argv)
    try:
        args.size_list = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    except ValueError as e:
        ap.error(str(e))
    if any(s % 4 for s in args.size_list):
        ap.error("sizes must be multiples of 4 bytes (float32)")
    args.peer_list = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peer_list if p not in PEERS]
    if unknown or not args.peer_list:
        ap.error(f"unknown peers {unknown}: choose from {', '.join(PEERS)}")
    if len(set(args.peer_list)) != len(args.peer_list):
        ap.error(f"--peers lists a peer twice: {args.peers}")
    if args.repeats is None and args.quick:
        args.repeats = QUICK_REPEATS
    if args.warmup is None:
        args.warmup = 1 if args.quick else DEFAULT_WARMUP
    if (args.repeats is not None and args.repeats < 1) or args.warmup < 1 or args.budget <= 0:
        ap.error("--repeats, --warmup and --budget must be positive")
    if args.nranks is not None and not 1 <= args.nranks <= 250:
        ap.error("--nranks must be between 1 and 250")
    for opt, value in (("--hosts", args.hosts), ("--ranks-per-host", args.ranks_per_host)):
        if value is not None and not 1 <= value <= 250:
            ap.error(f"{opt} must be between 1 and 250")
    if args.timeout is not None and args.timeout <= 0:
        ap.error("--timeout must be positive")
    launcher = detect_launcher(args.launcher)
    # alone: nobody launched us and no launcher was forced; we start the ranks ourselves
    args.alone = args.launcher == "auto" and launcher == "single"
    if args.alone and args.peer_list == ["mpi"]:
        ap.error(f"the mpi peer needs mpirun: mpirun -n 2 {PROG} --peers mpi")
    if not args.alone:
        where = {"mpi": "mpirun", "env": "a launcher", "single": "--launcher single"}[launcher]
        for opt, value in (
            ("--nranks", args.nranks),
            ("--link", args.link),
            ("--hosts", args.hosts),
            ("--ranks-per-host", args.ranks_per_host),
            ("--placement", args.placement),
        ):
            if value is not None:
                ap.error(
                    f"{opt} is for alone mode (no launcher): under {where} the launcher "
                    f"starts the ranks; run '{prog} {opt} ...' without it"
                )
        if args.timeout is not None:
            ap.error("--timeout is for alone mode (no launcher)")
    return args


def _mode(world: World) -> str:
    """How the ranks were started: alone, mpi, torchrun, env or single."""
    if world.launcher == "env":
        if os.environ.get(MODE_ENV):
            return os.environ[MODE_ENV]
        if "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_USE_AGENT_STORE" in os.environ:
            return "torchrun"
    return world.launcher


def _command(args: argparse.Namespace, world: World, mode: str) -> str:
    """The command line that started this run, as a user would type it."""
    if os.environ.get(COMMAND_ENV):  # alone: the spawning command
        return os.environ[COMMAND_ENV]
    cmd = shlex.join([*args.prog.split(), *args.argv])
    if mode == "mpi":
        return f"mpirun -n {world.size} {cmd}"
    if mode == "torchrun":
        return f"torchrun --nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', '?')} {cmd}"
    return cmd


def _default_json(mode: str, size: int, quick: bool, isolated: bool = False) -> Path:
    rate = os.environ.get("RINGPRESS_NETNS_RATE")
    name = f"allreduce_{'netns' if rate else mode}_np{size}" + (f"_{rate}" if rate else "")
    hosts = os.environ.get("RINGPRESS_NETNS_HOSTS")
    if rate and hosts and hosts != str(size):  # several ranks per host
        name += f"_{hosts}hosts_{os.environ.get('RINGPRESS_NETNS_PLACEMENT', 'block')}"
    if isolated:
        name += "_isolated"
    return results_dir() / f"{name}{'_quick' if quick else ''}.json"


def run(argv: list[str] | None = None, prog: str = PROG) -> dict[str, Any] | None:
    """Run the benchmark on this rank (``--launcher`` decides the world; never spawns); rank 0
    prints, writes and returns the record."""
    args = parse_args(argv, prog)
    return run_rank(args)


def run_rank(args: argparse.Namespace) -> dict[str, Any] | None:
    """This process's part of the benchmark; rank 0 prints, writes and returns the record."""
    world = init_world(detect_launcher(args.launcher))
    rank0 = world.rank == 0
    bar = Progress(len(args.size_list) * len(args.peer_list), Progress.wanted(args.progress, rank0))

    def say(msg: str) -> None:
        if rank0:
            bar.write(msg)

    peers: list[Peer] = []
    notes: list[str] = []
    mode = _mode(world)
    try:
        # gloo first: its store takes MASTER_PORT + 1, which a ringpress rank's listener (an
        # ephemeral port, kept for the communicator's life) could otherwise have taken.
        made_by_name: dict[str, Peer | str] = {}
        for name in sorted(args.peer_list, key=lambda n: n != "gloo"):
            made = MAKERS[name](world)
            world.agree(isinstance(made, Peer), f"whether {name} is available")
            made_by_name[name] = made
        for name in args.peer_list:
            made = made_by_name[name]
            if isinstance(made, Peer):
                peers.append(made)
            else:
                notes.append(made)
                say(made)
        if not peers:
            raise BenchError(
                f"no peer available to measure (asked for {', '.join(args.peer_list)})"
            )
        names = [p.name for p in peers]
        bar.total = len(args.size_list) * len(peers)
        network = None
        if "RINGPRESS_NETNS_RATE" in os.environ:
            network = {
                "rate": os.environ["RINGPRESS_NETNS_RATE"],
                "harness": "ringpress_bench.netns",
                "transport": os.environ.get("RINGPRESS_TRANSPORT"),
                "hosts": int(os.environ.get("RINGPRESS_NETNS_HOSTS", world.size)),
                "ranks_per_host": int(os.environ.get("RINGPRESS_NETNS_RANKS_PER_HOST", 1)),
                "placement": os.environ.get("RINGPRESS_NETNS_PLACEMENT", "block"),
            }
        results: dict[str, Any] = {
            "benchmark": "bench.allreduce",
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "command": _command(args, world, mode),
            "machine": machine_info(("torch", "mpi4py")),
            "hosts": world.control.allgather(platform.node()),
            "config": {
                "world_size": world.size,
                "launcher": world.launcher,
                "mode": mode,
                "link": network["rate"] if network else None,
                "network": network,
                "sizes": args.size_list,
                "peers_requested": args.peer_list,
                "peers_run": names,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "budget_s": args.budget,
                "min_samples": MIN_SAMPLES,
                "max_samples": MAX_SAMPLES,
                "target_sample_s": TARGET_SAMPLE_S,
                "quick": args.quick,
                "order": args.order,
                "isolated": args.isolated,
                "max_samples_isolated": ISOLATED_MAX_SAMPLES,
                "dtype": "float32",
                "op": "sum",
                "GB": 1e9,
                "statistic": "median over samples of the max over ranks",
                "busbw_factor": 2 * (world.size - 1) / world.size,
            },
            "peers": {p.name: p.info for p in peers},
            "notes": notes,
            "sizes": [],
        }
        how = "median of the slowest rank per sample"
        if args.isolated:
            how = "one call after a barrier per sample; " + how
        say(
            f"allreduce float32 SUM, {world.size} ranks ({mode}"
            + (f", netns {network['rate']}" if network else "")
            + f"); {how}; GB/s = 1e9 B/s; busbw = algbw * 2(P-1)/P"
        )
        if "mpi" in names and world.size > 1 and "OMPI_MCA_btl" not in os.environ:
            say(
                "mpi: Open MPI picks its own transport (shared memory within a host); "
                "mpirun --mca btl tcp,self for TCP"
            )
        for p in peers:
            if p.name == "ringpress" and "transport" in p.info:
                kinds = "/".join(p.info["transport"]) or "self"
                say(f"ringpress: transport {kinds} (rank 0's view)")
        say(table_header(names))
        for index, nbytes in enumerate(args.size_list):
            rec = measure_size(world, peers, nbytes, args, index, bar if rank0 else None)
            results["sizes"].append(rec)
            say(table_row(rec, names))
        for p in peers:  # what RINGPRESS_SHM_SINGLE_COPY=auto learned (docs/algorithms.md)
            choices = p.stats().get("single_copy") if p.stats else None
            if choices:
                results["peers"][p.name]["single_copy"] = choices
                ways = ", ".join(
                    f"{c['op']} {fmt_bytes(c['bytes'])}-{fmt_bytes(2 * c['bytes'])}: "
                    + ("by reference" if c["by_reference"] else "ring")
                    for c in choices
                )
                say(f"{p.name}: shm single copy learned (rank 0's view): {ways}")
    finally:
        bar.close()
    for p in reversed(peers):
        try:
            p.close()
        except Exception:
            traceback.print_exc()
    world.control.close()
    if not rank0:
        return None
    extra: dict[str, Any] = {}
    if "mpi" in results["peers"]:
        extra["mpi_library"] = results["peers"]["mpi"].get("library")
    results["versions"] = versions(extra, ("ringpress", "torch", "mpi4py", "matplotlib"))
    json_path = args.json or _default_json(mode, world.size, args.quick, args.isolated)
    write_json(results, json_path)
    if not args.no_plot:
        save_plot(plot, results, args.png or json_path.with_suffix(".png"))
    return results


# --------------------------------------------------------------------------- alone mode


def _rank_argv(args: argparse.Namespace) -> list[str]:
    """The command line every spawned rank runs: this one, resolved, under ``--launcher env``."""
    out = [
        "--launcher",
        "env",
        "--sizes",
        ",".join(str(s) for s in args.size_list),
        "--peers",
        ",".join(args.peer_list),
        "--warmup",
        str(args.warmup),
        "--budget",
        repr(args.budget),
        "--order",
        args.order,
    ]
    if args.repeats is not None:
        out += ["--repeats", str(args.repeats)]
    if args.json is not None:
        out += ["--json", str(args.json.resolve())]
    if args.png is not None:
        out += ["--plot", str(args.png.resolve())]
    if args.no_plot:
        out.append("--no-plot")
    if args.quick:
        out.append("--quick")
    if args.isolated:
        out.append("--isolated")
    if args.progress is not None:
        out.append("--progress" if args.progress else "--no-progress")
    return out


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Alone: start the ranks (in namespaces with --link), rank 0 on our terminal; under a
    launcher: be one rank. The runner turns failures into exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    return spawn_or_run(args, argv, prog, "allreduce", lambda: _rank_argv(args), run_rank)

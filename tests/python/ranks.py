"""Run a snippet as P real rank processes (the tests' launcher).

``run_ranks(P, body)`` writes ``body`` (Python source executed with ``comm`` bound to a
``ringpress.Communicator.from_env()``, plus ``rank``, ``size``, ``np``, ``rp`` and ``emit``) to a
temporary file and starts P processes with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set. ``emit(x)``
prints one JSON record that the test receives. Every process is killed when the call times out, so
a hanging collective fails the test instead of hanging it.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field

PRELUDE = """
import json, os, sys, time
import numpy as np
import ringpress as rp

def emit(x):
    print("@@" + json.dumps(x), flush=True)

import atexit, gc

@atexit.register
def _release_torch_groups():
    # torch's gloo backend lets go of a finished work on its worker thread a moment after the
    # caller's wait() returned. If that happens while the interpreter finalizes, and the work
    # held the last reference to a tensor whose Python object is gone, that thread needs the
    # GIL and the process aborts ("terminate called without an active exception", seen twice in
    # CI at a rank's exit; torch's side: pytorch/pytorch#179291). So drop this script's groups
    # while Python still runs: their destructors join gloo's threads here.
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return
    g = globals()
    for k in [k for k, v in list(g.items()) if isinstance(v, dist.ProcessGroup)]:
        del g[k]
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # a test that broke its own group: nothing to release here
        pass
    gc.collect()

rank = int(os.environ["RANK"])
size = int(os.environ["WORLD_SIZE"])
if os.environ.get("RP_TEST_NO_COMM") != "1":
    comm = rp.Communicator.from_env(**json.loads(os.environ.get("RP_TEST_COMM_KW", "{}")))
"""


@dataclass
class RankResult:
    rank: int
    returncode: int
    stdout: str
    stderr: str
    records: list = field(default_factory=list)
    elapsed: float = 0.0
    pid: int = 0


def leftover_shm(pids) -> list[str]:
    """Shared-memory segments still in /dev/shm that processes `pids` created (a segment's name
    carries its creator's pid: ringpress-<job>-<pid>-<lo>-<hi>), so segments of another job on the
    same machine, such as a concurrent test run, do not count."""
    pids = {int(p) for p in pids}
    left = []
    for path in glob.glob("/dev/shm/ringpress-*"):
        parts = os.path.basename(path).split("-")
        if (
            len(parts) == 5
            and parts[2].isdigit()
            and int(parts[2]) in pids
            and os.path.exists(path)
        ):
            left.append(path)
    return left


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(
    nranks: int,
    body: str,
    env: dict | None = None,
    comm_kwargs: dict | None = None,
    delays: dict | None = None,
    rank_env: dict | None = None,
):
    """Start the processes; returns (procs, script path, port). ``delays`` = {rank: seconds to
    wait before starting it}; ``rank_env`` = {rank: extra environment for that rank only}."""
    fd, path = tempfile.mkstemp(suffix=".py", prefix="rp_rank_")
    with os.fdopen(fd, "w") as f:
        f.write(PRELUDE + "\n" + textwrap.dedent(body))
    port = free_port()
    procs = []
    for r in range(nranks):
        e = dict(os.environ)
        e.update(
            {
                "RANK": str(r),
                "WORLD_SIZE": str(nranks),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
                # A rank that aborts or crashes prints every thread's Python stack (diagnosis of
                # rare failures in CI logs).
                "PYTHONFAULTHANDLER": "1",
            }
        )
        e.pop("RINGPRESS_TRANSPORT", None)
        if comm_kwargs:
            e["RP_TEST_COMM_KW"] = json.dumps(comm_kwargs)
        if env:
            e.update({k: str(v) for k, v in env.items()})
        if rank_env and r in rank_env:
            e.update({k: str(v) for k, v in rank_env[r].items()})
        if delays and r in delays:
            time.sleep(delays[r])
        procs.append(
            subprocess.Popen(
                [sys.executable, path],
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs, path, port


def collect(procs, path: str, timeout: float) -> list[RankResult]:
    t0 = time.monotonic()
    out = []
    try:
        for r, p in enumerate(procs):
            left = max(0.1, timeout - (time.monotonic() - t0))
            try:
                so, se = p.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                so, se = p.communicate()
                se += f"\n[test harness: rank {r} killed after {timeout} s]"
            res = RankResult(r, p.returncode, so, se, elapsed=time.monotonic() - t0, pid=p.pid)
            res.records = [
                json.loads(line[2:]) for line in so.splitlines() if line.startswith("@@")
            ]
            out.append(res)
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
                q.wait()
        if os.path.exists(path):
            os.unlink(path)
    return out


def run_ranks(
    nranks: int,
    body: str,
    timeout: float = 60.0,
    env: dict | None = None,
    comm_kwargs: dict | None = None,
    check: bool = True,
) -> list[RankResult]:
    procs, path, _ = start_ranks(nranks, body, env=env, comm_kwargs=comm_kwargs)
    results = collect(procs, path, timeout)
    if check:
        bad = [r for r in results if r.returncode != 0]
        if bad:
            msg = "\n".join(
                f"--- rank {r.rank} rc={r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
                for r in bad
            )
            raise AssertionError(f"{len(bad)} of {nranks} ranks failed:\n{msg}")
    return results

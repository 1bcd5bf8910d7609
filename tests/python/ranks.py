"""Run a snippet as P real rank processes (the tests' launcher).

``run_ranks(P, body)`` writes ``body`` (Python source executed with ``comm`` bound to a
``ringpress.Communicator.from_env()``, plus ``rank``, ``size``, ``np``, ``rp`` and ``emit``) to a
temporary file and starts P processes with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set. ``emit(x)``
prints one JSON record that the test receives. Every process is killed when the call times out, so
a hanging collective fails the test instead of hanging it.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    if dist is None or os.environ.get("RP_TEST_KEEP_GROUPS_AT_EXIT") == "1":
        return  # (a test of what ringpress itself does at exit)
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
    fork_torch: bool = False,
):
    """Start the processes; returns (procs, script path, port). ``delays`` = {rank: seconds to
    wait before starting it}; ``rank_env`` = {rank: extra environment for that rank only}.
    ``fork_torch``: a script that uses torch is forked from the fork server (zygote.py) where the
    rank's environment allows it (``_forkable``), else started as ``python script``."""
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
        p = _fork_rank(path, e) if fork_torch and "torch" in body else None
        if p is None:
            p = subprocess.Popen(
                [sys.executable, path],
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        procs.append(p)
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
    fork: bool = True,
) -> list[RankResult]:
    """``fork=False``: fresh interpreters even for torch scripts (tests of what happens at exit:
    a forked rank runs torch's atexit handlers after the script's, zygote.py)."""
    procs, path, _ = start_ranks(nranks, body, env=env, comm_kwargs=comm_kwargs, fork_torch=fork)
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


# --------------------------------------------------------------------------- forked torch ranks
# A rank script that uses torch would spend about 2 s of CPU importing it; run_ranks forks such
# ranks from a server that imported torch once (zygote.py, where the differences from a fresh
# process are listed). RP_TEST_FORK_TORCH=0 turns this off.

# What a rank may set differently from the server's environment: launcher and test variables,
# which torch does not read at import (pytest names the running test in PYTEST_CURRENT_TEST).
# Any other difference starts a fresh interpreter.
_RANK_KEYS = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "PYTEST_CURRENT_TEST",
}
_RANK_PREFIXES = ("RINGPRESS_", "RP_")


@dataclass
class _Zygote:
    proc: subprocess.Popen
    sock: str
    env: dict


_zygote_state: list = []  # [] not tried yet, [None] unavailable, [_Zygote]


def _zygote() -> _Zygote | None:
    if not _zygote_state:
        _zygote_state.append(None)
        if os.environ.get("RP_TEST_FORK_TORCH", "1") != "0":
            _zygote_state[0] = _start_zygote()
    return _zygote_state[0]


def _start_zygote() -> _Zygote | None:
    tmp = tempfile.mkdtemp(prefix="rp_zygote_")
    sock = os.path.join(tmp, "s")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("zygote.py")), sock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.stdin.close()  # the server exits when its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(stop)
    ready, _, _ = select.select([proc.stdout], [], [], 180)
    if not ready or proc.stdout.readline() != b"ready\n":
        stop()
        return None
    return _Zygote(proc, sock, env)


def _forkable(env: dict, base: dict) -> bool:
    return all(
        env.get(k) == base.get(k)
        for k in set(env) | set(base)
        if k not in _RANK_KEYS and not k.startswith(_RANK_PREFIXES)
    )


def _fork_rank(path: str, env: dict):
    """A rank forked by the server, or None (no server, or an environment it cannot give)."""
    z = _zygote()
    if z is None or z.proc.poll() is not None or not _forkable(env, z.env):
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(60)
        conn.connect(z.sock)
        req = json.dumps({"path": path, "env": env}).encode() + b"\n"
        socket.send_fds(conn, [req], [out_w, err_w])
        got = b""
        while b"\n" not in got:
            more = conn.recv(4096)
            if not more:
                raise OSError("the fork server closed the connection")
            got += more
        line, rest = got.split(b"\n", 1)
        pid = int(line.split()[1])
        conn.settimeout(None)
    except (OSError, ValueError, IndexError):
        conn.close()
        os.close(out_r)
        os.close(err_r)
        return None
    finally:
        os.close(out_w)
        os.close(err_w)
    return _ForkedRank([sys.executable, path], pid, conn, out_r, err_r, rest)


class _ForkedRank:
    """A forked rank with the parts of ``subprocess.Popen`` (text mode, stdout and stderr piped)
    that collect() and the tests use: pid, returncode, poll, wait, communicate, kill, terminate,
    send_signal. The exit status comes from the fork server (the rank is its child)."""

    def __init__(self, args, pid: int, conn: socket.socket, out_r: int, err_r: int, status: bytes):
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn
        self._status = status
        self._out: dict[int, list[bytes]] = {out_r: [], err_r: []}
        self._fds = [out_r, err_r]
        self._open = [out_r, err_r]
        self._parse_status()

    def _parse_status(self) -> None:
        if self.returncode is None and b"\n" in self._status:
            self.returncode = int(self._status.split(b"\n", 1)[0].split()[1])
            self._conn.close()

    def _pump(self, deadline: float | None) -> bool:
        """Read output and the exit status until both are complete (True) or the deadline."""
        while self._open or self.returncode is None:
            waiting = list(self._open) + ([self._conn] if self.returncode is None else [])
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(waiting, [], [], left)
            if not ready:
                return False
            for f in ready:
                if f is self._conn:
                    more = self._conn.recv(4096)
                    if not more:  # the server is gone: the status is lost
                        self._status += b"exit 255\n"
                    self._status += more
                    self._parse_status()
                else:
                    data = os.read(f, 1 << 16)
                    if data:
                        self._out[f].append(data)
                    else:
                        self._open.remove(f)
                        os.close(f)
        return True

    def poll(self) -> int | None:
        self._pump(time.monotonic())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._pump(None if timeout is None else time.monotonic() + timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = (b"".join(self._out[f]).decode(errors="replace") for f in self._fds)
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

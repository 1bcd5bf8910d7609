"""Start P rank processes of one command on this machine and look after them (stdlib only).

The process handling under both harnesses: :class:`LocalRanks` (ranks on this host, what a
benchmark's alone mode starts through ``runner.spawn_alone`` when no launcher started it) and the
namespace harness (``netns.Topology``). This module imports nothing else of ``ringpress_bench``.

Processes
    :func:`run_processes` starts one process per rank, each in its own session (so a Ctrl-C at the
    terminal reaches only the parent, which then stops the ranks in order), with stdin closed.
    Output: ``stream=True`` echoes rank 0's stdout / stderr line by line, ``"all"`` every rank's
    with a ``[rank r]`` prefix, ``"inherit"`` gives rank 0 the parent's own stdout / stderr (a
    progress bar then sees the terminal; rank 0's output is not captured), ``False`` nothing; the
    other ranks' output is always captured. When a rank exits non-zero, or ``timeout`` passes, the
    others get SIGTERM to their process group, SIGKILL after a grace period.

Signals
    While a :class:`LocalRanks` (or a ``netns.Topology``) is live, SIGINT / SIGTERM / SIGHUP that
    were at their defaults raise :class:`Interrupted` in the main thread (a KeyboardInterrupt), so
    ``with`` blocks unwind and every process is stopped; the signal is also remembered, since an
    exception raised while the main thread runs a finalizer is dropped, and the wait loop re-raises
    it on its next poll.

Shared memory
    ringpress ranks on one host talk through ``/dev/shm/ringpress-<job>-<pid>-<lo>-<hi>`` segments
    that the creating rank unlinks once its peer has mapped them; a rank killed in between leaves
    one behind. :func:`remove_shm_segments` deletes those of the given (dead) pids, and
    :class:`LocalRanks` calls it for every rank it started when it tears down.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import glob
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

KILL_GRACE_S = 3.0
SHM_DIR = "/dev/shm"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_signals_seen: list[int] = []  # signals turned into Interrupted while a harness was live


class Interrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM / SIGHUP received while a harness was live (handlers that were at their
    defaults are replaced for its lifetime; a KeyboardInterrupt, so ``except KeyboardInterrupt``
    still catches Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


_JOB_KEY: str | None = None


def job_key_env() -> dict[str, str]:
    """A job key for the ranks this process launches (docs/security.md): none when the operator
    set RINGPRESS_JOB_KEY / RINGPRESS_JOB_KEY_FILE (theirs is inherited), else one fresh random
    key per launching process, so every connection of the job is authenticated and encrypted."""
    global _JOB_KEY
    if os.environ.get("RINGPRESS_JOB_KEY") or os.environ.get("RINGPRESS_JOB_KEY_FILE"):
        return {}
    if _JOB_KEY is None:
        _JOB_KEY = secrets.token_hex(32)
    return {"RINGPRESS_JOB_KEY": _JOB_KEY}


def install_signal_handlers() -> dict[int, Any]:
    """Turn SIGINT / SIGTERM / SIGHUP (where at their defaults) into :class:`Interrupted`;
    returns the replaced handlers for :func:`restore_signal_handlers` (empty off the main
    thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: Any) -> None:
        _signals_seen.append(signum)
        raise Interrupted(signum)

    handler._rp_harness = True  # type: ignore[attr-defined]
    old_handlers: dict[int, Any] = {}
    for sig in _SIGNALS:
        old = signal.getsignal(sig)
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if old in (default, None) or getattr(old, "_rp_harness", False):
            old_handlers[sig] = old
            signal.signal(sig, handler)
    return old_handlers


def restore_signal_handlers(old_handlers: dict[int, Any], still_live: bool = False) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, old in old_handlers.items():
        signal.signal(sig, old if old is not None else signal.SIG_DFL)
    old_handlers.clear()
    if not still_live:
        _signals_seen.clear()


@contextlib.contextmanager
def signals_blocked() -> Any:
    """Hold SIGINT / SIGTERM / SIGHUP back (main thread only) while cleaning up, so a second
    Ctrl-C cannot cut the cleanup short; they are delivered afterwards."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, set(_SIGNALS))
    try:
        yield
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_SIGNALS))


# --------------------------------------------------------------------------- processes


def python_argv(cmd: Sequence[str]) -> list[str]:
    """``python`` / ``python3`` as the first word -> this interpreter (same venv in the ranks)."""
    cmd = list(cmd)
    if cmd and cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable
    return cmd


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # each rank runs in its own session: pgid == pid


def stop(procs: Sequence[subprocess.Popen], grace: float = KILL_GRACE_S) -> None:
    """SIGTERM every still-running process group, SIGKILL after ``grace`` seconds."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:  # SIGKILL the group even if the leader exited: children may remain
        kill_group(p, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


def pump(src: IO[bytes], sink: list[str], echo: IO[str] | None, tag: str) -> None:
    """Read ``src`` into ``sink``; also write it to ``echo`` if given: as it comes when ``tag`` is
    empty (so a progress bar's carriage returns pass), else line by line with ``tag`` first."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    if tag or echo is None:
        chunks = iter(src.readline, b"")
    else:
        fd = src.fileno()
        chunks = iter(lambda: os.read(fd, 65536), b"")
    for raw in chunks:
        text = dec.decode(raw)
        sink.append(text)
        if echo is not None:
            with contextlib.suppress(ValueError, OSError):
                echo.write(tag + text)
                echo.flush()
    src.close()


@dataclass
class LaunchResult:
    """Outcome of a launch: one entry per rank."""

    returncodes: list[int | None]
    stdout: list[str]
    stderr: list[str]
    timed_out: bool = False
    failed_rank: int | None = None  # first rank seen to exit non-zero
    elapsed_s: float = 0.0
    master_port: int = 0
    pids: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(rc == 0 for rc in self.returncodes)

    def describe(self, tail_lines: int = 20) -> str:
        """A short report of what went wrong: failing rank, exit codes and stderr tails."""
        lines = []
        if self.timed_out:
            lines.append(f"timed out after {self.elapsed_s:.1f} s")
        if self.failed_rank is not None:
            lines.append(f"rank {self.failed_rank} failed first")
        lines.append(
            "exit codes: " + ", ".join(f"rank {r}: {rc}" for r, rc in enumerate(self.returncodes))
        )
        for r, err in enumerate(self.stderr):
            if self.returncodes[r] != 0 and err.strip():
                tail = err.rstrip().splitlines()[-tail_lines:]
                lines.append(f"--- rank {r} stderr (last {len(tail)} lines) ---")
                lines += tail
        return "\n".join(lines)

    def exit_code(self) -> int:
        """A shell exit status for the whole launch: 0, 124 on timeout, else the failing rank's."""
        if self.ok:
            return 0
        if self.timed_out:
            return 124
        rc = self.returncodes[self.failed_rank or 0] or 1
        return rc if rc > 0 else 128 - rc


def run_processes(
    argvs: Sequence[Sequence[str]],
    envs: Sequence[dict[str, str]],
    *,
    timeout: float | None = None,
    stream: bool | str = True,
    grace: float = KILL_GRACE_S,
    track: list[subprocess.Popen] | None = None,
    started: list[int] | None = None,
    master_port: int = 0,
) -> LaunchResult:
    """Start ``argvs[r]`` with environment ``envs[r]`` (complete) for every rank; wait for all.

    See the module docstring for ``stream``. ``track``: a list the processes are added to while
    they run (the owner's teardown stops whatever is still in it); ``started``: a list every pid is
    appended to as it starts (kept, for cleaning up after the processes). Raises :class:`Interrupted` if
    a signal arrived while waiting (after stopping every rank).
    """
    n = len(argvs)
    outs: list[list[str]] = [[] for _ in range(n)]
    errs: list[list[str]] = [[] for _ in range(n)]
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    rcs: list[int | None] = [None] * n
    result = LaunchResult(rcs, [], [], master_port=master_port)
    tracked = track if track is not None else []
    t0 = time.monotonic()
    try:
        for r in range(n):
            inherit = stream == "inherit" and r == 0
            pipe = None if inherit else subprocess.PIPE
            p = subprocess.Popen(
                python_argv(argvs[r]),
                env=envs[r],
                stdin=subprocess.DEVNULL,
                stdout=pipe,
                stderr=pipe,
                start_new_session=True,
            )
            procs.append(p)
            tracked.append(p)
            if started is not None:
                started.append(p.pid)
            if inherit:
                continue
            show = stream == "all" or (stream is True and r == 0)
            tag = f"[rank {r}] " if stream == "all" else ""
            for src, sink, echo in (
                (p.stdout, outs[r], sys.stdout),
                (p.stderr, errs[r], sys.stderr),
            ):
                t = threading.Thread(
                    target=pump, args=(src, sink, echo if show else None, tag), daemon=True
                )
                t.start()
                pumps.append(t)
        result.pids = tuple(p.pid for p in procs)
        while True:
            for r, p in enumerate(procs):
                rc = p.poll()
                if rc is not None and rcs[r] is None:
                    rcs[r] = rc
                    if rc != 0 and result.failed_rank is None:
                        result.failed_rank = r
            if result.failed_rank is not None or all(rc is not None for rc in rcs):
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                result.timed_out = True
                break
            if _signals_seen:
                raise Interrupted(_signals_seen[-1])
            time.sleep(0.02)
    finally:
        stop(procs, grace=grace)
        for r, p in enumerate(procs):
            if rcs[r] is None:
                rcs[r] = p.returncode
        for t in pumps:
            t.join(timeout=5)
        for p in procs:
            with contextlib.suppress(ValueError):
                tracked.remove(p)
    result.elapsed_s = time.monotonic() - t0
    result.stdout = ["".join(o) for o in outs]
    result.stderr = ["".join(e) for e in errs]
    return result


def remove_shm_segments(pids: Sequence[int]) -> list[str]:
    """Delete ringpress shared-memory segments created by the (dead) processes ``pids``."""
    removed = []
    for pid in pids:
        for path in glob.glob(os.path.join(SHM_DIR, f"ringpress-*-{int(pid)}-*-*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
    return removed


def connect_with_retry(addr: str, port: int, deadline: float, pause: float = 0.05) -> socket.socket:
    """TCP connection to addr:port, retried until the ``time.monotonic()`` deadline (the listener
    may start later); the last OSError is raised after it."""
    while True:
        try:
            return socket.create_connection((addr, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)


def port_block_free(port: int, count: int, host: str = "") -> bool:
    for p in range(port, port + count):
        with socket.socket() as s:
            try:
                s.bind((host, p))
            except OSError:
                return False
    return True


def free_port_block(count: int = 4) -> int:
    """A port P such that P .. P+count-1 are all free now (MASTER_PORT and the ports after it
    that ringpress bench allreduce uses: +1 gloo, +2 its control plane)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port + count < 65536 and port_block_free(port, count):
            return port
    raise OSError(f"no block of {count} free TCP ports found")


# --------------------------------------------------------------------------- local ranks

_live: set[LocalRanks] = set()
_live_lock = threading.Lock()


class LocalRanks:
    """``nranks`` processes on this host, rendezvous at 127.0.0.1; a context manager.

    >>> with LocalRanks(2) as ranks:                     # doctest: +SKIP
    ...     res = ranks.launch(["python", "-m", "ringpress_bench", "allreduce", "--quick"])

    Leaving the block (normally, by an exception, by Ctrl-C / SIGTERM / SIGHUP, or at interpreter
    exit) stops every rank still running and removes shared-memory segments they left.
    """

    def __init__(self, nranks: int, *, handle_signals: bool = True) -> None:
        if nranks < 1:
            raise ValueError("nranks must be >= 1")
        self.nranks = nranks
        self.handle_signals = handle_signals
        self.addr = "127.0.0.1"
        self._procs: list[subprocess.Popen] = []
        self._pids: list[int] = []
        self._old_handlers: dict[int, Any] = {}
        self._active = False

    def __enter__(self) -> LocalRanks:
        with _live_lock:
            _live.add(self)
        self._active = True
        if self.handle_signals:
            self._old_handlers = install_signal_handlers()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.teardown()

    def rank_env(self, rank: int, master_port: int) -> dict[str, str]:
        """The variables ``launch`` sets for ``rank`` (on top of the caller's environment)."""
        return {
            "RANK": str(rank),
            "WORLD_SIZE": str(self.nranks),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(self.nranks),
            "MASTER_ADDR": self.addr,
            "MASTER_PORT": str(master_port),
            "PYTHONUNBUFFERED": "1",
            **job_key_env(),
        }

    def launch(
        self,
        cmd: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
        stream: bool | str = True,
        master_port: int | None = None,
        grace: float = KILL_GRACE_S,
    ) -> LaunchResult:
        """Run ``cmd`` once per rank; see :func:`run_processes`."""
        if not self._active:
            raise RuntimeError("LocalRanks is not set up (use it as a context manager)")
        port = master_port if master_port is not None else free_port_block()
        envs = []
        for r in range(self.nranks):
            e = dict(os.environ)
            e.update(env or {})
            e.update(self.rank_env(r, port))
            envs.append(e)
        res = run_processes(
            [cmd] * self.nranks,
            envs,
            timeout=timeout,
            stream=stream,
            grace=grace,
            track=self._procs,
            started=self._pids,
            master_port=port,
        )
        remove_shm_segments(res.pids)
        return res

    def teardown(self) -> None:
        """Stop every rank, remove their shm segments; idempotent."""
        if not self._active:
            return
        with signals_blocked():
            stop(self._procs, grace=1.0)
            self._procs.clear()
            remove_shm_segments(self._pids)
            self._active = False
            with _live_lock:
                _live.discard(self)
                live = bool(_live)
            restore_signal_handlers(self._old_handlers, still_live=live)


def _atexit_teardown() -> None:
    with _live_lock:
        live = list(_live)
    for ranks in live:
        with contextlib.suppress(Exception):
            ranks.teardown()


atexit.register(_atexit_teardown)

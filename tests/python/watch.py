"""Watching a command that a test interrupts (the Ctrl-C tests of ``ringpress bench``).

Both of its output pipes are read as the output comes (``Watched``): a pipe nobody reads fills up
at 64 KiB and then blocks whoever writes to it, the command or a rank that inherited it, which
would look like a command that does not stop. The test waits for a line the command prints once it
is ready (``wait_for``), for as long as a loaded machine needs (``STARTUP_S``: starting ranks that
import torch can take minutes when other jobs hold both cores), not for a fixed guess; it returns
as soon as the line is there. ``wait_exit`` bounds the wait for the command to finish after the
signal (``STOP_S``) and, if it runs out, fails with where every process of the tree was waiting
(state, kernel wait channel, command line) instead of a bare timeout.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable

STARTUP_S = 300.0
STOP_S = 120.0


class Watched:
    """A started ``subprocess.Popen`` (text mode, stdout and stderr pipes) whose output is read by
    two threads into ``out`` / ``err`` as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(pipe, sink), daemon=True)
            for pipe, sink in ((proc.stdout, self._out), (proc.stderr, self._err))
            if pipe is not None
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(pipe, sink: list[str]) -> None:
        for line in pipe:
            sink.append(line)

    @property
    def out(self) -> str:
        return "".join(self._out)

    @property
    def err(self) -> str:
        return "".join(self._err)

    def wait_for(self, ready: Callable[[], bool], timeout: float = STARTUP_S) -> bool:
        """Poll ``ready()`` until it holds (True), the command exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            if self.proc.poll() is not None:
                return ready()
            time.sleep(0.05)
        return ready()

    def wait_exit(self, timeout: float = STOP_S) -> int:
        """The command's exit code; if it has not exited after ``timeout`` seconds, kill it and fail
        with where its process tree was waiting."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            report = describe_tree(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"still running {timeout:.0f} s after the signal:\n{report}\n"
                f"--- stdout ---\n{self.out[-3000:]}\n--- stderr ---\n{self.err[-3000:]}"
            ) from None
        for t in self._threads:
            t.join(timeout=10)
        return rc


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc)."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.append(int(d))
    return kids


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def describe_tree(pid: int, depth: int = 0) -> str:
    """One line per process of the tree under ``pid``: pid, state, kernel wait channel, argv."""

    def read(path: str) -> str:
        try:
            with open(path, "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return "?"

    state = read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()[:1]
    line = (
        f"{'  ' * depth}{pid} {state[0] if state else '?'} "
        f"wchan={read(f'/proc/{pid}/wchan')} {read(f'/proc/{pid}/cmdline')[:200]}"
    )
    return "\n".join([line] + [describe_tree(k, depth + 1) for k in children(pid)])

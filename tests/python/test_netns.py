"""ringpress_bench.netns (``ringpress bench netns``): namespaces, shaped links, launching ranks, and
teardown on every way out; the allreduce benchmark end to end under mpirun (and under the netns
harness) through ``python -m ringpress_bench``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from watch import Watched

ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "ringpress_bench"]

netns = pytest.importorskip("ringpress_bench.netns")

HAVE_NETNS = (
    sys.platform == "linux"
    and os.geteuid() == 0
    and shutil.which("ip") is not None
    and shutil.which("tc") is not None
)
needs_netns = pytest.mark.skipif(not HAVE_NETNS, reason="needs root, Linux and iproute2 (ip, tc)")
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")


def _namespaces(prefix: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(prefix)]


def _assert_gone(prefix: str, pids: list[int] = ()) -> None:
    assert _namespaces(prefix) == []
    assert not any(
        n.startswith(prefix)
        for n in (os.listdir(netns.NETNS_ETC) if os.path.isdir(netns.NETNS_ETC) else [])
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert netns.IFNAME not in links and prefix not in links
    for pid in pids:
        assert not _alive(pid), f"process {pid} survived the teardown"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# --------------------------------------------------------------------------- no root needed


def test_parse_rate_and_burst():
    assert netns.parse_rate("1gbit") == 10**9
    assert netns.parse_rate("10gbit") == 10**10
    assert netns.parse_rate("500mbit") == 5 * 10**8
    assert netns.parse_rate("2.5gbit") == 25 * 10**8
    assert netns.parse_rate("none") is None and netns.parse_rate(None) is None
    with pytest.raises(ValueError):
        netns.parse_rate("fast")
    assert netns.tbf_burst(10**9) == 500_000  # 4 ms at 1gbit
    assert netns.tbf_burst(10**10) == 5_000_000
    assert netns.tbf_burst(10**6) == 128 << 10  # floor: one 64 KiB GSO packet fits


def test_cli_needs_a_command():
    res = subprocess.run([*BENCH, "netns"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "command after '--'" in res.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root + setpriv"
)
def test_not_root_is_a_clear_error():
    res = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *BENCH,
            "netns",
            "--check",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "No module named" in res.stderr or "Permission denied" in res.stderr:
        pytest.skip("the interpreter or repo is not readable by nobody")
    assert res.returncode == 2
    assert "need root" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- namespaces

PINGPONG = r"""
import os, socket, sys, time
rank, addr = int(os.environ["RANK"]), os.environ["MASTER_ADDR"]
port = int(os.environ["MASTER_PORT"])
if rank == 0:
    with socket.create_server((addr, port)) as srv:
        srv.settimeout(20)
        conns = [srv.accept()[0] for _ in range(int(os.environ["WORLD_SIZE"]) - 1)]
    for c in conns:
        peer = c.recv(100).decode()
        c.sendall(b"pong")
        print("got", peer)
else:
    for _ in range(400):
        try:
            c = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            time.sleep(0.025)
    c.sendall(f"ping from {rank} at {socket.gethostbyname(socket.gethostname())}".encode())
    print(c.recv(100).decode())
"""


@needs_netns
def test_two_ranks_talk_over_tcp_and_everything_goes():
    with netns.Topology(2, "1gbit") as topo:
        prefix = topo.prefix
        assert sorted(_namespaces(prefix)) == sorted([topo.ns(0), topo.ns(1)])
        assert topo.exec_prefix(1) == ["ip", "netns", "exec", topo.ns(1)]
        qdisc = topo.run(
            0, ["tc", "qdisc", "show", "dev", netns.IFNAME], capture_output=True, text=True
        )
        assert "tbf" in qdisc.stdout and "rate 1Gbit" in qdisc.stdout
        res = topo.launch([sys.executable, "-c", PINGPONG], stream=False, timeout=30)
        assert res.ok, res.describe()
        assert res.stdout[1].strip() == "pong"
        # /etc/netns/<ns>/hosts maps the host name to the rank's own address
        assert res.stdout[0].strip() == f"got ping from 1 at {topo.addr(1)}"
    _assert_gone(prefix)


@needs_netns
def test_shaped_throughput_is_near_1gbit():
    with netns.Topology(2, "1gbit") as topo:
        r = netns.measure_throughput(topo, seconds=0.5)
    assert 0.5 < r["gbps"] < 1.3, r
    _assert_gone(topo.prefix)


@needs_netns
def test_bridge_with_three_ranks():
    with netns.Topology(3, "none") as topo:
        assert topo.hub in _namespaces(topo.prefix)
        res = topo.launch([sys.executable, "-c", PINGPONG], stream=False, timeout=30)
        assert res.ok, res.describe()
        assert sorted(res.stdout[0].split("\n")[:2]) == [
            f"got ping from 1 at {topo.addr(1)}",
            f"got ping from 2 at {topo.addr(2)}",
        ]
    _assert_gone(topo.prefix)


@needs_netns
def test_teardown_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"), netns.Topology(2, "10gbit") as topo:
        # a process the harness did not launch itself: still killed, via `ip netns pids`
        stray = subprocess.Popen([*topo.exec_prefix(1), "sleep", "60"])
        deadline = time.monotonic() + 10  # until it is inside (`ip netns exec` has joined)
        while stray.pid not in netns.namespace_pids(topo.ns(1)) and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("boom")
    stray.wait(timeout=10)
    _assert_gone(topo.prefix, [stray.pid])


@needs_netns
def test_a_failing_rank_stops_the_others():
    script = "import os, sys, time; time.sleep(0.2 if int(os.environ['RANK']) else 60); sys.exit(3)"
    t0 = time.monotonic()
    with netns.Topology(2, "none") as topo:
        res = topo.launch([sys.executable, "-c", script], stream=False, grace=1.0)
    assert time.monotonic() - t0 < 15
    assert not res.ok and res.failed_rank == 1
    assert res.returncodes[1] == 3 and res.returncodes[0] == -signal.SIGTERM
    assert "rank 1 failed first" in res.describe()
    _assert_gone(topo.prefix)


@needs_netns
def test_timeout_kills_every_rank():
    with netns.Topology(2, "none") as topo:
        res = topo.launch(["sleep", "60"], stream=False, timeout=0.5, grace=1.0)
    assert res.timed_out and not res.ok and res.elapsed_s < 10
    assert all(rc is not None and rc < 0 for rc in res.returncodes)
    _assert_gone(topo.prefix)


@needs_netns
def test_sigint_to_the_cli_leaves_nothing_behind():
    """Ready = both ranks' own line ("[rank r] ready", streamed by the harness), so each rank runs
    its command in its namespace and the harness holds it; waited for as long as a loaded machine
    needs (watch.STARTUP_S), the output read as it comes."""
    rank_cmd = ["sh", "-c", "echo ready; exec sleep 60"]
    cmd = Watched(
        subprocess.Popen(
            [*BENCH, "netns", "--nranks", "2", "--all-output", "--", *rank_cmd],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    proc = cmd.proc
    prefix = f"{netns.PREFIX}{proc.pid}_"
    ready = cmd.wait_for(lambda: all(f"[rank {r}] ready" in cmd.out for r in (0, 1)))
    pids = [p for n in _namespaces(prefix) for p in netns.namespace_pids(n)]  # the two `sleep`s
    try:
        assert ready, f"the ranks never started:\n{cmd.out}\n{cmd.err}"
        assert len(pids) == 2, pids
    finally:
        proc.send_signal(signal.SIGINT)
        rc = cmd.wait_exit()
    err = cmd.err
    assert rc == 130, err
    assert "interrupted by SIGINT; cleaned up" in err and "Traceback" not in err
    _assert_gone(prefix, pids)


# --------------------------------------------------------------------------- allreduce


def _check_allreduce_record(rec: dict, peers: list[str], world: int) -> None:
    assert rec["benchmark"] == "bench.allreduce"
    assert rec["config"]["world_size"] == world
    assert rec["config"]["peers_run"] == peers
    assert rec["config"]["quick"] is True
    assert "machine" in rec and set(rec["peers"]) == set(peers)
    assert [s["nbytes"] for s in rec["sizes"]] == [4096, 65536, 1 << 20]
    for s in rec["sizes"]:
        for name in peers:
            r = s["peers"][name]
            assert r["verified"] is True
            assert len(r["samples_s"]) == r["n_samples"] == 3
            assert len(r["rank_samples_s"]) == world
            assert all(t > 0 for t in r["samples_s"])
            assert r["median_s"] > 0 and r["algbw_GBps"] > 0
            assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * (world - 1) / world)


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_allreduce_under_mpirun(tmp_path):
    pytest.importorskip("mpi4py")
    pytest.importorskip("torch")
    out = tmp_path / "allreduce.json"
    cmd = [
        MPIRUN,
        "-n",
        "2",
        "--allow-run-as-root",
        "--oversubscribe",
        *BENCH,
        "allreduce",
        "--quick",
        "--peers",
        "gloo,mpi",
        "--json",
        str(out),
        "--no-plot",
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 MiB" in res.stdout  # rank 0's table
    rec = json.loads(out.read_text())
    assert rec["config"]["launcher"] == "mpi"
    _check_allreduce_record(rec, ["gloo", "mpi"], 2)
    for s in rec["sizes"]:
        assert "speedup_vs" not in s  # no ringpress column asked for


@needs_netns
def test_allreduce_under_the_netns_harness(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "allreduce.json"
    cmd = [
        *BENCH,
        "netns",
        "--nranks",
        "2",
        "--rate",
        "10gbit",
        "--timeout",
        "150",
        "--",
        "python",
        "-m",
        "ringpress_bench",
        "allreduce",
        "--quick",
        "--peers",
        "ringpress,gloo,mpi",
        "--json",
        str(out),
        "--no-plot",
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    rec = json.loads(out.read_text())
    assert rec["config"]["launcher"] == "env"
    assert rec["config"]["network"]["rate"] == "10gbit"
    assert any("mpi: skipped" in n for n in rec["notes"])
    _check_allreduce_record(rec, rec["config"]["peers_run"], 2)
    assert "gloo" in rec["config"]["peers_run"]


# --------------------------------------------------------------------------- result checks


def _local_world():
    ar = pytest.importorskip("ringpress_bench.allreduce")
    return ar, ar.World(0, 1, "single", ar.LocalControl())


def test_fill_and_mismatch_cover_every_element():
    ar, _ = _local_world()
    np = pytest.importorskip("numpy")
    block = ar._block(2)
    for n in (5, ar.PATTERN_LEN, 3 * ar.PATTERN_LEN + 7, (1 << 20) + 3):
        buf = np.full(n, np.nan, np.float32)
        ar.fill(buf, block)
        assert ar.first_mismatch(buf, block) is None
        buf[n - 1] += 1  # the tail is checked too
        assert ar.first_mismatch(buf, block) == n - 1
        assert ar.first_mismatch(buf, block, rtol=1e-4) == n - 1
        buf[n - 1] -= 1
        buf[0] *= np.float32(1 + 1e-5)  # within rtol, not exact
        assert ar.first_mismatch(buf, block, rtol=1e-4) is None
        assert ar.first_mismatch(buf, block) == 0


def test_a_wrong_result_aborts(tmp_path):
    ar, world = _local_world()
    args = ar.parse_args(["--quick", "--launcher", "single"])
    calls = []

    def wrong_later(buf):  # right on the first call (the exact check), wrong while timed
        calls.append(1)
        if len(calls) > 1:
            buf += 1

    peer = ar.Peer("fake", wrong_later, lambda: None, lambda: None)
    with pytest.raises(ar.BenchError, match="fake allreduce of 4 KiB gave a wrong result"):
        ar.measure_size(world, [peer], 4096, args)
    always_wrong = ar.Peer("bad", lambda buf: buf.__iadd__(1), lambda: None, lambda: None)
    with pytest.raises(ar.BenchError, match=r"bad .* wrong result \(first call\)"):
        ar.measure_size(world, [always_wrong], 4096, args)
    right = ar.Peer("noop", lambda buf: None, lambda: None, lambda: None)  # P = 1: a no-op is right
    rec = ar.measure_size(world, [right], 1 << 16, args)
    assert rec["peers"]["noop"]["n_samples"] == 3 and rec["peers"]["noop"]["busbw_GBps"] == 0
